//! A job's status as the API shows it: its spec, its counts and progress, its conditions.

use salvo::prelude::*;
use serde::Serialize;

use crate::core::model::{FileTally, JobState, conditions, job_state, progress};
use crate::core::spec::SpecFields;
use crate::store::{AbortsGivenUp, JobRow};

/// An upload job and its progress.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.JobView"))]
pub struct JobView {
    upload_id: String,
    state: JobState,
    /// Byte-weighted, 0.0 to 1.0; exactly 1.0 when, and only when, the job is COMPLETED.
    progress: f64,
    total_files: u64,
    /// Files in S3 (UPLOADED).
    completed_files: u64,
    failed_files: u64,
    pending_files: u64,
    in_progress_files: u64,
    total_bytes: u64,
    /// Bytes known to be in S3, counting acknowledged parts of files still uploading.
    uploaded_bytes: u64,
    source_folder: String,
    destination_bucket: String,
    pattern: Option<String>,
    /// Objects go to `{key_prefix}{relative path}`.
    key_prefix: String,
    /// Globs a file must not match.
    exclude: Vec<String>,
    /// The storage class of every object; null: the bucket's.
    storage_class: Option<String>,
    /// `AES256` or `aws:kms`; null: none asked.
    sse: Option<String>,
    kms_key_id: Option<String>,
    /// User metadata on every object.
    metadata: std::collections::BTreeMap<String, String>,
    /// Tags on every object.
    tags: std::collections::BTreeMap<String, String>,
    /// What stops the whole job (a missing bucket, a missing folder), if anything.
    error: Option<String>,
    created_at: String,
    updated_at: String,
    /// When the last full scan of the source folder ended.
    scanned_at: Option<String>,
    /// The spec's version: 1 at creation, bumped by every change (PUT).
    generation: i64,
    /// The generation the last completed scan reconciled.
    observed_generation: i64,
    /// What holds and what does not, and why.
    conditions: Vec<ConditionView>,
    /// `api` or `manifest`: who declares the job.
    managed_by: String,
    /// The manifest document that declares the job (file.yaml#2), if one does.
    manifest: Option<String>,
    /// Multipart uploads of this job's keys that the store would not abort (it refused every
    /// try, or does not do aborts): they may hold storage until the bucket's lifecycle rule
    /// removes them.
    multipart_aborts_given_up: u64,
    /// The store's last answer to such an abort.
    multipart_abort_error: Option<String>,
}

/// A condition of a job's status.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ConditionView"))]
pub struct ConditionView {
    /// Reconciled, SourceFolderReadable, BucketWritable, FilesFailing or Completed.
    #[serde(rename = "type")]
    kind: String,
    /// "True" or "False", as in Kubernetes.
    status: String,
    reason: String,
    message: String,
}

impl JobView {
    pub(super) fn new(
        job: JobRow,
        fields: SpecFields,
        files: &FileTally,
        last_scan: Option<String>,
        given_up: AbortsGivenUp,
    ) -> Self {
        let state = job_state(job.facts(), files);
        let conditions = conditions(
            job.blocker(),
            job.walk_error.as_deref(),
            job.generation,
            job.observed_generation,
            files,
            state,
        )
        .into_iter()
        .map(|c| ConditionView {
            kind: c.kind.into(),
            status: if c.status { "True" } else { "False" }.into(),
            reason: c.reason.into(),
            message: c.message,
        })
        .collect();
        JobView {
            generation: job.generation,
            observed_generation: job.observed_generation,
            conditions,
            managed_by: job.managed_by,
            manifest: job.manifest_source,
            state,
            progress: progress(state, files),
            total_files: files.total_files(),
            completed_files: files.uploaded.files,
            failed_files: files.failed.files,
            pending_files: files.pending.files,
            in_progress_files: files.in_progress.files,
            total_bytes: files.total_bytes(),
            uploaded_bytes: if state == JobState::Completed {
                files.total_bytes()
            } else {
                files.bytes_sent()
            },
            multipart_aborts_given_up: given_up.count,
            multipart_abort_error: given_up.last_error,
            upload_id: job.id,
            source_folder: job.source_folder,
            destination_bucket: job.destination_bucket,
            pattern: job.pattern,
            key_prefix: job.key_prefix,
            exclude: fields.exclude,
            storage_class: fields.storage_class,
            sse: fields.sse,
            kms_key_id: fields.kms_key_id,
            metadata: fields.metadata,
            tags: fields.tags,
            error: job.error,
            created_at: job.created_at,
            updated_at: job.updated_at,
            scanned_at: last_scan.or(job.scanned_at),
        }
    }
}
