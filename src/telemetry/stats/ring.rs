//! A per-route or per-cluster ring of 10-second buckets: request count, 5xx count and a latency
//! histogram each, fed from atomics on the request path (no lock) and read by `GET /stats`.
//!
//! Each slot remembers which 10-second period (`epoch`) it holds. A recorder that finds its
//! slot holding an older period claims it with a compare-and-swap and zeroes it; samples that
//! land on the slot between the swap and the zeroing are lost. That race spans a few
//! instructions once per slot per 10 s, an acceptable error for a status page (the Prometheus
//! counters stay exact).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::telemetry::metrics::BUCKETS;

/// Seconds per bucket.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept: 30 × 10 s = the last five minutes.
pub const SLOTS: usize = 30;
/// Latency bins: one per histogram bound in [`BUCKETS`], plus one above the last.
const BINS: usize = BUCKETS.len() + 1;

#[derive(Debug, Default)]
struct Slot {
    /// `unix_secs / BUCKET_SECS` of the period this slot counts; 0 = never used.
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BINS],
}

/// The last five minutes of one route or cluster.
#[derive(Debug, Default)]
pub struct Ring {
    slots: [Slot; SLOTS],
}

/// A [`Ring`] allocated on its route's or cluster's first request: a config with thousands of idle
/// routes costs a pointer each rather than a ring of [`SLOTS`] slots each, and a reload's build of
/// the table allocates nothing per route.
#[derive(Debug, Default)]
pub struct LazyRing(OnceLock<Box<Ring>>);

impl LazyRing {
    /// See [`Ring::record`].
    pub fn record(&self, now: SystemTime, server_error: bool, elapsed: Duration) {
        self.record_in(epoch_of(now), server_error, elapsed);
    }

    /// See [`Ring::record_in`].
    pub fn record_in(&self, epoch: u64, server_error: bool, elapsed: Duration) {
        self.0
            .get_or_init(Box::default)
            .record_in(epoch, server_error, elapsed);
    }

    /// See [`Ring::buckets`]; all empty before the first request.
    pub fn buckets(&self, now: SystemTime) -> Vec<Summary> {
        match self.0.get() {
            Some(ring) => ring.buckets(now),
            None => vec![Summary::default(); SLOTS],
        }
    }
}

/// What one bucket (or a merge of several) holds, as `/stats` reports it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered with a 5xx.
    pub errors: u64,
    latency: [u64; BINS],
}

impl Ring {
    /// Counts one answered request.
    pub fn record(&self, now: SystemTime, server_error: bool, elapsed: Duration) {
        self.record_in(epoch_of(now), server_error, elapsed);
    }

    /// Counts one answered request in period `epoch` (`unix_secs / BUCKET_SECS`, see
    /// [`epoch_at`]).
    pub fn record_in(&self, epoch: u64, server_error: bool, elapsed: Duration) {
        let slot = &self.slots[slot_of(epoch)];
        let held = slot.epoch.load(Ordering::Acquire);
        if held != epoch {
            // A newer period already owns the slot (clock stepped back, or this thread was
            // descheduled across a boundary): drop the sample rather than mix periods.
            if held > epoch {
                return;
            }
            if slot
                .epoch
                .compare_exchange(held, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.requests.store(0, Ordering::Relaxed);
                slot.errors.store(0, Ordering::Relaxed);
                for bin in &slot.latency {
                    bin.store(0, Ordering::Relaxed);
                }
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if server_error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let bin = BUCKETS.partition_point(|&bound| bound < secs);
        slot.latency[bin].fetch_add(1, Ordering::Relaxed);
    }

    /// The [`SLOTS`] buckets ending with the one holding `now`, oldest first; periods nobody
    /// recorded in are empty.
    pub fn buckets(&self, now: SystemTime) -> Vec<Summary> {
        let current = epoch_of(now);
        (0..SLOTS as u64)
            .rev()
            .map(|back| {
                let Some(epoch) = current.checked_sub(back) else {
                    return Summary::default();
                };
                let slot = &self.slots[slot_of(epoch)];
                if slot.epoch.load(Ordering::Acquire) != epoch {
                    return Summary::default();
                }
                Summary {
                    requests: slot.requests.load(Ordering::Relaxed),
                    errors: slot.errors.load(Ordering::Relaxed),
                    latency: std::array::from_fn(|i| slot.latency[i].load(Ordering::Relaxed)),
                }
            })
            .collect()
    }
}

impl Summary {
    /// Adds `other`'s counts to this one.
    pub fn merge(&mut self, other: &Summary) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine += theirs;
        }
    }

