//! Objects the way users ask for them: key prefix, excludes, storage class, encryption, metadata,
//! tags and Content-Type, checked on the objects themselves (HeadObject, GetObjectTagging,
//! ListObjectsV2), for single PUTs and multipart uploads, from the API and from manifests.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use common::proxy::{Faults, Proxy};
use common::{Ferry, MIB, S3, content, s3_endpoint, write_file};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);

/// What HeadObject and GetObjectTagging say of an object.
#[derive(Debug)]
struct Stored {
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    metadata: BTreeMap<String, String>,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
}

async fn stored(s3: &S3, key: &str) -> Stored {
    let head = s3
        .client
        .head_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HeadObject {key}: {e:?}"));
    let tagging = s3
        .client
        .get_object_tagging()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObjectTagging {key}: {e:?}"));
    Stored {
        storage_class: head.storage_class,
        sse: head.server_side_encryption,
        kms_key_id: head.ssekms_key_id,
        metadata: head.metadata.unwrap_or_default().into_iter().collect(),
        content_type: head.content_type,
        tags: tagging
            .tag_set
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect(),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A folder with small files of several types, one file past the part size (multipart), and
/// files the excludes must keep out: a glob (`*.tmp`) and a whole folder (`cache`).
fn folder() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "small.json", b"{\"a\": 1}");
    write_file(src.path(), "sub/page.html", b"<p>hi</p>");
    write_file(src.path(), "noext", b"raw");
    write_file(src.path(), "big.bin", &content(7, 12 * MIB));
    write_file(src.path(), "skip.tmp", b"temporary");
    write_file(src.path(), "sub/also.tmp", b"temporary");
    write_file(src.path(), "cache/inner.txt", b"cached");
    src
}

const TAKEN: [(&str, &str); 4] = [
    ("big.bin", "application/octet-stream"),
    ("noext", "application/octet-stream"),
    ("small.json", "application/json"),
    ("sub/page.html", "text/html"),
];

