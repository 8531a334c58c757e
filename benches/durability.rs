//! What durability costs: the per-part writes to SQLite that make a multipart upload resumable.
//!
//! The uploader records each part in one transaction before it reads the next, so the writes
//! add their whole time to an upload's wall time. This measures that time with the store as
//! `ferry serve` opens it (a file database, WAL, synchronous=NORMAL): the parts of a 1 GiB file
//! at the default 5 MiB part size, recorded one after the other. scripts/bench-durability.sh
//! sets it against the time of a real 1 GiB upload.
//!
//!     cargo bench --bench durability

use std::time::Instant;

use ferry::config::DatabaseLocation;
use ferry::core::diff::SeenFile;
use ferry::core::spec::{JobSpec, SpecFields};
use ferry::store::{OpenUpload, PartRecord, Store};

const FILE_SIZE: u64 = 1 << 30;
const PART_SIZE: u64 = 5 << 20;
const ROUNDS: usize = 5;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseLocation::File(dir.path().join("bench.db")))
        .await
        .unwrap();
    let parts = FILE_SIZE.div_ceil(PART_SIZE);
    let mut per_round = Vec::new();
    for round in 0..ROUNDS {
        let job = format!("job-{round}");
        let fields = SpecFields {
            source_folder: "/src".into(),
            destination_bucket: "bucket".into(),
            ..SpecFields::default()
        };
        store
            .create_job(&job, &JobSpec::parse(&job, &fields).unwrap())
            .await
            .unwrap();
        let file = SeenFile {
            path: "big.bin".into(),
            size: FILE_SIZE,
            mtime_ns: 1,
        };
        store
            .apply_scan_changes(&job, "bucket", &[file], &[], &[], std::time::Duration::ZERO)
            .await
            .unwrap();
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        let upload = OpenUpload {
            multipart_upload_id: format!("upload-{round}"),
            part_size: PART_SIZE,
            checksum: "crc32c".into(),
            settings: Some(claimed.object.fingerprint()),
        };
        assert!(
            store
                .set_multipart_upload(claimed.version(), &upload)
                .await
                .unwrap()
        );
        let started = Instant::now();
        for number in 1..=parts as i64 {
            let part = PartRecord {
                number,
                size: PART_SIZE as i64,
                etag: format!("\"{:032x}\"", number),
                checksum: Some("AAAAAA==".into()),
                md5: format!("{:032x}", number),
            };
            assert!(
                store
                    .record_part(claimed.version(), &upload.multipart_upload_id, &part)
                    .await
                    .unwrap()
            );
        }
        per_round.push(started.elapsed());
    }
    per_round.sort();
    let median = per_round[ROUNDS / 2];
    println!(
        "per-part writes for a 1 GiB file ({parts} parts of 5 MiB): median {:.1} ms in all, {:.3} ms a part ({ROUNDS} rounds; min {:.1} ms, max {:.1} ms)",
        median.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3 / parts as f64,
        per_round[0].as_secs_f64() * 1e3,
        per_round[ROUNDS - 1].as_secs_f64() * 1e3,
    );
    println!("DURABILITY_MS={:.1}", median.as_secs_f64() * 1e3);
}
