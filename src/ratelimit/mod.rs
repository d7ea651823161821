//! Route rate limits (`rate_limit = { requests, per, burst, key, scope }`): the decision for
//! one request, made before the cache and the cluster limits, so a refused request touches no
//! cluster and gets 429 from the proxy.
//!
//! - [`gcra`]: the bucket, one `AtomicU64` per key (exact: a full bucket admits exactly
//!   `requests + burst`, then one request per `per / requests`).
//! - [`keys`]: the fixed-size table of active keys (bounded memory under any key flood; why
//!   not an LRU is in its doc). `key = "route"` needs no table: one atomic for the route.
//! - [`answer`]: the 429's `Retry-After`, `RateLimit-Policy` and `RateLimit` fields.
//! - [`share`]: the mesh scope's arithmetic: this member's share of the limit per key from
//!   every live member's demand (`mesh::rate_share` gossips the demand and publishes the
//!   shares here).
//!
//! A [`RateLimits`] table is built with each snapshot; a route whose `rate_limit` did not change
//! keeps its [`RouteLimiter`] (buckets, demand counters, mesh shares) across a reload, so a
//! reload neither refills anyone's bucket nor forgets the mesh's split.

pub mod answer;
pub mod gcra;
pub mod keys;
pub mod share;

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use foldhash::fast::FixedState;
use http::HeaderMap;
use metrics::Counter;

use crate::config::{Config, RateLimitConfig, RateLimitKey, RateLimitScope};
use crate::telemetry::metrics::RATE_LIMITED_TOTAL;
pub use gcra::{Rate, Refused};
pub use share::Shares;

/// Seed of the key hash of mesh-scoped routes: fixed, so every member fingerprints a key the
/// same way and their gossiped demand adds up. Local routes hash with a per-process random
/// seed, so nobody can aim a key flood at one set of the table.
const MESH_SEED: u64 = 0x7377_6974_6368_7964;
/// The fingerprint of the one key of `key = "route"`.
pub const ROUTE_KEY: u64 = 1;

/// Every route's limiter, by route index (`None`: the route has no `rate_limit`).
#[derive(Debug, Default)]
pub struct RateLimits {
    routes: Vec<Option<Arc<RouteLimiter>>>,
}

impl RateLimits {
    /// The limiters of `config`'s routes; a route whose `rate_limit` is unchanged since
    /// `prior` (same route name) keeps its limiter, buckets and all.
    pub fn build(config: &Config, prior: Option<&RateLimits>) -> Self {
        let before: std::collections::HashMap<&str, &Arc<RouteLimiter>> = prior
            .map(|p| {
                p.routes
                    .iter()
                    .flatten()
                    .map(|l| (l.route.as_str(), l))
                    .collect()
            })
            .unwrap_or_default();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let limit = route.rate_limit.as_ref()?;
                Some(match before.get(route.name.as_str()) {
                    Some(kept) if kept.config == *limit => Arc::clone(kept),
                    _ => Arc::new(RouteLimiter::new(&route.name, limit)),
                })
            })
            .collect();
        Self { routes }
    }

    /// Route `index`'s limiter, if it has a `rate_limit`.
    pub fn get(&self, index: usize) -> Option<&RouteLimiter> {
        self.routes.get(index)?.as_deref()
    }

    /// The limiters with `scope = "mesh"`, for the mesh task.
    pub fn mesh_scoped(&self) -> impl Iterator<Item = &Arc<RouteLimiter>> {
        self.routes
            .iter()
            .flatten()
            .filter(|l| l.config.scope == RateLimitScope::Mesh)
    }
}

/// Where a limiter keeps its buckets.
#[derive(Debug)]
enum Buckets {
    /// `key = "route"`: one TAT, and the requests since the mesh last read them.
    Route { tat: AtomicU64, demand: AtomicU32 },
    /// Keyed by client IP or header: the table of active keys.
    Keys(keys::KeyTable),
}

/// One route's limiter: its numbers, its buckets, the mesh's shares and the precomputed 429
/// fields.
#[derive(Debug)]
pub struct RouteLimiter {
    route: String,
    config: RateLimitConfig,
    rate: Rate,
    buckets: Buckets,
    hasher: FixedState,
    /// `scope = "mesh"`: this member's shares, published by the mesh task. `None` for local.
    shares: Option<ArcSwap<Shares>>,
    answer: answer::Fields,
    limited: OnceLock<Counter>,
}

impl RouteLimiter {
    /// A fresh limiter (every bucket full) for route `route`.
    pub fn new(route: &str, config: &RateLimitConfig) -> Self {
        let mesh = config.scope == RateLimitScope::Mesh;
        let buckets = match config.key {
            RateLimitKey::Route => Buckets::Route {
                tat: AtomicU64::new(0),
                demand: AtomicU32::new(0),
            },
            _ => Buckets::Keys(keys::KeyTable::new(config.max_keys, mesh)),
        };
        let hasher = if mesh {
            FixedState::with_seed(MESH_SEED)
        } else {
            FixedState::with_seed(fastrand::u64(..))
        };
        Self {
            route: route.to_owned(),
            rate: Rate::new(config.requests, config.per, config.burst),
            config: config.clone(),
            buckets,
            hasher,
            // Until the mesh's first period, each member enforces the whole limit (at most
            // N x limit in total, the partition bound).
            shares: mesh.then(|| ArcSwap::from_pointee(Shares::whole())),
            answer: answer::Fields::new(route, config),
            limited: OnceLock::new(),
        }
    }

