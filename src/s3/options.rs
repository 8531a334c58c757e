//! What a request that creates an object carries of its job's object options (storage class,
//! encryption, metadata, tags, Content-Type), and a store's refusal of one of them, named.

use std::collections::HashMap;

use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};

use super::error::{ErrorKind, S3Error};
use crate::core::object::ObjectOptions;

/// Sets the object's options on a PutObject or CreateMultipartUpload request (the two builders
/// share the setters, not a trait).
macro_rules! with_options {
    ($request:expr, $options:expr, $content_type:expr) => {{
        let o: &$crate::core::object::ObjectOptions = $options;
        $request
            .content_type($content_type)
            .set_storage_class(
                o.storage_class
                    .as_deref()
                    .map($crate::s3::options::storage_class),
            )
            .set_server_side_encryption(
                o.sse.as_ref().map(|s| $crate::s3::options::sse(s.as_str())),
            )
            .set_ssekms_key_id(
                o.sse
                    .as_ref()
                    .and_then(|s| s.kms_key_id())
                    .map(str::to_owned),
            )
            .set_metadata($crate::s3::options::metadata(o))
            .set_tagging(o.tagging())
    }};
}
pub(super) use with_options;

pub(super) fn storage_class(class: &str) -> StorageClass {
    StorageClass::from(class)
}

pub(super) fn sse(value: &str) -> ServerSideEncryption {
    ServerSideEncryption::from(value)
}

pub(super) fn metadata(o: &ObjectOptions) -> Option<HashMap<String, String>> {
    (!o.metadata.is_empty()).then(|| o.metadata.clone().into_iter().collect())
}

/// The largest object CopyObject copies in one request (S3's limit); a larger one is uploaded
/// again instead.
pub const MAX_COPY_BYTES: u64 = 5 << 30;

/// `x-amz-copy-source`: the bucket and the key, each segment of the key percent-encoded.
fn copy_source(bucket: &str, key: &str) -> String {
    let key: Vec<String> = key
        .split('/')
        .map(crate::core::url::percent_encode)
        .collect();
    format!("{bucket}/{}", key.join("/"))
}

impl super::ObjectStore {
    /// Copies an object onto `bucket`/`key` (itself, or from an old prefix or bucket) with the
    /// job's look: class, encryption, metadata, tags and Content-Type all replaced, so that
    /// nothing of the old look stays.
    pub async fn copy_object(
        &self,
        (from_bucket, from_key): (&str, &str),
        bucket: &str,
        key: &str,
        (options, content_type): (&ObjectOptions, &str),
    ) -> super::Result<super::StoredAnswer> {
        self.retrying("CopyObject", || async {
            let request = self
                .client
                .copy_object()
                .copy_source(copy_source(from_bucket, from_key))
                .bucket(bucket)
                .key(key)
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
                // The copy gets a checksum of its own, computed by the store from the bytes,
                // instead of the source's: a copied multipart object is one part, and a
                // store that kept the old composite (moto) fails every checked GetObject.
                .set_checksum_algorithm(super::algorithm(self.checksum_mode()));
            with_options!(request, options, content_type)
                .send()
                .await
                .map(|out| super::StoredAnswer {
                    sse: out.server_side_encryption.map(|s| s.as_str().to_owned()),
                    etag: out.copy_object_result.and_then(|r| r.e_tag),
                    checksum: None,
                })
                .map_err(|e| super::error::classify(e, Some(bucket)))
        })
        .await
    }

    /// Sets an object's tags to the job's (PutObjectTagging; DeleteObjectTagging for none).
    pub async fn put_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        options: &ObjectOptions,
    ) -> super::Result<()> {
        if options.tags.is_empty() {
            self.retrying("DeleteObjectTagging", || async {
                self.client
                    .delete_object_tagging()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| super::error::classify(e, Some(bucket)))
            })
            .await
        } else {
            let tags = options
                .tags
                .iter()
                .map(|(k, v)| {
                    aws_sdk_s3::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .expect("key and value are set")
                })
                .collect::<Vec<_>>();
            let tagging = aws_sdk_s3::types::Tagging::builder()
                .set_tag_set(Some(tags))
                .build()
                .expect("the tag set is set");
            self.retrying("PutObjectTagging", || async {
                self.client
                    .put_object_tagging()
                    .bucket(bucket)
                    .key(key)
                    .tagging(tagging.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| super::error::classify(e, Some(bucket)))
            })
            .await
        }
    }

    /// How many tags an object keeps (GetObjectTagging), for a store whose HeadObject does not
    /// say (`x-amz-tagging-count`). None when the store cannot show tags: it does not do
    /// tagging (501), or answers with something else (rclone serve s3 sends the object).
    pub async fn tag_count(&self, bucket: &str, key: &str) -> super::Result<Option<usize>> {
        let answer = self
            .retrying("GetObjectTagging", || async {
                self.client
                    .get_object_tagging()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map(|out| Some(out.tag_set.len()))
                    .map_err(|e| super::error::classify(e, Some(bucket)))
            })
            .await;
        match answer {
            Err(e) if matches!(e.kind, ErrorKind::NotSupported | ErrorKind::Malformed) => Ok(None),
            other => other,
        }
    }
}

