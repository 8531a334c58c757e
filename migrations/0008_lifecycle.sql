-- Lifecycle and drift (issue 18): moving files after upload, pruning objects with a guard, and
-- listing the bucket to repair what changed behind ferry's back.

-- `after_upload`: 'keep' or 'delete' (a move). `prune`: 1 when an object whose file is gone (or
-- no longer taken) is deleted from S3.
ALTER TABLE upload_jobs ADD COLUMN after_upload TEXT NOT NULL DEFAULT 'keep'
    CHECK (after_upload IN ('keep', 'delete'));
ALTER TABLE upload_jobs ADD COLUMN prune INTEGER NOT NULL DEFAULT 0 CHECK (prune IN (0, 1));
-- Why the job's prunes wait (the guard's message), NULL when none does.
ALTER TABLE upload_jobs ADD COLUMN prune_hold TEXT;
-- The last resync: when it ended, whether it found everything as recorded (1/0), what it found.
ALTER TABLE upload_jobs ADD COLUMN resynced_at TEXT;
ALTER TABLE upload_jobs ADD COLUMN in_sync INTEGER;
ALTER TABLE upload_jobs ADD COLUMN resync_message TEXT;

-- A file of a job that moves its files: 'due' once its object is verified (the file is to be
-- removed), 'done' once it is. Written before the unlink, so that a crash between the two never
-- leaves a removed file that ferry takes for one deleted by the user. `local_identity` is the
-- `dev:ino` of the file that was read: only that very file is removed.
ALTER TABLE files ADD COLUMN removal TEXT CHECK (removal IN ('due', 'done'));
ALTER TABLE files ADD COLUMN local_identity TEXT;
CREATE INDEX files_removal_due ON files (removal) WHERE removal = 'due';

-- Objects to delete from S3 because their files are gone (or no longer taken), or because a
-- resync of a job with prune on found them untracked under its prefix. 'held' waits for the
-- guard (or a confirm), 'due' is deleted by the pruner. The file's row is deleted in the same
-- transaction as its prune is queued, so the object is either tracked or queued, never lost.
CREATE TABLE prunes (
    id            INTEGER PRIMARY KEY,
    upload_job_id TEXT NOT NULL REFERENCES upload_jobs (id) ON DELETE CASCADE,
    bucket        TEXT NOT NULL,
    key           TEXT NOT NULL,
    -- The file's path and version, for a file that comes back while its prune is held.
    path          TEXT,
    size          INTEGER,
    mtime_ns      INTEGER,
    etag          TEXT,
    found_by      TEXT NOT NULL CHECK (found_by IN ('scan', 'resync')),
    state         TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'due')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    next_attempt_at INTEGER,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (upload_job_id, key)
) STRICT;
CREATE INDEX prunes_by_state ON prunes (state, upload_job_id);
