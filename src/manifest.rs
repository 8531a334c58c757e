//! UploadJob manifests: the YAML documents of FERRY_MANIFESTS_DIR, their schema (`ferry schema`),
//! and their parsing. Pure: text in, jobs or errors out, one result per document, so that a
//! broken, invalid or hostile document is reported and harms no other.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::core::spec::{JobName, JobSpec, SpecFields};

/// The largest manifest file read; a larger one is reported, not read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
pub const API_VERSION: &str = "ferry/v1";
pub const KIND: &str = "UploadJob";

/// An upload job, declared. `metadata.name` is the job's upload_id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ferry UploadJob")]
pub struct UploadJobManifest {
    /// The manifest format: `ferry/v1`.
    #[schemars(extend("const" = "ferry/v1"))]
    pub api_version: String,
    /// `UploadJob`.
    #[schemars(extend("const" = "UploadJob"))]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ManifestSpec,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The job's name and upload_id: a DNS-1123 label (lowercase letters, digits, '-').
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Free-form labels, kept for tools; ferry does not read them.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Free-form annotations, kept for tools; ferry does not read them.
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestSpec {
    /// An absolute path to the folder to upload.
    pub source_folder: String,
    /// The S3 bucket; objects go to `{keyPrefix}{path relative to sourceFolder}`.
    pub destination_bucket: String,
    /// A glob on the relative path (`*` stays in a folder, `**` crosses); omit to take every file.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Objects go to `{keyPrefix}{relative path}`, the prefix exactly as written (`""`: the
    /// bucket's root); default `{name}/`. Two jobs whose bucket and prefixes overlap are refused.
    #[serde(default)]
    #[schemars(length(max = 1023), regex(pattern = r"^([^/]|$)"))]
    pub key_prefix: Option<String>,
    /// Globs (the pattern's syntax); a file matching any of them is not taken.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub exclude: Vec<String>,
    /// The S3 storage class of every object; default: the bucket's.
    #[serde(default)]
    #[schemars(extend("enum" = ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY", "EXPRESS_ONEZONE"]))]
    pub storage_class: Option<String>,
    /// Server-side encryption of every object.
    #[serde(default)]
    #[schemars(extend("enum" = ["AES256", "aws:kms"]))]
    pub sse: Option<String>,
    /// The KMS key (id, alias or ARN) with `sse: aws:kms`; default: the account's key for S3.
    #[serde(default)]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
    /// User metadata (x-amz-meta-*) on every object: lowercase keys, printable ASCII values,
    /// 2 KiB in all.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Object tags on every object: at most 10; keys of 1 to 128 characters, values up to 256.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 10))]
    pub tags: BTreeMap<String, String>,
    /// `delete`: the local file is removed once its object is verified (a move, for log
    /// shipping); never a file that changed since it was read. Default `keep`.
    #[serde(default)]
    #[schemars(extend("enum" = ["keep", "delete"]))]
    pub after_upload: Option<String>,
    /// `true`: an object whose file is gone from disk (or no longer matches) is deleted from S3.
    /// A scan that would prune more than half of the job's objects, or more than 1,000, prunes
    /// nothing until confirmed (`POST /uploads/{id}/prune`).
    #[serde(default)]
    pub prune: bool,
}

/// A valid document: the job it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredJob {
    pub name: String,
    /// The spec as written (validated).
    pub fields: SpecFields,
    /// Where it was declared: `file.yaml#2` (documents count from 1).
    pub source: String,
}

/// A document that cannot be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    /// 1-based; 0 when the error is about the whole file.
    pub document: usize,
    /// The line the document starts on (1-based); 0 for the whole file.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(
                f,
                "{} document {} (line {}): {}",
                self.file, self.document, self.line, self.reason
            )
        }
    }
}

/// The JSON schema of a manifest document, for editors and CI.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(UploadJobManifest)).expect("a schema is JSON")
}

