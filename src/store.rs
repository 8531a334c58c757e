//! The store: every read and write of ferry's state, as named operations over SQLite.
//!
//! Only this module knows SQL. Write transactions start with `BEGIN IMMEDIATE` so that two writers
//! queue on the busy timeout instead of failing on a lock upgrade.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, FromRow, Sqlite, Transaction};

use crate::config::DatabaseLocation;
use crate::core::diff::{RecordedFile, SeenFile};
use crate::core::model::{Blocker, FileState, FileTally, JobFacts, StateTally};
use crate::core::plan::{object_key, settle_due};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds a value ferry does not understand: {0}")]
    Corrupt(String),
    #[error("an upload job with id {0:?} already exists")]
    Conflict(String),
    #[error("the job {name:?} is declared by {owner}; change it there")]
    Owned { name: String, owner: String },
}

impl StoreError {
    /// Whether the database cannot take the write now but may later, ferry being fine: a full
    /// disk, an I/O error, a read-only file, a lock held too long, a writer that cannot be had.
    /// The API answers these 503, and the engine puts the work back to try again.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Database(db) => {
                // SQLite's primary result code is the low byte of the extended one.
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
                // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
                matches!(code, 5 | 6 | 8 | 10 | 13 | 14)
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
    pub attempt: i64,
    /// The multipart upload left open by an earlier attempt, to resume.
    pub resume: Option<OpenUpload>,
}

/// A multipart upload in progress, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub multipart_upload_id: String,
    pub part_size: u64,
    /// The checksum algorithm it was begun with (FERRY_CHECKSUM then).
    pub checksum: String,
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
    pub fn version(&self) -> FileVersion {
        FileVersion {
            file_id: self.file_id,
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// A job's multipart uploads the janitor gave up aborting.
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
    source_folder: String,
    bucket: String,
}

/// Rows per INSERT when a scan adds files (5 values each, well under SQLite's 32,766).
const INSERT_ROWS: usize = 500;

/// The database: readers in a pool, and one connection for every write.
///
/// SQLite takes one writer at a time. Writers on several connections meet its lock, and a
/// connection that finds it taken sleeps in SQLite's busy handler (1 ms, 2 ms, 5 ms ...) before
/// trying again; with a few uploads recording at once, those sleeps were most of the time of a
/// small file. Writes therefore queue for the one writer connection in the pool, which wakes the
/// next one as soon as the last commits. Readers (WAL) never wait for it.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: SqlitePool,
}

