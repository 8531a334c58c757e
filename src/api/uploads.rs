//! /uploads and /uploads/{id}: creating, applying, reading, rescanning, retrying and deleting jobs.

use salvo::http::StatusCode;
use salvo::oapi::extract::{PathParam, QueryParam};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use super::body::read_body;
use super::job_view::JobView;
use super::reply::{Accepted, Created, NoContent, WholeJson};
use super::{ApiError, app_state, existing_job, page};
use crate::core::spec::{JobName, JobSpec, SpecFields, within_roots};
use crate::core::url::percent_encode;
use crate::store::{Applied, Origin};

/// A page of GET /uploads when one is asked for (`limit` or `after`), and the largest.
const DEFAULT_JOBS_PAGE: u32 = 1000;
const MAX_JOBS_PAGE: u32 = 10_000;

/// A new upload job.
///
/// The body's schema, for the OpenAPI document; the body itself is read field by field by
/// [`spec_fields`], so that a value of the wrong type is refused naming its field.
#[derive(Debug, Deserialize, ToSchema)]
#[salvo(schema(name = "ferry.api.CreateUpload"))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateUpload {
    /// An absolute path to an existing folder on ferry's machine.
    #[salvo(schema(min_length = 1, pattern = "^/"))]
    source_folder: String,
    /// The S3 bucket to upload into; objects go to `{upload_id}/{relative path}`.
    #[salvo(schema(
        min_length = 3,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9.-]*[a-z0-9]$"
    ))]
    destination_bucket: String,
    /// A glob on the path relative to source_folder (`*` stays within a folder, `**` crosses).
    /// Leave it out to take every file.
    #[salvo(schema(min_length = 1, max_length = 1024, pattern = "^[^/]"))]
    pattern: Option<String>,
    /// Objects go to `{key_prefix}{relative path}`, the prefix exactly as written (`""`: the
    /// bucket's root). Default `{upload_id}/`. Must not start with '/'; two jobs whose bucket and
    /// prefixes overlap are refused (409).
    #[salvo(schema(max_length = 1023, pattern = "^([^/]|$)"))]
    key_prefix: Option<String>,
    /// Globs (the pattern's syntax); a file matching any of them is not taken.
    #[salvo(schema(max_items = 256))]
    exclude: Option<Vec<String>>,
    /// The S3 storage class of every object; default: the bucket's.
    #[salvo(schema(
        pattern = "^(STANDARD|STANDARD_IA|ONEZONE_IA|INTELLIGENT_TIERING|GLACIER_IR|GLACIER|DEEP_ARCHIVE|REDUCED_REDUNDANCY|EXPRESS_ONEZONE)$"
    ))]
    storage_class: Option<String>,
    /// Server-side encryption of every object: `AES256` or `aws:kms`.
    #[salvo(schema(pattern = "^(AES256|aws:kms)$"))]
    sse: Option<String>,
    /// The KMS key (id, alias or ARN) with `sse: aws:kms`; default: the account's key for S3.
    #[salvo(schema(min_length = 1, max_length = 2048))]
    kms_key_id: Option<String>,
    /// User metadata (x-amz-meta-*) on every object: lowercase keys, printable ASCII values,
    /// 2 KiB in all.
    metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Object tags on every object: at most 10; keys of 1 to 128 characters, values up to 256.
    tags: Option<std::collections::BTreeMap<String, String>>,
    /// `delete`: the local file is removed once its object is verified (a move); never a file
    /// that changed since it was read. Default `keep`.
    #[salvo(schema(pattern = "^(keep|delete)$"))]
    after_upload: Option<String>,
    /// `true`: an object whose file is gone from disk (or no longer matches) is deleted from S3.
    /// A scan that would prune more than half of the job's objects, or more than 1,000, prunes
    /// nothing until confirmed (`POST /uploads/{id}/prune`). Default false.
    prune: Option<bool>,
}

