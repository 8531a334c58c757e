-- Who declares a job: 'api' (POST or PUT) or 'manifest' (FERRY_MANIFESTS_DIR), and for the
-- latter the document it came from (file.yaml#2). Manifests prune only the jobs they declared.
ALTER TABLE upload_jobs ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'api'
    CHECK (managed_by IN ('api', 'manifest'));
ALTER TABLE upload_jobs ADD COLUMN manifest_source TEXT;
