//! Claiming: which PENDING files the free upload slots take next, and what an uploader needs of
//! each. Jobs take turns ([`crate::core::fair`]): a job's million files do not hold back
//! another job's ten.

use sqlx::{FromRow, Sqlite, Transaction};
use std::path::PathBuf;

use super::uploads::{ClaimedFile, FileVersion, OpenUpload, Restyle};
use super::{Result, Store, StoreError, now_ms, to_u64};
use crate::core::diff::Local;
use crate::core::fair;
use crate::core::object::ObjectOptions;

/// The claim, of the oldest due files of one job (`AND f.upload_job_id = ?4`) or of any: marks
/// them IN_PROGRESS and returns what the uploader needs. `?1` is now (ms), `?2` the busy objects
/// (JSON), `?3` the limit.
///
/// Its LIMIT (like every bound LIMIT here) is written `CAST(? AS INTEGER)`: SQLite plans a
/// bare `LIMIT ?` with the value bound, and so prepares the statement again at every run;
/// that was 7 % of ferry's CPU on many small files.
macro_rules! claim_sql {
    ($of_job:literal) => {
        concat!(
            "UPDATE files SET state = 'IN_PROGRESS', attempts = attempts + 1,
                next_attempt_at = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id IN (
                SELECT f.id FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
                WHERE f.state = 'PENDING' ",
            $of_job,
            " AND j.error IS NULL
                  AND (f.next_attempt_at IS NULL OR f.next_attempt_at <= ?1)
                  AND j.destination_bucket || '/' || j.key_prefix || f.path
                    NOT IN (SELECT value FROM json_each(?2))
                ORDER BY f.id LIMIT CAST(?3 AS INTEGER))
             RETURNING id, upload_job_id, path, size, mtime_ns, attempts,
                multipart_upload_id, part_size, checksum, upload_settings, restyle, restyle_from,
                removal, (SELECT source_folder FROM upload_jobs WHERE id = upload_job_id) AS source_folder,
                (SELECT destination_bucket FROM upload_jobs WHERE id = upload_job_id) AS bucket,
                (SELECT key_prefix FROM upload_jobs WHERE id = upload_job_id) AS key_prefix,
                (SELECT storage_class FROM upload_jobs WHERE id = upload_job_id) AS storage_class,
                (SELECT sse FROM upload_jobs WHERE id = upload_job_id) AS sse,
                (SELECT kms_key_id FROM upload_jobs WHERE id = upload_job_id) AS kms_key_id,
                (SELECT metadata FROM upload_jobs WHERE id = upload_job_id) AS metadata,
                (SELECT tags FROM upload_jobs WHERE id = upload_job_id) AS tags"
        )
    };
}

const CLAIM_ANY: &str = claim_sql!("");
const CLAIM_OF_JOB: &str = claim_sql!("AND f.upload_job_id = ?4");

/// Up to `?2` jobs with PENDING files whose id comes after `?1`, in id order: one seek each in
/// the index of PENDING files by job (the next job id after the last found), however many files
/// the jobs have or have uploaded. Jobs in backoff or blocked are among them; their claims come
/// back empty and the slots go to others.
const JOBS_WITH_PENDING: &str = "WITH RECURSIVE next (job, n) AS (
        SELECT (SELECT upload_job_id FROM files INDEXED BY files_pending_by_job
                WHERE state = 'PENDING' AND upload_job_id > ?1
                ORDER BY upload_job_id LIMIT 1), 1
        UNION ALL
        SELECT (SELECT upload_job_id FROM files INDEXED BY files_pending_by_job
                WHERE state = 'PENDING' AND upload_job_id > next.job
                ORDER BY upload_job_id LIMIT 1), n + 1
        FROM next WHERE next.job IS NOT NULL AND n < CAST(?2 AS INTEGER))
    SELECT job FROM next WHERE job IS NOT NULL";

#[derive(FromRow)]
struct ClaimRow {
    id: i64,
    upload_job_id: String,
    path: String,
    size: i64,
    mtime_ns: i64,
    attempts: i64,
    multipart_upload_id: Option<String>,
    part_size: Option<i64>,
    checksum: Option<String>,
    upload_settings: Option<String>,
    restyle: Option<String>,
    restyle_from: Option<String>,
    removal: Option<String>,
    source_folder: String,
    bucket: String,
    key_prefix: String,
    storage_class: Option<String>,
    sse: Option<String>,
    kms_key_id: Option<String>,
    metadata: String,
    tags: String,
}

