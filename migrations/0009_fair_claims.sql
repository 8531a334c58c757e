-- Fair claiming across jobs (issue 16): the next files are taken from each job with PENDING
-- files in turn, so that a job's million files do not hold back another job's ten.
--
-- The jobs with PENDING files are found by one seek each in this index (the next job id after
-- the last one found), not by reading the pending files: it holds the PENDING rows alone, so it
-- stays as small as the work left, and a job whose files are all uploaded costs nothing to skip.
-- Within a job its entries are in file id order, the order a job's files are taken in.
CREATE INDEX files_pending_by_job ON files (upload_job_id) WHERE state = 'PENDING';
