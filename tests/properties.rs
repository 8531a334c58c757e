//! Property tests of the code that takes outside input without I/O: the manifest parser, globs,
//! object keys, the part plan and the reading of S3's ETags. Each property runs a bounded number
//! of generated cases (PROPTEST_CASES raises it, e.g. `PROPTEST_CASES=100000 cargo test --test
//! properties`); a failing case is shrunk and saved under proptest-regressions/, and every crash
//! found so far is also a plain test at the end of this file.

use std::path::Path;

use ferry::core::object::ObjectOptions;
use ferry::core::plan::{
    EtagCheck, MAX_PARTS, UploadPlan, check_etag, part_range, plan_upload, relative_key_path,
};
use ferry::core::spec::{JobName, JobSpec, Pattern, SpecFields};
use ferry::manifest::parse_file;
use proptest::prelude::*;

const MIB: u64 = 1024 * 1024;

fn config() -> ProptestConfig {
    ProptestConfig {
        // Bounded so the suite stays quick; PROPTEST_CASES overrides it.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

/// Text that looks like YAML often enough to reach deep into the parser: keys of the manifest,
/// markers, anchors, aliases, flow collections, tags, quotes and indentation.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: ferry/v1\n".to_owned()),
        Just("kind: UploadJob\n".to_owned()),
        Just("metadata:\n  name: job-a\n".to_owned()),
        Just("spec:\n  sourceFolder: /data\n  destinationBucket: bucket-a\n".to_owned()),
        Just("  pattern: \"**/*.log\"\n".to_owned()),
        Just("---\n".to_owned()),
        Just("...\n".to_owned()),
        Just("--- ".to_owned()),
        Just("&a ".to_owned()),
        Just("*a ".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("!!binary ".to_owned()),
        Just("!tag ".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("|\n".to_owned()),
        Just(">-\n".to_owned()),
        Just("? ".to_owned()),
        Just("- ".to_owned()),
        Just(": ".to_owned()),
        Just("\t".to_owned()),
        Just("    ".to_owned()),
        Just("%YAML 1.2\n".to_owned()),
        Just("# comment\n".to_owned()),
        Just("\u{feff}".to_owned()),
        "\\PC{0,12}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"
}

fn bucket() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{1,30}[a-z0-9]"
}

fn folder() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9 _.-]{1,12}", 1..5)
        .prop_filter("no dot segments", |parts| {
            parts.iter().all(|p| p != "." && p != "..")
        })
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

fn glob() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("*".to_owned()),
            Just("**".to_owned()),
            Just("?".to_owned()),
            Just("/".to_owned()),
            Just("{a,b}".to_owned()),
            Just("[a-c]".to_owned()),
            Just(".log".to_owned()),
            "[a-z0-9]{1,4}",
        ],
        1..8,
    )
    .prop_map(|t| t.concat())
    .prop_filter("patterns are relative", |p| !p.starts_with('/'))
}

