//! All state is in the database: a ferry killed in the middle of a job carries on after a
//! restart, and nothing is left open in S3.

mod common;

use std::time::Duration;

use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, s3_endpoint, write_file};

const SETTLE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_job_killed_midway_finishes_after_a_restart_on_the_same_database() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| {
            (
                format!("part-{i:02}.bin"),
                content(100 + i, 6 * MIB + i as usize),
            )
        })
        .collect();
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    // One file at a time, so that the kill lands with some files done and some not.
    let mut ferry = Ferry::start(&[("FERRY_CONCURRENCY", "1")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let before = ferry
        .wait_for(&id, SETTLE, |j| {
            j["completed_files"].as_u64().unwrap_or(0) >= 2
        })
        .await;
    ferry.kill9();
    assert_ne!(
        before["state"], "COMPLETED",
        "the job finished before the kill: {before}"
    );

    let ferry = ferry.restart().await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(job["completed_files"], files.len());
    assert_eq!(job["progress"], 1.0);
    for (path, data) in &files {
        assert!(
            s3.get(&format!("{id}/{path}")).await == *data,
            "{path} differs"
        );
    }
    // The multipart upload interrupted by the kill was aborted, not left to cost money.
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn deleting_a_job_stops_it_aborts_its_uploads_and_keeps_its_objects() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "small.txt", b"stays in S3");
    for i in 0..6 {
        write_file(
            src.path(),
            &format!("big-{i}.bin"),
            &content(200 + i, 11 * MIB),
        );
    }
    let ferry = Ferry::start(&[("FERRY_CONCURRENCY", "2")]).await;
    let id = ferry
        .create_job(src.path(), &s3.bucket, Some("small.txt"))
        .await;
    assert_eq!(ferry.wait_settled(&id, SETTLE).await["state"], "COMPLETED");

    let busy = ferry
        .create_job(src.path(), &s3.bucket, Some("big-*"))
        .await;
    ferry
        .wait_for(&busy, SETTLE, |j| {
            j["in_progress_files"].as_u64().unwrap_or(0) > 0
        })
        .await;
    assert_eq!(ferry.delete(&format!("/uploads/{busy}")).await, 204);
    let (status, _) = ferry.get(&format!("/uploads/{busy}")).await;
    assert_eq!(status, 404);
    assert_eq!(ferry.delete(&format!("/uploads/{id}")).await, 204);

    // Objects already uploaded stay; no multipart upload is left open.
    assert_eq!(s3.get(&format!("{id}/small.txt")).await, b"stays in S3");
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
    let (_, jobs) = ferry.get("/uploads").await;
    assert_eq!(jobs, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_starts_no_upload_after_the_delete() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..12 {
        write_file(src.path(), &format!("f{i:02}.txt"), &content(700 + i, 1000));
    }
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "2"),
    ];
    let ferry = Ferry::start(&env).await;
    // Slow requests, so that the delete lands with uploads running and files still waiting.
    proxy.set_faults(Faults {
        delay: Some(Duration::from_secs(2)),
        ..Faults::default()
    });
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["completed_files"].as_u64().unwrap_or(0) >= 2
        })
        .await;
    assert_eq!(ferry.delete(&format!("/uploads/{id}")).await, 204);
    // An upload that started before the delete sends its PutObject at once; none may start
    // after it, when the uploads running end (in up to 2 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = proxy.received("PutObject");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        proxy.received("PutObject"),
        sent,
        "uploads started after the job was deleted\n{}",
        ferry.log()
    );
    assert!(sent < 12, "every file was sent: the delete came too late");
}

#[tokio::test]
async fn sigterm_in_the_middle_of_uploads_exits_zero_and_the_next_start_finishes() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("f{i}.bin"), content(300 + i, 7 * MIB)))
        .collect();
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    let mut ferry = Ferry::start(&[("FERRY_CONCURRENCY", "2")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) > 0
        })
        .await;
    let status = ferry
        .terminate(Duration::from_secs(10))
        .expect("ferry exits within 10 s of SIGTERM");
    assert!(status.success(), "{status}");

    let ferry = ferry.restart().await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    for (path, data) in &files {
        assert!(
            s3.get(&format!("{id}/{path}")).await == *data,
            "{path} differs"
        );
    }
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_never_goes_back_over_a_restart_or_an_outage() {
    let s3 = S3::new_bucket().await;
    // Two parts of the 16 MiB file reach S3, the rest wait at the proxy.
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(2),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let data = content(800, 16 * MIB);
    write_file(src.path(), "big.bin", &data);
    let env = [("AWS_ENDPOINT_URL", proxy.url.as_str())];
    let mut ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let before = ferry
        .wait_for(&id, SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) >= 10 * MIB as u64
        })
        .await;
    let sent = before["uploaded_bytes"].as_u64().unwrap();
    ferry.kill9();

    // After the restart, with S3 down: the parts it holds still count.
    proxy.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let ferry = ferry.restart().await;
    // Until the attempt has failed and the file waits for its retry (PENDING), and a while
    // after.
    let deadline = std::time::Instant::now() + SETTLE;
    let mut waiting_seen = 0;
    while waiting_seen < 5 {
        let (_, job) = ferry.get(&format!("/uploads/{id}")).await;
        let now = job["uploaded_bytes"].as_u64().unwrap();
        assert!(
            now >= sent,
            "uploaded_bytes went back from {sent} to {now}: {job}"
        );
        assert!(job["progress"].as_f64().unwrap() > 0.5, "{job}");
        let files = ferry.files(&id).await;
        if files[0]["state"] == "PENDING" && !files[0]["last_error"].is_null() {
            waiting_seen += 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}
{}",
            files,
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set_faults(Faults::default());
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert!(s3.get(&format!("{id}/big.bin")).await == data);
}
