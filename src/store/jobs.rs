//! Jobs: their specs, who declares them (the API or a manifest), and their tallies.

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::FromRow;

use super::aborts::queue_job_aborts;
use super::{Result, Store, StoreError, to_u64};
use crate::core::model::{Blocker, FileState, FileTally, JobFacts, StateTally};

/// A job as stored.
#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: String,
    pub source_folder: String,
    pub destination_bucket: String,
    pub pattern: Option<String>,
    pub error: Option<String>,
    pub scanned_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The spec's version: 1 at creation, bumped by every change.
    pub generation: i64,
    /// The generation the last completed scan reconciled.
    pub observed_generation: i64,
    pub error_reason: Option<String>,
    /// 'api' or 'manifest'.
    pub managed_by: String,
    /// The manifest document that declares the job (file.yaml#2).
    pub manifest_source: Option<String>,
    /// What the last scan could not read of the folder (one `path: error` a line), if anything.
    pub walk_error: Option<String>,
}

/// Who declares a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    Api,
    /// A manifest document (file.yaml#2).
    Manifest(&'a str),
}

impl Origin<'_> {
    fn as_str(&self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Manifest(_) => "manifest",
        }
    }
}

/// What applying a spec by name did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Unchanged,
    /// The spec changed; `reset` when the folder or the bucket did, so that every file goes
    /// again to the new place.
    Updated {
        reset: bool,
    },
}

impl JobRow {
    /// What blocks the job, if anything, and the message.
    pub fn blocker(&self) -> Option<(Blocker, &str)> {
        let message = self.error.as_deref()?;
        let kind = self
            .error_reason
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(Blocker::InvalidSpec);
        Some((kind, message))
    }

    pub fn facts(&self) -> JobFacts {
        JobFacts {
            scanned: self.scanned_at.is_some(),
            blocked: self.error.is_some(),
            walk_incomplete: self.walk_error.is_some(),
        }
    }
}

impl Store {
    pub async fn create_job(
        &self,
        id: &str,
        source_folder: &str,
        bucket: &str,
        pattern: Option<&str>,
    ) -> Result<JobRow> {
        let row = sqlx::query_as::<_, JobRow>(
            "INSERT INTO upload_jobs (id, source_folder, destination_bucket, pattern)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING
             RETURNING *",
        )
        .bind(id)
        .bind(source_folder)
        .bind(bucket)
        .bind(pattern)
        // All rows, not the first: SQLite commits an autocommit statement when it steps to its
        // end, and a statement reset after its first row reports a failed commit (a full disk)
        // to nobody. The job would be answered 201 and never stored.
        .fetch_all(&self.writer)
        .await?;
        row.into_iter()
            .next()
            .ok_or_else(|| StoreError::Conflict(id.to_owned()))
    }

