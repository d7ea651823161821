//! Load balancing: which endpoint of a cluster a request goes to.
//!
//! A [`Balancer`] is built once per cluster per [`Snapshot`](crate::runtime::Snapshot), off the
//! request path, from the cluster's endpoint list (sorted by address, so every worker and every
//! peer agrees on what index `i` means). Picking yields [`Candidates`]: endpoint indices in
//! preference order, so the caller can skip an ejected or open-breaker endpoint and take the next
//! one without asking the balancer again (pingora's "selection yields candidates" idea).
//!
//! Implemented now: smooth weighted round robin ([`round_robin`]). The other algorithms DESIGN.md
//! names arrive in a later issue; until then [`build`] gives those clusters round robin and
//! `switchyard check` reports their `balance` as not active yet.

pub mod round_robin;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{BalanceAlgorithm, ClusterConfig};
use crate::runtime::EndpointState;

pub use round_robin::RoundRobin;

/// What a balancer may look at when it picks. Borrowed for one pick; nothing here allocates.
#[derive(Debug)]
pub struct PickContext<'a> {
    /// The cluster's endpoints, in the snapshot's canonical (address) order.
    pub endpoints: &'a [Arc<EndpointState>],
    /// The downstream peer, for `hash_on = "source_ip"` balancers.
    pub client: Option<SocketAddr>,
    /// A per-request random number, so randomised balancers need no RNG state of their own.
    pub random: u64,
}

/// Picks endpoints for one cluster. `Send + Sync` because one snapshot serves every worker.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// Endpoint indices (into [`PickContext::endpoints`]) in preference order; each index at
    /// most once. Empty only when the cluster has no endpoints.
    fn candidates(&self, ctx: &PickContext<'_>) -> Candidates;

    /// The algorithm's config spelling, for logs and the admin API.
    fn name(&self) -> &'static str;
}

/// Builds the balancer a cluster's config asks for, over `endpoints` (already in canonical
/// order). Algorithms not implemented yet fall back to round robin; `check` says so.
pub fn build(cluster: &ClusterConfig, endpoints: &[Arc<EndpointState>]) -> Box<dyn Balancer> {
    if cluster.balance != BalanceAlgorithm::RoundRobin {
        // `run` already warned once at startup; this repeats per snapshot build, so debug only.
        tracing::debug!(
            cluster = %cluster.name,
            balance = cluster.balance.as_str(),
            "balance algorithm not active yet; using round_robin"
        );
    }
    // Weights are read once here, so the table matches the endpoint list it indexes.
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
    Box::new(RoundRobin::new(&weights))
}

/// Endpoint indices in preference order, produced by [`Balancer::candidates`].
///
/// A concrete iterator (not `Box<dyn Iterator>`) so a pick never allocates; new shapes of
/// preference order are new private variants.
#[derive(Debug, Clone)]
pub struct Candidates {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    /// `start, start+1, …` modulo `len`: the preferred endpoint, then every other in index order.
    Rotate {
        start: usize,
        len: usize,
        taken: usize,
    },
}

impl Candidates {
    /// No endpoint at all.
    pub fn empty() -> Self {
        Self::rotate(0, 0)
    }

    /// `start` first, then the rest of `0..len` walking forward and wrapping around.
    pub fn rotate(start: usize, len: usize) -> Self {
        let start = if len == 0 { 0 } else { start % len };
        Self {
            repr: Repr::Rotate {
                start,
                len,
                taken: 0,
            },
        }
    }
}

impl Iterator for Candidates {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match &mut self.repr {
            Repr::Rotate { start, len, taken } => {
                if *taken >= *len {
                    return None;
                }
                let index = (*start + *taken) % *len;
                *taken += 1;
                Some(index)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.repr {
            Repr::Rotate { len, taken, .. } => {
                let left = len.saturating_sub(*taken);
                (left, Some(left))
            }
        }
    }
}

impl ExactSizeIterator for Candidates {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_yields_every_index_once_starting_at_start() {
        let order: Vec<usize> = Candidates::rotate(2, 4).collect();
        assert_eq!(order, vec![2, 3, 0, 1]);
        assert_eq!(Candidates::rotate(7, 3).next(), Some(1));
        assert_eq!(Candidates::empty().count(), 0);
        assert_eq!(Candidates::rotate(1, 5).len(), 5);
    }
}
