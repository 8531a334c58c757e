//! The S3 edge: the only module that knows the AWS SDK.
//!
//! Each call is retried here, with backon (exponential, jittered, bounded), when its error is
//! transient: throttling, 5xx, timeouts, dropped connections. What cannot succeed by trying
//! again (a missing bucket, a refusal) fails at once with the reason. The SDK's own retries are
//! off so that this is the one place that decides.

mod compat;
mod error;
mod listing;
mod options;
mod pace;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode as S3ChecksumMode, CompletedMultipartUpload, CompletedPart,
};

use crate::core::checksum::ChecksumMode;
use crate::core::object::{ObjectOptions, StoredLook};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
pub use error::{ErrorKind, HttpStatus, S3Error};
use error::{classify, credentials_refused, refuses_checksum_headers};
pub use listing::Listing;
pub use options::{MAX_COPY_BYTES, name_refused_option};
use options::{may_be_checksum_refusal, with_options};

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
    /// The server-side encryption it says it applied (`x-amz-server-side-encryption`).
    pub sse: Option<String>,
}

/// What HeadObject says of an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
    /// The object's checksum of the configured algorithm, when the server keeps one.
    pub checksum: Option<String>,
    /// How it is stored: class, encryption, metadata, the count of its tags.
    pub look: StoredLook,
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
    /// A listing showed a multipart ETag (`…-N`): the store lists multipart objects in S3's
    /// form, as it answered their completion (rclone serve s3 lists their whole MD5 instead).
    lists_multipart_etags: Arc<AtomicBool>,
    /// FERRY_MAX_BANDWIDTH: every upload's body is paced by it.
    pacer: Option<pace::Pacer>,
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
        max_bandwidth: Option<u64>,
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
            lists_multipart_etags: Arc::default(),
            pacer: max_bandwidth.map(pace::Pacer::new),
        })
    }

    fn note_congestion(&self, err: &S3Error) {
        // Counted once, in the metric the concurrency controller reads.
        if err.congestion {
            crate::metrics::get().s3_pushback.inc();
        }
    }

    async fn retrying<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        call.retry(self.retry.backoff())
            .when(S3Error::is_transient)
            .notify(|err: &S3Error, delay: Duration| {
                self.note_congestion(err);
                crate::metrics::get().s3_retries.inc(&[what]);
                tracing::warn!(operation = what, error = %err, retry_in_ms = delay.as_millis() as u64, "S3 request failed, retrying");
            })
            .await
            .map_err(|e| {
                self.note_congestion(&e);
                e.during(what)
            })
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
                Some(code) if credentials_refused(code) => Readiness::CredentialsRefused(format!(
                    "S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
                )),
                _ => Readiness::Ready,
            },
            Err(e) => Readiness::Unreachable(classify(e, None).message),
        }
    }

    /// Sends a whole object, as its job's options say it looks, with this Content-Type;
    /// `checksum` is its checksum as computed from the bytes read, which S3 verifies on receipt.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        checksum: Option<&str>,
        look: (&ObjectOptions, &str),
    ) -> Result<StoredAnswer> {
        match self
            .put_object_once(bucket, key, &body, checksum, look)
            .await
        {
            // The whole object is at hand: it goes again at once without the headers, and its
            // ETag proves it (the uploader computes the MD5 when the answer has no checksum).
            Err(e) if e.kind == ErrorKind::ChecksumsRefused => {
                self.put_object_once(bucket, key, &body, None, look).await
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
        (options, content_type): (&ObjectOptions, &str),
    ) -> Result<StoredAnswer> {
        self.retrying("PutObject", || async {
            let mode = self.checksum_mode();
            let request = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(pace::body(body.clone(), self.pacer.as_ref()));
            let request = with_options!(request, options, content_type);
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
                    sse: out.server_side_encryption.map(|s| s.as_str().to_owned()),
                    checksum: self.answered(out.checksum_crc32_c, out.checksum_crc32),
                    etag: out.e_tag,
                })
                .map_err(|e| {
                    let e = classify(e, Some(bucket));
                    let sent = sends && may_be_checksum_refusal(&e, options);
                    self.note_refusal(sent, e)
                })
        })
        .await
    }

    /// Begins a multipart upload of an object that looks as its job's options say, with this
    /// Content-Type (the parts carry only bytes).
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        (options, content_type): (&ObjectOptions, &str),
    ) -> Result<String> {
        self.retrying("CreateMultipartUpload", || async {
            let algorithm = algorithm(self.checksum_mode());
            let sends = algorithm.is_some();
            let request = self
                .client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                // Each part carries a checksum that S3 checks on receipt, and the completion lists
                // them, so a part corrupted on the way is refused rather than stored.
                .set_checksum_algorithm(algorithm);
            let out = with_options!(request, options, content_type)
                .customize()
                .interceptor(compat::INITIATE_ROOT)
                .send()
                .await
                .map_err(|e| {
                    let e = classify(e, Some(bucket));
                    let sent = sends && may_be_checksum_refusal(&e, options);
                    self.note_refusal(sent, e)
                })?;
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
                .body(pace::body(body.clone(), self.pacer.as_ref()));
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
                    sse: out.server_side_encryption.map(|s| s.as_str().to_owned()),
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
                look: StoredLook {
                    storage_class: out.storage_class.as_ref().map(|c| c.as_str().to_owned()),
                    sse: out
                        .server_side_encryption
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    metadata: out
                        .metadata
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    tag_count: out.tag_count.and_then(|n| usize::try_from(n).ok()),
                },
                etag: out.e_tag,
            })
        })
        .await
    }
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
            congestion: false,
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
