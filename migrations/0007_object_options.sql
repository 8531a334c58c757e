-- How a job's objects look (issue 17): where they land and how they are stored.
--
-- `key_prefix` is the prefix as the job has it, the default `{id}/` written out, so that every
-- key (and the check that two jobs' prefixes in a bucket do not overlap) reads one column.
-- `exclude`, `metadata` and `tags` are JSON (an array of globs, objects of strings); the other
-- options are NULL when not set (the bucket's storage class, no server-side encryption).
ALTER TABLE upload_jobs ADD COLUMN key_prefix TEXT NOT NULL DEFAULT '';
UPDATE upload_jobs SET key_prefix = id || '/';
ALTER TABLE upload_jobs ADD COLUMN exclude TEXT NOT NULL DEFAULT '[]';
ALTER TABLE upload_jobs ADD COLUMN storage_class TEXT;
ALTER TABLE upload_jobs ADD COLUMN sse TEXT;
ALTER TABLE upload_jobs ADD COLUMN kms_key_id TEXT;
ALTER TABLE upload_jobs ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE upload_jobs ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
CREATE INDEX upload_jobs_by_bucket ON upload_jobs (destination_bucket);

-- What an open multipart upload was begun with besides its key (class, encryption, metadata,
-- tags, as a digest): it is resumed only under the same, and starts over otherwise.
ALTER TABLE files ADD COLUMN upload_settings TEXT;

-- A file whose object is in S3 but no longer looks as the job asks (another class, encryption,
-- metadata, tags, key prefix or bucket): `restyle` is 'copy' (CopyObject from `restyle_from`,
-- `{bucket}/{key}` of the object as it is, to the file's object with the new look) or 'tags'
-- (PutObjectTagging in place), so that the bytes are not sent again. NULL: upload the file.
ALTER TABLE files ADD COLUMN restyle TEXT CHECK (restyle IN ('copy', 'tags'));
ALTER TABLE files ADD COLUMN restyle_from TEXT;

-- The job a queued abort belongs to, now that a key's first segment need not be the job's id.
-- NULL for rows queued before this migration (their keys start with the id).
ALTER TABLE pending_aborts ADD COLUMN upload_job_id TEXT;
