//! The immutable view of config + endpoints that a request is served from.
//!
//! Built off the request path ([`Snapshot::build`]) and published with one `ArcSwap` store in
//! [`Shared`]; a request loads it once and keeps that `Arc` to the end, so a reload never changes
//! the rules under a request in progress. Everything that must agree — routes, each cluster's
//! endpoint list and the balancer table indexing it — is in the same snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::endpoint::{EndpointRegistry, EndpointState};
use crate::admin::metrics::SnapshotMetrics;
use crate::balance::{self, Balancer};
use crate::config::{ClusterConfig, Config, EndpointSource};
use crate::router::Router;

/// One published version of the proxy's rules.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    config: Arc<Config>,
    router: Router,
    clusters: HashMap<String, Arc<ClusterSnapshot>>,
    listeners: Vec<ListenerSnapshot>,
    /// When this version was built (the admin API's `loaded_at`).
    loaded_at: SystemTime,
    /// Metric series per route × cluster and listener, so requests never format labels.
    metrics: SnapshotMetrics,
}

/// A cluster as of one snapshot: its config, its endpoints, and the balancer over them.
#[derive(Debug)]
pub struct ClusterSnapshot {
    config: ClusterConfig,
    /// Sorted by address: the canonical order every balancer table indexes.
    endpoints: Vec<Arc<EndpointState>>,
    balancer: Box<dyn Balancer>,
}

/// Per-listener data the request path needs, computed once.
#[derive(Debug, Clone)]
pub struct ListenerSnapshot {
    name: String,
    /// Position in `config.listeners`, which is what the router takes.
    index: usize,
    trusted_hops: u32,
}

impl Snapshot {
    /// Compiles `config` into a snapshot, taking endpoint state from `registry` (creating what is
    /// new). Clusters fed by discovery start with no endpoints until their provider reports.
    pub fn build(config: Arc<Config>, registry: &EndpointRegistry, version: u64) -> Self {
        let router = Router::new(&config);
        let clusters = config
            .clusters
            .values()
            .map(|cluster| {
                let snapshot = ClusterSnapshot::build(cluster, registry);
                (cluster.name.clone(), Arc::new(snapshot))
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, l)| ListenerSnapshot {
                name: l.name.clone(),
                index,
                trusted_hops: l.trusted_hops,
            })
            .collect();
        let metrics = SnapshotMetrics::build(&config);
        Self {
            version,
            config,
            router,
            clusters,
            listeners,
            loaded_at: SystemTime::now(),
            metrics,
        }
    }

    /// When this version was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The precomputed metric series of this version's routes and listeners.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.metrics
    }

    /// Increases by one on every publish; the admin API and metrics show it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The config this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The compiled routes.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterSnapshot>> {
        self.clusters.get(name)
    }

    /// Every cluster (unordered; sort by name for display).
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<ClusterSnapshot>> {
        self.clusters.values()
    }

    /// A listener by name. Linear: listeners are few, and a scan of a handful of short strings
    /// beats hashing.
    pub fn listener(&self, name: &str) -> Option<&ListenerSnapshot> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Whether `cluster`/`address` is an endpoint of this snapshot (the registry keeps only those).
    pub fn has_endpoint(&self, cluster: &str, address: SocketAddr) -> bool {
        self.clusters.get(cluster).is_some_and(|c| {
            c.endpoints
                .binary_search_by(|e| e.address().cmp(&address))
                .is_ok()
        })
    }
}

impl ClusterSnapshot {
    fn build(config: &ClusterConfig, registry: &EndpointRegistry) -> Self {
        let mut endpoints: Vec<Arc<EndpointState>> = match &config.endpoints {
            EndpointSource::Static(list) => list
                .iter()
                .map(|e| registry.get_or_create(&config.name, e.address, e.weight))
                .collect(),
            // Discovery providers arrive in a later issue; until then such a cluster is empty and
            // requests to it get 503, which `check` explains.
            _ => Vec::new(),
        };
        endpoints.sort_by_key(|e| e.address());
        endpoints.dedup_by_key(|e| e.address());
        let balancer = balance::build(config, &endpoints);
        Self {
            config: config.clone(),
            endpoints,
            balancer,
        }
    }