    /// Creates the job `id` with this spec, or brings an existing one to it (PUT semantics).
    /// A changed folder or bucket forgets the job's files (their open multipart uploads are
    /// queued for abort) so that the next scan takes them all again; a changed pattern is left
    /// to the scan's diff.
    pub async fn apply_job(
        &self,
        id: &str,
        source_folder: &str,
        bucket: &str,
        pattern: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<(Applied, JobRow)> {
        let mut tx = self.write_tx().await?;
        let existing = sqlx::query_as::<_, JobRow>("SELECT * FROM upload_jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let source = match origin {
            Origin::Manifest(source) => Some(source),
            Origin::Api => None,
        };
        if let Some(job) = &existing
            && job.managed_by != origin.as_str()
        {
            let owner = match &job.manifest_source {
                Some(doc) if job.managed_by == "manifest" => format!("the manifest {doc}"),
                _ => "the API (POST or PUT /uploads)".to_owned(),
            };
            return Err(StoreError::Owned {
                name: id.to_owned(),
                owner,
            });
        }
        let applied = match &existing {
            None => {
                sqlx::query(
                    "INSERT INTO upload_jobs (id, source_folder, destination_bucket, pattern,
                        managed_by, manifest_source)
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(source_folder)
                .bind(bucket)
                .bind(pattern)
                .bind(origin.as_str())
                .bind(source)
                .execute(&mut *tx)
                .await?;
                Applied::Created
            }
            Some(job)
                if job.source_folder == source_folder
                    && job.destination_bucket == bucket
                    && job.pattern.as_deref() == pattern =>
            {
                if job.manifest_source.as_deref() != source {
                    // Moved to another file or document: the spec is the same.
                    sqlx::query("UPDATE upload_jobs SET manifest_source = ? WHERE id = ?")
                        .bind(source)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Applied::Unchanged
            }
            Some(job) => {
                let reset = job.source_folder != source_folder || job.destination_bucket != bucket;
                if reset {
                    queue_job_aborts(&mut tx, id, &job.destination_bucket).await?;
                    sqlx::query("DELETE FROM files WHERE upload_job_id = ?")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "UPDATE upload_jobs SET source_folder = ?, destination_bucket = ?, pattern = ?,
                        manifest_source = ?, generation = generation + 1, error = NULL,
                        error_reason = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                     WHERE id = ?",
                )
                .bind(source_folder)
                .bind(bucket)
                .bind(pattern)
                .bind(source)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                Applied::Updated { reset }
            }
        };
        let row = sqlx::query_as::<_, JobRow>("SELECT * FROM upload_jobs WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((applied, row))
    }

    pub async fn get_job(&self, id: &str) -> Result<Option<JobRow>> {
        Ok(
            sqlx::query_as::<_, JobRow>("SELECT * FROM upload_jobs WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn list_jobs(&self) -> Result<Vec<JobRow>> {
        Ok(
            sqlx::query_as::<_, JobRow>("SELECT * FROM upload_jobs ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The jobs declared by manifests, with the document that declares each.
    pub async fn manifest_jobs(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as::<_, (String, String)>(
            "SELECT id, COALESCE(manifest_source, '') FROM upload_jobs WHERE managed_by = 'manifest'
             ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn job_ids(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT id FROM upload_jobs ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Files of one job by state, for its status: at most four rows of `file_tallies`, which
    /// triggers keep in step with `files` (migration 0005), not a count over the job's files.
    pub async fn job_tally(&self, id: &str) -> Result<FileTally> {
        let rows = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT upload_job_id, state, files, bytes, bytes_sent
             FROM file_tallies WHERE upload_job_id = ? AND files > 0",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Self::tallies(rows)?.remove(id).unwrap_or_default())
    }

    /// Whether the job has files waiting or uploading.
    pub async fn has_active_files(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM files WHERE upload_job_id = ?
                AND state IN ('PENDING', 'IN_PROGRESS'))",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Files of every job by state (from `file_tallies`, as `job_tally`).
    pub async fn all_tallies(&self) -> Result<HashMap<String, FileTally>> {
        let rows = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT upload_job_id, state, files, bytes, bytes_sent
             FROM file_tallies WHERE files > 0",
        )
        .fetch_all(&self.pool)
        .await?;
        Self::tallies(rows)
    }

    pub(super) fn tallies(
        rows: Vec<(String, String, i64, i64, i64)>,
    ) -> Result<HashMap<String, FileTally>> {
        let mut out: HashMap<String, FileTally> = HashMap::new();
        for (job, state, files, bytes, bytes_sent) in rows {
            let state =
                FileState::from_str(&state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.entry(job).or_default().add(
                state,
                StateTally {
                    files: to_u64(files),
                    bytes: to_u64(bytes),
                    bytes_sent: to_u64(bytes_sent),
                },
            );
        }
        Ok(out)
    }

    /// Records (or clears) what blocks the whole job.
    pub async fn set_job_error(&self, id: &str, error: Option<(Blocker, &str)>) -> Result<()> {
        sqlx::query(
            "UPDATE upload_jobs SET error = ?2, error_reason = ?3,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?1 AND (error IS NOT ?2 OR error_reason IS NOT ?3)",
        )
        .bind(id)
        .bind(error.map(|(_, m)| m))
        .bind(error.map(|(b, _)| b.as_str()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Deletes a job and its file rows; its open multipart uploads move to `pending_aborts`.
    /// Returns false when there was no such job.
    pub async fn delete_job(&self, id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(bucket) = sqlx::query_scalar::<_, String>(
            "SELECT destination_bucket FROM upload_jobs WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        queue_job_aborts(&mut tx, id, &bucket).await?;
        sqlx::query("DELETE FROM upload_jobs WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