/// The fields of a request body, each checked for its JSON type and named when it is wrong.
fn spec_fields(body: &[u8]) -> Result<SpecFields, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_json", message);
    let shape = "the body must be a JSON object {\"source_folder\": string, \"destination_bucket\": string, and optional pattern, key_prefix, exclude, storage_class, sse, kms_key_id, metadata, tags, after_upload, prune}";
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("{shape}: {e}")))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(invalid(format!("{shape}: it is not an object")));
    };
    const FIELDS: &[&str] = &[
        "source_folder",
        "destination_bucket",
        "pattern",
        "key_prefix",
        "exclude",
        "storage_class",
        "sse",
        "kms_key_id",
        "metadata",
        "tags",
        "after_upload",
        "prune",
    ];
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field `{unknown}`; a job takes {}",
            FIELDS.join(", ")
        )));
    }
    let wrong = |field: &str, what: &str| {
        ApiError::bad_request(
            "invalid_json",
            format!("{field}: invalid type, it must be {what}"),
        )
    };
    let mut text = |field: &str, required: bool| -> Result<Option<String>, ApiError> {
        match object.remove(field) {
            None | Some(serde_json::Value::Null) if required => {
                Err(invalid(format!("{shape}: missing field `{field}`")))
            }
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong(field, "a string")),
        }
    };
    let source_folder = text("source_folder", true)?.unwrap_or_default();
    let destination_bucket = text("destination_bucket", true)?.unwrap_or_default();
    let pattern = text("pattern", false)?;
    let key_prefix = text("key_prefix", false)?;
    let storage_class = text("storage_class", false)?;
    let sse = text("sse", false)?;
    let kms_key_id = text("kms_key_id", false)?;
    let after_upload = text("after_upload", false)?;
    let exclude = match object.remove("exclude") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(wrong("exclude", "an array of glob strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong("exclude", "an array of glob strings")),
    };
    let mut strings =
        |field: &str| -> Result<std::collections::BTreeMap<String, String>, ApiError> {
            match object.remove(field) {
                None | Some(serde_json::Value::Null) => Ok(Default::default()),
                Some(serde_json::Value::Object(map)) => map
                    .into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => Ok((k, s)),
                        _ => Err(wrong(field, "an object of strings (every value a string)")),
                    })
                    .collect(),
                Some(_) => Err(wrong(field, "an object of strings")),
            }
        };
    let metadata = strings("metadata")?;
    let tags = strings("tags")?;
    let prune = match object.remove("prune") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => return Err(wrong("prune", "true or false")),
    };
    Ok(SpecFields {
        source_folder,
        destination_bucket,
        pattern,
        key_prefix,
        exclude,
        storage_class,
        sse,
        kms_key_id,
        metadata,
        tags,
        after_upload,
        prune,
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.CreatedUpload"))]
pub struct CreatedUpload {
    upload_id: String,
    /// Always `created`.
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.AppliedUpload"))]
pub struct AppliedUpload {
    upload_id: String,
    /// `created`, `updated` or `unchanged`.
    status: String,
    /// The spec's generation after this call.
    generation: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.RetryAccepted"))]
pub struct RetryAccepted {
    upload_id: String,
    /// Always `retry_requested`.
    status: String,
    /// How many FAILED files went back to PENDING.
    retried_files: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.RescanAccepted"))]
pub struct RescanAccepted {
    upload_id: String,
    /// Always `scan_requested`.
    status: String,
}

/// Create an upload job
///
/// Validates the spec, records the job, and starts scanning its folder. Every matching file
/// goes to `s3://{destination_bucket}/{key_prefix}{relative path}` (by default
/// `{upload_id}/{relative path}`).
#[endpoint(operation_id = "ferry.api.create_upload", tags("uploads"), request_body = CreateUpload)]
pub(super) async fn create_upload(
    req: &mut Request,
    depot: &mut Depot,
) -> Result<Created<CreatedUpload>, ApiError> {
    let roots = app_state(depot).allowed_roots.clone();
    let id = uuid::Uuid::new_v4().to_string();
    let spec = read_spec(req, &id, &roots).await?;

    let app = app_state(depot);
    app.ctx.store.create_job(&id, &spec).await?;
    tracing::info!(upload_id = %id, source_folder = %spec.source_folder.display(), bucket = %spec.destination_bucket, key_prefix = %spec.object.key_prefix, pattern = ?spec.pattern.as_ref().map(|p| p.as_str()), "upload job created");
    app.ctx.request_scan_now(&id);
    Ok(Created(CreatedUpload {
        upload_id: id,
        status: "created".into(),
    }))
}

/// Reads and validates the spec of the job `id` from the request body.
async fn read_spec(
    req: &mut Request,
    id: &str,
    roots: &[std::path::PathBuf],
) -> Result<JobSpec, ApiError> {
    let body = read_body(req).await?;
    let fields = spec_fields(&body)?;
    let spec = JobSpec::parse(id, &fields)?;
    check_source_folder(&fields.source_folder).await?;
    check_allowed_roots(&fields.source_folder, roots).await?;
    Ok(spec)
}

/// Create or update an upload job by name
///
/// Declarative and idempotent: the job named `upload_id` (a DNS-1123 label, such as `nightly-logs`) is made
/// to have this spec. 201 when created, 200 when it already had it (`unchanged`) or was changed
/// (`updated`, its generation bumped). A new pattern or exclude takes new files in and lets files
/// that no longer match leave the count; a new bucket, key prefix, storage class, encryption,
/// metadata or tags brings every object to its new look (copied or retagged in S3 where its bytes
/// are, uploaded where they cannot be), and a new folder uploads its files. Objects under an old
/// prefix or bucket stay.
#[endpoint(operation_id = "ferry.api.put_upload", 
    tags("uploads"),
    request_body = CreateUpload,
    parameters(("upload_id" = String, Path, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description = "The job's name: a DNS-1123 label")),
    responses((status_code = 201, description = "Created", body = AppliedUpload))
)]
pub(super) async fn put_upload(
    upload_id: PathParam<String>,
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> Result<Json<AppliedUpload>, ApiError> {
    let name = upload_id.into_inner();
    JobName::parse(&name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let roots = app_state(depot).allowed_roots.clone();
    let spec = read_spec(req, &name, &roots).await?;
    let app = app_state(depot);
    let (applied, job) = app.ctx.store.apply_job(&name, &spec, Origin::Api).await?;
    let status = match applied {
        Applied::Created => {
            res.status_code(StatusCode::CREATED);
            "created"
        }
        Applied::Unchanged => "unchanged",
        Applied::Updated { .. } => "updated",
    };
    if applied != Applied::Unchanged {
        tracing::info!(upload_id = %name, status, generation = job.generation, "upload job applied");
        app.ctx.request_scan_now(&name);
        app.ctx.wake_janitor();
    }
    Ok(Json(AppliedUpload {
        upload_id: name,
        status: status.into(),
        generation: job.generation,
    }))
}

/// With FERRY_ALLOWED_ROOTS set, the folder, once '..' and symbolic links are resolved, must lie
/// inside one of the roots: 403 otherwise.
async fn check_allowed_roots(folder: &str, roots: &[std::path::PathBuf]) -> Result<(), ApiError> {
    if roots.is_empty() {
        return Ok(());
    }
    let canonical = tokio::fs::canonicalize(folder).await.map_err(|e| {
        ApiError::bad_request(
            "invalid_source_folder",
            format!("source_folder {folder:?} cannot be resolved: {e}"),
        )
    })?;
    if within_roots(&canonical, roots) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "outside_allowed_roots",
            format!(
                "source_folder {folder:?} resolves to {:?}, outside the folders ferry may read (FERRY_ALLOWED_ROOTS)",
                canonical.display().to_string()
            ),
        ))
    }
}

async fn check_source_folder(folder: &str) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_source_folder", message);
    match tokio::fs::metadata(folder).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(invalid(format!(
            "source_folder {folder:?} is not a directory; give the folder that holds the files"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(invalid(format!(
            "source_folder {folder:?} does not exist on ferry's machine"
        ))),
        Err(e) => Err(invalid(format!(
            "source_folder {folder:?} cannot be read: {e}"
        ))),
    }
}

/// Get an upload job's progress
#[endpoint(operation_id = "ferry.api.get_upload", tags("uploads"))]
pub(super) async fn get_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Json<JobView>, ApiError> {
    let app = app_state(depot);
    let store = &app.ctx.store;
    let job = existing_job(&app, &upload_id).await?;
    let files = store.job_tally(&upload_id).await?;
    let last_scan = app.ctx.last_scan(&upload_id);
    let given_up = store
        .aborts_given_up(Some(&[upload_id.as_str()]))
        .await?
        .remove(upload_id.as_str())
        .unwrap_or_default();
    let prunes = store
        .prune_counts(Some(&[upload_id.as_str()]))
        .await?
        .remove(upload_id.as_str())
        .unwrap_or_default();
    let fields = job.fields()?;
    Ok(Json(JobView::new(
        job, fields, &files, last_scan, given_up, prunes,
    )))
}

/// List upload jobs
///
/// Without `limit` or `after`: every job, oldest first. With either: a page of at most `limit`
/// jobs (default 1000, at most 10000) in `upload_id` order; when more may remain, a
/// `Link: <...>; rel="next"` header gives the next page (`after` = the last id). A page is one
/// index seek however many jobs there are, and a job deleted between pages moves nothing.
#[endpoint(operation_id = "ferry.api.list_uploads",
    tags("uploads"),
    parameters(
        ("after" = Option<String>, Query, description = "Only jobs whose upload_id sorts after this one (the last of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "At most this many jobs (default 1000 once paged)")
    )
)]
pub(super) async fn list_uploads(
    after: QueryParam<String, false>,
    // Read as text: a limit that is not a whole number must be refused, not defaulted.
    limit: QueryParam<String, false>,
    depot: &mut Depot,
    res: &mut Response,
) -> Result<WholeJson<Vec<JobView>>, ApiError> {
    let app = app_state(depot);
    let store = &app.ctx.store;
    let paged = match (after.as_deref(), limit.as_deref()) {
        (None, None) => None,
        (_, raw) => Some(page::limit(raw, DEFAULT_JOBS_PAGE, MAX_JOBS_PAGE)?),
    };
    let jobs = match paged {
        None => store.list_jobs().await?,
        Some(limit) => store.list_jobs_page(after.as_deref(), limit).await?,
    };
    if let Some(limit) = paged
        && jobs.len() == limit as usize
        && let Some(last) = jobs.last()
    {
        let next = format!("/uploads?limit={limit}&after={}", percent_encode(&last.id));
        page::link_next(res, &next);
    }
    // A page reads its own jobs' counts; the whole list reads every job's, each in one statement.
    let page_ids: Option<Vec<&str>> = paged.map(|_| jobs.iter().map(|j| j.id.as_str()).collect());
    let page_ids = page_ids.as_deref();
    let mut tallies = match page_ids {
        None => store.all_tallies().await?,
        Some(ids) => store.tallies_of(ids).await?,
    };
    let mut given_up = store.aborts_given_up(page_ids).await?;
    let mut prunes = store.prune_counts(page_ids).await?;
    let views = jobs
        .into_iter()
        .map(|job| {
            let files = tallies.remove(&job.id).unwrap_or_default();
            let last_scan = app.ctx.last_scan(&job.id);
            let aborts = given_up.remove(&job.id).unwrap_or_default();
            let queued = prunes.remove(&job.id).unwrap_or_default();
            let fields = job.fields()?;
            Ok(JobView::new(job, fields, &files, last_scan, aborts, queued))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(WholeJson(views))
}

/// Scan an upload job's folder now
///
/// The file monitor's check: new and changed files (by size and mtime) go back to PENDING,
/// files gone from disk leave the job's count.
#[endpoint(operation_id = "ferry.api.rescan_upload", tags("uploads"))]
pub(super) async fn rescan_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Accepted<RescanAccepted>, ApiError> {
    let app = app_state(depot);
    existing_job(&app, &upload_id).await?;
    app.ctx.request_scan_now(&upload_id);
    Ok(Accepted(RescanAccepted {
        upload_id: upload_id.into_inner(),
        status: "scan_requested".into(),
    }))
}

/// Retry an upload job's failed files
///
/// Every FAILED file goes back to PENDING with its attempts reset, and the job's folder and bucket
/// are checked again (a job blocked by a missing bucket goes on once the bucket is there).
#[endpoint(operation_id = "ferry.api.retry_upload", tags("uploads"))]
pub(super) async fn retry_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Accepted<RetryAccepted>, ApiError> {
    let app = app_state(depot);
    existing_job(&app, &upload_id).await?;
    let files = app.ctx.store.retry_failed(&upload_id).await?;
    tracing::info!(upload_id = %*upload_id, files, "failed files put back to PENDING");
    app.ctx.request_scan_now(&upload_id);
    app.ctx.wake_dispatcher();
    Ok(Accepted(RetryAccepted {
        upload_id: upload_id.into_inner(),
        status: "retry_requested".into(),
        retried_files: files,
    }))
}

/// Delete an upload job
///
/// Stops the job and aborts its open multipart uploads. Objects already in S3 stay.
#[endpoint(operation_id = "ferry.api.delete_upload", tags("uploads"))]
pub(super) async fn delete_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<NoContent, ApiError> {
    let app = app_state(depot);
    let job = existing_job(&app, &upload_id).await?;
    if job.managed_by == "manifest" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_elsewhere",
            format!(
                "the job {:?} is declared by the manifest {}; remove the document to delete it",
                *upload_id,
                job.manifest_source.unwrap_or_default()
            ),
        ));
    }
    if !app.ctx.store.delete_job(&upload_id).await? {
        return Err(ApiError::job_not_found(&upload_id));
    }
    tracing::info!(upload_id = %*upload_id, "upload job deleted");
    app.ctx.forget_job(&upload_id);
    app.ctx.wake_janitor();
    Ok(NoContent)
}
