//! The pruner: deletes the objects whose prunes were released (by the guard, or by a person's
//! confirm). Each key is held against uploads while it is deleted, and the prune is checked to
//! be still due just before, so that a file seen again, or uploaded again, is never left
//! without its object.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Context, stopped};
use crate::store::DuePrune;

/// Prunes looked at per round.
const BATCH: usize = 200;
/// Deletes in flight at once.
const DELETES_IN_FLIGHT: usize = 16;
/// How often the pruner looks without being woken.
const INTERVAL: Duration = Duration::from_secs(30);

pub(super) async fn pruner_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        prune_due(&ctx).await;
        let wait = match ctx.store.next_prune_due().await {
            Ok(Some(due)) => Duration::from_millis(
                u64::try_from(due - crate::store::now_ms())
                    .unwrap_or(0)
                    .clamp(100, INTERVAL.as_millis() as u64),
            ),
            _ => INTERVAL,
        };
        tokio::select! {
            _ = ctx.prunes.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// What became of one prune.
enum Pruned {
    Deleted,
    /// Its key is uploading, or the prune was cancelled: nothing done.
    Skipped,
    Failed,
}

async fn prune_due(ctx: &Arc<Context>) {
    loop {
        if ctx.breaker.is_open() {
            return; // S3 cannot be reached; the breaker's probe comes first
        }
        let due = match ctx.store.due_prunes(BATCH).await {
            Ok(due) if due.is_empty() => return,
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the prunes due; trying again later");
                return;
            }
        };
        let round = due.len();
        let outcomes: Vec<Pruned> = futures_util::stream::iter(due)
            .map(|p| async move { prune_one(ctx, &p).await })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        let deleted = outcomes
            .iter()
            .filter(|o| matches!(o, Pruned::Deleted))
            .count();
        if deleted > 0 {
            tracing::info!(objects = deleted, "objects pruned");
        }
        // Another round only when this one made progress and may have left more.
        if round < BATCH || deleted == 0 {
            return;
        }
    }
}

async fn prune_one(ctx: &Arc<Context>, p: &DuePrune) -> Pruned {
    let location = p.location();
    if !ctx.running.reserve(location.clone()) {
        return Pruned::Skipped; // an upload of this key runs: it decides, the prune waits
    }
    let outcome = delete_if_due(ctx, p).await;
    ctx.running.release(&location);
    // An upload of this key (a file seen again) may have waited for it.
    ctx.wake_dispatcher();
    outcome
}

async fn delete_if_due(ctx: &Context, p: &DuePrune) -> Pruned {
    match ctx.store.prune_still_due(p.id).await {
        Ok(true) => {}
        Ok(false) => return Pruned::Skipped,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a prune; trying again later");
            return Pruned::Skipped;
        }
    }
    match ctx.s3.delete_object(&p.bucket, &p.key).await {
        Ok(()) => {
            tracing::info!(upload_id = %p.upload_job_id, key = %p.key, found_by = %p.found_by, "object pruned");
            crate::metrics::get()
                .objects_pruned
                .inc(&[if p.found_by == "resync" {
                    "resync"
                } else {
                    "scan"
                }]);
            if let Err(e) = ctx.store.prune_done(p.id).await {
                // Deleted in S3; the next round deletes it again (S3 answers 204) and records it.
                tracing::warn!(error = %e, "cannot record a prune; it is done again later");
            }
            Pruned::Deleted
        }
        Err(e) => {
            if e.unreachable {
                ctx.breaker.trip(&ctx.s3);
            }
            let attempts = u32::try_from(p.attempts + 1).unwrap_or(u32::MAX);
            let delay = crate::core::plan::retry_delay(attempts);
            tracing::warn!(upload_id = %p.upload_job_id, key = %p.key, error = %e, retry_in_s = delay.as_secs(), "cannot delete an object to prune; trying again later");
            let due = crate::store::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = ctx.store.prune_failed(p.id, &e.to_string(), due).await {
                tracing::warn!(error = %e, "cannot record a failed prune");
            }
            Pruned::Failed
        }
    }
}
