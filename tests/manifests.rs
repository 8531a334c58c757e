//! GitOps: UploadJob manifests in FERRY_MANIFESTS_DIR are applied, edited, pruned and reported.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Ferry, S3, ferry_command, write_file};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(90);

fn manifest(name: &str, folder: &Path, bucket: &str, pattern: Option<&str>) -> String {
    let mut doc = format!(
        "apiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: {name}\nspec:\n  sourceFolder: {}\n  destinationBucket: {bucket}\n",
        folder.display()
    );
    if let Some(p) = pattern {
        doc.push_str(&format!("  pattern: \"{p}\"\n"));
    }
    doc
}

async fn wait_manifests(ferry: &Ferry, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, m) = ferry.get("/manifests").await;
        assert_eq!(status, 200);
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: {m}\n{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job_names(m: &Value) -> Vec<String> {
    m["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn manifests_are_applied_edited_split_broken_and_pruned() {
    let s3 = S3::new_bucket().await;
    let data = tempfile::tempdir().unwrap();
    for path in ["a.log", "b.txt", "sub/c.log"] {
        write_file(data.path(), path, path.as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_owned();
    std::fs::write(
        dir.path().join("logs.yaml"),
        manifest("logs", data.path(), &s3.bucket, Some("**/*.log")),
    )
    .unwrap();
    let ferry = Ferry::start(&[
        ("FERRY_MANIFESTS_DIR", &dir_path),
        ("FERRY_SCAN_INTERVAL", "1h"),
    ])
    .await;

    // Applied on start.
    wait_manifests(&ferry, "applied on start", |m| job_names(m) == vec!["logs"]).await;
    let job = ferry.wait_settled("logs", SETTLE).await;
    assert_eq!(job["state"], "COMPLETED");
    assert_eq!(job["managed_by"], "manifest");
    assert_eq!(job["manifest"], "logs.yaml#1");
    assert_eq!(s3.get("logs/sub/c.log").await, b"sub/c.log");

    // Two more jobs in one file, and a broken document between them that harms neither.
    let split = format!(
        "{}---\nkind: [this is not closed\n---\n{}---\napiVersion: ferry/v1\nkind: CronJob\nmetadata: {{name: odd}}\nspec: {{sourceFolder: /x, destinationBucket: bucket}}\n---\n{}",
        manifest("texts", data.path(), &s3.bucket, Some("*.txt")),
        manifest("everything", data.path(), &s3.bucket, None),
        manifest("logs", data.path(), &s3.bucket, None),
    );
    std::fs::write(dir.path().join("more.yml"), split).unwrap();
    let m = wait_manifests(&ferry, "the split file applies", |m| {
        job_names(m).len() == 3
    })
    .await;
    assert_eq!(job_names(&m), vec!["everything", "logs", "texts"]);
    let errors = m["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{m}");
    assert!(
        errors
            .iter()
            .any(|e| e["document"] == 2 && e["file"] == "more.yml")
    );
    assert!(
        errors
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("CronJob"))
    );
    assert!(errors.iter().any(|e| {
        e["reason"]
            .as_str()
            .unwrap()
            .contains("already declared by logs.yaml#1")
    }));
    assert_eq!(
        ferry.wait_settled("texts", SETTLE).await["state"],
        "COMPLETED"
    );
    assert_eq!(
        ferry.wait_settled("everything", SETTLE).await["total_files"],
        3
    );
    assert_eq!(s3.get("texts/b.txt").await, b"b.txt");
    // The first declaration of a name wins.
    let (_, logs) = ferry.get("/uploads/logs").await;
    assert_eq!(logs["pattern"], "**/*.log");

    // An edit is reconciled: a new pattern for logs.
    std::fs::write(
        dir.path().join("logs.yaml"),
        manifest("logs", data.path(), &s3.bucket, Some("*.txt")),
    )
    .unwrap();
    let job = ferry
        .wait_for("logs", SETTLE, |j| {
            j["generation"] == 2 && j["observed_generation"] == 2 && j["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["total_files"], 1);
    assert_eq!(s3.get("logs/b.txt").await, b"b.txt");

    // Jobs declared by manifests are changed there, not through the API.
    assert_eq!(ferry.delete("/uploads/logs").await, 409);

    // A restart in the middle of all this: the same jobs, nothing created twice.
    let ferry = ferry.restart().await;
    let m = wait_manifests(&ferry, "applied again after a restart", |m| {
        job_names(m).len() == 3
    })
    .await;
    assert_eq!(job_names(&m), vec!["everything", "logs", "texts"]);
    let (_, logs) = ferry.get("/uploads/logs").await;
    assert_eq!(logs["generation"], 2, "a restart is not a change: {logs}");

    // A removed file prunes its jobs; objects stay.
    std::fs::remove_file(dir.path().join("more.yml")).unwrap();
    wait_manifests(&ferry, "the removed file prunes", |m| {
        job_names(m) == vec!["logs"]
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ferry.get("/uploads/texts").await.0 != 404 {
        assert!(Instant::now() < deadline, "texts was not pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ferry.get("/uploads/everything").await.0, 404);
    assert_eq!(s3.get("texts/b.txt").await, b"b.txt");

    // Breaking the only document of a file keeps its job (a broken edit deletes nothing).
    std::fs::write(
        dir.path().join("logs.yaml"),
        "apiVersion: ferry/v1\nkind: [oops\n",
    )
    .unwrap();
    let m = wait_manifests(&ferry, "the broken file is reported", |m| {
        m["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["file"] == "logs.yaml")
    })
    .await;
    assert!(
        m["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("logs.yaml document 1")
    );
    assert_eq!(ferry.get("/uploads/logs").await.0, 200);
}

#[tokio::test]
async fn hostile_manifests_are_refused_and_ferry_lives_on() {
    let s3 = S3::new_bucket().await;
    let data = tempfile::tempdir().unwrap();
    write_file(data.path(), "f.txt", b"fine");
    let dir = tempfile::tempdir().unwrap();
    // An alias bomb, a huge file, a name that is not a DNS-1123 label, binary junk.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for name in 'b'..='m' {
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = name;
    }
    std::fs::write(dir.path().join("bomb.yaml"), bomb).unwrap();
    std::fs::write(dir.path().join("huge.yaml"), "x".repeat(2 * 1024 * 1024)).unwrap();
    std::fs::write(
        dir.path().join("bad-name.yaml"),
        manifest("Not_A_Label", data.path(), &s3.bucket, None),
    )
    .unwrap();
    std::fs::write(dir.path().join("junk.yml"), [0xff, 0xfe, 0x00, 0x01]).unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        manifest("good", data.path(), &s3.bucket, None),
    )
    .unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "not a manifest").unwrap();
    let dir_path = dir.path().to_str().unwrap().to_owned();
    let ferry = Ferry::start(&[("FERRY_MANIFESTS_DIR", &dir_path)]).await;

    let m = wait_manifests(&ferry, "all files were read", |m| {
        m["errors"].as_array().unwrap().len() == 4
    })
    .await;
    assert_eq!(job_names(&m), vec!["good"]);
    let reason = |file: &str| -> String {
        m["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["file"] == file)
            .map(|e| e["reason"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no error for {file}: {m}"))
    };
    assert!(reason("huge.yaml").contains("at most"));
    assert!(reason("bad-name.yaml").contains("DNS-1123"));
    assert!(reason("junk.yml").contains("UTF-8"));
    assert!(!reason("bomb.yaml").is_empty());
    assert_eq!(
        ferry.wait_settled("good", SETTLE).await["state"],
        "COMPLETED"
    );
    assert_eq!(ferry.get("/healthz").await.0, 200);
    // Memory stayed small: the bomb was not expanded.
    let status = std::fs::read_to_string(format!("/proc/{}/status", ferry.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(rss_kib < 200 * 1024, "peak RSS {rss_kib} KiB");
}

#[test]
fn a_missing_manifests_folder_stops_the_start_and_schema_prints_the_format() {
    let out = ferry_command()
        .arg("serve")
        .env("FERRY_MANIFESTS_DIR", "/no/such/folder")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("FERRY_MANIFESTS_DIR"), "{stderr}");

    let out = ferry_command().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["properties"]["kind"]["const"], "UploadJob");
    // The schema in the repository is the one the binary prints.
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/upload-job.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema, committed,
        "schema/upload-job.schema.json is stale: run `ferry schema`"
    );
}

#[test]
fn the_example_manifests_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in ferry::manifest::parse_file(path.file_name().unwrap().to_str().unwrap(), &text) {
            jobs.push(doc.unwrap_or_else(|e| panic!("{e}")));
        }
    }
    assert_eq!(jobs.len(), 4);
    // One example shows every object option.
    let archive = jobs.iter().find(|j| j.name == "web-1-archive").unwrap();
    let f = &archive.fields;
    assert_eq!(f.key_prefix.as_deref(), Some("hosts/web-1/"));
    assert!(!f.exclude.is_empty() && !f.metadata.is_empty() && !f.tags.is_empty());
    assert!(f.storage_class.is_some() && f.sse.is_some() && f.kms_key_id.is_some());
}
