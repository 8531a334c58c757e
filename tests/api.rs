//! The HTTP contract: bad input gets a clear 4xx with a JSON body, and nothing is created.

mod common;

use std::time::Duration;

use common::{Ferry, S3, ferry_command};
use serde_json::{Value, json};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, needle: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_create_nothing() {
    let ferry = Ferry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    let file = common::write_file(dir.path(), "plain.txt", b"x");

    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "malformed JSON",
            "{\"source_folder\": ".into(),
            "invalid_json",
            "EOF",
        ),
        (
            "not an object",
            "[1, 2]".into(),
            "invalid_json",
            "JSON object",
        ),
        ("empty body", "".into(), "invalid_json", "source_folder"),
        (
            "missing bucket",
            json!({"source_folder": folder}).to_string(),
            "invalid_json",
            "missing field `destination_bucket`",
        ),
        (
            "missing folder",
            json!({"destination_bucket": "bucket"}).to_string(),
            "invalid_json",
            "missing field `source_folder`",
        ),
        (
            "wrong type",
            json!({"source_folder": 5, "destination_bucket": "bucket"}).to_string(),
            "invalid_json",
            "invalid type",
        ),
        (
            "unknown field",
            json!({"source_folder": folder, "destination_bucket": "bucket", "patern": "*"})
                .to_string(),
            "invalid_json",
            "unknown field `patern`",
        ),
        (
            "relative folder",
            json!({"source_folder": "data/in", "destination_bucket": "bucket"}).to_string(),
            "invalid_source_folder",
            "absolute",
        ),
        (
            "folder that does not exist",
            json!({"source_folder": "/no/such/folder/anywhere", "destination_bucket": "bucket"})
                .to_string(),
            "invalid_source_folder",
            "does not exist",
        ),
        (
            "folder that is a file",
            json!({"source_folder": file.to_str().unwrap(), "destination_bucket": "bucket"})
                .to_string(),
            "invalid_source_folder",
            "not a directory",
        ),
        (
            "uppercase bucket",
            json!({"source_folder": folder, "destination_bucket": "My_Bucket"}).to_string(),
            "invalid_bucket",
            "lowercase",
        ),
        (
            "short bucket",
            json!({"source_folder": folder, "destination_bucket": "ab"}).to_string(),
            "invalid_bucket",
            "3 to 63",
        ),
        (
            "bucket like an IP",
            json!({"source_folder": folder, "destination_bucket": "10.0.0.1"}).to_string(),
            "invalid_bucket",
            "IP address",
        ),
        (
            "invalid glob",
            json!({"source_folder": folder, "destination_bucket": "bucket", "pattern": "[a-"})
                .to_string(),
            "invalid_pattern",
            "not a valid glob",
        ),
        (
            "empty glob",
            json!({"source_folder": folder, "destination_bucket": "bucket", "pattern": ""})
                .to_string(),
            "invalid_pattern",
            "leave pattern out",
        ),
    ];
    for (what, body, code, needle) in cases {
        let (status, answer) = ferry.post_raw("/uploads/", body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_error(status, &answer, 400, code, needle);
    }

    // A body past the limit: 413, and the service is fine.
    let huge = format!(
        "{{\"source_folder\": \"{}\", \"destination_bucket\": \"bucket\"}}",
        "a".repeat(1 << 20)
    );
    let (status, answer) = ferry.post_raw("/uploads", huge).await;
    assert_error(status, &answer, 413, "payload_too_large", "larger than");

    // None of these created a job.
    let (status, jobs) = ferry.get("/uploads").await;
    assert_eq!(status, 200);
    assert_eq!(jobs, json!([]));
}

#[tokio::test]
async fn unknown_jobs_and_routes_are_404_in_json() {
    let ferry = Ferry::start(&[]).await;
    for path in [
        "/uploads/00000000-0000-0000-0000-000000000000",
        "/uploads/whatever/files",
    ] {
        let (status, body) = ferry.get(path).await;
        assert_error(status, &body, 404, "upload_not_found", "no upload job");
    }
    let (status, body) = ferry.post("/uploads/nope/rescan", &json!({})).await;
    assert_error(status, &body, 404, "upload_not_found", "nope");
    let (status, body) = ferry.post("/uploads/nope/retry", &json!({})).await;
    assert_error(status, &body, 404, "upload_not_found", "nope");
    assert_eq!(ferry.delete("/uploads/nope").await, 404);

    let (status, body) = ferry.get("/no/such/endpoint").await;
    assert_error(status, &body, 404, "not_found", "openapi.json");

    // Found by schemathesis: a limit that did not parse as u32 was silently the default.
    for limit in [
        "0",
        "10001",
        "-1",
        "abc",
        "1.5",
        "-2199023255553",
        "99999999999",
    ] {
        let (status, body) = ferry.get(&format!("/uploads/x/files?limit={limit}")).await;
        assert_error(status, &body, 400, "invalid_limit", "limit");
    }
    let (status, body) = ferry.get("/uploads/x/files?state=DONE").await;
    assert_error(status, &body, 400, "invalid_state", "UPLOADED");
}

