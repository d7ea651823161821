//! `random`: weighted random choice. Cumulative weights are computed when the snapshot is built,
//! so a pick is one multiply-shift and a binary search.
//!
//! `slow_start` is rejection sampling: a draw landing on a warming endpoint is kept with
//! probability equal to its ramp factor and redrawn otherwise, which makes its share
//! proportional to `weight × factor` (a few redraws at most; after [`MAX_DRAWS`] the last draw
//! stands, which only matters if nearly every endpoint is new).

use std::time::{Duration, Instant};

use super::slow_start::Ramp;
use super::{below, remix, Balancer, Candidates, PickContext};

/// Redraws before a warming endpoint is accepted anyway.
const MAX_DRAWS: usize = 8;

/// Weighted random over the snapshot's endpoints.
#[derive(Debug)]
pub(crate) struct Random {
    /// `cumulative[i]` = sum of weights `0..=i`.
    cumulative: Vec<u64>,
    slow_start: Ramp,
}

impl Random {
    /// Zero weights count as 1, as in every balancer.
    pub(crate) fn new(weights: &[u32], slow_start: Duration) -> Self {
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w.max(1));
                Some(*sum)
            })
            .collect();
        Self {
            cumulative,
            slow_start: Ramp::new(slow_start),
        }
    }

    fn draw(&self, random: u64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let target = below(random, usize::try_from(total).unwrap_or(usize::MAX)) as u64;
        self.cumulative.partition_point(|&c| c <= target)
    }
}

impl Balancer for Random {
    fn candidates<'a>(&'a self, ctx: &PickContext<'a>) -> Candidates<'a> {
        let n = ctx.endpoints.len().min(self.cumulative.len());
        if n == 0 {
            return Candidates::empty();
        }
        let mut random = ctx.random;
        let mut pick = self.draw(random);
        if !self.slow_start.is_off() {
            let now = Instant::now();
            for _ in 1..MAX_DRAWS {
                let factor = self.slow_start.relative(ctx.endpoints, pick, now);
                random = remix(random);
                // Top 53 bits as a uniform fraction in [0, 1).
                if factor >= 1.0 || ((random >> 11) as f64 / (1u64 << 53) as f64) < factor {
                    break;
                }
                random = remix(random);
                pick = self.draw(random);
            }
        }
        Candidates::rotate(pick, n)
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

#[cfg(test)]
mod tests {
    use super::super::p2c::tests::{endpoints, first_counts};
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let eps = endpoints(3);
        let counts = first_counts(&Random::new(&[1, 2, 7], Duration::ZERO), &eps, 100_000);
        for (count, expected) in counts.iter().zip([10_000.0, 20_000.0, 70_000.0]) {
            let ratio = *count as f64 / expected;
            assert!((0.95..1.05).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn draw_covers_the_boundaries() {
        let r = Random::new(&[1, 1], Duration::ZERO);
        assert_eq!(r.draw(0), 0);
        assert_eq!(r.draw(u64::MAX), 1);
        assert_eq!(Random::new(&[], Duration::ZERO).cumulative.len(), 0);
    }
}
