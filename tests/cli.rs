//! The kubectl-shaped client (`ferry apply/get/describe/delete`), run as the real binary against a
//! running `ferry serve`.

mod common;

use std::path::Path;

use common::{Ferry, MIB, S3, content, unique, write_file};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `ferry ARGS` as a client of `server`, with these extra environment variables.
async fn ferry_cli(server: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).env("FERRY_SERVER", server);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn manifest(dir: &Path, file: &str, name: &str, folder: &Path, bucket: &str) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: {name}\nspec:\n  sourceFolder: {}\n  destinationBucket: {bucket}\n",
        folder.display()
    );
    write_file(dir, file, text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_describe_and_delete_a_job() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "big.bin", &content(1, 11 * MIB));
    write_file(src.path(), "logs/a.log", b"a");
    write_file(src.path(), "logs/b.log", b"bb");
    let manifests = tempfile::tempdir().unwrap();
    let name = unique("cli");
    let file = manifest(manifests.path(), "job.yaml", &name, src.path(), &s3.bucket);
    // With object options, which `apply` must carry to the API.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("  keyPrefix: cli/\n  exclude: [\"*.tmp\"]\n  storageClass: STANDARD_IA\n  metadata: {owner: cli}\n  tags: {team: ops}\n");
    std::fs::write(&file, text).unwrap();
    write_file(src.path(), "skip.tmp", b"excluded");
    let ferry = Ferry::start(&[]).await;
    let server = ferry.url("");
    let file = file.to_str().unwrap();

    // apply --wait: created, a progress bar, and the end state.
    let run = ferry_cli(
        &server,
        &["apply", "-f", file, "--wait", "--timeout", "2m"],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, ferry.log());
    assert_eq!(run.stdout, format!("uploadjob/{name} created\n"));
    assert!(run.stderr.contains("] 100%"), "{}", run.stderr);
    assert!(run.stderr.contains("(3/3 files)"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("uploadjob/{name} COMPLETED: 3/3 files, 11.0 MiB")),
        "{}",
        run.stderr
    );
    assert_eq!(
        s3.keys().await,
        ["cli/big.bin", "cli/logs/a.log", "cli/logs/b.log"]
    );

    // Applying the same spec again changes nothing.
    let run = ferry_cli(&server, &["apply", "-f", file], &[]).await;
    assert_eq!(
        run.stdout,
        format!("uploadjob/{name} unchanged\n"),
        "{}",
        run.stderr
    );

    // get jobs: a table for people, JSON and YAML for scripts.
    let run = ferry_cli(&server, &["get", "jobs"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut lines = run.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE"),
        "{}",
        run.stdout
    );
    let row = lines.next().unwrap();
    for part in [name.as_str(), "COMPLETED", "100%", "3/3", &s3.bucket, "api"] {
        assert!(row.contains(part), "{part} missing from {row}");
    }
    let run = ferry_cli(&server, &["get", "jobs", &name, "-o", "json"], &[]).await;
    let job: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(job["upload_id"], name.as_str());
    assert_eq!(job["state"], "COMPLETED");
    let run = ferry_cli(&server, &["get", "jobs", "-o", "yaml"], &[]).await;
    assert!(
        run.stdout.contains(&format!("upload_id: {name}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("state: COMPLETED"), "{}", run.stdout);
    assert!(run.stdout.contains("key_prefix: cli/"), "{}", run.stdout);
    assert!(
        run.stdout.contains("storage_class: STANDARD_IA"),
        "{}",
        run.stdout
    );

    // get files.
    let run = ferry_cli(&server, &["get", "files", &name], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("PATH"), "{}", run.stdout);
    for path in ["big.bin", "logs/a.log", "logs/b.log"] {
        assert!(run.stdout.contains(path), "{path} missing: {}", run.stdout);
    }
    assert!(run.stdout.contains("11.0 MiB"), "{}", run.stdout);
    let run = ferry_cli(&server, &["get", "files", &name, "-o", "json"], &[]).await;
    let files: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(files.as_array().unwrap().len(), 3);

    // describe.
    let run = ferry_cli(&server, &["describe", "job", &name], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for part in [
        format!("Name:                 {name}"),
        format!("  Source Folder:      {}", src.path().display()),
        format!("  Destination Bucket: {}", s3.bucket),
        "  Key Prefix:         \"cli/\"".into(),
        "  Exclude:            *.tmp".into(),
        "  Storage Class:      STANDARD_IA".into(),
        "  Encryption:         <none>".into(),
        "  Metadata:           owner=cli".into(),
        "  Tags:               team=ops".into(),
        "  State:              COMPLETED".into(),
        "Conditions:".into(),
        "Completed".into(),
        "Failing Files: <none>".into(),
    ] {
        assert!(
            run.stdout.contains(&part),
            "{part:?} missing:\n{}",
            run.stdout
        );
    }

    // delete, then it is gone.
    let run = ferry_cli(&server, &["delete", "job", &name], &[]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, &*format!("uploadjob/{name} deleted\n"))
    );
    let run = ferry_cli(&server, &["get", "job", &name], &[]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("upload_not_found"), "{}", run.stderr);
    let run = ferry_cli(&server, &["delete", "job", &name], &[]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("404"), "{}", run.stderr);
}

#[tokio::test]
async fn wait_ends_with_exit_1_when_the_job_fails() {
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    let manifests = tempfile::tempdir().unwrap();
    let name = unique("cli-fail");
    let file = manifest(
        manifests.path(),
        "job.yml",
        &name,
        src.path(),
        &unique("missing-bucket"),
    );
    let ferry = Ferry::start(&[]).await;
    let run = ferry_cli(
        &ferry.url(""),
        &[
            "apply",
            "-f",
            manifests.path().to_str().unwrap(),
            "--wait",
            "--timeout",
            "60s",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("uploadjob/{name} created")),
        "{file:?}"
    );
    assert!(
        run.stderr.contains(&format!("uploadjob/{name} FAILED")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("bucket"),
        "the reason is shown: {}",
        run.stderr
    );
}

#[tokio::test]
async fn errors_say_what_is_wrong_and_a_bad_manifest_applies_nothing() {
    let ferry = Ferry::start(&[("FERRY_API_TOKEN", "cli-token-0123456789abcdef")]).await;
    let server = ferry.url("");
    let token = [("FERRY_API_TOKEN", "cli-token-0123456789abcdef")];

    // No server there.
    let run = ferry_cli("http://127.0.0.1:9", &["get", "jobs"], &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("cannot reach ferry at http://127.0.0.1:9"),
        "{}",
        run.stderr
    );

    // No token, or a wrong one.
    let run = ferry_cli(&server, &["get", "jobs"], &[]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("set FERRY_API_TOKEN"), "{}", run.stderr);
    let run = ferry_cli(
        &server,
        &["get", "jobs"],
        &[("FERRY_API_TOKEN", "wrong-token-0123456789")],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("another token"), "{}", run.stderr);
    let run = ferry_cli(&server, &["get", "jobs"], &token).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("No upload jobs."), "{}", run.stderr);

    // A file with one good and one broken document: nothing is applied.
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(manifest(
        dir.path(),
        "good.yaml",
        "good-job",
        src.path(),
        "some-bucket",
    ))
    .unwrap();
    let bad = format!(
        "{good}---\napiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: Bad_Name\nspec: {{}}\n"
    );
    let bad_file = write_file(dir.path(), "bad.yaml", bad.as_bytes());
    let run = ferry_cli(
        &server,
        &["apply", "-f", bad_file.to_str().unwrap()],
        &token,
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("nothing applied"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.yaml document 2"), "{}", run.stderr);
    let (_, jobs) = {
        let r = ferry
            .http
            .get(ferry.url("/uploads"))
            .bearer_auth("cli-token-0123456789abcdef")
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        jobs,
        serde_json::json!([]),
        "a job was applied from a bad file"
    );

    // --dry-run checks the same way, with no server at all, and sends nothing.
    let run = ferry_cli(
        "http://127.0.0.1:9",
        &["apply", "--dry-run", "-f", bad_file.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("bad.yaml document 2"), "{}", run.stderr);
    let good_file = dir.path().join("good.yaml");
    let run = ferry_cli(
        "http://127.0.0.1:9",
        &["apply", "--dry-run", "-f", good_file.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("uploadjob/good-job valid (dry run"),
        "{}",
        run.stdout
    );

    // A missing file, a server-side refusal (the folder does not exist there).
    let run = ferry_cli(&server, &["apply", "-f", "/nonexistent/job.yaml"], &token).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot read /nonexistent/job.yaml"),
        "{}",
        run.stderr
    );
    let missing = manifest(
        dir.path(),
        "missing.yaml",
        "missing-folder",
        Path::new("/nonexistent-folder"),
        "some-bucket",
    );
    let run = ferry_cli(&server, &["apply", "-f", missing.to_str().unwrap()], &token).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("missing-folder"), "{}", run.stderr);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid_source_folder"),
        "{}",
        run.stderr
    );

    // A bad --server and a bad --timeout.
    let run = ferry_cli("https://example.com", &["get", "jobs"], &[]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("http://"), "{}", run.stderr);
    let run = ferry_cli(
        &server,
        &[
            "apply",
            "-f",
            missing.to_str().unwrap(),
            "--wait",
            "--timeout",
            "soon",
        ],
        &token,
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--timeout"), "{}", run.stderr);
}
