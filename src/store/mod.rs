//! The store: every read and write of ferry's state, as named operations over SQLite.
//!
//! Only this module knows SQL. Write transactions start with `BEGIN IMMEDIATE` so that two writers
//! queue on the busy timeout instead of failing on a lock upgrade.
//!
//! - `mod.rs`: opening and migrating the database, its errors, the writer;
//! - [`jobs`]: the specs, who declares them, their tallies;
//! - [`files`]: what a scan records of the files on disk, and the file list;
//! - [`claims`]: which files the free upload slots take next, jobs in turn;
//! - [`uploads`]: recording what uploads did, part by part;
//! - [`aborts`]: multipart uploads let go of, queued until the store aborts them.

mod aborts;
mod claims;
#[cfg(test)]
mod claims_tests;
mod files;
mod jobs;
mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod migration_tests;
mod prunes;
#[cfg(test)]
mod tests;
mod uploads;

pub use aborts::{AbortsGivenUp, PendingAbort};
pub use files::{FileRow, StoredFileState};
pub use jobs::{Applied, JobRow, Origin};
pub use lifecycle::{DueRemoval, ResyncRow};
pub use prunes::{Confirmed, DuePrune, PruneCounts};
pub use uploads::{ClaimedFile, FileVersion, OpenUpload, PartRecord, Restyle, Verified};

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};

use crate::config::DatabaseLocation;

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
    #[error(
        "key_prefix {prefix:?} overlaps the prefix {other_prefix:?} of the job {other:?} in bucket {bucket:?}: one job could overwrite the other's objects; give each job a prefix of its own"
    )]
    Overlap {
        bucket: String,
        prefix: String,
        other: String,
        other_prefix: String,
    },
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
    /// The job served last by a claim, whose turn is over (`claims`); empty at the start.
    turn: Arc<Mutex<String>>,
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

/// Job ids bound as one JSON array (read back with `json_each`), so that a statement about a
/// page of jobs is one statement whatever the page's length; `None` stays NULL: every job.
fn ids_json(ids: Option<&[&str]>) -> Result<Option<String>> {
    ids.map(|ids| serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(Box::new(e)).into()))
        .transpose()
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
                turn: Arc::default(),
            });
        }
        let store = Store {
            pool: pool_of(4).await?,
            writer: pool_of(1).await?,
            turn: Arc::default(),
        };
        // A read-only file (or folder) opens, migrates when there is nothing to migrate, and
        // reads: only a write tells.
        store.probe_write().await?;
        Ok(store)
    }

    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
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
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
