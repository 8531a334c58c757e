-- Resumable multipart uploads and per-file retries.

-- The part size an open multipart upload was begun with (a restart with another
-- FERRY_CHUNK_SIZE must not mix sizes), and when a failed file may be tried again.
ALTER TABLE files ADD COLUMN part_size INTEGER;
-- Milliseconds since the epoch; NULL: at once.
ALTER TABLE files ADD COLUMN next_attempt_at INTEGER;

-- Every part S3 acknowledged, written as it completes, so that a crash loses at most the parts
-- in flight. They belong to the file's open multipart upload and go with it.
CREATE TABLE parts (
    file_id             INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    multipart_upload_id TEXT NOT NULL,
    number              INTEGER NOT NULL CHECK (number BETWEEN 1 AND 10000),
    size                INTEGER NOT NULL CHECK (size >= 0),
    etag                TEXT NOT NULL,
    -- The part's checksum as S3 stores it (base64), when a checksum algorithm is in use.
    checksum            TEXT,
    -- The MD5 of the part's bytes as read from disk (hex), for the object's ETag.
    md5                 TEXT NOT NULL,
    PRIMARY KEY (file_id, number)
) STRICT;

-- The checksum algorithm an open multipart upload was begun with (FERRY_CHECKSUM at the time).
ALTER TABLE files ADD COLUMN checksum TEXT;
