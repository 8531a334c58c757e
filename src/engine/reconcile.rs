//! The scanner: reconciles jobs, a few at once and each by one worker at a time, compares a job's
//! folder with the store and records what differs, with a backoff per job when that fails; the
//! periodic rescan and the filesystem notifications ask for scans.

use std::collections::{HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::Instrument;

use super::{Context, now_rfc3339, stopped};
use crate::core::diff::Differ;
use crate::core::model::Blocker;
use crate::s3::ErrorKind;

/// How many changes a scan gathers before writing them in one transaction.
const SCAN_BATCH: usize = 1000;

impl Context {
    /// Asks for a scan of the job (check_upload_job): soon, once, whatever woke it. A job in
    /// backoff after failed scans waits for its timer instead.
    pub fn request_scan(&self, job_id: &str) {
        self.scans.push(job_id);
    }

    /// Asks for a scan now, past any backoff: a person asked (a rescan, a new spec).
    pub fn request_scan_now(&self, job_id: &str) {
        if let Some(b) = self.failures.lock().expect("failures lock").get_mut(job_id) {
            b.until = Instant::now();
        }
        self.scans.push(job_id);
    }

    /// Whether the job waits out a backoff now.
    pub(super) fn backing_off(&self, job_id: &str) -> bool {
        self.failures
            .lock()
            .expect("failures lock")
            .get(job_id)
            .is_some_and(|b| b.until > Instant::now())
    }
}

/// A job's scan backoff: how many reconciliations failed in a row, until when the job waits,
/// and whether a timer to scan it again is set (one per job, however many failures).
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    failures: u32,
    until: Instant,
    timer_set: bool,
}

/// How many jobs are scanned at once. A scan waits mostly on its folder (a walk on a blocking
/// thread), on S3 (the bucket's check, one round trip) and on SQLite; with ten thousand jobs one
/// at a time, those round trips alone were the limit. Each scan holds its job's records (about
/// 60 bytes a file), so four scans of a million files each would hold about 240 MB.
pub(super) const SCAN_WORKERS: usize = 4;

/// Jobs waiting for a scan, each at most once, and the jobs being scanned: a job is never scanned
/// by two workers at once, and a request that comes while it is scanned waits for that scan to end
/// (the scan may have walked past the change), then runs.
#[derive(Default)]
pub(super) struct ScanQueue {
    queue: Mutex<Waiting>,
    pub(super) ready: Notify,
}

#[derive(Default)]
struct Waiting {
    order: VecDeque<String>,
    queued: HashSet<String>,
    running: HashSet<String>,
}

/// A job taken from the queue; dropping it ends the job's turn, and wakes a worker if the job was
/// asked for again meanwhile.
pub(super) struct Taken<'q> {
    queue: &'q ScanQueue,
    pub(super) job_id: String,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut q = self.queue.queue.lock().expect("scan queue lock");
        q.running.remove(&self.job_id);
        let again = q.queued.contains(&self.job_id);
        drop(q);
        if again {
            self.queue.ready.notify_one();
        }
    }
}

impl ScanQueue {
    pub(super) fn push(&self, job_id: &str) {
        let mut q = self.queue.lock().expect("scan queue lock");
        if q.queued.insert(job_id.to_owned()) {
            q.order.push_back(job_id.to_owned());
        }
        drop(q);
        self.ready.notify_one();
    }

    /// The first waiting job that no worker is scanning, marked as being scanned until the
    /// returned `Taken` is dropped.
    pub(super) fn pop(&self) -> Option<Taken<'_>> {
        let mut q = self.queue.lock().expect("scan queue lock");
        let at = q.order.iter().position(|id| !q.running.contains(id))?;
        let id = q.order.remove(at)?;
        q.queued.remove(&id);
        q.running.insert(id.clone());
        Some(Taken {
            queue: self,
            job_id: id,
        })
    }
}