/// Whether a connection given back to its pool may serve again: any rollback its transaction's
/// drop queued has run (the ping comes after it) and no transaction is left open.
///
/// After an error such as SQLITE_FULL, SQLite may already have rolled the transaction back by
/// itself; the ROLLBACK that follows then fails, and sqlx keeps counting the transaction as
/// open. Every later `BEGIN` on that connection failed with "attempted to call begin_with at
/// non-zero transaction depth", until a restart (seen with a full disk). Such a connection is
/// closed instead, and the pool opens a fresh one for the next writer.
async fn still_usable(conn: &mut SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "a database connection was left inside a failed transaction; it is replaced"
        );
        return Ok(false);
    }
    Ok(true)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(location: &DatabaseLocation) -> Result<Self> {
        let options = match location {
            DatabaseLocation::File(path) => SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
            DatabaseLocation::Memory => SqliteConnectOptions::from_str("sqlite::memory:")?,
        }
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));

        if matches!(location, DatabaseLocation::File(_)) {
            // One connection first switches a new file to WAL and migrates it, alone: pool
            // connections opening at the same moment could otherwise meet the switch and fail
            // with "database is locked" (SQLite does not wait on a journal-mode change; seen in
            // CI). WAL is then a property of the file, and later connections find it set.
            let mut first = SqliteConnection::connect_with(&options).await?;
            sqlx::migrate!("./migrations").run(&mut first).await?;
            first.close().await?;
        }
        let pool_of = |max| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_release(|conn, _| Box::pin(still_usable(conn)))
                .connect_with(options.clone())
        };
        if matches!(location, DatabaseLocation::Memory) {
            // Each in-memory connection would be a database of its own: one connection does all.
            let pool = pool_of(1).await?;
            sqlx::migrate!("./migrations").run(&pool).await?;
            return Ok(Store {
                writer: pool.clone(),
                pool,
            });
        }
        let store = Store {
            pool: pool_of(4).await?,
            writer: pool_of(1).await?,
        };
        // A read-only file (or folder) opens, migrates when there is nothing to migrate, and
        // reads: only a write tells.
        store.probe_write().await?;
        Ok(store)
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Writes and commits one row: whether the database can be written now (readiness, and the
    /// start). A read-only file or folder, and a disk too full for the write, fail it.
    pub async fn probe_write(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO write_probe (id, at) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    // ---- jobs ----

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

    fn tallies(rows: Vec<(String, String, i64, i64, i64)>) -> Result<HashMap<String, FileTally>> {
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

    // ---- scanning ----

    /// What the store holds of a job's files, keyed by path, for the scan's diff.
    pub async fn recorded_files(&self, job_id: &str) -> Result<HashMap<String, RecordedFile>> {
        let rows = sqlx::query_as::<_, (i64, String, i64, i64)>(
            "SELECT id, path, size, mtime_ns FROM files WHERE upload_job_id = ?",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(file_id, path, size, mtime_ns)| {
                (
                    path,
                    RecordedFile {
                        file_id,
                        size: to_u64(size),
                        mtime_ns,
                    },
                )
            })
            .collect())
    }

    /// Adds new files, puts changed ones back to PENDING (abandoning an upload of the old bytes),
    /// and forgets files gone from disk: one transaction per call.
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
        for (file_id, f) in changed {
            release_multipart(&mut tx, *file_id, job_id, bucket).await?;
            sqlx::query(
                "UPDATE files SET state = 'PENDING', size = ?, mtime_ns = ?, bytes_sent = 0,
                    attempts = 0, last_error = NULL, etag = NULL, next_attempt_at = ?,
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
            release_multipart(&mut tx, *file_id, job_id, bucket).await?;
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

    // ---- uploading ----

    /// Takes the oldest PENDING file that is due (no retry pending) of a job that is not blocked,
    /// and marks it IN_PROGRESS.
    pub async fn claim_next_file(&self) -> Result<Option<ClaimedFile>> {
        Ok(self.claim_files(1, &[]).await?.into_iter().next())
    }

    /// Takes up to `limit` of the oldest PENDING files that are due (no retry pending) of jobs
    /// that are not blocked, and marks them IN_PROGRESS; oldest first. Files whose object key
    /// (`{upload_job_id}/{path}`) is in `busy` are left: an upload of an older version of them
    /// is still running, and a second upload of the same key must not race it.
    ///
    /// One statement, so one round trip to the writer and atomic by itself.
    ///
    /// Its LIMIT (like every bound LIMIT here) is written `CAST(? AS INTEGER)`: SQLite plans a
    /// bare `LIMIT ?` with the value bound, and so prepares the statement again at every run;
    /// that was 7 % of ferry's CPU on many small files.
    pub async fn claim_files(&self, limit: usize, busy: &[String]) -> Result<Vec<ClaimedFile>> {
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".to_owned());
        let mut rows = sqlx::query_as::<_, ClaimRow>(
            "UPDATE files SET state = 'IN_PROGRESS', attempts = attempts + 1,
                next_attempt_at = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id IN (
                SELECT f.id FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
                WHERE f.state = 'PENDING' AND j.error IS NULL
                  AND (f.next_attempt_at IS NULL OR f.next_attempt_at <= ?)
                  AND f.upload_job_id || '/' || f.path NOT IN (SELECT value FROM json_each(?))
                ORDER BY f.id LIMIT CAST(? AS INTEGER))
             RETURNING id, upload_job_id, path, size, mtime_ns, attempts,
                multipart_upload_id, part_size, checksum,
                (SELECT source_folder FROM upload_jobs WHERE id = upload_job_id) AS source_folder,
                (SELECT destination_bucket FROM upload_jobs WHERE id = upload_job_id) AS bucket",
        )
        .bind(now_ms())
        .bind(busy)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.writer)
        .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows
            .into_iter()
            .map(|r| ClaimedFile {
                file_id: r.id,
                upload_id: r.upload_job_id,
                path: r.path,
                size: to_u64(r.size),
                mtime_ns: r.mtime_ns,
                source_folder: PathBuf::from(r.source_folder),
                bucket: r.bucket,
                attempt: r.attempts,
                resume: match (r.multipart_upload_id, r.part_size, r.checksum) {
                    (Some(id), Some(part_size), Some(checksum)) => Some(OpenUpload {
                        multipart_upload_id: id,
                        part_size: to_u64(part_size),
                        checksum,
                    }),
                    _ => None,
                },
            })
            .collect())
    }

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
            "UPDATE files SET multipart_upload_id = ?, part_size = ?, checksum = ?, bytes_sent = 0,
                updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ? AND state = 'IN_PROGRESS' AND size = ? AND mtime_ns = ?",
        )
        .bind(&upload.multipart_upload_id)
        .bind(to_i64(upload.part_size))
        .bind(&upload.checksum)
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
            .mark_uploaded_all(&[(v, etag.map(str::to_owned))])
            .await?;
        Ok(marked.first().copied().unwrap_or(false))
    }

    /// Files in S3, verified: for each, whether it was marked UPLOADED (false when it changed
    /// meanwhile). The files without a multipart upload (every small file) are marked by one
    /// statement, however many; each file with one goes in a transaction of its own, which also
    /// drops its parts.
    pub async fn mark_uploaded_all(
        &self,
        done: &[(FileVersion, Option<String>)],
    ) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        macro_rules! uploaded {
            () => {
                "UPDATE files SET state = 'UPLOADED', bytes_sent = size,
                    multipart_upload_id = NULL, part_size = NULL, checksum = NULL,
                    last_error = NULL, next_attempt_at = NULL,
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),"
            };
        }
        // [[id, size, mtime_ns, etag], ...]
        let versions = serde_json::Value::Array(
            done.iter()
                .map(|(v, etag)| serde_json::json!([v.file_id, to_i64(v.size), v.mtime_ns, etag]))
                .collect(),
        );
        let marked: HashSet<i64> = sqlx::query_scalar(concat!(
            uploaded!(),
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
        for (v, etag) in done {
            if marked.contains(&v.file_id) {
                results.push(true);
                continue;
            }
            // A multipart upload (or a version no longer in progress, which this finds too).
            let mut tx = self.write_tx().await?;
            let hit = sqlx::query(concat!(
                uploaded!(),
                " etag = ?1
                 WHERE id = ?2 AND state = 'IN_PROGRESS' AND size = ?3 AND mtime_ns = ?4"
            ))
            .bind(etag)
            .bind(v.file_id)
            .bind(to_i64(v.size))
            .bind(v.mtime_ns)
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
        let Some((job_id, bucket)) = this_version(&mut tx, v).await? else {
            return Ok(false);
        };
        if !keep_upload {
            release_multipart(&mut tx, v.file_id, &job_id, &bucket).await?;
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
        if let Some((job_id, bucket)) = this_version(&mut tx, v).await? {
            release_multipart(&mut tx, v.file_id, &job_id, &bucket).await?;
        }
        tx.commit().await?;
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

    /// Every multipart upload id ferry knows of in a bucket: open on a file, or queued for abort.
    pub async fn known_multipart_uploads(
        &self,
        bucket: &str,
    ) -> Result<std::collections::HashSet<String>> {
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

    /// The upload failed for good; its multipart upload, if any, is queued for abort.
    pub async fn mark_failed(&self, v: FileVersion, error: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some((job_id, bucket)) = this_version(&mut tx, v).await? else {
            return Ok(false);
        };
        release_multipart(&mut tx, v.file_id, &job_id, &bucket).await?;
        sqlx::query(
            "UPDATE files SET state = 'FAILED', bytes_sent = 0, last_error = ?, next_attempt_at = NULL,
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
        let Some((job_id, bucket)) = this_version(&mut tx, v).await? else {
            return Ok(());
        };
        release_multipart(&mut tx, v.file_id, &job_id, &bucket).await?;
        match now {
            Some((size, mtime_ns)) => {
                sqlx::query(
                    "UPDATE files SET state = 'PENDING', size = ?, mtime_ns = ?, bytes_sent = 0,
                        attempts = 0, next_attempt_at = ?,
                        updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
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

    /// Tracked files of a job, by path, after `after`, at most `limit`.
    pub async fn list_files(
        &self,
        job_id: &str,
        state: Option<FileState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileRow>> {
        Ok(sqlx::query_as::<_, FileRow>(
            "SELECT * FROM files
             WHERE upload_job_id = ?1 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR path > ?3)
             ORDER BY path LIMIT CAST(?4 AS INTEGER)",
        )
        .bind(job_id)
        .bind(state.map(FileState::as_str))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- aborts ----

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

    /// The multipart uploads that could not be aborted, by the job their key is under (its
    /// upload id, the key's first segment), with the store's last answer: of one job, or of
    /// every job in one statement (a list of jobs must not cost a query per job).
    pub async fn aborts_given_up(
        &self,
        job_id: Option<&str>,
    ) -> Result<HashMap<String, AbortsGivenUp>> {
        let rows = sqlx::query_as::<_, (String, i64, Option<String>)>(
            "SELECT substr(key, 1, instr(key, '/') - 1) AS job, COUNT(*), MAX(last_error)
             FROM pending_aborts
             WHERE given_up_at IS NOT NULL
                AND (?1 IS NULL OR substr(key, 1, length(?1) + 1) = ?1 || '/')
             GROUP BY job",
        )
        .bind(job_id)
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

    /// Queues an upload for abort outside any file (one whose row vanished under its uploader).
    pub async fn queue_abort(&self, upload: &str, bucket: &str, key: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        queue_abort(&mut tx, upload, bucket, key).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The job and bucket of a file, if it is still this version in progress.
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

async fn this_version(
    tx: &mut Transaction<'static, Sqlite>,
    v: FileVersion,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as::<_, (String, String)>(
        "SELECT j.id, j.destination_bucket FROM files f JOIN upload_jobs j ON j.id = f.upload_job_id
         WHERE f.id = ? AND f.state = 'IN_PROGRESS' AND f.size = ? AND f.mtime_ns = ?",
    )
    .bind(v.file_id)
    .bind(to_i64(v.size))
    .bind(v.mtime_ns)
    .fetch_optional(&mut **tx)
    .await?)
}

async fn drop_parts(tx: &mut Transaction<'static, Sqlite>, file_id: i64) -> Result<()> {
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

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Moves a file's open multipart upload (if any) to `pending_aborts`, in the caller's transaction.
async fn release_multipart(
    tx: &mut Transaction<'static, Sqlite>,
    file_id: i64,
    job_id: &str,
    bucket: &str,
) -> Result<()> {
    let open = sqlx::query_as::<_, (String, String)>(
        "SELECT path, multipart_upload_id FROM files
         WHERE id = ? AND multipart_upload_id IS NOT NULL",
    )
    .bind(file_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((path, upload)) = open {
        queue_abort(tx, &upload, bucket, &object_key(job_id, &path)).await?;
        sqlx::query(
            "UPDATE files SET multipart_upload_id = NULL, part_size = NULL, checksum = NULL,
                bytes_sent = 0 WHERE id = ?",
        )
        .bind(file_id)
        .execute(&mut **tx)
        .await?;
        drop_parts(tx, file_id).await?;
    }
    Ok(())
}

/// Queues every open multipart upload of a job for abort, in the caller's transaction (the job is
/// being deleted, or moved to another folder or bucket).
async fn queue_job_aborts(
    tx: &mut Transaction<'static, Sqlite>,
    id: &str,
    bucket: &str,
) -> Result<()> {
    let open = sqlx::query_as::<_, (String, String)>(
        "SELECT path, multipart_upload_id FROM files
         WHERE upload_job_id = ? AND multipart_upload_id IS NOT NULL",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    for (path, upload) in open {
        queue_abort(tx, &upload, bucket, &object_key(id, &path)).await?;
    }
    Ok(())
}

async fn queue_abort(
    tx: &mut Transaction<'static, Sqlite>,
    upload: &str,
    bucket: &str,
    key: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_aborts (multipart_upload_id, bucket, key) VALUES (?, ?, ?)
         ON CONFLICT (multipart_upload_id) DO NOTHING",
    )
    .bind(upload)
    .bind(bucket)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tallies triggers keep (migration 0005) against a count over the files themselves.
    async fn assert_tallies_agree(store: &Store) {
        let rows = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
            "SELECT upload_job_id, state, COUNT(*), SUM(size), SUM(bytes_sent)
             FROM files GROUP BY upload_job_id, state",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let counted = Store::tallies(rows).unwrap();
        assert_eq!(store.all_tallies().await.unwrap(), counted);
        for (job, tally) in &counted {
            assert_eq!(&store.job_tally(job).await.unwrap(), tally);
        }
    }

    async fn store_with_job() -> Store {
        let store = Store::open(&DatabaseLocation::Memory).await.unwrap();
        store
            .create_job("job", "/src", "bucket", None)
            .await
            .unwrap();
        store
    }

    fn open(id: &str) -> OpenUpload {
        OpenUpload {
            multipart_upload_id: id.into(),
            part_size: 5,
            checksum: "crc32c".into(),
        }
    }

    fn part(number: i64, size: i64) -> PartRecord {
        PartRecord {
            number,
            size,
            etag: format!("\"etag-{number}\""),
            checksum: Some("AAAAAA==".into()),
            md5: "00".repeat(16),
        }
    }

    fn seen(path: &str, size: u64, mtime_ns: i64) -> SeenFile {
        SeenFile {
            path: path.into(),
            size,
            mtime_ns,
        }
    }

    /// What a scan records when it first sees these files of `job`.
    async fn add_files(store: &Store, job: &str, files: &[SeenFile]) {
        store
            .apply_scan_changes(job, "bucket", files, &[], &[], Duration::ZERO)
            .await
            .unwrap();
    }

    /// What a scan records when a file of "job" is gone from disk.
    async fn removed_from_disk(store: &Store, file_id: i64) {
        store
            .apply_scan_changes("job", "bucket", &[], &[], &[file_id], Duration::ZERO)
            .await
            .unwrap();
    }

    /// What a scan records when it sees a file of "job" change on disk.
    async fn changed_on_disk(store: &Store, file_id: i64, now: SeenFile) {
        store
            .apply_scan_changes("job", "bucket", &[], &[(file_id, now)], &[], Duration::ZERO)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_job_id_is_taken_once() {
        let store = store_with_job().await;
        let again = store.create_job("job", "/other", "bucket", None).await;
        assert!(matches!(again, Err(StoreError::Conflict(id)) if id == "job"));
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn files_are_claimed_once_oldest_first_and_not_from_blocked_jobs() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 1, 1), seen("b", 2, 2)]).await;
        let first = store.claim_next_file().await.unwrap().unwrap();
        assert_eq!((first.path.as_str(), first.attempt), ("a", 1));
        assert_eq!(first.bucket, "bucket");
        store
            .set_job_error("job", Some((Blocker::BucketUnavailable, "bucket gone")))
            .await
            .unwrap();
        assert!(store.claim_next_file().await.unwrap().is_none());
        store.set_job_error("job", None).await.unwrap();
        let second = store.claim_next_file().await.unwrap().unwrap();
        assert_eq!(second.path, "b");
        assert!(store.claim_next_file().await.unwrap().is_none());
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn several_files_are_claimed_at_once_oldest_first_each_once() {
        let store = store_with_job().await;
        let files: Vec<SeenFile> = (0..5).map(|i| seen(&format!("f{i}"), 1, 1)).collect();
        add_files(&store, "job", &files).await;
        let paths = |claimed: Vec<ClaimedFile>| -> Vec<String> {
            claimed.into_iter().map(|f| f.path).collect()
        };
        assert_eq!(
            paths(store.claim_files(3, &[]).await.unwrap()),
            ["f0", "f1", "f2"]
        );
        // A file whose older upload still runs is left until it ends.
        let busy = ["job/f3".to_owned()];
        assert_eq!(paths(store.claim_files(3, &busy).await.unwrap()), ["f4"]);
        assert_eq!(paths(store.claim_files(3, &[]).await.unwrap()), ["f3"]);
        assert!(store.claim_files(3, &[]).await.unwrap().is_empty());
        let tally = store.job_tally("job").await.unwrap();
        assert_eq!(tally.in_progress.files, 5);
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn a_change_seen_by_a_scan_wins_over_the_upload_of_the_old_bytes() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 10, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        assert!(
            store
                .set_multipart_upload(claimed.version(), &open("mpu-1"))
                .await
                .unwrap()
        );
        assert!(
            store
                .holds_upload(claimed.version(), "mpu-1")
                .await
                .unwrap()
        );
        assert!(
            !store
                .holds_upload(claimed.version(), "mpu-2")
                .await
                .unwrap()
        );
        // The scan sees the file grow while it uploads.
        changed_on_disk(&store, claimed.file_id, seen("a", 20, 2)).await;
        assert!(
            !store
                .record_part(claimed.version(), "mpu-1", &part(1, 5))
                .await
                .unwrap()
        );
        assert!(
            !store
                .mark_uploaded(claimed.version(), Some("etag"))
                .await
                .unwrap()
        );
        // Nor may the old upload be completed.
        assert!(
            !store
                .holds_upload(claimed.version(), "mpu-1")
                .await
                .unwrap()
        );
        // The old upload is queued for abort, and the new version waits its turn.
        let aborts = store.pending_aborts(10).await.unwrap();
        assert_eq!(aborts.len(), 1);
        assert_eq!(
            (
                aborts[0].key.as_str(),
                aborts[0].multipart_upload_id.as_str()
            ),
            ("job/a", "mpu-1")
        );
        let again = store.claim_next_file().await.unwrap().unwrap();
        assert_eq!((again.size, again.mtime_ns), (20, 2));
        assert!(store.mark_uploaded(again.version(), None).await.unwrap());
        let tally = store.job_tally("job").await.unwrap();
        assert_eq!(tally.uploaded.files, 1);
        assert_eq!(tally.uploaded.bytes, 20);
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn uploads_are_marked_together_and_only_the_versions_still_in_progress() {
        let store = store_with_job().await;
        let files: Vec<SeenFile> = ["small", "multipart", "changed", "done"]
            .iter()
            .map(|p| seen(p, 10, 1))
            .collect();
        add_files(&store, "job", &files).await;
        let claimed = store.claim_files(4, &[]).await.unwrap();
        let [small, multipart, changed, done] = &claimed[..] else {
            panic!("four files claimed: {claimed:?}");
        };
        // One multipart upload with a part recorded; one file changed meanwhile; one marked
        // already.
        assert!(
            store
                .set_multipart_upload(multipart.version(), &open("mpu-1"))
                .await
                .unwrap()
        );
        assert!(
            store
                .record_part(multipart.version(), "mpu-1", &part(1, 5))
                .await
                .unwrap()
        );
        changed_on_disk(&store, changed.file_id, seen("changed", 20, 2)).await;
        assert!(store.mark_uploaded(done.version(), None).await.unwrap());

        let marked = store
            .mark_uploaded_all(&[
                (small.version(), Some("\"e-small\"".into())),
                (multipart.version(), Some("\"e-multi-1\"".into())),
                (changed.version(), None),
                (done.version(), Some("\"e-again\"".into())),
            ])
            .await
            .unwrap();
        assert_eq!(marked, [true, true, false, false]);
        let rows = store.list_files("job", None, None, 10).await.unwrap();
        let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap();
        assert_eq!(row("small").etag.as_deref(), Some("\"e-small\""));
        assert_eq!(row("small").bytes_sent, 10);
        assert_eq!(row("multipart").etag.as_deref(), Some("\"e-multi-1\""));
        assert_eq!(row("multipart").multipart_upload_id, None);
        assert!(
            store
                .parts(multipart.file_id, "mpu-1")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(row("changed").state.0, FileState::Pending);
        assert_eq!(row("done").etag, None);
        let tally = store.job_tally("job").await.unwrap();
        assert_eq!(tally.uploaded.files, 3);
        assert!(store.mark_uploaded_all(&[]).await.unwrap().is_empty());
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn a_failure_records_the_reason_and_lets_go_of_the_multipart_upload() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("big", 10, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        store
            .set_multipart_upload(claimed.version(), &open("mpu-2"))
            .await
            .unwrap();
        assert!(
            store
                .mark_failed(claimed.version(), "S3 said no")
                .await
                .unwrap()
        );
        let files = store.list_files("job", None, None, 10).await.unwrap();
        assert_eq!(files[0].state.0, FileState::Failed);
        assert_eq!(files[0].last_error.as_deref(), Some("S3 said no"));
        assert!(files[0].multipart_upload_id.is_none());
        assert_eq!(store.pending_aborts(10).await.unwrap().len(), 1);
        store.abort_done("mpu-2").await.unwrap();
        assert!(store.pending_aborts(10).await.unwrap().is_empty());
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn interrupted_uploads_go_back_to_pending_at_start() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 10, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        store
            .set_multipart_upload(claimed.version(), &open("mpu-3"))
            .await
            .unwrap();
        assert!(
            store
                .record_part(claimed.version(), "mpu-3", &part(1, 5))
                .await
                .unwrap()
        );
        assert_eq!(store.recover_interrupted().await.unwrap(), 1);
        // The upload and its parts are kept, to resume; nothing is aborted.
        let tally = store.job_tally("job").await.unwrap();
        assert_eq!((tally.pending.files, tally.pending.bytes_sent), (1, 5));
        assert!(store.pending_aborts(10).await.unwrap().is_empty());
        let again = store.claim_next_file().await.unwrap().unwrap();
        assert_eq!(again.resume, Some(open("mpu-3")));
        assert_eq!(again.attempt, 1, "an interrupted attempt is not counted");
        assert_eq!(
            store.parts(again.file_id, "mpu-3").await.unwrap(),
            vec![part(1, 5)]
        );
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn deleting_a_job_removes_its_files_and_queues_its_open_uploads() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 10, 1), seen("b", 1, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        store
            .set_multipart_upload(claimed.version(), &open("mpu-4"))
            .await
            .unwrap();
        assert!(store.delete_job("job").await.unwrap());
        assert!(!store.delete_job("job").await.unwrap());
        assert!(store.get_job("job").await.unwrap().is_none());
        assert_eq!(store.job_tally("job").await.unwrap().total_files(), 0);
        assert_eq!(store.pending_aborts(10).await.unwrap()[0].bucket, "bucket");
        // The uploader's next write finds nothing, so it stops.
        assert!(
            !store
                .record_part(claimed.version(), "mpu-4", &part(1, 5))
                .await
                .unwrap()
        );
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn parts_are_recorded_counted_and_forgotten() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 12, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        store
            .set_multipart_upload(claimed.version(), &open("mpu-5"))
            .await
            .unwrap();
        for p in [part(1, 5), part(2, 5), part(3, 2)] {
            assert!(
                store
                    .record_part(claimed.version(), "mpu-5", &p)
                    .await
                    .unwrap()
            );
        }
        // Another upload id is not this file's upload.
        assert!(
            !store
                .record_part(claimed.version(), "other", &part(1, 5))
                .await
                .unwrap()
        );
        assert_eq!(
            store.job_tally("job").await.unwrap().in_progress.bytes_sent,
            12
        );
        store.forget_parts(claimed.file_id, &[2]).await.unwrap();
        let numbers: Vec<i64> = store
            .parts(claimed.file_id, "mpu-5")
            .await
            .unwrap()
            .iter()
            .map(|p| p.number)
            .collect();
        assert_eq!(numbers, vec![1, 3]);
        assert_eq!(
            store.job_tally("job").await.unwrap().in_progress.bytes_sent,
            7
        );
        assert!(store.mark_uploaded(claimed.version(), None).await.unwrap());
        assert!(
            store
                .parts(claimed.file_id, "mpu-5")
                .await
                .unwrap()
                .is_empty()
        );
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn a_retry_waits_until_due_and_failed_files_can_be_put_back() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 1, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        let due = now_ms() + 60_000;
        assert!(
            store
                .retry_later(claimed.version(), "503", due, true, true)
                .await
                .unwrap()
        );
        assert!(
            store.claim_next_file().await.unwrap().is_none(),
            "not due yet"
        );
        assert_eq!(store.next_retry_due().await.unwrap(), Some(due));
        assert!(
            store
                .retry_later(claimed.version(), "x", due, true, true)
                .await
                .is_ok()
        );
        sqlx::query("UPDATE files SET next_attempt_at = 0")
            .execute(&store.pool)
            .await
            .unwrap();
        let again = store.claim_next_file().await.unwrap().unwrap();
        assert_eq!(again.attempt, 2);
        assert!(store.mark_failed(again.version(), "gave up").await.unwrap());
        assert_eq!(store.retry_failed("job").await.unwrap(), 1);
        let third = store.claim_next_file().await.unwrap().unwrap();
        assert_eq!(third.attempt, 1, "attempts start again");
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn a_refusing_bucket_blocks_the_job_without_failing_the_file() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 1, 1)]).await;
        let claimed = store.claim_next_file().await.unwrap().unwrap();
        store
            .block_job(claimed.version(), "job", "bucket gone")
            .await
            .unwrap();
        let job = store.get_job("job").await.unwrap().unwrap();
        assert_eq!(job.error.as_deref(), Some("bucket gone"));
        assert_eq!(store.job_tally("job").await.unwrap().pending.files, 1);
        assert!(store.claim_next_file().await.unwrap().is_none());
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn removed_files_leave_the_count() {
        let store = store_with_job().await;
        add_files(&store, "job", &[seen("a", 10, 1), seen("b", 1, 1)]).await;
        let recorded = store.recorded_files("job").await.unwrap();
        removed_from_disk(&store, recorded["b"].file_id).await;
        let tally = store.job_tally("job").await.unwrap();
        assert_eq!((tally.total_files(), tally.total_bytes()), (1, 10));
        assert_tallies_agree(&store).await;
    }

    #[tokio::test]
    async fn the_tallies_follow_every_change_to_the_files() {
        let store = store_with_job().await;
        store
            .create_job("other", "/o", "bucket", None)
            .await
            .unwrap();
        let files = [
            seen("a", 12, 1),
            seen("b", 3, 1),
            seen("c", 0, 1),
            seen("d", 7, 1),
        ];
        add_files(&store, "job", &files).await;
        add_files(&store, "other", &[seen("x", 4, 1)]).await;
        assert_tallies_agree(&store).await;
        let tally = store.job_tally("job").await.unwrap();
        assert_eq!((tally.pending.files, tally.pending.bytes), (4, 22));

        let claimed = store.claim_files(3, &[]).await.unwrap();
        assert_tallies_agree(&store).await;
        let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
        store
            .set_multipart_upload(a.version(), &open("mpu-a"))
            .await
            .unwrap();
        store
            .record_part(a.version(), "mpu-a", &part(1, 5))
            .await
            .unwrap();
        assert_tallies_agree(&store).await;
        assert_eq!(
            store.job_tally("job").await.unwrap().in_progress.bytes_sent,
            5
        );
        store.forget_parts(a.file_id, &[1]).await.unwrap();
        assert_tallies_agree(&store).await;
        assert!(store.mark_uploaded(b.version(), None).await.unwrap());
        assert!(store.mark_failed(c.version(), "gone").await.unwrap());
        assert_tallies_agree(&store).await;
        // A change on disk while uploading, a retry, the failed file put back, a restart.
        changed_on_disk(&store, a.file_id, seen("a", 20, 2)).await;
        assert_tallies_agree(&store).await;
        assert_eq!(store.retry_failed("job").await.unwrap(), 1);
        let d = store.claim_next_file().await.unwrap().unwrap();
        assert!(
            store
                .retry_later(d.version(), "503", 0, true, true)
                .await
                .unwrap()
        );
        store.claim_next_file().await.unwrap().unwrap();
        assert!(store.recover_interrupted().await.unwrap() >= 1);
        assert_tallies_agree(&store).await;
        // A file gone from disk; then the job's folder changes, which forgets all its files.
        let recorded = store.recorded_files("job").await.unwrap();
        removed_from_disk(&store, recorded["d"].file_id).await;
        assert_tallies_agree(&store).await;
        store
            .apply_job("job", "/elsewhere", "bucket", None, Origin::Api)
            .await
            .unwrap();
        assert_tallies_agree(&store).await;
        assert_eq!(store.job_tally("job").await.unwrap().total_files(), 0);
        // Deleting a job takes its tallies with it and leaves the other job's.
        assert!(store.delete_job("other").await.unwrap());
        assert_tallies_agree(&store).await;
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM file_tallies WHERE upload_job_id = 'other'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(left, 0);
    }

    /// sqlx keeps the checksum of every migration it applied and refuses to open a database
    /// whose applied migration has since changed: a schema change is a new migration, never an
    /// edit of a released one (add the new one's checksum here when it is released).
    #[test]
    fn released_migrations_are_never_edited() {
        let released = [
            (
                1,
                "b55ebde664ba0a54761de8cd898fd50888e9db5a2801056ea7963d8db6fd03b962759a7152fea5e9bd726d3b6bc8a706",
            ),
            (
                2,
                "c13562e9c9a76c7690b7c4ff599caa46a94e6bedcc5d767863cd03e655ef56fb7321e67972e947f1814de61390c48619",
            ),
            (
                3,
                "9e7d559b5d97205cfd95768baf5cac1686e0542bc5f285c727b928f90484b5782d5c1bdd81d2e2ed1afb5650c21a8e64",
            ),
            (
                4,
                "6a1ab1d53511527a3d94b5c2621d62a2e51c3bda5687aa22570684015a507835002481b00a0f2bd3f422a8baa536a6ac",
            ),
            (
                5,
                "21bb386283225f5d2c3a031ac6105e474772d4bbb9c079e528c3549312dd39187b8edf4d40b420dd5281b21907bfbd8a",
            ),
        ];
        let migrator = sqlx::migrate!("./migrations");
        for (version, checksum) in released {
            let migration = migrator
                .iter()
                .find(|m| m.version == version)
                .expect("a released migration was removed");
            let hex: String = migration
                .checksum
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                hex, checksum,
                "migration {version} was edited: add a new one instead"
            );
        }
    }
}
