//! S3's errors as ferry handles them: what kind each is (which decides retries and what an
//! upload does next), and a message a person can act on, naming the operation, without the
//! SDK's Debug forms.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// How an S3 error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth trying again: throttling, 5xx, timeouts, dropped or refused connections.
    Transient,
    /// The bucket does not exist.
    NoSuchBucket,
    /// Credentials are missing, wrong, or not allowed to do this.
    AccessDenied,
    /// The multipart upload is not known to the server (completed, aborted or expired).
    NoSuchUpload,
    /// The store answered with success, but in a body that is not S3's format (the SDK could
    /// not read it).
    Malformed,
    /// The store refused the checksum headers the request carried; ferry sends none from now
    /// on (FERRY_CHECKSUM=auto), so the same request goes again without them.
    ChecksumsRefused,
    /// The store does not do this at all (501 NotImplemented, 405 Method Not Allowed): not a
    /// passing fault, and not the request's fault. Learnt once, and worked around.
    NotSupported,
    /// Anything else the server refused; trying again will not help.
    Permanent,
}

/// A failed S3 call: what kind, and a message that says what happened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct S3Error {
    pub kind: ErrorKind,
    pub message: String,
    /// No answer came from S3 at all (a refused or dropped connection, a timeout): S3 cannot
    /// be reached, which says nothing about the request.
    pub unreachable: bool,
    /// The store pushed back (503 SlowDown, a throttling answer, a timeout): fewer requests at
    /// once would serve it better.
    pub congestion: bool,
}

impl S3Error {
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        S3Error {
            kind,
            message: message.into(),
            unreachable: false,
            congestion: false,
        }
    }

    pub(super) fn unreachable(message: impl Into<String>) -> Self {
        S3Error {
            unreachable: true,
            ..Self::new(ErrorKind::Transient, message)
        }
    }

    /// Names the S3 operation that failed, once.
    pub(super) fn during(mut self, operation: &str) -> Self {
        if !self.message.starts_with(operation) {
            self.message = format!("{operation}: {}", self.message);
        }
        self
    }
}

/// An error and its causes, each by its Display, without repeats: what a person reads. The SDK's
/// `DisplayErrorContext` ends with the whole error's Debug form
/// (`DispatchFailure(DispatchFailure { source: ConnectorError {` ...), which is for developers.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// "HTTP 403" or "HTTP 403 AccessDenied": a HEAD answer has no body, so no code.
fn status_and_code(status: u16, code: &str) -> String {
    if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {code}")
    }
}
/// Whether an error answers a request's checksum headers with "not here" (B2's 400
/// InvalidArgument "Unsupported header 'x-amz-checksum-crc32c' ...", R2's 501), as opposed to a
/// checksum that did not match the bytes (BadDigest, a part corrupted on the way), which must
/// fail the attempt and never lower the proof.
pub(super) fn refuses_checksum_headers(e: &S3Error) -> bool {
    let text = e.message.to_ascii_lowercase();
    if text.contains("baddigest") || text.contains("did not match") {
        return false;
    }
    e.kind == ErrorKind::NotSupported
        || (e.kind == ErrorKind::Permanent
            && text.contains("checksum")
            && (text.contains("unsupported header")
                || text.contains("not implemented")
                || text.contains("not supported")))
}
/// Sorts an SDK error into what ferry does about it, with a message a person can act on.
pub(super) fn classify<E, R>(err: SdkError<E, R>, bucket: Option<&str>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus + 'static,
{
    let detail = causes(&err);
    match &err {
        SdkError::TimeoutError(_) => S3Error {
            congestion: true,
            ..S3Error::unreachable(format!("S3 timed out: {detail}"))
        },
        SdkError::DispatchFailure(f) if f.is_user() => S3Error::new(ErrorKind::Permanent, detail),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            S3Error::unreachable(format!("could not reach S3: {detail}"))
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status_code();
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("");
            let kind = if (200..300).contains(&status) {
                ErrorKind::Malformed
            } else {
                kind_of(status, code)
            };
            let text = match (kind, bucket) {
                (ErrorKind::NoSuchBucket, Some(b)) => {
                    format!("bucket {b:?} does not exist (NoSuchBucket)")
                }
                (ErrorKind::AccessDenied, Some(b)) => {
                    format!(
                        "access to bucket {b:?} was refused ({}): check the credentials and the bucket policy",
                        status_and_code(status, code)
                    )
                }
                (ErrorKind::NotSupported, _) => format!(
                    "the store does not support this request ({}{}{})",
                    status_and_code(status, code),
                    if message.is_empty() { "" } else { ": " },
                    message
                ),
                // A 2xx "error" is an answer the SDK could not read (an S3-compatible store
                // that departs from S3's format): say what it could not read.
                _ if (200..300).contains(&status) => {
                    let mut why = service.err().to_string();
                    let mut source = std::error::Error::source(service.err());
                    while let Some(e) = source {
                        why = format!("{why}: {e}");
                        source = e.source();
                    }
                    let why: String = why.chars().take(300).collect();
                    format!("S3 answered HTTP {status} with a body that is not S3's format ({why})")
                }
                _ if code.is_empty() => format!("S3 answered HTTP {status}"),
                _ if message.is_empty() => format!("S3 answered HTTP {status} {code}"),
                _ => format!("S3 answered HTTP {status} {code}: {message}"),
            };
            S3Error {
                congestion: pushed_back(status, code),
                ..S3Error::new(kind, text)
            }
        }
        _ => S3Error::new(ErrorKind::Permanent, detail),
    }
}