impl ClaimRow {
    fn restyle(&self) -> Option<Restyle> {
        match (self.restyle.as_deref(), self.restyle_from.as_deref()) {
            (Some("tags"), _) => Some(Restyle::Tags),
            (Some("copy"), Some(from)) => from.split_once('/').map(|(bucket, key)| Restyle::Copy {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            _ => None,
        }
    }

    fn object(&self) -> Result<ObjectOptions> {
        let corrupt = |what: String| {
            StoreError::Corrupt(format!(
                "the object options of job {:?}: {what}",
                self.upload_job_id
            ))
        };
        let json = |text: &str| {
            serde_json::from_str(text).map_err(|e: serde_json::Error| corrupt(e.to_string()))
        };
        ObjectOptions::parse(
            &self.key_prefix,
            self.storage_class.as_deref(),
            self.sse.as_deref(),
            self.kms_key_id.as_deref(),
            &json(&self.metadata)?,
            &json(&self.tags)?,
        )
        .map_err(|e| corrupt(e.message))
    }
}

/// The claim of [`CLAIM_OF_JOB`] (with a job) or [`CLAIM_ANY`], oldest first.
async fn claim(
    tx: &mut Transaction<'static, Sqlite>,
    now: i64,
    busy: &str,
    limit: usize,
    job: Option<&str>,
) -> Result<Vec<ClaimRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let query = sqlx::query_as::<_, ClaimRow>(if job.is_some() {
        CLAIM_OF_JOB
    } else {
        CLAIM_ANY
    })
    .bind(now)
    .bind(busy)
    .bind(limit);
    let query = match job {
        Some(job) => query.bind(job),
        None => query,
    };
    let mut rows = query.fetch_all(&mut **tx).await?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

async fn jobs_with_pending(
    tx: &mut Transaction<'static, Sqlite>,
    after: &str,
    limit: usize,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar::<_, String>(JOBS_WITH_PENDING)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?)
}

impl Store {
    /// Takes the oldest PENDING file that is due (no retry pending) of a job that is not blocked,
    /// and marks it IN_PROGRESS.
    pub async fn claim_next_file(&self) -> Result<Option<ClaimedFile>> {
        Ok(self.claim_files(1, &[]).await?.into_iter().next())
    }

    /// Takes up to `limit` PENDING files that are due (no retry pending) of jobs that are not
    /// blocked, and marks them IN_PROGRESS. Files whose object (`{bucket}/{key_prefix}{path}`)
    /// is in `busy` are left: an upload of an older version of them is still running, and a
    /// second upload of the same key must not race it.
    ///
    /// Jobs take turns: the slots are shared between the jobs with PENDING files after the last
    /// one served (wrapping around), at most one job a slot; a job's share is its oldest files.
    /// What the jobs in turn cannot fill goes to the oldest due files of any job. One write
    /// transaction: the claim is atomic.
    pub async fn claim_files(&self, limit: usize, busy: &[String]) -> Result<Vec<ClaimedFile>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".to_owned());
        let now = now_ms();
        let last = self.turn.lock().expect("turn lock").clone();
        let mut tx = self.write_tx().await?;
        let after = jobs_with_pending(&mut tx, &last, limit).await?;
        let from_start = if after.len() < limit && !last.is_empty() {
            jobs_with_pending(&mut tx, "", limit).await?
        } else {
            Vec::new()
        };
        let turn = fair::turn(after, from_start, limit);
        let mut rows = Vec::with_capacity(limit);
        for (job, share) in turn.iter().zip(fair::shares(limit, turn.len())) {
            rows.extend(claim(&mut tx, now, &busy, share, Some(job)).await?);
        }
        if rows.len() < limit {
            rows.extend(claim(&mut tx, now, &busy, limit - rows.len(), None).await?);
        }
        tx.commit().await?;
        if let Some(job) = turn.last() {
            job.clone_into(&mut self.turn.lock().expect("turn lock"));
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let object = match r.object() {
                Ok(object) => object,
                Err(e) => {
                    // Options every write validated, unreadable now (a hand-edited database):
                    // the job is blocked with the reason and the file goes back, not stranded
                    // IN_PROGRESS, nor does it stop the other files' claims.
                    tracing::error!(upload_id = %r.upload_job_id, error = %e, "a job's object options cannot be read; the job is blocked");
                    let message = e.to_string();
                    self.set_job_error(
                        &r.upload_job_id,
                        Some((crate::core::model::Blocker::InvalidSpec, &message)),
                    )
                    .await?;
                    let version = FileVersion {
                        file_id: r.id,
                        size: to_u64(r.size),
                        mtime_ns: r.mtime_ns,
                    };
                    self.requeue_in_progress(&[version]).await?;
                    continue;
                }
            };
            let restyle = r.restyle();
            claimed.push(ClaimedFile {
                restyle,
                removed_locally: Local::from_removal(r.removal.as_deref()) == Local::Removed,
                file_id: r.id,
                upload_id: r.upload_job_id,
                path: r.path,
                size: to_u64(r.size),
                mtime_ns: r.mtime_ns,
                source_folder: PathBuf::from(r.source_folder),
                bucket: r.bucket,
                object,
                attempt: r.attempts,
                resume: match (r.multipart_upload_id, r.part_size, r.checksum) {
                    (Some(id), Some(part_size), Some(checksum)) => Some(OpenUpload {
                        multipart_upload_id: id,
                        part_size: to_u64(part_size),
                        checksum,
                        settings: r.upload_settings,
                    }),
                    _ => None,
                },
            });
        }
        Ok(claimed)
    }
}
