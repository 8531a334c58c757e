//! The S3 edge: the only module that knows the AWS SDK.
//!
//! Each call is retried here, with backon (exponential, jittered, bounded), when its error is
//! transient: throttling, 5xx, timeouts, dropped connections. What cannot succeed by trying
//! again (a missing bucket, a refusal) fails at once with the reason. The SDK's own retries are
//! off so that this is the one place that decides.

mod compat;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode as S3ChecksumMode, CompletedMultipartUpload, CompletedPart,
};

use crate::core::checksum::ChecksumMode;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

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
}

impl S3Error {
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        S3Error {
            kind,
            message: message.into(),
            unreachable: false,
        }
    }

    fn unreachable(message: impl Into<String>) -> Self {
        S3Error {
            unreachable: true,
            ..Self::new(ErrorKind::Transient, message)
        }
    }

    /// Names the S3 operation that failed, once.
    fn during(mut self, operation: &str) -> Self {
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

pub type Result<T, E = S3Error> = std::result::Result<T, E>;

/// Why the S3 client could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "no AWS region is configured: set AWS_REGION (for LocalStack or MinIO any region, such as us-east-1, will do)"
    )]
    NoRegion,
}

/// How hard to retry one request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1))
    }
}

/// What S3 answered to a part: its ETag, and the checksum of the configured algorithm that it
/// computed from the bytes it received, when it answers with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartAnswer {
    pub etag: String,
    pub checksum: Option<String>,
}

/// A part acknowledged by S3, as CompleteMultipartUpload lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
    /// The checksum sent with the part (FERRY_CHECKSUM), base64.
    pub checksum: Option<String>,
}

/// What S3 says of the object a PutObject or CompleteMultipartUpload stored: its ETag, and the
/// checksum of the configured algorithm that it computed (composite for a multipart object),
/// when it answers with them.
#[derive(Debug, Clone, Default)]
pub struct StoredAnswer {
    pub etag: Option<String>,
    pub checksum: Option<String>,
}

/// What HeadObject says of an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
    /// The object's checksum of the configured algorithm, when the server keeps one.
    pub checksum: Option<String>,
}

#[derive(Clone)]
pub struct ObjectStore {
    client: Client,
    retry: RetryPolicy,
    /// The checksum requests carry now (a ChecksumMode as `mode_code`): FERRY_CHECKSUM, until a
    /// store that refuses checksum headers turns it to none (when not pinned).
    checksum: Arc<AtomicU8>,
    /// FERRY_CHECKSUM named the algorithm: it is never changed.
    checksum_pinned: bool,
    /// Whether the store answers a part with the checksum it computed, learnt from its UploadPart
    /// answers: one of PART_CHECKSUMS_*.
    part_checksums: Arc<AtomicU8>,
    /// The store answered ListParts "not supported" (s3rver's 405): not asked again.
    no_list_parts: Arc<AtomicBool>,
}

/// No part has been answered yet.
const PART_CHECKSUMS_UNKNOWN: u8 = 0;
/// The last part's answer carried its checksum (AWS S3, MinIO, LocalStack).
const PART_CHECKSUMS_ANSWERED: u8 = 1;
/// The last part's answer carried none (gofakes3, the server of `rclone serve s3`): the store
/// may not check them at all.
const PART_CHECKSUMS_IGNORED: u8 = 2;

/// What readiness found of S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Unreachable(String),
    CredentialsRefused(String),
}

/// A part as the server lists it. Some stores leave out the ETag (s3s-fs) or the size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: i64,
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// An open multipart upload as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUpload {
    pub key: String,
    pub upload_id: String,
}

