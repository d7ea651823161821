//! The shared response cache (RFC 9111), for routes with `cache = true` when `[cache]` is set.
//!
//! It sits on the request path (in `proxy`) between routing and the upstream exchange, which the
//! request path hands it as closures (the fetch, and the refetch for background revalidation), so
//! the cache names nothing above it. A request is looked up by its URL ([`key`]) and `Vary`
//! variant; a fresh stored response is served from its `Bytes` without touching the upstream;
//! otherwise the exchange is the fetch, and a storable response is stored as it streams to the
//! client ([`tee`]).
//!
//! - [`policy`]: the RFC 9111 / RFC 5861 / RFC 9213 rules, per section, with unit tests.
//! - [`store`]: size-bounded storage (moka: TinyLFU admission + LRU, weighed in bytes).
//! - [`coalesce`]: concurrent misses for one URL make one upstream request.
//! - [`revalidate`]: conditional requests, 304 freshening, background refresh
//!   (`stale-while-revalidate`).
//! - [`invalidate`], [`purge`]: unsafe methods (§4.4) and the admin/mesh purge.
//! - [`status`]: `Cache-Status` (RFC 9211) and the `cache_requests_total` series.
//!
//! One [`Cache`] per process, held by the snapshot: a reload with the same `[cache]` hands it
//! to the next snapshot unchanged, a changed `[cache]` builds a new, empty one (moka cannot be
//! resized in place, and a new size is rare enough that refilling is the simple answer).

mod answer;
pub mod coalesce;
pub mod invalidate;
pub mod key;
pub mod policy;
pub mod purge;
pub mod revalidate;
mod serve;
pub mod status;
pub mod store;
mod tee;

use std::sync::Arc;

use crate::config::CacheConfig;

pub use purge::Purge;
pub use serve::{BackgroundFetch, Fetched, Layer, Refetch};

/// The process's response cache.
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    store: store::Store,
    flights: Arc<coalesce::Flights>,
    counters: status::Counters,
}

/// Marks a request the cache sends itself (a background refresh), so that it goes straight to
/// the upstream instead of into the cache again.
#[derive(Debug, Clone, Copy)]
pub struct Refresh;

impl Cache {
    /// An empty cache sized by `config`.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            config: config.clone(),
            store: store::Store::new(config.max_bytes),
            flights: Arc::default(),
            counters: status::Counters::new(),
        }
    }

    /// The cache a new snapshot gets: `previous` when `[cache]` is unchanged (its contents
    /// survive the reload), a new one when it changed, none when `[cache]` is gone.
    pub fn follow(
        previous: Option<&Arc<Cache>>,
        config: Option<&CacheConfig>,
    ) -> Option<Arc<Cache>> {
        let config = config?;
        match previous {
            Some(cache) if cache.config == *config => Some(Arc::clone(cache)),
            _ => Some(Arc::new(Cache::new(config))),
        }
    }

    /// The `[cache]` settings it was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The storage (sizes, direct lookups).
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// Fetches in progress that other requests may wait on.
    pub fn flights(&self) -> &coalesce::Flights {
        &self.flights
    }
}