#[tokio::test]
async fn both_post_paths_create_and_get_lists_every_job() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    common::write_file(src.path(), "f.txt", b"x");
    let ferry = Ferry::start(&[]).await;
    let body =
        json!({"source_folder": src.path().to_str().unwrap(), "destination_bucket": s3.bucket});
    let (s1, a) = ferry.post("/uploads/", &body).await;
    let (s2, b) = ferry.post("/uploads", &body).await;
    assert_eq!((s1, s2), (201, 201), "{a} {b}");
    assert_ne!(a["upload_id"], b["upload_id"]);

    let (status, jobs) = ferry.get("/uploads").await;
    assert_eq!(status, 200);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in jobs {
        for field in [
            "upload_id",
            "progress",
            "state",
            "total_files",
            "completed_files",
        ] {
            assert!(job.get(field).is_some(), "{field} missing in {job}");
        }
    }
    let id = a["upload_id"].as_str().unwrap();
    let (status, job) = ferry.get(&format!("/uploads/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["upload_id"], id);
    assert_eq!(job["source_folder"], src.path().to_str().unwrap());
    assert_eq!(job["destination_bucket"], s3.bucket.as_str());
    assert!(job["pattern"].is_null());
}

#[tokio::test]
async fn health_readiness_and_the_openapi_document() {
    let ferry = Ferry::start(&[]).await;
    let (status, body) = ferry.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    // Readiness may say 503 while S3 is slow to answer (LocalStack loads S3 on its first
    // requests, and the probe waits 1 s): it is a probe, asked again until ready.
    let mut ready = ferry.get("/readyz").await;
    for _ in 0..30 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        ready = ferry.get("/readyz").await;
    }
    let (status, body) = ready;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["s3"], "ok");

    let (status, doc) = ferry.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    // Operation ids are what generated clients name their calls: stable, whatever file the
    // handler moves to.
    for (path, method, id) in [
        ("/uploads", "post", "create_upload"),
        ("/uploads", "get", "list_uploads"),
        ("/uploads/{upload_id}", "get", "get_upload"),
        ("/uploads/{upload_id}", "put", "put_upload"),
        ("/uploads/{upload_id}", "delete", "delete_upload"),
        ("/uploads/{upload_id}/files", "get", "list_files"),
        ("/uploads/{upload_id}/rescan", "post", "rescan_upload"),
        ("/uploads/{upload_id}/retry", "post", "retry_upload"),
        ("/manifests", "get", "get_manifests"),
        ("/healthz", "get", "healthz"),
        ("/readyz", "get", "readyz"),
        ("/metrics", "get", "metrics"),
    ] {
        let op = paths.get(path).and_then(|p| p.get(method));
        assert!(
            op.is_some(),
            "{method} {path} is missing from the OpenAPI document"
        );
        assert_eq!(op.unwrap()["operationId"], format!("ferry.api.{id}"));
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["CreateUpload", "JobView", "FileView", "ErrorBody"] {
        assert!(schemas.contains_key(&format!("ferry.api.{name}")), "{name}");
    }
    let create = &paths["/uploads"]["post"];
    assert!(create["responses"].get("201").is_some(), "{create}");
    assert!(create["requestBody"].is_object(), "{create}");
}

#[tokio::test]
async fn readiness_fails_when_s3_cannot_be_reached() {
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let ferry = Ferry::start(&[("AWS_ENDPOINT_URL", dead.as_str())]).await;
    let (status, body) = ferry.get("/readyz").await;
    assert_error(status, &body, 503, "s3_unreachable", "AWS_ENDPOINT_URL");
    let (status, _) = ferry.get("/healthz").await;
    assert_eq!(status, 200);
}

#[test]
fn bad_settings_stop_the_start_with_the_variable_named() {
    for (var, value, needle) in [
        ("FERRY_CHUNK_SIZE", "1MiB", "at least 5 MiB"),
        ("FERRY_CHUNK_SIZE", "lots", "8MiB"),
        ("FERRY_CONCURRENCY", "0", "from 1 to"),
        ("FERRY_SCAN_INTERVAL", "soon", "duration"),
        ("FERRY_LISTEN", "nowhere", "IP address and port"),
        ("FERRY_LOG_FORMAT", "xml", "json or text"),
        ("FERRY_DATABASE_URL", "postgres://db", "only SQLite"),
        ("FERRY_S3_FORCE_PATH_STYLE", "perhaps", "true or false"),
        ("FERRY_MAX_ATTEMPTS", "0", "from 1 to"),
        ("FERRY_CHECKSUM", "sha1", "crc32c, crc32 or none"),
    ] {
        let out = ferry_command()
            .arg("serve")
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
        assert!(stderr.contains(needle), "{var}={value}: {stderr}");
    }
}

