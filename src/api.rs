//! The HTTP API: the only module that knows salvo.
//!
//! Handlers translate between JSON and the engine's context; every error leaves as
//! `{"error": {"code", "message"}}` with a stable code, and the OpenAPI document at
//! /openapi.json is generated from the handlers themselves.

use std::sync::Arc;

use salvo::catcher::Catcher;
use salvo::http::{StatusCode, StatusError};
use salvo::oapi::extract::{PathParam, QueryParam};
use salvo::oapi::{
    BasicType, Components, Content, EndpointOutRegister, Object, Operation, RefOr,
    Response as OaResponse, Schema, ToSchema,
};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::ApiToken;
use crate::core::model::{FileState, FileTally, JobState, conditions, job_state, progress};
use crate::core::spec::{JobName, JobSpec, SpecError, within_roots};
use crate::core::time::rfc3339_from_unix_nanos;
use crate::core::url::percent_encode;
use crate::engine::Context;
use crate::s3::Readiness as S3Readiness;
use crate::store::{AbortsGivenUp, Applied, FileRow, JobRow, Origin, StoreError};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How much of a too-large body is read (and dropped) so that the 413 reaches the client.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const DEFAULT_FILES_PAGE: u32 = 1000;
const MAX_FILES_PAGE: u32 = 10_000;

/// What the handlers share.
pub struct AppState {
    pub ctx: Arc<Context>,
    /// Source folders must lie inside one of these (canonical); empty: anywhere.
    pub allowed_roots: Vec<std::path::PathBuf>,
}

// ---- errors ----

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn job_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "upload_not_found",
            format!("no upload job has id {id:?}"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Owned { .. } = e {
            return ApiError::new(StatusCode::CONFLICT, "managed_elsewhere", e.to_string());
        }
        if e.is_unavailable() {
            // Nothing was stored; the same request can succeed once the database can be
            // written again (a full disk given room, a lock released).
            tracing::warn!(error = %e, "the database cannot be written; the request is refused with 503");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!(
                    "nothing was stored: ferry cannot write its database now ({e}); try again later"
                ),
            );
        }
        // The cause goes to the log; the client learns only that it was ours.
        tracing::error!(error = %e, "store error while answering a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "ferry could not read or write its database; see its log",
        )
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        let code = match e {
            SpecError::RelativeSourceFolder(_) | SpecError::EmptySourceFolder => {
                "invalid_source_folder"
            }
            SpecError::InvalidBucket { .. } => "invalid_bucket",
            SpecError::InvalidPattern { .. } => "invalid_pattern",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// The JSON body of every error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, such as `invalid_json` or `upload_not_found`.
    code: String,
    /// What was wrong and what is accepted.
    message: String,
}

fn error_body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    }
}

impl Scribe for ApiError {
    fn render(self, res: &mut Response) {
        res.status_code(self.status);
        res.render(Json(error_body(self.code, &self.message)));
    }
}

impl EndpointOutRegister for ApiError {
    fn register(components: &mut Components, operation: &mut Operation) {
        operation.responses.insert(
            "default",
            OaResponse::new("An error: `{\"error\": {\"code\", \"message\"}}`").add_content(
                "application/json",
                Content::new(ErrorBody::to_schema(components)),
            ),
        );
    }
}

/// Turns salvo's own errors (no route, wrong method, body too large) into the same JSON.
struct JsonErrors;

#[async_trait]
impl Handler for JsonErrors {
    async fn handle(
        &self,
        _req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let status = res.status_code.unwrap_or(StatusCode::NOT_FOUND);
        if !(status.is_client_error() || status.is_server_error()) {
            return;
        }
        if !(res.body.is_none() || res.body.is_error()) {
            return;
        }
        let err = StatusError::from_code(status).unwrap_or_else(StatusError::internal_server_error);
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        let message = match status {
            StatusCode::NOT_FOUND => "no such endpoint; see /openapi.json for the API".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => {
                "this endpoint does not take that method; see /openapi.json for the API".to_owned()
            }
            _ => err.brief.clone(),
        };
        res.status_code(status);
        res.render(Json(error_body(code, &message)));
    }
}

