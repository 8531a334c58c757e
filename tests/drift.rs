//! Drift repair and crashes: a resync puts back objects deleted or overwritten behind ferry's
//! back, by request and by the interval; and a SIGKILL at any moment of a move or a prune never
//! leaves a removed file without its verified object, nor deletes an object the rules did not.

mod common;

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::proxy::{Faults, Proxy};
use common::{Ferry, S3, condition, content, eventually, write_file};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(90);
const MIB: usize = 1024 * 1024;

async fn delete_object(s3: &S3, key: &str) {
    s3.client
        .delete_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
}

async fn put_object(s3: &S3, key: &str, data: Vec<u8>) {
    s3.client
        .put_object()
        .bucket(&s3.bucket)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap();
}

async fn get_or_none(s3: &S3, key: &str) -> Option<Vec<u8>> {
    let out = s3
        .client
        .get_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(out.body.collect().await.unwrap().into_bytes().to_vec())
}

/// Three files uploaded: a small one, an empty one, a multipart one.
fn three_files(src: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("a.txt", content(1, 1000)),
        ("empty.txt", content(2, 0)),
        ("big.bin", content(3, 11 * MIB)),
    ];
    for (name, data) in &files {
        write_file(src, name, data);
    }
    files
}

#[tokio::test]
async fn a_resync_puts_back_a_deleted_and_an_overwritten_object() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files = three_files(src.path());
    let ferry = Ferry::start(&[("FERRY_SETTLE_TIME", "0s")]).await;
    let id = ferry.create_with(src.path(), &s3.bucket, json!({})).await;
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    assert_eq!(condition(&job, "InSync")["status"], "Unknown", "{job}");

    // In sync: the resync finds every object as recorded.
    assert_eq!(
        ferry
            .post(&format!("/uploads/{id}/resync"), &Value::Null)
            .await
            .0,
        202
    );
    let job = ferry
        .wait_for(&id, SETTLE, |j| condition(j, "InSync")["status"] == "True")
        .await;
    let message = condition(&job, "InSync")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("3 objects listed"), "{message}");

    // Behind ferry's back: one object deleted, one overwritten with other bytes (the same
    // size), and one object ferry does not track.
    delete_object(&s3, &format!("{id}/a.txt")).await;
    put_object(&s3, &format!("{id}/big.bin"), content(99, 11 * MIB)).await;
    put_object(&s3, &format!("{id}/stray.txt"), b"not ferry's".to_vec()).await;
    let (status, answer) = ferry
        .post(&format!("/uploads/{id}/resync"), &Value::Null)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "resync_requested");
    let job = ferry
        .wait_for(&id, SETTLE, |j| condition(j, "InSync")["status"] == "False")
        .await;
    let in_sync = condition(&job, "InSync");
    assert_eq!(in_sync["reason"], "Drifted", "{job}");
    let message = in_sync["message"].as_str().unwrap();
    assert!(message.contains("1 missing and 1 changed"), "{message}");
    assert!(
        message.contains("1 objects not ferry's, left alone"),
        "{message}"
    );
    ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && j["completed_files"] == 3
        })
        .await;
    for (name, data) in &files {
        assert_eq!(
            &s3.get(&format!("{id}/{name}")).await,
            data,
            "{name} put back"
        );
    }
    assert_eq!(
        s3.get(&format!("{id}/stray.txt")).await,
        b"not ferry's",
        "left alone"
    );
    assert_eq!(
        ferry
            .metric("ferry_drift_repaired_total{kind=\"missing\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        ferry
            .metric("ferry_drift_repaired_total{kind=\"changed\"}")
            .await,
        Some(1.0)
    );
    // And in sync again.
    ferry
        .post(&format!("/uploads/{id}/resync"), &Value::Null)
        .await;
    ferry
        .wait_for(&id, SETTLE, |j| condition(j, "InSync")["status"] == "True")
        .await;
}

#[tokio::test]
async fn the_interval_repairs_drift_and_prunes_untracked_objects_of_a_mirror() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files = three_files(src.path());
    for i in 0..4 {
        write_file(src.path(), &format!("more/{i}.txt"), &content(10 + i, 64));
    }
    let ferry = Ferry::start(&[("FERRY_SETTLE_TIME", "0s"), ("FERRY_RESYNC_INTERVAL", "2s")]).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"prune": true}))
        .await;
    ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    delete_object(&s3, &format!("{id}/a.txt")).await;
    put_object(&s3, &format!("{id}/empty.txt"), b"no longer empty".to_vec()).await;
    put_object(&s3, &format!("{id}/stray.txt"), b"not ferry's".to_vec()).await;
    // Nobody asks: the interval finds all three; the untracked one goes (1 of 8 objects).
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let a = get_or_none(&s3, &format!("{id}/a.txt")).await;
        let empty = get_or_none(&s3, &format!("{id}/empty.txt")).await;
        let stray = get_or_none(&s3, &format!("{id}/stray.txt")).await;
        if a.as_deref() == Some(&files[0].1[..]) && empty == Some(Vec::new()) && stray.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drift not repaired: a={:?} empty={:?} stray={:?}\n{}",
            a.map(|a| a.len()),
            empty.map(|e| e.len()),
            stray.map(|s| s.len()),
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s3.keys().await.len(), 7);
    assert_eq!(
        ferry
            .metric("ferry_objects_pruned_total{found_by=\"resync\"}")
            .await,
        Some(1.0)
    );
}

