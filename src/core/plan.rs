//! How a file goes up: part sizes, part ranges, object keys, the ETag S3 should answer with.
//! Plain functions over plain data; no I/O.

use std::path::{Component, Path};

use md5::{Digest, Md5};

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest object.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// How one file is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadPlan {
    /// One PutObject: files smaller than the part size, 0-byte files included.
    Single,
    /// A multipart upload of `parts` parts of `part_size` bytes (the last may be shorter).
    Multipart { part_size: u64, parts: u64 },
}

/// Chooses how a file of `size` bytes is sent, given the configured part size.
///
/// The part size grows (in whole MiB) when the file would otherwise need more than 10,000 parts.
pub fn plan_upload(size: u64, chunk_size: u64) -> Result<UploadPlan, PlanError> {
    if size > MAX_OBJECT_SIZE {
        return Err(PlanError::TooLarge { size });
    }
    if size < chunk_size {
        return Ok(UploadPlan::Single);
    }
    let part_size = part_size_for(size, chunk_size);
    Ok(UploadPlan::Multipart {
        part_size,
        parts: size.div_ceil(part_size),
    })
}

/// The part size for a file: the configured one, or larger so that the file fits in 10,000 parts.
pub fn part_size_for(size: u64, chunk_size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS);
    if needed <= chunk_size {
        chunk_size
    } else {
        needed.div_ceil(MIB) * MIB
    }
}

/// Offset and length of part `number` (1-based) of a file of `size` bytes.
pub fn part_range(size: u64, part_size: u64, number: u64) -> (u64, u64) {
    let offset = (number - 1) * part_size;
    (offset, part_size.min(size - offset))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the file is {size} bytes; S3 objects can be at most 5 TiB")]
    TooLarge { size: u64 },
    #[error(
        "its object key would be {bytes} bytes (key_prefix and path); S3 keys are at most 1024"
    )]
    KeyTooLong { bytes: usize },
}

/// Whether S3 can hold an object at this key.
pub fn check_key(key: &str) -> Result<(), PlanError> {
    if key.len() > super::object::MAX_KEY_BYTES {
        return Err(PlanError::KeyTooLong { bytes: key.len() });
    }
    Ok(())
}

/// Why a path found under a source folder cannot become part of an object key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    #[error("the path is not inside the source folder")]
    Outside,
    #[error("the name is not valid UTF-8, and S3 keys must be")]
    NotUtf8,
}

/// The '/'-separated path of `path` relative to `root`, as it appears in the object key.
pub fn relative_key_path(root: &Path, path: &Path) -> Result<String, KeyPathError> {
    let rel = path.strip_prefix(root).map_err(|_| KeyPathError::Outside)?;
    let mut out = String::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => {
                let name = name.to_str().ok_or(KeyPathError::NotUtf8)?;
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name);
            }
            _ => return Err(KeyPathError::Outside),
        }
    }
    if out.is_empty() {
        return Err(KeyPathError::Outside);
    }
    Ok(out)
}

/// The MD5 of one part or of a whole small object.
pub fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The ETag S3 gives an object: its MD5 for a single PutObject, or the MD5 of the parts' MD5s
/// followed by `-N` for a multipart upload.
pub fn expected_etag(part_digests: &[[u8; 16]], multipart: bool) -> String {
    if multipart {
        let mut hasher = Md5::new();
        for d in part_digests {
            hasher.update(d);
        }
        format!("{}-{}", hex(&hasher.finalize()), part_digests.len())
    } else {
        part_digests.first().map(|d| hex(d)).unwrap_or_default()
    }
}

/// What a returned ETag says about the object's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagCheck {
    /// The ETag is an MD5 form and equals what we sent.
    Match,
    /// The ETag is an MD5 form and differs: the bytes S3 holds are not ours.
    Mismatch { expected: String, actual: String },
    /// The ETag is not an MD5 form (SSE-KMS, some S3-compatible stores): it proves nothing.
    Opaque,
}

/// Compares the ETag S3 answered with the one expected from the bytes sent.
pub fn check_etag(expected: &str, actual: &str) -> EtagCheck {
    let actual = actual.trim().trim_matches('"').to_ascii_lowercase();
    let is_md5_form = |s: &str| {
        let (digest, count) = match s.split_once('-') {
            Some((d, n)) => (d, Some(n)),
            None => (s, None),
        };
        digest.len() == 32
            && digest.bytes().all(|b| b.is_ascii_hexdigit())
            && count.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if !is_md5_form(&actual) || actual.contains('-') != expected.contains('-') {
        return EtagCheck::Opaque;
    }
    if actual == expected {
        EtagCheck::Match
    } else {
        EtagCheck::Mismatch {
            expected: expected.to_owned(),
            actual,
        }
    }
}

/// How long a file waits before its next attempt, after `attempts` failed ones: 2 s, doubling,
/// at most 5 minutes.
pub fn retry_delay(attempts: u32) -> std::time::Duration {
    let secs = 2u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(16));
    std::time::Duration::from_secs(secs.min(300))
}