// ---- replies with a status other than 200 ----

/// A JSON body with 201 Created.
pub struct Created<T>(T);
/// A JSON body with 202 Accepted.
pub struct Accepted<T>(T);
/// 204 No Content.
pub struct NoContent;

impl<T: Serialize + Send> Scribe for Created<T> {
    fn render(self, res: &mut Response) {
        res.status_code(StatusCode::CREATED);
        res.render(Json(self.0));
    }
}

impl<T: Serialize + Send> Scribe for Accepted<T> {
    fn render(self, res: &mut Response) {
        res.status_code(StatusCode::ACCEPTED);
        res.render(Json(self.0));
    }
}

impl Scribe for NoContent {
    fn render(self, res: &mut Response) {
        res.status_code(StatusCode::NO_CONTENT);
    }
}

fn register_json<T: ToSchema>(
    status: &str,
    what: &str,
    components: &mut Components,
    operation: &mut Operation,
) {
    operation.responses.insert(
        status,
        OaResponse::new(what)
            .add_content("application/json", Content::new(T::to_schema(components))),
    );
}

impl<T: ToSchema> EndpointOutRegister for Created<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        register_json::<T>("201", "Created", components, operation);
    }
}

impl<T: ToSchema> EndpointOutRegister for Accepted<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        register_json::<T>("202", "Accepted", components, operation);
    }
}

impl EndpointOutRegister for NoContent {
    fn register(_components: &mut Components, operation: &mut Operation) {
        operation
            .responses
            .insert("204", OaResponse::new("Done; no body"));
    }
}

// ---- schemas of the core's enums ----

fn string_enum_schema(
    description: &str,
    values: impl IntoIterator<Item = &'static str>,
) -> RefOr<Schema> {
    Object::new()
        .schema_type(BasicType::String)
        .description(description)
        .enum_values(values)
        .into()
}

impl ToSchema for JobState {
    fn to_schema(_: &mut Components) -> RefOr<Schema> {
        string_enum_schema("A job's state", JobState::ALL.iter().map(|s| s.as_str()))
    }
}

impl ToSchema for FileState {
    fn to_schema(_: &mut Components) -> RefOr<Schema> {
        string_enum_schema(
            "A tracked file's state",
            FileState::ALL.iter().map(|s| s.as_str()),
        )
    }
}

// ---- bodies ----

/// A new upload job.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    upload_id: String,
    /// Always `created`.
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedUpload {
    upload_id: String,
    /// `created`, `updated` or `unchanged`.
    status: String,
    /// The spec's generation after this call.
    generation: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetryAccepted {
    upload_id: String,
    /// Always `retry_requested`.
    status: String,
    /// How many FAILED files went back to PENDING.
    retried_files: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RescanAccepted {
    upload_id: String,
    /// Always `scan_requested`.
    status: String,
}

/// An upload job and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    upload_id: String,
    state: JobState,
    /// Byte-weighted, 0.0 to 1.0; exactly 1.0 when, and only when, the job is COMPLETED.
    progress: f64,
    total_files: u64,
    /// Files in S3 (UPLOADED).
    completed_files: u64,
    failed_files: u64,
    pending_files: u64,
    in_progress_files: u64,
    total_bytes: u64,
    /// Bytes known to be in S3, counting acknowledged parts of files still uploading.
    uploaded_bytes: u64,
    source_folder: String,
    destination_bucket: String,
    pattern: Option<String>,
    /// What stops the whole job (a missing bucket, a missing folder), if anything.
    error: Option<String>,
    created_at: String,
    updated_at: String,
    /// When the last full scan of the source folder ended.
    scanned_at: Option<String>,
    /// The spec's version: 1 at creation, bumped by every change (PUT).
    generation: i64,
    /// The generation the last completed scan reconciled.
    observed_generation: i64,
    /// What holds and what does not, and why.
    conditions: Vec<ConditionView>,
    /// `api` or `manifest`: who declares the job.
    managed_by: String,
    /// The manifest document that declares the job (file.yaml#2), if one does.
    manifest: Option<String>,
    /// Multipart uploads of this job's keys that the store would not abort (it refused every
    /// try, or does not do aborts): they may hold storage until the bucket's lifecycle rule
    /// removes them.
    multipart_aborts_given_up: u64,
    /// The store's last answer to such an abort.
    multipart_abort_error: Option<String>,
}

/// A condition of a job's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConditionView {
    /// Reconciled, SourceFolderReadable, BucketWritable, FilesFailing or Completed.
    #[serde(rename = "type")]
    kind: String,
    /// "True" or "False", as in Kubernetes.
    status: String,
    reason: String,
    message: String,
}

