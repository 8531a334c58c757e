-- Declarative jobs: a spec has a generation, bumped on every change (PUT /uploads/{name}); a
-- scan records the generation it reconciled.
ALTER TABLE upload_jobs ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE upload_jobs ADD COLUMN observed_generation INTEGER NOT NULL DEFAULT 0;
-- What kind of problem `error` is: SourceFolderUnavailable, BucketUnavailable or InvalidSpec.
ALTER TABLE upload_jobs ADD COLUMN error_reason TEXT;
