//! Drift repair: every FERRY_RESYNC_INTERVAL, and on request, a job's prefix is listed
//! (ListObjectsV2, every page) and compared with what ferry recorded. An uploaded object that is
//! missing, or of another size or ETag, goes back in the queue; objects ferry does not track are
//! left alone unless the job prunes (then queued for prune, behind the guard). What a resync
//! found is the job's `InSync` condition.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Context, stopped};
use crate::core::diff::Local;
use crate::core::lifecycle::{Drift, ResyncReport, drift};
use crate::core::object::default_key_prefix;

/// Drifted objects named in the log per resync; the rest are counted.
const LOGGED_DRIFTS: usize = 20;

pub(super) async fn resync_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    // Looks for jobs due at most every minute, and at least twice an interval.
    let tick = ctx
        .settings
        .resync_interval
        .map_or(Duration::from_secs(60), |i| {
            (i / 2).clamp(Duration::from_millis(500), Duration::from_secs(60))
        });
    loop {
        if let Some(interval) = ctx.settings.resync_interval {
            match ctx.store.jobs_due_resync(interval.as_secs().max(1)).await {
                Ok(ids) => ids.iter().for_each(|id| ctx.request_resync(id)),
                Err(e) => tracing::warn!(error = %e, "cannot list the jobs due a resync"),
            }
        }
        while let Some(taken) = ctx.resyncs.pop() {
            if *shutdown.borrow() {
                return;
            }
            let job_id = taken.job_id.as_str();
            let span = tracing::info_span!("resync", upload_id = %job_id);
            let _ = tracing::Instrument::instrument(resync_job(&ctx, job_id), span).await;
        }
        tokio::select! {
            _ = ctx.resyncs.ready.notified() => {}
            _ = tokio::time::sleep(tick) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Lists the job's prefix and repairs what drifted; None when the job cannot be resynced now
/// (gone, blocked, never scanned, or its bucket could not be listed: then the condition says so).
pub async fn resync_job(ctx: &Arc<Context>, job_id: &str) -> Option<ResyncReport> {
    let started = Instant::now();
    let job = ctx.store.get_job(job_id).await.ok()??;
    if job.error.is_some() || job.scanned_at.is_none() {
        return None; // blocked or not yet scanned: nothing to compare yet
    }
    let Ok(Ok(spec)) = job.spec() else {
        return None;
    };
    let listed_from = ctx.store.db_now().await.ok()?;
    let prefix = spec.object.key_prefix.clone();
    let listing = match ctx.s3.list_objects(&job.destination_bucket, &prefix).await {
        Ok(listing) => listing,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the job's objects; drift is not known");
            if e.unreachable {
                ctx.breaker.trip(&ctx.s3);
            }
            let message = format!("the bucket could not be listed: {e}");
            let _ = ctx.store.record_resync(job_id, false, &message).await;
            return None;
        }
    };
    let rows = match ctx.store.resync_rows(job_id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the job's files for a resync");
            return None;
        }
    };
    let mut report = ResyncReport {
        listed: listing.objects.len() as u64,
        ..ResyncReport::default()
    };
    let mut tracked = HashSet::with_capacity(rows.len());
    let (mut missing, mut changed) = (Vec::new(), Vec::new());
    let forms_kept = ctx.s3.lists_multipart_etags();
    for row in &rows {
        let key = spec.object.key(&row.path);
        let found = listing.objects.get(&key);
        if row.state == "UPLOADED" {
            let size = u64::try_from(row.size).unwrap_or(0);
            // Uploaded after the listing began: the listing may predate it.
            let settled = row.updated_at < listed_from;
            let verdict = drift(size, row.etag.as_deref(), found, forms_kept);
            if let Some(kind) = verdict
                && settled
                && missing.len() + changed.len() < LOGGED_DRIFTS
            {
                tracing::info!(key, ?kind, recorded_size = size, recorded_etag = ?row.etag, listed = ?found, "an object drifted from its record");
            }
            match verdict {
                Some(_) if !settled => {}
                Some(_) if Local::from_removal(row.removal.as_deref()) == Local::Removed => {
                    report.unrepairable += 1
                }
                Some(Drift::Missing) => missing.push(row.id),
                Some(Drift::Changed) => changed.push(row.id),
                None => {}
            }
        }
        tracked.insert(key);
    }
    let why = "the object was missing or changed in S3 (resync); uploading it again";
    let mut repaired = 0;
    for (ids, kind) in [(&missing, "missing"), (&changed, "changed")] {
        match ctx.store.repair_drift(ids, &listed_from, why).await {
            Ok(n) => {
                repaired += n;
                crate::metrics::get().drift_repaired.add(&[kind], n);
            }
            Err(e) => tracing::warn!(error = %e, "cannot queue drifted objects again"),
        }
    }
    (report.missing, report.changed) = (missing.len() as u64, changed.len() as u64);
    // Under ferry's own prefix every object is the job's; under one the user chose, only keys
    // naming a path the job takes, as the orphan sweep does: others may be another writer's.
    let own = prefix == default_key_prefix(job_id);
    let untracked: Vec<String> = listing
        .objects
        .keys()
        .filter(|k| !tracked.contains(*k))
        .filter(|k| own || k.strip_prefix(&prefix).is_some_and(|p| spec.matches(p)))
        .cloned()
        .collect();
    report.untracked = untracked.len() as u64;
    if spec.prune && !untracked.is_empty() {
        match ctx
            .store
            .queue_untracked(job_id, &job.destination_bucket, &prefix, &untracked)
            .await
        {
            Ok(n) => report.prune_queued = n,
            Err(e) => tracing::warn!(error = %e, "cannot queue untracked objects for prune"),
        }
        match ctx.store.guard_prunes(job_id).await {
            Ok((released, _)) if released > 0 => ctx.wake_pruner(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot judge the job's prunes"),
        }
    }
    let summary = report.summary();
    if let Err(e) = ctx
        .store
        .record_resync(job_id, report.in_sync(), &summary)
        .await
    {
        tracing::warn!(error = %e, "cannot record what the resync found");
    }
    crate::metrics::get().resyncs.inc();
    if repaired > 0 {
        ctx.wake_dispatcher();
    }
    tracing::info!(
        listed = report.listed,
        pages = listing.pages,
        missing = report.missing,
        changed = report.changed,
        unrepairable = report.unrepairable,
        untracked = report.untracked,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "resync done"
    );
    Some(report)
}