/// Whether a refusal may be of the checksum headers rather than of the object's options: with
/// options on the request, a bare 501 could be either, and only one that says "checksum" is
/// taken for the checksum's (a store without tagging must not switch every proof to MD5).
pub(super) fn may_be_checksum_refusal(e: &S3Error, o: &ObjectOptions) -> bool {
    o.requested().is_empty() || e.message.to_ascii_lowercase().contains("checksum")
}

/// A refusal of a request that carried object options, with the option it is about named (from
/// the store's code or message), or every option the request carried when the answer does not
/// say: the user learns which feature the store lacks, and the store's own words.
///
/// Also for the parts and the completion of a multipart upload begun with the options: SeaweedFS
/// takes an SSE-KMS CreateMultipartUpload and answers each part `500 InternalError` without a
/// word of KMS. A 500 is therefore taken as possibly the options' (a 503 or a dropped connection
/// is not), and the kind stays, so that it is still retried.
pub fn name_refused_option(e: S3Error, o: &ObjectOptions) -> S3Error {
    let requested = o.requested();
    if requested.is_empty()
        || e.unreachable
        || e.message.starts_with("the store refused")
        || matches!(e.kind, ErrorKind::NoSuchBucket | ErrorKind::NoSuchUpload)
    {
        return e;
    }
    // By words, so that "outage" is not about tags: `InvalidStorageClass`, `KMS.NotFoundException`,
    // `x-amz-tagging`, `MetadataTooLarge` ...
    let text = e.message.to_ascii_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let any = |f: &dyn Fn(&str) -> bool| words.iter().any(|w| f(w));
    let named = |field: &str| requested.iter().find(|r| r.starts_with(field)).cloned();
    let feature = if text.contains("storage class") || any(&|w| w.contains("storageclass")) {
        named("storage_class")
    } else if any(&|w| w.contains("kms") || w.contains("encryption")) {
        named("sse")
    } else if any(&|w| matches!(w, "tag" | "tags" | "tagging") || w.starts_with("invalidtag")) {
        named("tags")
    } else if any(&|w| w.contains("metadata")) {
        named("metadata")
    } else {
        None
    };
    // Without a word of the options, an access denial is the credentials', and a passing
    // fault (a 503, a dropped connection) is the network's, as without them.
    let said_nothing = match e.kind {
        ErrorKind::Transient => !e.message.contains("HTTP 500"),
        ErrorKind::AccessDenied | ErrorKind::Malformed | ErrorKind::ChecksumsRefused => true,
        _ => false,
    };
    if said_nothing && feature.is_none() {
        return e;
    }
    let message = match feature {
        Some(f) => format!("the store refused this job's {f}: {}", e.message),
        None => format!(
            "the store refused an object with this job's {} (it may not support one of them): {}",
            requested.join(", "),
            e.message
        ),
    };
    S3Error { message, ..e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object::Sse;

    fn options() -> ObjectOptions {
        let mut o = ObjectOptions::defaults("j");
        o.storage_class = Some("STANDARD_IA".into());
        o.sse = Some(Sse::Kms {
            key_id: Some("alias/k".into()),
        });
        o.tags.insert("team".into(), "a".into());
        o
    }

    #[test]
    fn a_refusal_names_the_option_it_is_about() {
        let e = S3Error::new(
            ErrorKind::Permanent,
            "PutObject: HTTP 400 InvalidStorageClass: The storage class you specified is not valid",
        );
        let named = name_refused_option(e, &options());
        assert!(
            named
                .message
                .starts_with("the store refused this job's storage_class STANDARD_IA: PutObject"),
            "{}",
            named.message
        );

        let e = S3Error::new(
            ErrorKind::Permanent,
            "PutObject: HTTP 400 KMS.NotFoundException: Invalid keyId alias/k",
        );
        assert!(
            name_refused_option(e, &options())
                .message
                .contains("job's sse aws:kms (kms_key_id alias/k)")
        );

        let e = S3Error::new(
            ErrorKind::NotSupported,
            "PutObject: HTTP 501 NotImplemented: A header you provided implies functionality that is not implemented",
        );
        let named = name_refused_option(e, &options());
        assert!(named.message.contains("storage_class STANDARD_IA, sse aws:kms (kms_key_id alias/k), tags (1) (it may not support one of them)"), "{}", named.message);
        assert_eq!(named.kind, ErrorKind::NotSupported);

        // LocalStack without its KMS: a 500 that names KMS, retried, then named.
        let e = S3Error::new(
            ErrorKind::Transient,
            "PutObject: HTTP 500 InternalError: Service 'kms' is not enabled",
        );
        let named = name_refused_option(e, &options());
        assert!(
            named
                .message
                .starts_with("the store refused this job's sse aws:kms"),
            "{}",
            named.message
        );
        assert_eq!(named.kind, ErrorKind::Transient);

        // SeaweedFS's answer to the parts of an SSE-KMS upload: a bare 500, every option listed.
        let e = S3Error::new(
            ErrorKind::Transient,
            "UploadPart: S3 answered HTTP 500 InternalError: We encountered an internal error, please try again.",
        );
        let named = name_refused_option(e, &options());
        assert!(
            named.message.starts_with(
                "the store refused an object with this job's storage_class STANDARD_IA, sse aws:kms"
            ),
            "{}",
            named.message
        );
        // Named once, however often it passes through.
        assert_eq!(
            name_refused_option(named.clone(), &options()).message,
            named.message
        );
    }

    #[test]
    fn words_that_merely_hold_an_options_name_do_not_count() {
        let e = S3Error::new(
            ErrorKind::Transient,
            "PutObject: HTTP 503 SlowDown: a stage of the outage passes",
        );
        assert_eq!(
            name_refused_option(e.clone(), &options()).message,
            e.message
        );
        let tagging = S3Error::new(
            ErrorKind::NotSupported,
            "PutObject: HTTP 501 NotImplemented (x-amz-tagging)",
        );
        assert!(
            name_refused_option(tagging, &options())
                .message
                .starts_with("the store refused this job's tags (1)")
        );
    }

    #[test]
    fn without_options_or_for_other_errors_nothing_changes() {
        let e = S3Error::new(
            ErrorKind::Permanent,
            "PutObject: HTTP 400 InvalidStorageClass",
        );
        let plain = ObjectOptions::defaults("j");
        assert_eq!(name_refused_option(e.clone(), &plain).message, e.message);
        let transient = S3Error::new(ErrorKind::Transient, "PutObject: HTTP 503 SlowDown");
        assert_eq!(
            name_refused_option(transient.clone(), &options()).message,
            transient.message
        );
        let denied = S3Error::new(ErrorKind::AccessDenied, "PutObject: HTTP 403 AccessDenied");
        assert_eq!(
            name_refused_option(denied.clone(), &options()).message,
            denied.message
        );
        // No answer at all: the network's, whatever it says.
        let gone = S3Error::unreachable("PutObject: connection refused (HTTP 500 proxy)");
        assert_eq!(
            name_refused_option(gone.clone(), &options()).message,
            gone.message
        );
    }

    #[test]
    fn a_copy_source_encodes_each_segment_of_the_key() {
        assert_eq!(
            copy_source("b", "a dir/ü+x.txt"),
            "b/a%20dir/%C3%BC%2Bx.txt"
        );
        assert_eq!(copy_source("b", "plain"), "b/plain");
    }

    #[test]
    fn a_bare_501_with_options_is_not_taken_for_a_checksum_refusal() {
        let e = S3Error::new(
            ErrorKind::NotSupported,
            "PutObject: HTTP 501 NotImplemented",
        );
        assert!(!may_be_checksum_refusal(&e, &options()));
        assert!(may_be_checksum_refusal(&e, &ObjectOptions::defaults("j")));
        let c = S3Error::new(
            ErrorKind::NotSupported,
            "HTTP 501: x-amz-checksum-crc32c not implemented",
        );
        assert!(may_be_checksum_refusal(&c, &options()));
    }
}
