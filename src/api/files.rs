//! /uploads/{id}/files: a job's tracked files, paged by path.

use salvo::oapi::extract::{PathParam, QueryParam};
use salvo::prelude::*;
use serde::Serialize;

use super::{ApiError, app_state, existing_job, page};
use crate::core::diff::Local;
use crate::core::model::FileState;
use crate::core::time::rfc3339_from_unix_nanos;
use crate::core::url::percent_encode;
use crate::store::FileRow;

const DEFAULT_FILES_PAGE: u32 = 1000;
const MAX_FILES_PAGE: u32 = 10_000;

/// A tracked file.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.FileView"))]
pub struct FileView {
    /// Relative to the source folder, '/'-separated.
    path: String,
    /// The object key: `{key_prefix}{path}` (by default `{upload_id}/{path}`).
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
    /// `on_disk`, `removing` (its object is verified and ferry is removing it, with
    /// `after_upload: delete`) or `removed` (ferry removed it after its upload).
    local_file: String,
}

impl FileView {
    /// A file of a job whose keys start with `key_prefix`.
    fn new(f: FileRow, key_prefix: &str) -> Self {
        FileView {
            key: format!("{key_prefix}{}", f.path),
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
            local_file: Local::from_removal(f.removal.as_deref())
                .as_str()
                .to_owned(),
        }
    }
}

/// List an upload job's tracked files
///
/// Ordered by path. At most `limit` files (default 1000, at most 10000) are returned; when more
/// remain, a `Link: <...>; rel="next"` header gives the next page (`after` = the last path).
#[endpoint(operation_id = "ferry.api.list_files", 
    tags("uploads"),
    parameters(
        ("state" = Option<FileState>, Query, description = "Only files in this state"),
        ("after" = Option<String>, Query, description = "Only paths after this one (the last path of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "At most this many files (default 1000)")
    )
)]
pub(super) async fn list_files(
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
    let limit = page::limit(limit.as_deref(), DEFAULT_FILES_PAGE, MAX_FILES_PAGE)?;
    let app = app_state(depot);
    let store = &app.ctx.store;
    let job = existing_job(&app, &upload_id).await?;
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
        page::link_next(res, &next);
    }
    Ok(Json(
        rows.into_iter()
            .map(|f| FileView::new(f, &job.key_prefix))
            .collect(),
    ))
}