pub(super) async fn periodic_rescan(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ctx.settings.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now, and start already queued every job
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        match ctx.store.job_ids().await {
            Ok(ids) => ids.iter().for_each(|id| ctx.request_scan(id)),
            Err(e) => tracing::error!(error = %e, "cannot list jobs for the periodic scan"),
        }
    }
}

/// Turns filesystem notifications into scans: a burst of events (a copy of many files) becomes
/// one scan request per job, gathered over a short quiet period.
pub(super) async fn notification_loop(
    ctx: Arc<Context>,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    const GATHER: Duration = Duration::from_millis(200);
    loop {
        let first = tokio::select! {
            key = changed.recv() => match key { Some(k) => k, None => return },
            _ = stopped(&mut shutdown) => return,
        };
        let mut jobs = HashSet::from([first]);
        tokio::time::sleep(GATHER).await;
        while let Ok(key) = changed.try_recv() {
            jobs.insert(key);
        }
        for job in jobs {
            tracing::debug!(upload_id = %job, "change on disk; scanning");
            ctx.request_scan(&job);
        }
    }
}

/// Per-job backoff, as a controller's error policy: a job whose reconciliation keeps failing is
/// tried again after 2 s, 4 s, 8 s ... at most the scan interval; a success resets it. Other
/// requests for its scan (notifications, the periodic tick) wait for the backoff, and one timer
/// per job wakes it: failures do not multiply the scans.
fn requeue_with_backoff(ctx: &Arc<Context>, job_id: &str, done: bool) {
    let mut failures = ctx.failures.lock().expect("failures lock");
    if done {
        failures.remove(job_id);
        return;
    }
    let b = failures.entry(job_id.to_owned()).or_insert(Backoff {
        failures: 0,
        until: Instant::now(),
        timer_set: false,
    });
    b.failures += 1;
    let delay = crate::core::plan::retry_delay(b.failures).min(ctx.settings.scan_interval);
    b.until = Instant::now() + delay;
    tracing::info!(upload_id = %job_id, failures = b.failures, retry_in_s = delay.as_secs(), "the job is scanned again after a backoff");
    if std::mem::replace(&mut b.timer_set, true) {
        return; // the timer set earlier wakes it, and finds the new `until`
    }
    drop(failures);
    let ctx = ctx.clone();
    let job_id = job_id.to_owned();
    tokio::spawn(async move {
        loop {
            let until = {
                let mut failures = ctx.failures.lock().expect("failures lock");
                match failures.get_mut(&job_id) {
                    Some(b) if b.until > Instant::now() => b.until,
                    Some(b) => {
                        b.timer_set = false;
                        break;
                    }
                    None => return, // it succeeded meanwhile, or was deleted
                }
            };
            tokio::time::sleep_until(until.into()).await;
        }
        ctx.request_scan(&job_id);
    });
}

