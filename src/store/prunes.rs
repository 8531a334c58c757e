//! Prunes: objects to delete from S3 because their files are gone (or no longer taken), or
//! because a resync found them under a pruning job's prefix untracked. Each waits, 'held', for
//! the guard (`core::lifecycle::prune_guard`) or a person's confirm, then 'due' for the pruner.

use std::collections::HashMap;

use sqlx::{FromRow, Sqlite, Transaction};

use super::{Result, Store, now_ms, to_u64};
use crate::core::lifecycle::{PruneHold, prune_guard};

/// A prune the pruner may carry out: the job still prunes, and the key lies under its prefix in
/// its bucket now.
#[derive(Debug, Clone, FromRow)]
pub struct DuePrune {
    pub id: i64,
    pub upload_job_id: String,
    pub bucket: String,
    pub key: String,
    /// 'scan' or 'resync'.
    pub found_by: String,
    pub attempts: i64,
}

impl DuePrune {
    /// `{bucket}/{key}`, as the running uploads are keyed.
    pub fn location(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }
}

/// A job's queued prunes, for its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Waiting for the guard or a confirm.
    pub held: u64,
    /// Released, being deleted.
    pub due: u64,
    /// Of the due, those the store refused at least once, and its last answer.
    pub failing: u64,
    pub last_error: Option<String>,
}

/// What a confirm did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// This many held prunes were released.
    Released(u64),
    /// The job does not prune.
    PruneOff,
    /// The last scan could not read all of the folder: what it did not see is not gone.
    WalkError(String),
}

/// Whether the job has any prune queued (a scan's added files need not look otherwise).
pub(super) async fn any_queued(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM prunes WHERE upload_job_id = ?)",
    )
    .bind(job_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// Files seen again (`paths`, a JSON array) cancel their prunes. A held one of the same version
/// (size and mtime) gives its file back its object: UPLOADED, not sent again. A due one may be
/// under way: the file uploads again once the pruner lets go of its key.
pub(super) async fn cancel_for_returned(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    paths: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE files SET state = 'UPLOADED', etag = p.etag, bytes_sent = files.size,
            next_attempt_at = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         FROM prunes p
         WHERE files.upload_job_id = ?1 AND files.state = 'PENDING' AND files.attempts = 0
            AND files.path IN (SELECT value FROM json_each(?2))
            AND p.upload_job_id = files.upload_job_id AND p.path = files.path
            AND p.state = 'held' AND p.size = files.size AND p.mtime_ns = files.mtime_ns",
    )
    .bind(job_id)
    .bind(paths)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM prunes WHERE upload_job_id = ?1 AND path IN (SELECT value FROM json_each(?2))",
    )
    .bind(job_id)
    .bind(paths)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A file is gone from disk: when its job prunes and its object is in S3 (UPLOADED), the
