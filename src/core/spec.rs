//! What a user asks for: an upload job's spec, and the rules its fields must follow.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use super::lifecycle::AfterUpload;
use super::object::{ObjectOptions, OptionError, default_key_prefix};

/// The longest glob ferry accepts.
pub const MAX_PATTERN_LEN: usize = 1024;
/// The most exclude globs a job takes.
pub const MAX_EXCLUDES: usize = 256;

/// A spec as written, before validation: the fields of the API's body and of a manifest's spec
/// (which names them in camelCase). Absent fields take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecFields {
    pub source_folder: String,
    pub destination_bucket: String,
    pub pattern: Option<String>,
    /// None: `{upload_id}/`.
    pub key_prefix: Option<String>,
    pub exclude: Vec<String>,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// `keep` (None) or `delete`.
    pub after_upload: Option<String>,
    pub prune: bool,
}

/// A job's spec after validation: an absolute source folder, a valid bucket, an optional glob
/// and the globs it excludes, and how its objects look.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub source_folder: PathBuf,
    pub destination_bucket: BucketName,
    pub pattern: Option<Pattern>,
    pub exclude: Vec<Pattern>,
    pub object: ObjectOptions,
    /// What becomes of a local file once its object is verified.
    pub after_upload: AfterUpload,
    /// Whether an object whose file is gone (or no longer taken) is deleted from S3.
    pub prune: bool,
}

/// Why a spec was refused; each message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("source_folder must be an absolute path, got {0:?}")]
    RelativeSourceFolder(String),
    #[error("source_folder must not be empty")]
    EmptySourceFolder,
    #[error("destination_bucket {name:?} is not a valid S3 bucket name: {reason}")]
    InvalidBucket { name: String, reason: &'static str },
    #[error("pattern {pattern:?} is not a valid glob: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("exclude: {0}")]
    InvalidExclude(String),
    /// key_prefix, storage_class, sse, kms_key_id, metadata or tags.
    #[error("{}", .0.message)]
    InvalidObjectOption(OptionError),
    #[error("{0}")]
    InvalidAfterUpload(String),
}

impl SpecError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::RelativeSourceFolder(_) | SpecError::EmptySourceFolder => "source_folder",
            SpecError::InvalidBucket { .. } => "destination_bucket",
            SpecError::InvalidPattern { .. } => "pattern",
            SpecError::InvalidExclude(_) => "exclude",
            SpecError::InvalidObjectOption(e) => e.field,
            SpecError::InvalidAfterUpload(_) => "after_upload",
        }
    }
}

