//! The compatibility scenario: what ferry must do on every S3 store it meets. It runs against
//! LocalStack with the other tests, and against each store of scripts/compat.sh in turn
//! (FERRY_TEST_S3_ENDPOINT), which writes the `COMPAT` lines it prints into its report.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, write_file};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(300);

fn store() -> String {
    std::env::var("FERRY_COMPAT_STORE").unwrap_or_else(|_| "localstack".into())
}

fn report(check: &str, result: &str) {
    eprintln!("COMPAT {} | {check} | {result}", store());
}

/// Names S3 allows and URLs, shells and XML do not like, empty files, and files on either side
/// of the part boundaries at the default 5 MiB.
fn awkward_tree() -> Vec<(String, Vec<u8>)> {
    let names = [
        "with space.txt",
        "ünï cödé/файл.txt",
        "plus+and%25percent&amp.txt",
        "quote'and\"double.txt",
        "semi;colon=eq,comma.txt",
        "tilde~star*paren(s).txt",
        "hash#and?question.txt",
        "emoji 🚀/中文.txt",
        "deep/a/b/c/d/e.txt",
        ".hidden",
    ];
    let mut files: Vec<(String, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), content(i as u64, 100 + i * 11)))
        .collect();
    files.push(("empty".into(), Vec::new()));
    files.push(("edge/5MiB-minus-1".into(), content(20, 5 * MIB - 1)));
    files.push(("edge/exactly-5MiB".into(), content(21, 5 * MIB)));
    files.push(("edge/5MiB-plus-1".into(), content(22, 5 * MIB + 1)));
    files.push(("edge/exactly-10MiB".into(), content(23, 10 * MIB)));
    files.push(("multipart 12MiB+3.bin".into(), content(24, 12 * MIB + 3)));
    files
}

