//! Multipart uploads ferry let go of, queued in `pending_aborts` until the janitor aborts them.

use std::collections::{HashMap, HashSet};

use sqlx::{FromRow, Sqlite, Transaction};

use super::uploads::drop_parts;
use super::{Result, Store, to_u64};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbortsGivenUp {
    pub count: u64,
    /// The store's last answer to such an abort.
    pub last_error: Option<String>,
}

/// A multipart upload waiting to be aborted.
#[derive(Debug, Clone, FromRow)]
pub struct PendingAbort {
    pub multipart_upload_id: String,
    pub bucket: String,
    pub key: String,
    pub attempts: i64,
}

impl Store {
    /// Every multipart upload id ferry knows of in a bucket: open on a file, or queued for abort.
    pub async fn known_multipart_uploads(&self, bucket: &str) -> Result<HashSet<String>> {
        let ids = sqlx::query_scalar::<_, String>(
            "SELECT f.multipart_upload_id FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
             WHERE j.destination_bucket = ?1 AND f.multipart_upload_id IS NOT NULL
             UNION SELECT multipart_upload_id FROM pending_aborts WHERE bucket = ?1",
        )
        .bind(bucket)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    pub async fn pending_aborts(&self, limit: u32) -> Result<Vec<PendingAbort>> {
        Ok(sqlx::query_as::<_, PendingAbort>(
            "SELECT multipart_upload_id, bucket, key, attempts FROM pending_aborts
             WHERE given_up_at IS NULL
             ORDER BY attempts, created_at LIMIT CAST(? AS INTEGER)",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn abort_done(&self, upload: &str) -> Result<()> {
        sqlx::query("DELETE FROM pending_aborts WHERE multipart_upload_id = ?")
            .bind(upload)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// An abort the store refused: counted, with its error; with `give_up` the janitor stops
    /// trying (the store refused too often, or does not do aborts), and the row stays, for
    /// /metrics and the job's status.
    pub async fn abort_failed(&self, upload: &str, error: &str, give_up: bool) -> Result<()> {
        sqlx::query(
            "UPDATE pending_aborts SET attempts = attempts + 1, last_error = ?,
                given_up_at = CASE WHEN ? THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END
             WHERE multipart_upload_id = ?",
        )
        .bind(error)
        .bind(give_up)
        .bind(upload)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Aborts waiting and aborts given up, over all jobs: (waiting, given up).
    pub async fn abort_counts(&self) -> Result<(u64, u64)> {
        let (waiting, given_up) = sqlx::query_as::<_, (i64, i64)>(
            "SELECT COUNT(*) FILTER (WHERE given_up_at IS NULL),
                COUNT(*) FILTER (WHERE given_up_at IS NOT NULL)
             FROM pending_aborts",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((to_u64(waiting), to_u64(given_up)))
    }

    /// The multipart uploads that could not be aborted, by the job they were queued for (rows
    /// queued before migration 0007 have no job: their key's first segment is its id), with the
    /// store's last answer: of the given jobs, or of every job, in one statement (a list of
    /// jobs must not cost a query per job, nor a page of them a read of every job's).
    pub async fn aborts_given_up(
        &self,
        jobs: Option<&[&str]>,
    ) -> Result<HashMap<String, AbortsGivenUp>> {
        let rows = sqlx::query_as::<_, (String, i64, Option<String>)>(
            "SELECT COALESCE(upload_job_id, substr(key, 1, instr(key, '/') - 1)) AS job,
                COUNT(*), MAX(last_error)
             FROM pending_aborts
             WHERE given_up_at IS NOT NULL
                AND (?1 IS NULL OR COALESCE(upload_job_id, substr(key, 1, instr(key, '/') - 1))
                    IN (SELECT value FROM json_each(?1)))
             GROUP BY job",
        )
        .bind(super::ids_json(jobs)?)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job, count, last_error)| {
                (
                    job,
                    AbortsGivenUp {
                        count: to_u64(count),
                        last_error,
                    },
                )
            })
            .collect())
    }

    /// Queues an upload of a job for abort outside any file (one whose row vanished under its
    /// uploader, or an orphan the sweep found).
    pub async fn queue_abort(
        &self,
        job_id: &str,
        upload: &str,
        bucket: &str,
        key: &str,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        queue_abort(&mut tx, job_id, upload, bucket, key).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Moves a file's open multipart upload (if any) to `pending_aborts`, in the caller's transaction.
pub(super) async fn release_multipart(
    tx: &mut Transaction<'static, Sqlite>,
    file_id: i64,
    bucket: &str,
) -> Result<()> {
    queue_open_uploads(tx, Scope::File(file_id), bucket).await?;
    let released = sqlx::query(
        "UPDATE files SET multipart_upload_id = NULL, part_size = NULL, checksum = NULL,
            upload_settings = NULL, bytes_sent = 0
         WHERE id = ? AND multipart_upload_id IS NOT NULL",
    )
    .bind(file_id)
    .execute(&mut **tx)
    .await?;
    if released.rows_affected() > 0 {
        drop_parts(tx, file_id).await?;
    }
    Ok(())
}

/// Queues every open multipart upload of a job for abort, in the caller's transaction (the job is
/// being deleted, or its objects are to look otherwise: before the job's row changes, so that
/// each key is the one its upload was begun under).
pub(super) async fn queue_job_aborts(
    tx: &mut Transaction<'static, Sqlite>,
    id: &str,
    bucket: &str,
) -> Result<()> {
    queue_open_uploads(tx, Scope::Job(id), bucket).await
}

/// Whose open multipart uploads are queued.
enum Scope<'a> {
    File(i64),
    Job(&'a str),
}

/// Queues the open multipart uploads of one file or of a whole job, each under its key as the
/// job's row has it now, in one statement.
async fn queue_open_uploads(
    tx: &mut Transaction<'static, Sqlite>,
    scope: Scope<'_>,
    bucket: &str,
) -> Result<()> {
    macro_rules! queue_where {
        ($condition:literal) => {
            concat!(
                "INSERT INTO pending_aborts (multipart_upload_id, upload_job_id, bucket, key)
                 SELECT f.multipart_upload_id, f.upload_job_id, ?1, j.key_prefix || f.path
                 FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
                 WHERE f.multipart_upload_id IS NOT NULL AND ",
                $condition,
                " ON CONFLICT (multipart_upload_id) DO NOTHING"
            )
        };
    }
    let query = match scope {
        Scope::File(id) => sqlx::query(queue_where!("f.id = ?2")).bind(bucket).bind(id),
        Scope::Job(id) => sqlx::query(queue_where!("f.upload_job_id = ?2"))
            .bind(bucket)
            .bind(id),
    };
    query.execute(&mut **tx).await?;
    Ok(())
}

async fn queue_abort(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    upload: &str,
    bucket: &str,
    key: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_aborts (multipart_upload_id, upload_job_id, bucket, key)
         VALUES (?, ?, ?, ?)
         ON CONFLICT (multipart_upload_id) DO NOTHING",
    )
    .bind(upload)
    .bind(job_id)
    .bind(bucket)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseLocation;

    #[tokio::test]
    async fn aborts_given_up_are_read_for_the_jobs_asked() {
        let store = Store::open(&DatabaseLocation::Memory).await.unwrap();
        store
            .queue_abort("a", "mpu-a", "bucket", "a/x")
            .await
            .unwrap();
        store
            .queue_abort("b", "mpu-b", "bucket", "b/y")
            .await
            .unwrap();
        // A row queued before migration 0007: its job is its key's first segment.
        sqlx::query(
            "INSERT INTO pending_aborts (multipart_upload_id, bucket, key) VALUES ('mpu-c', 'bucket', 'c/z')",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        for upload in ["mpu-a", "mpu-b", "mpu-c"] {
            store.abort_failed(upload, "501", true).await.unwrap();
        }
        let all = store.aborts_given_up(None).await.unwrap();
        let mut jobs: Vec<_> = all.keys().map(String::as_str).collect();
        jobs.sort();
        assert_eq!(jobs, ["a", "b", "c"]);
        let some = store
            .aborts_given_up(Some(&["a", "c", "gone"]))
            .await
            .unwrap();
        let mut jobs: Vec<_> = some.keys().map(String::as_str).collect();
        jobs.sort();
        assert_eq!(jobs, ["a", "c"]);
        assert_eq!(some["c"].count, 1);
        assert_eq!(some["c"].last_error.as_deref(), Some("501"));
        assert!(store.aborts_given_up(Some(&[])).await.unwrap().is_empty());
    }
}
