//! Lifeguard's local health multiplier (Dadgar et al., "Lifeguard: Local Health Awareness for
//! More Accurate Failure Detection", 2018): a member whose own event loop runs late gives the
//! peers it suspects longer to refute, instead of declaring healthy peers dead because it was
//! too slow to read their acks. (Lifeguard stretches the probe period and timeout; foca cannot
//! change those on a running instance, so the node stretches the suspicion timeout.)
//!
//! Our signal is the lateness of foca's probe timer (the loop's scheduling delay): more than
//! [`LATE`] late raises the score by one, an on-time probe lowers it by one; the score is capped
//! at [`MAX_SCORE`] and the multiplier is `1 + score`.

use std::time::Duration;

/// A probe timer this late counts against our health.
pub const LATE: Duration = Duration::from_millis(250);
/// At most 3× the suspicion timeout: longer would delay real deaths past usefulness.
pub const MAX_SCORE: u32 = 2;

/// The score, owned by the node task.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalHealth {
    score: u32,
}

impl LocalHealth {
    /// Feeds one probe timer's lateness; returns whether the multiplier changed.
    pub fn observe_lateness(&mut self, late: Duration) -> bool {
        let before = self.score;
        self.score = if late > LATE {
            (self.score + 1).min(MAX_SCORE)
        } else {
            self.score.saturating_sub(1)
        };
        before != self.score
    }

    /// What the suspicion timeout is multiplied by.
    pub fn multiplier(&self) -> u32 {
        1 + self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_timers_raise_the_multiplier_up_to_the_cap_and_on_time_ones_lower_it() {
        let mut health = LocalHealth::default();
        assert_eq!(health.multiplier(), 1);
        assert!(!health.observe_lateness(Duration::ZERO), "already at 1");
        for _ in 0..20 {
            health.observe_lateness(Duration::from_secs(1));
        }
        assert_eq!(health.multiplier(), 1 + MAX_SCORE);
        assert!(health.observe_lateness(Duration::from_millis(10)));
        assert_eq!(health.multiplier(), MAX_SCORE);
    }
}
