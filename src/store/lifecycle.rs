//! What follows an upload and what checks it later: removing local files once their objects
//! are verified (`after_upload: delete`), and the resync's comparison of the bucket's listing
//! with what ferry recorded.

use sqlx::FromRow;

use super::{Result, Store, now_ms, to_i64};

/// A file whose object is verified and that ferry is to remove from disk.
#[derive(Debug, Clone, FromRow)]
pub struct DueRemoval {
    pub id: i64,
    pub upload_job_id: String,
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    /// `dev:ino` of the file that was read.
    pub local_identity: Option<String>,
}

/// An uploaded file, as a resync compares it with the bucket.
#[derive(Debug, Clone, FromRow)]
pub struct ResyncRow {
    pub id: i64,
    pub path: String,
    pub state: String,
    pub size: i64,
    pub etag: Option<String>,
    pub removal: Option<String>,
    pub updated_at: String,
}

impl Store {
    /// Files to remove now, oldest first: UPLOADED, marked due, of a job that still moves its
    /// files, not waiting after a failed removal.
    pub async fn due_removals(&self, limit: usize) -> Result<Vec<DueRemoval>> {
        Ok(sqlx::query_as::<_, DueRemoval>(
            "SELECT f.id, f.upload_job_id, f.path, f.size, f.mtime_ns, f.local_identity
             FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
             WHERE f.removal = 'due' AND f.state = 'UPLOADED' AND j.after_upload = 'delete'
                AND (f.next_attempt_at IS NULL OR f.next_attempt_at <= ?)
             ORDER BY f.id LIMIT CAST(? AS INTEGER)",
        )
        .bind(now_ms())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The local file is removed (or was gone already): recorded, so that neither a restart
    /// nor a scan takes its absence for a deletion. Only for the version removed.
    pub async fn removal_done(&self, file_id: i64, size: i64, mtime_ns: i64) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE files SET removal = 'done', next_attempt_at = NULL, last_error = NULL
             WHERE id = ? AND removal = 'due' AND state = 'UPLOADED' AND size = ? AND mtime_ns = ?",
        )
        .bind(file_id)
        .bind(size)
        .bind(mtime_ns)
        .execute(&self.writer)
        .await?
        .rows_affected()
            == 1)
    }

    /// The file at the path is not the one read (or may not be removed): it stays, and the
    /// scan uploads it again if it changed.
    pub async fn removal_kept(&self, file_id: i64) -> Result<()> {
        sqlx::query("UPDATE files SET removal = NULL WHERE id = ? AND removal = 'due'")
            .bind(file_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The removal failed (a folder ferry may not write): tried again at `next_attempt_at`.
    pub async fn removal_failed(
        &self,
        file_id: i64,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE files SET last_error = ?, next_attempt_at = ? WHERE id = ? AND removal = 'due'",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(file_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Files a scan found gone that ferry was removing: removed (before a stop, or by someone
    /// else; their objects are verified either way).
    pub async fn removals_done(&self, file_ids: &[i64]) -> Result<()> {
        if file_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE files SET removal = 'done', next_attempt_at = NULL
             WHERE id IN (SELECT value FROM json_each(?)) AND removal = 'due'",
        )
        .bind(serde_json::json!(file_ids).to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The database's clock, in the form of `updated_at`.
    pub async fn db_now(&self) -> Result<String> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Every file of a job, for a resync's comparison.
    pub async fn resync_rows(&self, job_id: &str) -> Result<Vec<ResyncRow>> {
        Ok(sqlx::query_as::<_, ResyncRow>(
            "SELECT id, path, state, size, etag, removal, updated_at FROM files
             WHERE upload_job_id = ?",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Uploaded files whose objects drifted go back to PENDING, to be uploaded again: only
    /// those still UPLOADED as they were before the listing began (`listed_from`), and whose
    /// local file is there. Returns how many.
    pub async fn repair_drift(
        &self,
        file_ids: &[i64],
        listed_from: &str,
        why: &str,
    ) -> Result<u64> {
        let mut repaired = 0;
        for chunk in file_ids.chunks(500) {
            repaired += sqlx::query(
                "UPDATE files SET state = 'PENDING', etag = NULL, bytes_sent = 0, attempts = 0,
                    next_attempt_at = NULL, last_error = ?3,
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'UPLOADED'
                    AND removal IS NOT 'done' AND updated_at < ?2",
            )
            .bind(serde_json::json!(chunk).to_string())
            .bind(listed_from)
            .bind(why)
            .execute(&self.writer)
            .await?
            .rows_affected();
        }
        Ok(repaired)
    }

    /// What the last resync of a job found.
    pub async fn record_resync(&self, job_id: &str, in_sync: bool, message: &str) -> Result<()> {
        sqlx::query(
            "UPDATE upload_jobs SET resynced_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                in_sync = ?, resync_message = ?
             WHERE id = ?",
        )
        .bind(in_sync)
        .bind(message)
        .bind(job_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Jobs due a resync: scanned, not blocked, last resynced (or created) at least
    /// `interval_s` seconds ago.
    pub async fn jobs_due_resync(&self, interval_s: u64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT id FROM upload_jobs
             WHERE scanned_at IS NOT NULL AND error IS NULL
                AND (julianday('now') - julianday(COALESCE(resynced_at, created_at))) * 86400.0
                    >= CAST(? AS REAL)
             ORDER BY COALESCE(resynced_at, created_at)",
        )
        .bind(to_i64(interval_s))
        .fetch_all(&self.pool)
        .await?)
    }
}