    /// The `q` quantile of latency in milliseconds, interpolated linearly inside the histogram
    /// bin it falls in (as Prometheus' `histogram_quantile` does); `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (bin, &count) in self.latency.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let lower = if bin == 0 { 0.0 } else { BUCKETS[bin - 1] };
                // Above the last bound there is no upper edge: report the bound itself.
                let Some(&upper) = BUCKETS.get(bin) else {
                    return Some(lower * 1000.0);
                };
                let within = (rank - below as f64) / count as f64;
                return Some((lower + (upper - lower) * within) * 1000.0);
            }
            below += count;
        }
        BUCKETS.last().map(|b| b * 1000.0)
    }
}

fn epoch_of(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / BUCKET_SECS)
}

thread_local! {
    /// The period the thread last saw, and the monotonic instant it ends at.
    static PERIOD: std::cell::Cell<Option<(Instant, u64)>> = const { std::cell::Cell::new(None) };
}

/// The period (`unix_secs / BUCKET_SECS`) at monotonic instant `now`. The wall clock is read
/// once per period per thread, when `now` passes the end of the one the thread last saw,
/// instead of once per request; a step of the wall clock shows at the next period.
pub fn epoch_at(now: Instant) -> u64 {
    if let Some((ends, epoch)) = PERIOD.get() {
        if now < ends {
            return epoch;
        }
    }
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let period = Duration::from_secs(BUCKET_SECS);
    let into = Duration::from_nanos(
        u64::try_from(wall.as_nanos() % period.as_nanos()).unwrap_or_default(),
    );
    let epoch = wall.as_secs() / BUCKET_SECS;
    PERIOD.set(Some((now + (period - into), epoch)));
    epoch
}

fn slot_of(epoch: u64) -> usize {
    // The remainder is below SLOTS (30), so it fits any usize.
    usize::try_from(epoch % SLOTS as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn requests_land_in_their_period_and_old_periods_expire() {
        let ring = Ring::default();
        let t0 = 1_700_000_000;
        ring.record(at(t0), false, Duration::from_millis(3));
        ring.record(at(t0 + 1), true, Duration::from_millis(3));
        ring.record(at(t0 + 10), false, Duration::from_millis(3));
        let buckets = ring.buckets(at(t0 + 10));
        assert_eq!(buckets.len(), SLOTS);
        assert_eq!(buckets[SLOTS - 1].requests, 1);
        assert_eq!(
            (buckets[SLOTS - 2].requests, buckets[SLOTS - 2].errors),
            (2, 1)
        );
        // Five minutes on, the same slots are reused and the old counts are gone.
        let later = t0 + 10 + BUCKET_SECS * SLOTS as u64;
        ring.record(at(later), false, Duration::from_millis(3));
        let total = |ring: &Ring| {
            ring.buckets(at(later))
                .iter()
                .map(|b| b.requests)
                .sum::<u64>()
        };
        assert_eq!(total(&ring), 1);
        // A sample from a period older than its slot's is dropped.
        ring.record(at(t0 + 10), false, Duration::from_millis(3));
        assert_eq!(total(&ring), 1);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bin() {
        let ring = Ring::default();
        let now = at(1_700_000_000);
        for _ in 0..99 {
            ring.record(now, false, Duration::from_micros(700)); // bin 0.5..1 ms
        }
        ring.record(now, false, Duration::from_millis(200)); // bin 100..250 ms
        let mut all = Summary::default();
        for b in ring.buckets(now) {
            all.merge(&b);
        }
        let p50 = all.quantile_ms(0.5).expect("p50");
        assert!((0.5..=1.0).contains(&p50), "{p50}");
        let p99 = all.quantile_ms(0.99).expect("p99");
        assert!((0.5..=1.0).contains(&p99), "{p99}");
        let max = all.quantile_ms(1.0).expect("max");
        assert!((100.0..=250.0).contains(&max), "{max}");
        assert_eq!(Summary::default().quantile_ms(0.5), None);
    }

    #[test]
    fn the_cached_period_is_the_wall_clock_s() {
        let now = Instant::now();
        let first = epoch_at(now);
        let wall = epoch_of(SystemTime::now());
        assert!(wall == first || wall == first + 1, "{first} vs {wall}");
        // Within the period, from the cache.
        assert_eq!(epoch_at(now), first);
        // Past its end, the wall clock is read again.
        let later = epoch_at(now + Duration::from_secs(BUCKET_SECS));
        let wall = epoch_of(SystemTime::now());
        assert!(wall == later || wall == later + 1, "{later} vs {wall}");
        assert!(later >= first);
    }
}
