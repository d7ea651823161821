//! Power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing",
//! 2001; the p2c of Finagle and tower): pick two distinct endpoints at random and send to the
//! less loaded one. It needs no shared state beyond the per-endpoint counters the request path
//! already keeps, and it avoids the herd behaviour of "always the least loaded": every worker
//! reading the same counters at once would all pick the same endpoint.
//!
//! What "load" means is the [`Load`] — in-flight requests, open connections, or peak-EWMA latency
//! — divided by the endpoint's effective weight (`slow_start` included). Candidates are the
//! winner, then every other endpoint from a random point, then the loser last: a caller that must
//! skip the winner (ejected) does not fall back to the one endpoint it just learned is busier.
//! With equal weights a single strictly busiest endpoint therefore comes first only when it is
//! the only endpoint.

use std::fmt;
use std::time::{Duration, Instant};

use super::{below, remix, slow_start, Balancer, Candidates, PickContext};
use crate::endpoint::EndpointState;

/// One flavour of load for [`P2c`].
pub(crate) trait Load: Send + Sync + fmt::Debug {
    /// The config spelling.
    const NAME: &'static str;
    /// Whether [`Load::costs`] reads the clock (so P2C only calls `Instant::now` when needed).
    const NEEDS_CLOCK: bool;

    /// Costs of sending the next request to `a` and to `b`, lower is better, before weighting:
    /// `(primary, tie_breaker)` each. Both endpoints at once, because peak-EWMA scores an
    /// endpoint without a latency sample with its rival's latency.
    fn costs(
        a: &EndpointState,
        b: &EndpointState,
        now: Option<Instant>,
    ) -> ((f64, f64), (f64, f64));
}

/// Power-of-two-choices balancer over load `L`; see the module doc.
#[derive(Debug)]
pub(crate) struct P2c<L> {
    /// Configured weights, as read when the snapshot was built.
    weights: Vec<f64>,
    slow_start: Duration,
    load: std::marker::PhantomData<L>,
}

impl<L: Load> P2c<L> {
    /// A balancer over `weights` (index i = endpoint i); zero weights count as 1.
    pub(crate) fn new(weights: &[u32], slow_start: Duration) -> Self {
        Self {
            weights: weights.iter().map(|&w| f64::from(w.max(1))).collect(),
            slow_start,
            load: std::marker::PhantomData,
        }
    }

    fn weight(&self, ctx: &PickContext<'_>, index: usize, now: Option<Instant>) -> f64 {
        let weight = self.weights.get(index).copied().unwrap_or(1.0);
        match (now, ctx.endpoints.get(index)) {
            (Some(now), Some(e)) if !self.slow_start.is_zero() => {
                weight * slow_start::factor(e.created(), now, self.slow_start)
            }
            _ => weight,
        }
    }
}

impl<L: Load> Balancer for P2c<L> {
    fn candidates<'a>(&'a self, ctx: &PickContext<'a>) -> Candidates<'a> {
        let n = ctx.endpoints.len().min(self.weights.len());
        if n <= 1 {
            return Candidates::rotate(0, n);
        }
        // Two distinct indices: `a` uniform, `b` uniform among the other n - 1.
        let random = ctx.random;
        let a = below(random, n);
        let b = (a + 1 + below(remix(random), n - 1)) % n;
        let (Some(ea), Some(eb)) = (ctx.endpoints.get(a), ctx.endpoints.get(b)) else {
            return Candidates::rotate(a, n);
        };
        let now = (L::NEEDS_CLOCK || !self.slow_start.is_zero()).then(Instant::now);
        let (ca, cb) = L::costs(ea, eb, now);
        let (wa, wb) = (self.weight(ctx, a, now), self.weight(ctx, b, now));
        let score_a = (ca.0 / wa, ca.1 / wa);
        let score_b = (cb.0 / wb, cb.1 / wb);
        let a_wins = match score_a.partial_cmp(&score_b) {
            Some(std::cmp::Ordering::Less) => true,
            Some(std::cmp::Ordering::Greater) => false,
            // A tie (or a NaN from a corrupt sample) is a coin flip, from bits `a` and `b` did
            // not use.
            _ => remix(remix(random)) >> 63 == 0,
        };
        let (winner, loser) = if a_wins { (a, b) } else { (b, a) };
        Candidates::pair(winner, Some(loser), below(remix(random ^ 1), n), n)
    }

    fn name(&self) -> &'static str {
        L::NAME
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;

    /// `n` fresh endpoint states on made-up addresses.
    pub(crate) fn endpoints(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                let port = u16::try_from(9000 + i).expect("small n");
                Arc::new(EndpointState::new(
                    "c",
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    1,
                ))
            })
            .collect()
    }

    /// Counts how often each index comes first over `picks` random picks.
    pub(crate) fn first_counts(
        balancer: &dyn Balancer,
        endpoints: &[Arc<EndpointState>],
        picks: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..picks {
            let ctx = PickContext {
                endpoints,
                client: None,
                random: fastrand::u64(..),
                hash: None,
            };
            if let Some(i) = balancer.candidates(&ctx).next() {
                counts[i] += 1;
            }
        }
        counts
    }
}
