//! A sliding outcome window per endpoint: `BUCKETS` buckets of (requests, failures), the oldest
//! dropped every `window / BUCKETS`. Coarse on purpose: the failure-rate and success-rate
//! triggers need "about the last `window`", not exact timestamps, and ten counters cost nothing.

/// Request and failure counts over roughly the last `window`.
#[derive(Debug, Default, Clone)]
pub struct Window {
    buckets: [(u64, u64); Window::BUCKETS],
    /// The bucket receiving new outcomes.
    current: usize,
}

impl Window {
    /// Buckets per window: the window slides in steps of a tenth.
    pub const BUCKETS: usize = 10;

    /// Counts one outcome in the current bucket.
    pub fn record(&mut self, failed: bool) {
        let b = &mut self.buckets[self.current];
        b.0 += 1;
        b.1 += u64::from(failed);
    }

    /// Counts `n` successes in the current bucket (the request path's quiet successes).
    pub fn record_successes(&mut self, n: u64) {
        self.buckets[self.current].0 += n;
    }

    /// (requests, failures) over the whole window.
    pub fn totals(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(t, f), (bt, bf)| (t + bt, f + bf))
    }

    /// Moves on one bucket, forgetting the oldest.
    pub fn rotate(&mut self) {
        self.current = (self.current + 1) % Self::BUCKETS;
        self.buckets[self.current] = (0, 0);
    }

    /// Forgets everything (after an ejection: the endpoint starts over).
    pub fn clear(&mut self) {
        self.buckets = [(0, 0); Self::BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_buckets_slide_out() {
        let mut w = Window::default();
        w.record(true);
        w.record(false);
        assert_eq!(w.totals(), (2, 1));
        for _ in 0..Window::BUCKETS - 1 {
            w.rotate();
        }
        w.record(false);
        assert_eq!(w.totals(), (3, 1));
        w.rotate();
        assert_eq!(w.totals(), (1, 0));
        w.clear();
        assert_eq!(w.totals(), (0, 0));
    }
}
