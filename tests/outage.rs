//! S3 down, hung, or refusing the credentials: an outage pauses the uploads instead of spending
//! the files' attempts, and readiness says what is wrong, quickly.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Faults, Proxy};
use common::{Ferry, S3, content, s3_endpoint, write_file};

const SETTLE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pauses_uploads_and_spends_no_attempts() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("f{i:02}.bin"), content(900 + i, 50_000)))
        .collect();
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    // One attempt per file: any attempt an outage spent would fail its file for good.
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_MAX_ATTEMPTS", "1"),
        ("FERRY_CONCURRENCY", "2"),
    ])
    .await;
    proxy.set_faults(Faults {
        delay: Some(Duration::from_millis(300)),
        ..Faults::default()
    });
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["completed_files"].as_u64().unwrap_or(0) >= 3
        })
        .await;
    proxy.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    // Down long enough that the requests' own retries give up and the breaker opens.
    let deadline = Instant::now() + SETTLE;
    while ferry.metric("ferry_s3_reachable").await != Some(0.0) {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, job) = ferry.get(&format!("/uploads/{id}")).await;
    assert_eq!(job["failed_files"], 0, "{job}");
    // Paused: once the uploads that were in flight have given up, no upload starts while S3
    // is down; only the probes ask.
    while ferry.metric("ferry_uploads_in_flight").await != Some(0.0) {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = proxy.received("PutObject");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        proxy.received("PutObject"),
        sent,
        "uploads went on while paused"
    );
    assert_eq!(ferry.metric("ferry_s3_outages_total").await, Some(1.0));

    proxy.set_faults(Faults::default());
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(job["failed_files"], 0);
    assert_eq!(ferry.metric("ferry_s3_reachable").await, Some(1.0));
    for (path, data) in &files {
        assert!(s3.get(&format!("{id}/{path}")).await == *data, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_quickly_when_s3_hangs_and_names_refused_credentials() {
    let proxy = Proxy::start(&s3_endpoint()).await;
    let ferry = Ferry::start(&[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;
    assert_eq!(ferry.get("/readyz").await.0, 200);

    proxy.set_faults(Faults {
        hang: vec!["ListBuckets"],
        ..Faults::default()
    });
    // A kubelet's probe gives up after a few seconds: the answer must come before.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let r = probe
        .get(ferry.url("/readyz"))
        .send()
        .await
        .expect("readyz answers while S3 hangs");
    assert_eq!(r.status().as_u16(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "s3_unreachable", "{body}");

    proxy.set_faults(Faults {
        refuse: vec![("ListBuckets", 403, "SignatureDoesNotMatch")],
        ..Faults::default()
    });
    let (status, body) = ferry.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "s3_credentials_refused", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AWS_SECRET_ACCESS_KEY"),
        "{body}"
    );
}