/// Whether an error code says the credentials themselves were refused (an unknown key, a wrong
/// secret, an expired or malformed token), not a policy's refusal of one request.
pub(super) fn credentials_refused(code: &str) -> bool {
    matches!(
        code,
        "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "InvalidClientTokenId"
    )
}

/// Whether an answer says the store is overloaded: fewer requests at once would serve it better.
fn pushed_back(status: u16, code: &str) -> bool {
    matches!(status, 429 | 503)
        || matches!(
            code,
            "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeout"
                | "ServiceUnavailable"
        )
}

/// The decision table for a service answer.
fn kind_of(status: u16, code: &str) -> ErrorKind {
    match code {
        "NoSuchBucket" => return ErrorKind::NoSuchBucket,
        "NoSuchUpload" => return ErrorKind::NoSuchUpload,
        "AccessDenied" | "AllAccessDisabled" => return ErrorKind::AccessDenied,
        code if credentials_refused(code) => return ErrorKind::AccessDenied,
        "NotImplemented" | "MethodNotAllowed" => return ErrorKind::NotSupported,
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestTimeout"
        | "InternalError"
        | "ServiceUnavailable"
        | "RequestTimeTooSkewed" => return ErrorKind::Transient,
        _ => {}
    }
    match status {
        404 if code.is_empty() || code == "NotFound" => ErrorKind::NoSuchBucket,
        401 | 403 => ErrorKind::AccessDenied,
        405 | 501 => ErrorKind::NotSupported,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// The status of a raw response, whatever its type.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retried() {
        assert_eq!(kind_of(503, "SlowDown"), ErrorKind::Transient);
        assert_eq!(kind_of(500, "InternalError"), ErrorKind::Transient);
        assert_eq!(kind_of(502, ""), ErrorKind::Transient);
        assert_eq!(kind_of(429, ""), ErrorKind::Transient);
        assert_eq!(kind_of(400, "RequestTimeout"), ErrorKind::Transient);
    }

    #[test]
    fn slow_down_and_throttling_are_push_back_and_other_faults_are_not() {
        assert!(pushed_back(503, "SlowDown"));
        assert!(pushed_back(503, ""));
        assert!(pushed_back(429, ""));
        assert!(pushed_back(400, "RequestTimeout"));
        assert!(pushed_back(400, "ThrottlingException"));
        assert!(!pushed_back(500, "InternalError"));
        assert!(!pushed_back(502, ""));
        assert!(!pushed_back(403, "AccessDenied"));
    }

    #[test]
    fn what_cannot_succeed_is_not_retried() {
        assert_eq!(kind_of(404, "NoSuchBucket"), ErrorKind::NoSuchBucket);
        assert_eq!(kind_of(404, ""), ErrorKind::NoSuchBucket);
        assert_eq!(kind_of(403, "AccessDenied"), ErrorKind::AccessDenied);
        assert_eq!(kind_of(403, ""), ErrorKind::AccessDenied);
        assert_eq!(kind_of(404, "NoSuchUpload"), ErrorKind::NoSuchUpload);
        assert_eq!(kind_of(400, "EntityTooSmall"), ErrorKind::Permanent);
        assert_eq!(kind_of(400, "InvalidPart"), ErrorKind::Permanent);
    }

    #[test]
    fn what_the_store_does_not_do_is_learnt_not_retried() {
        assert_eq!(kind_of(501, "NotImplemented"), ErrorKind::NotSupported);
        assert_eq!(kind_of(501, ""), ErrorKind::NotSupported);
        assert_eq!(kind_of(405, ""), ErrorKind::NotSupported);
        assert_eq!(kind_of(400, "NotImplemented"), ErrorKind::NotSupported);
    }

    #[test]
    fn a_refused_checksum_header_is_told_from_a_checksum_that_did_not_match() {
        let e = |kind, m: &str| S3Error::new(kind, m);
        assert!(refuses_checksum_headers(&e(
            ErrorKind::Permanent,
            "S3 answered HTTP 400 InvalidArgument: Unsupported header 'x-amz-checksum-crc32c' received for this API call."
        )));
        assert!(refuses_checksum_headers(&e(
            ErrorKind::NotSupported,
            "the store does not support this request (HTTP 501 NotImplemented)"
        )));
        assert!(!refuses_checksum_headers(&e(
            ErrorKind::Permanent,
            "S3 answered HTTP 400 BadDigest: The CRC32C you specified did not match the calculated checksum."
        )));
        assert!(!refuses_checksum_headers(&e(
            ErrorKind::Permanent,
            "S3 answered HTTP 400 InvalidRequest: Value for x-amz-checksum-crc32c header is invalid."
        )));
    }

    #[test]
    fn messages_name_the_operation_and_carry_no_debug_forms() {
        let e = S3Error::new(ErrorKind::Transient, "could not reach S3: io error")
            .during("UploadPart")
            .during("UploadPart");
        assert_eq!(e.message, "UploadPart: could not reach S3: io error");
        assert_eq!(status_and_code(403, ""), "HTTP 403");
        assert_eq!(
            status_and_code(403, "AccessDenied"),
            "HTTP 403 AccessDenied"
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(causes(&Outer(io)), "dispatch failure: Connection refused");
    }
}