/// When a file last modified at `mtime_ns` has been stable for `settle` (ms since the epoch), or
/// None when it already has. A modification time in the future (a skewed clock) counts as now.
pub fn settle_due(mtime_ns: i64, settle: std::time::Duration, now_ms: i64) -> Option<i64> {
    let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
    let mtime_ms = (mtime_ns / 1_000_000).min(now_ms);
    let due = mtime_ms.saturating_add(settle_ms);
    (due > now_ms).then_some(due)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn small_and_empty_files_go_in_one_put() {
        assert_eq!(plan_upload(0, 5 * MIB), Ok(UploadPlan::Single));
        assert_eq!(plan_upload(5 * MIB - 1, 5 * MIB), Ok(UploadPlan::Single));
    }

    #[test]
    fn a_file_on_the_boundary_is_one_part_and_one_byte_more_is_two() {
        assert_eq!(
            plan_upload(5 * MIB, 5 * MIB),
            Ok(UploadPlan::Multipart {
                part_size: 5 * MIB,
                parts: 1
            })
        );
        assert_eq!(
            plan_upload(5 * MIB + 1, 5 * MIB),
            Ok(UploadPlan::Multipart {
                part_size: 5 * MIB,
                parts: 2
            })
        );
        assert_eq!(part_range(5 * MIB + 1, 5 * MIB, 2), (5 * MIB, 1));
    }

    #[test]
    fn twelve_mib_is_three_parts() {
        let plan = plan_upload(12 * MIB, 5 * MIB).unwrap();
        assert_eq!(
            plan,
            UploadPlan::Multipart {
                part_size: 5 * MIB,
                parts: 3
            }
        );
        assert_eq!(part_range(12 * MIB, 5 * MIB, 1), (0, 5 * MIB));
        assert_eq!(part_range(12 * MIB, 5 * MIB, 3), (10 * MIB, 2 * MIB));
    }

    #[test]
    fn part_size_grows_to_stay_within_ten_thousand_parts() {
        // 100 GiB at 5 MiB would be 20,480 parts.
        let size = 100 * 1024 * MIB;
        let part = part_size_for(size, 5 * MIB);
        assert!(part.is_multiple_of(MIB));
        assert!(size.div_ceil(part) <= MAX_PARTS);
        assert!(part <= MAX_PART_SIZE);
        // The largest object still fits.
        let part = part_size_for(MAX_OBJECT_SIZE, 5 * MIB);
        assert!(MAX_OBJECT_SIZE.div_ceil(part) <= MAX_PARTS);
        assert!(part <= MAX_PART_SIZE);
        // Exactly 10,000 parts of the configured size stays as configured.
        assert_eq!(part_size_for(MAX_PARTS * 5 * MIB, 5 * MIB), 5 * MIB);
        assert_eq!(part_size_for(MAX_PARTS * 5 * MIB + 1, 5 * MIB), 6 * MIB);
        assert!(plan_upload(MAX_OBJECT_SIZE + 1, 5 * MIB).is_err());
    }

    #[test]
    fn keys_are_slash_separated_relative_paths() {
        let root = Path::new("/data/src");
        assert_eq!(
            relative_key_path(root, Path::new("/data/src/a/b c/ü+%#?.txt")),
            Ok("a/b c/ü+%#?.txt".to_owned())
        );
        assert_eq!(
            relative_key_path(root, Path::new("/data/other/x")),
            Err(KeyPathError::Outside)
        );
        assert_eq!(relative_key_path(root, root), Err(KeyPathError::Outside));
        assert!(check_key(&"k".repeat(1024)).is_ok());
        assert_eq!(
            check_key(&"k".repeat(1025)),
            Err(PlanError::KeyTooLong { bytes: 1025 })
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_cannot_become_keys() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("/r");
        let path = root.join(OsStr::from_bytes(b"bad\xff.bin"));
        assert_eq!(relative_key_path(root, &path), Err(KeyPathError::NotUtf8));
    }

    #[test]
    fn retries_back_off_and_are_capped() {
        use std::time::Duration;
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(4));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(9), Duration::from_secs(300));
        assert_eq!(retry_delay(1000), Duration::from_secs(300));
    }

    #[test]
    fn a_file_waits_until_it_has_been_stable_for_the_settle_time() {
        use std::time::Duration;
        let now = 1_000_000;
        let ns = |ms: i64| ms * 1_000_000;
        // Modified 500 ms ago, settle 2 s: due in 1.5 s.
        assert_eq!(
            settle_due(ns(now - 500), Duration::from_secs(2), now),
            Some(now + 1500)
        );
        // Modified 3 s ago: stable already.
        assert_eq!(
            settle_due(ns(now - 3000), Duration::from_secs(2), now),
            None
        );
        // No settle time: never waits.
        assert_eq!(settle_due(ns(now), Duration::ZERO, now), None);
        // In the future: counts as now.
        assert_eq!(
            settle_due(ns(now + 3_600_000), Duration::from_secs(2), now),
            Some(now + 2000)
        );
    }

    #[test]
    fn etags() {
        let empty = md5_digest(b"");
        assert_eq!(
            expected_etag(&[empty], false),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        let parts = [md5_digest(b"a"), md5_digest(b"b")];
        let etag = expected_etag(&parts, true);
        assert!(etag.ends_with("-2"));
        assert_eq!(check_etag(&etag, &format!("\"{etag}\"")), EtagCheck::Match);
        assert_eq!(
            check_etag(
                "d41d8cd98f00b204e9800998ecf8427e",
                "\"D41D8CD98F00B204E9800998ECF8427E\""
            ),
            EtagCheck::Match
        );
        assert!(matches!(
            check_etag(&etag, "\"00000000000000000000000000000000-2\""),
            EtagCheck::Mismatch { .. }
        ));
        assert_eq!(check_etag(&etag, "\"not-an-md5\""), EtagCheck::Opaque);
        assert_eq!(check_etag(&etag, ""), EtagCheck::Opaque);
        // A plain MD5 for a multipart upload: a store that computes ETags its own way.
        assert_eq!(
            check_etag(&etag, "d41d8cd98f00b204e9800998ecf8427e"),
            EtagCheck::Opaque
        );
    }
}