impl JobSpec {
    /// Checks every field's form, for the job `upload_id` (whose name is the default key
    /// prefix); whether the folder exists is the caller's I/O to do.
    pub fn parse(upload_id: &str, fields: &SpecFields) -> Result<Self, SpecError> {
        let source_folder = fields.source_folder.as_str();
        if source_folder.is_empty() {
            return Err(SpecError::EmptySourceFolder);
        }
        let folder = Path::new(source_folder);
        if !folder.is_absolute() {
            return Err(SpecError::RelativeSourceFolder(source_folder.to_owned()));
        }
        let destination_bucket = BucketName::parse(&fields.destination_bucket)?;
        let pattern = fields.pattern.as_deref().map(Pattern::parse).transpose()?;
        if fields.exclude.len() > MAX_EXCLUDES {
            return Err(SpecError::InvalidExclude(format!(
                "{} globs given; at most {MAX_EXCLUDES} are accepted",
                fields.exclude.len()
            )));
        }
        let exclude = fields
            .exclude
            .iter()
            .enumerate()
            .map(|(i, glob)| {
                Pattern::parse(glob).map_err(|e| SpecError::InvalidExclude(format!("[{i}] {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let default_prefix = default_key_prefix(upload_id);
        let object = ObjectOptions::parse(
            fields.key_prefix.as_deref().unwrap_or(&default_prefix),
            fields.storage_class.as_deref(),
            fields.sse.as_deref(),
            fields.kms_key_id.as_deref(),
            &fields.metadata,
            &fields.tags,
        )
        .map_err(SpecError::InvalidObjectOption)?;
        let after_upload = AfterUpload::parse(fields.after_upload.as_deref())
            .map_err(SpecError::InvalidAfterUpload)?;
        Ok(JobSpec {
            source_folder: folder.to_path_buf(),
            destination_bucket,
            pattern,
            exclude,
            object,
            after_upload,
            prune: fields.prune,
        })
    }

    /// Whether a file at this relative path belongs to the job: the pattern takes it (or there
    /// is none), and no exclude matches it or a folder it lies in.
    pub fn matches(&self, relative_path: &str) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| p.matches(relative_path))
            && !self.excluded(relative_path)
    }

    /// Whether an exclude matches the path or one of the folders it lies in (`cache` excludes
    /// `cache/a/b.txt`), as .gitignore does: a folder excluded is excluded whole.
    fn excluded(&self, relative_path: &str) -> bool {
        if self.exclude.is_empty() {
            return false;
        }
        let folders = relative_path
            .match_indices('/')
            .map(|(i, _)| &relative_path[..i]);
        std::iter::once(relative_path)
            .chain(folders)
            .any(|p| self.excludes_folder(p))
    }

    /// Whether an exclude matches this path itself. For a folder: it is excluded whole, and the
    /// walk need not enter it (`tmp/**` excludes every file in tmp, but not tmp itself, so the
    /// folder is still read).
    pub fn excludes_folder(&self, relative_path: &str) -> bool {
        self.exclude.iter().any(|e| e.matches(relative_path))
    }

    /// The spec written back as fields, every default filled in (the key prefix as it is).
    pub fn fields(&self) -> SpecFields {
        let o = &self.object;
        SpecFields {
            source_folder: self.source_folder.display().to_string(),
            destination_bucket: self.destination_bucket.as_str().to_owned(),
            pattern: self.pattern.as_ref().map(|p| p.as_str().to_owned()),
            key_prefix: Some(o.key_prefix.clone()),
            exclude: self.exclude.iter().map(|p| p.as_str().to_owned()).collect(),
            storage_class: o.storage_class.clone(),
            sse: o.sse.as_ref().map(|s| s.as_str().to_owned()),
            kms_key_id: o
                .sse
                .as_ref()
                .and_then(|s| s.kms_key_id())
                .map(str::to_owned),
            metadata: o.metadata.clone(),
            tags: o.tags.clone(),
            after_upload: Some(self.after_upload.as_str().to_owned()),
            prune: self.prune,
        }
    }
}

/// A glob on the path relative to the source folder: `*` stays within one folder, `**` crosses.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Self, SpecError> {
        let invalid = |reason: String| SpecError::InvalidPattern {
            pattern: pattern.chars().take(80).collect(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid(
                "it is empty; leave pattern out (or null) to take every file".into(),
            ));
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(invalid(format!(
                "it is {} bytes long; at most {MAX_PATTERN_LEN} are accepted",
                pattern.len()
            )));
        }
        if pattern.starts_with('/') {
            return Err(invalid(
                "it starts with '/'; patterns match the path relative to source_folder, such as **/*.log"
                    .into(),
            ));
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| invalid(e.kind().to_string()))?;
        Ok(Pattern {
            source: pattern.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, relative_path: &str) -> bool {
        self.matcher.is_match(relative_path)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Whether a canonical path lies inside one of the (canonical) roots; no roots: anywhere.
pub fn within_roots(canonical: &Path, roots: &[PathBuf]) -> bool {
    roots.is_empty() || roots.iter().any(|r| canonical.starts_with(r))
}

/// A job's name: a DNS-1123 label, as Kubernetes names objects (1 to 63 lowercase letters,
/// digits and '-', starting and ending with a letter or digit). It is the upload_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid job name: {reason}; use a DNS-1123 label such as nightly-logs")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

impl JobName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let err = |reason| NameError {
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() || name.len() > 63 {
            return Err(err("it must be 1 to 63 characters long"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("only lowercase letters, digits and '-' are allowed"));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(err("it must start and end with a letter or digit"));
        }
        Ok(JobName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An S3 bucket name that follows the general-purpose bucket naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketName(String);

impl BucketName {
    pub fn parse(name: &str) -> Result<Self, SpecError> {
        validate_bucket_name(name).map_err(|reason| SpecError::InvalidBucket {
            name: name.chars().take(80).collect(),
            reason,
        })?;
        Ok(BucketName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// S3's rules for general-purpose bucket names.
fn validate_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("it must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Err("it must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("it must not be formatted as an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(
                "it must not start with a prefix S3 reserves (xn--, sthree-, amzn-s3-demo-)",
            );
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(
                "it must not end with a suffix S3 reserves (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)",
            );
        }
    }
    Ok(())
}

/// Which symbolic links in a source folder a scan follows (FERRY_FOLLOW_SYMLINKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SymlinkPolicy {
    /// None: a link is never uploaded, wherever it points.
    #[default]
    Never,
    /// Links whose target, resolved, lies inside the job's source folder: the target's bytes
    /// are uploaded under the link's own name. Links leading out are still skipped.
    Inside,
}

impl SymlinkPolicy {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "never" | "false" | "no" => Some(SymlinkPolicy::Never),
            "inside" => Some(SymlinkPolicy::Inside),
            _ => None,
        }
    }

    /// Whether a file at `resolved` (canonical), reached as `relative` under the canonical
    /// `root`, may be read. `Never` allows only a path with no link anywhere in it: it resolves
    /// to exactly `root/relative`.
    pub fn allows(self, root: &Path, relative: &str, resolved: &Path) -> bool {
        match self {
            SymlinkPolicy::Never => {
                let literal = relative
                    .split('/')
                    .fold(root.to_path_buf(), |p, c| p.join(c));
                resolved == literal
            }
            SymlinkPolicy::Inside => resolved.starts_with(root) && resolved != root,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_buckets() {
        for name in ["abc", "my-bucket", "my.bucket.1", "a1b2c3", &"a".repeat(63)] {
            assert!(BucketName::parse(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn invalid_buckets() {
        for name in [
            "",
            "ab",
            &"a".repeat(64),
            "My-Bucket",
            "my_bucket",
            "-bucket",
            "bucket-",
            "my..bucket",
            "192.168.5.4",
            "xn--bucket",
            "sthree-x",
            "bucket-s3alias",
            "bucket--ol-s3",
            "bücket",
            "a b c",
        ] {
            assert!(BucketName::parse(name).is_err(), "{name} should be invalid");
        }
    }

    #[test]
    fn star_stays_in_one_folder_and_double_star_crosses() {
        let p = Pattern::parse("*.txt").unwrap();
        assert!(p.matches("a.txt"));
        assert!(!p.matches("dir/a.txt"));
        let p = Pattern::parse("**/*.log").unwrap();
        assert!(p.matches("a.log"));
        assert!(p.matches("x/y/z.log"));
        assert!(!p.matches("x/y/z.txt"));
        let p = Pattern::parse("logs/*").unwrap();
        assert!(p.matches("logs/a"));
        assert!(!p.matches("logs/a/b"));
        let p = Pattern::parse("data/**").unwrap();
        assert!(p.matches("data/a/b/c.bin"));
        assert!(!p.matches("other/a"));
        let p = Pattern::parse("{a,b}/?.csv").unwrap();
        assert!(p.matches("a/1.csv"));
        assert!(p.matches("b/2.csv"));
        assert!(!p.matches("c/3.csv"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("/abs/*.txt").is_err());
        assert!(Pattern::parse("[a-").is_err());
        assert!(Pattern::parse("{a,b").is_err());
        assert!(Pattern::parse(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
        let e = Pattern::parse("[").unwrap_err();
        assert_eq!(e.field(), "pattern");
        assert!(e.to_string().contains("not a valid glob"));
    }

    #[test]
    fn roots_contain_their_subfolders_only() {
        let roots = vec![PathBuf::from("/data/in"), PathBuf::from("/srv")];
        assert!(within_roots(Path::new("/data/in"), &roots));
        assert!(within_roots(Path::new("/data/in/a/b"), &roots));
        assert!(within_roots(Path::new("/srv/x"), &roots));
        assert!(
            !within_roots(Path::new("/data/inside"), &roots),
            "a prefix is not a parent"
        );
        assert!(!within_roots(Path::new("/data"), &roots));
        assert!(!within_roots(Path::new("/etc"), &roots));
        assert!(within_roots(Path::new("/etc"), &[]));
    }

    #[test]
    fn job_names_are_dns_1123_labels() {
        for ok in [
            "a",
            "nightly-logs",
            "job-2",
            "0abc",
            &"a".repeat(63),
            "0c8a4f1e-8d2b-4b6a-9c8e-1f2e3d4c5b6a",
        ] {
            assert!(JobName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Nightly",
            "a_b",
            "a.b",
            "a b",
            &"a".repeat(64),
            "ü",
        ] {
            let e = JobName::parse(bad).unwrap_err();
            assert!(e.to_string().contains("DNS-1123"), "{bad}: {e}");
        }
    }

    fn fields(folder: &str, bucket: &str, pattern: Option<&str>) -> SpecFields {
        SpecFields {
            source_folder: folder.into(),
            destination_bucket: bucket.into(),
            pattern: pattern.map(str::to_owned),
            ..SpecFields::default()
        }
    }

    #[test]
    fn spec_needs_an_absolute_folder() {
        let e = JobSpec::parse("j", &fields("data/in", "bucket", None)).unwrap_err();
        assert_eq!(e, SpecError::RelativeSourceFolder("data/in".into()));
        assert_eq!(e.field(), "source_folder");
        assert!(JobSpec::parse("j", &fields("", "bucket", None)).is_err());
        let spec = JobSpec::parse("j", &fields("/data/in", "bucket", Some("**/*.csv"))).unwrap();
        assert!(spec.matches("x/y.csv"));
        assert!(!spec.matches("x/y.txt"));
        let spec = JobSpec::parse("j", &fields("/data/in", "bucket", None)).unwrap();
        assert!(spec.matches("anything/at/all"));
        assert_eq!(spec.object.key("a.txt"), "j/a.txt");
    }

    #[test]
    fn excludes_take_files_out_and_bad_ones_name_their_index() {
        let mut f = fields("/data/in", "bucket", Some("**/*.log"));
        f.exclude = vec!["tmp/**".into(), "**/*.debug.log".into()];
        let spec = JobSpec::parse("j", &f).unwrap();
        assert!(spec.matches("app/a.log"));
        assert!(!spec.matches("tmp/a.log"));
        assert!(!spec.matches("app/a.debug.log"));
        assert!(!spec.matches("app/a.txt"));
        // A folder an exclude matches is excluded whole, whatever the globs say of its files.
        f.exclude = vec!["cache".into(), "**/*.d".into()];
        let spec = JobSpec::parse("j", &f).unwrap();
        assert!(!spec.matches("cache/a.log"));
        assert!(!spec.matches("cache/deep/b.log"));
        assert!(!spec.matches("x/conf.d/c.log"));
        assert!(spec.matches("cached/a.log"));
        assert!(spec.matches("x/conf/c.log"));
        assert!(spec.excludes_folder("cache") && spec.excludes_folder("a/b.d"));
        assert!(!spec.excludes_folder("cache2"));
        f.exclude = vec!["ok/*".into(), "[".into()];
        let e = JobSpec::parse("j", &f).unwrap_err();
        assert_eq!(e.field(), "exclude");
        assert!(e.to_string().starts_with("exclude: [1] "), "{e}");
    }

    #[test]
    fn fields_round_trip_with_the_defaults_filled_in() {
        let mut f = fields("/data/in", "bucket", None);
        f.storage_class = Some("STANDARD_IA".into());
        f.sse = Some("aws:kms".into());
        f.kms_key_id = Some("alias/k".into());
        f.tags.insert("team".into(), "a".into());
        f.after_upload = Some("delete".into());
        f.prune = true;
        let spec = JobSpec::parse("job", &f).unwrap();
        let back = spec.fields();
        assert_eq!(back.key_prefix.as_deref(), Some("job/"));
        assert_eq!(
            SpecFields {
                key_prefix: None,
                ..back.clone()
            },
            f
        );
        assert_eq!(JobSpec::parse("job", &back).unwrap().fields(), back);
        f.storage_class = Some("COLD".into());
        assert_eq!(
            JobSpec::parse("job", &f).unwrap_err().field(),
            "storage_class"
        );
    }

    #[test]
    fn symlink_policy_never_allows_only_the_literal_path() {
        let root = Path::new("/data/src");
        let p = SymlinkPolicy::Never;
        assert!(p.allows(root, "a/b.txt", Path::new("/data/src/a/b.txt")));
        assert!(!p.allows(root, "a/b.txt", Path::new("/data/src/c.txt")));
        assert!(!p.allows(root, "a/b.txt", Path::new("/etc/passwd")));
    }

    #[test]
    fn symlink_policy_inside_allows_targets_under_the_root_only() {
        let root = Path::new("/data/src");
        let p = SymlinkPolicy::Inside;
        assert!(p.allows(root, "link.txt", Path::new("/data/src/real/b.txt")));
        assert!(!p.allows(root, "link.txt", Path::new("/data/srcother/b.txt")));
        assert!(!p.allows(root, "link.txt", Path::new("/etc/passwd")));
        assert!(!p.allows(root, "link", Path::new("/data/src")));
        assert_eq!(
            SymlinkPolicy::parse(" Inside "),
            Some(SymlinkPolicy::Inside)
        );
        assert_eq!(SymlinkPolicy::parse("never"), Some(SymlinkPolicy::Never));
        assert_eq!(SymlinkPolicy::parse("always"), None);
    }
}
