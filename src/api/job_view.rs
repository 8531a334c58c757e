//! A job's status as the API shows it: its spec, its counts and progress, its conditions.

use salvo::prelude::*;
use serde::Serialize;

use crate::core::lifecycle::{LastResync, lifecycle_conditions};
use crate::core::model::{FileTally, JobState, conditions, job_state, progress};
use crate::core::spec::SpecFields;
use crate::store::{AbortsGivenUp, JobRow, PruneCounts};

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
    /// `keep`, or `delete`: local files are removed once their objects are verified.
    after_upload: String,
    /// Whether objects of files gone from disk (or no longer taken) are deleted from S3.
    prune: bool,
    /// The job's queued prunes.
    prunes: PrunesView,
    /// What the last resync (the prefix listed and compared with the records) found, if one ran.
    last_resync: Option<ResyncView>,
}

/// A job's queued prunes.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.PrunesView"))]
pub struct PrunesView {
    /// Objects the guard holds until a confirm (POST /uploads/{id}/prune) or a scan that reads
    /// everything.
    held: u64,
    /// Objects released, being deleted.
    due: u64,
    /// Of those, the ones the store refused to delete at least once, and its last answer.
    failing: u64,
    last_error: Option<String>,
    /// Why the held ones wait, if they do.
    hold_reason: Option<String>,
}

/// What the last resync found.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ResyncView"))]
pub struct ResyncView {
    at: String,
    /// Every uploaded object was in the bucket as recorded.
    in_sync: bool,
    message: String,
}

/// A condition of a job's status.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ConditionView"))]
pub struct ConditionView {
    /// Reconciled, SourceFolderReadable, BucketWritable, FilesFailing, Completed, PruneHeld
    /// (a job that prunes) or InSync.
    #[serde(rename = "type")]
    kind: String,
    /// "True", "False" or "Unknown", as in Kubernetes.
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
        prunes: PruneCounts,
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
        });
        let last_resync = match (&job.resynced_at, job.in_sync, &job.resync_message) {
            (Some(at), Some(in_sync), message) => Some(LastResync {
                at,
                in_sync,
                message: message.as_deref().unwrap_or_default(),
            }),
            _ => None,
        };
        let lifecycle = lifecycle_conditions(
            job.prune,
            job.prune_hold.as_deref(),
            prunes.held,
            job.walk_error.is_some(),
            last_resync,
        )
        .into_iter()
        .map(|c| ConditionView {
            kind: c.kind.into(),
            status: match c.status {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            }
            .into(),
            reason: c.reason.into(),
            message: c.message,
        });
        let conditions = conditions.chain(lifecycle).collect();
        let last_resync = last_resync.map(|r| ResyncView {
            at: r.at.to_owned(),
            in_sync: r.in_sync,
            message: r.message.to_owned(),
        });
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
            prunes: PrunesView {
                held: prunes.held,
                due: prunes.due,
                failing: prunes.failing,
                last_error: prunes.last_error,
                hold_reason: job.prune_hold.clone(),
            },
            last_resync,
            after_upload: job.after_upload.clone(),
            prune: job.prune,
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