/// Every document of a manifest file, in order: the job it declares, or why it cannot.
pub fn parse_file(file: &str, text: &str) -> Vec<Result<DeclaredJob, ManifestError>> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .filter(|(_, (_, body))| !is_blank(body))
        .map(|(i, (line, body))| {
            parse_document(file, i + 1, &body).map_err(|reason| ManifestError {
                file: file.to_owned(),
                document: i + 1,
                line,
                reason,
            })
        })
        .collect()
}

fn parse_document(file: &str, index: usize, body: &str) -> Result<DeclaredJob, String> {
    // The parser's default budget bounds aliases, nesting, events and scalar sizes: an alias bomb
    // or a deeply nested document is refused, not expanded.
    let m: UploadJobManifest =
        serde_saphyr::from_str_with_options(body, serde_saphyr::Options::default())
            .map_err(|e| first_lines(&e.to_string()))?;
    if m.api_version != API_VERSION {
        return Err(format!(
            "apiVersion {:?} is not supported; use {API_VERSION}",
            m.api_version
        ));
    }
    if m.kind != KIND {
        return Err(format!("kind {:?} is unknown; ferry takes {KIND}", m.kind));
    }
    JobName::parse(&m.metadata.name).map_err(|e| format!("metadata.name: {e}"))?;
    let s = m.spec;
    let fields = SpecFields {
        source_folder: s.source_folder,
        destination_bucket: s.destination_bucket,
        pattern: s.pattern,
        key_prefix: s.key_prefix,
        exclude: s.exclude,
        storage_class: s.storage_class,
        sse: s.sse,
        kms_key_id: s.kms_key_id,
        metadata: s.metadata,
        tags: s.tags,
        after_upload: s.after_upload,
        prune: s.prune,
    };
    JobSpec::parse(&m.metadata.name, &fields)
        .map_err(|e| format!("spec.{}: {e}", camel_case(e.field())))?;
    Ok(DeclaredJob {
        name: m.metadata.name,
        fields,
        source: format!("{file}#{index}"),
    })
}

/// Splits a YAML stream at its document markers (`---` at the start of a line, `...` ends a
/// document): (first line number, text) per document. Splitting before parsing is what keeps a
/// syntax error in one document from hiding the others.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        let end = line == "..." || line.starts_with("... ");
        if marker || end {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            if marker && line.len() > 3 {
                // `--- key: value` starts the document on the marker's line.
                current.push_str(&line[4..]);
                current.push('\n');
                start = i + 1;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l.starts_with('%')
    })
}