async fn failures(ferry: &Ferry, id: &str) -> String {
    ferry
        .files(id)
        .await
        .iter()
        .filter(|f| f["state"] != "UPLOADED")
        .map(|f| format!("{}: {}", f["path"], f["last_error"]))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names_empty_files_and_part_boundaries_in_every_checksum_mode() {
    let src = tempfile::tempdir().unwrap();
    let files = awkward_tree();
    for (path, data) in &files {
        write_file(src.path(), path, data);
    }
    let mut failed = Vec::new();
    for mode in ["auto", "crc32c", "crc32", "none"] {
        let s3 = S3::new_bucket().await;
        let ferry = Ferry::start(&[("FERRY_CHECKSUM", mode), ("FERRY_MAX_ATTEMPTS", "2")]).await;
        let id = ferry.create_job(src.path(), &s3.bucket, None).await;
        let job = ferry.wait_settled(&id, SETTLE).await;
        let mut wrong = Vec::new();
        for (path, data) in &files {
            if job["state"] == "COMPLETED" && s3.get(&format!("{id}/{path}")).await != *data {
                wrong.push(path.clone());
            }
        }
        let result = if job["state"] != "COMPLETED" {
            format!("FAILED: {}", failures(&ferry, &id).await)
        } else if !wrong.is_empty() {
            format!("FAILED: objects differ: {wrong:?}")
        } else {
            let fallback = if ferry.log().contains("the store refuses checksum headers") {
                " (checksum headers refused: MD5 proofs)"
            } else {
                ""
            };
            format!("ok, {} objects byte for byte{fallback}", files.len())
        };
        report(&format!("FERRY_CHECKSUM={mode}"), &result);
        if result.starts_with("FAILED") {
            failed.push(format!("{mode}: {result}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_multipart_resumes_at_part_granularity() {
    let r = common::scenarios::resume_after_sigkill(Faults::default()).await;
    let how = if r.from_records {
        "from ferry's own part records (the store's listing is unusable)"
    } else {
        "from ListParts"
    };
    report(
        "SIGKILL mid-multipart, then resume",
        &format!(
            "{} of {} parts acknowledged before the kill, {} sent after it, {} sent twice ({} were in flight); multipart uploads created: {}; resumed {how}",
            r.acked,
            r.parts,
            r.sent_after,
            r.sent_twice(),
            r.in_flight,
            r.multipart_uploads_created
        ),
    );
    assert_eq!(
        r.multipart_uploads_created, 1,
        "the upload was started over"
    );
    assert!(
        r.sent_twice() <= r.in_flight,
        "more parts sent twice than were in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_uploaded_again() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let path = write_file(src.path(), "notes/today.txt", b"first version");
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    ferry.wait_settled(&id, SETTLE).await;
    std::fs::write(&path, b"the second, longer version").unwrap();
    ferry
        .post(&format!("/uploads/{id}/rescan"), &Value::Null)
        .await;
    let key = format!("{id}/notes/today.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.get(&key).await != b"the second, longer version" {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report("a change uploaded again", "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_leaves_no_open_multipart_upload() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(1),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "big.bin", &content(41, 12 * MIB));
    let ferry = Ferry::start(&[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let deadline = Instant::now() + SETTLE;
    while proxy.received("UploadPart") < 2 {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ferry.delete(&format!("/uploads/{id}")).await, 204);
    proxy.release_held_parts();
    if s3.lists_multipart_uploads().await {
        s3.expect_no_open_uploads(Duration::from_secs(30)).await;
        report(
            "deleting a job aborts its multipart upload",
            "ok, none left open",
        );
    } else {
        // Nothing to list: the abort at the wire is what can be seen, or ferry giving it up, in
        // /metrics, on a store that does not abort either.
        let deadline = Instant::now() + Duration::from_secs(30);
        let result = loop {
            if proxy.succeeded("AbortMultipartUpload") >= 1 {
                break "ok: the store cannot list multipart uploads (501); the abort was answered with success";
            }
            if ferry
                .metric("ferry_multipart_aborts{state=\"given_up\"}")
                .await
                == Some(1.0)
            {
                break "the store neither lists nor aborts multipart uploads (501, 405): ferry asks once, gives the abort up and reports it (ferry_multipart_aborts{state=\"given_up\"}, the job's multipart_aborts_given_up)";
            }
            assert!(Instant::now() < deadline, "no abort:\n{}", ferry.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        report("deleting a job aborts its multipart upload", result);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_notices_a_wrong_secret_where_the_store_checks_it() {
    let ferry = Ferry::start(&[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]).await;
    let (status, body) = ferry.get("/readyz").await;
    let result = match status {
        503 => {
            assert_eq!(body["error"]["code"], "s3_credentials_refused", "{body}");
            "ok: 503 s3_credentials_refused".to_owned()
        }
        200 => "the store does not check signatures: any secret is ready".to_owned(),
        other => panic!("readyz answered {other}: {body}"),
    };
    report("readiness with a wrong secret", &result);
}

/// What a store does with each object option: applies it (HeadObject or GetObjectTagging shows
/// it), takes it but drops it, or refuses it, in which case ferry must fail the file naming the
/// option, never report the job COMPLETED with objects missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_options_are_applied_or_refused_by_name() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "small.json", b"{}");
    write_file(src.path(), "big.bin", &content(51, 6 * MIB));
    let ferry = Ferry::start(&[("FERRY_MAX_ATTEMPTS", "1")]).await;
    let folder = src.path().to_str().unwrap();
    let options: [(&str, Value); 5] = [
        (
            "key_prefix, metadata and Content-Type",
            serde_json::json!({"key_prefix": "plain/x/", "metadata": {"owner": "team-a"}}),
        ),
        (
            "storage_class STANDARD_IA",
            serde_json::json!({"key_prefix": "class/", "storage_class": "STANDARD_IA"}),
        ),
        (
            "sse AES256",
            serde_json::json!({"key_prefix": "aes/", "sse": "AES256"}),
        ),
        (
            "sse aws:kms with kms_key_id",
            serde_json::json!({"key_prefix": "kms/", "sse": "aws:kms", "kms_key_id": "alias/ferry-compat"}),
        ),
        (
            "tags",
            serde_json::json!({"key_prefix": "tags/", "tags": {"team": "data"}}),
        ),
    ];
    let mut failed = Vec::new();
    for (i, (what, extra)) in options.iter().enumerate() {
        let mut body =
            serde_json::json!({"source_folder": folder, "destination_bucket": s3.bucket});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let name = format!("options-{i}");
        let (status, answer) = ferry.put(&format!("/uploads/{name}"), &body).await;
        assert_eq!(status, 201, "{answer}");
        let job = ferry.wait_settled(&name, SETTLE).await;
        let prefix = extra["key_prefix"].as_str().unwrap();
        let result = if job["state"] == "COMPLETED" {
            let mut seen = Vec::new();
            for path in ["small.json", "big.bin"] {
                let key = format!("{prefix}{path}");
                let head = s3
                    .client
                    .head_object()
                    .bucket(&s3.bucket)
                    .key(&key)
                    .send()
                    .await;
                let Ok(head) = head else {
                    failed.push(format!("{what}: COMPLETED but {key} is missing"));
                    continue;
                };
                let applied = match i {
                    0 => {
                        head.metadata()
                            .and_then(|m| m.get("owner"))
                            .map(String::as_str)
                            == Some("team-a")
                            && head.content_type()
                                == Some(if path == "big.bin" {
                                    "application/octet-stream"
                                } else {
                                    "application/json"
                                })
                    }
                    1 => head.storage_class().map(|c| c.as_str()) == Some("STANDARD_IA"),
                    2 => head.server_side_encryption().map(|c| c.as_str()) == Some("AES256"),
                    3 => head.server_side_encryption().map(|c| c.as_str()) == Some("aws:kms"),
                    _ => s3
                        .client
                        .get_object_tagging()
                        .bucket(&s3.bucket)
                        .key(&key)
                        .send()
                        .await
                        .is_ok_and(|t| {
                            t.tag_set()
                                .iter()
                                .any(|t| t.key() == "team" && t.value() == "data")
                        }),
                };
                seen.push(format!(
                    "{path} {}",
                    if applied {
                        "applied"
                    } else {
                        "taken but not applied"
                    }
                ));
            }
            format!("COMPLETED: {}", seen.join(", "))
        } else {
            let errors = failures(&ferry, &name).await;
            // Every file that did not make it says which option; a file that did carries it.
            let named = ferry.files(&name).await.iter().all(|f| {
                f["state"] == "UPLOADED"
                    || f["last_error"].as_str().is_some_and(|e| {
                        e.contains("the store refused") || e.contains("but does not keep it")
                    })
            });
            if !named {
                failed.push(format!(
                    "{what}: FAILED without naming the option: {errors}"
                ));
            }
            format!("FAILED, naming it: {errors}")
        };
        report(&format!("object option: {what}"), &result);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A change of look on objects already in the store: copied onto themselves (CopyObject),
/// retagged (PutObjectTagging), or, where the store will not, uploaded again; never an object
/// that lost its bytes, never COMPLETED without the new look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_look_restyles_the_objects_in_place() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let big = content(61, 6 * MIB);
    write_file(src.path(), "small.json", b"{}");
    write_file(src.path(), "big.bin", &big);
    let ferry = Ferry::start(&[("FERRY_MAX_ATTEMPTS", "2")]).await;
    let folder = src.path().to_str().unwrap();
    let mut body = serde_json::json!({"source_folder": folder, "destination_bucket": s3.bucket});
    let mut failed = Vec::new();
    for (generation, (what, extra)) in [
        ("upload", serde_json::json!({})),
        (
            "metadata changed",
            serde_json::json!({"metadata": {"owner": "b"}}),
        ),
        ("tags changed", serde_json::json!({"tags": {"v": "2"}})),
    ]
    .into_iter()
    .enumerate()
    {
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let copies = ferry
            .metric("ferry_objects_restyled_total{how=\"copy\"}")
            .await;
        let retags = ferry
            .metric("ferry_objects_restyled_total{how=\"tags\"}")
            .await;
        let uploads = ferry.metric("ferry_uploaded_bytes_total").await;
        let (status, answer) = ferry.put("/uploads/look", &body).await;
        assert!(status == 200 || status == 201, "{answer}");
        let job = ferry
            .wait_for("look", SETTLE, |j| {
                j["observed_generation"] == generation as u64 + 1
                    && (j["state"] == "COMPLETED" || j["state"] == "FAILED")
            })
            .await;
        if generation == 0 {
            assert_eq!(job["state"], "COMPLETED", "{job}");
            continue;
        }
        let how = if job["state"] != "COMPLETED" {
            let errors = failures(&ferry, "look").await;
            if !errors.contains("the store refused") && !errors.contains("but does not keep it") {
                failed.push(format!("{what}: FAILED without naming why: {errors}"));
            }
            format!("FAILED, naming it: {errors}")
        } else {
            let copied = ferry
                .metric("ferry_objects_restyled_total{how=\"copy\"}")
                .await
                != copies;
            let retagged = ferry
                .metric("ferry_objects_restyled_total{how=\"tags\"}")
                .await
                != retags;
            let sent = ferry.metric("ferry_uploaded_bytes_total").await != uploads;
            if s3.get("look/big.bin").await != big {
                failed.push(format!("{what}: the object lost its bytes"));
            }
            match (copied, retagged, sent) {
                (true, false, false) => "copied in place (CopyObject), no byte sent".to_owned(),
                (false, true, false) => {
                    "retagged in place (PutObjectTagging), no byte sent".to_owned()
                }
                (_, _, true) => "the store would not restyle: uploaded again".to_owned(),
                other => format!("COMPLETED, restyled as {other:?}"),
            }
        };
        report(&format!("a change of look: {what}"), &how);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// What a resync, a prune and a move ask of a store: a listing whose ETags match the answers
/// that stored the objects (or every resync would upload everything again), DeleteObject, and
/// a listing that follows pages.
#[tokio::test]
async fn resync_prune_and_move_work_on_the_store() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    let files = [
        ("a.txt", content(71, 1000)),
        ("empty", Vec::new()),
        ("multi.bin", content(72, 6 * MIB)),
        ("gone.txt", content(73, 10)),
    ];
    for (name, data) in &files {
        write_file(src.path(), name, data);
    }
    let ferry = Ferry::start(&[("FERRY_SETTLE_TIME", "0s"), ("FERRY_SCAN_INTERVAL", "2s")]).await;
    let folder = src.path().to_str().unwrap();
    let body = serde_json::json!({"source_folder": folder, "destination_bucket": s3.bucket, "prune": true});
    let (status, answer) = ferry.put("/uploads/mirror", &body).await;
    assert_eq!(status, 201, "{answer}");
    let job = ferry.wait_settled("mirror", SETTLE).await;
    assert_eq!(
        job["state"],
        "COMPLETED",
        "{}",
        failures(&ferry, "mirror").await
    );
    let in_sync = |j: &Value| {
        common::condition(j, "InSync")["status"] != "Unknown"
            && j["last_resync"]["at"] != Value::Null
    };
    ferry.post("/uploads/mirror/resync", &Value::Null).await;
    let job = ferry.wait_for("mirror", SETTLE, in_sync).await;
    let verdict = common::condition(&job, "InSync").clone();
    report(
        "resync of a fresh upload finds no drift",
        &if verdict["status"] == "True" {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", verdict["message"])
        },
    );
    assert_eq!(verdict["status"], "True", "false drift: {verdict}");

    // Drift: an object deleted behind ferry's back is put back by the next resync.
    s3.client
        .delete_object()
        .bucket(&s3.bucket)
        .key("mirror/a.txt")
        .send()
        .await
        .unwrap();
    let before = job["last_resync"]["at"].clone();
    ferry.post("/uploads/mirror/resync", &Value::Null).await;
    ferry
        .wait_for("mirror", SETTLE, |j| j["last_resync"]["at"] != before)
        .await;
    let repaired = common::eventually(SETTLE, || async {
        s3.keys().await.contains(&"mirror/a.txt".to_owned())
    })
    .await;
    report(
        "resync puts back a deleted object",
        if repaired { "ok" } else { "FAILED" },
    );
    assert!(repaired, "{}", ferry.log());
    assert_eq!(s3.get("mirror/a.txt").await, files[0].1);

    // Prune: one file of four deleted, its object goes (DeleteObject).
    std::fs::remove_file(src.path().join("gone.txt")).unwrap();
    let pruned = common::eventually(SETTLE, || async {
        !s3.keys().await.contains(&"mirror/gone.txt".to_owned())
    })
    .await;
    report(
        "prune deletes a gone file's object",
        if pruned { "ok" } else { "FAILED" },
    );
    assert!(pruned, "{}", ferry.log());

    // Move: the job moves its files from now on; a new file is uploaded, then removed.
    let mut body = body;
    body["after_upload"] = "delete".into();
    assert_eq!(ferry.put("/uploads/mirror", &body).await.0, 200);
    write_file(src.path(), "new.log", &content(74, 2000));
    let moved = common::eventually(SETTLE, || async { !src.path().join("new.log").exists() }).await;
    report(
        "a move removes the file once its object is verified",
        if moved { "ok" } else { "FAILED" },
    );
    assert!(moved, "{}", ferry.log());
    assert_eq!(s3.get("mirror/new.log").await, content(74, 2000));
}