impl ObjectStore {
    /// Builds the client from the standard AWS chain (environment, profile, IMDS, web identity).
    pub async fn from_env(
        force_path_style: bool,
        checksum: ChecksumMode,
        checksum_pinned: bool,
        retry: RetryPolicy,
    ) -> Result<Self, SetupError> {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(60))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            )
            .load()
            .await;
        if shared.region().is_none() {
            return Err(SetupError::NoRegion);
        }
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(force_path_style)
            // Checksums are ferry's to choose (FERRY_CHECKSUM): the SDK adds none of its own, and
            // does not validate response checksums it was not asked for.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(ObjectStore {
            client: Client::from_conf(config),
            retry,
            checksum: Arc::new(AtomicU8::new(mode_code(checksum))),
            checksum_pinned,
            part_checksums: Arc::new(AtomicU8::new(PART_CHECKSUMS_UNKNOWN)),
            no_list_parts: Arc::default(),
        })
    }

    async fn retrying<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        call.retry(self.retry.backoff())
            .when(S3Error::is_transient)
            .notify(|err: &S3Error, delay: Duration| {
                crate::metrics::get().s3_retries.inc(&[what]);
                tracing::warn!(operation = what, error = %err, retry_in_ms = delay.as_millis() as u64, "S3 request failed, retrying");
            })
            .await
            .map_err(|e| e.during(what))
    }

    /// Whether the bucket exists and these credentials may use it.
    pub async fn check_bucket(&self, bucket: &str) -> Result<()> {
        self.retrying("HeadBucket", || async {
            self.client
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, Some(bucket)))
        })
        .await
    }

    /// One request, not retried, that shows whether S3 answers at all: any answer from the
    /// service, even a refusal, counts; a timeout or a connection failure does not.
    pub async fn reachable(&self) -> bool {
        !matches!(self.readiness().await, Readiness::Unreachable(_))
    }

    /// Whether S3 answers, and takes these credentials: one ListBuckets, not retried. A policy
    /// that forbids ListBuckets (AccessDenied) is an answer from a store that knows the
    /// credentials; an unknown key or a wrong secret is not.
    pub async fn readiness(&self) -> Readiness {
        match self.client.list_buckets().max_buckets(1).send().await {
            Ok(_) => Readiness::Ready,
            Err(SdkError::ServiceError(e)) => match e.err().code() {
                Some(
                    code @ ("InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "InvalidClientTokenId"),
                ) => Readiness::CredentialsRefused(format!(
                    "S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
                )),
                _ => Readiness::Ready,
            },
            Err(e) => Readiness::Unreachable(classify(e, None).message),
        }
    }

    /// Sends a whole object; `checksum` is its checksum as computed from the bytes read, which S3
    /// verifies on receipt.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        checksum: Option<&str>,
    ) -> Result<StoredAnswer> {
        match self.put_object_once(bucket, key, &body, checksum).await {
            // The whole object is at hand: it goes again at once without the headers, and its
            // ETag proves it (the uploader computes the MD5 when the answer has no checksum).
            Err(e) if e.kind == ErrorKind::ChecksumsRefused => {
                self.put_object_once(bucket, key, &body, None).await
            }
            other => other,
        }
    }

    async fn put_object_once(
        &self,
        bucket: &str,
        key: &str,
        body: &Bytes,
        checksum: Option<&str>,
    ) -> Result<StoredAnswer> {
        self.retrying("PutObject", || async {
            let mode = self.checksum_mode();
            let request = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body.clone()));
            let (request, sends) = match (mode, checksum) {
                (ChecksumMode::Crc32c, Some(c)) => (request.checksum_crc32_c(c), true),
                (ChecksumMode::Crc32, Some(c)) => (request.checksum_crc32(c), true),
                _ => (request, false),
            };
            let request = request.customize();
            // A signed checksum header proves the body, which S3 checks on receipt: hashing it
            // again with SHA-256 for the signature would cost a quarter of the CPU of an upload
            // and prove nothing more. Without a checksum the payload stays signed.
            let request = if sends {
                request.disable_payload_signing()
            } else {
                request
            };
            request
                .send()
                .await
                .map(|out| StoredAnswer {
                    checksum: self.answered(out.checksum_crc32_c, out.checksum_crc32),
                    etag: out.e_tag,
                })
                .map_err(|e| self.note_refusal(sends, classify(e, Some(bucket))))
        })
        .await
    }

    pub async fn create_multipart_upload(&self, bucket: &str, key: &str) -> Result<String> {
        self.retrying("CreateMultipartUpload", || async {
            let algorithm = algorithm(self.checksum_mode());
            let sends = algorithm.is_some();
            let out = self
                .client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                // Each part carries a checksum that S3 checks on receipt, and the completion lists
                // them, so a part corrupted on the way is refused rather than stored.
                .set_checksum_algorithm(algorithm)
                .customize()
                .interceptor(compat::INITIATE_ROOT)
                .send()
                .await
                .map_err(|e| self.note_refusal(sends, classify(e, Some(bucket))))?;
            out.upload_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                S3Error::new(
                    ErrorKind::Permanent,
                    "CreateMultipartUpload answered without an UploadId",
                )
            })
        })
        .await
    }

    /// Sends one part; `checksum` is computed from the bytes read, and S3 verifies it on receipt.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        checksum: Option<&str>,
    ) -> Result<PartAnswer> {
        self.retrying("UploadPart", || async {
            let request = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body.clone()));
            let (request, sends) = match (self.checksum_mode(), checksum) {
                (ChecksumMode::Crc32c, Some(c)) => (request.checksum_crc32_c(c), true),
                (ChecksumMode::Crc32, Some(c)) => (request.checksum_crc32(c), true),
                _ => (request, false),
            };
            // As for PutObject: the signed checksum proves the body.
            let request = request.customize();
            let request = if sends {
                request.disable_payload_signing()
            } else {
                request
            };
            let out = request
                .send()
                .await
                .map_err(|e| self.note_refusal(sends, classify(e, Some(bucket))))?;
            let answered = self.answered(out.checksum_crc32_c, out.checksum_crc32);
            if sends {
                self.learn_part_checksums(answered.is_some());
            }
            let etag = out.e_tag.filter(|t| !t.is_empty()).ok_or_else(|| {
                S3Error::new(ErrorKind::Permanent, "UploadPart answered without an ETag")
            })?;
            Ok(PartAnswer {
                etag,
                checksum: answered,
            })
        })
        .await
    }

    /// Every part the server holds of a multipart upload (all pages). A store learnt not to do
    /// ListParts is not asked again: NotSupported at once.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<ListedPart>> {
        if self.no_list_parts.load(Ordering::Relaxed) {
            return Err(S3Error::new(
                ErrorKind::NotSupported,
                "ListParts: the store does not support it (learnt from an earlier answer)",
            ));
        }
        let listed = self.list_parts_pages(bucket, key, upload_id).await;
        if let Err(e) = &listed
            && e.kind == ErrorKind::NotSupported
            && !self.no_list_parts.swap(true, Ordering::Relaxed)
        {
            tracing::info!(error = %e, "the store does not list the parts of a multipart upload: uploads resume from the parts ferry recorded, and the object's final verification decides");
        }
        listed
    }

    async fn list_parts_pages(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<ListedPart>> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .retrying("ListParts", || async {
                    self.client
                        .list_parts()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .customize()
                        .interceptor(compat::LIST_PARTS_ROOT)
                        .send()
                        .await
                        .map_err(|e| classify(e, Some(bucket)))
                })
                .await?;
            for p in page.parts() {
                if let Some(number) = p.part_number() {
                    parts.push(ListedPart {
                        number: i64::from(number),
                        size: p.size().and_then(|n| u64::try_from(n).ok()),
                        etag: p.e_tag().map(str::to_owned),
                    });
                }
            }
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) if Some(next) != marker.as_deref() => {
                    marker = Some(next.to_owned())
                }
                _ => return Ok(parts),
            }
        }
    }

    /// Every open multipart upload under a prefix (all pages).
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ListedUpload>> {
        let mut uploads = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .retrying("ListMultipartUploads", || async {
                    self.client
                        .list_multipart_uploads()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_key_marker(markers.0.clone())
                        .set_upload_id_marker(markers.1.clone())
                        .send()
                        .await
                        .map_err(|e| classify(e, Some(bucket)))
                })
                .await?;
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    uploads.push(ListedUpload {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                    });
                }
            }
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_upload_id_marker().map(str::to_owned),
            );
            if page.is_truncated() != Some(true) || next == markers || next.0.is_none() {
                return Ok(uploads);
            }
            markers = next;
        }
    }

    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<StoredAnswer> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .set_checksum_crc32_c(match self.checksum_mode() {
                                ChecksumMode::Crc32c => p.checksum.clone(),
                                _ => None,
                            })
                            .set_checksum_crc32(match self.checksum_mode() {
                                ChecksumMode::Crc32 => p.checksum.clone(),
                                _ => None,
                            })
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.retrying("CompleteMultipartUpload", || async {
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
                .await
                .map(|out| StoredAnswer {
                    checksum: self.answered(out.checksum_crc32_c, out.checksum_crc32),
                    etag: out.e_tag,
                })
                .map_err(|e| classify(e, Some(bucket)))
        })
        .await
    }

    /// Aborts a multipart upload; one the server no longer knows counts as aborted.
    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<()> {
        let result = self
            .retrying("AbortMultipartUpload", || async {
                self.client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(e, Some(bucket)))
            })
            .await;
        match result {
            Err(e) if e.kind == ErrorKind::NoSuchUpload => Ok(()),
            other => other,
        }
    }

    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let asks = self.checksum_mode() != ChecksumMode::None;
        match self.head_object_once(bucket, key, asks).await {
            // A HEAD answer has no body to say why: a 400 to a HEAD that asked for checksums
            // (B2 refuses `x-amz-checksum-mode`) is tried once without, and when that answers,
            // the store is taken to refuse checksum headers.
            Err(e)
                if asks
                    && !self.checksum_pinned
                    && e.kind == ErrorKind::Permanent
                    && e.message.contains("HTTP 400") =>
            {
                let info = self.head_object_once(bucket, key, false).await?;
                let refused = S3Error::new(ErrorKind::NotSupported, e.message);
                let _ = self.note_refusal(true, refused);
                Ok(info)
            }
            other => other,
        }
    }

    async fn head_object_once(
        &self,
        bucket: &str,
        key: &str,
        ask_checksum: bool,
    ) -> Result<ObjectInfo> {
        self.retrying("HeadObject", || async {
            let out = self
                .client
                .head_object()
                .bucket(bucket)
                .key(key)
                .set_checksum_mode(ask_checksum.then_some(S3ChecksumMode::Enabled))
                .send()
                .await
                .map_err(|e| classify(e, Some(bucket)))?;
            Ok(ObjectInfo {
                size: out
                    .content_length
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        S3Error::new(ErrorKind::Permanent, "HeadObject answered without a size")
                    })?,
                checksum: match self.checksum_mode() {
                    ChecksumMode::Crc32c => out.checksum_crc32_c.clone(),
                    ChecksumMode::Crc32 => out.checksum_crc32.clone(),
                    ChecksumMode::None => None,
                },
                etag: out.e_tag,
            })
        })
        .await
    }
}

