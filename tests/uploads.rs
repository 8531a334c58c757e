//! Files go from a folder to S3, byte for byte, at `{upload_id}/{relative path}`.

mod common;

use std::time::Duration;

use common::{Ferry, MIB, S3, content, write_file};

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn nested_tree_with_odd_names_and_part_boundaries_arrives_byte_for_byte() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("top.txt", b"hello ferry\n".to_vec()),
        ("empty.bin", Vec::new()),
        ("a/b/c/deep.log", content(1, 1000)),
        ("with space/file name.txt", content(2, 10)),
        ("unicodé/ファイル-ü.txt", content(3, 33)),
        ("special/plus+percent%hash#question?.dat", content(4, 77)),
        ("exact-part.bin", content(5, 5 * MIB)),
        ("part-plus-one.bin", content(6, 5 * MIB + 1)),
        ("twelve.bin", content(7, 12 * MIB)),
    ];
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;

    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["total_files"], files.len());
    assert_eq!(job["completed_files"], files.len());
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(job["total_bytes"], total);
    assert_eq!(job["uploaded_bytes"], total);

    let mut expected_keys: Vec<String> = files.iter().map(|(p, _)| format!("{id}/{p}")).collect();
    expected_keys.sort();
    assert_eq!(s3.keys().await, expected_keys);
    for (path, data) in &files {
        let got = s3.get(&format!("{id}/{path}")).await;
        assert!(
            got == *data,
            "{path}: {} bytes in S3, {} on disk",
            got.len(),
            data.len()
        );
    }
    s3.expect_no_open_uploads(Duration::from_secs(5)).await;

    // Every tracked file says what happened to it.
    let tracked = ferry.files(&id).await;
    assert_eq!(tracked.len(), files.len());
    for f in &tracked {
        assert_eq!(f["state"], "UPLOADED", "{f}");
        assert_eq!(f["attempts"], 1, "{f}");
        assert!(f["last_error"].is_null(), "{f}");
        assert_eq!(f["key"], format!("{id}/{}", f["path"].as_str().unwrap()));
        assert!(f["mtime"].as_str().unwrap().ends_with('Z'), "{f}");
    }
    let twelve = tracked.iter().find(|f| f["path"] == "twelve.bin").unwrap();
    assert!(
        twelve["etag"].as_str().unwrap().ends_with("-3\""),
        "{twelve}"
    );
}

#[tokio::test]
async fn a_pattern_takes_only_matching_files() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for path in ["a.log", "b.txt", "x/c.log", "x/y/d.log", "x/y/e.txt"] {
        write_file(src.path(), path, path.as_bytes());
    }
    let ferry = Ferry::start(&[]).await;

    let all_logs = ferry
        .create_job(src.path(), &s3.bucket, Some("**/*.log"))
        .await;
    let top_txt = ferry
        .create_job(src.path(), &s3.bucket, Some("*.txt"))
        .await;
    for id in [&all_logs, &top_txt] {
        let job = ferry.wait_settled(id, SETTLE).await;
        assert_eq!(job["state"], "COMPLETED", "{job}");
    }
    let keys = s3.keys().await;
    let of = |id: &str| -> Vec<String> {
        keys.iter()
            .filter_map(|k| k.strip_prefix(&format!("{id}/")).map(String::from))
            .collect()
    };
    assert_eq!(of(&all_logs), vec!["a.log", "x/c.log", "x/y/d.log"]);
    // `*` does not cross '/'.
    assert_eq!(of(&top_txt), vec!["b.txt"]);
    assert_eq!(s3.get(&format!("{all_logs}/x/y/d.log")).await, b"x/y/d.log");
}

#[tokio::test]
async fn a_job_with_nothing_to_upload_is_completed_at_one() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "only.txt", b"x");
    let ferry = Ferry::start(&[]).await;
    let id = ferry
        .create_job(src.path(), &s3.bucket, Some("*.nothing"))
        .await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["total_files"], 0);
    assert!(s3.keys().await.is_empty());
}

#[tokio::test]
async fn a_missing_bucket_fails_the_job_with_the_reason_and_ferry_lives_on() {
    let s3 = S3::new_bucket().await; // a real bucket for the second job
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "f.txt", b"data");
    let ferry = Ferry::start(&[]).await;

    let missing = common::unique("no-such-bucket").to_lowercase();
    let id = ferry.create_job(src.path(), &missing, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains(&missing) && error.contains("does not exist"),
        "{error}"
    );
    assert!(job["progress"].as_f64().unwrap() < 1.0);

    // The service goes on serving, and other jobs go through.
    let (status, _) = ferry.get("/healthz").await;
    assert_eq!(status, 200);
    let ok = ferry.create_job(src.path(), &s3.bucket, None).await;
    assert_eq!(ferry.wait_settled(&ok, SETTLE).await["state"], "COMPLETED");
}

