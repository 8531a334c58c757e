//! The dispatcher: claims PENDING files, uploads as many at once as the slots allow
//! (FERRY_CONCURRENCY, or the concurrency controller's limit), and records
//! what each attempt led to (a success in one write with the others since the last claim; a
//! failure by what `record_failure` decides). Outcomes the database would not take are kept and
//! written again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::slots::Slot;
use super::upload::{self, Cause, Outcome, Recovery, Uploader};
use super::{Context, stopped};
use crate::core::lifecycle::LocalIdentity;
use crate::core::model::{job_state, progress};
use crate::store::{ClaimedFile, Verified};

/// The uploads running, by `{bucket}/{key}` with their job: no second upload of an object may
/// start while one runs, or the older could complete last and leave its bytes in S3.
#[derive(Default)]
pub(super) struct Running(Mutex<HashMap<String, String>>);

impl Running {
    fn started(&self, file: &ClaimedFile) {
        self.0
            .lock()
            .expect("running lock")
            .insert(file.location(), file.upload_id.clone());
    }

    /// Counts an upload out; true when it was its job's last one running.
    fn finished(&self, file: &ClaimedFile) -> bool {
        let mut keys = self.0.lock().expect("running lock");
        keys.remove(&file.location());
        !keys.values().any(|job| *job == file.upload_id)
    }

    /// Holds an object's key for another operation than an upload (a prune), so that no upload
    /// of it starts meanwhile; false when one runs.
    pub(super) fn reserve(&self, location: String) -> bool {
        let mut keys = self.0.lock().expect("running lock");
        if keys.contains_key(&location) {
            return false;
        }
        keys.insert(location, String::new());
        true
    }

    /// Lets go of a reservation; an upload that took the key meanwhile keeps it.
    pub(super) fn release(&self, location: &str) {
        let mut keys = self.0.lock().expect("running lock");
        if keys.get(location).is_some_and(String::is_empty) {
            keys.remove(location);
        }
    }

    fn keys(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("running lock")
            .keys()
            .cloned()
            .collect()
    }
}

/// Uploads that succeeded and are not yet recorded. The dispatcher marks them all UPLOADED in one
/// write before its next claim: with many small files, one write per file would cost more than
/// the files' uploads (the store has one writer).
#[derive(Default)]
pub(super) struct Finished(Mutex<Vec<Success>>);

/// An upload that succeeded, waiting to be recorded.
struct Success {
    file: ClaimedFile,
    etag: Option<String>,
    /// The file read for it.
    read: Option<LocalIdentity>,
    /// Already counted out of the running uploads (its first write failed).
    counted_out: bool,
}

impl Finished {
    fn push(&self, file: ClaimedFile, etag: Option<String>, read: Option<LocalIdentity>) {
        self.0.lock().expect("finished lock").push(Success {
            file,
            etag,
            read,
            counted_out: false,
        });
    }

    /// Gives back successes whose write failed, to be written by the next call.
    fn owe(&self, done: Vec<Success>) {
        self.0.lock().expect("finished lock").extend(done);
    }

    fn take(&self) -> Vec<Success> {
        std::mem::take(&mut *self.0.lock().expect("finished lock"))
    }

    fn is_empty(&self) -> bool {
        self.0.lock().expect("finished lock").is_empty()
    }
}

