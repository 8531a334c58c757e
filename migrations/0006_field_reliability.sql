-- What the field showed (issue 15): a walk that could not read part of a job's folder, and a
-- database that could not be written while ferry answered as if it could.
--
-- `walk_error`: the folders (and the errors) the job's last scan could not read, one per line,
-- or NULL when it read everything. While it is set the job is never COMPLETED and no recorded
-- file under those folders leaves the job: an unreadable folder is not an empty one.
ALTER TABLE upload_jobs ADD COLUMN walk_error TEXT;

-- One row that readiness and the start write, so that "the database can be written" is
-- checked by a write, not assumed from a read (a read-only file opens and reads fine).
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
) STRICT;

-- An abort the store keeps refusing is not retried forever: after a bound, or at once when the
-- store does not do aborts, it is given up, kept here for /metrics and the job's status.
ALTER TABLE pending_aborts ADD COLUMN given_up_at TEXT;
