//! Jobs: their specs, who declares them (the API or a manifest), and their tallies.

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::FromRow;

use sqlx::{Sqlite, Transaction};

use super::aborts::queue_job_aborts;
use super::{Result, Store, StoreError, to_u64};
use crate::core::model::{Blocker, FileState, FileTally, JobFacts, StateTally};
use crate::core::spec::{JobSpec, SpecError, SpecFields};

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
    /// The key prefix, the default (`{id}/`) written out.
    pub key_prefix: String,
    /// A JSON array of globs.
    pub exclude: String,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    /// A JSON object of strings.
    pub metadata: String,
    /// A JSON object of strings.
    pub tags: String,
    /// 'keep' or 'delete'.
    pub after_upload: String,
    pub prune: bool,
    /// Why the job's prunes wait for a confirm (the guard), if they do.
    pub prune_hold: Option<String>,
    /// When the last resync ended, whether it found every object as recorded, and what it found.
    pub resynced_at: Option<String>,
    pub in_sync: Option<bool>,
    pub resync_message: Option<String>,
}

/// Binds `?1` the job's id, `?2` to `?11` its spec's columns (folder, bucket, pattern, key
/// prefix, exclude, class, sse, KMS key, metadata, tags), `?12` its manifest document, and `?13`,
/// `?14` what becomes of its files after upload and whether it prunes: the one order of the
/// INSERT and the UPDATE.
macro_rules! bind_spec {
    ($query:expr, $id:expr, $c:expr, $source:expr) => {{
        let c: &Columns = $c;
        $query
            .bind($id)
            .bind(&c.source_folder)
            .bind(&c.bucket)
            .bind(&c.pattern)
            .bind(&c.key_prefix)
            .bind(&c.exclude)
            .bind(&c.storage_class)
            .bind(&c.sse)
            .bind(&c.kms_key_id)
            .bind(&c.metadata)
            .bind(&c.tags)
            .bind($source)
            .bind(&c.after_upload)
            .bind(c.prune)
    }};
}

/// A spec as its columns hold it.
struct Columns {
    source_folder: String,
    bucket: String,
    pattern: Option<String>,
    key_prefix: String,
    exclude: String,
    storage_class: Option<String>,
    sse: Option<String>,
    kms_key_id: Option<String>,
    metadata: String,
    tags: String,
    after_upload: String,
    prune: bool,
}

impl Columns {
    fn of(spec: &JobSpec) -> Self {
        let f = spec.fields();
        let json = |v: serde_json::Value| v.to_string();
        Columns {
            source_folder: f.source_folder,
            bucket: f.destination_bucket,
            pattern: f.pattern,
            key_prefix: f.key_prefix.unwrap_or_default(),
            exclude: json(serde_json::json!(f.exclude)),
            storage_class: f.storage_class,
            sse: f.sse,
            kms_key_id: f.kms_key_id,
            metadata: json(serde_json::json!(f.metadata)),
            tags: json(serde_json::json!(f.tags)),
            after_upload: spec.after_upload.as_str().to_owned(),
            prune: spec.prune,
        }
    }

    /// Whether the objects would look otherwise: another bucket, prefix, class, encryption,
    /// metadata or tags (or another folder, whose files are other files).
    fn moves_objects(&self, job: &JobRow) -> bool {
        job.source_folder != self.source_folder
            || job.destination_bucket != self.bucket
            || job.key_prefix != self.key_prefix
            || job.storage_class != self.storage_class
            || job.sse != self.sse
            || job.kms_key_id != self.kms_key_id
            || job.metadata != self.metadata
            || job.tags != self.tags
    }

    fn same(&self, job: &JobRow) -> bool {
        !self.moves_objects(job)
            && job.pattern == self.pattern
            && job.exclude == self.exclude
            && job.after_upload == self.after_upload
            && job.prune == self.prune
    }

    /// Whether the job's queued prunes no longer hold: it prunes no more, or its objects are
    /// elsewhere now (only keys under a job's own prefix are ever deleted).
    fn drops_prunes(&self, job: &JobRow) -> bool {
        !self.prune || job.destination_bucket != self.bucket || job.key_prefix != self.key_prefix
    }
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
    /// The spec changed; `reset` when how the objects look did (the folder, bucket, key
    /// prefix, class, encryption, metadata or tags), so that every file goes again.
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

