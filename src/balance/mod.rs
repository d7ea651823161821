//! Load balancing: which endpoint of a cluster a request goes to.
//!
//! A [`Balancer`] is built once per cluster per [`Snapshot`](crate::state::Snapshot), off the
//! request path, from the cluster's endpoint list (sorted by address, so every worker and every
//! peer agrees on what index `i` means); tables (smooth-WRR period, hash ring, Maglev table) are
//! computed there. Picking yields [`Candidates`]: endpoint indices in preference order, so the
//! caller can skip an ejected or open-breaker endpoint and take the next one without asking the
//! balancer again (pingora's "selection yields candidates" idea); [`choose`] is that loop.
//!
//! | `balance` | how | source |
//! |---|---|---|
//! | `round_robin` | smooth weighted round robin | nginx |
//! | `random` | weighted random | — |
//! | `least_request` | power of two choices on in-flight requests, `weight / (active + 1)` | Mitzenmacher; Envoy's default |
//! | `least_connections` | power of two choices on open upstream connections | — |
//! | `peak_ewma` | power of two choices on peak latency EWMA × (in flight + 1) | Finagle, linkerd, tower |
//! | `ring_hash` | Ketama-style consistent hash ring over xxh3 | Karger et al.; Ketama |
//! | `maglev` | Maglev lookup table | Eisenbud et al., NSDI 2016 |
//!
//! `balance_factor` adds bounded loads to the hashing balancers (Mirrokni, Thorup, Zadimoghaddam,
//! 2018): see [`bounded`]. `slow_start` ramps new endpoints in: see [`slow_start`]. A request
//! without the `hash_on` key is balanced by `least_request` (see [`hash_key`]).

mod bounded;
mod candidates;
pub mod hash_key;
mod hashed;
mod least_connections;
mod least_request;
pub mod locality;
mod maglev;
mod p2c;
pub mod peak_ewma;
mod random;
mod ring_hash;
pub mod round_robin;
pub mod slow_start;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BalanceAlgorithm, ClusterConfig};
use crate::endpoint::{EndpointState, InFlightGuard};

pub use bounded::bounded_cap;
pub use candidates::Candidates;
pub use hash_key::request_hash;
pub use round_robin::RoundRobin;

/// What a balancer may look at when it picks. Borrowed for one pick; nothing here allocates.
#[derive(Debug, Clone)]
pub struct PickContext<'a> {
    /// The cluster's endpoints, in the snapshot's canonical (address) order.
    pub endpoints: &'a [Arc<EndpointState>],
    /// The downstream peer (informational; `source_ip` hashing uses [`Self::hash`]).
    pub client: Option<SocketAddr>,
    /// A per-request random number, so randomised balancers need no RNG state of their own.
    pub random: u64,
    /// The request's `hash_on` key hashed ([`request_hash`]), computed once per request; `None`
    /// when the cluster does not hash or the request lacks the key.
    pub hash: Option<u64>,
}

/// Picks endpoints for one cluster. `Send + Sync` because one snapshot serves every worker.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// Endpoint indices (into [`PickContext::endpoints`]) in preference order; each index exactly
    /// once. Empty only when the cluster has no endpoints.
    fn candidates<'a>(&'a self, ctx: &PickContext<'a>) -> Candidates<'a>;

    /// Counts a request against candidate `index` and returns the guard, or `None` when the
    /// balancer's admission rule (bounded loads) refuses the endpoint right now; the caller then
    /// tries the next candidate. The default admits always.
    fn admit(&self, ctx: &PickContext<'_>, index: usize) -> Option<InFlightGuard> {
        ctx.endpoints.get(index).map(EndpointState::start_request)
    }

    /// The algorithm's config spelling, for logs and the admin API.
    fn name(&self) -> &'static str;

    /// This balancer's successor after the endpoint list changed by `diff` (a discovery update),
    /// derived from this one instead of built from scratch, when the algorithm can do that for
    /// less than a full build and the result equals what [`build`] would make. `None` (the
    /// default) means: build from scratch. `cluster` is the same config this one was built
    /// for; `endpoints` and `weights` are the new list.
    fn derive(
        &self,
        cluster: &ClusterConfig,
        endpoints: &[Arc<EndpointState>],
        weights: &[u32],
        diff: &Diff,
    ) -> Option<Box<dyn Balancer>> {
        let _ = (cluster, endpoints, weights, diff);
        None
    }

    /// A stand-in for this balancer's successor after `diff`, made in one cheap pass when a
    /// full build (or [`Self::derive`]) is too slow to keep a discovery update waiting:
    /// it never picks an endpoint that left, but unlike [`build`]'s result it depends on this
    /// balancer, not on the endpoint list alone, so it is published only until the full build
    /// for the same list replaces it (`state::Shared::complete_cluster`). `None` (the default)
    /// means: no stand-in, build now. `weights` are the new list's.
    fn interim(
        &self,
        cluster: &ClusterConfig,
        weights: &[u32],
        diff: &Diff,
    ) -> Option<Box<dyn Balancer>> {
        let _ = (cluster, weights, diff);
        None
    }
}

/// How a cluster's endpoint list changed from one snapshot to the next (both in canonical
/// address order), so tables over it can be derived rather than rebuilt: see
/// [`Balancer::derive`] and [`build_after`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// For each old index, its new index, or [`GONE`] for an endpoint that left.
    pub old_to_new: Vec<u32>,
    /// New indices whose table entries must be made afresh: endpoints that joined, and
    /// endpoints that stayed with a different weight. Ascending.
    pub changed: Vec<u32>,
}

