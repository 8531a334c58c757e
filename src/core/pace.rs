//! The bandwidth cap's schedule (FERRY_MAX_BANDWIDTH): when each slice of a request body may be
//! sent so that every upload together stays at the cap.
//!
//! A virtual clock (GCRA, the generic cell rate algorithm): each slice moves the theoretical
//! arrival time on by its length over the rate, and may go once the clock is within one burst of
//! now. The burst is a couple of slices, so the bytes on the wire never run ahead of the cap by
//! more than that, however many uploads share it; an idle spell earns no credit beyond it.

use std::time::Duration;

/// The smallest slice a body is cut into: below this, the wake-ups would cost more than the cap
/// saves.
const MIN_SLICE: u64 = 16 * 1024;
/// The largest slice: above this, a slice is a visible burst.
const MAX_SLICE: u64 = 1024 * 1024;
/// Slices per second the cap aims at (a slice is a hundredth of a second of the cap's rate).
const SLICES_PER_SECOND: u64 = 100;
/// How many slices may go back to back after a pause: timers wake late by a millisecond or so,
/// and without this slack the late wake-ups would keep the rate under the cap.
const BURST_SLICES: u64 = 2;

/// The schedule of one process-wide cap.
#[derive(Debug, Clone)]
pub struct Pace {
    rate: u64,
    slice: u64,
    /// The theoretical arrival time of the next byte, since the schedule's origin.
    due: Duration,
}

impl Pace {
    /// A cap of `rate` bytes per second (at least one).
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1);
        Pace {
            rate,
            slice: (rate / SLICES_PER_SECOND).clamp(MIN_SLICE, MAX_SLICE),
            due: Duration::ZERO,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How many bytes one reservation should cover.
    pub fn slice(&self) -> u64 {
        self.slice
    }

    fn time_of(&self, bytes: u64) -> Duration {
        Duration::from_nanos(
            u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(self.rate))
                .unwrap_or(u64::MAX),
        )
    }

    /// Reserves `bytes` at `now` (since the schedule's origin); answers how long to wait before
    /// sending them.
    pub fn reserve(&mut self, now: Duration, bytes: u64) -> Duration {
        let burst = self.time_of(self.slice * BURST_SLICES);
        // Idle time earns no credit: the clock starts again from now.
        let due = self.due.max(now);
        let wait = due.saturating_sub(now + burst);
        self.due = due + self.time_of(bytes);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn slices_follow_the_rate() {
        assert_eq!(Pace::new(50 * MIB).slice(), 512 * 1024);
        assert_eq!(Pace::new(1024).slice(), MIN_SLICE);
        assert_eq!(Pace::new(10 * 1024 * MIB).slice(), MAX_SLICE);
        assert_eq!(Pace::new(0).rate(), 1);
    }

    /// Senders that go exactly when told send at the cap, within one burst.
    #[test]
    fn back_to_back_senders_keep_to_the_rate() {
        let rate = 10 * MIB;
        let mut pace = Pace::new(rate);
        let slice = pace.slice();
        // Three uploads take turns, each sending as soon as it may.
        let mut clocks = [Duration::ZERO; 3];
        let mut sent = 0;
        for i in 0..3000 {
            let who = i % 3;
            let wait = pace.reserve(clocks[who], slice);
            clocks[who] += wait;
            sent += slice;
        }
        // The last slice ends one slice's time after it starts.
        let end = clocks.iter().max().copied().unwrap() + pace.time_of(slice);
        let achieved = sent as f64 / end.as_secs_f64();
        let burst = (BURST_SLICES * slice) as f64;
        // Ahead of the cap by the burst at most: the bytes beyond it went at the rate.
        let most = rate as f64 * sent as f64 / (sent as f64 - burst);
        assert!(achieved <= most * 1.000_001, "{achieved} > {most}");
        assert!(achieved >= rate as f64 * 0.99, "{achieved}");
    }

    #[test]
    fn idle_time_earns_no_credit_beyond_the_burst() {
        let mut pace = Pace::new(MIB);
        let slice = pace.slice();
        assert_eq!(pace.reserve(Duration::ZERO, slice), Duration::ZERO);
        // A long pause, then a rush: only the burst goes at once.
        let now = Duration::from_secs(60);
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(pace.reserve(now, slice));
        }
        let free = waits.iter().filter(|w| w.is_zero()).count() as u64;
        assert_eq!(free, BURST_SLICES + 1);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        let per_slice = pace.time_of(slice);
        assert_eq!(waits[4], per_slice * 2);
    }
}
