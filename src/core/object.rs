//! How a job's objects look in S3: where they land (the key prefix), how they are stored (class,
//! encryption), and what they carry (metadata, tags, Content-Type). The rules S3 puts on each are
//! checked here, up front, so that a bad value is refused naming its field instead of failing
//! every file later.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use super::url::percent_encode;

/// The longest object key S3 takes, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// S3's limit on user metadata: the bytes of every key and value together.
pub const MAX_METADATA_BYTES: usize = 2048;
/// S3's limits on object tags.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// S3's storage classes, as the API names them.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
    "EXPRESS_ONEZONE",
];

/// Server-side encryption of every object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: keys S3 manages (SSE-S3).
    Aes256,
    /// `aws:kms`: a KMS key, the given one or the account's default for S3.
    Kms { key_id: Option<String> },
}

impl Sse {
    /// The value of `x-amz-server-side-encryption`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Sse::Aes256 => "AES256",
            Sse::Kms { .. } => "aws:kms",
        }
    }

    pub fn kms_key_id(&self) -> Option<&str> {
        match self {
            Sse::Kms { key_id } => key_id.as_deref(),
            Sse::Aes256 => None,
        }
    }
}

/// How every object of a job looks, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Objects go to `{key_prefix}{relative path}`, the prefix exactly as written.
    pub key_prefix: String,
    /// None: the bucket's default class.
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
    /// User metadata (x-amz-meta-*), keys lowercase.
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// A value S3 would refuse, and which field holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> OptionError {
    OptionError {
        field,
        message: message.into(),
    }
}

/// The default key prefix of a job: `{upload_id}/`.
pub fn default_key_prefix(upload_id: &str) -> String {
    format!("{upload_id}/")
}

impl ObjectOptions {
    /// The options of a job with none set: its objects under `{upload_id}/`.
    pub fn defaults(upload_id: &str) -> Self {
        ObjectOptions {
            key_prefix: default_key_prefix(upload_id),
            storage_class: None,
            sse: None,
            metadata: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }

    /// Checks each value against S3's rules; the first one broken is refused, naming its field.
    pub fn parse(
        key_prefix: &str,
        storage_class: Option<&str>,
        sse: Option<&str>,
        kms_key_id: Option<&str>,
        metadata: &BTreeMap<String, String>,
        tags: &BTreeMap<String, String>,
    ) -> Result<Self, OptionError> {
        check_key_prefix(key_prefix)?;
        if let Some(class) = storage_class
            && !STORAGE_CLASSES.contains(&class)
        {
            return Err(refuse(
                "storage_class",
                format!(
                    "storage_class {:?} is not an S3 storage class; use one of {}",
                    shorten(class),
                    STORAGE_CLASSES.join(", ")
                ),
            ));
        }
        let sse = parse_sse(sse, kms_key_id)?;
        check_metadata(metadata)?;
        check_tags(tags)?;
        Ok(ObjectOptions {
            key_prefix: key_prefix.to_owned(),
            storage_class: storage_class.map(str::to_owned),
            sse,
            metadata: metadata.clone(),
            tags: tags.clone(),
        })
    }

    /// The object key of a file: the prefix and the relative path.
    pub fn key(&self, relative_path: &str) -> String {
        format!("{}{relative_path}", self.key_prefix)
    }

    /// The tags as `x-amz-tagging` wants them: a URL query, each key and value percent-encoded.
    pub fn tagging(&self) -> Option<String> {
        if self.tags.is_empty() {
            return None;
        }
        Some(
            self.tags
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        )
    }

    /// A short digest of what a multipart upload is begun with, besides its key: the class, the
    /// encryption, the metadata, the tags. An open upload is resumed only under the same one;
    /// begun under other settings, it starts over.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::json!([
            self.storage_class,
            self.sse.as_ref().map(Sse::as_str),
            self.sse.as_ref().and_then(Sse::kms_key_id),
            self.metadata,
            self.tags,
        ])
        .to_string();
        Md5::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The settings a request for this job carries beyond the bytes, named as the spec names
    /// them, for an error a store gives: `storage_class STANDARD_IA, sse aws:kms, tags (2)`.
    pub fn requested(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(class) = &self.storage_class {
            out.push(format!("storage_class {class}"));
        }
        if let Some(sse) = &self.sse {
            match sse.kms_key_id() {
                Some(key) => out.push(format!("sse {} (kms_key_id {key})", sse.as_str())),
                None => out.push(format!("sse {}", sse.as_str())),
            }
        }
        if !self.metadata.is_empty() {
            out.push(format!("metadata ({} keys)", self.metadata.len()));
        }
        if !self.tags.is_empty() {
            out.push(format!("tags ({})", self.tags.len()));
        }
        out
    }
}

