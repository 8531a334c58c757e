//! How many files upload at once, and how fast: the adaptive concurrency backs off when the
//! store answers 503 SlowDown (seen at the wire, through the fault proxy), FERRY_CONCURRENCY pins
//! it, and FERRY_MAX_BANDWIDTH paces bodies without changing a byte. No timing is asserted: the
//! machines are noisy (the rates are in BENCHMARKS.md). Jobs share the slots in turns.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, eventually, write_file};

/// Files of 1 KiB, enough that a job outlasts a few of the controller's windows behind a slow
/// proxy.
fn small_files(count: usize) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    for i in 0..count {
        write_file(
            src.path(),
            &format!("d{}/f{i:05}.txt", i % 10),
            &content(i as u64, 1024),
        );
    }
    src
}

async fn gauge(ferry: &Ferry, name: &str) -> f64 {
    ferry
        .metric(name)
        .await
        .unwrap_or_else(|| panic!("/metrics has no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_from_the_store_lowers_the_uploads_in_flight() {
    let s3 = S3::new_bucket().await;
    // Every request takes 60 ms: many files in flight pay, and the wire shows how many.
    let slow = Faults {
        delay: Some(Duration::from_millis(60)),
        ..Faults::default()
    };
    let proxy = Proxy::with_faults(slow.clone()).await;
    let src = small_files(4000);
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_SETTLE_TIME", "0s"),
    ])
    .await;
    // The default: adaptive, from 128.
    assert_eq!(gauge(&ferry, "ferry_upload_concurrency").await, 128.0);
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;

    // Before any push-back, the uploads fill the slots.
    assert!(
        eventually(Duration::from_secs(60), || async {
            proxy.take_peak_data_in_flight() >= 48
        })
        .await,
        "the wire never saw many uploads at once\n{}",
        ferry.log()
    );
    let before = gauge(&ferry, "ferry_upload_concurrency").await;
    assert!(before >= 128.0, "{before}");

    // Now every other PutObject is answered 503 SlowDown.
    proxy.set_faults(Faults {
        fail_every: Some((2, 503, "SlowDown")),
        ..slow.clone()
    });
    assert!(
        eventually(Duration::from_secs(30), || async {
            gauge(&ferry, "ferry_upload_concurrency").await <= before / 4.0
        })
        .await,
        "the limit did not come down: {}\n{}",
        gauge(&ferry, "ferry_upload_concurrency").await,
        ferry.log()
    );
    assert!(gauge(&ferry, "ferry_s3_pushback_total").await >= 1.0);
    // At the wire: once the uploads begun under the old limit have ended, fewer go at once.
    let lowered = gauge(&ferry, "ferry_upload_concurrency").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.take_peak_data_in_flight();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peak = proxy.take_peak_data_in_flight();
    let limit_now = gauge(&ferry, "ferry_upload_concurrency").await;
    assert!(
        peak <= lowered.max(limit_now) as u64 && (peak as f64) < before / 2.0,
        "{peak} uploads at once at the wire under a limit of {lowered} (now {limit_now}), {before} before"
    );

    // The store recovers: the job ends with every file, none failed for the push-back.
    proxy.set_faults(slow);
    let job = ferry.wait_settled(&id, Duration::from_secs(240)).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["completed_files"], 4000);
    assert_eq!(s3.keys().await.len(), 4000);
    assert!(ferry.log().contains("fewer files upload at once"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_concurrency_is_kept_whatever_the_store_says() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        delay: Some(Duration::from_millis(20)),
        fail_every: Some((3, 503, "SlowDown")),
        ..Faults::default()
    })
    .await;
    let src = small_files(300);
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "3"),
        ("FERRY_SETTLE_TIME", "0s"),
    ])
    .await;
    assert_eq!(gauge(&ferry, "ferry_upload_concurrency").await, 3.0);
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        peak = peak.max(proxy.take_peak_data_in_flight());
        let (_, job) = ferry.get(&format!("/uploads/{id}")).await;
        if job["state"] == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "{job}\n{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        peak <= 3,
        "{peak} uploads at once under FERRY_CONCURRENCY=3"
    );
    assert!(gauge(&ferry, "ferry_s3_pushback_total").await >= 1.0);
    assert_eq!(gauge(&ferry, "ferry_upload_concurrency").await, 3.0);
    assert_eq!(s3.keys().await.len(), 300);
}