#[tokio::test]
async fn every_option_lands_on_the_objects_single_and_multipart() {
    let s3 = S3::new_bucket().await;
    let src = folder();
    let ferry = Ferry::start(&[("FERRY_CHUNK_SIZE", "5MiB")]).await;
    let (status, answer) = ferry
        .post(
            "/uploads",
            &json!({
                "source_folder": src.path().to_str().unwrap(),
                "destination_bucket": s3.bucket,
                "key_prefix": "logs/host-1/",
                "exclude": ["**/*.tmp", "cache"],
                "storage_class": "STANDARD_IA",
                "sse": "AES256",
                "metadata": {"owner": "team-a", "build.id": "42"},
                "tags": {"team": "data eng", "path": "a/b:c"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["upload_id"].as_str().unwrap().to_owned();
    let job = ferry.wait_settled(&id, SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(
        job["total_files"], 4,
        "the excluded files are not taken: {job}"
    );
    // GET gives the spec back, defaults filled in.
    assert_eq!(job["key_prefix"], "logs/host-1/");
    assert_eq!(job["exclude"], json!(["**/*.tmp", "cache"]));
    assert_eq!(job["storage_class"], "STANDARD_IA");
    assert_eq!(job["sse"], "AES256");
    assert_eq!(job["kms_key_id"], Value::Null);
    assert_eq!(
        job["metadata"],
        json!({"owner": "team-a", "build.id": "42"})
    );
    assert_eq!(job["tags"], json!({"team": "data eng", "path": "a/b:c"}));

    // Exactly the taken files, under the prefix.
    let mut want: Vec<String> = TAKEN
        .iter()
        .map(|(p, _)| format!("logs/host-1/{p}"))
        .collect();
    want.sort();
    assert_eq!(s3.keys().await, want);
    let files = ferry.files(&id).await;
    assert!(
        files
            .iter()
            .all(|f| f["key"].as_str().unwrap().starts_with("logs/host-1/")),
        "{files:?}"
    );
    for (path, content_type) in TAKEN {
        let key = format!("logs/host-1/{path}");
        let o = stored(&s3, &key).await;
        assert_eq!(
            o.storage_class,
            Some(StorageClass::StandardIa),
            "{key}: {o:?}"
        );
        assert_eq!(o.sse, Some(ServerSideEncryption::Aes256), "{key}: {o:?}");
        assert_eq!(
            o.metadata,
            map(&[("owner", "team-a"), ("build.id", "42")]),
            "{key}"
        );
        assert_eq!(o.content_type.as_deref(), Some(content_type), "{key}");
        assert_eq!(
            o.tags,
            map(&[("team", "data eng"), ("path", "a/b:c")]),
            "{key}"
        );
    }
    assert_eq!(
        s3.get("logs/host-1/big.bin").await,
        content(7, 12 * MIB),
        "the multipart object holds the file's bytes"
    );
}

#[tokio::test]
async fn sse_kms_with_a_key_reaches_single_puts_and_multipart_uploads() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"secret");
    write_file(src.path(), "big.bin", &content(3, 11 * MIB));
    let ferry = Ferry::start(&[("FERRY_CHUNK_SIZE", "5MiB")]).await;
    let (status, answer) = ferry
        .put(
            "/uploads/vault",
            &json!({
                "source_folder": src.path().to_str().unwrap(),
                "destination_bucket": s3.bucket,
                "sse": "aws:kms",
                "kms_key_id": "alias/ferry-test",
            }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let job = ferry.wait_settled("vault", SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    for key in ["vault/a.txt", "vault/big.bin"] {
        let o = stored(&s3, key).await;
        assert_eq!(o.sse, Some(ServerSideEncryption::AwsKms), "{key}: {o:?}");
        assert!(
            o.kms_key_id
                .as_deref()
                .is_some_and(|k| k.ends_with("alias/ferry-test")),
            "{key}: {o:?}"
        );
        assert_eq!(o.storage_class, None, "the bucket's class: {o:?}");
    }
}

#[tokio::test]
async fn a_manifest_declares_the_options_in_camel_case() {
    let s3 = S3::new_bucket().await;
    let src = folder();
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("archive.yaml"),
        format!(
            "apiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: archive\nspec:\n  sourceFolder: {}\n  destinationBucket: {}\n  keyPrefix: \"\"\n  exclude: [\"**/*.tmp\", cache]\n  storageClass: GLACIER_IR\n  sse: AES256\n  metadata: {{source-host: web-1}}\n  tags: {{retention: 7y}}\n",
            src.path().display(),
            s3.bucket
        ),
    )
    .unwrap();
    let ferry = Ferry::start(&[
        ("FERRY_MANIFESTS_DIR", manifests.path().to_str().unwrap()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ferry.get("/uploads/archive").await.0 != 200 {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = ferry.wait_settled("archive", SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert_eq!(job["key_prefix"], "", "the bucket's root");
    // At the bucket's root, the keys are the paths.
    let mut want: Vec<String> = TAKEN.iter().map(|(p, _)| p.to_string()).collect();
    want.sort();
    assert_eq!(s3.keys().await, want);
    for (path, content_type) in TAKEN {
        let o = stored(&s3, path).await;
        assert_eq!(
            o.storage_class,
            Some(StorageClass::GlacierIr),
            "{path}: {o:?}"
        );
        assert_eq!(o.sse, Some(ServerSideEncryption::Aes256), "{path}");
        assert_eq!(o.metadata, map(&[("source-host", "web-1")]), "{path}");
        assert_eq!(o.tags, map(&[("retention", "7y")]), "{path}");
        assert_eq!(o.content_type.as_deref(), Some(content_type), "{path}");
    }
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_field_and_create_nothing() {
    let ferry = Ferry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let base =
        json!({"source_folder": dir.path().to_str().unwrap(), "destination_bucket": "bucket"});
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            json!({"key_prefix": "/logs/"}),
            "invalid_key_prefix",
            "key_prefix",
        ),
        (
            json!({"key_prefix": "a\u{7}b"}),
            "invalid_key_prefix",
            "control",
        ),
        (
            json!({"key_prefix": "k".repeat(1024)}),
            "invalid_key_prefix",
            "1024",
        ),
        (json!({"key_prefix": 5}), "invalid_json", "key_prefix"),
        (
            json!({"exclude": ["ok/*", "[a-"]}),
            "invalid_exclude",
            "exclude: [1]",
        ),
        (json!({"exclude": "*.tmp"}), "invalid_json", "exclude"),
        (
            json!({"storage_class": "COLD"}),
            "invalid_storage_class",
            "STANDARD_IA",
        ),
        (
            json!({"storage_class": "standard"}),
            "invalid_storage_class",
            "storage_class",
        ),
        (json!({"sse": "aes256"}), "invalid_sse", "AES256 or aws:kms"),
        (
            json!({"kms_key_id": "alias/k"}),
            "invalid_kms_key_id",
            "needs sse: aws:kms",
        ),
        (
            json!({"sse": "AES256", "kms_key_id": "alias/k"}),
            "invalid_kms_key_id",
            "kms_key_id",
        ),
        (
            json!({"sse": "aws:kms", "kms_key_id": ""}),
            "invalid_kms_key_id",
            "kms_key_id",
        ),
        (
            json!({"metadata": {"Owner": "x"}}),
            "invalid_metadata",
            "\"owner\"",
        ),
        (
            json!({"metadata": {"k": "é"}}),
            "invalid_metadata",
            "printable ASCII",
        ),
        (
            json!({"metadata": {"k": "v".repeat(2048)}}),
            "invalid_metadata",
            "2048",
        ),
        (json!({"metadata": {"k": 1}}), "invalid_json", "metadata"),
        (
            json!({"tags": (0..11).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "invalid_tags",
            "at most 10",
        ),
        (
            json!({"tags": {"k": "v".repeat(257)}}),
            "invalid_tags",
            "256",
        ),
        (
            json!({"tags": {"k".repeat(129): "v"}}),
            "invalid_tags",
            "128",
        ),
        (json!({"tags": {"aws:x": "v"}}), "invalid_tags", "reserves"),
        (
            json!({"tags": {"k": "a&b"}}),
            "invalid_tags",
            "tags take letters",
        ),
        (json!({"tags": ["k"]}), "invalid_json", "tags"),
        (
            json!({"key_prefx": "typo/"}),
            "invalid_json",
            "unknown field `key_prefx`",
        ),
    ];
    for (extra, code, needle) in cases {
        let body = with(extra.clone());
        for (status, answer) in [
            ferry.post("/uploads", &body).await,
            ferry.put("/uploads/named", &body).await,
        ] {
            assert_eq!(status, 400, "{extra}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{extra}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{extra}: {message:?} lacks {needle:?}"
            );
        }
    }
    let (_, jobs) = ferry.get("/uploads").await;
    assert_eq!(jobs, json!([]), "a refused spec stores nothing");
}

#[tokio::test]
async fn overlapping_prefixes_in_one_bucket_are_refused_with_409() {
    let ferry = Ferry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    let spec = |bucket: &str, prefix: Option<&str>| {
        let mut body = json!({"source_folder": folder, "destination_bucket": bucket});
        if let Some(p) = prefix {
            body["key_prefix"] = json!(p);
        }
        body
    };
    let (status, answer) = ferry.put("/uploads/logs", &spec("bucket-a", None)).await;
    assert_eq!(status, 201, "{answer}"); // its prefix: logs/
    let (status, answer) = ferry
        .put("/uploads/shared", &spec("bucket-a", Some("shared/")))
        .await;
    assert_eq!(status, 201, "{answer}");
    for (name, prefix, other) in [
        ("inside", Some("logs/2026/"), "logs"),
        ("outside", Some("shared"), "shared"),
        ("root", Some(""), "logs"),
        ("shared-2", Some("shared/x/"), "shared"),
    ] {
        for (status, answer) in [
            ferry
                .put(&format!("/uploads/{name}"), &spec("bucket-a", prefix))
                .await,
            ferry.post("/uploads", &spec("bucket-a", prefix)).await,
        ] {
            assert_eq!(status, 409, "{prefix:?}: {answer}");
            assert_eq!(answer["error"]["code"], "prefix_overlap", "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("job {other:?}")), "{message}");
        }
    }
    // A job may not move onto another's prefix either.
    let (status, answer) = ferry
        .put("/uploads/shared", &spec("bucket-a", Some("logs/x/")))
        .await;
    assert_eq!(status, 409, "{answer}");
    // Beside a prefix, in another bucket, or the root of an empty one: fine.
    for (name, body) in [
        ("beside", spec("bucket-a", Some("logs2/"))),
        ("elsewhere", spec("bucket-b", Some("logs/"))),
        ("root-b", spec("bucket-c", Some(""))),
    ] {
        let (status, answer) = ferry.put(&format!("/uploads/{name}"), &body).await;
        assert_eq!(status, 201, "{name}: {answer}");
    }
    let (_, jobs) = ferry.get("/uploads").await;
    assert_eq!(jobs.as_array().unwrap().len(), 5, "{jobs}");

    // A manifest that overlaps is reported, and harms no other job.
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("a.yaml"),
        format!(
            "apiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: one\nspec:\n  sourceFolder: {folder}\n  destinationBucket: bucket-m\n  keyPrefix: data/\n---\napiVersion: ferry/v1\nkind: UploadJob\nmetadata:\n  name: two\nspec:\n  sourceFolder: {folder}\n  destinationBucket: bucket-m\n  keyPrefix: data/two/\n"
        ),
    )
    .unwrap();
    let gitops = Ferry::start(&[("FERRY_MANIFESTS_DIR", manifests.path().to_str().unwrap())]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = gitops.get("/manifests").await;
        let errors = m["errors"].as_array().cloned().unwrap_or_default();
        if let Some(e) = errors.first() {
            assert_eq!(e["document"], 2, "{m}");
            assert!(
                e["message"].as_str().unwrap().contains("spec.keyPrefix"),
                "{m}"
            );
            assert_eq!(m["jobs"].as_array().unwrap().len(), 1, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "{m}\n{}", gitops.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gitops.get("/uploads/one").await.0, 200);
    assert_eq!(gitops.get("/uploads/two").await.0, 404);
}

/// Requests of these operations the proxy forwarded with success so far.
fn wire(proxy: &Proxy) -> [u64; 4] {
    ["PutObject", "UploadPart", "CopyObject", "PutObjectTagging"].map(|op| proxy.succeeded(op))
}

#[tokio::test]
async fn a_change_to_how_objects_look_restyles_them_in_s3_without_sending_the_bytes() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    write_file(src.path(), "big.bin", &content(5, 11 * MIB));
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
    ])
    .await;
    let folder = src.path().to_str().unwrap();
    let mut body = json!({"source_folder": folder, "destination_bucket": s3.bucket});
    let mut generation = 1;
    let mut apply = async |body: &Value| {
        let (status, answer) = ferry.put("/uploads/docs", body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (
                if generation == 1 { 201 } else { 200 },
                Some(if generation == 1 {
                    "created"
                } else {
                    "updated"
                })
            ),
            "{answer}"
        );
        let job = ferry
            .wait_for("docs", SETTLE, |j| {
                j["observed_generation"] == generation
                    && j["state"] != "IN_PROGRESS"
                    && j["state"] != "PENDING"
            })
            .await;
        assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
        assert_eq!(job["completed_files"], 2, "{job}");
        generation += 1;
    };
    apply(&body).await;
    let uploaded = wire(&proxy);
    assert_eq!(uploaded, [1, 3, 0, 0], "a.txt one PUT, big.bin three parts");
    assert_eq!(stored(&s3, "docs/a.txt").await.storage_class, None);

    // A new class, metadata and tags: every object is copied onto itself with them.
    body["storage_class"] = json!("STANDARD_IA");
    body["metadata"] = json!({"owner": "b"});
    body["tags"] = json!({"v": "2"});
    apply(&body).await;
    assert_eq!(wire(&proxy), [1, 3, 2, 0], "two copies, no byte sent again");
    for key in ["docs/a.txt", "docs/big.bin"] {
        let o = stored(&s3, key).await;
        assert_eq!(o.storage_class, Some(StorageClass::StandardIa), "{key}");
        assert_eq!(o.metadata, map(&[("owner", "b")]), "{key}");
        assert_eq!(o.tags, map(&[("v", "2")]), "{key}");
    }
    assert_eq!(
        stored(&s3, "docs/a.txt").await.content_type.as_deref(),
        Some("text/plain")
    );
    assert!(s3.get("docs/big.bin").await == content(5, 11 * MIB));

    // Tags alone: retagged in place.
    body["tags"] = json!({"v": "3", "w": "x"});
    apply(&body).await;
    assert_eq!(wire(&proxy), [1, 3, 2, 2]);
    let o = stored(&s3, "docs/big.bin").await;
    assert_eq!(o.tags, map(&[("v", "3"), ("w", "x")]));
    assert_eq!(
        o.storage_class,
        Some(StorageClass::StandardIa),
        "the rest stays"
    );

    // A new prefix: copied from the old keys, which stay, as with a new bucket.
    body["key_prefix"] = json!("v3/");
    apply(&body).await;
    assert_eq!(wire(&proxy), [1, 3, 4, 2]);
    assert_eq!(
        s3.keys().await,
        ["docs/a.txt", "docs/big.bin", "v3/a.txt", "v3/big.bin"]
    );
    assert_eq!(
        stored(&s3, "v3/big.bin").await.tags,
        map(&[("v", "3"), ("w", "x")])
    );

    // An object deleted behind ferry's back cannot be copied: its file is uploaded again.
    s3.client
        .delete_object()
        .bucket(&s3.bucket)
        .key("v3/a.txt")
        .send()
        .await
        .unwrap();
    body["storage_class"] = json!("GLACIER_IR");
    apply(&body).await;
    assert_eq!(wire(&proxy), [2, 3, 5, 2], "a.txt uploaded, big.bin copied");
    assert_eq!(s3.get("v3/a.txt").await, b"a");
    assert_eq!(
        stored(&s3, "v3/a.txt").await.storage_class,
        Some(StorageClass::GlacierIr)
    );

    // A store that does not copy: the files are uploaded again.
    proxy.set_faults(Faults {
        refuse: vec![("CopyObject", 501, "NotImplemented")],
        ..Faults::default()
    });
    body["storage_class"] = json!("STANDARD");
    apply(&body).await;
    assert_eq!(wire(&proxy), [3, 6, 5, 2], "both uploaded again");
    assert_eq!(stored(&s3, "v3/big.bin").await.storage_class, None);
    proxy.set_faults(Faults::default());

    // An exclude alone changes no object.
    body["exclude"] = json!(["*.nothing"]);
    apply(&body).await;
    assert_eq!(wire(&proxy), [3, 6, 5, 2]);
    assert_eq!(
        ferry
            .metric("ferry_objects_restyled_total{how=\"copy\"}")
            .await,
        Some(5.0)
    );
    assert_eq!(
        ferry
            .metric("ferry_objects_restyled_total{how=\"tags\"}")
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_multipart_upload_begun_under_other_settings_starts_over() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        hold_parts_after: Some(2),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let data = content(9, 30 * MIB);
    write_file(src.path(), "big.bin", &data);
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
        ("FERRY_CONCURRENCY", "1"),
    ])
    .await;
    let mut body =
        json!({"source_folder": src.path().to_str().unwrap(), "destination_bucket": s3.bucket});
    assert_eq!(ferry.put("/uploads/big", &body).await.0, 201);
    ferry
        .wait_for("big", SETTLE, |j| {
            j["uploaded_bytes"].as_u64().unwrap_or(0) >= 2 * 5 * MIB as u64
        })
        .await;
    // Partway, under the bucket's class: the class changes.
    body["storage_class"] = json!("STANDARD_IA");
    assert_eq!(ferry.put("/uploads/big", &body).await.0, 200);
    proxy.release_held_parts();
    let job = ferry
        .wait_for("big", SETTLE, |j| {
            j["observed_generation"] == 2 && j["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["completed_files"], 1, "{job}");
    let o = stored(&s3, "big/big.bin").await;
    assert_eq!(o.storage_class, Some(StorageClass::StandardIa), "{o:?}");
    assert!(s3.get("big/big.bin").await == data);
    assert_eq!(
        proxy.received("CreateMultipartUpload"),
        2,
        "the upload begun under the old class was not resumed"
    );
    s3.expect_no_open_uploads(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_store_without_a_feature_fails_the_file_naming_it() {
    let s3 = S3::new_bucket().await;
    // As Garage answers object tagging: 501 NotImplemented.
    let proxy = Proxy::with_faults(Faults {
        refuse_header: Some("x-amz-tagging"),
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    write_file(src.path(), "big.bin", &content(1, 6 * MIB));
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
        ("FERRY_MAX_ATTEMPTS", "2"),
    ])
    .await;
    let folder = src.path().to_str().unwrap();
    let tagged =
        json!({"source_folder": folder, "destination_bucket": s3.bucket, "tags": {"team": "a"}});
    assert_eq!(ferry.put("/uploads/tagged", &tagged).await.0, 201);
    let job = ferry.wait_settled("tagged", SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["failed_files"], 2, "{job}");
    for f in ferry.files("tagged").await {
        let error = f["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("the store refused this job's tags (1)")
                && error.contains("NotImplemented"),
            "{}: {error}",
            f["path"]
        );
    }
    // The store works otherwise, and the refusal was not taken for one of checksums.
    let plain = json!({"source_folder": folder, "destination_bucket": s3.bucket});
    assert_eq!(ferry.put("/uploads/plain", &plain).await.0, 201);
    let job = ferry.wait_settled("plain", SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert!(
        !ferry.log().contains("refuses checksum headers"),
        "{}",
        ferry.log()
    );
    assert_eq!(s3.keys().await, ["plain/a.txt", "plain/big.bin"]);

    // LocalStack runs without KMS: SSE-KMS without a key fails naming the encryption.
    let direct = Ferry::start(&[("FERRY_MAX_ATTEMPTS", "1")]).await;
    let kms = json!({"source_folder": folder, "destination_bucket": s3.bucket, "key_prefix": "kms/", "sse": "aws:kms", "pattern": "a.txt"});
    assert_eq!(direct.put("/uploads/kms", &kms).await.0, 201);
    let job = direct.wait_settled("kms", SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    let error = direct.files("kms").await[0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("the store refused this job's sse aws:kms") && error.contains("kms"),
        "{error}"
    );
}

#[tokio::test]
async fn the_orphan_sweep_under_a_chosen_prefix_takes_only_the_jobs_own_paths() {
    let s3 = S3::new_bucket().await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.log", b"a");
    let ferry = Ferry::start(&[]).await;
    let body = json!({"source_folder": src.path().to_str().unwrap(), "destination_bucket": s3.bucket,
        "key_prefix": "", "pattern": "*.log"});
    assert_eq!(ferry.put("/uploads/root-logs", &body).await.0, 201);
    assert_eq!(
        ferry.wait_settled("root-logs", SETTLE).await["state"],
        "COMPLETED"
    );
    // The bucket's root is shared: an upload the job could have begun (a crash between
    // CreateMultipartUpload and its record), and another writer's.
    for key in ["crashed.log", "someone-else/video.mp4"] {
        s3.client
            .create_multipart_upload()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let ferry = ferry.restart().await;
    let open_keys = || async {
        let listed = s3
            .client
            .list_multipart_uploads()
            .bucket(&s3.bucket)
            .send()
            .await
            .unwrap();
        listed
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_keys().await.contains(&"crashed.log".to_owned()) {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sweep and the janitor have had their turn; the other writer's upload stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(open_keys().await, ["someone-else/video.mp4"]);
}

#[tokio::test]
async fn a_store_that_takes_an_option_and_drops_it_fails_the_file_naming_it() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::with_faults(Faults {
        drop_headers: vec![
            "x-amz-tagging",
            "x-amz-storage-class",
            "x-amz-server-side-encryption",
            "x-amz-server-side-encryption-aws-kms-key-id",
        ],
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    write_file(src.path(), "big.bin", &content(2, 6 * MIB));
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
    ])
    .await;
    let folder = src.path().to_str().unwrap();
    for (name, extra, says) in [
        (
            "tags",
            json!({"tags": {"team": "a"}}),
            "tags (1; it keeps 0)",
        ),
        (
            "class",
            json!({"storage_class": "STANDARD_IA"}),
            "storage_class STANDARD_IA (it shows STANDARD)",
        ),
        (
            "kms",
            json!({"sse": "aws:kms", "kms_key_id": "alias/k"}),
            "sse aws:kms (it shows",
        ),
    ] {
        let mut body = json!({"source_folder": folder, "destination_bucket": s3.bucket});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_eq!(ferry.put(&format!("/uploads/{name}"), &body).await.0, 201);
        let job = ferry.wait_settled(name, SETTLE).await;
        assert_eq!(job["state"], "FAILED", "{name}: {job}");
        assert_eq!(job["failed_files"], 2, "{name}: no file may pass: {job}");
        for f in ferry.files(name).await {
            let error = f["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains(says) && error.contains("but does not keep it"),
                "{name} {}: {error}",
                f["path"]
            );
        }
    }
    let failures = ferry
        .metric("ferry_upload_failures_total{reason=\"options_not_applied\",outcome=\"failed\"}")
        .await;
    assert_eq!(failures, Some(6.0));
}

#[tokio::test]
async fn under_sse_kms_an_etag_is_not_taken_for_an_md5() {
    let s3 = S3::new_bucket().await;
    // As AWS answers SSE-KMS objects: ETags that are not the MD5 of the bytes.
    let proxy = Proxy::with_faults(Faults {
        corrupt_etag: true,
        ..Faults::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"kms bytes");
    write_file(src.path(), "big.bin", &content(4, 6 * MIB));
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
        // No checksums: the ETag would be the only proof.
        ("FERRY_CHECKSUM", "none"),
        ("FERRY_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let folder = src.path().to_str().unwrap();
    let kms = json!({"source_folder": folder, "destination_bucket": s3.bucket,
        "sse": "aws:kms", "kms_key_id": "alias/k"});
    assert_eq!(ferry.put("/uploads/kms", &kms).await.0, 201);
    let job = ferry.wait_settled("kms", SETTLE).await;
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", ferry.log());
    assert!(s3.get("kms/big.bin").await == content(4, 6 * MIB));
    // Without SSE-KMS the same ETags are wrong bytes, and fail.
    let plain = json!({"source_folder": folder, "destination_bucket": s3.bucket});
    assert_eq!(ferry.put("/uploads/plain", &plain).await.0, 201);
    let job = ferry.wait_settled("plain", SETTLE).await;
    assert_eq!(job["state"], "FAILED", "{job}");
}

#[tokio::test]
async fn a_restyle_killed_midway_is_taken_up_again_after_the_restart() {
    let s3 = S3::new_bucket().await;
    let proxy = Proxy::start(&s3_endpoint()).await;
    let src = tempfile::tempdir().unwrap();
    write_file(src.path(), "a.txt", b"a");
    write_file(src.path(), "big.bin", &content(8, 6 * MIB));
    let ferry = Ferry::start(&[
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("FERRY_CHUNK_SIZE", "5MiB"),
    ])
    .await;
    let mut body =
        json!({"source_folder": src.path().to_str().unwrap(), "destination_bucket": s3.bucket});
    assert_eq!(ferry.put("/uploads/docs", &body).await.0, 201);
    assert_eq!(
        ferry.wait_settled("docs", SETTLE).await["state"],
        "COMPLETED"
    );
    let uploaded = wire(&proxy);

    // The copies hang at the store; ferry is killed with SIGKILL while they do.
    proxy.set_faults(Faults {
        hang: vec!["CopyObject"],
        ..Faults::default()
    });
    body["storage_class"] = json!("STANDARD_IA");
    assert_eq!(ferry.put("/uploads/docs", &body).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.received("CopyObject") < 1 {
        assert!(Instant::now() < deadline, "{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.set_faults(Faults::default());
    let ferry = ferry.restart().await;
    let job = ferry
        .wait_for("docs", SETTLE, |j| {
            j["observed_generation"] == 2 && j["state"] == "COMPLETED"
        })
        .await;
    assert_eq!(job["completed_files"], 2, "{job}");
    let [puts, parts, copies, _] = wire(&proxy);
    assert_eq!(
        [puts, parts],
        [uploaded[0], uploaded[1]],
        "no byte sent again"
    );
    assert_eq!(copies, 2, "both objects copied once the store answered");
    for key in ["docs/a.txt", "docs/big.bin"] {
        assert_eq!(
            stored(&s3, key).await.storage_class,
            Some(StorageClass::StandardIa),
            "{key}"
        );
    }
    assert!(s3.get("docs/big.bin").await == content(8, 6 * MIB));
}
