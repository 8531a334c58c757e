//! The engine: scans jobs' folders into the store, runs uploads through a bounded pool, and
//! aborts the multipart uploads the store lets go of.
//!
//! Three loops share one [`Context`]:
//! - the scanner reconciles one job at a time: checks its folder and bucket, diffs the disk
//!   against the store, and records new, changed and removed files;
//! - the dispatcher claims PENDING files from the store, FERRY_CONCURRENCY at a time, and
//!   uploads each one;
//! - the janitor aborts the multipart uploads queued in `pending_aborts`.
//!
//! All state is in the store; the loops hold none that a restart would miss. On start every job
//! is scanned and interrupted uploads go back to PENDING, so unfinished work carries on.

pub mod breaker;
pub mod manifests;
pub mod upload;

use std::collections::{HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::core::diff::Differ;
use crate::core::model::{Blocker, job_state, progress};
use crate::core::spec::JobSpec;
use crate::s3::{ErrorKind, ObjectStore};
use crate::store::{ClaimedFile, Store};
use crate::watch::FolderWatcher;
use upload::{Outcome, Recovery, Uploader};

/// How many changes a scan gathers before writing them in one transaction.
const SCAN_BATCH: usize = 1000;
/// The most time the start-up sweep for orphaned multipart uploads may take.
const SWEEP_BUDGET: Duration = Duration::from_secs(30);
/// How often the janitor looks at `pending_aborts` without being woken.
const JANITOR_INTERVAL: Duration = Duration::from_secs(60);
/// Refused aborts of one upload before the janitor gives it up (about ten minutes of tries).
const MAX_ABORT_ATTEMPTS: i64 = 10;

/// What the engine needs of the settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub chunk_size: u64,
    pub concurrency: usize,
    pub scan_interval: Duration,
    /// Attempts a file gets before it is FAILED.
    pub max_attempts: u32,
    /// How long a file must go unmodified before it is uploaded.
    pub settle_time: Duration,
    /// The folder of UploadJob manifests to reconcile, if any.
    pub manifests_dir: Option<std::path::PathBuf>,
    /// Files scans never take: ferry's own database and its journals (canonical paths).
    pub exclude: Vec<std::path::PathBuf>,
    /// Source folders must lie inside one of these (canonical); empty: anywhere.
    pub allowed_roots: Vec<std::path::PathBuf>,
    /// Which symbolic links in a source folder are followed.
    pub follow_symlinks: crate::core::spec::SymlinkPolicy,
    /// How long in-flight uploads get to finish at shutdown before they are left for the next
    /// start.
    pub shutdown_grace: Duration,
}

/// What every part of the engine shares.
pub struct Context {
    pub store: Store,
    pub s3: ObjectStore,
    pub settings: EngineSettings,
    work: Notify,
    aborts: Notify,
    scans: ScanQueue,
    /// When each job's last scan ended (status, not state: a scan that finds nothing changed
    /// writes nothing to the store).
    last_scans: Mutex<std::collections::HashMap<String, String>>,
    /// Filesystem notifications for the jobs' folders.
    watcher: FolderWatcher,
    changed: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// What the last sync of the manifests folder found.
    pub manifests: manifests::Manifests,
    /// Jobs whose reconciliation keeps failing, and their backoff.
    failures: Mutex<std::collections::HashMap<String, Backoff>>,
    /// Files whose outcome could not be written (the database refused it): they are put back
    /// to PENDING as soon as it can be written, without a restart.
    unrecorded: Mutex<Vec<crate::store::FileVersion>>,
    /// Uploads running per job.
    running: Running,
    /// Uploads that succeeded, waiting for the dispatcher to record them.
    finished: Finished,
    /// The part buffers multipart uploads share (upload::PART_BUFFERS).
    part_buffers: upload::PartBuffers,
    /// True once the start-up sweep for orphaned multipart uploads has ended: new multipart
    /// uploads wait for it.
    sweep_done: watch::Sender<bool>,
    /// Open while S3 cannot be reached: the dispatcher starts no upload.
    breaker: Arc<breaker::Breaker>,
}

/// The object keys of the uploads running: no second upload of a key may start while one runs,
/// or the older could complete last and leave its bytes in S3. A key is `{upload_id}/{path}`, so
/// the keys also tell which jobs have uploads running.
#[derive(Default)]
struct Running(Mutex<HashSet<String>>);

impl Running {
    fn started(&self, file: &ClaimedFile) {
        let key = crate::core::plan::object_key(&file.upload_id, &file.path);
        self.0.lock().expect("running lock").insert(key);
    }