/// The cap changes how fast bytes go, never which: objects sent through paced bodies, single
/// and multipart, with checksums and with signed payloads, are byte for byte the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_cap_paces_bodies_without_changing_them() {
    for checksum in ["crc32c", "none"] {
        let s3 = S3::new_bucket().await;
        let src = tempfile::tempdir().unwrap();
        let big = content(11, 6 * MIB + 12_345); // two parts
        write_file(src.path(), "big.bin", &big);
        let smalls: Vec<Vec<u8>> = (0..20).map(|i| content(100 + i, 40_000)).collect();
        for (i, data) in smalls.iter().enumerate() {
            write_file(src.path(), &format!("small/{i}.bin"), data);
        }
        let ferry = Ferry::start(&[
            ("FERRY_MAX_BANDWIDTH", "8MiB"),
            ("FERRY_CHECKSUM", checksum),
            ("FERRY_SETTLE_TIME", "0s"),
        ])
        .await;
        assert_eq!(
            gauge(&ferry, "ferry_max_bandwidth_bytes_per_second").await,
            (8 * MIB) as f64
        );
        let id = ferry.create_job(src.path(), &s3.bucket, None).await;
        let job = ferry.wait_settled(&id, Duration::from_secs(120)).await;
        assert_eq!(
            job["state"],
            "COMPLETED",
            "{checksum}: {job}\n{}",
            ferry.log()
        );
        assert_eq!(s3.get(&format!("{id}/big.bin")).await, big, "{checksum}");
        for (i, data) in smalls.iter().enumerate() {
            assert_eq!(&s3.get(&format!("{id}/small/{i}.bin")).await, data);
        }
        assert_eq!(
            gauge(&ferry, "ferry_uploaded_bytes_total").await,
            (big.len() + 20 * 40_000) as f64
        );
    }
}

/// Jobs take turns at the slots: a job of a few files created while one of many uploads is done
/// long before it, not after its last file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_few_files_is_not_held_back_by_one_of_many() {
    let s3 = S3::new_bucket().await;
    // 30 ms a request and four at once: the large job takes seconds, whatever the machine.
    let proxy = Proxy::with_faults(Faults {
        delay: Some(Duration::from_millis(30)),
        ..Faults::default()
    })
    .await;
    let many = small_files(600);
    let few = small_files(5);
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "4"),
        ("FERRY_SETTLE_TIME", "0s"),
    ])
    .await;
    let large = ferry.create_job(many.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&large, Duration::from_secs(60), |job| {
            job["completed_files"].as_u64() >= Some(10)
        })
        .await;
    let small = ferry.create_job(few.path(), &s3.bucket, None).await;
    let done = ferry.wait_settled(&small, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let (_, large_then) = ferry.get(&format!("/uploads/{large}")).await;
    let uploaded = large_then["completed_files"].as_u64().unwrap();
    assert!(
        uploaded < 400,
        "the job of 5 files ended only after {uploaded} of the other's 600"
    );
    let job = ferry.wait_settled(&large, Duration::from_secs(240)).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(s3.keys().await.len(), 605);
}

#[tokio::test]
async fn a_job_whose_store_hangs_does_not_hold_back_the_scans_of_others() {
    let hung = S3::new_bucket().await;
    let fine = S3::new_bucket().await;
    // Every request to the first job's bucket hangs: its scan waits on the bucket's check (sent
    // beside its walk) for the SDK's 60 s read timeout, and its uploads hang as long. Scans one at
    // a time would keep the second job waiting as long.
    let proxy = Proxy::with_faults(Faults {
        hang_bucket: Some(hung.bucket.clone()),
        ..Faults::default()
    })
    .await;
    let src = small_files(3);
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_SETTLE_TIME", "0s"),
    ])
    .await;
    let stuck = ferry.create_job(src.path(), &hung.bucket, None).await;
    assert!(
        eventually(Duration::from_secs(30), || {
            let seen = proxy.received("HeadBucket") > 0;
            async move { seen }
        })
        .await,
        "the hung bucket's check was never sent"
    );
    let other = ferry.create_job(src.path(), &fine.bucket, None).await;
    let done = ferry.wait_settled(&other, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(fine.keys().await.len(), 3);
    let (_, waiting) = ferry.get(&format!("/uploads/{stuck}")).await;
    assert!(
        matches!(waiting["state"].as_str(), Some("PENDING" | "IN_PROGRESS"))
            && waiting["completed_files"] == 0,
        "the hung job is still waiting on its store: {waiting}"
    );
    assert!(hung.keys().await.is_empty());
}
