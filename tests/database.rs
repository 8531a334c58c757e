//! The database as the field breaks it: a file ferry may not write, and a disk that fills up.
//! ferry must refuse to start on the first, and through the second answer only what it stored,
//! recover by itself once there is room, and finish every job without a restart.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Ferry, MIB, NOBODY, S3, SmallDisk, content, ferry_command, is_root, write_file};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_database_file_ferry_may_not_write_stops_the_start_naming_it() {
    if !is_root() {
        eprintln!("skipped: needs root to run ferry as another user");
        return;
    }
    // A database made by a first ferry, then left to another user who may only read it.
    let mut first = Ferry::start(&[]).await;
    assert!(first.terminate(Duration::from_secs(20)).is_some());
    let dir = first.dir.clone();
    let db = first.db.clone();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();

    let cmd = ferry_command();
    let mut run = std::process::Command::new("setpriv");
    run.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
    ])
    .arg(cmd.get_program())
    .arg("serve");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    let mut child = run
        .env("FERRY_LISTEN", format!("127.0.0.1:{}", common::free_port()))
        .env("FERRY_DATABASE_URL", &db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry started and served on a database it cannot write");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("FERRY_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("readonly"), "{stderr}");
    drop(first);
}

/// Waits for `path` to answer `want`.
async fn wait_status(ferry: &Ferry, path: &str, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = ferry.get(path).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answered {status} {body}, not {want}\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_stores_nothing_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount(32) else {
        return;
    };
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write_file(src.path(), &format!("f{i:02}.txt"), &content(i, 1000));
    }
    let ferry = Ferry::start_with_db(&disk.path.join("ferry.db"), &[]).await;
    wait_status(&ferry, "/readyz", 200, Duration::from_secs(10)).await;

    disk.fill();
    let body = json!({"source_folder": src.path(), "destination_bucket": s3.bucket});
    let (status, answer) = ferry.post("/uploads/", &body).await;
    assert_eq!(status, 503, "a job that could not be stored: {answer}");
    assert_eq!(answer["error"]["code"], "database_unavailable", "{answer}");
    let (_, jobs) = ferry.get("/uploads").await;
    assert_eq!(jobs, json!([]), "nothing was stored, nothing is listed");
    let ready = wait_status(&ferry, "/readyz", 503, Duration::from_secs(10)).await;
    assert_eq!(ready["error"]["code"], "database_unavailable", "{ready}");

    // Room again: no restart, and the same request now succeeds.
    disk.free();
    wait_status(&ferry, "/readyz", 200, Duration::from_secs(10)).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(job["completed_files"], 20);

    // Full again while files keep arriving: every change asks for a scan, and each scan fails.
    // The job's scans back off (2 s, then 4 s) instead of failing at every notification.
    disk.fill();
    let failed_before = ferry.log().matches("\"scan failed\"").count();
    for i in 0..25 {
        write_file(
            src.path(),
            &format!("late-{i:02}.txt"),
            &content(100 + i, 500),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = ferry.log().matches("\"scan failed\"").count() - failed_before;
    assert!(
        (1..=4).contains(&failed),
        "{failed} failed scans in 5 s of a full disk (one per notification would be about 25)"
    );
    disk.free();
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && j["completed_files"] == 45
        })
        .await;
    assert_eq!(job["in_progress_files"], 0, "{job}");
    assert!(
        !ferry.log().contains("non-zero transaction depth"),
        "the writer stayed broken after the disk filled:\n{}",
        ferry.log()
    );
}

/// One mixed job (small files, files on part boundaries, multipart files) while the
/// database's disk fills at a given moment and is given back `hold` later.
async fn job_through_a_full_disk(point: usize, fill_at: f64, hold: Duration) -> String {
    let disk = SmallDisk::mount(48).expect("root, checked by the caller");
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("small/s{i:02}.txt"),
                content(i, 300 + i as usize * 37),
            )
        })
        .collect();
    files.push(("empty".into(), Vec::new()));
    files.push(("edge/exactly-5MiB".into(), content(90, 5 * MIB)));
    files.push(("edge/5MiB-plus-1".into(), content(91, 5 * MIB + 1)));
    files.push(("big/a.bin".into(), content(92, 11 * MIB + 7)));
    files.push(("big/b.bin".into(), content(93, 16 * MIB)));
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    // Slow enough that a fill lands mid-job: two files at a time.
    let ferry = Ferry::start_with_db(
        &disk.path.join("ferry.db"),
        &[("FERRY_CONCURRENCY", "2"), ("FERRY_MAX_ATTEMPTS", "3")],
    )
    .await;

    let body = json!({"source_folder": src.path(), "destination_bucket": s3.bucket});
    let id = if fill_at == 0.0 {
        // The very first write: the job's creation.
        disk.fill();
        let (status, answer) = ferry.post("/uploads/", &body).await;
        assert_eq!(status, 503, "point {point}: {answer}");
        tokio::time::sleep(hold).await;
        disk.free();
        ferry.create_job(src.path(), &s3.bucket, None).await
    } else {
        let id = ferry.create_job(src.path(), &s3.bucket, None).await;
        let threshold = (total as f64 * fill_at) as u64;
        let seen = ferry
            .wait_for(&id, SETTLE, |j| {
                j["uploaded_bytes"].as_u64().unwrap_or(0) >= threshold || j["state"] == "COMPLETED"
            })
            .await;
        disk.fill();
        // While full, what is reported never goes back and never claims what is not stored.
        let until = Instant::now() + hold;
        let mut last = seen["completed_files"].as_u64().unwrap_or(0);
        while Instant::now() < until {
            let (status, job) = ferry.get(&format!("/uploads/{id}")).await;
            if status == 200 {
                let done = job["completed_files"].as_u64().unwrap();
                assert!(done >= last, "point {point}: completed went back: {job}");
                last = done;
                // No file is left IN_PROGRESS beyond the two slots.
                let running = job["in_progress_files"].as_u64().unwrap();
                assert!(
                    running <= 2,
                    "point {point}: {running} files IN_PROGRESS: {job}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        disk.free();
        id
    };
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(
        job["state"],
        "COMPLETED",
        "point {point}: {job}\n{}",
        ferry.log()
    );
    assert_eq!(job["completed_files"], files.len(), "point {point}");
    for (path, data) in &files {
        assert!(
            s3.get(&format!("{id}/{path}")).await == *data,
            "point {point}: {path} differs"
        );
    }
    s3.expect_no_open_uploads(Duration::from_secs(30)).await;
    let log = ferry.log();
    assert!(
        !log.contains("non-zero transaction depth"),
        "point {point}: the writer stayed broken:\n{log}"
    );
    let full = log.matches("full").count();
    format!(
        "point {point} (fill at {fill_at:.2} of the bytes): COMPLETED, {full} log lines of a full disk"
    )
}

#[tokio::test]
async fn a_job_finishes_right_whenever_the_database_disk_fills() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    // The job's life from its creation to its last file, in eleven points.
    let points = [0.0, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95];
    let mut report = Vec::new();
    for (i, at) in points.iter().enumerate() {
        let line = job_through_a_full_disk(i, *at, Duration::from_millis(1500)).await;
        eprintln!("{line}");
        report.push(line);
    }
    eprintln!("{}", report.join("\n"));
}
