//! A move and a mirror: `after_upload: delete` removes only files whose objects are verified,
//! and `prune: true` deletes the objects of files gone from disk, behind a guard that holds a
//! batch too large to be a deliberate deletion, and everything while a walk could not read.

mod common;

use std::path::Path;
use std::time::Duration;

use common::proxy::{Faults, Proxy};
use common::{Ferry, S3, chmod, condition, content, eventually, is_root, write_file};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(90);
const MIB: usize = 1024 * 1024;

/// Settings for quick tests: files go at once, scans every 2 s.
const QUICK: &[(&str, &str)] = &[("FERRY_SETTLE_TIME", "0s"), ("FERRY_SCAN_INTERVAL", "2s")];

/// The names left in a folder (not recursing).
fn names(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_move_empties_the_folder_once_every_object_is_verified() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files = [
        ("a.log", content(1, 1000)),
        ("b.log", content(2, 0)),
        ("c.log", content(3, 12 * MIB)),
        ("d.log", content(4, 70_000)),
    ];
    for (name, data) in &files {
        write_file(src.path(), name, data);
    }
    let ferry = Ferry::start(QUICK).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"after_upload": "delete"}))
        .await;
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && names(src.path()).is_empty()
        })
        .await;
    assert_eq!(job["after_upload"], "delete");
    assert_eq!(job["total_files"], 4, "moved files stay counted: {job}");
    assert_eq!(job["completed_files"], 4, "{job}");
    for (name, data) in &files {
        assert_eq!(&s3.get(&format!("{id}/{name}")).await, data, "{name}");
    }
    assert_eq!(
        ferry.metric("ferry_local_files_removed_total").await,
        Some(4.0)
    );
    for f in ferry.files(&id).await {
        assert_eq!(f["local_file"], "removed", "{f}");
    }
    // A rescan and a restart neither upload them again nor count them gone.
    let uploaded = ferry.metric("ferry_uploaded_files_total").await;
    ferry
        .post(&format!("/uploads/{id}/rescan"), &Value::Null)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ferry = ferry.restart().await;
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert_eq!(job["total_files"], 4, "{job}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ferry
            .metric("ferry_uploaded_files_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "nothing uploaded again after the restart (before: {uploaded:?})"
    );
    // A new file of the same name is a new file: uploaded, then moved too.
    write_file(src.path(), "a.log", &content(9, 500));
    assert!(
        eventually(SETTLE, || async { names(src.path()).is_empty() }).await,
        "the new a.log moved: not seen\n{}",
        ferry.log()
    );
    assert_eq!(s3.get(&format!("{id}/a.log")).await, content(9, 500));
}

#[tokio::test]
async fn a_file_rewritten_during_its_upload_is_kept_and_uploaded_again() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let path = write_file(src.path(), "big.log", &content(1, 12 * MIB));
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(1),
        ..Faults::default()
    })
    .await;
    let mut env = QUICK.to_vec();
    env.push(("AWS_ENDPOINT_URL", proxy.url.as_str()));
    let ferry = Ferry::start(&env).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"after_upload": "delete"}))
        .await;
    assert!(
        eventually(SETTLE, || async { proxy.succeeded("UploadPart") >= 1 }).await,
        "the first part: not seen\n{}",
        ferry.log()
    );
    // Rewritten while its upload is partway: the bytes sent are not the file any more.
    std::fs::write(&path, content(2, 12 * MIB + 1)).unwrap();
    proxy.release_held_parts();
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && names(src.path()).is_empty()
        })
        .await;
    assert_eq!(job["completed_files"], 1, "{job}");
    assert_eq!(
        s3.get(&format!("{id}/big.log")).await,
        content(2, 12 * MIB + 1),
        "the object is the rewritten file, removed only after its own upload"
    );
}

#[tokio::test]
async fn a_file_whose_upload_failed_stays() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "small.log", &content(1, 100));
    write_file(src.path(), "large.log", &content(2, 6 * MIB));
    // Single PUTs are refused for good; the multipart upload goes through.
    let proxy = Proxy::with_faults(Faults {
        refuse: vec![("PutObject", 400, "InvalidRequest")],
        ..Faults::default()
    })
    .await;
    let mut env = QUICK.to_vec();
    env.push(("AWS_ENDPOINT_URL", proxy.url.as_str()));
    env.push(("FERRY_MAX_ATTEMPTS", "1"));
    let ferry = Ferry::start(&env).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"after_upload": "delete"}))
        .await;
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["failed_files"], 1, "{job}");
    assert!(
        eventually(SETTLE, || async { names(src.path()) == ["small.log"] }).await,
        "the uploaded file moved: not seen\n{}",
        ferry.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(names(src.path()), ["small.log"], "the failed file stays");
    assert_eq!(
        s3.get(&format!("{id}/large.log")).await,
        content(2, 6 * MIB)
    );
}