    /// Admits one request from `peer` with `headers`, or refuses it (count it with
    /// [`Self::count_refused`] and answer with [`answer::Fields`]). One clock read, a hash of
    /// the key and one compare-and-swap; a mesh-scoped route also loads its shares.
    /// `trusted_hops`: the listener's; with any, `client_ip` is the client its trusted proxies
    /// vouch for (`wire::headers::trusted_client`), else `peer`.
    pub fn check(
        &self,
        peer: IpAddr,
        trusted_hops: u32,
        headers: &HeaderMap,
    ) -> Result<(), Refused> {
        let now = gcra::clock();
        match &self.buckets {
            Buckets::Route { tat, demand } => match &self.shares {
                None => gcra::admit(tat, now, self.rate),
                Some(shares) => {
                    demand.fetch_add(1, Ordering::Relaxed);
                    let rate = self.rate.share(shares.load().of(ROUTE_KEY));
                    gcra::admit(tat, now, rate)
                }
            },
            Buckets::Keys(table) => {
                let key = self.fingerprint(peer, trusted_hops, headers);
                let bucket = table.bucket(key, now);
                match &self.shares {
                    None => gcra::admit(bucket.tat, now, self.rate),
                    Some(shares) => {
                        let rate = self.rate.share(shares.load().of(key.max(1)));
                        gcra::admit(bucket.tat, now, rate)
                    }
                }
            }
        }
    }

    /// The key's fingerprint: the client IP, or the header's value (a request without the
    /// header is keyed by an empty value that no present header hashes to: requests without
    /// it share one bucket).
    fn fingerprint(&self, peer: IpAddr, trusted_hops: u32, headers: &HeaderMap) -> u64 {
        match &self.config.key {
            RateLimitKey::ClientIp => self.hasher.hash_one(
                crate::wire::headers::trusted_client(headers, trusted_hops).unwrap_or(peer),
            ),
            RateLimitKey::Header(name) => {
                let mut h = self.hasher.build_hasher();
                match headers.get(name) {
                    Some(value) => {
                        1u8.hash(&mut h);
                        value.as_bytes().hash(&mut h);
                    }
                    None => 0u8.hash(&mut h),
                }
                std::hash::Hasher::finish(&h)
            }
            RateLimitKey::Route => ROUTE_KEY,
        }
    }

    /// Counts one refused request in `switchyard_rate_limited_requests_total{route}`.
    pub fn count_refused(&self) {
        self.limited
            .get_or_init(|| metrics::counter!(RATE_LIMITED_TOTAL, "route" => self.route.clone()))
            .increment(1);
    }

    /// The precomputed 429 fields.
    pub fn answer(&self) -> &answer::Fields {
        &self.answer
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The route's `rate_limit`.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Requests per second the limit allows (over the whole mesh for `scope = "mesh"`).
    pub fn per_second(&self) -> f64 {
        self.config.requests as f64 / self.config.per.as_secs_f64()
    }

    /// Takes the demand (requests, admitted or not) counted since the last call, by key
    /// fingerprint: the mesh task, once per period. Empty for a local route.
    pub fn take_demand(&self) -> Vec<(u64, u32)> {
        match &self.buckets {
            Buckets::Route { demand, .. } => match demand.swap(0, Ordering::Relaxed) {
                0 => Vec::new(),
                n => vec![(ROUTE_KEY, n)],
            },
            Buckets::Keys(table) => table.take_demand(),
        }
    }

    /// Replaces this member's shares (the mesh task); ignored on a local route.
    pub fn publish_shares(&self, shares: Shares) {
        if let Some(slot) = &self.shares {
            slot.store(Arc::new(shares));
        }
    }

    /// This member's current shares (`None` on a local route).
    pub fn shares(&self) -> Option<Arc<Shares>> {
        self.shares.as_ref().map(ArcSwap::load_full)
    }

    /// Slots of the key table (`None` for `key = "route"`): the bound on keys tracked.
    pub fn key_capacity(&self) -> Option<usize> {
        match &self.buckets {
            Buckets::Keys(table) => Some(table.capacity()),
            Buckets::Route { .. } => None,
        }
    }

    /// Bytes the limiter's buckets hold; fixed when it is made.
    pub fn memory_bytes(&self) -> usize {
        match &self.buckets {
            Buckets::Keys(table) => table.memory_bytes(),
            Buckets::Route { .. } => std::mem::size_of::<AtomicU64>(),
        }
    }

    /// Keys whose bucket is not full right now.
    pub fn active_keys(&self) -> usize {
        match &self.buckets {
            Buckets::Keys(table) => table.active(gcra::clock()),
            Buckets::Route { tat, .. } => usize::from(tat.load(Ordering::Relaxed) > gcra::clock()),
        }
    }
}
