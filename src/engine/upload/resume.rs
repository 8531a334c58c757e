//! Resuming a multipart upload an earlier attempt left open: which recorded parts the store
//! still holds (ListParts, or ferry's own records where the store's listing cannot be used),
//! whether the object was completed just before a stop, and what the assembled object must be.

use std::collections::BTreeMap;

use super::{Sent, UploadError, Uploader};
use crate::core::checksum::ChecksumMode;
use crate::core::object::ObjectOptions;
use crate::core::plan::{MAX_PARTS, MIN_PART_SIZE, expected_etag};
use crate::core::verify::Verdict;
use crate::s3::{ErrorKind, ListedPart, StoredAnswer};
use crate::store::{ClaimedFile, OpenUpload, PartRecord};

impl Uploader<'_> {
    /// Picks up the multipart upload an earlier attempt left: the parts both the store recorded
    /// and the server holds (same number, size and ETag) are kept; the others go again.
    pub(super) async fn resume(
        &self,
        file: &ClaimedFile,
        key: &str,
    ) -> Result<Resumed, UploadError> {
        let Some(open) = &file.resume else {
            return Ok(Resumed::Nothing);
        };
        let mode = self.s3.checksum_mode();
        let version = file.version();
        let upload_id = open.multipart_upload_id.as_str();
        // Begun before ferry had object options: with none.
        let begun_with = open
            .settings
            .clone()
            .unwrap_or_else(|| ObjectOptions::defaults(&file.upload_id).fingerprint());
        if open.checksum != mode.as_str()
            || !usable_part_size(open.part_size, file.size)
            || begun_with != file.object.fingerprint()
        {
            tracing::info!(
                multipart_upload_id = upload_id,
                "the open upload was begun with other settings (checksum, part size, storage class, encryption, metadata or tags); starting over"
            );
            self.store.abandon_upload(version).await?;
            return Ok(Resumed::Nothing);
        }
        let recorded = self.store.parts(file.file_id, upload_id).await?;
        let listed = match self.s3.list_parts(&file.bucket, key, upload_id).await {
            Ok(listed) => Some(listed),
            Err(e) if e.kind == ErrorKind::NoSuchUpload => {
                // Completed just before a stop, or aborted, or expired by a lifecycle rule.
                let parts = file.size.div_ceil(open.part_size);
                if recorded.len() as u64 == parts
                    && let Some(sent) = self.completed_before_stop(file, key, recorded).await
                {
                    tracing::info!(
                        multipart_upload_id = upload_id,
                        "the upload was completed before the stop"
                    );
                    return Ok(Resumed::AlreadyComplete(sent));
                }
                tracing::info!(
                    multipart_upload_id = upload_id,
                    "S3 no longer knows the open upload; starting over"
                );
                self.store.abandon_upload(version).await?;
                return Ok(Resumed::Nothing);
            }
            // The store's listing cannot be used (s3rver answers 405; a body the SDK cannot
            // read): the parts ferry recorded stand, since S3 acknowledged each of them, and the
            // completion and the object's verification decide. A part the store lost fails the
            // completion, and the upload starts over.
            Err(e) if matches!(e.kind, ErrorKind::NotSupported | ErrorKind::Malformed) => {
                tracing::info!(multipart_upload_id = upload_id, parts = recorded.len(), error = %e, "the store's part listing cannot be used; resuming from the parts ferry recorded");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let (kept, lost): (Vec<PartRecord>, Vec<PartRecord>) = match listed {
            None => (recorded, Vec::new()),
            Some(listed) => {
                let on_server: BTreeMap<i64, ListedPart> =
                    listed.into_iter().map(|p| (p.number, p)).collect();
                recorded
                    .into_iter()
                    .partition(|p| still_held(p, on_server.get(&p.number)))
            }
        };
        if !lost.is_empty() {
            let numbers: Vec<i64> = lost.iter().map(|p| p.number).collect();
            self.store.forget_parts(file.file_id, &numbers).await?;
        }
        tracing::info!(
            multipart_upload_id = upload_id,
            parts_kept = kept.len(),
            parts_lost = lost.len(),
            "resuming the multipart upload"
        );
        Ok(Resumed::Parts(
            open.clone(),
            kept.into_iter().map(|p| (p.number, p)).collect(),
        ))
    }
}

impl Uploader<'_> {
    /// What was sent, when the object S3 holds is the one these recorded parts make: HeadObject's
    /// answer stands for the completion's, lost with the stop.
    async fn completed_before_stop(
        &self,
        file: &ClaimedFile,
        key: &str,
        recorded: Vec<PartRecord>,
    ) -> Option<Sent> {
        let info = self.s3.head_object(&file.bucket, key).await.ok()?;
        if info.size != file.size {
            return None;
        }
        let done: BTreeMap<i64, PartRecord> = recorded.into_iter().map(|p| (p.number, p)).collect();
        let answer = StoredAnswer {
            etag: info.etag,
            checksum: info.checksum,
            sse: info.look.sse,
        };
        let sent = expectations(self.s3.checksum_mode(), &done, answer);
        (sent.verdict(file.object.etags_are_md5()) == Verdict::Proven).then_some(sent)
    }
}