#[test]
fn a_missing_region_stops_the_start_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry_command()
        .arg("serve")
        .env_remove("AWS_REGION")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("FERRY_LISTEN", format!("127.0.0.1:{}", common::free_port()))
        .env("FERRY_DATABASE_URL", dir.path().join("f.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AWS_REGION"), "{stderr}");
}

#[test]
fn help_lists_every_setting_with_its_default() {
    let out = ferry_command().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (var, default) in [
        ("FERRY_LISTEN", "127.0.0.1:8080"),
        ("FERRY_DATABASE_URL", "sqlite://ferry.db"),
        ("FERRY_CHUNK_SIZE", "5MiB"),
        ("FERRY_CONCURRENCY", "5"),
        ("FERRY_SCAN_INTERVAL", "5m"),
        ("FERRY_LOG", "info"),
        ("FERRY_LOG_FORMAT", "json"),
        ("FERRY_S3_FORCE_PATH_STYLE", "false"),
        ("FERRY_MAX_ATTEMPTS", "5"),
        ("FERRY_CHECKSUM", "auto"),
        ("FERRY_SETTLE_TIME", "3s"),
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing:\n{help}"
        );
    }
    for var in [
        "FERRY_MANIFESTS_DIR",
        "FERRY_API_TOKEN",
        "FERRY_ALLOWED_ROOTS",
        "FERRY_INSECURE_LISTEN",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
    let out = ferry_command().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}

#[tokio::test]
async fn sigterm_stops_ferry_cleanly_and_quickly() {
    let mut ferry = Ferry::start(&[]).await;
    let status = ferry
        .terminate(Duration::from_secs(10))
        .expect("ferry exits within 10 s");
    assert!(status.success(), "exit status {status}\n{}", ferry.log());
    let log = ferry.log();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn logs_are_json_lines_by_default() {
    let mut ferry = Ferry::start(&[]).await;
    let _ = ferry.terminate(Duration::from_secs(10));
    let log = ferry.log();
    let mut lines = 0;
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
}

#[tokio::test]
async fn jobs_are_listed_in_pages_that_a_deleted_cursor_does_not_break() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    common::write_file(src.path(), "a.txt", b"a");
    let ferry = Ferry::start(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(ferry.create_job(src.path(), &s3.bucket, None).await);
    }
    for id in &ids {
        ferry.wait_settled(id, Duration::from_secs(60)).await;
    }
    let ids_of = |page: &Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|j| j["upload_id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Without limit or after: every job, oldest first, as before.
    let (status, all) = ferry.get("/uploads").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids_of(&all), ids);
    ids.sort();

    let r = ferry
        .http
        .get(ferry.url("/uploads?limit=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    let first: Value = r.json().await.unwrap();
    assert_eq!(ids_of(&first), ids[..2]);
    assert_eq!(
        link,
        format!("</uploads?limit=2&after={}>; rel=\"next\"", ids[1])
    );
    // A page carries the same counts as the whole list and the job's own status.
    for job in first.as_array().unwrap() {
        assert_eq!(job["state"], "COMPLETED", "{job}");
        assert_eq!(job["total_files"], 1, "{job}");
        assert_eq!(job["completed_files"], 1, "{job}");
        assert_eq!(job["progress"], 1.0, "{job}");
    }

    // The job the cursor names is deleted: the next page still starts after it.
    assert_eq!(ferry.delete(&format!("/uploads/{}", ids[1])).await, 204);
    let (status, second) = ferry
        .get(&format!("/uploads?limit=2&after={}", ids[1]))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(ids_of(&second), ids[2..4]);

    let r = ferry
        .http
        .get(ferry.url(&format!("/uploads?limit=2&after={}", ids[3])))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("link").is_none(),
        "the last page has no next"
    );
    let last: Value = r.json().await.unwrap();
    assert_eq!(ids_of(&last), ids[4..]);

    // after alone pages at the default size.
    let (status, rest) = ferry.get(&format!("/uploads?after={}", ids[0])).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(ids_of(&rest), [&ids[2..]].concat());

    for bad in ["0", "10001", "-3", "many"] {
        let (status, body) = ferry.get(&format!("/uploads?limit={bad}")).await;
        assert_error(
            status,
            &body,
            400,
            "invalid_limit",
            "limit must be from 1 to 10000",
        );
    }
}