impl JobView {
    fn new(
        job: JobRow,
        files: &FileTally,
        last_scan: Option<String>,
        given_up: AbortsGivenUp,
    ) -> Self {
        let state = job_state(job.facts(), files);
        let conditions = conditions(
            job.blocker(),
            job.walk_error.as_deref(),
            job.generation,
            job.observed_generation,
            files,
            state,
        )
        .into_iter()
        .map(|c| ConditionView {
            kind: c.kind.into(),
            status: if c.status { "True" } else { "False" }.into(),
            reason: c.reason.into(),
            message: c.message,
        })
        .collect();
        JobView {
            generation: job.generation,
            observed_generation: job.observed_generation,
            conditions,
            managed_by: job.managed_by,
            manifest: job.manifest_source,
            state,
            progress: progress(state, files),
            total_files: files.total_files(),
            completed_files: files.uploaded.files,
            failed_files: files.failed.files,
            pending_files: files.pending.files,
            in_progress_files: files.in_progress.files,
            total_bytes: files.total_bytes(),
            uploaded_bytes: if state == JobState::Completed {
                files.total_bytes()
            } else {
                files.bytes_sent()
            },
            multipart_aborts_given_up: given_up.count,
            multipart_abort_error: given_up.last_error,
            upload_id: job.id,
            source_folder: job.source_folder,
            destination_bucket: job.destination_bucket,
            pattern: job.pattern,
            error: job.error,
            created_at: job.created_at,
            updated_at: job.updated_at,
            scanned_at: last_scan.or(job.scanned_at),
        }
    }
}

/// A tracked file.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    /// Relative to the source folder, '/'-separated.
    path: String,
    /// The object key: `{upload_id}/{path}`.
    key: String,
    state: FileState,
    size: u64,
    /// Modification time on disk when last seen, RFC 3339 with nanoseconds.
    mtime: String,
    mtime_ns: i64,
    bytes_uploaded: u64,
    attempts: i64,
    last_error: Option<String>,
    etag: Option<String>,
    updated_at: String,
}

impl From<FileRow> for FileView {
    fn from(f: FileRow) -> Self {
        FileView {
            key: crate::core::plan::object_key(&f.upload_job_id, &f.path),
            path: f.path,
            state: f.state.0,
            size: u64::try_from(f.size).unwrap_or(0),
            mtime: rfc3339_from_unix_nanos(f.mtime_ns),
            mtime_ns: f.mtime_ns,
            bytes_uploaded: u64::try_from(f.bytes_sent).unwrap_or(0),
            attempts: f.attempts,
            last_error: f.last_error,
            etag: f.etag,
            updated_at: f.updated_at,
        }
    }
}

