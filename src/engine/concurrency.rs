//! The concurrency controller's loop: every window it reads what the uploads did (bytes sent,
//! whether every slot was taken, whether S3 pushed back) and moves the dispatcher's slots to the
//! limit [`crate::core::concurrency::Controller`] answers. Pinned (FERRY_CONCURRENCY), it only
//! shows the number.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Context, stopped};
use crate::core::concurrency::{Concurrency, Controller, Step, Window};

/// How long one window of observations lasts: a few round trips of a slow link, short enough
/// that a job of seconds gains from the growth.
const WINDOW: Duration = Duration::from_millis(500);

pub(super) async fn controller_loop(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let metrics = crate::metrics::get();
    metrics.upload_concurrency.set(ctx.slots.limit() as i64);
    if matches!(ctx.settings.concurrency, Concurrency::Pinned(_)) {
        return;
    }
    let mut controller = Controller::auto();
    let mut bytes = metrics.uploaded_bytes.value();
    let mut signals = metrics.s3_pushback.value();
    let mut since = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WINDOW) => {}
            _ = stopped(&mut shutdown) => break,
        }
        let (now_bytes, now_signals) =
            (metrics.uploaded_bytes.value(), metrics.s3_pushback.value());
        let elapsed = since.elapsed().as_secs_f64().max(1e-3);
        let pushed_back = now_signals.saturating_sub(signals);
        let window = Window {
            rate: now_bytes.saturating_sub(bytes) as f64 / elapsed,
            saturated: ctx.saturated.swap(false, Ordering::Relaxed),
            congested: pushed_back > 0,
        };
        (bytes, signals, since) = (now_bytes, now_signals, Instant::now());
        let before = controller.limit();
        match controller.observe(window) {
            Step::Reduced => tracing::info!(
                from = before,
                to = controller.limit(),
                signals = pushed_back,
                "S3 pushed back (503 SlowDown, throttling or timeouts): fewer files upload at once"
            ),
            Step::Grew => tracing::debug!(
                from = before,
                to = controller.limit(),
                rate_bytes_per_s = window.rate as u64,
                "throughput rose: more files upload at once"
            ),
            Step::Held => {}
        }
        if controller.limit() != before {
            ctx.slots.set_limit(controller.limit());
            metrics.upload_concurrency.set(controller.limit() as i64);
        }
    }
}