pub(super) enum Resumed {
    Nothing,
    Parts(OpenUpload, BTreeMap<i64, PartRecord>),
    AlreadyComplete(Sent),
}

/// What S3 should hold once these parts are assembled.
pub(super) fn expectations(
    mode: ChecksumMode,
    parts: &BTreeMap<i64, PartRecord>,
    answer: StoredAnswer,
) -> Sent {
    // Parts recorded without their MD5 (a checksum proved them) give no expected ETag.
    let digests: Option<Vec<[u8; 16]>> = parts.values().map(|p| hex_digest(&p.md5)).collect();
    let checksums: Option<Vec<&str>> = parts.values().map(|p| p.checksum.as_deref()).collect();
    Sent {
        expected_etag: digests.map(|d| expected_etag(&d, true)),
        expected_checksum: checksums.and_then(|c| mode.composite(c)),
        answer,
    }
}

/// A part size an upload can go on with: within S3's limits for a file of this size.
pub(super) fn usable_part_size(part_size: u64, size: u64) -> bool {
    part_size >= MIN_PART_SIZE && size.div_ceil(part_size) <= MAX_PARTS
}

/// Whether a recorded part is one the store lists: the same number, and the same size and
/// ETag where the listing gives them (s3s-fs lists parts without ETags; the recorded ETag, which
/// S3 acknowledged, then stands, and the completion checks it).
pub(super) fn still_held(recorded: &PartRecord, listed: Option<&ListedPart>) -> bool {
    let Some(listed) = listed else {
        return false;
    };
    listed.size.is_none_or(|size| size == recorded.size as u64)
        && listed
            .etag
            .as_deref()
            .is_none_or(|etag| normalize_etag(etag) == normalize_etag(&recorded.etag))
}

pub(super) fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

/// The digest a recorded MD5 (hex) stands for; None when none was recorded or it is malformed.
pub(super) fn hex_digest(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::md5_digest;

    #[test]
    fn a_recorded_part_stands_where_the_listing_agrees_or_is_silent() {
        let recorded = PartRecord {
            number: 2,
            size: 100,
            etag: "\"abc\"".into(),
            checksum: None,
            md5: String::new(),
        };
        let listed = |size, etag: Option<&str>| ListedPart {
            number: 2,
            size,
            etag: etag.map(str::to_owned),
        };
        assert!(still_held(&recorded, Some(&listed(Some(100), Some("ABC")))));
        assert!(still_held(&recorded, Some(&listed(Some(100), None))));
        assert!(still_held(&recorded, Some(&listed(None, None))));
        assert!(!still_held(&recorded, Some(&listed(Some(99), None))));
        assert!(!still_held(
            &recorded,
            Some(&listed(Some(100), Some("def")))
        ));
        assert!(!still_held(&recorded, None));
    }

    #[test]
    fn part_sizes_from_an_earlier_run_are_checked() {
        const MIB: u64 = 1024 * 1024;
        assert!(usable_part_size(5 * MIB, 12 * MIB));
        assert!(!usable_part_size(4 * MIB, 12 * MIB));
        assert!(!usable_part_size(5 * MIB, 5 * MIB * MAX_PARTS + 1));
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = md5_digest(b"abc");
        let hex = expected_etag(&[d], false);
        assert_eq!(hex_digest(&hex), Some(d));
        assert_eq!(hex_digest(""), None);
        assert_eq!(hex_digest(&"zz".repeat(16)), None);
        assert_eq!(normalize_etag("\"ABC\""), "abc");
    }
}