    /// The spec as written in its columns, every default filled in.
    pub fn fields(&self) -> Result<SpecFields> {
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("job {:?}: {what}: {e}", self.id))
        };
        Ok(SpecFields {
            source_folder: self.source_folder.clone(),
            destination_bucket: self.destination_bucket.clone(),
            pattern: self.pattern.clone(),
            key_prefix: Some(self.key_prefix.clone()),
            exclude: serde_json::from_str(&self.exclude).map_err(|e| corrupt("exclude", e))?,
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
            kms_key_id: self.kms_key_id.clone(),
            metadata: serde_json::from_str(&self.metadata).map_err(|e| corrupt("metadata", e))?,
            tags: serde_json::from_str(&self.tags).map_err(|e| corrupt("tags", e))?,
            after_upload: Some(self.after_upload.clone()),
            prune: self.prune,
        })
    }

    /// The spec, validated again (the rules may have grown since it was stored).
    pub fn spec(&self) -> Result<std::result::Result<JobSpec, SpecError>> {
        Ok(JobSpec::parse(&self.id, &self.fields()?))
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
    /// Records a new job. Refused when the id is taken, or when another job's key prefix in the
    /// same bucket overlaps this one's.
    pub async fn create_job(&self, id: &str, spec: &JobSpec) -> Result<JobRow> {
        let c = Columns::of(spec);
        let mut tx = self.write_tx().await?;
        check_overlap(&mut tx, id, &c).await?;
        let row = insert_job(&mut tx, id, &c, Origin::Api)
            .await?
            .ok_or_else(|| StoreError::Conflict(id.to_owned()))?;
        tx.commit().await?;
        Ok(row)
    }

    /// Creates the job `id` with this spec, or brings an existing one to it (PUT semantics).
    /// A change to how its objects look (the folder, bucket, key prefix, class, encryption,
    /// metadata or tags) forgets the job's files (their open multipart uploads are queued for
    /// abort) so that the next scan uploads them all again; a changed pattern or exclude is left
    /// to the scan's diff. Refused when another job's prefix in the bucket overlaps.
    pub async fn apply_job(
        &self,
        id: &str,
        spec: &JobSpec,
        origin: Origin<'_>,
    ) -> Result<(Applied, JobRow)> {
        let c = Columns::of(spec);
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
        if existing.as_ref().is_none_or(|job| !c.same(job)) {
            check_overlap(&mut tx, id, &c).await?;
        }
        let applied = match &existing {
            None => {
                insert_job(&mut tx, id, &c, origin).await?;
                Applied::Created
            }
            Some(job) if c.same(job) => {
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
                let reset = c.moves_objects(job);
                if job.source_folder != c.source_folder {
                    // Other files: forgotten, and found again by the next scan.
                    queue_job_aborts(&mut tx, id, &job.destination_bucket).await?;
                    sqlx::query("DELETE FROM files WHERE upload_job_id = ?")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                } else if reset {
                    restyle_files(&mut tx, job, &c).await?;
                }
                if c.drops_prunes(job) {
                    for sql in [
                        "DELETE FROM prunes WHERE upload_job_id = ?",
                        "UPDATE upload_jobs SET prune_hold = NULL WHERE id = ?",
                    ] {
                        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
                    }
                }
                if c.after_upload != "delete" {
                    // A file waiting to be removed stays, now that the job keeps its files.
                    sqlx::query(
                        "UPDATE files SET removal = NULL
                         WHERE upload_job_id = ? AND removal = 'due'",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                let update = sqlx::query(
                    "UPDATE upload_jobs SET source_folder = ?2, destination_bucket = ?3,
                        pattern = ?4, key_prefix = ?5, exclude = ?6, storage_class = ?7, sse = ?8,
                        kms_key_id = ?9, metadata = ?10, tags = ?11, manifest_source = ?12,
                        after_upload = ?13, prune = ?14, generation = generation + 1, error = NULL, error_reason = NULL,
                        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                     WHERE id = ?1",
                );
                bind_spec!(update, id, &c, source).execute(&mut *tx).await?;
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

    /// A page of jobs in id order: at most `limit` of them, with ids after `after`. A cursor that
    /// names a job deleted since still finds the jobs after it.
    pub async fn list_jobs_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<JobRow>> {
        let rows = match after {
            Some(after) => {
                sqlx::query_as::<_, JobRow>(
                    "SELECT * FROM upload_jobs WHERE id > ? ORDER BY id LIMIT ?",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as::<_, JobRow>("SELECT * FROM upload_jobs ORDER BY id LIMIT ?")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows)
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

    /// Files of the given jobs by state (from `file_tallies`, as `job_tally`): one statement,
    /// the ids bound as one JSON array.
    pub async fn tallies_of(&self, ids: &[&str]) -> Result<HashMap<String, FileTally>> {
        let ids = super::ids_json(Some(ids))?;
        let rows = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT upload_job_id, state, files, bytes, bytes_sent
             FROM file_tallies
             WHERE upload_job_id IN (SELECT value FROM json_each(?)) AND files > 0",
        )
        .bind(ids)
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

/// The job's objects are to look otherwise (another bucket, prefix, class, encryption,
/// metadata or tags), in the caller's transaction, before the job's row changes: every file goes
/// again. One whose object is in S3 (UPLOADED, or waiting for an earlier restyle) is to be
/// copied from where its bytes are (`restyle_from`) to its new look (CopyObject), or only
/// retagged in place (PutObjectTagging) when the tags alone changed; the others upload afresh,
/// their open multipart uploads, begun under the old look, queued for abort.
async fn restyle_files(
    tx: &mut Transaction<'static, Sqlite>,
    job: &JobRow,
    c: &Columns,
) -> Result<()> {
    queue_job_aborts(tx, &job.id, &job.destination_bucket).await?;
    sqlx::query(
        "DELETE FROM parts WHERE file_id IN
            (SELECT id FROM files WHERE upload_job_id = ? AND multipart_upload_id IS NOT NULL)",
    )
    .bind(&job.id)
    .execute(&mut **tx)
    .await?;
    let tags_only = job.destination_bucket == c.bucket
        && job.key_prefix == c.key_prefix
        && job.storage_class == c.storage_class
        && job.sse == c.sse
        && job.kms_key_id == c.kms_key_id
        && job.metadata == c.metadata;
    sqlx::query(
        "UPDATE files SET
            restyle = CASE
                WHEN state = 'UPLOADED' OR restyle = 'tags' THEN ?2
                WHEN restyle = 'copy' THEN 'copy'
            END,
            restyle_from = CASE
                WHEN state = 'UPLOADED' THEN ?3 || '/' || ?4 || path
                WHEN restyle IS NOT NULL THEN restyle_from
            END,
            state = 'PENDING', attempts = 0, next_attempt_at = NULL, last_error = NULL,
            multipart_upload_id = NULL, part_size = NULL, checksum = NULL,
            upload_settings = NULL, bytes_sent = 0,
            updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE upload_job_id = ?1",
    )
    .bind(&job.id)
    .bind(if tags_only { "tags" } else { "copy" })
    .bind(&job.destination_bucket)
    .bind(&job.key_prefix)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a job; None when the id is taken.
async fn insert_job(
    tx: &mut Transaction<'static, Sqlite>,
    id: &str,
    c: &Columns,
    origin: Origin<'_>,
) -> Result<Option<JobRow>> {
    let source = match origin {
        Origin::Manifest(source) => Some(source),
        Origin::Api => None,
    };
    let insert = sqlx::query_as::<_, JobRow>(
        "INSERT INTO upload_jobs (id, source_folder, destination_bucket, pattern, key_prefix,
            exclude, storage_class, sse, kms_key_id, metadata, tags, manifest_source, after_upload,
            prune, managed_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (id) DO NOTHING
         RETURNING *",
    );
    Ok(bind_spec!(insert, id, c, source)
        .bind(origin.as_str())
        .fetch_optional(&mut **tx)
        .await?)
}

/// Refuses a spec whose key prefix overlaps another job's in the same bucket: one job could
/// overwrite the other's objects (and, pruning, delete them).
async fn check_overlap(tx: &mut Transaction<'static, Sqlite>, id: &str, c: &Columns) -> Result<()> {
    let other = sqlx::query_as::<_, (String, String)>(
        "SELECT id, key_prefix FROM upload_jobs
         WHERE destination_bucket = ?1 AND id != ?2
            AND (substr(?3, 1, length(key_prefix)) = key_prefix
                 OR substr(key_prefix, 1, length(?3)) = ?3)
         ORDER BY id LIMIT 1",
    )
    .bind(&c.bucket)
    .bind(id)
    .bind(&c.key_prefix)
    .fetch_optional(&mut **tx)
    .await?;
    match other {
        None => Ok(()),
        Some((other, other_prefix)) => Err(StoreError::Overlap {
            bucket: c.bucket.clone(),
            prefix: c.key_prefix.clone(),
            other,
            other_prefix,
        }),
    }
}
