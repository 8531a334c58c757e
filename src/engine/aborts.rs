//! Multipart uploads nobody will complete: the janitor aborts those the store queued in
//! `pending_aborts` (giving up on a store that will not), and the start-up sweep finds the ones
//! a crash left unrecorded.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Context, stopped};
use crate::s3::ErrorKind;

/// The most time the start-up sweep for orphaned multipart uploads may take.
pub(super) const SWEEP_BUDGET: Duration = Duration::from_secs(30);
/// How often the janitor looks at `pending_aborts` without being woken.
const JANITOR_INTERVAL: Duration = Duration::from_secs(60);
/// Refused aborts of one upload before the janitor gives it up (about ten minutes of tries).
const MAX_ABORT_ATTEMPTS: i64 = 10;

/// Queues for abort every open multipart upload under a job's prefix that the store does not
/// know: orphans cost money and stay invisible in listings.
///
/// Only keys the job could have begun are taken: under its default prefix (`{id}/`, ferry's
/// own), anything; under a prefix the user chose (`logs/`, or `""`), which may hold another
/// writer's uploads, only keys naming a path the job's pattern and excludes take.
pub(super) async fn sweep_orphans(ctx: &Context) {
    let jobs = match ctx.store.list_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot list jobs for the orphan sweep");
            return;
        }
    };
    let mut queued = 0;
    for job in jobs {
        let Ok(Ok(spec)) = job.spec() else {
            continue; // an invalid spec is the scan's to report
        };
        let prefix = spec.object.key_prefix.clone();
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
        // The default prefix (`{id}/`) is ferry's own: everything open under it is the job's.
        let own_prefix = prefix == crate::core::object::default_key_prefix(&job.id);
        let ours = |key: &str| {
            key.strip_prefix(prefix.as_str())
                .is_some_and(|path| own_prefix || spec.matches(path))
        };
        for upload in open
            .into_iter()
            .filter(|u| !known.contains(&u.upload_id) && ours(&u.key))
        {
            tracing::info!(upload_id = %job.id, key = %upload.key, "an orphaned multipart upload is aborted");
            match ctx
                .store
                .queue_abort(
                    &job.id,
                    &upload.upload_id,
                    &job.destination_bucket,
                    &upload.key,
                )
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

pub(super) async fn janitor_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
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
