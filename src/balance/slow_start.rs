//! `slow_start`: a new endpoint's effective weight ramps linearly from 10 % to 100 % of its
//! configured weight over the configured time since it first appeared in the registry (Envoy's
//! slow-start mode, with a linear ramp).
//!
//! Why 10 % and not 0: an endpoint at weight 0 would get no traffic at all at the start of the
//! ramp, so nothing would warm its caches and connection pools; a tenth gives it a trickle. An
//! endpoint that survives a reload keeps its registry entry, so a reload does not restart its
//! ramp. At process start every endpoint ramps together, which changes nothing relative.

use std::time::{Duration, Instant};

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
}
