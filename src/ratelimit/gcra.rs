//! The bucket itself: GCRA (the generic cell rate algorithm of ATM, RFC 2698's token bucket
//! seen as arrival times) over one `AtomicU64`, so admitting a request is a load and one
//! compare-and-swap, with no lock and nothing to refill in the background.
//!
//! The state is the *theoretical arrival time* (TAT, nanoseconds on [`clock`]'s scale): when
//! the bucket would be full again if nothing else arrived. A request at `now` owes
//! `debt = max(TAT, now) - now`; it is admitted when `debt <= tolerance` and moves TAT on by
//! one `increment` (`per / requests`). With `tolerance = (capacity - 1) * increment` a full
//! bucket admits exactly `capacity` requests at once and then one per `increment`. A TAT in
//! the past is the same as a fresh bucket, which is what lets the key table reuse such slots
//! without losing anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The numbers of one bucket, precomputed with the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds one request costs: `per / requests` (at least 1).
    pub increment: u64,
    /// Debt admitted before refusing: `(capacity - 1) * increment`.
    pub tolerance: u64,
    /// The whole window `per`: the most one request may cost (see [`Rate::share`]).
    pub window: u64,
}

impl Rate {
    /// `requests` per `per` with `burst` more at once: a capacity of `requests + burst`.
    pub fn new(requests: u64, per: Duration, burst: u64) -> Self {
        let per_ns = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX);
        let increment = (per_ns / requests.max(1)).max(1);
        let capacity = requests.saturating_add(burst).max(1);
        Self {
            increment,
            tolerance: increment.saturating_mul(capacity - 1),
            window: per_ns,
        }
    }

    /// This rate scaled to `share` of it (0 < share <= 1): the increment grows by `1 / share`
    /// and the capacity shrinks by `share` (at least one request). A mesh member's part.
    ///
    /// One request never costs more than the whole window: a tiny share (an idle member's
    /// floor) would otherwise push the TAT hours ahead, and the member would stay refused
    /// long after its share grew. So a member with demand admits at least one request per
    /// `per`, whatever its share: at most N requests per window beyond the limit for N members.
    pub fn share(self, share: f64) -> Self {
        if share >= 1.0 {
            return self;
        }
        let share = share.max(1e-9);
        let increment = (self.increment as f64 / share).min(self.window.max(self.increment) as f64);
        let capacity = (self.tolerance / self.increment + 1) as f64 * share;
        Self {
            increment: increment as u64,
            tolerance: ((capacity - 1.0).max(0.0) * increment) as u64,
            window: self.window,
        }
    }

    /// Requests a full bucket admits at once.
    pub fn capacity(self) -> u64 {
        self.tolerance / self.increment + 1
    }
}

/// Why a request was refused: how long until one would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Nanoseconds until the debt is back within the tolerance.
    pub wait_ns: u64,
}

impl Refused {
    /// `Retry-After` in whole seconds, rounded up (at least 1: HTTP has no smaller unit, and
    /// 0 would invite an immediate retry that is refused too).
    pub fn retry_after_secs(self) -> u64 {
        self.wait_ns.div_ceil(1_000_000_000).max(1)
    }
}

/// Admits one request at `now` against `tat`, or says how long to wait. Never waits itself.
pub fn admit(tat: &AtomicU64, now: u64, rate: Rate) -> Result<(), Refused> {
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        let base = current.max(now);
        let debt = base - now;
        if debt > rate.tolerance {
            return Err(Refused {
                wait_ns: debt - rate.tolerance,
            });
        }
        // Relaxed: the TAT is the only state; no other memory is published through it.
        match tat.compare_exchange_weak(
            current,
            base.saturating_add(rate.increment),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
}

/// Nanoseconds since the process's first reading: the scale every TAT is on. Starts at one
/// second so that a zeroed TAT (a fresh slot) is always in the past.
pub fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_exactly_its_capacity_then_one_per_increment() {
        let rate = Rate::new(100, Duration::from_secs(1), 50);
        assert_eq!(rate.capacity(), 150);
        let tat = AtomicU64::new(0);
        let now = 5_000_000_000;
        let admitted = (0..1000).filter(|_| admit(&tat, now, rate).is_ok()).count();
        assert_eq!(admitted, 150);
        let refused = admit(&tat, now, rate).expect_err("empty");
        assert_eq!(refused.wait_ns, rate.increment);
        assert_eq!(refused.retry_after_secs(), 1);
        // One increment later, exactly one more.
        let later = now + rate.increment;
        assert!(admit(&tat, later, rate).is_ok());
        assert!(admit(&tat, later, rate).is_err());
        // After a whole window plus the burst's time, full again.
        let much_later = later + 2_000_000_000;
        let admitted = (0..1000)
            .filter(|_| admit(&tat, much_later, rate).is_ok())
            .count();
        assert_eq!(admitted, 150);
    }

    #[test]
    fn a_share_scales_rate_and_capacity() {
        let rate = Rate::new(100, Duration::from_secs(1), 0);
        let half = rate.share(0.5);
        assert_eq!(half.increment, 2 * rate.increment);
        assert_eq!(half.capacity(), 50);
        assert_eq!(rate.share(1.0), rate);
        let tiny = rate.share(0.001);
        assert_eq!(tiny.capacity(), 1, "a share always admits one request");
        assert_eq!(
            tiny.increment, 1_000_000_000,
            "one request costs at most the window"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let wait = |ns| Refused { wait_ns: ns }.retry_after_secs();
        assert_eq!(wait(1), 1);
        assert_eq!(wait(1_000_000_000), 1);
        assert_eq!(wait(1_000_000_001), 2);
    }
}