/// What the last sync of FERRY_MANIFESTS_DIR found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManifestsView {
    /// The folder, or null when FERRY_MANIFESTS_DIR is not set.
    folder: Option<String>,
    synced_at: Option<String>,
    /// The jobs its documents declare.
    jobs: Vec<DeclaredView>,
    /// The documents that cannot be applied, and why.
    errors: Vec<ManifestErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeclaredView {
    name: String,
    /// file.yaml#2: the file and the document (from 1).
    source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ManifestErrorView {
    file: String,
    /// From 1; 0 when the whole file is refused.
    document: usize,
    /// The line the document starts on; 0 when unknown.
    line: usize,
    reason: String,
    /// All of it, in one line.
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`
    status: String,
    database: String,
    s3: String,
}

// ---- handlers ----

fn app_state(depot: &Depot) -> Arc<AppState> {
    depot
        .get_typed::<Arc<AppState>>()
        .expect("the state is injected by the router")
        .clone()
}

/// Create an upload job
///
/// Validates the spec, records the job, and starts scanning its folder. Every matching file
/// goes to `s3://{destination_bucket}/{upload_id}/{relative path}`.
#[endpoint(tags("uploads"), request_body = CreateUpload)]
async fn create_upload(
    req: &mut Request,
    depot: &mut Depot,
) -> Result<Created<CreatedUpload>, ApiError> {
    let roots = app_state(depot).allowed_roots.clone();
    let (request, spec) = read_spec(req, &roots).await?;

    let app = app_state(depot);
    let id = uuid::Uuid::new_v4().to_string();
    app.ctx
        .store
        .create_job(
            &id,
            &request.source_folder,
            spec.destination_bucket.as_str(),
            spec.pattern.as_ref().map(|p| p.as_str()),
        )
        .await?;
    tracing::info!(upload_id = %id, source_folder = %request.source_folder, bucket = %spec.destination_bucket, pattern = ?request.pattern, "upload job created");
    app.ctx.request_scan_now(&id);
    Ok(Created(CreatedUpload {
        upload_id: id,
        status: "created".into(),
    }))
}

/// Reads and validates a job spec from the request body.
async fn read_spec(
    req: &mut Request,
    roots: &[std::path::PathBuf],
) -> Result<(CreateUpload, JobSpec), ApiError> {
    let body = read_body(req).await?;
    let request: CreateUpload = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body must be a JSON object {{\"source_folder\": string, \"destination_bucket\": string, \"pattern\": string (optional)}}: {e}"
            ),
        )
    })?;
    let spec = JobSpec::parse(
        &request.source_folder,
        &request.destination_bucket,
        request.pattern.as_deref(),
    )?;
    check_source_folder(&request.source_folder).await?;
    check_allowed_roots(&request.source_folder, roots).await?;
    Ok((request, spec))
}

