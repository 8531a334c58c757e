//! GET /metrics: parsed as Prometheus text and checked against what a job did at the wire.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, write_file};

/// One sample per series: `name{labels}` (labels as written) to value. Fails on any line that is
/// not a comment, blank, or `series value`, and on a sample without its HELP and TYPE.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no TYPE before {line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "repeated series: {line}"
        );
    }
    samples
}

async fn scrape(ferry: &Ferry) -> HashMap<String, f64> {
    let r = ferry.http.get(ferry.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse(&r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_a_job_did() {
    let s3 = S3::new_bucket().await;
    // Every 3rd data request fails with 503 once: retries to count.
    let proxy = Proxy::with_faults(Faults {
        fail_every: Some((3, 503, "SlowDown")),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let big = content(7, 12 * MIB); // 3 parts of 5 MiB at the default part size
    write_file(src.path(), "big.bin", &big);
    for i in 0..5 {
        write_file(src.path(), &format!("small/{i}.txt"), &content(i, 1000));
    }
    let token = "metrics-token-0123456789";
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_API_TOKEN", token),
    ])
    .await;

    let before = scrape(&ferry).await; // open without the token
    assert_eq!(before["ferry_uploaded_files_total"], 0.0);
    assert_eq!(before["ferry_jobs{state=\"COMPLETED\"}"], 0.0);

    let (status, body) = {
        let r = ferry
            .http
            .post(ferry.url("/uploads"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "source_folder": src.path().to_str().unwrap(),
                "destination_bucket": s3.bucket,
            }))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 201, "{body}");
    let id = body["upload_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let m = loop {
        let m = scrape(&ferry).await;
        if m["ferry_jobs{state=\"COMPLETED\"}"] == 1.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{m:?}\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s3.keys().await.len(), 6, "{id}");

    assert_eq!(m["ferry_uploaded_files_total"], 6.0);
    assert_eq!(m["ferry_uploaded_bytes_total"], (12 * MIB + 5000) as f64);
    assert_eq!(m["ferry_parts_uploaded_total"], 3.0);
    assert_eq!(m["ferry_files{state=\"UPLOADED\"}"], 6.0);
    assert_eq!(m["ferry_queue_depth"], 0.0);
    assert_eq!(m["ferry_uploads_in_flight"], 0.0);
    assert_eq!(m["ferry_file_upload_duration_seconds_count"], 6.0);
    assert_eq!(
        m["ferry_file_upload_duration_seconds_bucket{le=\"+Inf\"}"],
        6.0
    );
    assert!(m["ferry_file_upload_duration_seconds_sum"] > 0.0);
    // 3 parts and 5 single objects each took one timed send.
    assert_eq!(m["ferry_part_upload_duration_seconds_count"], 8.0);
    assert!(m["ferry_scans_total"] >= 1.0);
    assert!(m["ferry_scan_duration_seconds_count"] >= 1.0);
    // What the proxy failed on purpose is what ferry counts as retried.
    let retried: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("ferry_s3_retries_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(retried, proxy.injected() as f64, "{m:?}");
    assert!(retried >= 2.0);
    // Retries inside a request do not fail the attempt.
    assert!(
        !m.keys()
            .any(|k| k.starts_with("ferry_upload_failures_total{")),
        "{m:?}"
    );
}

#[tokio::test]
async fn a_failed_attempt_is_counted_by_reason_and_outcome() {
    // S3 refuses every PutObject with an error that trying again cannot fix.
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        fail_every: Some((1, 400, "InvalidArgument")),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    let ferry = Ferry::start(&[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let m = scrape(&ferry).await;
    assert_eq!(
        m["ferry_upload_failures_total{reason=\"s3_refused\",outcome=\"failed\"}"], 1.0,
        "{m:?}"
    );
    assert_eq!(m["ferry_jobs{state=\"FAILED\"}"], 1.0);
    assert_eq!(m["ferry_files{state=\"FAILED\"}"], 1.0);
    assert_eq!(m["ferry_uploaded_files_total"], 0.0);
}
