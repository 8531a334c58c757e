//! Files as scans record them: added, changed, forgotten; and the file list the API pages.

use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::{FromRow, Sqlite};

use super::aborts::release_multipart;
use super::{Result, Store, now_ms, to_i64, to_u64};
use crate::core::diff::{Local, Recorded, RecordedFile, SeenFile};
use crate::core::model::FileState;
use crate::core::plan::settle_due;

/// A tracked file as stored.
#[derive(Debug, Clone, FromRow)]
pub struct FileRow {
    pub id: i64,
    pub upload_job_id: String,
    pub path: String,
    #[sqlx(try_from = "String")]
    pub state: StoredFileState,
    pub size: i64,
    pub mtime_ns: i64,
    pub bytes_sent: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub multipart_upload_id: Option<String>,
    pub etag: Option<String>,
    pub updated_at: String,
    /// 'due' or 'done' for a file ferry is removing or removed after its upload.
    pub removal: Option<String>,
}

/// A [`FileState`] read from a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFileState(pub FileState);

impl TryFrom<String> for StoredFileState {
    type Error = crate::core::model::UnknownState;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        FileState::from_str(&s).map(StoredFileState)
    }
}

/// Rows per INSERT when a scan adds files (5 values each, well under SQLite's 32,766).
const INSERT_ROWS: usize = 500;

impl Store {
    /// What the store holds of a job's files, for the scan's diff: read in path order as a
    /// stream, each row copied into the compact [`Recorded`] as it comes, so that no list of
    /// every row is held beside it.
    pub async fn recorded_files(&self, job_id: &str) -> Result<Recorded> {
        // The records' room from the job's tally (kept by triggers, a few rows), not from a
        // count over its files: that read every path once more before the stream did. The
        // paths' buffer grows as it fills.
        let files = self.job_tally(job_id).await?.total_files();
        let mut recorded = Recorded::with_capacity(usize::try_from(files).unwrap_or(0), 0);
        let mut rows = sqlx::query_as::<_, (i64, String, i64, i64, Option<String>)>(
            "SELECT id, path, size, mtime_ns, removal FROM files WHERE upload_job_id = ?
             ORDER BY path",
        )
        .bind(job_id)
        .fetch(&self.pool);
        while let Some((file_id, path, size, mtime_ns, removal)) = rows.try_next().await? {
            recorded.push(
                &path,
                RecordedFile {
                    file_id,
                    size: to_u64(size),
                    mtime_ns,
                    local: Local::from_removal(removal.as_deref()),
                },
            );
        }
        Ok(recorded)
    }

    /// Adds new files, puts changed ones back to PENDING (abandoning an upload of the old bytes),
    /// and forgets files gone from disk: one transaction per call.
    ///
    /// For a job that prunes, the object of a file gone (UPLOADED) is queued for prune, held
    /// for the guard, in the same transaction that forgets the file: it is tracked or queued,
    /// never both nor neither. A file that comes back while its prune is held cancels it, and
    /// when it is the same version (size and mtime), it is its object again, not uploaded anew.
    pub async fn apply_scan_changes(
        &self,
        job_id: &str,
        bucket: &str,
        added: &[SeenFile],
        changed: &[(i64, SeenFile)],
        removed: &[i64],
        settle: Duration,
    ) -> Result<()> {
        if added.is_empty() && changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // Many rows per statement: each statement is a round trip to the database thread.
        for rows in added.chunks(INSERT_ROWS) {
            let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO files (upload_job_id, path, size, mtime_ns, next_attempt_at) ",
            );
            insert.push_values(rows, |mut row, f| {
                row.push_bind(job_id)
                    .push_bind(&f.path)
                    .push_bind(to_i64(f.size))
                    .push_bind(f.mtime_ns)
                    .push_bind(settle_due(f.mtime_ns, settle, now));
            });
            insert.push(" ON CONFLICT (upload_job_id, path) DO NOTHING");
            insert.build().execute(&mut *tx).await?;
        }
        if !added.is_empty() && super::prunes::any_queued(&mut tx, job_id).await? {
            let paths = serde_json::json!(added.iter().map(|f| &f.path).collect::<Vec<_>>());
            super::prunes::cancel_for_returned(&mut tx, job_id, &paths.to_string()).await?;
        }
        for (file_id, f) in changed {
            release_multipart(&mut tx, *file_id, bucket).await?;
            sqlx::query(
                "UPDATE files SET state = 'PENDING', size = ?, mtime_ns = ?, bytes_sent = 0,
                    attempts = 0, last_error = NULL, etag = NULL, next_attempt_at = ?,
                    restyle = NULL, restyle_from = NULL, removal = NULL, local_identity = NULL,
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE id = ?",
            )
            .bind(to_i64(f.size))
            .bind(f.mtime_ns)
            .bind(settle_due(f.mtime_ns, settle, now))
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        }
        for file_id in removed {
            release_multipart(&mut tx, *file_id, bucket).await?;
            super::prunes::queue_for_gone_file(&mut tx, *file_id).await?;
            sqlx::query("DELETE FROM files WHERE id = ?")
                .bind(file_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notes that a full scan of the job's folder, of spec `generation`, has ended, and what it
    /// could not read (`walk_error`, None when it read everything). Writes only when there is
    /// news (the first scan, a new generation, changes found, or another walk error), so that a
    /// scan that finds nothing changed writes nothing.
    pub async fn mark_scanned(
        &self,
        job_id: &str,
        generation: i64,
        changed: bool,
        walk_error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE upload_jobs SET scanned_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                observed_generation = ?2, walk_error = ?4
             WHERE id = ?1 AND (?3 OR scanned_at IS NULL OR observed_generation != ?2
                OR walk_error IS NOT ?4)",
        )
        .bind(job_id)
        .bind(generation)
        .bind(changed)
        .bind(walk_error)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Puts a job's FAILED files back to PENDING with their attempts reset; returns how many.
    pub async fn retry_failed(&self, job_id: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE files SET state = 'PENDING', attempts = 0, next_attempt_at = NULL,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE upload_job_id = ? AND state = 'FAILED'",
        )
        .bind(job_id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Tracked files of a job, by path, after `after`, at most `limit`.
    pub async fn list_files(
        &self,
        job_id: &str,
        state: Option<FileState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileRow>> {
        // Paths are never empty, so "after nothing" is "after ''". Two shapes, each answered
        // from one index in path order: with a state, files_by_job_state_path (migration 0010);
        // without, the (upload_job_id, path) key. One query with "?2 IS NULL OR state = ?2"
        // walked all of a job's files to find the few in a state.
        let after = after.unwrap_or("");
        let limit = i64::from(limit);
        let rows = match state {
            Some(state) => {
                sqlx::query_as::<_, FileRow>(LIST_IN_STATE)
                    .bind(job_id)
                    .bind(state.as_str())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_as::<_, FileRow>(LIST_ALL)
                    .bind(job_id)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows)
    }
}

/// A page of a job's files in one state: job, state, after, limit.
pub(super) const LIST_IN_STATE: &str = "SELECT * FROM files
    WHERE upload_job_id = ? AND state = ? AND path > ? ORDER BY path LIMIT CAST(? AS INTEGER)";

/// A page of a job's files: job, after, limit.
pub(super) const LIST_ALL: &str = "SELECT * FROM files
    WHERE upload_job_id = ? AND path > ? ORDER BY path LIMIT CAST(? AS INTEGER)";