/// A field's name as a manifest writes it: `key_prefix` is `keyPrefix`.
fn camel_case(field: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn first_lines(message: &str) -> String {
    message.lines().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: ferry/v1
kind: UploadJob
metadata:
  name: nightly-logs
spec:
  sourceFolder: /data/logs
  destinationBucket: my-bucket
  pattern: \"**/*.log\"
";

    #[test]
    fn a_good_document_declares_a_job() {
        let r = parse_file("jobs.yaml", GOOD);
        assert_eq!(
            r,
            vec![Ok(DeclaredJob {
                name: "nightly-logs".into(),
                fields: SpecFields {
                    source_folder: "/data/logs".into(),
                    destination_bucket: "my-bucket".into(),
                    pattern: Some("**/*.log".into()),
                    ..SpecFields::default()
                },
                source: "jobs.yaml#1".into(),
            })]
        );
    }

    #[test]
    fn object_options_are_written_in_camel_case() {
        let text = format!(
            "{GOOD}  keyPrefix: logs/host-1/\n  exclude: [\"tmp/**\"]\n  storageClass: STANDARD_IA\n  sse: aws:kms\n  kmsKeyId: alias/logs\n  metadata: {{owner: team-a}}\n  tags: {{team: data}}\n"
        );
        let r = parse_file("jobs.yaml", &text);
        let job = r[0].as_ref().unwrap();
        assert_eq!(job.fields.key_prefix.as_deref(), Some("logs/host-1/"));
        assert_eq!(job.fields.exclude, vec!["tmp/**".to_owned()]);
        assert_eq!(job.fields.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(job.fields.sse.as_deref(), Some("aws:kms"));
        assert_eq!(job.fields.kms_key_id.as_deref(), Some("alias/logs"));
        assert_eq!(job.fields.metadata["owner"], "team-a");
        assert_eq!(job.fields.tags["team"], "data");
        assert_eq!(job.fields.after_upload, None);
        assert!(!job.fields.prune);
        let r = parse_file(
            "jobs.yaml",
            &format!("{GOOD}  afterUpload: delete\n  prune: true\n"),
        );
        let job = r[0].as_ref().unwrap();
        assert_eq!(job.fields.after_upload.as_deref(), Some("delete"));
        assert!(job.fields.prune);
        for (bad, says) in [
            (
                "storageClass: COLD",
                "spec.storageClass: storage_class \"COLD\"",
            ),
            ("keyPrefix: /abs/", "spec.keyPrefix: key_prefix"),
            ("kmsKeyId: k", "spec.kmsKeyId: kms_key_id needs sse"),
            ("metadata: {Owner: x}", "spec.metadata:"),
            ("key_prefix: a/", "unknown field"),
            (
                "afterUpload: move",
                "spec.afterUpload: after_upload \"move\"",
            ),
            ("prune: maybe", "invalid boolean"),
        ] {
            let r = parse_file("jobs.yaml", &format!("{GOOD}  {bad}\n"));
            let e = r[0].as_ref().unwrap_err();
            assert!(e.reason.contains(says), "{bad}: {}", e.reason);
        }
    }

    #[test]
    fn each_document_stands_alone() {
        let text = format!(
            "# a comment\n---\n{GOOD}---\nkind: [unclosed\n---\n{}\n...\n---\n{}",
            GOOD.replace("nightly-logs", "second"),
            GOOD.replace("UploadJob", "CronJob")
                .replace("nightly-logs", "third")
        );
        let r = parse_file("many.yml", &text);
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0].as_ref().unwrap().name, "nightly-logs");
        let broken = r[1].as_ref().unwrap_err();
        assert_eq!((broken.document, broken.line), (3, 12));
        assert_eq!(r[2].as_ref().unwrap().name, "second");
        assert_eq!(r[2].as_ref().unwrap().source, "many.yml#4");
        assert!(
            r[3].as_ref()
                .unwrap_err()
                .reason
                .contains("kind \"CronJob\" is unknown")
        );
    }

    #[test]
    fn invalid_documents_say_why() {
        let cases = [
            (GOOD.replace("ferry/v1", "ferry/v2"), "apiVersion"),
            (GOOD.replace("nightly-logs", "Nightly_Logs"), "DNS-1123"),
            (GOOD.replace("/data/logs", "data/logs"), "absolute"),
            (GOOD.replace("my-bucket", "My_Bucket"), "bucket"),
            (GOOD.replace("**/*.log", "[a-"), "glob"),
            (GOOD.replace("  pattern", "  patern"), "unknown field"),
            (GOOD.replace("spec:", "spec: 5\nx:"), ""),
            ("just a string".to_owned(), ""),
        ];
        for (text, needle) in cases {
            let r = parse_file("bad.yaml", &text);
            let e = r[0].as_ref().unwrap_err();
            assert!(e.reason.contains(needle), "{needle}: {e}");
            assert!(e.to_string().starts_with("bad.yaml document 1"), "{e}");
        }
    }

    #[test]
    fn an_alias_bomb_is_refused_without_expanding_it() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in 'b'..='k' {
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = name;
        }
        let started = std::time::Instant::now();
        let r = parse_file("bomb.yaml", &bomb);
        assert!(r[0].is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn the_schema_describes_the_format() {
        let s = schema();
        let props = &s["properties"];
        assert_eq!(props["apiVersion"]["const"], "ferry/v1");
        assert_eq!(props["kind"]["const"], "UploadJob");
        let text = s.to_string();
        for field in ["sourceFolder", "destinationBucket", "pattern", "DNS-1123"] {
            assert!(text.contains(field), "{field} missing from the schema");
        }
    }
}
