//! `slow_start`: a new endpoint's effective weight ramps linearly from 10 % to 100 % of its
//! configured weight over the configured time since it first appeared in the registry (Envoy's
//! slow-start mode, with a linear ramp).
//!
//! Why 10 % and not 0: an endpoint at weight 0 would get no traffic at all at the start of the
//! ramp, so nothing would warm its caches and connection pools; a tenth gives it a trickle. An
//! endpoint that survives a reload keeps its registry entry, so a reload does not restart its
//! ramp. At process start every endpoint ramps together, which changes nothing relative.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::endpoint::EndpointState;

/// Share of its weight an endpoint gets at the very start of its ramp.
pub const INITIAL_FACTOR: f64 = 0.1;

/// The multiplier in `[INITIAL_FACTOR, 1]` for an endpoint created at `created`, at `now`.
/// `duration` zero means no slow start (always 1).
pub fn factor(created: Instant, now: Instant, duration: Duration) -> f64 {
    if duration.is_zero() {
        return 1.0;
    }
    let age = now.saturating_duration_since(created);
    if age >= duration {
        return 1.0;
    }
    INITIAL_FACTOR + (1.0 - INITIAL_FACTOR) * (age.as_secs_f64() / duration.as_secs_f64())
}

/// A cluster's ramp, for balancers that accept or pass over a choice (round robin, random,
/// hashing) rather than compare two: they need an endpoint's factor *relative to the cluster's
/// oldest endpoint*, or at process start — every endpoint new, every factor 10 % — they would
/// pass over everyone.
#[derive(Debug, Default)]
pub(crate) struct Ramp {
    duration: Duration,
    /// Creation time of the cluster's oldest endpoint; the snapshot's endpoint list never
    /// changes under a balancer, so it is computed once, on the first pick.
    oldest: OnceLock<Instant>,
}

impl Ramp {
    pub(crate) fn new(duration: Duration) -> Self {
        Self {
            duration,
            oldest: OnceLock::new(),
        }
    }

    /// Whether slow start is configured at all.
    pub(crate) fn is_off(&self) -> bool {
        self.duration.is_zero()
    }

    /// `endpoints[index]`'s factor divided by the oldest endpoint's, in `(0, 1]`.
    pub(crate) fn relative(
        &self,
        endpoints: &[Arc<EndpointState>],
        index: usize,
        now: Instant,
    ) -> f64 {
        let oldest = *self
            .oldest
            .get_or_init(|| endpoints.iter().map(|e| e.created()).min().unwrap_or(now));
        let base = factor(oldest, now, self.duration);
        endpoints.get(index).map_or(1.0, |e| {
            (factor(e.created(), now, self.duration) / base).min(1.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_from_a_tenth_to_full() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        assert_eq!(factor(t0, t0, d), INITIAL_FACTOR);
        let half = factor(t0, t0 + Duration::from_secs(5), d);
        assert!((half - 0.55).abs() < 1e-9, "{half}");
        assert_eq!(factor(t0, t0 + d, d), 1.0);
        assert_eq!(factor(t0, t0 + Duration::from_secs(60), d), 1.0);
        assert_eq!(factor(t0, t0, Duration::ZERO), 1.0);
    }

    #[test]
    fn relative_factors_treat_a_cluster_that_started_together_as_ramped() {
        let endpoints: Vec<Arc<EndpointState>> = (0..3)
            .map(|i| {
                Arc::new(EndpointState::new(
                    "c",
                    ([127, 0, 0, 1], 9000 + i).into(),
                    1,
                ))
            })
            .collect();
        let ramp = Ramp::new(Duration::from_secs(3600));
        let now = Instant::now();
        for i in 0..3 {
            assert!(ramp.relative(&endpoints, i, now) > 0.99);
        }
        assert!(!ramp.is_off() && Ramp::new(Duration::ZERO).is_off());
    }
}
