//! The engine: scans jobs' folders into the store, runs uploads through a bounded pool, and
//! aborts the multipart uploads the store lets go of.
//!
//! Three loops share one [`Context`], each in a module of its own:
//! - `reconcile`: the scanner reconciles jobs (a few at once, a job by one worker at a time):
//!   checks a job's folder and bucket, diffs the disk against the store, and records new,
//!   changed and removed files;
//! - `dispatch`: the dispatcher claims PENDING files from the store, one per free slot (`slots`),
//!   uploads each one (`upload`), and records what each attempt led to;
//! - `concurrency`: the controller moves the number of slots (FERRY_CONCURRENCY=auto) by the
//!   throughput it sees and S3's push-back;
//! - `aborts`: the janitor aborts the multipart uploads queued in `pending_aborts`, and the
//!   start-up sweep finds the orphans a crash left;
//! - `mover`: removes the local files of jobs that move theirs, once their objects are verified
//!   and recorded;
//! - `pruner`: deletes the objects whose prunes the guard (or a person) released;
//! - `resync`: lists each job's prefix and uploads again what drifted in the bucket.
//!
//! All state is in the store; the loops hold none that a restart would miss. On start every job
//! is scanned and interrupted uploads go back to PENDING, so unfinished work carries on.

mod aborts;
pub mod breaker;
mod concurrency;
mod dispatch;
pub mod manifests;
mod mover;
mod pruner;
mod reconcile;
mod resync;
mod slots;
pub mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::s3::ObjectStore;
use crate::store::Store;
use crate::watch::FolderWatcher;
use dispatch::{Finished, Running};
use reconcile::{Backoff, ScanQueue};
pub use reconcile::{Reconciled, ScanError, check_upload_job};
pub use resync::resync_job;

/// What the engine needs of the settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub chunk_size: u64,
    pub concurrency: crate::core::concurrency::Concurrency,
    pub scan_interval: Duration,
    /// How often each job's objects are listed and compared with the records; None: never.
    pub resync_interval: Option<Duration>,
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
    /// Wakes the mover: verified files of jobs that move theirs wait to be removed.
    removals: Notify,
    /// Wakes the pruner: released prunes wait.
    prunes: Notify,
    scans: ScanQueue,
    /// Jobs whose objects are to be listed and compared (resync), each at most once.
    resyncs: ScanQueue,
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
    /// The memory budget uploads share, and the part buffers (upload::PART_BUFFERS).
    part_buffers: upload::PartBuffers,
    /// One per file uploading; the concurrency controller moves their number.
    slots: slots::Slots,
    /// Every free slot found a file since the controller last looked.
    saturated: AtomicBool,
    /// True once the start-up sweep for orphaned multipart uploads has ended: new multipart
    /// uploads wait for it.
    sweep_done: watch::Sender<bool>,
    /// Open while S3 cannot be reached: the dispatcher starts no upload.
    breaker: Arc<breaker::Breaker>,
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
            part_buffers: upload::PartBuffers::new(settings.chunk_size),
            slots: slots::Slots::new(settings.concurrency.start()),
            saturated: AtomicBool::new(false),
            sweep_done: watch::Sender::new(false),
            breaker: Arc::default(),
            store,
            s3,
            settings,
            work: Notify::new(),
            aborts: Notify::new(),
            removals: Notify::new(),
            prunes: Notify::new(),
            scans: ScanQueue::default(),
            resyncs: ScanQueue::default(),
            last_scans: Mutex::default(),
        })
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

    /// Says that the slots, not the work, bounded the uploads (for the concurrency controller).
    fn note_saturated(&self) {
        self.saturated.store(true, Ordering::Relaxed);
    }

    /// Tells the dispatcher that files may be waiting.
    pub fn wake_dispatcher(&self) {
        self.work.notify_one();
    }

    /// Tells the janitor that multipart uploads wait to be aborted.
    pub fn wake_janitor(&self) {
        self.aborts.notify_one();
    }

    /// Tells the mover that local files may be due for removal.
    pub fn wake_mover(&self) {
        self.removals.notify_one();
    }

    /// Tells the pruner that prunes were released.
    pub fn wake_pruner(&self) {
        self.prunes.notify_one();
    }

    /// Asks for a resync of the job: its prefix listed and compared with the records, soon and
    /// once.
    pub fn request_resync(&self, job_id: &str) {
        self.resyncs.push(job_id);
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
                _ = tokio::time::timeout(aborts::SWEEP_BUDGET, aborts::sweep_orphans(&ctx)) => {}
                _ = stopped(&mut shutdown) => {}
            }
            ctx.sweep_done.send_replace(true);
        });
    }
    for _ in 0..reconcile::SCAN_WORKERS {
        loops.spawn(reconcile::scan_loop(ctx.clone(), shutdown.clone()));
    }
    loops.spawn(reconcile::periodic_rescan(ctx.clone(), shutdown.clone()));
    loops.spawn(dispatch::dispatch_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(concurrency::controller_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(aborts::janitor_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(mover::mover_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(pruner::pruner_loop(ctx.clone(), shutdown.clone()));
    loops.spawn(resync::resync_loop(ctx.clone(), shutdown.clone()));
    if let Some(folder) = ctx.settings.manifests_dir.clone() {
        loops.spawn(manifests::run(
            ctx.clone(),
            folder,
            ctx.settings.scan_interval,
            shutdown.clone(),
        ));
    }
    if let Some(changed) = ctx.changed.lock().expect("changed lock").take() {
        loops.spawn(reconcile::notification_loop(
            ctx.clone(),
            changed,
            shutdown.clone(),
        ));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    while loops.join_next().await.is_some() {}
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
