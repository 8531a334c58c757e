//! Declarative jobs: PUT /uploads/{name} makes a job have a spec, idempotently; status reports
//! generations and conditions; a scan that finds nothing changed writes nothing.

mod common;

use std::time::Duration;

use common::{Ferry, S3, condition, write_file};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(90);

async fn put(ferry: &Ferry, name: &str, body: &Value) -> (u16, Value) {
    ferry.put(&format!("/uploads/{name}"), body).await
}

#[tokio::test]
async fn put_creates_once_and_then_changes_only_what_changed() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for path in ["a.log", "b.txt", "x/c.log", "x/d.txt"] {
        write_file(src.path(), path, path.as_bytes());
    }
    let ferry = Ferry::start(&[]).await;
    let folder = src.path().to_str().unwrap();
    let logs =
        json!({"source_folder": folder, "destination_bucket": s3.bucket, "pattern": "**/*.log"});

    let (status, answer) = put(&ferry, "nightly-logs", &logs).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer,
        json!({"upload_id": "nightly-logs", "status": "created", "generation": 1})
    );
    let job = ferry.wait_settled("nightly-logs", SETTLE).await;
    assert_eq!(job["state"], "COMPLETED");
    assert_eq!(
        (
            job["generation"].as_i64(),
            job["observed_generation"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(condition(&job, "Reconciled")["status"], "True");
    assert_eq!(condition(&job, "Completed")["status"], "True");
    assert_eq!(s3.get("nightly-logs/x/c.log").await, b"x/c.log");

    // The same spec again: nothing changes.
    let (status, answer) = put(&ferry, "nightly-logs", &logs).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("unchanged"))
    );
    assert_eq!(answer["generation"], 1);

    // A new pattern: new files come in, files that no longer match leave the count.
    let txt =
        json!({"source_folder": folder, "destination_bucket": s3.bucket, "pattern": "**/*.txt"});
    let (status, answer) = put(&ferry, "nightly-logs", &txt).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("updated")));
    assert_eq!(answer["generation"], 2);
    let job = ferry
        .wait_for("nightly-logs", SETTLE, |j| {
            j["observed_generation"] == 2 && j["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["pattern"], "**/*.txt");
    assert_eq!(job["total_files"], 2);
    let paths: Vec<String> = ferry
        .files("nightly-logs")
        .await
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, vec!["b.txt", "x/d.txt"]);
    assert_eq!(s3.get("nightly-logs/x/d.txt").await, b"x/d.txt");
    // Objects of files that left the job stay.
    assert_eq!(s3.get("nightly-logs/a.log").await, b"a.log");

    // A new bucket: every file goes again, to the new place.
    let other = S3::new_bucket().await;
    let moved =
        json!({"source_folder": folder, "destination_bucket": other.bucket, "pattern": "**/*.txt"});
    let (status, answer) = put(&ferry, "nightly-logs", &moved).await;
    assert_eq!((status, answer["generation"].as_i64()), (200, Some(3)));
    ferry
        .wait_for("nightly-logs", SETTLE, |j| {
            j["observed_generation"] == 3 && j["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(
        other.keys().await,
        vec!["nightly-logs/b.txt", "nightly-logs/x/d.txt"]
    );
}

#[tokio::test]
async fn put_refuses_bad_names_and_bad_specs() {
    let ferry = Ferry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ok = json!({"source_folder": dir.path().to_str().unwrap(), "destination_bucket": "bucket"});
    for name in [
        "Nightly",
        "has_underscore",
        "-dash",
        "dash-",
        &"a".repeat(64),
    ] {
        let (status, body) = put(&ferry, name, &ok).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_name", "{name}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("DNS-1123")
        );
    }
    let (status, body) = put(&ferry, "fine", &json!({"source_folder": "relative"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let bad_bucket =
        json!({"source_folder": dir.path().to_str().unwrap(), "destination_bucket": "B"});
    let (status, body) = put(&ferry, "fine", &bad_bucket).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_bucket"))
    );
    let (_, jobs) = ferry.get("/uploads").await;
    assert_eq!(jobs, json!([]), "nothing was created");
}

#[tokio::test]
async fn conditions_name_what_blocks_a_job() {
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "f.txt", b"x");
    let ferry = Ferry::start(&[]).await;
    let missing = common::unique("gone").to_lowercase();
    let id = ferry.create_job(src.path(), &missing, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    let bucket = condition(&job, "BucketWritable");
    assert_eq!(bucket["status"], "False", "{job}");
    assert_eq!(bucket["reason"], "BucketUnavailable");
    assert!(
        bucket["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    assert_eq!(condition(&job, "SourceFolderReadable")["status"], "True");
    assert_eq!(condition(&job, "Completed")["status"], "False");
}

/// The bucket is checked beside the walk, so the first uploads can meet a missing bucket before
/// the check does: they must block the job, not spend the files' attempts (one each here, so a
/// spent one would fail the file for good), and the job completes once the bucket exists.
#[tokio::test]
async fn a_missing_bucket_spends_no_attempts_and_the_job_completes_once_it_exists() {
    let src = tempfile::tempdir().unwrap();
    for i in 0..40 {
        write_file(
            src.path(),
            &format!("f{i:02}.txt"),
            format!("file {i}").as_bytes(),
        );
    }
    let ferry = Ferry::start(&[("FERRY_MAX_ATTEMPTS", "1")]).await;
    let bucket = common::unique("late").to_lowercase();
    let id = ferry.create_job(src.path(), &bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(
        condition(&job, "BucketWritable")["reason"],
        "BucketUnavailable"
    );
    let all_waiting = common::eventually(SETTLE, || async {
        let files = ferry.files(&id).await;
        files.len() == 40
            && files
                .iter()
                .all(|f| f["state"] == "PENDING" && f["attempts"] == 0)
    })
    .await;
    assert!(
        all_waiting,
        "every file waits with its attempt unspent: {:?}",
        ferry.files(&id).await
    );

    let s3 = S3::create(&bucket).await;
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/rescan"), &json!({}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert_eq!(condition(&job, "BucketWritable")["status"], "True", "{job}");
    assert_eq!(s3.keys().await.len(), 40);
    for i in [0, 17, 39] {
        assert_eq!(
            s3.get(&format!("{id}/f{i:02}.txt")).await,
            format!("file {i}").into_bytes()
        );
    }
}

#[tokio::test]
async fn a_rescan_that_finds_nothing_changed_writes_nothing() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write_file(src.path(), &format!("d{}/f{i}.txt", i % 5), b"same");
    }
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| (m.len(), m.modified().unwrap()))
            .ok()
    };
    let db = ferry.db.clone();
    let wal = db.with_extension("db-wal");
    let before = (stamp(&db), stamp(&wal));
    let scanned = job["scanned_at"].as_str().unwrap().to_owned();
    let (status, _) = ferry
        .post(&format!("/uploads/{id}/rescan"), &json!({}))
        .await;
    assert_eq!(status, 202);
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["scanned_at"].as_str() > Some(scanned.as_str())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (stamp(&db), stamp(&wal)),
        before,
        "the database was written"
    );
}
