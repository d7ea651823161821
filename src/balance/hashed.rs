//! The hashing balancers (`ring_hash`, `maglev`) around their table: key lookup, candidate walk,
//! bounded-load admission, slow start, and the `least_request` fallback for requests without a
//! key.
//!
//! Candidates for a key are the distinct endpoints met walking the table from the key's position
//! (ring points clockwise, or consecutive Maglev slots), then everyone else. So when the key's
//! endpoint is ejected or full under bounded loads, the key moves to the same neighbour on every
//! worker and every peer.

use std::fmt;
use std::time::{Duration, Instant};

use super::candidates::Warmup;
use super::least_request::{self, InFlight};
use super::p2c::P2c;
use super::{below, bounded, remix, Balancer, Candidates, PickContext};
use crate::runtime::{EndpointState, InFlightGuard};

/// A consistent-hash table of endpoint indices.
pub(crate) trait Table: Send + Sync + fmt::Debug {
    /// The config spelling.
    const NAME: &'static str;
    /// The table of endpoint indices and the position a key's hash lands on.
    fn locate(&self, hash: u64) -> (&[u32], usize);
}

/// A hashing balancer over table `T`; see the module doc.
#[derive(Debug)]
pub(crate) struct Hashed<T> {
    table: T,
    fallback: P2c<InFlight>,
    /// weight / total weight per endpoint: bounded loads' per-endpoint share.
    shares: Vec<f64>,
    balance_factor: Option<f64>,
    slow_start: Duration,
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
            slow_start,
        }
    }
}

/// A key's fixed fraction in `[0, 1)` for slow start, independent of its table position.
fn fraction(hash: u64) -> f64 {
    (remix(hash ^ 0x736c_6f77) >> 11) as f64 / (1u64 << 53) as f64
}

impl<T: Table> Balancer for Hashed<T> {
    fn candidates<'a>(&'a self, ctx: &PickContext<'a>) -> Candidates<'a> {
        let Some(hash) = ctx.hash else {
            return self.fallback.candidates(ctx);
        };
        let n = ctx.endpoints.len();
        let (table, pos) = self.table.locate(hash);
        let warm = (!self.slow_start.is_zero()).then(|| Warmup {
            endpoints: ctx.endpoints,
            now: Instant::now(),
            duration: self.slow_start,
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
}