pub(super) async fn dispatch_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let slots = &ctx.slots;
    let mut uploads = JoinSet::new();
    loop {
        while uploads.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = slots.acquire() => permit,
            _ = stopped(&mut shutdown) => break,
        };
        if ctx.breaker.is_open() {
            // S3 cannot be reached: a new attempt would only fail, and spend the file's
            // attempts. The probe closes the breaker when S3 answers.
            drop(permit);
            record_uploaded(&ctx).await;
            tokio::select! {
                _ = ctx.breaker.wait_closed() => {}
                _ = stopped(&mut shutdown) => break,
            }
            continue;
        }
        // Every free slot is filled by one claim: one write for several files when several
        // uploads ended meanwhile.
        let mut permits = vec![permit];
        while let Some(more) = slots.try_acquire() {
            permits.push(more);
        }
        // The uploads that ended are recorded first: their keys are free again after.
        record_uploaded(&ctx).await;
        let owed = requeue_unrecorded(&ctx).await || !ctx.finished.is_empty();
        let busy = ctx.running.keys();
        match ctx.store.claim_files(permits.len(), &busy).await {
            Ok(files) if !files.is_empty() => {
                // Every free slot found a file: the limit, not the work, bounds the uploads.
                if files.len() == permits.len() {
                    ctx.note_saturated();
                }
                // Slots beyond the files claimed are dropped with the rest of `permits`.
                for (file, permit) in files.into_iter().zip(permits) {
                    let ctx = ctx.clone();
                    ctx.running.started(&file);
                    uploads.spawn(async move { run_upload(&ctx, file, permit).await });
                }
            }
            Ok(_) => {
                drop(permits);
                // Until woken, or until the next retry is due; 30 s at most, a net under lost
                // wake-ups (claiming is cheap).
                let wait = match ctx.store.next_retry_due().await {
                    Ok(Some(due)) => Duration::from_millis(
                        u64::try_from(due - crate::store::now_ms())
                            .unwrap_or(0)
                            .clamp(10, 30_000),
                    ),
                    _ => Duration::from_secs(30),
                };
                // Outcomes owed to the database are tried again every second.
                let wait = if owed {
                    wait.min(Duration::from_secs(1))
                } else {
                    wait
                };
                tokio::select! {
                    _ = ctx.work.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut shutdown) => break,
                }
            }
            Err(e) => {
                drop(permits);
                tracing::error!(error = %e, "cannot claim the next file");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Shutdown: give uploads in flight a moment, then leave them for the next start.
    let grace = ctx.settings.shutdown_grace;
    let finished = tokio::time::timeout(grace, async {
        while uploads.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::info!(
            uploads = uploads.len(),
            "uploads still in flight are left to resume at the next start"
        );
        uploads.shutdown().await;
    }
    record_uploaded(&ctx).await;
}

/// Marks the uploads that succeeded since the last call UPLOADED, in one write, and counts them
/// out of the running ones.
async fn record_uploaded(ctx: &Arc<Context>) {
    let done = ctx.finished.take();
    if done.is_empty() {
        return;
    }
    let versions: Vec<_> = done
        .iter()
        .map(|d| Verified {
            version: d.file.version(),
            etag: d.etag.clone(),
            read: d.read.map(|r| r.to_string()),
        })
        .collect();
    let written = ctx.store.mark_uploaded_all(&versions).await;
    if written.is_ok() {
        // Files of jobs that move theirs may be removed now that their objects are recorded.
        ctx.wake_mover();
    }
    // After the write: the last one out of a job looks whether it settled.
    for d in done.iter().filter(|d| !d.counted_out) {
        count_out(ctx, &d.file);
    }
    if let Err(e) = written {
        // They are in S3 and verified, and stay IN_PROGRESS (claimed by nobody) until the
        // write succeeds: the next call tries again.
        tracing::error!(files = done.len(), error = %e, "cannot record the uploads' outcomes; trying again shortly");
        ctx.finished.owe(
            done.into_iter()
                .map(|d| Success {
                    counted_out: true,
                    ..d
                })
                .collect(),
        );
    }
}

/// Puts back to PENDING the files whose outcome could not be written, once the database takes
/// it; their open multipart uploads and parts stay, to resume. Returns whether any are left.
async fn requeue_unrecorded(ctx: &Context) -> bool {
    let versions = std::mem::take(&mut *ctx.unrecorded.lock().expect("unrecorded lock"));
    if versions.is_empty() {
        return false;
    }
    match ctx.store.requeue_in_progress(&versions).await {
        Ok(n) => {
            tracing::info!(
                files = n,
                "files whose outcome could not be recorded go again"
            );
            false
        }
        Err(e) => {
            tracing::warn!(files = versions.len(), error = %e, "cannot yet put back the files whose outcome was not recorded");
            ctx.unrecorded
                .lock()
                .expect("unrecorded lock")
                .extend(versions);
            true
        }
    }
}

/// Counts an upload out of the running ones. A job can settle only when none of its uploads
/// runs, so only its last one out looks (at most one per job: the key sets say which).
fn count_out(ctx: &Arc<Context>, file: &ClaimedFile) {
    if ctx.running.finished(file) {
        let (ctx, job_id) = (ctx.clone(), file.upload_id.clone());
        tokio::spawn(async move { log_if_settled(&ctx, &job_id).await });
    }
}

/// Uploads a claimed file and records the outcome: a success through the dispatcher, which marks
/// every success since its last claim in one write (`record_uploaded`), anything else here. The
/// slot (`permit`) is held while the file is read and sent, and given back before the outcome is
/// written, so that the next file starts while this one is recorded.
async fn run_upload(ctx: &Arc<Context>, file: ClaimedFile, permit: Slot) {
    let uploader = Uploader {
        store: &ctx.store,
        s3: &ctx.s3,
        chunk_size: ctx.settings.chunk_size,
        links: ctx.settings.follow_symlinks,
        part_buffers: &ctx.part_buffers,
        sweep_done: ctx.sweep_done.subscribe(),
    };
    let version = file.version();
    let metrics = crate::metrics::get();
    let in_flight = crate::metrics::GaugeGuard::new(&metrics.uploads_in_flight);
    let started = std::time::Instant::now();
    let outcome = uploader.upload(&file).await;
    drop(in_flight);
    drop(permit);
    let recorded = match outcome {
        Ok(Outcome::Uploaded { etag, read }) => {
            metrics.uploaded_files.inc();
            metrics.file_upload_seconds.observe(started.elapsed());
            // The dispatcher records it, with the others that ended meanwhile, before its next
            // claim.
            ctx.finished.push(file, etag, read);
            ctx.wake_dispatcher();
            return;
        }
        Ok(Outcome::Changed { now }) => {
            if now.is_some() {
                tracing::info!(upload_id = %file.upload_id, path = %file.path, "the file changed while uploading; it goes again");
            } else {
                tracing::info!(upload_id = %file.upload_id, path = %file.path, "the file is gone from disk; it leaves the job");
            }
            ctx.store
                .file_changed(version, now, ctx.settings.settle_time)
                .await
                .map(|()| true)
        }
        Ok(Outcome::Superseded) => Ok(true),
        Err(e) => record_failure(ctx, &file, &e).await,
    };
    if let Err(e) = recorded {
        tracing::error!(upload_id = %file.upload_id, path = %file.path, error = %e, "cannot record the upload's outcome; the file goes back to PENDING once the database takes it");
        ctx.unrecorded
            .lock()
            .expect("unrecorded lock")
            .push(version);
    }
    // Every outcome but a success may have queued a multipart upload for abort.
    ctx.wake_janitor();
    // Counted out before the dispatcher is woken: a newer version of this file may be waiting
    // for this upload to end.
    count_out(ctx, &file);
    ctx.wake_dispatcher(); // a retry may now be due sooner than it was waiting for
}

/// Decides what a failed attempt leads to, and records it.
async fn record_failure(
    ctx: &Context,
    file: &ClaimedFile,
    error: &upload::UploadError,
) -> Result<bool, crate::store::StoreError> {
    let version = file.version();
    let message = error.to_string();
    let attempts = u32::try_from(file.attempt).unwrap_or(u32::MAX);
    let recovery = error.recovery();
    let retry = matches!(recovery, Recovery::Resume | Recovery::StartOver)
        && attempts < ctx.settings.max_attempts;
    let outcome = if retry {
        "retry"
    } else if recovery == Recovery::BlockJob {
        "blocked"
    } else {
        "failed"
    };
    if let Some(refund) = error.not_the_files_fault() {
        let (outcome, why) = match refund.cause {
            Cause::S3Unreachable => {
                // The breaker holds every upload until S3 answers.
                ctx.breaker.trip(&ctx.s3);
                ("paused", "S3 cannot be reached; the file waits")
            }
            Cause::ChecksumsRefused => (
                "retry",
                "the store refused checksum headers; the file goes again without them",
            ),
            Cause::DatabaseUnavailable => (
                "retry",
                "the database cannot be written; the file goes again once it can",
            ),
        };
        crate::metrics::get()
            .upload_failures
            .inc(&[error.reason(), outcome]);
        tracing::warn!(upload_id = %file.upload_id, path = %file.path, error = %message, "{why}, its attempt not counted");
        let due = crate::store::now_ms() + refund.delay_ms;
        return ctx
            .store
            .retry_later(version, &message, due, refund.keep_upload, false)
            .await;
    }
    crate::metrics::get()
        .upload_failures
        .inc(&[error.reason(), outcome]);
    if retry {
        let delay = crate::core::plan::retry_delay(attempts);
        tracing::warn!(upload_id = %file.upload_id, path = %file.path, attempt = attempts, retry_in_s = delay.as_secs(), error = %message, "upload attempt failed; the file is tried again");
        let due = crate::store::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        return ctx
            .store
            .retry_later(version, &message, due, recovery == Recovery::Resume, true)
            .await;
    }
    if recovery == Recovery::BlockJob {
        tracing::warn!(upload_id = %file.upload_id, error = %message, "the bucket refused the job; it waits until the bucket is usable");
        return ctx
            .store
            .block_job(version, &file.upload_id, &message)
            .await
            .map(|()| true);
    }
    tracing::warn!(upload_id = %file.upload_id, path = %file.path, attempts, error = %message, "upload failed for good");
    ctx.store.mark_failed(version, &message).await
}

/// Logs a job's end once it has no work left. Called when the job's last running upload ends;
/// the check is an index lookup, and the full tally is read only at the end.
async fn log_if_settled(ctx: &Context, job_id: &str) {
    if !matches!(ctx.store.has_active_files(job_id).await, Ok(false)) {
        return;
    }
    let (Ok(Some(job)), Ok(files)) = (
        ctx.store.get_job(job_id).await,
        ctx.store.job_tally(job_id).await,
    ) else {
        return;
    };
    let state = job_state(job.facts(), &files);
    tracing::info!(
        upload_id = %job_id,
        state = %state,
        progress = progress(state, &files),
        files = files.total_files(),
        failed = files.failed.files,
        "job settled"
    );
}