    /// Counts an upload out; true when it was its job's last one running.
    fn finished(&self, file: &ClaimedFile) -> bool {
        let mut keys = self.0.lock().expect("running lock");
        keys.remove(&crate::core::plan::object_key(&file.upload_id, &file.path));
        let job_prefix = crate::core::plan::object_key(&file.upload_id, "");
        !keys.iter().any(|k| k.starts_with(&job_prefix))
    }

    fn keys(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("running lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// Uploads that succeeded and are not yet recorded. The dispatcher marks them all UPLOADED in one
/// write before its next claim: with many small files, one write per file would cost more than
/// the files' uploads (the store has one writer).
#[derive(Default)]
struct Finished(Mutex<Vec<Success>>);

/// An upload that succeeded, waiting to be recorded.
struct Success {
    file: ClaimedFile,
    etag: Option<String>,
    /// Already counted out of the running uploads (its first write failed).
    counted_out: bool,
}

impl Finished {
    fn push(&self, file: ClaimedFile, etag: Option<String>) {
        self.0.lock().expect("finished lock").push(Success {
            file,
            etag,
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

/// A job's scan backoff: how many reconciliations failed in a row, until when the job waits,
/// and whether a timer to scan it again is set (one per job, however many failures).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
    timer_set: bool,
}

/// Jobs waiting for a scan, each at most once.
#[derive(Default)]
struct ScanQueue {
    queue: Mutex<(VecDeque<String>, HashSet<String>)>,
    ready: Notify,
}

impl ScanQueue {
    fn push(&self, job_id: &str) {
        let mut q = self.queue.lock().expect("scan queue lock");
        if q.1.insert(job_id.to_owned()) {
            q.0.push_back(job_id.to_owned());
        }
        drop(q);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<String> {
        let mut q = self.queue.lock().expect("scan queue lock");
        let id = q.0.pop_front()?;
        q.1.remove(&id);
        Some(id)
    }
}

impl Context {
    pub fn new(store: Store, s3: ObjectStore, settings: EngineSettings) -> Arc<Self> {
        let (watcher, changed) = FolderWatcher::new(true);
        Arc::new(Context {
            watcher,
            changed: Mutex::new(Some(changed)),
            manifests: manifests::Manifests::default(),
            failures: Mutex::default(),
            unrecorded: Mutex::default(),
            running: Running::default(),
            finished: Finished::default(),
            part_buffers: upload::PartBuffers::default(),
            sweep_done: watch::Sender::new(false),
            breaker: Arc::default(),
            store,
            s3,
            settings,
            work: Notify::new(),
            aborts: Notify::new(),
            scans: ScanQueue::default(),
            last_scans: Mutex::default(),
        })
    }

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
    fn backing_off(&self, job_id: &str) -> bool {
        self.failures
            .lock()
            .expect("failures lock")
            .get(job_id)
            .is_some_and(|b| b.until > Instant::now())
    }

    /// When the job's last scan ended, if one did since the start.
    pub fn last_scan(&self, job_id: &str) -> Option<String> {
        self.last_scans
            .lock()
            .expect("last scans lock")
            .get(job_id)
            .cloned()
    }

    /// Drops what the engine keeps in memory of a deleted job.
    pub fn forget_job(&self, job_id: &str) {
        self.last_scans
            .lock()
            .expect("last scans lock")
            .remove(job_id);
        self.watcher.forget(job_id);
        self.failures.lock().expect("failures lock").remove(job_id);
    }

    /// Whether uploads pause because S3 cannot be reached.
    pub fn s3_paused(&self) -> bool {
        self.breaker.is_open()
    }

    /// Tells the dispatcher that files may be waiting.
    pub fn wake_dispatcher(&self) {
        self.work.notify_one();
    }

    /// Tells the janitor that multipart uploads wait to be aborted.
    pub fn wake_janitor(&self) {
        self.aborts.notify_one();
    }
}

/// Runs the engine until `shutdown` turns true; returns once every loop has stopped.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    match ctx.store.recover_interrupted().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "uploads interrupted by the last stop go again"),
        Err(e) => tracing::error!(error = %e, "cannot recover interrupted uploads"),
    }
    match ctx.store.job_ids().await {
        Ok(ids) => ids.iter().for_each(|id| ctx.request_scan(id)),
        Err(e) => tracing::error!(error = %e, "cannot list jobs to resume them"),
    }
    // Whatever is open under a job's prefix and unknown to the store was left by a crash
    // between CreateMultipartUpload and its record. The sweep runs beside the uploads: only new
    // multipart uploads wait for it (Context::sweep_done), since one created meanwhile would
    // look like an orphan; single PUTs and resumed uploads go at once.
    let mut loops = JoinSet::new();
    {
        let (ctx, mut shutdown) = (ctx.clone(), shutdown.clone());
        loops.spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(SWEEP_BUDGET, sweep_orphans(&ctx)) => {}
                _ = stopped(&mut shutdown) => {}
            }
            ctx.sweep_done.send_replace(true);
        });
    }
    loops.spawn(scan_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(periodic_rescan(ctx.clone(), shutdown.clone()));
    loops.spawn(dispatch_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(janitor_loop(ctx.clone(), shutdown.clone()));
    if let Some(folder) = ctx.settings.manifests_dir.clone() {
        loops.spawn(manifests::run(
            ctx.clone(),
            folder,
            ctx.settings.scan_interval,
            shutdown.clone(),
        ));
    }
    if let Some(changed) = ctx.changed.lock().expect("changed lock").take() {
        loops.spawn(notification_loop(ctx.clone(), changed, shutdown.clone()));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    while loops.join_next().await.is_some() {}
}

/// Queues for abort every open multipart upload under a job's prefix that the store does not
/// know: orphans cost money and stay invisible in listings.
async fn sweep_orphans(ctx: &Context) {
    let jobs = match ctx.store.list_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot list jobs for the orphan sweep");
            return;
        }
    };
    let mut queued = 0;
    for job in jobs {
        let prefix = crate::core::plan::object_key(&job.id, "");
        let open = match ctx
            .s3
            .list_multipart_uploads(&job.destination_bucket, &prefix)
            .await
        {
            Ok(open) if open.is_empty() => continue,
            Ok(open) => open,
            Err(e) if e.kind == ErrorKind::NotSupported => {
                // Learnt once for the store: asking for every other job would only wait.
                tracing::info!(error = %e, "the store cannot list open multipart uploads, so uploads orphaned by a crash cannot be found; ferry aborts every upload it recorded");
                break;
            }
            Err(e) => {
                tracing::warn!(upload_id = %job.id, error = %e, "cannot list open multipart uploads; the sweep skips this job");
                continue;
            }
        };
        let known = match ctx
            .store
            .known_multipart_uploads(&job.destination_bucket)
            .await
        {
            Ok(known) => known,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the known multipart uploads");
                return;
            }
        };
        for upload in open.into_iter().filter(|u| !known.contains(&u.upload_id)) {
            tracing::info!(upload_id = %job.id, key = %upload.key, "an orphaned multipart upload is aborted");
            match ctx
                .store
                .queue_abort(&upload.upload_id, &job.destination_bucket, &upload.key)
                .await
            {
                Ok(()) => queued += 1,
                Err(e) => tracing::error!(error = %e, "cannot queue an orphan for abort"),
            }
        }
    }
    if queued > 0 {
        ctx.wake_janitor();
    }
}

/// Now, as the store writes times.
fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    crate::core::time::rfc3339_millis_from_unix_nanos(now)
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn periodic_rescan(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
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
async fn notification_loop(
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

async fn scan_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        while let Some(job_id) = ctx.scans.pop() {
            if *shutdown.borrow() {
                return;
            }
            if ctx.backing_off(&job_id) {
                continue; // its backoff's timer asks again
            }
            let span = tracing::info_span!("scan", upload_id = %job_id);
            let outcome = check_upload_job(&ctx, &job_id).instrument(span).await;
            if let Err(e) = &outcome {
                if matches!(ctx.store.get_job(&job_id).await, Ok(None)) {
                    // Deleted while it was scanned: its new rows had no job to belong to.
                    tracing::debug!(upload_id = %job_id, error = %e, "the job was deleted during its scan");
                    ctx.forget_job(&job_id); // the scan may have set a watch after the delete
                    continue;
                }
                tracing::error!(upload_id = %job_id, error = %e, "scan failed");
            }
            requeue_with_backoff(&ctx, &job_id, matches!(outcome, Ok(Reconciled::Done)));
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
    let spec = match JobSpec::parse(
        &job.source_folder,
        &job.destination_bucket,
        job.pattern.as_deref(),
    ) {
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
    match ctx.s3.check_bucket(&job.destination_bucket).await {
        Ok(()) => ctx.store.set_job_error(job_id, None).await?,
        Err(e) if e.kind == ErrorKind::Transient => {
            tracing::warn!(error = %e, "S3 cannot be reached; the job is scanned again later");
            return Ok(Reconciled::Requeue);
        }
        Err(e) => {
            tracing::warn!(error = %e, "the job cannot upload to its bucket");
            ctx.store
                .set_job_error(job_id, Some((Blocker::BucketUnavailable, &e.to_string())))
                .await?;
            return Ok(Reconciled::Done);
        }
    }

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
    ctx.wake_dispatcher(); // a job unblocked by this scan has files waiting
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
    Ok(Reconciled::Done)
}

async fn dispatch_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let mut uploads = JoinSet::new();
    loop {
        while uploads.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
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
        while let Ok(more) = slots.clone().try_acquire_owned() {
            permits.push(more);
        }
        // The uploads that ended are recorded first: their keys are free again after.
        record_uploaded(&ctx).await;
        let owed = requeue_unrecorded(&ctx).await || !ctx.finished.is_empty();
        let busy = ctx.running.keys();
        match ctx.store.claim_files(permits.len(), &busy).await {
            Ok(files) if !files.is_empty() => {
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
        .map(|d| (d.file.version(), d.etag.clone()))
        .collect();
    let written = ctx.store.mark_uploaded_all(&versions).await;
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
async fn run_upload(ctx: &Arc<Context>, file: ClaimedFile, permit: OwnedSemaphorePermit) {
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
        Ok(Outcome::Uploaded { etag }) => {
            metrics.uploaded_files.inc();
            metrics.file_upload_seconds.observe(started.elapsed());
            // The dispatcher records it, with the others that ended meanwhile, before its next
            // claim.
            ctx.finished.push(file, etag);
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
    if error.database_unavailable() {
        // ferry's own disk, not the file: the attempt is given back, and the file goes again
        // once the database takes writes (or, if this write fails too, it is put back later).
        crate::metrics::get()
            .upload_failures
            .inc(&[error.reason(), "retry"]);
        tracing::warn!(upload_id = %file.upload_id, path = %file.path, error = %message, "the database cannot be written; the file goes again, its attempt not counted");
        let due = crate::store::now_ms() + 1000;
        return ctx
            .store
            .retry_later(version, &message, due, true, false)
            .await;
    }
    if error.checksums_refused() {
        crate::metrics::get()
            .upload_failures
            .inc(&[error.reason(), "retry"]);
        tracing::info!(upload_id = %file.upload_id, path = %file.path, error = %message, "the store refused checksum headers; the file goes again without them, its attempt not counted");
        return ctx
            .store
            .retry_later(version, &message, crate::store::now_ms(), false, false)
            .await;
    }
    if error.s3_unreachable() && recovery == Recovery::Resume {
        // Not the file's fault, nor the request's: the attempt is given back, and the breaker
        // holds every upload until S3 answers.
        ctx.breaker.trip(&ctx.s3);
        crate::metrics::get()
            .upload_failures
            .inc(&[error.reason(), "paused"]);
        tracing::info!(upload_id = %file.upload_id, path = %file.path, error = %message, "S3 cannot be reached; the file waits, its attempt not counted");
        return ctx
            .store
            .retry_later(version, &message, crate::store::now_ms(), true, false)
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

async fn janitor_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match ctx.store.pending_aborts(100).await {
            Ok(batch) => {
                for abort in batch {
                    if *shutdown.borrow() {
                        return;
                    }
                    let result = ctx
                        .s3
                        .abort_multipart_upload(
                            &abort.bucket,
                            &abort.key,
                            &abort.multipart_upload_id,
                        )
                        .await;
                    let recorded = match result {
                        Ok(()) => {
                            tracing::debug!(key = %abort.key, "multipart upload aborted");
                            ctx.store.abort_done(&abort.multipart_upload_id).await
                        }
                        // No bucket, no upload left in it.
                        Err(e) if e.kind == ErrorKind::NoSuchBucket => {
                            ctx.store.abort_done(&abort.multipart_upload_id).await
                        }
                        Err(e)
                            if e.kind == ErrorKind::NotSupported
                                || (!e.is_transient()
                                    && abort.attempts + 1 >= MAX_ABORT_ATTEMPTS) =>
                        {
                            tracing::warn!(key = %abort.key, attempts = abort.attempts + 1, error = %e, "the store will not abort a multipart upload; given up (shown in ferry_multipart_aborts{{state=\"given_up\"}} and the job's status)");
                            ctx.store
                                .abort_failed(&abort.multipart_upload_id, &e.to_string(), true)
                                .await
                        }
                        Err(e) => {
                            tracing::warn!(key = %abort.key, attempts = abort.attempts + 1, error = %e, "cannot abort a multipart upload yet");
                            ctx.store
                                .abort_failed(&abort.multipart_upload_id, &e.to_string(), false)
                                .await
                        }
                    };
                    if let Err(e) = recorded {
                        tracing::error!(error = %e, "cannot record an abort");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the multipart uploads to abort"),
        }
        tokio::select! {
            _ = ctx.aborts.notified() => {}
            _ = tokio::time::sleep(JANITOR_INTERVAL) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}