/// A path relative to a source folder: 1 to 5 names, none of them '.' or '..'.
fn relative_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[^/\u{0}]{1,16}", 1..6)
        .prop_filter("no dot segments", |names| {
            names.iter().all(|n| n != "." && n != "..")
        })
        .prop_map(|names| names.join("/"))
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Any text: no panic, one result per non-blank document, every error placed in the file.
    #[test]
    fn the_manifest_parser_never_panics_and_places_every_error(text in yamlish()) {
        let lines = text.lines().count();
        for result in parse_file("fuzz.yaml", &text) {
            if let Err(e) = result {
                prop_assert!(e.line <= lines + 1, "line {} of {lines}: {e}", e.line);
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn the_manifest_parser_takes_arbitrary_unicode(text in "\\PC{0,400}") {
        let _ = parse_file("fuzz.yaml", &text);
    }

    /// A valid job written as YAML parses back to the same job, and a broken document beside
    /// it does not hide it.
    #[test]
    fn a_declared_job_round_trips_and_survives_a_broken_neighbour(
        name in dns_label(),
        source in folder(),
        bucket in bucket(),
        pattern in prop::option::of(glob()),
        garbage in yamlish(),
        broken_first in any::<bool>(),
    ) {
        prop_assume!(JobName::parse(&name).is_ok());
        let fields = SpecFields {
            source_folder: source.clone(),
            destination_bucket: bucket.clone(),
            pattern: pattern.clone(),
            ..SpecFields::default()
        };
        prop_assume!(JobSpec::parse(&name, &fields).is_ok());
        let mut doc = format!(
            "apiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: {}\nspec:\n  sourceFolder: {}\n  destinationBucket: {}\n",
            quoted(&name), quoted(&source), quoted(&bucket)
        );
        if let Some(p) = &pattern {
            doc.push_str(&format!("  pattern: {}\n", quoted(p)));
        }
        // The neighbour cannot open a block scalar or a quote that swallows the next marker:
        // YAML would rightly read the marker as text then. Flatten it onto one line of a key.
        let neighbour = format!("junk: {}\n", quoted(&garbage));
        let text = if broken_first {
            format!("{neighbour}---\n{doc}")
        } else {
            format!("{doc}---\n{neighbour}")
        };
        let results = parse_file("jobs.yaml", &text);
        let jobs: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        prop_assert_eq!(jobs.len(), 1, "{:?}", results);
        let job = jobs[0];
        prop_assert_eq!(&job.name, &name);
        prop_assert_eq!(&job.fields, &fields);
        prop_assert_eq!(results.len(), 2);
    }

    /// Any pattern text: parsed or refused with a reason, never a panic; a parsed one matches
    /// any path without panicking.
    #[test]
    fn any_pattern_is_parsed_or_refused(pattern in "\\PC{0,64}", path in relative_path()) {
        match Pattern::parse(&pattern) {
            Ok(p) => {
                let _ = p.matches(&path);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// `*` and `?` never cross a folder: `dir/*` takes the files of `dir`, not of its subfolders.
    #[test]
    fn a_single_star_stays_within_one_folder(dir in "[a-z]{1,8}", names in prop::collection::vec("[a-z0-9.]{1,8}", 2..5)) {
        let one_level = Pattern::parse(&format!("{dir}/*")).unwrap();
        let deep = Pattern::parse(&format!("{dir}/**")).unwrap();
        let nested = format!("{dir}/{}", names.join("/"));
        prop_assert!(!one_level.matches(&nested), "{nested}");
        prop_assert!(deep.matches(&nested), "{nested}");
        let direct = format!("{dir}/{}", names[0]);
        prop_assert!(one_level.matches(&direct), "{direct}");
    }

    /// A file's key is `{upload_id}/{path relative to the folder}`, with '/' separators: the
    /// relative path comes back out of the key unchanged, and nothing escapes the prefix.
    #[test]
    fn keys_are_the_job_prefix_and_the_relative_path(
        id in dns_label(),
        root in folder(),
        relative in relative_path(),
    ) {
        let root = Path::new(&root);
        let path = relative.split('/').fold(root.to_path_buf(), |p, c| p.join(c));
        let rel = relative_key_path(root, &path).unwrap();
        prop_assert_eq!(&rel, &relative);
        let key = ObjectOptions::defaults(&id).key(&rel);
        let prefix = format!("{id}/");
        prop_assert!(key.starts_with(&prefix));
        prop_assert_eq!(&key[prefix.len()..], relative.as_str());
        prop_assert!(!key.split('/').any(|s| s.is_empty() || s == "." || s == ".."), "{}", key);
    }

    /// A path that leaves the folder, or is the folder, has no key.
    #[test]
    fn paths_outside_the_folder_have_no_key(root in folder(), relative in relative_path()) {
        let root = Path::new(&root);
        prop_assert!(relative_key_path(root, root).is_err());
        let up = root.join("..").join(&relative);
        prop_assert!(relative_key_path(root, &up).is_err());
        prop_assert!(relative_key_path(&root.join("other"), &root.join(&relative)).is_err());
    }

    /// The parts of any file cover it exactly, in order, within S3's limits.
    #[test]
    fn parts_cover_every_file_exactly(
        size in prop_oneof![0u64..64 * MIB, 0u64..=5 * 1024 * 1024 * MIB],
        chunk_mib in 5u64..=512,
    ) {
        let chunk = chunk_mib * MIB;
        match plan_upload(size, chunk).unwrap() {
            UploadPlan::Single => prop_assert!(size < chunk),
            UploadPlan::Multipart { part_size, parts } => {
                prop_assert!(size >= chunk);
                prop_assert!(part_size >= chunk);
                prop_assert!((1..=MAX_PARTS).contains(&parts));
                let mut next = 0;
                // Only the ends: the middle follows from the arithmetic, and a 5 TiB file
                // has 10,000 parts.
                for n in [1, 2.min(parts), parts.saturating_sub(1).max(1), parts] {
                    let (offset, len) = part_range(size, part_size, n);
                    prop_assert_eq!(offset, (n - 1) * part_size);
                    prop_assert!((1..=part_size).contains(&len));
                    if n == 1 { next = offset + len; }
                }
                prop_assert!(next <= size);
                let (last_offset, last_len) = part_range(size, part_size, parts);
                prop_assert_eq!(last_offset + last_len, size);
            }
        }
    }

    /// Whatever S3 answers as an ETag: a verdict, never a panic; and only the exact MD5 form of
    /// what was sent matches.
    #[test]
    fn any_etag_answer_gets_a_verdict(answer in "\\PC{0,80}", expected in "[0-9a-f]{32}(-[1-9][0-9]{0,3})?") {
        match check_etag(&expected, &answer) {
            EtagCheck::Match => {
                prop_assert_eq!(&answer.trim().trim_matches('"').to_ascii_lowercase(), &expected)
            }
            EtagCheck::Mismatch { .. } | EtagCheck::Opaque => {}
        }
        prop_assert_eq!(check_etag(&expected, &format!("\"{expected}\"")), EtagCheck::Match);
    }
}
