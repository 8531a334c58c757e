//! The circuit breaker in front of S3: while S3 cannot be reached at all, the dispatcher starts
//! no upload, so an outage spends no file's attempts; a probe asks S3 now and then, and uploads
//! go on as soon as it answers.
//!
//! Only "no answer" opens it (a refused or dropped connection, a timeout, after the request's
//! own retries): a 5xx is an answer, and the attempt it failed counts as usual.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::s3::ObjectStore;

/// The longest wait between two probes of an unreachable S3.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a probe waits for S3's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether S3 is taken to be reachable; `open` means uploads wait.
pub struct Breaker {
    open: watch::Sender<bool>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            open: watch::Sender::new(false),
        }
    }
}

/// The wait before the `n`th probe (from 1): 1 s, 2 s, 4 s ... at most 30 s.
pub fn probe_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(MAX_PROBE_INTERVAL)
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Waits until the breaker is closed (at once when it is).
    pub async fn wait_closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// An attempt got no answer from S3: opens the breaker, and starts the probe that closes it,
    /// unless it is open already. Whoever waits in `wait_closed` is woken when it closes.
    pub fn trip(self: &Arc<Self>, s3: &ObjectStore) {
        if self.open.send_replace(true) {
            return;
        }
        crate::metrics::get().s3_outages.inc();
        tracing::warn!(
            "S3 cannot be reached: no upload starts until it answers again (attempts are not spent meanwhile)"
        );
        let (breaker, s3) = (self.clone(), s3.clone());
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                n += 1;
                tokio::time::sleep(probe_delay(n)).await;
                if matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, s3.reachable()).await,
                    Ok(true)
                ) {
                    break;
                }
                tracing::debug!(probes = n, "S3 still cannot be reached");
            }
            breaker.open.send_replace(false);
            tracing::info!(probes = n, "S3 answers again; uploads go on");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_to_half_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|n| probe_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
