//! Test helpers: the real `ferry serve` binary on a free port with a fresh database, and a random
//! bucket on the real LocalStack S3 (started by scripts/localstack.sh).
//!
//! Set TEST_LOG=1 to see ferry's logs; FERRY_TEST_S3_ENDPOINT points at another S3 (default
//! http://127.0.0.1:4566).
#![allow(dead_code)]

pub mod proxy;
pub mod scenarios;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use serde_json::Value;

pub const MIB: usize = 1024 * 1024;

pub fn s3_endpoint() -> String {
    std::env::var("FERRY_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// The test S3's access key and secret (FERRY_TEST_S3_ACCESS_KEY, FERRY_TEST_S3_SECRET_KEY;
/// `test` and `test` by default, which LocalStack takes).
pub fn s3_credentials() -> (String, String) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "test".into());
    (
        var("FERRY_TEST_S3_ACCESS_KEY"),
        var("FERRY_TEST_S3_SECRET_KEY"),
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deterministic bytes that differ from file to file (so a mixed-up part shows).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_file(root: &Path, relative: &str, data: &[u8]) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    path
}

/// The test's S3: a client for LocalStack and a fresh bucket.
pub struct S3 {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl S3 {
    pub fn client() -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(s3_endpoint())
            .credentials_provider({
                let (key, secret) = s3_credentials();
                Credentials::new(key, secret, None, None, "tests")
            })
            .force_path_style(true)
            // The tests compare the bytes themselves. A store's own checksum is its to get
            // right: moto labels a CRC32 as CRC32C, and the SDK would refuse such an answer.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// A new bucket with a random name.
    pub async fn new_bucket() -> S3 {
        Self::create(&unique("ferry-test")).await
    }

    /// A new bucket of this name (lowercased, cut to S3's 63 characters).
    pub async fn create(name: &str) -> S3 {
        let client = Self::client();
        let bucket: String = name.to_lowercase().chars().take(63).collect();
        if let Err(e) = client.create_bucket().bucket(&bucket).send().await {
            panic!(
                "cannot create a bucket on {}: is LocalStack running? Start it with `scripts/localstack.sh start` or run `scripts/test.sh`.\n{}",
                s3_endpoint(),
                aws_sdk_s3::error::DisplayErrorContext(e)
            );
        }
        S3 { client, bucket }
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "GetObject {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        keys.sort();
        keys
    }

    pub async fn open_multipart_uploads(&self) -> usize {
        self.client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    }

    /// Whether the store lists open multipart uploads at all (s3s-fs and s3rver answer 501).
    pub async fn lists_multipart_uploads(&self) -> bool {
        match self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                e.code() != Some("NotImplemented")
            }
        }
    }

    /// Waits until no multipart upload is open in the bucket; panics after `within`. On a store
    /// that cannot list them there is nothing to see, and it says so.
    pub async fn expect_no_open_uploads(&self, within: Duration) {
        if !self.lists_multipart_uploads().await {
            eprintln!("the store cannot list multipart uploads: none to check");
            return;
        }
        let deadline = Instant::now() + within;
        loop {
            let open = self.open_multipart_uploads().await;
            if open == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{open} multipart uploads still open in {}",
                self.bucket
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A running `ferry serve`.
pub struct Ferry {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    pub db: PathBuf,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn ferry_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    // Nothing from the developer's environment leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let (key, secret) = s3_credentials();
    cmd.env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("FERRY_S3_FORCE_PATH_STYLE", "true")
        // Files written by a test are complete: no need to wait for them to settle (the settle
        // tests set their own).
        .env("FERRY_SETTLE_TIME", "0s")
        .env("FERRY_LOG", "info,ferry=debug");
    cmd
}

impl Ferry {
    /// Starts ferry with a fresh database and these extra settings.
    pub async fn start(env: &[(&str, &str)]) -> Ferry {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Self::spawn(dir.clone(), dir.join("ferry.db"), owned(env), Some(tmp)).await
    }

    /// Starts ferry with its database at `db` (on a small disk, say) and its log in a folder of
    /// its own.
    pub async fn start_with_db(db: &Path, env: &[(&str, &str)]) -> Ferry {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Self::spawn(dir, db.to_path_buf(), owned(env), Some(tmp)).await
    }

    /// Starts ferry as the unprivileged user `nobody` (when the tests run as root), so that file
    /// permissions mean something to it.
    pub async fn start_unprivileged() -> Ferry {
        Self::start_unprivileged_with(&[]).await
    }

    /// As `start_unprivileged`, with these extra settings.
    pub async fn start_unprivileged_with(env: &[(&str, &str)]) -> Ferry {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        if is_root() {
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let mut env = owned(env);
        env.push(("__AS_NOBODY".to_owned(), "1".to_owned()));
        Self::spawn(dir.clone(), dir.join("ferry.db"), env, Some(tmp)).await
    }

    /// Starts another ferry on the same database and settings (after a kill or a stop).
    pub async fn restart(mut self) -> Ferry {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let tmp = self._tmp.take();
        Self::spawn(self.dir.clone(), self.db.clone(), self.env.clone(), tmp).await
    }

    async fn spawn(
        dir: PathBuf,
        db: PathBuf,
        env: Vec<(String, String)>,
        tmp: Option<tempfile::TempDir>,
    ) -> Ferry {
        // A free port can be taken by another process between our look and ferry's bind: then
        // ferry exits saying so, and another port is tried.
        let mut tmp = tmp;
        for _ in 0..5 {
            let mut ferry = Self::spawn_once(dir.clone(), db.clone(), env.clone(), tmp.take());
            if ferry.wait_healthy().await {
                return ferry;
            }
            if !ferry.log().contains("cannot listen") {
                panic!("ferry did not become healthy; its log:\n{}", ferry.log());
            }
            tmp = ferry._tmp.take();
        }
        panic!("ferry found no free port in 5 tries");
    }

    fn spawn_once(
        dir: PathBuf,
        db: PathBuf,
        env: Vec<(String, String)>,
        tmp: Option<tempfile::TempDir>,
    ) -> Ferry {
        let port = free_port();
        let as_nobody = is_root() && env.iter().any(|(k, _)| k == "__AS_NOBODY");
        let mut cmd = if as_nobody {
            let mut cmd = ferry_command();
            let program = cmd.get_program().to_owned();
            let mut wrapped = Command::new("setpriv");
            wrapped
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(program);
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            cmd = wrapped;
            cmd
        } else {
            ferry_command()
        };
        cmd.arg("serve")
            .env("FERRY_LISTEN", format!("127.0.0.1:{port}"))
            .env("FERRY_DATABASE_URL", format!("sqlite://{}", db.display()));
        for (k, v) in &env {
            cmd.env(k, v);
        }
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("ferry.log"))
                .unwrap();
            cmd.stdout(Stdio::null()).stderr(log);
        }
        let child = cmd.spawn().expect("ferry binary starts");
        Ferry {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            dir,
            db,
            env,
            _tmp: tmp,
        }
    }

    /// Whether ferry answers /healthz within 20 s (false at once if it exited).
    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ferry.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the exit, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// A JSON request; the answer's status and body (JSON, or the text as a string).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, body.to_string())
            .await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Creates a job and returns its id.
    pub async fn create_job(&self, folder: &Path, bucket: &str, pattern: Option<&str>) -> String {
        let mut body = serde_json::json!({
            "source_folder": folder.to_str().unwrap(),
            "destination_bucket": bucket,
        });
        if let Some(p) = pattern {
            body["pattern"] = p.into();
        }
        let (status, answer) = self.post("/uploads/", &body).await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["status"], "created");
        answer["upload_id"].as_str().unwrap().to_owned()
    }

    /// Creates a job with these extra spec fields (`{"prune": true}`) and returns its id.
    pub async fn create_with(&self, folder: &Path, bucket: &str, extra: Value) -> String {
        let mut body = serde_json::json!({
            "source_folder": folder.to_str().unwrap(),
            "destination_bucket": bucket,
        });
        for (k, v) in extra.as_object().expect("extra fields are an object") {
            body[k] = v.clone();
        }
        let (status, answer) = self.post("/uploads", &body).await;
        assert_eq!(status, 201, "{answer}");
        answer["upload_id"].as_str().unwrap().to_owned()
    }

    /// Polls the job until it is COMPLETED or FAILED; panics after `within`.
    pub async fn wait_settled(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, job) = self.get(&format!("/uploads/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if job["state"] == "COMPLETED" || job["state"] == "FAILED" {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not settle: {job}\nferry's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the job until `pred` holds; panics after `within`.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, job) = self.get(&format!("/uploads/{id}")).await;
            if pred(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached the expected state: {job}\nferry's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET /metrics as text ("" when it does not answer).
    pub async fn metrics_text(&self) -> String {
        match self.http.get(self.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of an unlabelled metric, or of one series written out whole
    /// (`ferry_multipart_aborts{state="given_up"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    pub async fn files(&self, id: &str) -> Vec<Value> {
        let (status, files) = self.get(&format!("/uploads/{id}/files?limit=10000")).await;
        assert_eq!(status, 200, "{files}");
        files.as_array().unwrap().clone()
    }
}

/// The uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// Sets a file's or folder's permission bits (`0o700`).
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tmpfs of its own, for a disk that fills for real. Needs root (CI runs as root); None
/// otherwise, and the test says it was skipped.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size_mib: u64) -> Option<SmallDisk> {
        if !is_root() {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {}",
            dir.path().display()
        );
        Some(SmallDisk {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Takes every byte left, as another program filling the disk would.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // The last partial block too.
        let mut small = [0u8; 512];
        small.fill(1);
        while f.write(&small).map(|n| n > 0).unwrap_or(false) {}
        let _ = f.sync_all();
    }

    /// Gives the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Whether `check` comes true within `within`, polled every 100 ms.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A condition of a job's status, by type.
pub fn condition<'a>(job: &'a Value, kind: &str) -> &'a Value {
    job["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no condition {kind} in {job}"))
}