/// object is queued for prune, held. The caller deletes the file's row in the same transaction.
pub(super) async fn queue_for_gone_file(
    tx: &mut Transaction<'static, Sqlite>,
    file_id: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO prunes (upload_job_id, bucket, key, path, size, mtime_ns, etag, found_by)
         SELECT f.upload_job_id, j.destination_bucket, j.key_prefix || f.path, f.path, f.size,
            f.mtime_ns, f.etag, 'scan'
         FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
         WHERE f.id = ? AND j.prune = 1 AND f.state = 'UPLOADED'
         ON CONFLICT (upload_job_id, key) DO NOTHING",
    )
    .bind(file_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The guard, after a scan or resync of a job: its held prunes are released (due) when
    /// they are few enough and the last scan read everything; else they wait, and the job says
    /// why (`prune_hold`). Returns how many were released, and the hold if any.
    ///
    /// With nothing held and no hold recorded there is nothing to judge: a read, and no write
    /// (a scan that finds nothing gone writes nothing).
    pub async fn guard_prunes(&self, job_id: &str) -> Result<(u64, Option<PruneHold>)> {
        let idle = sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM prunes WHERE upload_job_id = ?1 AND state = 'held')
                AND NOT EXISTS (SELECT 1 FROM upload_jobs
                    WHERE id = ?1 AND prune_hold IS NOT NULL)",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        if idle {
            return Ok((0, None));
        }
        let mut tx = self.write_tx().await?;
        let (held, uploaded, walk_error) = sqlx::query_as::<_, (i64, i64, bool)>(
            "SELECT
                (SELECT COUNT(*) FROM prunes WHERE upload_job_id = ?1 AND state = 'held'),
                COALESCE((SELECT files FROM file_tallies
                    WHERE upload_job_id = ?1 AND state = 'UPLOADED'), 0),
                (SELECT walk_error IS NOT NULL FROM upload_jobs WHERE id = ?1)",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or((0, 0, false));
        let (held, uploaded) = (to_u64(held), to_u64(uploaded));
        let hold = prune_guard(held, uploaded + held, walk_error);
        let released = if hold.is_none() && held > 0 {
            release(&mut tx, job_id).await?
        } else {
            0
        };
        let message = hold.as_ref().map(ToString::to_string);
        sqlx::query(
            "UPDATE upload_jobs SET prune_hold = ?2 WHERE id = ?1 AND prune_hold IS NOT ?2",
        )
        .bind(job_id)
        .bind(&message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((released, hold))
    }

    /// A person confirms the batch the guard holds: its prunes are released. Refused while the
    /// last scan could not read all of the folder, or when the job does not prune.
    pub async fn confirm_prunes(&self, job_id: &str) -> Result<Confirmed> {
        let mut tx = self.write_tx().await?;
        let (prune, walk_error) = sqlx::query_as::<_, (bool, Option<String>)>(
            "SELECT prune, walk_error FROM upload_jobs WHERE id = ?",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or((false, None));
        if !prune {
            return Ok(Confirmed::PruneOff);
        }
        if let Some(unread) = walk_error {
            return Ok(Confirmed::WalkError(unread));
        }
        let released = release(&mut tx, job_id).await?;
        sqlx::query("UPDATE upload_jobs SET prune_hold = NULL WHERE id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Confirmed::Released(released))
    }

    /// Prunes to carry out now, oldest first: released, due (not waiting after a refusal), of a
    /// job that still prunes, and under its prefix in its bucket.
    pub async fn due_prunes(&self, limit: usize) -> Result<Vec<DuePrune>> {
        Ok(sqlx::query_as::<_, DuePrune>(
            "SELECT p.id, p.upload_job_id, p.bucket, p.key, p.found_by, p.attempts
             FROM prunes p JOIN upload_jobs j ON j.id = p.upload_job_id
             WHERE p.state = 'due' AND j.prune = 1 AND p.bucket = j.destination_bucket
                AND substr(p.key, 1, length(j.key_prefix)) = j.key_prefix
                AND (p.next_attempt_at IS NULL OR p.next_attempt_at <= ?)
             ORDER BY p.id LIMIT CAST(? AS INTEGER)",
        )
        .bind(now_ms())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether the prune is still due: a file seen again cancels it, a spec change drops it.
    pub async fn prune_still_due(&self, id: i64) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM prunes WHERE id = ? AND state = 'due')",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The object is deleted: the prune is done.
    pub async fn prune_done(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM prunes WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The store refused the delete: tried again at `next_attempt_at` (ms since the epoch).
    pub async fn prune_failed(&self, id: i64, error: &str, next_attempt_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE prunes SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?
             WHERE id = ?",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// When the next prune waiting after a refusal is due, if any.
    pub async fn next_prune_due(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(next_attempt_at) FROM prunes WHERE state = 'due'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Queues for prune, held, objects a resync found under a pruning job's prefix that ferry
    /// does not track (`keys`, with their bucket). Returns how many were new.
    pub async fn queue_untracked(
        &self,
        job_id: &str,
        bucket: &str,
        key_prefix: &str,
        keys: &[String],
    ) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let mut queued = 0;
        for chunk in keys.chunks(500) {
            let json = serde_json::json!(chunk).to_string();
            // Only while the job prunes and the key is untracked still: a file the scan added
            // meanwhile owns its key.
            queued += sqlx::query(
                "INSERT INTO prunes (upload_job_id, bucket, key, found_by)
                 SELECT ?1, ?2, k.value, 'resync' FROM json_each(?3) AS k
                 WHERE EXISTS (SELECT 1 FROM upload_jobs
                        WHERE id = ?1 AND prune = 1 AND destination_bucket = ?2
                            AND key_prefix = ?4)
                    AND substr(k.value, 1, length(?4)) = ?4
                    AND NOT EXISTS (SELECT 1 FROM files
                        WHERE upload_job_id = ?1 AND path = substr(k.value, length(?4) + 1))
                 ON CONFLICT (upload_job_id, key) DO NOTHING",
            )
            .bind(job_id)
            .bind(bucket)
            .bind(json)
            .bind(key_prefix)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(queued)
    }

    /// The given jobs' queued prunes (or every job's), for their status: one statement.
    pub async fn prune_counts(
        &self,
        jobs: Option<&[&str]>,
    ) -> Result<HashMap<String, PruneCounts>> {
        let rows = sqlx::query_as::<_, (String, i64, i64, i64, Option<String>)>(
            "SELECT upload_job_id,
                SUM(state = 'held'), SUM(state = 'due'), SUM(state = 'due' AND attempts > 0),
                (SELECT last_error FROM prunes q WHERE q.upload_job_id = p.upload_job_id
                    AND q.last_error IS NOT NULL ORDER BY q.id DESC LIMIT 1)
             FROM prunes p
             WHERE ?1 IS NULL OR upload_job_id IN (SELECT value FROM json_each(?1))
             GROUP BY upload_job_id",
        )
        .bind(super::ids_json(jobs)?)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job, held, due, failing, last_error)| {
                (
                    job,
                    PruneCounts {
                        held: to_u64(held),
                        due: to_u64(due),
                        failing: to_u64(failing),
                        last_error,
                    },
                )
            })
            .collect())
    }
}

/// Releases a job's held prunes to the pruner; returns how many.
async fn release(tx: &mut Transaction<'static, Sqlite>, job_id: &str) -> Result<u64> {
    Ok(
        sqlx::query("UPDATE prunes SET state = 'due' WHERE upload_job_id = ? AND state = 'held'")
            .bind(job_id)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    )
}