/// Create or update an upload job by name
///
/// Declarative and idempotent: the job named `upload_id` (a DNS-1123 label, such as `nightly-logs`) is made
/// to have this spec. 201 when created, 200 when it already had it (`unchanged`) or was changed
/// (`updated`, its generation bumped). A new pattern takes new files in and lets files that no
/// longer match leave the count; a new folder or bucket uploads every file again, to the new
/// place. Objects already in S3 stay.
#[endpoint(
    tags("uploads"),
    request_body = CreateUpload,
    parameters(("upload_id" = String, Path, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description = "The job's name: a DNS-1123 label")),
    responses((status_code = 201, description = "Created", body = AppliedUpload))
)]
async fn put_upload(
    upload_id: PathParam<String>,
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> Result<Json<AppliedUpload>, ApiError> {
    let name = upload_id.into_inner();
    JobName::parse(&name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let roots = app_state(depot).allowed_roots.clone();
    let (request, spec) = read_spec(req, &roots).await?;
    let app = app_state(depot);
    let (applied, job) = app
        .ctx
        .store
        .apply_job(
            &name,
            &request.source_folder,
            spec.destination_bucket.as_str(),
            spec.pattern.as_ref().map(|p| p.as_str()),
            Origin::Api,
        )
        .await?;
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

/// Reads a request body of at most [`MAX_BODY_BYTES`]. A larger one is read to its end (up to
/// [`DRAIN_LIMIT`]) and dropped before the 413 goes out, so that the client, still sending, gets
/// the answer instead of a reset connection.
async fn read_body(req: &mut Request) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(salvo::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut body = req.take_body();
    let mut buf = Vec::new();
    let mut total = 0usize;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request("invalid_body", format!("cannot read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                total += data.len();
                if total <= MAX_BODY_BYTES {
                    buf.extend_from_slice(&data);
                } else if total > DRAIN_LIMIT {
                    break;
                }
            }
        }
        Ok::<(), ApiError>(())
    };
    // A client that trickles its body must not hold a handler forever.
    tokio::time::timeout(BODY_TIMEOUT, reading)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??;
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(buf)
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
#[endpoint(tags("uploads"))]
async fn get_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Json<JobView>, ApiError> {
    let app = app_state(depot);
    let store = &app.ctx.store;
    let job = store
        .get_job(&upload_id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(&upload_id))?;
    let files = store.job_tally(&upload_id).await?;
    let last_scan = app.ctx.last_scan(&upload_id);
    let given_up = store
        .aborts_given_up(Some(&upload_id))
        .await?
        .remove(upload_id.as_str())
        .unwrap_or_default();
    Ok(Json(JobView::new(job, &files, last_scan, given_up)))
}

/// List every upload job
#[endpoint(tags("uploads"))]
async fn list_uploads(depot: &mut Depot) -> Result<Json<Vec<JobView>>, ApiError> {
    let app = app_state(depot);
    let store = &app.ctx.store;
    let jobs = store.list_jobs().await?;
    let mut tallies = store.all_tallies().await?;
    let mut given_up = store.aborts_given_up(None).await?;
    Ok(Json(
        jobs.into_iter()
            .map(|job| {
                let files = tallies.remove(&job.id).unwrap_or_default();
                let last_scan = app.ctx.last_scan(&job.id);
                let aborts = given_up.remove(&job.id).unwrap_or_default();
                JobView::new(job, &files, last_scan, aborts)
            })
            .collect(),
    ))
}

/// List an upload job's tracked files
///
/// Ordered by path. At most `limit` files (default 1000, at most 10000) are returned; when more
/// remain, a `Link: <...>; rel="next"` header gives the next page (`after` = the last path).
#[endpoint(
    tags("uploads"),
    parameters(
        ("state" = Option<FileState>, Query, description = "Only files in this state"),
        ("after" = Option<String>, Query, description = "Only paths after this one (the last path of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "At most this many files (default 1000)")
    )
)]
async fn list_files(
    upload_id: PathParam<String>,
    state: QueryParam<String, false>,
    after: QueryParam<String, false>,
    // Read as text: a limit that is not a whole number must be refused, not defaulted.
    limit: QueryParam<String, false>,
    depot: &mut Depot,
    res: &mut Response,
) -> Result<Json<Vec<FileView>>, ApiError> {
    let file_state = match state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<FileState>().map_err(|_| {
            ApiError::bad_request(
                "invalid_state",
                format!(
                    "state {s:?} is not a file state; use PENDING, IN_PROGRESS, UPLOADED or FAILED"
                ),
            )
        })?),
    };
    let limit = match limit.into_inner() {
        None => DEFAULT_FILES_PAGE,
        Some(raw) => raw.trim().parse::<u32>().unwrap_or(0),
    };
    if !(1..=MAX_FILES_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be from 1 to {MAX_FILES_PAGE}"),
        ));
    }
    let app = app_state(depot);
    let store = &app.ctx.store;
    if store.get_job(&upload_id).await?.is_none() {
        return Err(ApiError::job_not_found(&upload_id));
    }
    let rows = store
        .list_files(&upload_id, file_state, after.as_deref(), limit)
        .await?;
    if rows.len() == limit as usize
        && let Some(last) = rows.last()
    {
        let mut next = format!(
            "/uploads/{}/files?limit={limit}&after={}",
            percent_encode(&upload_id),
            percent_encode(&last.path)
        );
        if let Some(s) = file_state {
            next.push_str(&format!("&state={s}"));
        }
        if let Ok(value) = format!("<{next}>; rel=\"next\"").parse() {
            res.headers_mut().insert("link", value);
        }
    }
    Ok(Json(rows.into_iter().map(FileView::from).collect()))
}

