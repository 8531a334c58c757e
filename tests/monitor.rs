//! The file monitor: changes on disk show within a second (filesystem notifications), are
//! compared at nanosecond precision, and files still being written wait until they settle.

mod common;

use std::time::{Duration, SystemTime};

use common::proxy::{Faults, Proxy};
use common::{Ferry, S3, content, s3_endpoint, write_file};

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn new_and_changed_files_show_within_seconds_without_waiting_for_the_periodic_scan() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "first.txt", b"1");
    let ferry = Ferry::start(&[("FERRY_SCAN_INTERVAL", "1h")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    assert_eq!(ferry.wait_settled(&id, SETTLE).await["state"], "COMPLETED");

    write_file(src.path(), "deeper/second.txt", b"2");
    let job = ferry
        .wait_for(&id, Duration::from_secs(5), |j| {
            j["total_files"] == 2 && j["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["completed_files"], 2);
    assert_eq!(s3.get(&format!("{id}/deeper/second.txt")).await, b"2");

    std::fs::write(src.path().join("first.txt"), b"one, longer").unwrap();
    ferry
        .wait_for(&id, Duration::from_secs(5), |j| {
            j["state"] == "COMPLETED" && j["total_bytes"] == 12
        })
        .await;
    assert_eq!(s3.get(&format!("{id}/first.txt")).await, b"one, longer");
}

#[tokio::test]
async fn a_same_size_change_with_the_mtime_moved_by_a_millisecond_is_uploaded_again() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let path = write_file(src.path(), "same-size.bin", b"AAAAAAAA");
    let ferry = Ferry::start(&[("FERRY_SCAN_INTERVAL", "1h")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    assert_eq!(ferry.wait_settled(&id, SETTLE).await["state"], "COMPLETED");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();

    // New bytes, same size, and an mtime only 1 ms later than before.
    std::fs::write(&path, b"BBBBBBBB").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(before + Duration::from_millis(1))
        .unwrap();
    drop(file);
    ferry
        .post(&format!("/uploads/{id}/rescan"), &serde_json::json!({}))
        .await;
    let deadline = std::time::Instant::now() + SETTLE;
    while s3.get(&format!("{id}/same-size.bin")).await != b"BBBBBBBB" {
        assert!(
            std::time::Instant::now() < deadline,
            "never uploaded again\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED");
    let files = ferry.files(&id).await;
    let expected = (before + Duration::from_millis(1))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert_eq!(files[0]["mtime_ns"], expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_uploaded_once_when_it_settles() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    proxy.set_faults(Faults::default());
    let src = tempfile::tempdir().unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_SETTLE_TIME", "2s"),
    ];
    let ferry = Ferry::start(&env).await;
    // Written only once ferry is up: a start slower than the settle time (a loaded machine)
    // would otherwise leave the file quiet long enough to be uploaded before the first append.
    let path = write_file(src.path(), "app.log", b"line 0\n");
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    // Appended every 200 ms for 3 s: never quiet for the 2 s settle time.
    let mut expected = b"line 0\n".to_vec();
    for i in 1..=15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = format!("line {i}\n");
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        expected.extend_from_slice(line.as_bytes());
        let (_, job) = ferry.get(&format!("/uploads/{id}")).await;
        assert_ne!(
            job["state"], "COMPLETED",
            "uploaded while still being written: {job}"
        );
    }
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(s3.get(&format!("{id}/app.log")).await, expected);
    assert_eq!(
        proxy.received("PutObject"),
        1,
        "the log went up more than once"
    );
}

#[tokio::test]
async fn a_large_file_copied_in_slowly_is_not_shipped_half_written() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let ferry = Ferry::start(&[("FERRY_SETTLE_TIME", "1s"), ("FERRY_SCAN_INTERVAL", "1h")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry.wait_settled(&id, SETTLE).await;
    // Written in 1 MiB steps over about 2 s, as a slow copy would.
    let data = content(55, 12 * common::MIB);
    let path = src.path().join("incoming.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for chunk in data.chunks(common::MIB) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && j["total_files"] == 1
        })
        .await;
    assert_eq!(job["total_bytes"], data.len());
    assert!(s3.get(&format!("{id}/incoming.bin")).await == data);
    let files = ferry.files(&id).await;
    assert_eq!(files[0]["attempts"], 1, "{}", files[0]);
}

#[tokio::test]
async fn ferrys_own_database_in_a_source_folder_is_never_uploaded() {
    let s3 = S3::new_bucket().await;
    let ferry = Ferry::start(&[]).await;
    // The job's folder holds ferry's database (ferry.db, -wal, -shm) beside the data.
    write_file(&ferry.dir, "data/a.txt", b"a");
    let id = ferry
        .create_job(&ferry.dir, &s3.bucket, Some("{ferry.db*,data/**}"))
        .await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    // Uploads write to the database; that must not make the database a changed file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, job) = ferry.get(&format!("/uploads/{id}")).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["total_files"], 1, "{job}");
    assert_eq!(s3.keys().await, vec![format!("{id}/data/a.txt")]);
}

/// The inotify instances a process holds (each is an fd on `anon_inode:inotify`).
fn inotify_instances(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("inotify"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watcher_serves_every_job_past_the_kernels_instance_limit() {
    let s3 = S3::new_bucket().await;
    // More jobs than the kernel's default fs.inotify.max_user_instances (128); no periodic
    // scan to fall back on, so a change shows only if its folder is watched.
    let ferry = Ferry::start(&[("FERRY_SCAN_INTERVAL", "1h")]).await;
    let folders: Vec<_> = (0..140).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ids = Vec::new();
    for folder in &folders {
        ids.push(ferry.create_job(folder.path(), &s3.bucket, None).await);
    }
    for id in &ids {
        ferry.wait_settled(id, Duration::from_secs(60)).await;
    }
    assert!(
        inotify_instances(ferry.pid()) <= 1,
        "{} inotify instances for {} jobs",
        inotify_instances(ferry.pid()),
        ids.len()
    );
    let last = folders.last().unwrap();
    write_file(last.path(), "late.txt", b"seen live");
    let id = ids.last().unwrap();
    let job = ferry
        .wait_for(id, Duration::from_secs(30), |j| {
            j["completed_files"].as_u64() == Some(1)
        })
        .await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(s3.get(&format!("{id}/late.txt")).await, b"seen live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_out_of_inotify_instances_gets_a_warning_naming_the_limit_and_periodic_scans() {
    if !common::is_root() {
        eprintln!("skipped: needs root to take another user's inotify instances");
        return;
    }
    // Another program of the same user holds every inotify instance the kernel allows it
    // (fs.inotify.max_user_instances, per user).
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut hog = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/usr/bin/python3", "-c"])
        .arg(
            "import ctypes, sys, time\n\
             libc = ctypes.CDLL(None)\n\
             fds = [libc.inotify_init() for _ in range(int(sys.argv[1]))]\n\
             print(sum(fd >= 0 for fd in fds), flush=True)\n\
             time.sleep(120)",
        )
        .arg((limit + 10).to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut taken = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hog.stdout.as_mut().unwrap()),
        &mut taken,
    )
    .unwrap();
    assert!(taken.trim().parse::<usize>().unwrap() >= limit.saturating_sub(1));

    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ferry = Ferry::start_unprivileged_with(&[("FERRY_SCAN_INTERVAL", "2s")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry.wait_settled(&id, Duration::from_secs(30)).await;
    // No live changes, so the periodic scan takes the file.
    write_file(src.path(), "late.txt", b"by the periodic scan");
    let job = ferry
        .wait_for(&id, Duration::from_secs(30), |j| {
            j["completed_files"].as_u64() == Some(1)
        })
        .await;
    let _ = hog.kill();
    let _ = hog.wait();
    assert_eq!(job["state"], "COMPLETED", "{job}");
    let log = ferry.log();
    let warning = log
        .lines()
        .find(|l| l.contains("cannot create a filesystem watcher"))
        .unwrap_or_else(|| panic!("no watcher warning:\n{log}"));
    assert!(
        warning.contains(&format!(
            "fs.inotify.max_user_instances, {limit}, is reached"
        )),
        "{warning}"
    );
}
