//! Judging what S3 says it stored against what ferry read and sent.

use crate::core::checksum::checksum_matches;
use crate::core::plan::{EtagCheck, check_etag};

/// What ferry expects the object to be, from the bytes it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The MD5-based ETag (plain, or `md5-of-md5s-N` for a multipart object), when the MD5s
    /// were computed.
    pub etag: Option<&'a str>,
    /// The checksum of FERRY_CHECKSUM's algorithm (composite `-N` for multipart), if one is sent.
    pub checksum: Option<&'a str>,
}

/// What an answer of S3's (PutObject's, HeadObject's) says of the stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An ETag in MD5 form or a checksum equals what the bytes sent give, and nothing differs.
    Proven,
    /// Nothing differs, but nothing proves the bytes either (an opaque ETag and no checksum,
    /// as with SSE-KMS on a store that does not answer with checksums).
    Unproven,
    /// S3 holds other bytes than those sent.
    Differs {
        what: &'static str,
        reported: String,
        expected: String,
    },
}

/// Compares the ETag and checksum S3 reported (either may be missing) with the expected ones.
///
/// Where both sides have a checksum, it decides alone: S3 computed it from the bytes it received,
/// while an ETag may be in MD5 form without being the MD5 of the bytes (SSE-KMS and SSE-C
/// objects on AWS). Where they do not, an ETag in MD5 form decides, when the MD5 is known.
pub fn judge(expected: &Expected<'_>, etag: Option<&str>, checksum: Option<&str>) -> Verdict {
    if let (Some(expected), Some(reported)) = (expected.checksum, checksum) {
        return if checksum_matches(expected, reported) {
            Verdict::Proven
        } else {
            Verdict::Differs {
                what: "checksum",
                reported: reported.to_owned(),
                expected: expected.to_owned(),
            }
        };
    }
    match (expected.etag, etag) {
        (Some(expected), Some(actual)) => match check_etag(expected, actual) {
            EtagCheck::Match => Verdict::Proven,
            EtagCheck::Mismatch { expected, actual } => Verdict::Differs {
                what: "ETag",
                reported: actual,
                expected,
            },
            EtagCheck::Opaque => Verdict::Unproven,
        },
        _ => Verdict::Unproven,
    }
}

/// As [`judge`], for an object whose ETag need not be an MD5 of its bytes when `md5_etags` is
/// false (SSE-KMS, by S3's documentation): an ETag equal to the MD5-based one still proves the
/// bytes (an ETag that is not an MD5 does not meet it by chance), one that differs proves
/// nothing either way.
pub fn judge_etag(
    expected: &Expected<'_>,
    etag: Option<&str>,
    checksum: Option<&str>,
    md5_etags: bool,
) -> Verdict {
    match judge(expected, etag, checksum) {
        Verdict::Differs { what: "ETag", .. } if !md5_etags => Verdict::Unproven,
        verdict => verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "900150983cd24fb0d6963f7d28e17f72";

    fn expected(checksum: Option<&'static str>) -> Expected<'static> {
        Expected {
            etag: Some(MD5),
            checksum,
        }
    }

    #[test]
    fn under_sse_kms_an_etag_proves_by_matching_and_never_by_differing() {
        let quoted = format!("\"{MD5}\"");
        let other = "\"0cc175b9c0f1b6a831c399e269772661\"";
        assert_eq!(
            judge_etag(&expected(None), Some(&quoted), None, false),
            Verdict::Proven
        );
        assert_eq!(
            judge_etag(&expected(None), Some(other), None, false),
            Verdict::Unproven
        );
        assert!(matches!(
            judge_etag(&expected(None), Some(other), None, true),
            Verdict::Differs { what: "ETag", .. }
        ));
        // A checksum that differs is bytes that differ, encryption or not.
        assert!(matches!(
            judge_etag(
                &expected(Some("yZRlqg==")),
                Some(&quoted),
                Some("AAAAAA=="),
                false
            ),
            Verdict::Differs {
                what: "checksum",
                ..
            }
        ));
    }

    #[test]
    fn an_md5_etag_or_a_checksum_proves_the_bytes() {
        let quoted = format!("\"{MD5}\"");
        assert_eq!(judge(&expected(None), Some(&quoted), None), Verdict::Proven);
        assert_eq!(
            judge(
                &expected(Some("yZRlqg==")),
                Some("\"opaque-kms\""),
                Some("yZRlqg==")
            ),
            Verdict::Proven
        );
        assert_eq!(
            judge(&expected(Some("yZRlqg==")), Some(&quoted), Some("yZRlqg==")),
            Verdict::Proven
        );
    }

    #[test]
    fn an_opaque_etag_without_a_checksum_proves_nothing() {
        assert_eq!(
            judge(&expected(Some("yZRlqg==")), Some("\"opaque-kms\""), None),
            Verdict::Unproven
        );
        assert_eq!(judge(&expected(None), None, None), Verdict::Unproven);
        // Without the MD5s, an ETag proves nothing and cannot differ; the checksum decides.
        let no_md5 = Expected {
            etag: None,
            checksum: Some("yZRlqg==-3"),
        };
        let zeros = Some("\"00000000000000000000000000000000-3\"");
        assert_eq!(judge(&no_md5, zeros, None), Verdict::Unproven);
        assert_eq!(judge(&no_md5, zeros, Some("yZRlqg==-3")), Verdict::Proven);
        assert!(matches!(
            judge(&no_md5, zeros, Some("AAAAAA==-3")),
            Verdict::Differs {
                what: "checksum",
                ..
            }
        ));
        // A checksum S3 answers when none was sent proves nothing either.
        assert_eq!(
            judge(&expected(None), None, Some("yZRlqg==")),
            Verdict::Unproven
        );
    }

    #[test]
    fn the_checksum_decides_where_both_sides_have_one() {
        let quoted = format!("\"{MD5}\"");
        assert!(matches!(
            judge(&expected(Some("yZRlqg==")), Some(&quoted), Some("AAAAAA==")),
            Verdict::Differs {
                what: "checksum",
                ..
            }
        ));
        // An ETag in MD5 form that is not the MD5 (SSE-KMS on AWS) does not fail an object
        // whose checksum S3 confirms.
        assert_eq!(
            judge(
                &expected(Some("yZRlqg==")),
                Some("\"00000000000000000000000000000000\""),
                Some("yZRlqg==")
            ),
            Verdict::Proven
        );
        // Without a checksum in the answer, the ETag decides.
        assert!(matches!(
            judge(
                &expected(Some("yZRlqg==")),
                Some("\"00000000000000000000000000000000\""),
                None
            ),
            Verdict::Differs { what: "ETag", .. }
        ));
        assert_eq!(
            judge(&expected(Some("yZRlqg==")), Some(&quoted), None),
            Verdict::Proven
        );
    }
}
