//! Uploads: what a claimed file is, and recording what each attempt did (parts, outcome, retry), every
//! write guarded by the version of the file it was claimed at.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::{FromRow, Sqlite, Transaction};

use super::aborts::release_multipart;
use super::{Result, Store, now_ms, to_i64};
use crate::core::object::ObjectOptions;
use crate::core::plan::settle_due;

/// A file taken for upload, with what the uploader needs of its job.
#[derive(Debug, Clone)]
pub struct ClaimedFile {
    pub file_id: i64,
    pub upload_id: String,
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub source_folder: PathBuf,
    pub bucket: String,
    /// How the job's objects look: the key prefix, class, encryption, metadata, tags.
    pub object: ObjectOptions,
    pub attempt: i64,
    /// The multipart upload left open by an earlier attempt, to resume.
    pub resume: Option<OpenUpload>,
    /// The file's bytes are in S3 already, in another look: what to do instead of uploading.
    pub restyle: Option<Restyle>,
    /// Ferry removed the local file after its upload (`after_upload: delete`): only its object
    /// is left, to restyle.
    pub removed_locally: bool,
}

/// An object in S3 and verified, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub version: FileVersion,
    pub etag: Option<String>,
    /// The file read for it (`dev:ino`): the only one that may be removed after.
    pub read: Option<String>,
}

/// How an object in S3 is brought to the job's new look without sending its bytes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restyle {
    /// CopyObject from this object (`bucket`, `key`) to the file's, with the new look.
    Copy { bucket: String, key: String },
    /// PutObjectTagging on the file's object: only the tags changed.
    Tags,
}

/// A multipart upload in progress, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub multipart_upload_id: String,
    pub part_size: u64,
    /// The checksum algorithm it was begun with (FERRY_CHECKSUM then).
    pub checksum: String,
    /// What it was begun with besides its key ([`ObjectOptions::fingerprint`]); None for an
    /// upload begun before ferry had object options (so, with none).
    pub settings: Option<String>,
}

/// A part S3 acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PartRecord {
    pub number: i64,
    pub size: i64,
    pub etag: String,
    pub checksum: Option<String>,
    pub md5: String,
}

