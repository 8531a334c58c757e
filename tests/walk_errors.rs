//! What a scan cannot read is not gone: an unreadable folder never shrinks a job or lets it
//! claim COMPLETED, and a file whose bytes are not its size is an error, not an object.

mod common;

use std::time::Duration;

use common::{Ferry, S3, chmod, condition, content, is_root, write_file};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_unreadable_folder_keeps_its_files_and_the_job_from_completing() {
    if !is_root() {
        eprintln!("skipped: needs root to run ferry as another user");
        return;
    }
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    chmod(src.path(), 0o755);
    write_file(src.path(), "a.txt", &content(1, 100));
    write_file(src.path(), "open/b.txt", &content(2, 200));
    write_file(src.path(), "secret/c.txt", &content(3, 300));
    for dir in ["open", "secret"] {
        chmod(&src.path().join(dir), 0o755);
    }
    // Owned by root: `nobody` may not list it.
    chmod(&src.path().join("secret"), 0o700);

    let ferry = Ferry::start_unprivileged().await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "never COMPLETED: {job}");
    assert!(job["progress"].as_f64().unwrap() < 1.0, "{job}");
    assert_eq!(job["completed_files"], 2, "{job}");
    let folder = condition(&job, "SourceFolderReadable");
    assert_eq!(folder["status"], "False", "{job}");
    assert_eq!(folder["reason"], "PartlyUnreadable", "{job}");
    let message = folder["message"].as_str().unwrap();
    assert!(message.contains("secret"), "names the folder: {message}");
    assert!(
        message.contains("ermission denied"),
        "and the error: {message}"
    );
    assert_eq!(condition(&job, "Completed")["status"], "False");

    // Readable again: the next scan takes it, and the job completes.
    chmod(&src.path().join("secret"), 0o755);
    assert_eq!(
        ferry
            .post(&format!("/uploads/{id}/rescan"), &Value::Null)
            .await
            .0,
        202
    );
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert_eq!(job["completed_files"], 3, "{job}");
    assert_eq!(condition(&job, "SourceFolderReadable")["status"], "True");
    assert_eq!(s3.get(&format!("{id}/secret/c.txt")).await, content(3, 300));

    // A folder already uploaded turns unreadable: its files stay counted, the job is not
    // COMPLETED, and the condition names it.
    chmod(&src.path().join("open"), 0o700);
    ferry
        .post(&format!("/uploads/{id}/rescan"), &Value::Null)
        .await;
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "FAILED")
        .await;
    assert_eq!(job["total_files"], 3, "the files under it stay: {job}");
    assert_eq!(job["completed_files"], 3, "{job}");
    let message = condition(&job, "SourceFolderReadable")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("open"), "{message}");
    chmod(&src.path().join("open"), 0o755);
}

#[tokio::test]
async fn a_file_whose_bytes_are_not_its_size_fails_and_uploads_nothing() {
    let s3 = S3::new_bucket().await;
    // /proc/self/status: stat says 0 bytes, reading gives a page of text.
    let ferry = Ferry::start(&[]).await;
    let body = serde_json::json!({
        "source_folder": "/proc/self",
        "destination_bucket": s3.bucket,
        "pattern": "status",
    });
    let (status, answer) = ferry.post("/uploads/", &body).await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["upload_id"].as_str().unwrap().to_owned();
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["failed_files"].as_u64() == Some(1))
        .await;
    assert_ne!(job["state"], "COMPLETED", "{job}");
    let files = ferry.files(&id).await;
    let status = files.iter().find(|f| f["path"] == "status").unwrap();
    assert_eq!(status["state"], "FAILED", "{status}");
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("special file"), "{error}");
    assert!(
        !s3.keys().await.contains(&format!("{id}/status")),
        "no 0-byte copy of a file that is not empty"
    );
}