/// Scan an upload job's folder now
///
/// The file monitor's check: new and changed files (by size and mtime) go back to PENDING,
/// files gone from disk leave the job's count.
#[endpoint(tags("uploads"))]
async fn rescan_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Accepted<RescanAccepted>, ApiError> {
    let app = app_state(depot);
    if app.ctx.store.get_job(&upload_id).await?.is_none() {
        return Err(ApiError::job_not_found(&upload_id));
    }
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
#[endpoint(tags("uploads"))]
async fn retry_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Accepted<RetryAccepted>, ApiError> {
    let app = app_state(depot);
    if app.ctx.store.get_job(&upload_id).await?.is_none() {
        return Err(ApiError::job_not_found(&upload_id));
    }
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
#[endpoint(tags("uploads"))]
async fn delete_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<NoContent, ApiError> {
    let app = app_state(depot);
    match app.ctx.store.get_job(&upload_id).await? {
        None => return Err(ApiError::job_not_found(&upload_id)),
        Some(job) if job.managed_by == "manifest" => {
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
        Some(_) => {}
    }
    if !app.ctx.store.delete_job(&upload_id).await? {
        return Err(ApiError::job_not_found(&upload_id));
    }
    tracing::info!(upload_id = %*upload_id, "upload job deleted");
    app.ctx.forget_job(&upload_id);
    app.ctx.wake_janitor();
    Ok(NoContent)
}

/// The manifests folder: the jobs it declares and the documents that cannot be applied
#[endpoint(tags("manifests"))]
async fn get_manifests(depot: &mut Depot) -> Json<ManifestsView> {
    let app = app_state(depot);
    let status = app.ctx.manifests.status();
    Json(ManifestsView {
        folder: status.folder.map(|f| f.display().to_string()),
        synced_at: status.synced_at,
        jobs: status
            .jobs
            .into_iter()
            .map(|(name, source)| DeclaredView { name, source })
            .collect(),
        errors: status
            .errors
            .into_iter()
            .map(|e| ManifestErrorView {
                message: e.to_string(),
                file: e.file,
                document: e.document,
                line: e.line,
                reason: e.reason,
            })
            .collect(),
    })
}

/// Liveness
#[endpoint(tags("health"))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// How long readiness waits for S3.
const READINESS_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

/// Readiness: the database can be written and S3 can be reached with these credentials
#[endpoint(tags("health"))]
async fn readyz(depot: &mut Depot) -> Result<Json<Readiness>, ApiError> {
    let app = app_state(depot);
    // A write, not a read: a full disk or a read-only file still reads fine.
    if let Err(e) = app.ctx.store.probe_write().await {
        tracing::warn!(error = %e, "not ready: database");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!("the database cannot be written: {e}"),
        ));
    }
    // Within the probe's budget: a kubelet waits a second or so, and a hung S3 must read as
    // not ready, not as a probe that times out.
    let s3 = tokio::time::timeout(READINESS_BUDGET, app.ctx.s3.readiness())
        .await
        .unwrap_or_else(|_| {
            S3Readiness::Unreachable(format!(
                "S3 did not answer within {} s",
                READINESS_BUDGET.as_secs()
            ))
        });
    match s3 {
        S3Readiness::Ready => {}
        S3Readiness::Unreachable(why) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "s3_unreachable",
                format!("S3 cannot be reached ({why}); check AWS_ENDPOINT_URL and the network"),
            ));
        }
        S3Readiness::CredentialsRefused(why) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "s3_credentials_refused",
                why,
            ));
        }
    }
    Ok(Json(Readiness {
        status: "ready".into(),
        database: "ok".into(),
        s3: "ok".into(),
    }))
}

/// Prometheus metrics, in the text exposition format
///
/// Open like the probes, for a scraper without the token: the series carry no job names, paths or
/// buckets, only counts by state, operation and failure reason.
#[endpoint(tags("health"), responses((status_code = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app_state(depot);
    let store = &app.ctx.store;
    let jobs = store.list_jobs().await?;
    let mut tallies = store.all_tallies().await?;
    let mut by_state: Vec<(&'static str, u64)> =
        JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut files = FileTally::default();
    for job in jobs {
        let tally = tallies.remove(&job.id).unwrap_or_default();
        let state = job_state(job.facts(), &tally);
        if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == state.as_str()) {
            slot.1 += 1;
        }
        for state in FileState::ALL {
            files.add(*state, *tally.of(*state));
        }
    }
    let snapshot = crate::metrics::Snapshot {
        jobs: by_state,
        files: FileState::ALL
            .iter()
            .map(|s| (s.as_str(), files.of(*s).files))
            .collect(),
        queue_depth: files.pending.files,
        multipart_aborts: {
            let (waiting, given_up) = store.abort_counts().await?;
            vec![("waiting", waiting), ("given_up", given_up)]
        },
        s3_paused: app.ctx.s3_paused(),
    };
    res.add_header(
        salvo::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
        true,
    )
    .ok();
    res.write_body(crate::metrics::render(&snapshot)).ok();
    Ok(())
}

