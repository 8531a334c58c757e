//! Crash-safe, resumable, verified uploads, judged at the wire: a proxy between ferry and
//! LocalStack counts the S3 requests and injects faults.

mod common;

use std::time::Duration;

use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, s3_endpoint, write_file};

const SETTLE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_killed_midway_resumes_at_part_granularity() {
    let s3 = S3::new_bucket().await;
    // The parts after the eighth wait at the proxy, so that the kill lands with some parts done
    // and some not, however slow the machine; ListParts pages of 3 parts, so that resuming must
    // follow the pages.
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(8),
        list_parts_page: Some(3),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let data = content(42, 100 * MIB);
    let parts = 20; // 100 MiB in 5 MiB parts
    write_file(src.path(), "big.bin", &data);
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "1"),
    ];
    let mut ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let before = ferry
        .wait_for(&id, SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) >= 8 * 5 * MIB as u64
        })
        .await;
    ferry.kill9();
    assert_ne!(before["state"], "COMPLETED");
    let sent_before_kill = proxy.received("UploadPart");
    proxy.release_held_parts();

    let ferry = ferry.restart().await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert!(
        s3.get(&format!("{id}/big.bin")).await == data,
        "the object differs from the file"
    );

    // At the wire: one multipart upload, resumed; every part sent once, but for the one that was
    // in flight when the process died.
    let sent = proxy.received("UploadPart");
    assert_eq!(
        proxy.received("CreateMultipartUpload"),
        1,
        "the upload was started over"
    );
    // Up to PARTS_IN_FLIGHT parts travel at once: those may go twice, no others.
    let in_flight = ferry::engine::upload::PARTS_IN_FLIGHT as u64;
    assert!(
        (parts..=parts + in_flight).contains(&sent),
        "{sent} parts sent for a {parts}-part file ({sent_before_kill} before the kill)"
    );
    assert!(
        ferry.log().contains("resuming the multipart upload"),
        "{}",
        ferry.log()
    );
    assert!(
        proxy.received("ListParts") >= 3,
        "ListParts was not paged through"
    );
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_arrive_intact_through_errors_dropped_connections_and_delays() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("large-{i}.bin"),
                content(500 + i, 12 * MIB + i as usize),
            )
        })
        .collect();
    files.extend((0..20).map(|i| {
        (
            format!("small/{i}.txt"),
            content(600 + i, 1000 + i as usize),
        )
    }));
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "3"),
    ];
    let ferry = Ferry::start(&env).await;

    for faults in [
        Faults {
            fail_every: Some((3, 503, "SlowDown")),
            drop_every: Some(7),
            delay: Some(Duration::from_millis(20)),
            ..Faults::default()
        },
        Faults {
            fail_every: Some((4, 500, "InternalError")),
            drop_every: Some(5),
            ..Faults::default()
        },
    ] {
        proxy.set_faults(faults);
        let injected_before = proxy.injected();
        let id = ferry.create_job(src.path(), &s3.bucket, None).await;
        let job = ferry.wait_settled(&id, SETTLE).await;
        assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
        assert_eq!(job["completed_files"], files.len());
        for (path, data) in &files {
            assert!(
                s3.get(&format!("{id}/{path}")).await == *data,
                "{path} differs"
            );
        }
        assert!(
            proxy.injected() - injected_before >= 10,
            "too few faults were injected to prove anything"
        );
    }
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_gone_for_twenty_seconds_twice_and_the_job_completes_after() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        part_delay: Some(Duration::from_millis(100)),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("f{i}.bin"), content(700 + i, 6 * MIB)))
        .collect();
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "1"),
    ];
    let ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;

    // First S3 refuses every connection for 20 s, then it hangs for 20 s (requests are held,
    // then answered), as a stopped and a frozen server would look from ferry.
    for (done, outage) in [
        (
            1,
            Faults {
                down: true,
                ..Faults::default()
            },
        ),
        (
            2,
            Faults {
                stall_until: Some(std::time::Instant::now() + Duration::from_secs(1000)),
                ..Faults::default()
            },
        ),
    ] {
        ferry
            .wait_for(&id, SETTLE, |j| {
                j["completed_files"].as_u64().unwrap_or(0) >= done
            })
            .await;
        let outage = Faults {
            stall_until: outage
                .stall_until
                .map(|_| std::time::Instant::now() + Duration::from_secs(20)),
            ..outage
        };
        proxy.set_faults(outage);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let (_, during) = ferry.get(&format!("/uploads/{id}")).await;
        assert_eq!(
            during["state"], "IN_PROGRESS",
            "a passing outage fails nothing: {during}"
        );
        proxy.set_faults(Faults {
            part_delay: Some(Duration::from_millis(100)),
            ..Faults::default()
        });
    }

    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    for (path, data) in &files {
        assert!(
            s3.get(&format!("{id}/{path}")).await == *data,
            "{path} differs"
        );
    }
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_changes_while_it_uploads_is_uploaded_again_as_it_is_now() {
    let s3 = S3::new_bucket().await;
    // 12 parts: the ones after the second wait at the proxy until the file is rewritten, so
    // that the rewrite lands with parts still to go, however slow the machine.
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(2),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let path = write_file(src.path(), "growing.bin", &content(1000, 60 * MIB));
    let env = [("AWS_ENDPOINT_URL", proxy.url.as_str())];
    let ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) > 0
        })
        .await;
    // Rewritten in place while its parts go up: same size, new bytes, new mtime.
    let now = content(1001, 60 * MIB);
    std::fs::write(&path, &now).unwrap();
    proxy.release_held_parts();

    let job = ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert_eq!(job["completed_files"], 1);
    assert!(
        s3.get(&format!("{id}/growing.bin")).await == now,
        "S3 holds the old or mixed bytes"
    );
    assert!(
        proxy.received("CreateMultipartUpload") >= 2,
        "the upload of the old bytes was not abandoned"
    );
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_deleted_mid_job_fails_the_job_with_the_reason() {
    let s3 = S3::new_bucket().await;
    // Every file's parts after its first wait at the proxy until the bucket is gone.
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(1),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write_file(
            src.path(),
            &format!("f{i}.bin"),
            &content(800 + i, 11 * MIB),
        );
    }
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "1"),
    ];
    let ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) > 0
        })
        .await;

    // Empty the bucket (S3 deletes only empty buckets) and delete it.
    let c = &s3.client;
    let open = c
        .list_multipart_uploads()
        .bucket(&s3.bucket)
        .send()
        .await
        .unwrap();
    for u in open.uploads() {
        let _ = c
            .abort_multipart_upload()
            .bucket(&s3.bucket)
            .key(u.key().unwrap())
            .upload_id(u.upload_id().unwrap())
            .send()
            .await;
    }
    for key in s3.keys().await {
        c.delete_object()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    c.delete_bucket().bucket(&s3.bucket).send().await.unwrap();
    proxy.release_held_parts();

    let job = ferry.wait_settled(&id, Duration::from_secs(90)).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&s3.bucket) && error.contains("does not exist"),
        "{job}"
    );
    // Nothing hangs: the service answers, and the job can be deleted.
    assert_eq!(ferry.get("/healthz").await.0, 200);
    assert_eq!(ferry.delete(&format!("/uploads/{id}")).await, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_files_are_retried_on_request() {
    let s3 = S3::new_bucket().await;
    // Every PutObject fails, so that the one attempt allowed fails.
    let proxy = Proxy::with_faults(Faults {
        fail_every: Some((1, 500, "InternalError")),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "doc.txt", b"second time lucky");
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_MAX_ATTEMPTS", "1"),
    ];
    let ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let files = ferry.files(&id).await;
    assert_eq!(files[0]["state"], "FAILED");
    assert!(
        files[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("InternalError"),
        "{}",
        files[0]
    );
    assert_eq!(files[0]["attempts"], 1);

    proxy.set_faults(Faults::default());
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/retry"), &serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["retried_files"], 1);
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(s3.get(&format!("{id}/doc.txt")).await, b"second time lucky");
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_automatically_up_to_the_limit() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        fail_every: Some((1, 503, "SlowDown")),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"patience");
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_MAX_ATTEMPTS", "3"),
    ];
    let ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    // The first attempt fails after its request retries; the file waits for its next one.
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let files = ferry.files(&id).await;
        if let Some(f) = files.first()
            && f["last_error"].is_string()
        {
            assert_eq!(f["state"], "PENDING", "a retry is pending: {f}");
            assert!(
                f["last_error"].as_str().unwrap().contains("SlowDown"),
                "{f}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt failed: {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, job) = ferry.get(&format!("/uploads/{id}")).await;
    assert_eq!(
        job["state"], "IN_PROGRESS",
        "nothing is FAILED while a retry is pending: {job}"
    );
    proxy.set_faults(Faults::default());
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(ferry.files(&id).await[0]["attempts"], 2);
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_does_not_match_what_was_sent_is_never_marked_uploaded() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "small.txt", b"small");
    write_file(src.path(), "large.bin", &content(900, 11 * MIB));
    // The checksum (the default) is checked on every object. The ETag is checked wherever it is
    // the proof: every object without a checksum (FERRY_CHECKSUM=none), and a single object whose
    // PutObject answer carries no checksum.
    let mut id = String::new();
    let mut ferry = None;
    for (faults, needle, checksum) in [
        (
            Faults {
                corrupt_etag: true,
                ..Faults::default()
            },
            "ETag",
            "none",
        ),
        (
            Faults {
                corrupt_checksum: true,
                ..Faults::default()
            },
            "checksum",
            "crc32c",
        ),
    ] {
        let env = [
            ("AWS_ENDPOINT_URL", proxy.url.as_str()),
            ("FERRY_MAX_ATTEMPTS", "2"),
            ("FERRY_CHECKSUM", checksum),
        ];
        drop(ferry.take());
        let started = ferry.insert(Ferry::start(&env).await);
        proxy.set_faults(faults);
        id = started.create_job(src.path(), &s3.bucket, None).await;
        let job = started.wait_settled(&id, SETTLE).await;
        assert_eq!(job["state"], "FAILED", "{job}");
        assert_eq!(job["completed_files"], 0);
        for f in started.files(&id).await {
            assert_eq!(f["state"], "FAILED", "{f}");
            assert_eq!(f["attempts"], 2, "{f}");
            let error = f["last_error"].as_str().unwrap();
            assert!(
                error.contains("verification failed") && error.contains(needle),
                "{f}"
            );
        }
    }
    let ferry = ferry.unwrap();

    // With a checksum, a wrong ETag alone proves nothing against the checksum S3 reports, which
    // is the check. But where S3 answers a PutObject without a checksum, the ETag is the check,
    // and a wrong one fails the object.
    for (faults, small_state) in [
        (
            Faults {
                corrupt_etag: true,
                ..Faults::default()
            },
            "UPLOADED",
        ),
        (
            Faults {
                corrupt_etag: true,
                put_answer_etag_only: true,
                ..Faults::default()
            },
            "FAILED",
        ),
    ] {
        proxy.set_faults(faults);
        let etag_only = ferry.create_job(src.path(), &s3.bucket, None).await;
        ferry.wait_settled(&etag_only, SETTLE).await;
        let states: Vec<(String, String)> = ferry
            .files(&etag_only)
            .await
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_owned(),
                    f["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("large.bin".to_owned(), "UPLOADED".to_owned()),
                ("small.txt".to_owned(), small_state.to_owned())
            ]
        );
    }

    proxy.set_faults(Faults::default());
    ferry
        .post(&format!("/uploads/{id}/retry"), &serde_json::json!({}))
        .await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    // S3 keeps a checksum of each object, and it is CRC32C (FERRY_CHECKSUM's default).
    for key in [format!("{id}/small.txt"), format!("{id}/large.bin")] {
        let head = s3
            .client
            .head_object()
            .bucket(&s3.bucket)
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert!(head.checksum_crc32_c().is_some(), "{key}: {head:?}");
    }
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

/// An object is proven by the answer that stored it (PutObject's, CompleteMultipartUpload's: the
/// ETag and checksum S3 computed from the bytes it received); HeadObject reads it back only when
/// that answer proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_is_read_back_only_when_the_answer_that_stored_it_proves_nothing() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write_file(
            src.path(),
            &format!("small-{i}.txt"),
            &content(700 + i, 3000),
        );
    }
    write_file(src.path(), "large.bin", &content(710, 6 * MIB));
    let ferry = Ferry::start(&[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;

    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(proxy.succeeded("PutObject"), 5);
    assert_eq!(proxy.succeeded("CompleteMultipartUpload"), 1);
    assert_eq!(
        proxy.received("HeadObject"),
        0,
        "every answer proved its object"
    );

    // A store that answers PutObject with the ETag alone: the ETag, an MD5, proves each small
    // object.
    proxy.set_faults(Faults {
        put_answer_etag_only: true,
        ..Faults::default()
    });
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(proxy.received("HeadObject"), 0);

    // Answers that say nothing of what was stored: each object is read back.
    proxy.set_faults(Faults {
        bare_put_answer: true,
        bare_complete_answer: true,
        ..Faults::default()
    });
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(proxy.received("HeadObject"), 6);
    for i in 0..5 {
        let key = format!("{id}/small-{i}.txt");
        assert!(s3.get(&key).await == content(700 + i, 3000), "{key}");
    }
    assert!(s3.get(&format!("{id}/large.bin")).await == content(710, 6 * MIB));
}

/// A store that neither keeps nor checks checksums (gofakes3, the server of `rclone serve s3`):
/// its answers carry none, so ferry proves every part and object by MD5 (the part's ETag, the
/// object's `md5-of-md5s-N`) instead of trusting a checksum nobody checked, and needs no
/// HeadObject for it. gofakes3 also names its CreateMultipartUpload answer's root otherwise than
/// S3, which the SDK alone would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_checksums_gets_every_part_proven_by_its_md5() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let gofakes3 = Faults {
        keeps_no_checksums: true,
        gofakes3_initiate_root: true,
        ..Faults::default()
    };
    proxy.set_faults(gofakes3.clone());
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "small.txt", &content(720, 3000));
    write_file(src.path(), "large.bin", &content(721, 23 * MIB));
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(proxy.succeeded("UploadPart"), 5);
    assert_eq!(
        proxy.received("HeadObject"),
        0,
        "the MD5s proved both objects"
    );
    assert!(s3.get(&format!("{id}/large.bin")).await == content(721, 23 * MIB));

    // The same store answering with other ETags than the bytes give: nothing is UPLOADED.
    proxy.set_faults(Faults {
        corrupt_etag: true,
        ..gofakes3
    });
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    for f in ferry.files(&id).await {
        assert_eq!(f["state"], "FAILED", "{f}");
        let error = f["last_error"].as_str().unwrap();
        assert!(
            error.contains("verification failed") && error.contains("ETag"),
            "{f}"
        );
    }
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_upload_resumable_and_the_next_start_continues_it() {
    let s3 = S3::new_bucket().await;
    // 40 slow parts, 6 in flight (PARTS_IN_FLIGHT): 10 s, more than the 5 s of grace a stop
    // gives uploads in flight.
    let proxy = Proxy::with_faults(Faults {
        part_delay: Some(Duration::from_millis(1500)),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let data = content(77, 200 * MIB);
    write_file(src.path(), "big.bin", &data);
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "1"),
    ];
    let mut ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) >= 5 * MIB as u64
        })
        .await;
    let status = ferry
        .terminate(Duration::from_secs(10))
        .expect("ferry exits within 10 s of SIGTERM");
    assert!(status.success(), "{status}");

    let ferry = ferry.restart().await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert!(
        s3.get(&format!("{id}/big.bin")).await == data,
        "the object differs"
    );
    assert_eq!(
        proxy.received("CreateMultipartUpload"),
        1,
        "the upload was started over\n{}",
        ferry.log()
    );
    assert!(
        proxy.received("UploadPart") <= 40 + ferry::engine::upload::PARTS_IN_FLIGHT as u64,
        "{} parts sent",
        proxy.received("UploadPart")
    );
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn an_orphaned_multipart_upload_under_a_job_is_aborted_at_start() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    assert_eq!(ferry.wait_settled(&id, SETTLE).await["state"], "COMPLETED");
    // As if a crash had come between CreateMultipartUpload and its record.
    s3.client
        .create_multipart_upload()
        .bucket(&s3.bucket)
        .key(format!("{id}/orphan.bin"))
        .send()
        .await
        .unwrap();
    // Someone else's upload, outside ferry's prefixes, is left alone.
    s3.client
        .create_multipart_upload()
        .bucket(&s3.bucket)
        .key("not-ferry/other.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(s3.open_multipart_uploads().await, 2);
    let ferry = ferry.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s3.open_multipart_uploads().await != 1 {
        assert!(std::time::Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = s3
        .client
        .list_multipart_uploads()
        .bucket(&s3.bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(left.uploads()[0].key(), Some("not-ferry/other.bin"));
}

/// A multipart upload killed midway resumes, with the store's ListParts broken as `quirk`
/// breaks it: one multipart upload, and no part sent twice but those in flight.
async fn resumes_at_part_granularity_despite(quirk: Faults, what: &str) {
    let r = common::scenarios::resume_after_sigkill(quirk).await;
    assert_eq!(
        r.multipart_uploads_created, 1,
        "{what}: the upload was started over"
    );
    assert!(
        r.sent_twice() <= r.in_flight,
        "{what}: {} parts sent twice, {} were in flight",
        r.sent_twice(),
        r.in_flight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reads_motos_list_parts_root() {
    resumes_at_part_granularity_despite(
        Faults {
            moto_list_parts_root: true,
            ..Faults::default()
        },
        "ListPartsResponse root (moto)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_trusts_its_records_where_listed_parts_have_no_etags() {
    resumes_at_part_granularity_despite(
        Faults {
            list_parts_without_etags: true,
            ..Faults::default()
        },
        "parts listed without ETags (s3s-fs)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_trusts_its_records_where_the_store_cannot_list_parts() {
    resumes_at_part_granularity_despite(
        Faults {
            refuse: vec![("ListParts", 405, "MethodNotAllowed")],
            ..Faults::default()
        },
        "ListParts answered 405 (s3rver)",
    )
    .await;
}