#[tokio::test]
async fn prune_deletes_the_object_of_a_deleted_file_and_holds_an_emptied_folder() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write_file(src.path(), &format!("f{i}.txt"), &content(i, 100));
    }
    write_file(src.path(), "keep/me.txt", &content(9, 10));
    let ferry = Ferry::start(QUICK).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"prune": true}))
        .await;
    ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert_eq!(s3.keys().await.len(), 5);

    // One file deleted: its object goes.
    std::fs::remove_file(src.path().join("f0.txt")).unwrap();
    assert!(
        eventually(SETTLE, || async {
            !s3.keys().await.contains(&format!("{id}/f0.txt"))
        })
        .await,
        "f0's object pruned: not seen\n{}",
        ferry.log()
    );
    assert_eq!(s3.keys().await.len(), 4);
    let job = ferry.wait_for(&id, SETTLE, |j| j["total_files"] == 4).await;
    assert_eq!(condition(&job, "PruneHeld")["status"], "False", "{job}");

    // The folder emptied (a mount gone, say): nothing is pruned, the condition says why.
    for i in 1..4 {
        std::fs::remove_file(src.path().join(format!("f{i}.txt"))).unwrap();
    }
    std::fs::remove_dir_all(src.path().join("keep")).unwrap();
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["prunes"]["held"] == 4 && condition(j, "PruneHeld")["reason"] == "TooMany"
        })
        .await;
    let held = condition(&job, "PruneHeld");
    assert_eq!(held["status"], "True", "{job}");
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("4 of the job's 4"),
        "{held}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s3.keys().await.len(), 4, "nothing pruned without a confirm");

    // A file put back as it was is its object again; the confirm prunes the rest of that batch.
    write_file(src.path(), "keep/me.txt", &content(9, 10));
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["prunes"]["held"] == 3)
        .await;
    assert_eq!(job["total_files"], 1, "{job}");
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/prune"), &Value::Null)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["released"], 3, "{answer}");
    assert!(
        eventually(SETTLE, || async {
            s3.keys().await == [format!("{id}/keep/me.txt")]
        })
        .await,
        "the confirmed batch pruned: not seen\n{}",
        ferry.log()
    );
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["prunes"]["due"] == 0)
        .await;
    assert_eq!(condition(&job, "PruneHeld")["status"], "False", "{job}");
    assert_eq!(
        ferry
            .metric("ferry_objects_pruned_total{found_by=\"scan\"}")
            .await,
        Some(4.0)
    );
}

#[tokio::test]
async fn a_job_without_prune_refuses_the_confirm_and_keeps_objects() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", &content(1, 10));
    write_file(src.path(), "b.txt", &content(2, 10));
    let ferry = Ferry::start(QUICK).await;
    let id = ferry.create_with(src.path(), &s3.bucket, json!({})).await;
    ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    std::fs::remove_file(src.path().join("a.txt")).unwrap();
    ferry.wait_for(&id, SETTLE, |j| j["total_files"] == 1).await;
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/prune"), &Value::Null)
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "prune_off");
    assert_eq!(s3.keys().await.len(), 2, "the object stays");
}

#[tokio::test]
async fn a_folder_that_became_unreadable_prunes_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root to run ferry as another user");
        return;
    }
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    chmod(src.path(), 0o755);
    for name in ["a.txt", "b.txt", "c.txt", "sub/d.txt", "sub/e.txt"] {
        write_file(src.path(), name, &content(name.len() as u64, 50));
    }
    chmod(&src.path().join("sub"), 0o755);
    let ferry = Ferry::start_unprivileged_with(QUICK).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"prune": true}))
        .await;
    ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;

    // sub/ cannot be read any more, and a.txt is deleted: a scan that hit a walk error prunes
    // nothing at all.
    chmod(&src.path().join("sub"), 0o700);
    std::fs::remove_file(src.path().join("a.txt")).unwrap();
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["prunes"]["held"] == 1 && condition(j, "PruneHeld")["reason"] == "WalkError"
        })
        .await;
    let held = condition(&job, "PruneHeld");
    assert_eq!(held["status"], "True", "{job}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s3.keys().await.len(), 5, "nothing pruned");
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/prune"), &Value::Null)
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "walk_error");

    // Readable again: the one deleted file's object goes, and only it.
    chmod(&src.path().join("sub"), 0o755);
    assert!(
        eventually(SETTLE, || async { s3.keys().await.len() == 4 }).await,
        "a.txt pruned: not seen\n{}",
        ferry.log()
    );
    assert!(!s3.keys().await.contains(&format!("{id}/a.txt")));
}

#[tokio::test]
async fn a_file_ferry_may_not_remove_stays_uploaded_and_says_why() {
    if !is_root() {
        eprintln!("skipped: needs root to run ferry as another user");
        return;
    }
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    // Readable by `nobody`, not writable: the unlink is refused.
    chmod(src.path(), 0o755);
    write_file(src.path(), "a.log", &content(1, 100));
    let ferry = Ferry::start_unprivileged_with(QUICK).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"after_upload": "delete"}))
        .await;
    ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert!(
        eventually(SETTLE, || async {
            ferry.files(&id).await[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be removed"))
        })
        .await,
        "the refusal recorded: not seen\n{}",
        ferry.log()
    );
    assert_eq!(names(src.path()), ["a.log"], "the file stays");
    let file = &ferry.files(&id).await[0];
    assert_eq!(file["state"], "UPLOADED", "{file}");
    assert!(
        file["last_error"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{file}"
    );
    assert_eq!(s3.get(&format!("{id}/a.log")).await, content(1, 100));
    assert!(
        ferry
            .log()
            .contains("uploaded files cannot be removed from disk")
    );
}