/// Puts the shared state in every request's depot.
struct Inject(Arc<AppState>);

#[async_trait]
impl Handler for Inject {
    async fn handle(
        &self,
        _req: &mut Request,
        depot: &mut Depot,
        _res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        depot.insert_typed(self.0.clone());
    }
}

/// The routes that need the token when one is set.
fn guarded_routes() -> Router {
    Router::new()
        .push(
            Router::with_path("uploads")
                .get(list_uploads)
                .post(create_upload)
                .push(
                    Router::with_path("{upload_id}")
                        .get(get_upload)
                        .put(put_upload)
                        .delete(delete_upload)
                        .push(Router::with_path("files").get(list_files))
                        .push(Router::with_path("rescan").post(rescan_upload))
                        .push(Router::with_path("retry").post(retry_upload)),
                ),
        )
        .push(Router::with_path("manifests").get(get_manifests))
}

/// Probes stay open, so that a kubelet or a load balancer can reach them without the token.
fn probe_routes() -> Router {
    Router::new()
        .push(Router::with_path("healthz").get(healthz))
        .push(Router::with_path("readyz").get(readyz))
        .push(Router::with_path("metrics").get(metrics))
}

fn routes() -> Router {
    Router::new().push(guarded_routes()).push(probe_routes())
}

/// Lets a request through only with `Authorization: Bearer <token>`, compared in constant time.
struct RequireToken(ApiToken);

#[async_trait]
impl Handler for RequireToken {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let given = req
            .headers()
            .get(salvo::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let ok = given.is_some_and(|t| constant_time_eq(t.as_bytes(), self.0.expose().as_bytes()));
        if !ok {
            let message = if given.is_none() {
                "this endpoint needs `Authorization: Bearer <token>` (FERRY_API_TOKEN)"
            } else {
                "the bearer token is not the one ferry was started with"
            };
            res.headers_mut().insert(
                "www-authenticate",
                salvo::http::HeaderValue::from_static("Bearer"),
            );
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).render(res);
            ctrl.skip_rest();
        }
    }
}

/// Equal bytes, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The OpenAPI document of the API.
///
/// With a token, the document says so: a `bearer` security scheme required by every operation
/// but the probes and the document itself, so that clients (and the fuzzing in CI) know.
pub fn openapi(token_required: bool) -> salvo::oapi::OpenApi {
    use salvo::oapi::SecurityRequirement;
    use salvo::oapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let doc = salvo::oapi::OpenApi::new("ferry", env!("CARGO_PKG_VERSION")).merge_router(&routes());
    if !token_required {
        return doc;
    }
    let mut doc = doc
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::new(HttpAuthScheme::Bearer)
                    .description("FERRY_API_TOKEN, as `Authorization: Bearer <token>`"),
            ),
        )
        .security([SecurityRequirement::new("bearer", Vec::<String>::new())]);
    let mut components = doc.components.clone();
    let unauthorized = OaResponse::new("No token, or not the right one").add_content(
        "application/json",
        Content::new(ErrorBody::to_schema(&mut components)),
    );
    for (path, item) in doc.paths.iter_mut() {
        let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
        for op in item.operations.values_mut() {
            if open {
                op.securities = Some(Vec::new());
            } else {
                op.responses.insert("401", unauthorized.clone());
            }
        }
    }
    doc.components = components;
    doc
}

/// The whole service: routes, the OpenAPI document, JSON errors, and the token check on the
/// guarded routes when a token is set.
pub fn service(app: Arc<AppState>, token: Option<ApiToken>) -> Service {
    let doc = openapi(token.is_some());
    let guarded = match token {
        Some(token) => guarded_routes().hoop(RequireToken(token)),
        None => guarded_routes(),
    };
    let router = Router::new()
        .hoop(Inject(app))
        .push(guarded)
        .push(probe_routes())
        .push(doc.into_router("/openapi.json"));
    Service::new(router).catcher(Catcher::default().hoop(JsonErrors))
}
