//! Stores that do not do everything S3 does, and errors as a person reads them: "not supported"
//! is learnt once and worked around, never retried like a passing fault, and never holds the
//! uploads up; messages name the S3 operation and carry no Rust Debug forms.

mod common;

use std::time::Duration;

use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, s3_endpoint, write_file};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_list_uploads_holds_no_upload_behind_the_sweep() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let url = proxy.url.clone();
    let env = [("AWS_ENDPOINT_URL", url.as_str())];
    let ferry = Ferry::start(&env).await;
    // Three old jobs, for the sweep at the next start to look at.
    let olds: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for old in &olds {
        ferry.create_job(old.path(), &s3.bucket, None).await;
    }
    // The next start meets a store that answers ListMultipartUploads 501, as s3s-fs does.
    proxy.set_faults(Faults {
        refuse: vec![("ListMultipartUploads", 501, "NotImplemented")],
        ..Faults::default()
    });
    let ferry = ferry.restart().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "note.txt", &content(1, 10_000));
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(
        proxy.received("ListMultipartUploads"),
        1,
        "learnt once for the store, not asked again per job nor retried"
    );
    assert!(ferry.log().contains("cannot list open multipart uploads"));

    // A store that never answers the sweep: a small file still goes at once.
    proxy.set_faults(Faults {
        hang: vec!["ListMultipartUploads"],
        ..Faults::default()
    });
    let ferry = ferry.restart().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "later.txt", &content(2, 10_000));
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(s3.get(&format!("{id}/later.txt")).await, content(2, 10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_the_store_does_not_do_is_given_up_and_shown() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        refuse: vec![("AbortMultipartUpload", 501, "NotImplemented")],
        hold_parts_after: Some(1),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let path = write_file(src.path(), "big.bin", &content(3, 12 * MIB));
    let ferry = Ferry::start(&[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let deadline = std::time::Instant::now() + SETTLE;
    while proxy.received("UploadPart") < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Rewritten mid-upload: the open multipart upload is let go of, and must be aborted.
    std::fs::write(&path, content(4, 12 * MIB)).unwrap();
    ferry
        .post(&format!("/uploads/{id}/rescan"), &Value::Null)
        .await;
    proxy.release_held_parts();
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && j["multipart_aborts_given_up"] == 1
        })
        .await;
    let error = job["multipart_abort_error"].as_str().unwrap();
    assert!(error.contains("AbortMultipartUpload"), "{error}");
    assert!(error.contains("501 NotImplemented"), "{error}");
    assert_eq!(
        proxy.received("AbortMultipartUpload"),
        1,
        "a store that does not abort is not asked every minute forever"
    );
    let metrics = ferry.metrics_text().await;
    assert!(
        metrics.contains("ferry_multipart_aborts{state=\"given_up\"} 1"),
        "{metrics}"
    );
    assert_eq!(s3.get(&format!("{id}/big.bin")).await, content(4, 12 * MIB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_operation_and_read_as_text() {
    let s3 = S3::new_bucket().await;
    // A HEAD answer has no body: a 403 carries no error code.
    let proxy = Proxy::with_faults(Faults {
        refuse: vec![("HeadBucket", 403, "")],
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_LOG_FORMAT", "text"),
    ])
    .await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    // The check goes beside the walk, so the file's upload may end first: the error is awaited.
    let job = ferry
        .wait_for(&id, SETTLE, |job| job["error"].is_string())
        .await;
    let error = job["error"].as_str().unwrap();
    assert!(error.starts_with("HeadBucket: "), "{error}");
    assert!(error.contains("(HTTP 403)"), "{error}");

    // S3 gone: the connection error reads as text.
    drop(proxy);
    ferry
        .post(&format!("/uploads/{id}/rescan"), &Value::Null)
        .await;
    // The file's upload may be in flight beside the check, and its breaker also logs that S3
    // cannot be reached: the wait is for the check's own line, after its retries.
    let deadline = std::time::Instant::now() + SETTLE;
    while !ferry.log().contains("HeadBucket: could not reach S3") {
        assert!(std::time::Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = ferry.log();
    assert!(!log.contains('\u{1b}'), "no terminal colours in a file");
    assert!(log.contains("HeadBucket: could not reach S3"), "{log}");
    for debug in ["DispatchFailure(", "ConnectorError {", "Some("] {
        assert!(!log.contains(debug), "{debug} in:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_during_its_scan_logs_no_error() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..20_000 {
        std::fs::write(src.path().join(format!("f{i:05}")), b"").unwrap();
    }
    let ferry = Ferry::start(&[]).await;
    for _ in 0..3 {
        let id = ferry.create_job(src.path(), &s3.bucket, None).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ferry.delete(&format!("/uploads/{id}")).await, 204);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = ferry.log();
    for line in log.lines().filter(|l| l.contains("FOREIGN KEY")) {
        assert!(
            line.contains("\"DEBUG\""),
            "not an error of the user's: {line}"
        );
    }
    assert!(!log.contains("scan failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_checksum_headers_gets_md5_proofs_unless_pinned() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        refuse_checksum_headers: true,
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("small-{i}.txt"),
                content(40 + i, 2_000 + i as usize),
            )
        })
        .collect();
    files.push(("empty".into(), Vec::new()));
    files.push(("big.bin".into(), content(50, 12 * MIB)));
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    // One attempt each: the fallback must not spend them. Two files at once: the files after
    // them must find the fallback learnt.
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_MAX_ATTEMPTS", "1"),
        ("FERRY_CONCURRENCY", "2"),
    ])
    .await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    for (path, data) in &files {
        assert!(s3.get(&format!("{id}/{path}")).await == *data, "{path}");
    }
    let log = ferry.log();
    assert_eq!(
        log.matches("the store refuses checksum headers").count(),
        1,
        "detected and logged once:\n{log}"
    );
    let refused: u64 = [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "HeadObject",
    ]
    .iter()
    .map(|op| proxy.refused_for_checksums(op))
    .sum();
    assert!(
        refused <= 3,
        "{refused} requests refused: the fallback was not kept"
    );
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;

    // FERRY_CHECKSUM pins the choice: the files fail, saying why, instead.
    let pinned = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_MAX_ATTEMPTS", "1"),
        ("FERRY_CHECKSUM", "crc32c"),
    ])
    .await;
    let id = pinned.create_job(src.path(), &s3.bucket, None).await;
    let job = pinned.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let failed = pinned.files(&id).await;
    let small = failed.iter().find(|f| f["path"] == "small-0.txt").unwrap();
    let error = small["last_error"].as_str().unwrap();
    assert!(
        error.contains("Unsupported header 'x-amz-checksum-crc32c'"),
        "{error}"
    );
}