/// The version of a file an uploader is working on; every write it makes is guarded by it, so
/// that a scan that saw the file change wins over an upload of the old bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    pub file_id: i64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl ClaimedFile {
    /// The object key: the job's prefix and the file's path.
    pub fn key(&self) -> String {
        self.object.key(&self.path)
    }

    /// `{bucket}/{key}`: the object, whatever job uploads it (a bucket name has no '/').
    pub fn location(&self) -> String {
        format!("{}/{}", self.bucket, self.key())
    }

    pub fn version(&self) -> FileVersion {
        FileVersion {
            file_id: self.file_id,
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

impl Store {
    /// When the next file waiting for a retry is due (ms since the epoch), if any.
    pub async fn next_retry_due(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(next_attempt_at) FROM files WHERE state = 'PENDING' AND next_attempt_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records the multipart upload just created for a file (forgetting any earlier one's parts).
    /// Returns false when the file is no longer this version in progress (changed, deleted): the
    /// caller must abort the upload.
    pub async fn set_multipart_upload(&self, v: FileVersion, upload: &OpenUpload) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE files SET multipart_upload_id = ?, part_size = ?, checksum = ?,
                upload_settings = ?, bytes_sent = 0,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ? AND state = 'IN_PROGRESS' AND size = ? AND mtime_ns = ?",
        )
        .bind(&upload.multipart_upload_id)
        .bind(to_i64(upload.part_size))
        .bind(&upload.checksum)
        .bind(&upload.settings)
        .bind(v.file_id)
        .bind(to_i64(v.size))
        .bind(v.mtime_ns)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        drop_parts(&mut tx, v.file_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a part S3 acknowledged, and the bytes sent so far, in one transaction. Returns
    /// false when the file is no longer this version in progress with this upload.
    pub async fn record_part(
        &self,
        v: FileVersion,
        upload: &str,
        part: &PartRecord,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if !holds(&mut *tx, v, upload).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO parts (file_id, multipart_upload_id, number, size, etag, checksum, md5)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (file_id, number) DO UPDATE SET multipart_upload_id = excluded.multipart_upload_id,
                size = excluded.size, etag = excluded.etag, checksum = excluded.checksum, md5 = excluded.md5",
        )
        .bind(v.file_id)
        .bind(upload)
        .bind(part.number)
        .bind(part.size)
        .bind(&part.etag)
        .bind(&part.checksum)
        .bind(&part.md5)
        .execute(&mut *tx)
        .await?;
        update_bytes_sent(&mut tx, v.file_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether the file is still this version in progress with this multipart upload: what an
    /// upload checks before completing it, so that an upload the store has let go of (the file
    /// changed, the job was deleted) never becomes the object.
    pub async fn holds_upload(&self, v: FileVersion, upload: &str) -> Result<bool> {
        holds(&self.pool, v, upload).await
    }

    /// The recorded parts of a file's multipart upload, by number.
    pub async fn parts(&self, file_id: i64, upload: &str) -> Result<Vec<PartRecord>> {
        Ok(sqlx::query_as::<_, PartRecord>(
            "SELECT number, size, etag, checksum, md5 FROM parts
             WHERE file_id = ? AND multipart_upload_id = ? ORDER BY number",
        )
        .bind(file_id)
        .bind(upload)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets the recorded parts the server does not hold, so that they are sent again.
    pub async fn forget_parts(&self, file_id: i64, numbers: &[i64]) -> Result<()> {
        if numbers.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for n in numbers {
            sqlx::query("DELETE FROM parts WHERE file_id = ? AND number = ?")
                .bind(file_id)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        }
        update_bytes_sent(&mut tx, file_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The file is in S3, verified. No effect when the file changed meanwhile.
    pub async fn mark_uploaded(&self, v: FileVersion, etag: Option<&str>) -> Result<bool> {
        let marked = self
            .mark_uploaded_all(&[Verified {
                version: v,
                etag: etag.map(str::to_owned),
                read: None,
            }])
            .await?;
        Ok(marked.first().copied().unwrap_or(false))
    }

    /// Files in S3, verified: for each, whether it was marked UPLOADED (false when it changed
    /// meanwhile). The files without a multipart upload (every small file) are marked by one
    /// statement, however many; each file with one goes in a transaction of its own, which also
    /// drops its parts.
    ///
    /// A file of a job that moves its files (`after_upload: delete`) is marked for removal
    /// with the identity of the file read, in the same write: it is removed only after this
    /// commits, so no file is ever gone without its object recorded as verified.
    pub async fn mark_uploaded_all(&self, done: &[Verified]) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        // `$read`: the SQL of the identity of the file read.
        macro_rules! uploaded {
            ($read:literal) => {concat!(
                "UPDATE files SET state = 'UPLOADED', bytes_sent = size,
                    multipart_upload_id = NULL, part_size = NULL, checksum = NULL,
                    upload_settings = NULL, restyle = NULL, restyle_from = NULL,
                    last_error = NULL, next_attempt_at = NULL,
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                    removal = CASE
                        WHEN removal = 'done' THEN 'done'
                        WHEN (SELECT after_upload FROM upload_jobs WHERE id = files.upload_job_id)
                            = 'delete' AND ", $read, " IS NOT NULL THEN 'due'
                    END,
                    local_identity = ", $read, ",")
            };
        }
        // [[id, size, mtime_ns, etag, read], ...]
        let versions = serde_json::Value::Array(
            done.iter()
                .map(|d| {
                    let v = d.version;
                    serde_json::json!([v.file_id, to_i64(v.size), v.mtime_ns, d.etag, d.read])
                })
                .collect(),
        );
        let marked: HashSet<i64> = sqlx::query_scalar(concat!(
            uploaded!("d.value ->> 4"),
            " etag = d.value ->> 3
             FROM json_each(?1) AS d
             WHERE files.id = d.value ->> 0 AND files.state = 'IN_PROGRESS'
                AND files.size = d.value ->> 1 AND files.mtime_ns = d.value ->> 2
                AND files.multipart_upload_id IS NULL
             RETURNING files.id"
        ))
        .bind(versions.to_string())
        .fetch_all(&self.writer)
        .await?
        .into_iter()
        .collect();
        let mut results = Vec::with_capacity(done.len());
        for Verified {
            version: v,
            etag,
            read,
        } in done
        {
            if marked.contains(&v.file_id) {
                results.push(true);
                continue;
            }
            // A multipart upload (or a version no longer in progress, which this finds too).
            let mut tx = self.write_tx().await?;
            let hit = sqlx::query(concat!(
                uploaded!("?5"),
                " etag = ?1
                 WHERE id = ?2 AND state = 'IN_PROGRESS' AND size = ?3 AND mtime_ns = ?4"
            ))
            .bind(etag)
            .bind(v.file_id)
            .bind(to_i64(v.size))
            .bind(v.mtime_ns)
            .bind(read)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if hit {
                drop_parts(&mut tx, v.file_id).await?;
                tx.commit().await?;
            }
            results.push(hit);
        }
        Ok(results)
    }

    /// The attempt failed but may succeed later: back to PENDING, due at `next_attempt_at` (ms
    /// since the epoch). With `keep_upload` the multipart upload and its parts stay, to resume;
    /// without, the upload is let go of and the next attempt starts over. Without
    /// `count_attempt` the attempt is given back (S3 could not be reached: it proved nothing).
    pub async fn retry_later(
        &self,
        v: FileVersion,
        error: &str,
        next_attempt_at: i64,
        keep_upload: bool,
        count_attempt: bool,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(bucket) = this_version(&mut tx, v).await? else {
            return Ok(false);
        };
        if !keep_upload {
            release_multipart(&mut tx, v.file_id, &bucket).await?;
        }
        sqlx::query(
            "UPDATE files SET state = 'PENDING', last_error = ?, next_attempt_at = ?,
                attempts = CASE WHEN ? THEN attempts ELSE MAX(attempts - 1, 0) END,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(count_attempt)
        .bind(v.file_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The job's bucket refused it (missing, access denied): the job is blocked with the reason,
    /// and the file goes back to PENDING, its attempt not counted, to go on when the bucket is
    /// back (the periodic scan checks).
    pub async fn block_job(&self, v: FileVersion, job_id: &str, error: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE files SET state = 'PENDING', attempts = MAX(attempts - 1, 0), last_error = ?,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ? AND state = 'IN_PROGRESS' AND size = ? AND mtime_ns = ?",
        )
        .bind(error)
        .bind(v.file_id)
        .bind(to_i64(v.size))
        .bind(v.mtime_ns)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE upload_jobs SET error = ?, error_reason = 'BucketUnavailable',
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?",
        )
        .bind(error)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lets go of the file's open multipart upload (queued for abort), so that the attempt
    /// starts over.
    pub async fn abandon_upload(&self, v: FileVersion) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Some(bucket) = this_version(&mut tx, v).await? {
            release_multipart(&mut tx, v.file_id, &bucket).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The upload failed for good; its multipart upload, if any, is queued for abort.
    pub async fn mark_failed(&self, v: FileVersion, error: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(bucket) = this_version(&mut tx, v).await? else {
            return Ok(false);
        };
        release_multipart(&mut tx, v.file_id, &bucket).await?;
        sqlx::query(
            "UPDATE files SET state = 'FAILED', bytes_sent = 0, last_error = ?, next_attempt_at = NULL,
                restyle = NULL, restyle_from = NULL,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?",
        )
        .bind(error)
        .bind(v.file_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The file on disk is not the version claimed (it changed, or vanished): record what is
    /// there now and put it back to PENDING, or forget it when it is gone.
    pub async fn file_changed(
        &self,
        v: FileVersion,
        now: Option<(u64, i64)>,
        settle: Duration,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let Some(bucket) = this_version(&mut tx, v).await? else {
            return Ok(());
        };
        release_multipart(&mut tx, v.file_id, &bucket).await?;
        match now {
            Some((size, mtime_ns)) => {
                sqlx::query(
                    "UPDATE files SET state = 'PENDING', size = ?, mtime_ns = ?, bytes_sent = 0,
                        attempts = 0, next_attempt_at = ?, restyle = NULL, restyle_from = NULL,
                        removal = NULL, local_identity = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                     WHERE id = ?",
                )
                .bind(to_i64(size))
                .bind(mtime_ns)
                .bind(settle_due(mtime_ns, settle, now_ms()))
                .bind(v.file_id)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM files WHERE id = ?")
                    .bind(v.file_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Files whose outcome could not be written go back to PENDING, their multipart uploads
    /// and parts kept, to resume; the attempt is not counted (what it ended in is unknown).
    /// Versions no longer IN_PROGRESS are left as they are. Returns how many went back.
    pub async fn requeue_in_progress(&self, versions: &[FileVersion]) -> Result<u64> {
        let versions = serde_json::Value::Array(
            versions
                .iter()
                .map(|v| serde_json::json!([v.file_id, to_i64(v.size), v.mtime_ns]))
                .collect(),
        );
        let done = sqlx::query(
            "UPDATE files SET state = 'PENDING', attempts = MAX(attempts - 1, 0),
                next_attempt_at = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             FROM json_each(?1) AS d
             WHERE files.id = d.value ->> 0 AND files.state = 'IN_PROGRESS'
                AND files.size = d.value ->> 1 AND files.mtime_ns = d.value ->> 2",
        )
        .bind(versions.to_string())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// At start: files that were uploading when the process stopped go back to PENDING, their
    /// multipart uploads and recorded parts kept, so that the next attempt resumes them.
    /// Returns how many files were recovered.
    pub async fn recover_interrupted(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE files SET state = 'PENDING', attempts = MAX(attempts - 1, 0),
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE state = 'IN_PROGRESS'",
        )
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Whether the file is this version in progress with this multipart upload (on a pool, or in the
/// caller's transaction).
async fn holds<'e>(
    db: impl sqlx::Executor<'e, Database = Sqlite>,
    v: FileVersion,
    upload: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM files WHERE id = ? AND state = 'IN_PROGRESS'
            AND size = ? AND mtime_ns = ? AND multipart_upload_id = ?)",
    )
    .bind(v.file_id)
    .bind(to_i64(v.size))
    .bind(v.mtime_ns)
    .bind(upload)
    .fetch_one(db)
    .await?)
}

/// The bucket of a file's job, if the file is still this version in progress.
async fn this_version(
    tx: &mut Transaction<'static, Sqlite>,
    v: FileVersion,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar::<_, String>(
        "SELECT j.destination_bucket FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
         WHERE f.id = ? AND f.state = 'IN_PROGRESS' AND f.size = ? AND f.mtime_ns = ?",
    )
    .bind(v.file_id)
    .bind(to_i64(v.size))
    .bind(v.mtime_ns)
    .fetch_optional(&mut **tx)
    .await?)
}

pub(super) async fn drop_parts(tx: &mut Transaction<'static, Sqlite>, file_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM parts WHERE file_id = ?")
        .bind(file_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn update_bytes_sent(tx: &mut Transaction<'static, Sqlite>, file_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE files SET bytes_sent = (SELECT COALESCE(SUM(size), 0) FROM parts WHERE file_id = ?1)
         WHERE id = ?1",
    )
    .bind(file_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