    /// The cluster's config.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Endpoints in canonical (address) order.
    pub fn endpoints(&self) -> &[Arc<EndpointState>] {
        &self.endpoints
    }

    /// The balancer over [`Self::endpoints`].
    pub fn balancer(&self) -> &dyn Balancer {
        self.balancer.as_ref()
    }
}

impl ListenerSnapshot {
    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its index in the config (the router's listener argument).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many client `x-forwarded-for` entries to keep.
    pub fn trusted_hops(&self) -> u32 {
        self.trusted_hops
    }
}

/// What every worker and control task shares: the current snapshot and the endpoint registry.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    registry: EndpointRegistry,
    /// Set once shutdown starts; readiness reports 503 from then on.
    draining: AtomicBool,
}

impl Shared {
    /// Builds version 1 from `config`.
    pub fn new(config: Config) -> Self {
        let registry = EndpointRegistry::new();
        let snapshot = Snapshot::build(Arc::new(config), &registry, 1);
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            draining: AtomicBool::new(false),
        }
    }

    /// The current snapshot. Lock-free; hold the `Arc` for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The endpoint registry.
    pub fn registry(&self) -> &EndpointRegistry {
        &self.registry
    }

    /// Builds the next version from `config`, publishes it, and forgets endpoint state no longer
    /// listed. Control-side only; callers serialise (one reload task).
    pub fn publish(&self, config: Config) -> Arc<Snapshot> {
        let version = self.snapshot.load().version() + 1;
        let next = Arc::new(Snapshot::build(Arc::new(config), &self.registry, version));
        self.snapshot.store(Arc::clone(&next));
        crate::admin::metrics::set_config_version(version);
        self.registry
            .retain(|cluster, address| next.has_endpoint(cluster, address));
        next
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks shutdown as begun.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(endpoints: &str) -> Config {
        let text = format!(
            r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"

[clusters.app]
endpoints = [{endpoints}]
"#
        );
        crate::config::parse(&text, Path::new("test.toml")).expect("valid config")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address literal")
    }

    #[test]
    fn endpoints_are_sorted_by_address() {
        let shared = Shared::new(config(
            r#""127.0.0.1:9003", "127.0.0.1:9001", "127.0.0.1:9002""#,
        ));
        let snapshot = shared.snapshot();
        let cluster = snapshot.cluster("app").expect("cluster app");
        let ports: Vec<u16> = cluster
            .endpoints()
            .iter()
            .map(|e| e.address().port())
            .collect();
        assert_eq!(ports, [9001, 9002, 9003]);
        assert_eq!(snapshot.version(), 1);
        assert_eq!(
            snapshot.listener("public").map(ListenerSnapshot::index),
            Some(0)
        );
        assert!(snapshot.has_endpoint("app", addr("127.0.0.1:9002")));
        assert!(!snapshot.has_endpoint("app", addr("127.0.0.1:9009")));
    }

    #[test]
    fn publish_keeps_state_of_surviving_endpoints_and_drops_the_rest() {
        let shared = Shared::new(config(r#""127.0.0.1:9001", "127.0.0.1:9002""#));
        let old = shared.snapshot();
        let survivor = shared
            .registry()
            .get("app", addr("127.0.0.1:9001"))
            .expect("registered");
        let guard = survivor.start_request();
        survivor.eject_until(1);

        let new = shared.publish(config(r#""127.0.0.1:9001", "127.0.0.1:9004""#));
        assert_eq!(new.version(), 2);
        assert_eq!(shared.snapshot().version(), 2);
        let after = shared
            .registry()
            .get("app", addr("127.0.0.1:9001"))
            .expect("still registered");
        assert!(Arc::ptr_eq(&survivor, &after));
        assert_eq!(after.in_flight(), 1);
        assert_eq!(after.ejections(), 1);
        assert!(shared
            .registry()
            .get("app", addr("127.0.0.1:9002"))
            .is_none());
        assert_eq!(shared.registry().len(), 2);
        // The old snapshot is untouched for requests still holding it.
        assert_eq!(old.cluster("app").map(|c| c.endpoints().len()), Some(2));
        drop(guard);
        assert_eq!(after.in_flight(), 0);
    }
}