/// Whether an error answers a request's checksum headers with "not here" (B2's 400
/// InvalidArgument "Unsupported header 'x-amz-checksum-crc32c' ...", R2's 501), as opposed to a
/// checksum that did not match the bytes (BadDigest, a part corrupted on the way), which must
/// fail the attempt and never lower the proof.
fn refuses_checksum_headers(e: &S3Error) -> bool {
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

fn mode_code(mode: ChecksumMode) -> u8 {
    match mode {
        ChecksumMode::Crc32c => 0,
        ChecksumMode::Crc32 => 1,
        ChecksumMode::None => 2,
    }
}

fn mode_of(code: u8) -> ChecksumMode {
    match code {
        0 => ChecksumMode::Crc32c,
        1 => ChecksumMode::Crc32,
        _ => ChecksumMode::None,
    }
}

fn algorithm(mode: ChecksumMode) -> Option<ChecksumAlgorithm> {
    match mode {
        ChecksumMode::Crc32c => Some(ChecksumAlgorithm::Crc32C),
        ChecksumMode::Crc32 => Some(ChecksumAlgorithm::Crc32),
        ChecksumMode::None => None,
    }
}

impl ObjectStore {
    pub fn checksum_mode(&self) -> ChecksumMode {
        mode_of(self.checksum.load(Ordering::Relaxed))
    }

    /// Turns an answer to a request that carried checksum headers into ChecksumsRefused when the
    /// store refused those headers (Backblaze B2 refuses them outright, Cloudflare R2 answered
    /// 501), and from then on sends none, proving objects by their MD5 ETags, unless
    /// FERRY_CHECKSUM pins the algorithm. Logged once.
    fn note_refusal(&self, sent_checksum: bool, e: S3Error) -> S3Error {
        let refused = sent_checksum && refuses_checksum_headers(&e);
        if !refused || self.checksum_pinned {
            return e;
        }
        let before = self
            .checksum
            .swap(mode_code(ChecksumMode::None), Ordering::Relaxed);
        if before != mode_code(ChecksumMode::None) {
            tracing::warn!(error = %e, "the store refuses checksum headers: objects are proven by their MD5 ETags from now on (FERRY_CHECKSUM=crc32c would pin the checksum and fail instead)");
        }
        S3Error {
            kind: ErrorKind::ChecksumsRefused,
            message: format!("{} (sent again without checksum headers)", e.message),
            unreachable: false,
        }
    }

    /// The checksum of the configured algorithm in an answer, of those it may carry.
    fn answered(&self, crc32c: Option<String>, crc32: Option<String>) -> Option<String> {
        match self.checksum_mode() {
            ChecksumMode::Crc32c => crc32c,
            ChecksumMode::Crc32 => crc32,
            ChecksumMode::None => None,
        }
    }

    fn learn_part_checksums(&self, answered: bool) {
        let now = if answered {
            PART_CHECKSUMS_ANSWERED
        } else {
            PART_CHECKSUMS_IGNORED
        };
        if self.part_checksums.swap(now, Ordering::Relaxed) != now && !answered {
            tracing::info!(
                "S3 answers parts without their checksum, so it may not check them: parts are proven by their MD5 from now on"
            );
        }
    }

    /// Whether a part's MD5 must be computed to prove it: when no checksum is sent, and when the
    /// store is not known to answer parts with their checksum (its ETag, an MD5, is then the
    /// only proof, of each part and of the object's `md5-of-md5s-N`).
    pub fn parts_need_md5(&self) -> bool {
        self.checksum_mode() == ChecksumMode::None
            || self.part_checksums.load(Ordering::Relaxed) != PART_CHECKSUMS_ANSWERED
    }
}

/// Sorts an SDK error into what ferry does about it, with a message a person can act on.
fn classify<E, R>(err: SdkError<E, R>, bucket: Option<&str>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus + 'static,
{
    let detail = causes(&err);
    match &err {
        SdkError::TimeoutError(_) => S3Error::unreachable(format!("S3 timed out: {detail}")),
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
            S3Error::new(kind, text)
        }
        _ => S3Error::new(ErrorKind::Permanent, detail),
    }
}

/// The decision table for a service answer.
fn kind_of(status: u16, code: &str) -> ErrorKind {
    match code {
        "NoSuchBucket" => return ErrorKind::NoSuchBucket,
        "NoSuchUpload" => return ErrorKind::NoSuchUpload,
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "AllAccessDisabled"
        | "ExpiredToken"
        | "InvalidToken" => return ErrorKind::AccessDenied,
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