#[tokio::test]
async fn an_unreadable_file_fails_alone_with_a_clear_error() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    // ferry runs as `nobody` here when the tests run as root: it must be able to list the folder.
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write_file(src.path(), "ok.txt", b"fine");
    let locked = write_file(src.path(), "locked.txt", b"secret");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let ferry = Ferry::start_unprivileged().await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["completed_files"], 1);
    assert_eq!(job["failed_files"], 1);
    assert!(
        job["error"].is_null(),
        "one file's failure is not the job's: {job}"
    );
    let files = ferry.files(&id).await;
    let bad = files.iter().find(|f| f["path"] == "locked.txt").unwrap();
    assert_eq!(bad["state"], "FAILED");
    let error = bad["last_error"].as_str().unwrap();
    assert!(
        error.contains("cannot read") && error.contains("ermission denied"),
        "{bad}"
    );
    assert_eq!(s3.get(&format!("{id}/ok.txt")).await, b"fine");
}

#[tokio::test]
async fn a_changed_file_is_uploaded_again_to_the_same_key_after_a_rescan() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "keep.txt", b"unchanged");
    let path = write_file(src.path(), "doc.txt", b"version one");
    let gone = write_file(src.path(), "gone.txt", b"soon deleted");
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    assert_eq!(ferry.wait_settled(&id, SETTLE).await["state"], "COMPLETED");

    let (_, before) = ferry.get(&format!("/uploads/{id}")).await;
    let scanned_before = before["scanned_at"].as_str().unwrap().to_owned();
    std::fs::write(&path, b"version two, longer").unwrap();
    std::fs::remove_file(&gone).unwrap();
    write_file(src.path(), "new/added.txt", b"new file");
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/rescan"), &serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{answer}");

    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && j["scanned_at"].as_str() > Some(scanned_before.as_str())
        })
        .await;
    assert_eq!(job["total_files"], 3);
    assert_eq!(job["completed_files"], 3);
    assert_eq!(
        s3.get(&format!("{id}/doc.txt")).await,
        b"version two, longer"
    );
    assert_eq!(s3.get(&format!("{id}/new/added.txt")).await, b"new file");
    // A file deleted on disk leaves the count; its object stays.
    assert_eq!(s3.get(&format!("{id}/gone.txt")).await, b"soon deleted");
    let paths: Vec<String> = ferry
        .files(&id)
        .await
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, vec!["doc.txt", "keep.txt", "new/added.txt"]);
}

#[tokio::test]
async fn the_periodic_scan_picks_up_new_files_by_itself() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "first.txt", b"1");
    let ferry = Ferry::start(&[("FERRY_SCAN_INTERVAL", "1s")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    assert_eq!(ferry.wait_settled(&id, SETTLE).await["state"], "COMPLETED");
    write_file(src.path(), "second.txt", b"2");
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && j["completed_files"] == 2
        })
        .await;
    assert_eq!(s3.get(&format!("{id}/second.txt")).await, b"2");
}

#[tokio::test]
async fn files_are_listed_in_pages() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write_file(src.path(), &format!("f{i}.txt"), b"x");
    }
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry.wait_settled(&id, SETTLE).await;

    let r = ferry
        .http
        .get(ferry.url(&format!("/uploads/{id}/files?limit=2")))
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    let page: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(
        link,
        format!("</uploads/{id}/files?limit=2&after=f1.txt>; rel=\"next\"")
    );
    let (_, rest) = ferry
        .get(&format!("/uploads/{id}/files?limit=10&after=f1.txt"))
        .await;
    let rest: Vec<&str> = rest
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(rest, vec!["f2.txt", "f3.txt", "f4.txt"]);
    let (_, uploaded) = ferry
        .get(&format!("/uploads/{id}/files?state=UPLOADED"))
        .await;
    assert_eq!(uploaded.as_array().unwrap().len(), 5);
    let (_, failed) = ferry
        .get(&format!("/uploads/{id}/files?state=FAILED"))
        .await;
    assert!(failed.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_file_that_vanishes_before_its_turn_leaves_the_count_and_the_job_completes() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    // One upload at a time, in name order: the big file holds the only slot for a while.
    write_file(src.path(), "a-big.bin", &content(9, 40 * MIB));
    write_file(src.path(), "b-stays.txt", b"stays");
    let doomed = write_file(src.path(), "c-vanishes.txt", b"gone soon");
    let ferry = Ferry::start(&[("FERRY_CONCURRENCY", "1")]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["total_files"] == 3 && j["in_progress_files"] == 1
        })
        .await;
    std::fs::remove_file(&doomed).unwrap();

    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(job["total_files"], 2);
    assert_eq!(job["completed_files"], 2);
    assert_eq!(s3.get(&format!("{id}/b-stays.txt")).await, b"stays");
    assert_eq!(s3.keys().await.len(), 2);
}