pub(super) async fn scan_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        while let Some(taken) = ctx.scans.pop() {
            let job_id = taken.job_id.as_str();
            if *shutdown.borrow() {
                return;
            }
            if ctx.backing_off(job_id) {
                continue; // its backoff's timer asks again
            }
            let span = tracing::info_span!("scan", upload_id = %job_id);
            let outcome = check_upload_job(&ctx, job_id).instrument(span).await;
            if let Err(e) = &outcome {
                if matches!(ctx.store.get_job(job_id).await, Ok(None)) {
                    // Deleted while it was scanned: its new rows had no job to belong to.
                    tracing::debug!(upload_id = %job_id, error = %e, "the job was deleted during its scan");
                    ctx.forget_job(job_id); // the scan may have set a watch after the delete
                    continue;
                }
                tracing::error!(upload_id = %job_id, error = %e, "scan failed");
            }
            requeue_with_backoff(&ctx, job_id, matches!(outcome, Ok(Reconciled::Done)));
        }
        tokio::select! {
            _ = ctx.scans.ready.notified() => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// What a reconciliation of one job asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// Done; the next scan comes with the next change or tick.
    Done,
    /// Something passing stood in the way: scan again after the job's backoff.
    Requeue,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the scan task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The file monitor's check: compares the job's folder with the store and records what differs.
///
/// Safe to run at any time and any number of times; it looks at the job as it is, never at why
/// it was asked.
pub async fn check_upload_job(ctx: &Arc<Context>, job_id: &str) -> Result<Reconciled, ScanError> {
    let Some(job) = ctx.store.get_job(job_id).await? else {
        return Ok(Reconciled::Done); // deleted meanwhile
    };
    let started = Instant::now();
    let spec = match job.spec()? {
        Ok(spec) => spec,
        Err(e) => {
            ctx.store
                .set_job_error(job_id, Some((Blocker::InvalidSpec, &e.to_string())))
                .await?;
            return Ok(Reconciled::Done);
        }
    };
    match tokio::fs::metadata(&spec.source_folder).await {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            let msg = format!("source folder {} is not a directory", job.source_folder);
            ctx.store
                .set_job_error(job_id, Some((Blocker::SourceFolderUnavailable, &msg)))
                .await?;
            return Ok(Reconciled::Done);
        }
        Err(e) => {
            let msg = format!("source folder {} cannot be read: {e}", job.source_folder);
            ctx.store
                .set_job_error(job_id, Some((Blocker::SourceFolderUnavailable, &msg)))
                .await?;
            return Ok(Reconciled::Done);
        }
    }
    ctx.watcher.ensure(job_id, &spec.source_folder);
    // Walk the canonical folder, so that the excluded paths compare; keys are relative anyway.
    let mut spec = spec;
    if let Ok(canonical) = tokio::fs::canonicalize(&spec.source_folder).await {
        spec.source_folder = canonical;
    }
    // Checked again on every scan: a symbolic link swapped since the job was accepted, or a
    // manifest, must not lead ferry out of its roots.
    if !crate::core::spec::within_roots(&spec.source_folder, &ctx.settings.allowed_roots) {
        let msg = format!(
            "source folder {} resolves to {}, outside FERRY_ALLOWED_ROOTS",
            job.source_folder,
            spec.source_folder.display()
        );
        ctx.store
            .set_job_error(job_id, Some((Blocker::SourceFolderUnavailable, &msg)))
            .await?;
        return Ok(Reconciled::Done);
    }
    // The bucket is checked beside the walk, not before it: the first uploads need not wait a
    // round trip for it (at 60 ms, a tenth of a small job's time). An upload that meets a
    // missing or forbidden bucket blocks the job itself, its attempt refunded.
    let bucket = tokio::spawn(
        record_bucket_check(
            ctx.clone(),
            job_id.to_owned(),
            job.destination_bucket.clone(),
        )
        .in_current_span(),
    );
    let exclude = ctx.settings.exclude.clone();
    let links = ctx.settings.follow_symlinks;
    let recorded = ctx.store.recorded_files(job_id).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let walker = tokio::task::spawn_blocking(move || {
        let mut differ = Differ::new(recorded);
        let mut seen = 0u64;
        let mut receiver_gone = false;
        let report = crate::scan::walk(&spec, &exclude, links, |file| {
            seen += 1;
            differ.observe(file);
            if differ.pending_len() >= SCAN_BATCH && tx.blocking_send(differ.take()).is_err() {
                // The scan was abandoned (shutdown, a store error): stop walking.
                receiver_gone = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        // Removals are only known at the end of the walk, and only where it could read.
        if !receiver_gone {
            let _ = tx.blocking_send(differ.finish_keeping(&report.kept_prefixes()));
        }
        (seen, report)
    });
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    while let Some(batch) = rx.recv().await {
        if batch.is_empty() {
            continue;
        }
        ctx.store
            .apply_scan_changes(
                job_id,
                &job.destination_bucket,
                &batch.added,
                &batch.changed,
                &batch.removed,
                ctx.settings.settle_time,
            )
            .await?;
        ctx.store.removals_done(&batch.removed_locally).await?;
        (added, changed, removed) = (
            added + batch.added.len(),
            changed + batch.changed.len(),
            removed + batch.removed.len(),
        );
        if !batch.changed.is_empty() || !batch.removed.is_empty() {
            ctx.wake_janitor();
        }
        ctx.work.notify_one();
    }
    let (seen, report) = walker.await?;
    let changes = added + changed + removed;
    let unread = report.summary();
    ctx.store
        .mark_scanned(job_id, job.generation, changes > 0, unread.as_deref())
        .await?;
    ctx.last_scans
        .lock()
        .expect("last scans lock")
        .insert(job_id.to_owned(), now_rfc3339());
    if job.prune {
        // The guard judges the prunes this scan queued (and those it holds), now that the
        // job's walk error is recorded: a scan that could not read everything prunes nothing.
        let (released, hold) = ctx.store.guard_prunes(job_id).await?;
        if released > 0 {
            tracing::info!(
                objects = released,
                "objects of files gone from disk are pruned"
            );
            ctx.wake_pruner();
        }
        if let Some(hold) = hold {
            tracing::warn!(reason = %hold, "prunes are held");
        }
    }
    ctx.wake_dispatcher(); // a job unblocked by this scan has files waiting
    ctx.wake_mover(); // a removal that failed may go again
    let bucket = bucket.await??;
    let metrics = crate::metrics::get();
    metrics.scans.inc();
    metrics.scan_seconds.observe(started.elapsed());
    tracing::info!(
        files = seen,
        added,
        changed,
        removed,
        unreadable = report.unreadable.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scan done"
    );
    Ok(match bucket {
        BucketCheck::Unreachable => Reconciled::Requeue,
        BucketCheck::Answered => Reconciled::Done,
    })
}

/// What the check of a job's bucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketCheck {
    /// S3 answered: the bucket is usable, or the job is blocked with why.
    Answered,
    /// S3 cannot be reached: the job is scanned again later, to check again.
    Unreachable,
}

/// Checks that the job's bucket exists and may be written, and records the answer on the job:
/// a refusal blocks it (BucketUnavailable), a usable bucket clears what blocked it.
async fn record_bucket_check(
    ctx: Arc<Context>,
    job_id: String,
    bucket: String,
) -> Result<BucketCheck, crate::store::StoreError> {
    match ctx.s3.check_bucket(&bucket).await {
        Ok(()) => {
            ctx.store.set_job_error(&job_id, None).await?;
            ctx.wake_dispatcher(); // a job it unblocked has files waiting
            Ok(BucketCheck::Answered)
        }
        Err(e) if e.kind == ErrorKind::Transient => {
            tracing::warn!(error = %e, "S3 cannot be reached; the job is scanned again later");
            Ok(BucketCheck::Unreachable)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the job cannot upload to its bucket");
            ctx.store
                .set_job_error(&job_id, Some((Blocker::BucketUnavailable, &e.to_string())))
                .await?;
            Ok(BucketCheck::Answered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ScanQueue;

    #[test]
    fn a_job_asked_for_twice_waits_once() {
        let q = ScanQueue::default();
        q.push("a");
        q.push("b");
        q.push("a");
        let first = q.pop().expect("a waits");
        assert_eq!(first.job_id, "a");
        drop(first);
        assert_eq!(q.pop().expect("b waits").job_id, "b");
        assert!(q.pop().is_none(), "a was asked for twice but waited once");
    }

    #[test]
    fn a_job_is_never_taken_by_two_workers_and_a_request_during_its_scan_runs_after() {
        let q = ScanQueue::default();
        q.push("a");
        let scanning = q.pop().expect("a waits");
        q.push("a"); // a change while a is scanned
        q.push("b");
        let other = q.pop().expect("another worker takes b, not a");
        assert_eq!(other.job_id, "b");
        assert!(q.pop().is_none(), "a is still being scanned");
        drop(scanning);
        let again = q.pop().expect("the request during the scan runs after it");
        assert_eq!(again.job_id, "a");
        drop(other);
        drop(again);
        assert!(q.pop().is_none());
    }
}
