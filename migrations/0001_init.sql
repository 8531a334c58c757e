-- ferry's state. Every state change goes through src/store.rs.
-- A job's state and progress are not stored: they are derived from its files on every read,
-- so they can never disagree with them.

CREATE TABLE upload_jobs (
    id                 TEXT PRIMARY KEY NOT NULL,
    source_folder      TEXT NOT NULL,
    destination_bucket TEXT NOT NULL,
    pattern            TEXT,
    -- What blocks the whole job (bucket missing or refused, source folder gone); NULL when none.
    error              TEXT,
    -- When the last full scan of the source folder ended; NULL until the first one has.
    scanned_at         TEXT,
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE files (
    id                  INTEGER PRIMARY KEY,
    upload_job_id       TEXT NOT NULL REFERENCES upload_jobs (id) ON DELETE CASCADE,
    -- Relative to the job's source folder, '/'-separated: the object key is {upload_job_id}/{path}.
    path                TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'PENDING'
                        CHECK (state IN ('PENDING', 'IN_PROGRESS', 'UPLOADED', 'FAILED')),
    -- Size and modification time (nanoseconds since the epoch) as last seen on disk.
    size                INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns            INTEGER NOT NULL,
    -- Bytes of this version of the file known to be in S3 (parts acknowledged so far).
    bytes_sent          INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    -- The open multipart upload of an IN_PROGRESS file, so that it is never lost.
    multipart_upload_id TEXT,
    etag                TEXT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (upload_job_id, path)
) STRICT;

-- Claiming the next PENDING file, oldest first (the rowid follows the state in the index).
CREATE INDEX files_by_state ON files (state);

-- A job's files by state: its status, and whether any work is left.
CREATE INDEX files_by_job_state ON files (upload_job_id, state);

-- Multipart uploads to abort: a deleted job's, a failed file's, an interrupted or superseded one's.
-- Written in the same transaction that lets go of the upload, so none is ever forgotten.
CREATE TABLE pending_aborts (
    multipart_upload_id TEXT PRIMARY KEY NOT NULL,
    bucket              TEXT NOT NULL,
    key                 TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
