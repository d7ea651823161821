//! The per-route retry budget: retries may add at most `ratio` of the requests of the last
//! 10 s, plus `min_per_sec` retries in any one second.
//!
//! Why a budget and not only `attempts`: under a total backend failure every request would
//! otherwise multiply into `attempts` backend requests exactly when the backends can least take
//! it (a retry storm). Linkerd and Finagle bound retries the same way.
//!
//! The window is ten one-second buckets of atomics, each packing `(second << 32) | count` in one
//! `u64`, so recording is one compare-and-swap loop and reading is ten loads: lock-free and
//! shared by every worker. A bucket whose second is not within the window counts as zero, which
//! is how old seconds age out without a timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RetryBudget;

/// Seconds the ratio looks back over.
pub const WINDOW_SECS: u64 = 10;

/// Ten one-second buckets of one counter.
#[derive(Debug)]
struct Window {
    buckets: [AtomicU64; WINDOW_SECS as usize],
}

impl Window {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, second: u64) {
        let bucket = &self.buckets[(second % WINDOW_SECS) as usize];
        let stamp = second << 32;
        // Cannot fail: the closure always returns Some.
        let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
            Some(if packed >> 32 == second {
                // Saturate the low half rather than carry into the stamp.
                packed + u64::from((packed & 0xffff_ffff) < 0xffff_ffff)
            } else {
                stamp | 1
            })
        });
    }

    /// The count of `second` alone.
    fn in_second(&self, second: u64) -> u64 {
        let packed = self.buckets[(second % WINDOW_SECS) as usize].load(Ordering::Acquire);
        if packed >> 32 == second {
            packed & 0xffff_ffff
        } else {
            0
        }
    }

    /// The sum over the window ending at `second` (inclusive).
    fn in_window(&self, second: u64) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Acquire))
            .filter(|packed| {
                let stamp = packed >> 32;
                stamp <= second && second - stamp < WINDOW_SECS
            })
            .map(|packed| packed & 0xffff_ffff)
            .sum()
    }
}

/// One route's budget; shared by every worker (atomics only).
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    min_per_sec: u64,
    /// Seconds are counted from here (a monotonic clock, so wall-clock jumps do not matter).
    origin: Instant,
    requests: Window,
    retries: Window,
}

impl Budget {
    /// A fresh budget for `config`.
    pub fn new(config: &RetryBudget) -> Self {
        Self {
            ratio: config.ratio.max(0.0),
            min_per_sec: u64::from(config.min_per_sec),
            origin: Instant::now(),
            requests: Window::new(),
            retries: Window::new(),
        }
    }

    /// Whether this budget was built from `config` (a reload keeps an unchanged route's budget).
    pub fn matches(&self, config: &RetryBudget) -> bool {
        self.ratio == config.ratio.max(0.0) && self.min_per_sec == u64::from(config.min_per_sec)
    }

    fn second(&self) -> u64 {
        // Offset by the window so `second - stamp` never underflows near the origin.
        self.origin.elapsed().as_secs() + WINDOW_SECS
    }

    /// Counts one client request (the base the ratio applies to).
    pub fn record_request(&self) {
        self.requests.add(self.second());
    }

    /// Takes one retry (or hedge) from the budget; `false` means exhausted, nothing taken.
    ///
    /// Allowed when the retries of the window stay within `ratio` × its requests, or when this
    /// second has used fewer than `min_per_sec`. Check and count are two steps, so concurrent
    /// callers on several workers can overshoot by at most one each: a budget is a rate bound,
    /// not a mutex.
    pub fn try_withdraw(&self) -> bool {
        let second = self.second();
        let retries = self.retries.in_window(second);
        let allowed_by_ratio =
            (retries as f64) < self.ratio * self.requests.in_window(second) as f64;
        let allowed = allowed_by_ratio || self.retries.in_second(second) < self.min_per_sec;
        if allowed {
            self.retries.add(second);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32) -> Budget {
        Budget::new(&RetryBudget { ratio, min_per_sec })
    }

    #[test]
    fn ratio_bounds_retries_by_requests() {
        let b = budget(0.2, 0);
        for _ in 0..100 {
            b.record_request();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn min_per_sec_allows_retries_without_traffic() {
        let b = budget(0.0, 3);
        let granted = (0..10).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn old_buckets_age_out() {
        let w = Window::new();
        w.add(20);
        w.add(20);
        w.add(25);
        assert_eq!(w.in_window(25), 3);
        assert_eq!(w.in_window(29), 3);
        assert_eq!(w.in_window(30), 1);
        assert_eq!(w.in_second(20), 2);
        // Reusing the slot of second 20 for second 30 resets it.
        w.add(30);
        assert_eq!(w.in_second(30), 1);
        assert_eq!(w.in_window(30), 2);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let b = std::sync::Arc::new(budget(1.0, 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || (0..1000).for_each(|_| b.record_request()))
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let second = b.second();
        // The test may straddle a second boundary; the window sums both.
        assert_eq!(b.requests.in_window(second), 4000);
    }
}
