//! The kubectl-shaped client: `ferry apply`, `get`, `describe`, `delete`, talking to a running
//! `ferry serve` over its HTTP API. The HTTP edge is here; what is printed is in `render`.

pub mod render;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{ClientArgs, Output};
use crate::core::url::percent_encode;
use crate::manifest::{DeclaredJob, MAX_MANIFEST_BYTES, parse_file};

/// Why a client command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach ferry at {server}: {reason}; is `ferry serve` running there? (set --server or FERRY_SERVER)"
    )]
    Unreachable { server: String, reason: String },
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Input(String),
    #[error("the server answered {status} with a body that is not the expected JSON: {body}")]
    Unexpected { status: u16, body: String },
    #[error("gave up waiting after {0}: the job has not converged (see `ferry describe job`)")]
    Timeout(String),
}

type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one ferry server.
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self> {
        let server = args.server.trim_end_matches('/').to_owned();
        if !server.starts_with("http://") {
            return Err(ClientError::Input(format!(
                "--server {server:?} must be an http:// URL (ferry serves plain HTTP; put a TLS proxy's plain side here)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Input(format!("cannot build an HTTP client: {e}")))?;
        let token = std::env::var("FERRY_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        Ok(Client {
            http,
            server,
            token,
        })
    }

    /// One call; a 2xx answer's JSON body (Null for 204), or the API's error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        Ok(self.call_with_headers(method, path, body).await?.0)
    }

    async fn call_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, reqwest::header::HeaderMap)> {
        let mut req = self.http.request(method, format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            server: self.server.clone(),
            reason: root_cause(&e),
        })?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.map_err(|e| ClientError::Unreachable {
            server: self.server.clone(),
            reason: root_cause(&e),
        })?;
        if status == 204 || (text.is_empty() && (200..300).contains(&status)) {
            return Ok((Value::Null, headers));
        }
        let json: Value = serde_json::from_str(&text).map_err(|_| ClientError::Unexpected {
            status,
            body: text.chars().take(200).collect(),
        })?;
        if (200..300).contains(&status) {
            return Ok((json, headers));
        }
        let code = json["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let mut message = json["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        if status == 401 {
            message.push_str(if self.token.is_some() {
                "; FERRY_API_TOKEN holds another token than the server's"
            } else {
                "; set FERRY_API_TOKEN to the server's token"
            });
        }
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn print(output: Output, value: &Value, table: impl FnOnce() -> String) {
    let text = match output {
        Output::Table => table(),
        Output::Json => serde_json::to_string_pretty(value).expect("JSON") + "\n",
        Output::Yaml => serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# {e}\n")),
    };
    print!("{text}");
}

/// Every declared job in these files (or the .yaml/.yml files of these folders). All or
/// nothing: one invalid document stops the whole apply before anything is sent.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<DeclaredJob>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| ClientError::Input(format!("cannot read {}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        let text = read_manifest(file)?;
        for result in parse_file(&file.display().to_string(), &text) {
            match result {
                Ok(job) => jobs.push(job),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ClientError::Input(format!(
            "nothing applied; fix these documents first:\n  {}",
            errors.join("\n  ")
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = jobs.iter().find(|j| !seen.insert(j.name.as_str())) {
        return Err(ClientError::Input(format!(
            "nothing applied: the job {:?} is declared twice (again in {})",
            dup.name, dup.source
        )));
    }
    if jobs.is_empty() {
        return Err(ClientError::Input("no UploadJob documents found".into()));
    }
    Ok(jobs)
}

fn read_manifest(file: &Path) -> Result<String> {
    let cannot =
        |e: std::io::Error| ClientError::Input(format!("cannot read {}: {e}", file.display()));
    let meta = std::fs::metadata(file).map_err(cannot)?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(ClientError::Input(format!(
            "{} is {} bytes; manifests may be at most {MAX_MANIFEST_BYTES}",
            file.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(file).map_err(cannot)?;
    String::from_utf8(bytes)
        .map_err(|_| ClientError::Input(format!("{} is not UTF-8 text", file.display())))
}

/// `ferry apply -f ... --dry-run`: the jobs the manifests declare, validated, and nothing sent.
pub fn apply_dry_run(files: &[PathBuf]) -> Result<ExitCode> {
    for job in read_manifests(files)? {
        println!(
            "uploadjob/{} valid (dry run, from {})",
            job.name, job.source
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry apply -f ...`: PUT every declared job; with `wait`, follow them until they converge.
pub async fn apply(
    client: &Client,
    files: &[PathBuf],
    output: Output,
    wait: Option<Duration>,
) -> Result<ExitCode> {
    let jobs = read_manifests(files)?;
    let mut applied = Vec::new();
    for job in &jobs {
        let body = api_body(&job.fields);
        let answer = client
            .call(
                reqwest::Method::PUT,
                &format!("/uploads/{}", percent_encode(&job.name)),
                Some(&body),
            )
            .await
            .map_err(|e| match e {
                ClientError::Api {
                    status,
                    code,
                    message,
                } => ClientError::Api {
                    status,
                    code,
                    message: format!("{} ({}): {message}", job.name, job.source),
                },
                other => other,
            })?;
        if output == Output::Table {
            println!(
                "uploadjob/{} {}",
                job.name,
                answer["status"].as_str().unwrap_or("applied")
            );
        }
        applied.push(answer);
    }
    if output != Output::Table {
        print(output, &Value::Array(applied.clone()), String::new);
    }
    let Some(timeout) = wait else {
        return Ok(ExitCode::SUCCESS);
    };
    let targets: Vec<(String, i64)> = applied
        .iter()
        .map(|a| {
            (
                a["upload_id"].as_str().unwrap_or_default().to_owned(),
                a["generation"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    wait_for(client, &targets, timeout).await
}

/// Follows jobs until each has reconciled its applied generation and has nothing left to try,
/// drawing a progress bar on stderr. Exit code 0 when all are COMPLETED, 1 otherwise.
async fn wait_for(
    client: &Client,
    targets: &[(String, i64)],
    timeout: Duration,
) -> Result<ExitCode> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    // On a terminal, indicatif draws the bar in place (its redraws rate-limited, its ETA
    // smoothed); elsewhere (a CI log, a pipe) a plain line a second, the same as before.
    let bar = tty.then(progress_bar);
    let mut meter = render::RateMeter::default();
    let mut last_print = None::<Instant>;
    loop {
        let mut jobs = Vec::new();
        for (name, _) in targets {
            jobs.push(
                client
                    .call(
                        reqwest::Method::GET,
                        &format!("/uploads/{}", percent_encode(name)),
                        None,
                    )
                    .await?,
            );
        }
        let sum = |key: &str| {
            jobs.iter()
                .map(|j| j[key].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let (done, total) = (sum("uploaded_bytes"), sum("total_bytes"));
        let files = (sum("completed_files"), sum("total_files"));
        let rate = meter.sample(started.elapsed().as_secs_f64(), done);
        // Done: the applied spec was reconciled and nothing is left to try; or the job is
        // blocked (a missing folder or bucket), which a spec change clears, so the block is
        // about this spec.
        let converged = jobs.iter().zip(targets).all(|(j, (_, generation))| {
            let state = j["state"].as_str();
            let blocked = state == Some("FAILED") && j["error"].is_string();
            blocked
                || (j["observed_generation"].as_i64().unwrap_or(0) >= *generation
                    && matches!(state, Some("COMPLETED" | "FAILED")))
        });
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!("{}/{} files", files.0, files.1));
        } else if converged || last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let line = render::progress_line(done, total, files, rate);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
            let _ = err.flush();
            last_print = Some(Instant::now());
        }
        if converged {
            if let Some(bar) = &bar {
                bar.finish();
            }
            let mut ok = true;
            for j in &jobs {
                let state = j["state"].as_str().unwrap_or("?");
                ok &= state == "COMPLETED";
                let mut line = format!(
                    "uploadjob/{} {state}: {}/{} files, {}",
                    j["upload_id"].as_str().unwrap_or("?"),
                    j["completed_files"],
                    j["total_files"],
                    render::human_bytes(j["uploaded_bytes"].as_u64().unwrap_or(0))
                );
                if let Some(e) = j["error"].as_str() {
                    line.push_str(&format!(" ({e})"));
                } else if j["failed_files"].as_u64().unwrap_or(0) > 0 {
                    line.push_str(&format!(" ({} failed)", j["failed_files"]));
                }
                eprintln!("{line}");
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if started.elapsed() >= timeout {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            return Err(ClientError::Timeout(render::human_duration(
                timeout.as_secs(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The bar of `--wait` on a terminal: the plain line's fields, drawn by indicatif.
fn progress_bar() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{bar:24}] {percent:>3}%  {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}  ({msg})",
        )
        .expect("the template is valid")
        .progress_chars("#-"),
    );
    bar
}

/// `ferry get jobs [NAME]`.
pub async fn get_jobs(client: &Client, name: Option<&str>, output: Output) -> Result<ExitCode> {
    let value = match name {
        Some(n) => {
            client
                .call(
                    reqwest::Method::GET,
                    &format!("/uploads/{}", percent_encode(n)),
                    None,
                )
                .await?
        }
        None => client.call(reqwest::Method::GET, "/uploads", None).await?,
    };
    let rows = match &value {
        Value::Array(jobs) => jobs.clone(),
        one => vec![one.clone()],
    };
    if output == Output::Table && rows.is_empty() {
        eprintln!("No upload jobs.");
        return Ok(ExitCode::SUCCESS);
    }
    print(output, &value, || render::jobs_table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Every file of a job, following the `Link: rel="next"` pages.
async fn all_files(client: &Client, name: &str, state: Option<&str>) -> Result<Vec<Value>> {
    let mut path = format!("/uploads/{}/files?limit=1000", percent_encode(name));
    if let Some(s) = state {
        path.push_str(&format!("&state={}", percent_encode(s)));
    }
    let mut files = Vec::new();
    loop {
        let (page, headers) = client
            .call_with_headers(reqwest::Method::GET, &path, None)
            .await?;
        files.extend(page.as_array().cloned().unwrap_or_default());
        let next = headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            });
        match next {
            Some(n) if n.starts_with('/') => path = n,
            _ => return Ok(files),
        }
    }
}

/// `ferry get files NAME`.
pub async fn get_files(
    client: &Client,
    name: &str,
    state: Option<&str>,
    output: Output,
) -> Result<ExitCode> {
    let files = all_files(client, name, state).await?;
    if output == Output::Table && files.is_empty() {
        eprintln!("No files tracked for {name}.");
        return Ok(ExitCode::SUCCESS);
    }
    let value = Value::Array(files.clone());
    print(output, &value, || render::files_table(&files));
    Ok(ExitCode::SUCCESS)
}

/// `ferry describe job NAME`.
pub async fn describe_job(client: &Client, name: &str, output: Output) -> Result<ExitCode> {
    let job = client
        .call(
            reqwest::Method::GET,
            &format!("/uploads/{}", percent_encode(name)),
            None,
        )
        .await?;
    let failing = all_files(client, name, Some("FAILED")).await?;
    let mut value = job.clone();
    value["failing_files"] = Value::Array(failing.clone());
    print(output, &value, || render::describe_job(&job, &failing));
    Ok(ExitCode::SUCCESS)
}

/// `ferry delete job NAME`.
pub async fn delete_job(client: &Client, name: &str) -> Result<ExitCode> {
    client
        .call(
            reqwest::Method::DELETE,
            &format!("/uploads/{}", percent_encode(name)),
            None,
        )
        .await?;
    println!("uploadjob/{name} deleted");
    Ok(ExitCode::SUCCESS)
}

/// `ferry prune job NAME`: confirms the prunes the job's guard holds.
pub async fn prune_job(client: &Client, name: &str) -> Result<ExitCode> {
    let answer = post_job_action(client, name, "prune").await?;
    let released = answer["released"].as_u64().unwrap_or(0);
    println!("uploadjob/{name} prune confirmed: {released} objects to delete");
    Ok(ExitCode::SUCCESS)
}

/// `ferry resync job NAME`: lists the job's objects now and repairs drift.
pub async fn resync_job(client: &Client, name: &str) -> Result<ExitCode> {
    post_job_action(client, name, "resync").await?;
    println!("uploadjob/{name} resync requested");
    Ok(ExitCode::SUCCESS)
}

async fn post_job_action(client: &Client, name: &str, action: &str) -> Result<Value> {
    client
        .call(
            reqwest::Method::POST,
            &format!("/uploads/{}/{action}", percent_encode(name)),
            None,
        )
        .await
}

/// A spec as the API's body writes it (snake_case), with only the fields the manifest sets, so
/// that the server fills in the same defaults it would for the manifest itself.
fn api_body(f: &crate::core::spec::SpecFields) -> Value {
    let mut body = serde_json::json!({
        "source_folder": f.source_folder,
        "destination_bucket": f.destination_bucket,
    });
    let optional = [
        ("pattern", &f.pattern),
        ("key_prefix", &f.key_prefix),
        ("storage_class", &f.storage_class),
        ("sse", &f.sse),
        ("kms_key_id", &f.kms_key_id),
        ("after_upload", &f.after_upload),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            body[name] = Value::String(v.clone());
        }
    }
    if !f.exclude.is_empty() {
        body["exclude"] = serde_json::json!(f.exclude);
    }
    if !f.metadata.is_empty() {
        body["metadata"] = serde_json::json!(f.metadata);
    }
    if !f.tags.is_empty() {
        body["tags"] = serde_json::json!(f.tags);
    }
    if f.prune {
        body["prune"] = Value::Bool(true);
    }
    body
}