/// What HeadObject shows of how an object is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredLook {
    /// None: the store names none (STANDARD, on S3).
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// `x-amz-tagging-count`, where the store sends it.
    pub tag_count: Option<usize>,
}

impl ObjectOptions {
    /// Whether the stored object must be read back to prove it carries the job's options: a
    /// class, metadata or tags (no answer that stores an object shows them), or an encryption
    /// the storing answer did not confirm. A job without options needs nothing.
    pub fn needs_proof(&self, answered_sse: Option<&str>) -> bool {
        self.storage_class.is_some()
            || !self.metadata.is_empty()
            || !self.tags.is_empty()
            || self
                .sse
                .as_ref()
                .is_some_and(|s| answered_sse != Some(s.as_str()))
    }

    /// The options a stored object does not carry, named as the spec names them, with what the
    /// store shows instead: empty when it carries them all.
    pub fn missing_from(&self, seen: &StoredLook) -> Vec<String> {
        let mut missing = Vec::new();
        if let Some(class) = &self.storage_class {
            let shown = seen.storage_class.as_deref().unwrap_or("STANDARD");
            if shown != class {
                missing.push(format!("storage_class {class} (it shows {shown})"));
            }
        }
        if let Some(sse) = &self.sse
            && seen.sse.as_deref() != Some(sse.as_str())
        {
            missing.push(format!(
                "sse {} (it shows {})",
                sse.as_str(),
                seen.sse.as_deref().unwrap_or("none")
            ));
        }
        let lost: Vec<&str> = self
            .metadata
            .iter()
            .filter(|(k, v)| seen.metadata.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .collect();
        if !lost.is_empty() {
            missing.push(format!("metadata ({} not kept)", lost.join(", ")));
        }
        if !self.tags.is_empty() && seen.tag_count != Some(self.tags.len()) {
            missing.push(match seen.tag_count {
                Some(n) => format!("tags ({}; it keeps {n})", self.tags.len()),
                None => format!("tags ({}; it shows none)", self.tags.len()),
            });
        }
        missing
    }

    /// Whether an ETag is an MD5 of the bytes: under SSE-KMS it need not be (S3's
    /// documentation), so that one that differs proves nothing (one that matches still does).
    pub fn etags_are_md5(&self) -> bool {
        !matches!(self.sse, Some(Sse::Kms { .. }))
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A key prefix S3 can hold with a path after it: not starting with '/', no control characters,
/// shorter than S3's key length.
fn check_key_prefix(prefix: &str) -> Result<(), OptionError> {
    if prefix.starts_with('/') {
        return Err(refuse(
            "key_prefix",
            format!(
                "key_prefix {:?} starts with '/'; S3 keys have no leading slash (write logs/host-1/, or \"\" for the bucket's root)",
                shorten(prefix)
            ),
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(refuse(
            "key_prefix",
            "key_prefix holds a control character; use printable UTF-8",
        ));
    }
    if prefix.len() >= MAX_KEY_BYTES {
        return Err(refuse(
            "key_prefix",
            format!(
                "key_prefix is {} bytes long; S3 keys are at most {MAX_KEY_BYTES} bytes with the file's path added",
                prefix.len()
            ),
        ));
    }
    Ok(())
}

fn parse_sse(sse: Option<&str>, kms_key_id: Option<&str>) -> Result<Option<Sse>, OptionError> {
    let key_id = match kms_key_id {
        None => None,
        Some(k)
            if k.is_empty()
                || k.len() > 2048
                || k.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(refuse(
                "kms_key_id",
                "kms_key_id must be a KMS key id, alias or ARN: 1 to 2048 characters, no spaces",
            ));
        }
        Some(k) => Some(k.to_owned()),
    };
    match (sse, key_id) {
        (None, None) => Ok(None),
        (None | Some("AES256"), Some(_)) => Err(refuse(
            "kms_key_id",
            "kms_key_id needs sse: aws:kms (a KMS key encrypts only with aws:kms)",
        )),
        (Some("AES256"), None) => Ok(Some(Sse::Aes256)),
        (Some("aws:kms"), key_id) => Ok(Some(Sse::Kms { key_id })),
        (Some(other), _) => Err(refuse(
            "sse",
            format!(
                "sse {:?} is not a server-side encryption S3 knows; use AES256 or aws:kms",
                shorten(other)
            ),
        )),
    }
}

/// User metadata as S3 takes it in headers: lowercase token keys (S3 lowercases them; a key
/// written otherwise would not read back as written), printable ASCII values, 2 KiB in all.
fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), OptionError> {
    let mut total = 0;
    for (key, value) in metadata {
        if key.is_empty() {
            return Err(refuse("metadata", "metadata keys must not be empty"));
        }
        if let Some(bad) = key.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        }) {
            let hint = if key.chars().any(|c| c.is_ascii_uppercase()) {
                format!(
                    "; S3 stores metadata keys in lowercase, so write {:?}",
                    key.to_ascii_lowercase()
                )
            } else {
                String::new()
            };
            return Err(refuse(
                "metadata",
                format!(
                    "metadata key {:?} holds {bad:?}; keys take lowercase letters, digits, '-', '_' and '.'{hint}",
                    shorten(key)
                ),
            ));
        }
        if value.chars().any(|c| !(' '..='~').contains(&c)) {
            return Err(refuse(
                "metadata",
                format!(
                    "metadata value of {:?} must be printable ASCII (it travels in an HTTP header)",
                    shorten(key)
                ),
            ));
        }
        if value.trim() != value {
            return Err(refuse(
                "metadata",
                format!(
                    "metadata value of {:?} starts or ends with a space, which HTTP drops",
                    shorten(key)
                ),
            ));
        }
        total += key.len() + value.len();
    }
    if total > MAX_METADATA_BYTES {
        return Err(refuse(
            "metadata",
            format!(
                "metadata is {total} bytes (keys and values together); S3 takes at most {MAX_METADATA_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// S3's tag rules: at most 10, keys 1 to 128 characters, values up to 256, letters, digits,
/// spaces and `+ - = . _ : / @`, no key starting with the reserved `aws:`.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), OptionError> {
    if tags.len() > MAX_TAGS {
        return Err(refuse(
            "tags",
            format!(
                "{} tags given; S3 takes at most {MAX_TAGS} an object",
                tags.len()
            ),
        ));
    }
    let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c);
    for (key, value) in tags {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_TAG_KEY_CHARS {
            return Err(refuse(
                "tags",
                format!(
                    "tag key {:?} is {chars} characters; S3 takes 1 to {MAX_TAG_KEY_CHARS}",
                    shorten(key)
                ),
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(refuse(
                "tags",
                format!(
                    "tag key {:?} starts with aws:, which S3 reserves",
                    shorten(key)
                ),
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(refuse(
                "tags",
                format!(
                    "the value of tag {:?} is {} characters; S3 takes at most {MAX_TAG_VALUE_CHARS}",
                    shorten(key),
                    value.chars().count()
                ),
            ));
        }
        if let Some(bad) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
            return Err(refuse(
                "tags",
                format!(
                    "tag {:?} holds {bad:?}; tags take letters, digits, spaces and + - = . _ : / @",
                    shorten(key)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether two key prefixes in one bucket overlap: one is a prefix of the other, so that a key
/// of one job could be a key of the other (`""` overlaps every prefix).
pub fn prefixes_overlap(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The Content-Type of a file, from its extension; application/octet-stream when unknown.
pub fn content_type(relative_path: &str) -> String {
    mime_guess::from_path(relative_path)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(prefix: &str) -> Result<ObjectOptions, OptionError> {
        ObjectOptions::parse(prefix, None, None, None, &map(&[]), &map(&[]))
    }

    #[test]
    fn keys_are_the_prefix_as_written_and_the_path() {
        assert_eq!(
            ObjectOptions::defaults("job-1").key("a/b.txt"),
            "job-1/a/b.txt"
        );
        assert_eq!(
            parse("logs/host-1/").unwrap().key("x.log"),
            "logs/host-1/x.log"
        );
        assert_eq!(parse("").unwrap().key("x.log"), "x.log");
        assert_eq!(parse("raw-").unwrap().key("x.log"), "raw-x.log");
    }

    #[test]
    fn bad_prefixes_name_the_field() {
        for bad in ["/logs/", "a\u{0}b", "a\nb", &"k".repeat(MAX_KEY_BYTES)] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.field, "key_prefix", "{bad:?}");
        }
        assert!(parse(&"k".repeat(MAX_KEY_BYTES - 1)).is_ok());
        assert!(parse("日本/").is_ok());
    }

    #[test]
    fn storage_classes_are_s3s_list() {
        for class in STORAGE_CLASSES {
            let o = ObjectOptions::parse("p/", Some(class), None, None, &map(&[]), &map(&[]));
            assert!(o.is_ok(), "{class}");
        }
        for bad in ["standard", "COLD", ""] {
            let e = ObjectOptions::parse("p/", Some(bad), None, None, &map(&[]), &map(&[]))
                .unwrap_err();
            assert_eq!(e.field, "storage_class");
            assert!(e.message.contains("STANDARD_IA"), "{}", e.message);
        }
    }

    #[test]
    fn encryption_is_aes256_or_kms_with_an_optional_key() {
        let sse = |s: Option<&str>, k: Option<&str>| {
            ObjectOptions::parse("p/", None, s, k, &map(&[]), &map(&[])).map(|o| o.sse)
        };
        assert_eq!(sse(Some("AES256"), None), Ok(Some(Sse::Aes256)));
        assert_eq!(
            sse(Some("aws:kms"), None),
            Ok(Some(Sse::Kms { key_id: None }))
        );
        assert_eq!(
            sse(Some("aws:kms"), Some("alias/logs")),
            Ok(Some(Sse::Kms {
                key_id: Some("alias/logs".into())
            }))
        );
        assert_eq!(sse(Some("aes256"), None).unwrap_err().field, "sse");
        assert_eq!(
            sse(Some("AES256"), Some("k")).unwrap_err().field,
            "kms_key_id"
        );
        assert_eq!(sse(None, Some("k")).unwrap_err().field, "kms_key_id");
        assert_eq!(
            sse(Some("aws:kms"), Some("a b")).unwrap_err().field,
            "kms_key_id"
        );
        assert_eq!(
            sse(Some("aws:kms"), Some("")).unwrap_err().field,
            "kms_key_id"
        );
    }

    #[test]
    fn metadata_follows_s3s_header_rules_and_its_2_kib_limit() {
        let meta =
            |m: &[(&str, &str)]| ObjectOptions::parse("p/", None, None, None, &map(m), &map(&[]));
        assert!(meta(&[("owner", "team-a"), ("build.id", "42")]).is_ok());
        let e = meta(&[("Owner", "x")]).unwrap_err();
        assert_eq!(e.field, "metadata");
        assert!(e.message.contains("\"owner\""), "{}", e.message);
        for bad in [
            vec![("", "x")],
            vec![("a b", "x")],
            vec![("k", "é")],
            vec![("k", "a\nb")],
            vec![("k", " padded")],
        ] {
            assert_eq!(meta(&bad).unwrap_err().field, "metadata", "{bad:?}");
        }
        let big = "v".repeat(MAX_METADATA_BYTES - 1);
        assert!(meta(&[("k", &big)]).is_ok());
        let too_big = "v".repeat(MAX_METADATA_BYTES);
        assert!(
            meta(&[("k", &too_big)])
                .unwrap_err()
                .message
                .contains("2048")
        );
    }

    #[test]
    fn tags_follow_s3s_limits() {
        let tags = |t: BTreeMap<String, String>| {
            ObjectOptions::parse("p/", None, None, None, &map(&[]), &t)
        };
        assert!(tags(map(&[("team", "data eng"), ("path", "a/b:c@d+e=f")])).is_ok());
        let eleven: BTreeMap<_, _> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(tags(eleven).unwrap_err().field, "tags");
        let ten: BTreeMap<_, _> = (0..10).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(tags(ten).is_ok());
        for bad in [
            map(&[("", "v")]),
            map(&[(&"k".repeat(129), "v")]),
            map(&[("k", &"v".repeat(257))]),
            map(&[("aws:owner", "v")]),
            map(&[("k", "a&b")]),
            map(&[("k#", "v")]),
        ] {
            assert_eq!(tags(bad.clone()).unwrap_err().field, "tags", "{bad:?}");
        }
        assert!(tags(map(&[(&"k".repeat(128), &"v".repeat(256))])).is_ok());
        assert!(tags(map(&[("équipe", "données")])).is_ok());
    }

    #[test]
    fn tagging_is_a_percent_encoded_query() {
        let o = ObjectOptions::parse(
            "p/",
            None,
            None,
            None,
            &map(&[]),
            &map(&[("team", "data eng"), ("a/b", "c=d")]),
        )
        .unwrap();
        assert_eq!(o.tagging().unwrap(), "a%2Fb=c%3Dd&team=data%20eng");
        assert_eq!(ObjectOptions::defaults("j").tagging(), None);
    }

    #[test]
    fn the_fingerprint_changes_with_every_setting_but_the_prefix() {
        let base = ObjectOptions::defaults("j");
        let mut moved = base.clone();
        moved.key_prefix = "elsewhere/".into();
        assert_eq!(base.fingerprint(), moved.fingerprint());
        let mut classed = base.clone();
        classed.storage_class = Some("STANDARD_IA".into());
        let mut encrypted = base.clone();
        encrypted.sse = Some(Sse::Aes256);
        let mut tagged = base.clone();
        tagged.tags = map(&[("a", "b")]);
        let mut described = base.clone();
        described.metadata = map(&[("a", "b")]);
        let prints: std::collections::HashSet<_> =
            [&base, &classed, &encrypted, &tagged, &described]
                .iter()
                .map(|o| o.fingerprint())
                .collect();
        assert_eq!(prints.len(), 5);
    }

    #[test]
    fn a_stored_object_must_show_every_option_asked_for() {
        let mut o = ObjectOptions::defaults("j");
        assert!(!o.needs_proof(None), "no options, nothing to prove");
        o.sse = Some(Sse::Aes256);
        assert!(
            !o.needs_proof(Some("AES256")),
            "the storing answer confirmed it"
        );
        assert!(o.needs_proof(None));
        o.storage_class = Some("STANDARD_IA".into());
        o.metadata = map(&[("owner", "a"), ("team", "b")]);
        o.tags = map(&[("k", "v")]);
        assert!(o.needs_proof(Some("AES256")));
        let kept = StoredLook {
            storage_class: Some("STANDARD_IA".into()),
            sse: Some("AES256".into()),
            metadata: map(&[("owner", "a"), ("team", "b"), ("extra", "x")]),
            tag_count: Some(1),
        };
        assert!(o.missing_from(&kept).is_empty());
        let dropped = StoredLook {
            metadata: map(&[("owner", "a")]),
            ..StoredLook::default()
        };
        assert_eq!(
            o.missing_from(&dropped),
            [
                "storage_class STANDARD_IA (it shows STANDARD)",
                "sse AES256 (it shows none)",
                "metadata (team not kept)",
                "tags (1; it shows none)",
            ]
        );
        let counted = StoredLook {
            tag_count: Some(0),
            ..kept.clone()
        };
        assert_eq!(o.missing_from(&counted), ["tags (1; it keeps 0)"]);
        // STANDARD is what S3 shows as no class at all.
        let mut standard = ObjectOptions::defaults("j");
        standard.storage_class = Some("STANDARD".into());
        assert!(standard.missing_from(&StoredLook::default()).is_empty());
    }

    #[test]
    fn kms_etags_prove_nothing() {
        let mut o = ObjectOptions::defaults("j");
        assert!(o.etags_are_md5());
        o.sse = Some(Sse::Aes256);
        assert!(o.etags_are_md5());
        o.sse = Some(Sse::Kms { key_id: None });
        assert!(!o.etags_are_md5());
    }

    #[test]
    fn overlapping_prefixes() {
        assert!(prefixes_overlap("logs/", "logs/host-1/"));
        assert!(prefixes_overlap("logs/host-1/", "logs/"));
        assert!(prefixes_overlap("", "anything/"));
        assert!(prefixes_overlap("a/", "a/"));
        assert!(!prefixes_overlap("a/", "ab/"));
        assert!(!prefixes_overlap("job-1/", "job-10/"));
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("a/b.json"), "application/json");
        assert_eq!(content_type("x.log"), "text/plain");
        assert_eq!(content_type("page.HTML"), "text/html");
        assert_eq!(content_type("img.png"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("weird.zzzz"), "application/octet-stream");
    }
}
