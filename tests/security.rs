//! Nobody reads or ships what they should not: the API token, loopback by default, and the
//! allowed roots.

mod common;

use std::time::Duration;

use common::{Ferry, S3, ferry_command, free_port, write_file};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789abcdef";

async fn call(ferry: &Ferry, path: &str, auth: Option<&str>) -> (u16, Value, Option<String>) {
    let mut r = ferry.http.get(ferry.url(path));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or(Value::Null), challenge)
}

#[tokio::test]
async fn with_a_token_every_uploads_call_needs_it_and_probes_stay_open() {
    let s3 = S3::new_bucket().await;
    let ferry = Ferry::start(&[("FERRY_API_TOKEN", TOKEN)]).await;
    let bearer = format!("Bearer {TOKEN}");
    for (auth, why) in [
        (None, "no header"),
        (Some("Bearer wrong-token-0123456789abcdef"), "wrong token"),
        (Some(TOKEN), "token without Bearer"),
        (Some(&*format!("Basic {TOKEN}")), "another scheme"),
        (Some("Bearer"), "Bearer alone"),
    ] {
        for path in ["/uploads", "/uploads/x", "/uploads/x/files", "/manifests"] {
            let (status, body, challenge) = call(&ferry, path, auth).await;
            assert_eq!(status, 401, "{why} on {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{why}: {body}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
        }
    }
    let (status, _, _) = call(&ferry, "/uploads", Some(&bearer)).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&ferry, "/uploads", Some(&format!("bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "the scheme is case-insensitive");
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(call(&ferry, probe, None).await.0, 200, "{probe}");
    }
    // A POST without the token creates nothing; with it, the job goes through.
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "f.txt", b"x");
    let body =
        json!({"source_folder": src.path().to_str().unwrap(), "destination_bucket": s3.bucket});
    let r = ferry
        .http
        .post(ferry.url("/uploads"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = ferry
        .http
        .post(ferry.url("/uploads"))
        .header("authorization", &bearer)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // The token never reaches the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ferry.log().contains(TOKEN), "the token is in the log");
}

#[tokio::test]
async fn the_dashboard_is_served_without_the_token_and_carries_no_data() {
    let ferry = Ferry::start(&[("FERRY_API_TOKEN", TOKEN)]).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for from in ["/", "/ui"] {
        let r = plain.get(ferry.url(from)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 302, "{from}");
        assert_eq!(r.headers()["location"], "/ui/", "{from}");
    }
    let page = plain.get(ferry.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Upload jobs") && !html.contains(TOKEN));
    for asset in ["/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
        let r = plain.get(ferry.url(asset)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{asset}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let (status, body, _) = call(&ferry, "/ui/../uploads", None).await;
    assert_eq!(
        status, 401,
        "a path out of /ui/ is the API, behind the token: {body}"
    );
    let (status, body, _) = call(&ferry, "/ui/secrets.txt", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // The page's data still needs the token.
    assert_eq!(call(&ferry, "/uploads?limit=50", None).await.0, 401);
}

#[tokio::test]
async fn the_openapi_document_says_when_a_token_is_needed_and_never_shows_it() {
    let ferry = Ferry::start(&[("FERRY_API_TOKEN", TOKEN)]).await;
    let (status, doc, _) = call(&ferry, "/openapi.json", None).await;
    assert_eq!(status, 200, "the document is open");
    assert!(
        !doc.to_string().contains(TOKEN),
        "the token is in the document"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    let get_upload = &doc["paths"]["/uploads/{upload_id}"]["get"];
    assert!(get_upload["responses"]["401"].is_object(), "{get_upload}");

    let open = Ferry::start(&[]).await;
    let (_, doc, _) = call(&open, "/openapi.json", None).await;
    assert!(
        doc.get("security").is_none(),
        "no token, no security: {}",
        doc["security"]
    );
    assert!(doc["paths"]["/uploads"]["get"]["responses"]["401"].is_null());
}

#[test]
fn listening_beyond_loopback_is_refused_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry_command()
        .arg("serve")
        .env("FERRY_LISTEN", format!("0.0.0.0:{}", free_port()))
        .env("FERRY_DATABASE_URL", dir.path().join("f.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FERRY_LISTEN") && stderr.contains("FERRY_API_TOKEN"),
        "{stderr}"
    );
    assert!(
        stderr.contains("FERRY_INSECURE_LISTEN"),
        "the way out is named: {stderr}"
    );

    let out = ferry_command()
        .arg("serve")
        .env("FERRY_API_TOKEN", "short")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FERRY_API_TOKEN") && !stderr.contains("\"short\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_explicit_opt_out_listens_beyond_loopback() {
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut child = ferry_command()
        .arg("serve")
        .env("FERRY_LISTEN", &listen)
        .env("FERRY_INSECURE_LISTEN", "true")
        .env("FERRY_DATABASE_URL", "sqlite::memory:")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            up = r.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(up, "ferry did not start with FERRY_INSECURE_LISTEN=true");
}

#[tokio::test]
async fn source_folders_must_lie_inside_the_allowed_roots() {
    let s3 = S3::new_bucket().await;
    let base = tempfile::tempdir().unwrap();
    let allowed = base.path().join("allowed");
    let outside = base.path().join("outside");
    write_file(&allowed, "in/ok.txt", b"ok");
    write_file(&outside, "secret.txt", b"secret");
    std::os::unix::fs::symlink(&outside, allowed.join("detour")).unwrap();
    let roots = allowed.to_str().unwrap().to_owned();
    let ferry = Ferry::start(&[("FERRY_ALLOWED_ROOTS", &roots)]).await;

    let traversal = format!("{}/../outside", allowed.display());
    let detour = format!("{}/detour", allowed.display());
    for (folder, why) in [
        (outside.to_str().unwrap(), "outside"),
        (traversal.as_str(), "'..' traversal"),
        (detour.as_str(), "a symbolic link out"),
        ("/", "the root folder"),
    ] {
        let body = json!({"source_folder": folder, "destination_bucket": s3.bucket});
        let (status, answer) = ferry.post("/uploads", &body).await;
        assert_eq!(status, 403, "{why}: {answer}");
        assert_eq!(
            answer["error"]["code"], "outside_allowed_roots",
            "{why}: {answer}"
        );
    }
    let (status, answer) = ferry
        .post(
            "/uploads",
            &json!({"source_folder": "allowed/in", "destination_bucket": s3.bucket}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_source_folder"))
    );

    let inside = allowed.join("in");
    let id = ferry.create_job(&inside, &s3.bucket, None).await;
    assert_eq!(
        ferry.wait_settled(&id, Duration::from_secs(60)).await["state"],
        "COMPLETED"
    );
    assert_eq!(s3.keys().await, vec![format!("{id}/ok.txt")]);

    let bad = format!("{}/../outside", allowed.display());
    let r = ferry
        .http
        .put(ferry.url("/uploads/sneaky"))
        .body(json!({"source_folder": bad, "destination_bucket": s3.bucket}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "PUT is held to the roots too");
}

#[tokio::test]
async fn a_symbolic_link_out_of_the_source_folder_is_never_uploaded() {
    let s3 = S3::new_bucket().await;
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    write_file(&src, "real.txt", b"real");
    write_file(base.path(), "secret.txt", b"secret");
    std::os::unix::fs::symlink(base.path().join("secret.txt"), src.join("link-out.txt")).unwrap();
    std::os::unix::fs::symlink(base.path(), src.join("dir-out")).unwrap();
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(&src, &s3.bucket, None).await;
    assert_eq!(
        ferry.wait_settled(&id, Duration::from_secs(60)).await["state"],
        "COMPLETED"
    );
    assert_eq!(s3.keys().await, vec![format!("{id}/real.txt")]);
}

#[tokio::test]
async fn with_follow_symlinks_inside_links_within_the_folder_are_uploaded_and_links_out_are_not() {
    let s3 = S3::new_bucket().await;
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    write_file(&src, "real/data.txt", b"data");
    write_file(base.path(), "secret.txt", b"secret");
    std::os::unix::fs::symlink(src.join("real/data.txt"), src.join("alias.txt")).unwrap();
    std::os::unix::fs::symlink(src.join("real"), src.join("mirror")).unwrap();
    std::os::unix::fs::symlink(base.path().join("secret.txt"), src.join("link-out.txt")).unwrap();
    std::os::unix::fs::symlink(base.path(), src.join("dir-out")).unwrap();
    // A loop of links must be reported and passed over, not walked forever.
    std::os::unix::fs::symlink(&src, src.join("real/loop")).unwrap();
    let ferry = Ferry::start(&[("FERRY_FOLLOW_SYMLINKS", "inside")]).await;
    let id = ferry.create_job(&src, &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(
        s3.keys().await,
        vec![
            format!("{id}/alias.txt"),
            format!("{id}/mirror/data.txt"),
            format!("{id}/real/data.txt"),
        ]
    );
    assert_eq!(s3.get(&format!("{id}/alias.txt")).await, b"data");
}

#[tokio::test]
async fn a_file_swapped_for_a_link_out_after_the_scan_is_not_read() {
    let s3 = S3::new_bucket().await;
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    write_file(base.path(), "secret.txt", b"secret");
    // The settle time holds the upload back long enough to swap the file for a link. The file
    // is written once ferry is up, so that a slow start does not use up that time.
    let ferry = Ferry::start(&[("FERRY_SETTLE_TIME", "3s")]).await;
    write_file(&src, "report.txt", b"report");
    let id = ferry.create_job(&src, &s3.bucket, None).await;
    ferry
        .wait_for(&id, Duration::from_secs(20), |j| j["total_files"] == 1)
        .await;
    let link = src.join("report.txt");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(base.path().join("secret.txt"), &link).unwrap();
    let job = ferry.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert!(
        s3.keys().await.is_empty(),
        "the secret went up: {:?}",
        s3.keys().await
    );
}

#[tokio::test]
async fn special_files_are_skipped_without_blocking_the_scan() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "real.txt", b"real");
    // A fifo nobody writes to: opening it for reading would block forever.
    let fifo = src.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let ferry = Ferry::start(&[]).await;
    let id = ferry.create_job(src.path(), &s3.bucket, None).await;
    let job = ferry.wait_settled(&id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["total_files"], 1);
    assert_eq!(s3.keys().await, vec![format!("{id}/real.txt")]);
}

#[tokio::test]
async fn an_eight_mib_body_is_refused_with_413_and_ferry_lives_on() {
    let ferry = Ferry::start(&[]).await;
    let body = format!(
        "{{\"source_folder\": \"/tmp\", \"destination_bucket\": \"bucket\", \"pattern\": \"{}\"}}",
        "a".repeat(8 * 1024 * 1024)
    );
    let (status, answer) = ferry.post_raw("/uploads", body).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    assert_eq!(ferry.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_after_30_seconds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ferry = Ferry::start(&[]).await;
    let addr = ferry
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /uploads HTTP/1.1\r\nhost: ferry\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"source",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut answer))
        .await
        .expect("ferry never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    // ferry lives on (a new connection: the test client's pooled one has idled out meanwhile).
    let health = reqwest::get(ferry.url("/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
