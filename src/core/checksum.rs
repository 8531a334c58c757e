//! Checksums S3 stores with objects: per part, and the composite of a multipart object.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::CrcAlgorithm;

/// Which checksum each request carries (FERRY_CHECKSUM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// CRC32C on every request and a composite over the parts: S3 refuses a corrupted part, and
    /// ferry checks the assembled object against what it read.
    Crc32c,
    /// CRC32, for stores that know CRC32 but not CRC32C.
    Crc32,
    /// No checksum headers, for S3-compatible stores that refuse them; the MD5-based ETag is
    /// then the only check.
    None,
}

impl ChecksumMode {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "crc32c" => Some(ChecksumMode::Crc32c),
            "crc32" => Some(ChecksumMode::Crc32),
            "none" | "off" => Some(ChecksumMode::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumMode::Crc32c => "crc32c",
            ChecksumMode::Crc32 => "crc32",
            ChecksumMode::None => "none",
        }
    }

    fn algorithm(self) -> Option<CrcAlgorithm> {
        match self {
            ChecksumMode::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            ChecksumMode::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            ChecksumMode::None => None,
        }
    }

    /// The checksum of `data` as S3 writes it: base64 of the big-endian CRC.
    pub fn of(self, data: &[u8]) -> Option<String> {
        let algorithm = self.algorithm()?;
        let crc = crc_fast::checksum(algorithm, data) as u32;
        Some(B64.encode(crc.to_be_bytes()))
    }

    /// The composite checksum of a multipart object: the CRC of the parts' CRCs, then `-N`.
    /// None when a part's checksum is missing or malformed.
    pub fn composite<'a>(self, parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let algorithm = self.algorithm()?;
        let mut joined = Vec::new();
        let mut count = 0;
        for part in parts {
            let raw = B64.decode(part).ok()?;
            if raw.len() != 4 {
                return None;
            }
            joined.extend_from_slice(&raw);
            count += 1;
        }
        let crc = crc_fast::checksum(algorithm, &joined) as u32;
        Some(format!("{}-{count}", B64.encode(crc.to_be_bytes())))
    }
}

/// Whether the checksum S3 reports for an object agrees with the expected one. S3 may report a
/// composite checksum with or without its `-N` suffix; an absent one proves nothing.
pub fn checksum_matches(expected: &str, reported: &str) -> bool {
    let strip = |s: &str| s.split('-').next().unwrap_or_default().to_owned();
    if reported.contains('-') && expected.contains('-') {
        reported == expected
    } else {
        strip(reported) == strip(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_of_known_input() {
        // CRC32C("123456789") = 0xE3069283.
        assert_eq!(
            ChecksumMode::Crc32c.of(b"123456789"),
            Some(B64.encode(0xE306_9283u32.to_be_bytes()))
        );
        // CRC32("123456789") = 0xCBF43926.
        assert_eq!(
            ChecksumMode::Crc32.of(b"123456789"),
            Some(B64.encode(0xCBF4_3926u32.to_be_bytes()))
        );
        assert_eq!(ChecksumMode::None.of(b"x"), None);
    }

    #[test]
    fn composite_is_the_crc_of_the_part_crcs() {
        let mode = ChecksumMode::Crc32c;
        let a = mode.of(b"part one").unwrap();
        let b = mode.of(b"part two").unwrap();
        let mut joined = B64.decode(&a).unwrap();
        joined.extend(B64.decode(&b).unwrap());
        let expected = format!("{}-2", mode.of(&joined).unwrap());
        assert_eq!(
            mode.composite([a.as_str(), b.as_str()]),
            Some(expected.clone())
        );
        assert!(checksum_matches(&expected, &expected));
        assert!(checksum_matches(
            &expected,
            expected.split('-').next().unwrap()
        ));
        assert!(!checksum_matches(&expected, &format!("{a}-2")));
        assert_eq!(mode.composite(["not base64!"]), None);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(ChecksumMode::parse("CRC32C"), Some(ChecksumMode::Crc32c));
        assert_eq!(ChecksumMode::parse("none"), Some(ChecksumMode::None));
        assert_eq!(ChecksumMode::parse("md5"), None);
    }
}