/// Every file gone from the folder has its object, byte for byte: a move never loses a file.
async fn no_file_lost(s3: &S3, id: &str, src: &Path, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        if !src.join(name).exists() {
            let stored = get_or_none(s3, &format!("{id}/{name}")).await;
            assert_eq!(
                stored.as_ref().map(Vec::len),
                Some(data.len()),
                "{name} is gone from disk without its object"
            );
            assert!(
                stored.as_deref() == Some(&data[..]),
                "{name}: other bytes in S3"
            );
        }
    }
}

#[tokio::test]
async fn a_move_killed_at_any_moment_never_loses_a_file() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            let len = match i % 4 {
                0 => 6 * MIB,
                1 => 0,
                _ => 20_000 + i as usize * 1000,
            };
            (format!("f{i:02}.log"), content(i, len))
        })
        .collect();
    for (name, data) in &files {
        write_file(src.path(), name, data);
    }
    // One file at a time over a slow link, so that kills land between every kind of step: a
    // part sent, an object completed, its record, the unlink.
    let proxy = Proxy::with_faults(Faults {
        delay: Some(Duration::from_millis(15)),
        ..Faults::default()
    })
    .await;
    let env = [
        ("FERRY_SETTLE_TIME", "0s"),
        ("FERRY_CONCURRENCY", "1"),
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
    ];
    let mut ferry = Ferry::start(&env).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"after_upload": "delete"}))
        .await;
    let left = |src: &Path| std::fs::read_dir(src).unwrap().count();
    let mut kills = Vec::new();
    for round in 0..5usize {
        // Once the move has gone some way further, at an offset that differs each round.
        let target = 24 - 4 * (round + 1);
        let deadline = std::time::Instant::now() + SETTLE;
        while left(src.path()) > target {
            assert!(std::time::Instant::now() < deadline, "{}", ferry.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(13 * round as u64)).await;
        ferry.kill9();
        kills.push(left(src.path()));
        no_file_lost(&s3, &id, src.path(), &files).await;
        ferry = ferry.restart().await;
    }
    eprintln!("files left on disk at each kill: {kills:?}");
    let job = ferry
        .wait_for(&id, SETTLE, |j| {
            j["state"] == "COMPLETED" && std::fs::read_dir(src.path()).unwrap().next().is_none()
        })
        .await;
    assert_eq!(job["completed_files"], 24, "{job}");
    no_file_lost(&s3, &id, src.path(), &files).await;
}

#[tokio::test]
async fn prunes_killed_at_any_moment_delete_only_what_the_rules_allow() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write_file(src.path(), &format!("f{i:02}.txt"), &content(i, 100));
    }
    let proxy = Proxy::with_faults(Faults {
        delay: Some(Duration::from_millis(15)),
        ..Faults::default()
    })
    .await;
    let env = [
        ("FERRY_SETTLE_TIME", "0s"),
        ("FERRY_SCAN_INTERVAL", "1s"),
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
    ];
    let mut ferry = Ferry::start(&env).await;
    let id = ferry
        .create_with(src.path(), &s3.bucket, json!({"prune": true}))
        .await;
    ferry
        .wait_for(&id, SETTLE, |j| j["state"] == "COMPLETED")
        .await;
    // Eight of twenty deleted: within the guard, pruned, whatever kills come between.
    for i in 0..8 {
        std::fs::remove_file(src.path().join(format!("f{i:02}.txt"))).unwrap();
    }
    let kept: Vec<String> = (8..20).map(|i| format!("{id}/f{i:02}.txt")).collect();
    for round in 0..4u64 {
        if round == 0 {
            // The first kill once pruning has begun.
            while s3.keys().await.len() == 20 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100 + 150 * round)).await;
        }
        ferry.kill9();
        let keys = s3.keys().await;
        for k in &kept {
            assert!(keys.contains(k), "{k} pruned though its file is there");
        }
        ferry = ferry.restart().await;
    }
    assert!(
        eventually(SETTLE, || async { s3.keys().await == kept }).await,
        "{:?}\n{}",
        s3.keys().await,
        ferry.log()
    );
    // Then every file left deleted: held, across kills and restarts, until confirmed.
    for i in 8..20 {
        std::fs::remove_file(src.path().join(format!("f{i:02}.txt"))).unwrap();
    }
    ferry
        .wait_for(&id, SETTLE, |j| j["prunes"]["held"] == 12)
        .await;
    ferry.kill9();
    let ferry = ferry.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = ferry
        .wait_for(&id, SETTLE, |j| j["prunes"]["held"] == 12)
        .await;
    assert_eq!(condition(&job, "PruneHeld")["status"], "True", "{job}");
    assert_eq!(s3.keys().await, kept, "nothing pruned without the confirm");
    assert_eq!(
        ferry
            .post(&format!("/uploads/{id}/prune"), &Value::Null)
            .await
            .0,
        202
    );
    assert!(
        eventually(SETTLE, || async { s3.keys().await.is_empty() }).await,
        "{}",
        ferry.log()
    );
}