/// [`Diff::old_to_new`]'s mark for an endpoint that left.
pub const GONE: u32 = u32::MAX;

/// The request path's pick: the first candidate that `usable` accepts (the caller's view of
/// ejection and breakers) and the balancer admits, with its in-flight guard.
///
/// Admission (bounded loads) reads the cluster's total in flight racily, so under a burst every
/// cap can look full for an instant: the walk is then repeated with fresh counts, up to
/// [`ADMISSION_PASSES`] times, and after that the first usable candidate is taken anyway —
/// overshooting a soft cap by one beats a 503.
pub fn choose(
    balancer: &dyn Balancer,
    ctx: &PickContext<'_>,
    mut usable: impl FnMut(usize) -> bool,
) -> Option<(usize, InFlightGuard)> {
    let mut first_usable = None;
    for _ in 0..ADMISSION_PASSES {
        for index in balancer.candidates(ctx) {
            if !usable(index) {
                continue;
            }
            first_usable.get_or_insert(index);
            if let Some(guard) = balancer.admit(ctx, index) {
                return Some((index, guard));
            }
        }
        // Nothing usable at all: no point in walking again.
        first_usable?;
    }
    let index = first_usable?;
    let endpoint = ctx.endpoints.get(index)?;
    Some((index, endpoint.start_request()))
}

/// Walks over the candidates before [`choose`] stops honouring admission; see there.
pub const ADMISSION_PASSES: usize = 3;

/// Builds the balancer a cluster's config asks for, over `endpoints` (already in canonical
/// order). Weights are read once here, so every table matches the endpoint list it indexes.
pub fn build(cluster: &ClusterConfig, endpoints: &[Arc<EndpointState>]) -> Box<dyn Balancer> {
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
    let slow_start = cluster.slow_start;
    match cluster.balance {
        BalanceAlgorithm::RoundRobin => {
            Box::new(RoundRobin::new(&weights).with_slow_start(slow_start))
        }
        BalanceAlgorithm::Random => Box::new(random::Random::new(&weights, slow_start)),
        BalanceAlgorithm::LeastRequest => Box::new(least_request::new(&weights, slow_start)),
        BalanceAlgorithm::LeastConnections => {
            Box::new(least_connections::new(&weights, slow_start))
        }
        BalanceAlgorithm::PeakEwma => Box::new(peak_ewma::new(&weights, slow_start)),
        algorithm @ (BalanceAlgorithm::RingHash | BalanceAlgorithm::Maglev) => {
            let listed: Vec<(String, u32)> = endpoints
                .iter()
                .zip(&weights)
                .map(|(e, &w)| (e.address().to_string(), w))
                .collect();
            hashing(algorithm, &listed, cluster.balance_factor, slow_start)
        }
    }
}

/// The balancer of a discovery update: derived from `previous` (the cluster's balancer in the
/// snapshot before, built from the same `cluster` config) when its algorithm supports that
/// ([`Balancer::derive`]), else built from scratch as [`build`] does.
pub fn build_after(
    cluster: &ClusterConfig,
    endpoints: &[Arc<EndpointState>],
    previous: &dyn Balancer,
    diff: &Diff,
) -> Box<dyn Balancer> {
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
    previous
        .derive(cluster, endpoints, &weights, diff)
        .unwrap_or_else(|| build(cluster, endpoints))
}

/// The stand-in balancer of a discovery update whose full build is left for later
/// ([`Balancer::interim`]), or `None` when `previous`'s algorithm has none at this size (then
/// [`build_after`] is the balancer).
pub fn interim_after(
    cluster: &ClusterConfig,
    endpoints: &[Arc<EndpointState>],
    previous: &dyn Balancer,
    diff: &Diff,
) -> Option<Box<dyn Balancer>> {
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
    previous.interim(cluster, &weights, diff)
}

/// Builds a hashing balancer (`ring_hash`, or `maglev`; any other algorithm means `ring_hash`)
/// from `(identity, weight)` pairs. The identity is what the table hashes — the address as
/// text in the snapshot, so every peer listing the same addresses builds the same table — and
/// tables do not depend on the list's order; indices in the candidates refer to the list as
/// given. Public so property tests and benchmarks build exactly what the snapshot builds.
pub fn hashing(
    algorithm: BalanceAlgorithm,
    endpoints: &[(String, u32)],
    balance_factor: Option<f64>,
    slow_start: Duration,
) -> Box<dyn Balancer> {
    let identities: Vec<&str> = endpoints.iter().map(|(a, _)| a.as_str()).collect();
    let weights: Vec<u32> = endpoints.iter().map(|(_, w)| *w).collect();
    match algorithm {
        BalanceAlgorithm::Maglev => Box::new(hashed::Hashed::new(
            maglev::Maglev::new(&identities, &weights),
            &weights,
            balance_factor,
            slow_start,
        )),
        _ => Box::new(hashed::Hashed::new(
            ring_hash::Ring::new(&identities, &weights),
            &weights,
            balance_factor,
            slow_start,
        )),
    }
}

/// Maps a random 64-bit value onto `0..n` without division (Lemire's multiply-shift); unbiased
/// enough for load balancing (bias below 2^-32 for any realistic `n`).
fn below(random: u64, n: usize) -> usize {
    ((u128::from(random) * n as u128) >> 64) as usize
}

/// splitmix64's finaliser: a fresh, well-mixed value from a used one, so one per-request random
/// number can feed several independent draws.
fn remix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
