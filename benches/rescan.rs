//! A no-op re-scan: N unchanged files (default 100,000; FERRY_BENCH_FILES to change it), already
//! recorded, walked and diffed again as `check_upload_job` does (the store's record of the job,
//! the streaming walk, the diff), minus the one HeadBucket. Nothing changed, so nothing is
//! written. Reports the median of 3 runs and the process's peak RSS.
//!
//!     cargo bench --bench rescan

use std::time::{Duration, Instant};

use ferry::config::DatabaseLocation;
use ferry::core::diff::{Differ, SeenFile};
use ferry::core::spec::JobSpec;
use ferry::store::Store;

#[tokio::main]
async fn main() {
    let files: usize = std::env::var("FERRY_BENCH_FILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let started = Instant::now();
    for i in 0..files {
        let folder = src.join(format!("d{:03}", i % 1000));
        if i < 1000 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        std::fs::write(folder.join(format!("file-{i}.log")), b"x").unwrap();
    }
    eprintln!(
        "created {files} files in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let store = Store::open(&DatabaseLocation::File(dir.path().join("bench.db")))
        .await
        .unwrap();
    let fields = ferry::core::spec::SpecFields {
        source_folder: src.to_str().unwrap().into(),
        destination_bucket: "bucket".into(),
        ..Default::default()
    };
    let spec = JobSpec::parse("job", &fields).unwrap();
    store.create_job("job", &spec).await.unwrap();
    // Record every file, as the first scan would.
    let mut seen = Vec::with_capacity(files);
    ferry::scan::walk(&spec, &[], ferry::core::spec::SymlinkPolicy::Never, |f| {
        seen.push(f);
        std::ops::ControlFlow::Continue(())
    });
    for batch in seen.chunks(1000) {
        store
            .apply_scan_changes("job", "bucket", batch, &[], &[], Duration::ZERO)
            .await
            .unwrap();
    }
    drop(seen);

    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let recorded = store.recorded_files("job").await.unwrap();
        let spec = spec.clone();
        let changes = tokio::task::spawn_blocking(move || {
            let mut differ = Differ::new(recorded);
            let mut n = 0usize;
            ferry::scan::walk(
                &spec,
                &[],
                ferry::core::spec::SymlinkPolicy::Never,
                |f: SeenFile| {
                    n += 1;
                    differ.observe(f);
                    std::ops::ControlFlow::Continue(())
                },
            );
            (n, differ.finish())
        })
        .await
        .unwrap();
        assert_eq!(changes.0, files);
        assert!(changes.1.is_empty(), "a no-op scan found changes");
        runs.push(started.elapsed());
    }
    runs.sort();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    println!(
        "no-op re-scan of {files} files: median {:.2} s (runs {:.2}, {:.2}, {:.2} s); peak RSS {} KiB",
        runs[1].as_secs_f64(),
        runs[0].as_secs_f64(),
        runs[1].as_secs_f64(),
        runs[2].as_secs_f64(),
        rss
    );
}
