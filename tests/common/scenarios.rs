//! Scenarios more than one test file runs: the same steps, judged by each test in its own way.

use std::time::Duration;

use super::proxy::{Faults, Proxy};
use super::{Ferry, MIB, S3, content, write_file};

/// What crossed the wire when a multipart upload was SIGKILLed midway and resumed.
pub struct Resumed {
    /// Parts of the file.
    pub parts: u64,
    /// Parts the store acknowledged before the kill.
    pub acked: u64,
    /// Parts sent (or held at the proxy) before the kill but not acknowledged: in flight.
    pub in_flight: u64,
    /// Parts sent after the restart.
    pub sent_after: u64,
    pub multipart_uploads_created: u64,
    /// ferry resumed from its own part records (the store's listing was unusable).
    pub from_records: bool,
}

impl Resumed {
    /// Parts sent twice: those sent after the kill beyond the ones never acknowledged.
    pub fn sent_twice(&self) -> u64 {
        self.sent_after.saturating_sub(self.parts - self.acked)
    }
}

/// A 40 MiB file (8 parts) uploaded through the proxy, killed with SIGKILL once 4 parts are in S3
/// (the others held at the proxy), then resumed by a new ferry on the same database with the
/// store answering as `quirk` says. Panics unless the job ends COMPLETED with the right bytes.
pub async fn resume_after_sigkill(quirk: Faults) -> Resumed {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(4),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let data = content(77, 40 * MIB);
    write_file(src.path(), "big.bin", &data);
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CONCURRENCY", "1"),
    ];
    let settle = Duration::from_secs(300);
    let mut ferry = Ferry::start(&env).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, settle, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) >= 4 * 5 * MIB as u64
        })
        .await;
    ferry.kill9();
    let before = proxy.received("UploadPart");
    let acked = proxy.succeeded("UploadPart");
    proxy.set_faults(quirk);
    proxy.release_held_parts();

    let ferry = ferry.restart().await;
    let job = ferry.wait_settled(&id, settle).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert!(
        s3.get(&format!("{id}/big.bin")).await == data,
        "the object differs from the file"
    );
    s3.expect_no_open_uploads(Duration::from_secs(20)).await;
    Resumed {
        parts: 8,
        acked,
        in_flight: before - acked,
        sent_after: proxy.received("UploadPart") - before,
        multipart_uploads_created: proxy.received("CreateMultipartUpload"),
        from_records: ferry
            .log()
            .contains("resuming from the parts ferry recorded"),
    }
}
