//! The hashing balancers (`ring_hash`, `maglev`) around their table: key lookup, candidate walk,
//! bounded-load admission, slow start, and the `least_request` fallback for requests without a
//! key.
//!
//! Candidates for a key are the distinct endpoints met walking the table from the key's position
//! (ring points clockwise, or consecutive Maglev slots), then everyone else. So when the key's
//! endpoint is ejected or full under bounded loads, the key moves to the same neighbour on every
//! worker and every peer.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slow_start::Ramp;

use super::candidates::{Slots, Warmup};
use super::least_request::{self, InFlight};
use super::p2c::P2c;
use super::{below, bounded, remix, Balancer, Candidates, Diff, PickContext};
use crate::config::ClusterConfig;
use crate::endpoint::{EndpointState, InFlightGuard};

/// A consistent-hash table of endpoint indices.
pub(crate) trait Table: Send + Sync + fmt::Debug {
    /// The config spelling.
    const NAME: &'static str;
    /// The table of endpoint indices and the position a key's hash lands on.
    fn locate(&self, hash: u64) -> (Slots<'_>, usize);

    /// The table after the list changed by `diff` (see [`super::Balancer::derive`]), when this
    /// table can be derived; `identity(i)` is new endpoint `i`'s identity.
    fn derive(&self, weights: &[u32], diff: &Diff, identity: &dyn Fn(u32) -> String) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = (weights, diff, identity);
        None
    }

    /// A stand-in table for the list after `diff` (see [`super::Balancer::interim`]), when
    /// building this table from scratch is too slow for the publishing path.
    fn interim(&self, diff: &Diff) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = diff;
        None
    }
}

/// A hashing balancer over table `T`; see the module doc.
#[derive(Debug)]
pub(crate) struct Hashed<T> {
    table: T,
    fallback: P2c<InFlight>,
    /// weight / total weight per endpoint: bounded loads' per-endpoint share.
    shares: Vec<f64>,
    balance_factor: Option<f64>,
    ramp: Ramp,
}

impl<T: Table> Hashed<T> {
    pub(crate) fn new(
        table: T,
        weights: &[u32],
        balance_factor: Option<f64>,
        slow_start: Duration,
    ) -> Self {
        let total: f64 = weights.iter().map(|&w| f64::from(w.max(1))).sum();
        Self {
            table,
            fallback: least_request::new(weights, slow_start),
            shares: weights
                .iter()
                .map(|&w| f64::from(w.max(1)) / total)
                .collect(),
            balance_factor,
            ramp: Ramp::new(slow_start),
        }
    }
}

/// A key's fixed fraction in `[0, 1)` for slow start, independent of its table position.
fn fraction(hash: u64) -> f64 {
    (remix(hash ^ 0x736c_6f77) >> 11) as f64 / (1u64 << 53) as f64
}

impl<T: Table + 'static> Balancer for Hashed<T> {
    fn candidates<'a>(&'a self, ctx: &PickContext<'a>) -> Candidates<'a> {
        let Some(hash) = ctx.hash else {
            return self.fallback.candidates(ctx);
        };
        let n = ctx.endpoints.len();
        let (table, pos) = self.table.locate(hash);
        let warm = (!self.ramp.is_off()).then(|| Warmup {
            endpoints: ctx.endpoints,
            ramp: &self.ramp,
            now: Instant::now(),
            u: fraction(hash),
        });
        // Past the walk, the rest in index order from a key-derived point: still the same order
        // for the same key everywhere.
        Candidates::walk(table, pos, warm, below(remix(hash), n), n)
    }

    fn admit(&self, ctx: &PickContext<'_>, index: usize) -> Option<InFlightGuard> {
        match (self.balance_factor, ctx.hash, self.shares.get(index)) {
            (Some(c), Some(_), Some(&share)) => bounded::admit(ctx.endpoints, index, c, share),
            _ => ctx.endpoints.get(index).map(EndpointState::start_request),
        }
    }

    fn name(&self) -> &'static str {
        T::NAME
    }

    fn derive(
        &self,
        cluster: &ClusterConfig,
        endpoints: &[Arc<EndpointState>],
        weights: &[u32],
        diff: &Diff,
    ) -> Option<Box<dyn Balancer>> {
        let identity = |i: u32| {
            endpoints
                .get(i as usize)
                .map(|e| e.address().to_string())
                .unwrap_or_default()
        };
        let table = self.table.derive(weights, diff, &identity)?;
        Some(Box::new(Self::new(
            table,
            weights,
            cluster.balance_factor,
            cluster.slow_start,
        )))
    }

    fn interim(
        &self,
        cluster: &ClusterConfig,
        weights: &[u32],
        diff: &Diff,
    ) -> Option<Box<dyn Balancer>> {
        let table = self.table.interim(diff)?;
        Some(Box::new(Self::new(
            table,
            weights,
            cluster.balance_factor,
            cluster.slow_start,
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::ring_hash::Ring;
    use super::*;

    #[test]
    fn slow_start_moves_a_small_consistent_share_of_keys_to_a_new_endpoint() {
        let ramp_time = Duration::from_millis(1);
        let state = |port: u16| Arc::new(EndpointState::new("c", ([10, 0, 0, 1], port).into(), 1));
        // Eleven old endpoints: each has 100 points whatever n is, so the rings with and without
        // the new one agree on the old endpoints' points.
        let old: Vec<Arc<EndpointState>> = (1..=11).map(state).collect();
        // The old endpoints finish their 1 ms ramp (time passing is the point, not
        // synchronisation); then a new one joins, at exactly 10 % when `now` is its creation.
        while old[0].created().elapsed() < ramp_time * 2 {
            std::hint::spin_loop();
        }
        let mut all = old.clone();
        all.push(state(12));
        let now = all[11].created();
        let ids: Vec<String> = all.iter().map(|e| e.address().to_string()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let with_new = Ring::new(&ids, &[1; 12]);
        let without = Ring::new(&ids[..11], &[1; 11]);
        let ramp = Ramp::new(ramp_time);
        let (mut to_new, mut would_go_new) = (0, 0);
        for key in 0..50_000u64 {
            let hash = remix(key);
            let (table, pos) = with_new.locate(hash);
            let warm = Warmup {
                endpoints: &all,
                ramp: &ramp,
                now,
                u: fraction(hash),
            };
            let ramped = Candidates::walk(table, pos, Some(warm), 0, 12).next();
            let plain = Candidates::walk(table, pos, None, 0, 12).next();
            let (t3, p3) = without.locate(hash);
            let before = Candidates::walk(t3, p3, None, 0, 11).next();
            would_go_new += usize::from(plain == Some(11));
            if ramped == Some(11) {
                to_new += 1;
            } else {
                // Keys the new endpoint does not take yet stay where they were before it came.
                assert_eq!(ramped, before, "key {key}");
            }
        }
        let share = to_new as f64 / would_go_new as f64;
        assert!((0.07..0.13).contains(&share), "{to_new} of {would_go_new}");
    }
}
