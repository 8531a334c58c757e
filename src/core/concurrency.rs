//! How many files upload at once: pinned by FERRY_CONCURRENCY, or found by a controller that
//! grows the number while throughput rises and halves it when the store pushes back (AIMD).
//!
//! The controller is pure: the engine feeds it one [`Window`] of observations at a time (the
//! bytes sent, whether every slot was taken, whether S3 answered 503 SlowDown or timed out) and
//! sets the slots to the limit it answers.

/// The most files ferry uploads at once; more only adds requests in flight (memory is bounded by
/// the part-buffer budget, whatever this is).
pub const MAX_CONCURRENCY: usize = 256;

/// The adaptive controller's first limit: measured at RTT 0, 20, 60 and 100 ms (docs/decisions.md,
/// Decision 2). A job of a few hundred small files ends before the first window could grow it,
/// so the start must already cover 100 ms; on loopback it cost nothing against 64. A slow link or
/// a store that pushes back halves it.
pub const AUTO_START: usize = 128;

/// The controller never goes below this: a store that pushes back still gets a few requests.
pub const AUTO_FLOOR: usize = 4;

/// A rise of throughput smaller than this share is taken for noise, not for the larger limit's
/// gain.
const GAIN: f64 = 0.05;

/// Windows without growth after a reduction: the store is given time to recover before it is
/// probed again.
const COOL_DOWN: u32 = 4;

/// How the number of files uploading at once is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Adapted to the link and the store (the default).
    Auto,
    /// Exactly this many (FERRY_CONCURRENCY).
    Pinned(usize),
}

impl Concurrency {
    /// The limit to start with.
    pub fn start(self) -> usize {
        match self {
            Concurrency::Auto => AUTO_START,
            Concurrency::Pinned(n) => n,
        }
    }
}

/// What was seen during one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Bytes sent per second.
    pub rate: f64,
    /// Every slot was taken while files waited: the limit, not the work, held throughput back.
    pub saturated: bool,
    /// S3 pushed back: 503 SlowDown, a throttling answer, or a request that timed out.
    pub congested: bool,
}

/// What the controller did with a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Grew,
    Held,
    Reduced,
}

/// An AIMD controller of the limit.
#[derive(Debug, Clone)]
pub struct Controller {
    limit: usize,
    floor: usize,
    ceiling: usize,
    /// The rate of the last saturated window at the current limit or below.
    last_rate: Option<f64>,
    /// Windows left before the limit may grow again.
    cool_down: u32,
}

impl Controller {
    pub fn new(start: usize, floor: usize, ceiling: usize) -> Self {
        let floor = floor.clamp(1, ceiling);
        Controller {
            limit: start.clamp(floor, ceiling),
            floor,
            ceiling,
            last_rate: None,
            cool_down: 0,
        }
    }

    /// The controller for FERRY_CONCURRENCY unset.
    pub fn auto() -> Self {
        Self::new(AUTO_START, AUTO_FLOOR, MAX_CONCURRENCY)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes one window's observations; the limit to use next is [`Controller::limit`].
    ///
    /// - Congestion halves the limit (down to the floor) and holds it for a few windows.
    /// - A saturated window whose rate rose (or the first one) grows it by a quarter: more in
    ///   flight paid, so more may pay again. One whose rate did not rise holds it: the link or
    ///   the machine is the bound, not the limit.
    /// - A window that was not saturated says nothing about the limit: it holds.
    pub fn observe(&mut self, window: Window) -> Step {
        if window.congested {
            let reduced = (self.limit / 2).max(self.floor);
            self.last_rate = None;
            self.cool_down = COOL_DOWN;
            if reduced < self.limit {
                self.limit = reduced;
                return Step::Reduced;
            }
            return Step::Held;
        }
        if self.cool_down > 0 {
            self.cool_down -= 1;
            self.last_rate = window.saturated.then_some(window.rate);
            return Step::Held;
        }
        if !window.saturated {
            return Step::Held;
        }
        let rose = match self.last_rate {
            None => true,
            Some(last) => window.rate > last * (1.0 + GAIN),
        };
        self.last_rate = Some(window.rate);
        if rose && self.limit < self.ceiling {
            self.limit = (self.limit + (self.limit / 4).max(1)).min(self.ceiling);
            return Step::Grew;
        }
        Step::Held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saturated(rate: f64) -> Window {
        Window {
            rate,
            saturated: true,
            congested: false,
        }
    }

    const CONGESTED: Window = Window {
        rate: 0.0,
        saturated: true,
        congested: true,
    };

    #[test]
    fn grows_while_throughput_rises() {
        let mut c = Controller::new(64, 4, 256);
        assert_eq!(c.observe(saturated(100.0)), Step::Grew);
        assert_eq!(c.limit(), 80);
        assert_eq!(c.observe(saturated(130.0)), Step::Grew);
        assert_eq!(c.limit(), 100);
        // No gain beyond noise: the link is the bound.
        assert_eq!(c.observe(saturated(132.0)), Step::Held);
        assert_eq!(c.limit(), 100);
        assert_eq!(c.observe(saturated(200.0)), Step::Grew);
        assert_eq!(c.limit(), 125);
    }

    #[test]
    fn never_grows_past_the_ceiling() {
        let mut c = Controller::new(200, 4, 256);
        let mut rate = 1.0;
        for _ in 0..20 {
            rate *= 2.0;
            c.observe(saturated(rate));
        }
        assert_eq!(c.limit(), 256);
        assert_eq!(c.observe(saturated(rate * 2.0)), Step::Held);
    }

    #[test]
    fn a_window_that_is_not_saturated_says_nothing() {
        let mut c = Controller::new(64, 4, 256);
        let idle = Window {
            rate: 1e9,
            saturated: false,
            congested: false,
        };
        assert_eq!(c.observe(idle), Step::Held);
        assert_eq!(c.limit(), 64);
    }

    #[test]
    fn congestion_halves_down_to_the_floor_and_cools_down() {
        let mut c = Controller::new(64, 4, 256);
        assert_eq!(c.observe(CONGESTED), Step::Reduced);
        assert_eq!(c.limit(), 32);
        for _ in 0..COOL_DOWN {
            assert_eq!(c.observe(saturated(1e6)), Step::Held);
        }
        assert_eq!(c.limit(), 32);
        // After the cool-down, growth needs a rise over the last window seen.
        assert_eq!(c.observe(saturated(2e6)), Step::Grew);
        assert_eq!(c.limit(), 40);
        for _ in 0..10 {
            c.observe(CONGESTED);
        }
        assert_eq!(c.limit(), 4);
        assert_eq!(c.observe(CONGESTED), Step::Held);
    }

    #[test]
    fn the_start_is_kept_within_bounds() {
        assert_eq!(Controller::new(1000, 4, 256).limit(), 256);
        assert_eq!(Controller::new(1, 4, 256).limit(), 4);
        assert_eq!(Controller::auto().limit(), AUTO_START);
        assert_eq!(Concurrency::Pinned(7).start(), 7);
    }
}
