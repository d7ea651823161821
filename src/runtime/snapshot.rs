//! The immutable view of config + endpoints that a request is served from.
//!
//! Built off the request path ([`Snapshot::build`]) and published with one `ArcSwap` store in
//! [`Shared`]; a request loads it once and keeps that `Arc` to the end, so a reload never changes
//! the rules under a request in progress. Everything that must agree — routes, each cluster's
//! endpoint list and the balancer table indexing it — is in the same snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::endpoint::{EndpointRegistry, EndpointState};
use crate::admin::metrics::SnapshotMetrics;
use crate::balance::{self, Balancer};
use crate::config::{ClusterConfig, Config, EndpointSource, StaticEndpoint};
use crate::discovery::{DiscoveredSet, DiscoveredSets, Supervisor};
use crate::router::Router;

/// One published version of the proxy's rules.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    config: Arc<Config>,
    /// `Arc`: a discovery update rebuilds one cluster and shares the rest of the version.
    router: Arc<Router>,
    /// By name, looked up once per request (the route's pick). foldhash: cluster names come
    /// from the config, not from clients, so SipHash's flood resistance buys nothing here and
    /// cost about 150 instructions per lookup.
    clusters: foldhash::HashMap<String, Arc<ClusterSnapshot>>,
    listeners: Vec<ListenerSnapshot>,
    /// When this version was built (the admin API's `loaded_at`).
    loaded_at: SystemTime,
    /// Metric series per route × cluster and listener, so requests never format labels.
    metrics: Arc<SnapshotMetrics>,
    /// Per-route retry budgets and retry/hedge metric handles, by route index.
    resilience: Arc<crate::resilience::RouteTable>,
    /// The status page's per-route and per-cluster rings, handed on by name across reloads.
    stats: Arc<crate::admin::status::StatsTable>,
    /// The OTLP exporter `[tracing] otlp` asks for, kept across reloads that keep it.
    tracer: Option<Arc<crate::trace::Tracer>>,
    /// The response cache (`[cache]`): one per process, handed from snapshot to snapshot while
    /// `[cache]` stays the same (see `cache::Cache::follow`).
    cache: Option<Arc<crate::cache::Cache>>,
}

/// A cluster as of one snapshot: its config, its endpoints, and the balancer over them.
#[derive(Debug)]
pub struct ClusterSnapshot {
    config: ClusterConfig,
    /// Sorted by address: the canonical order every balancer table indexes.
    endpoints: Vec<Arc<EndpointState>>,
    balancer: Box<dyn Balancer>,
    /// The cluster's health state (limits, panic flag, health task), shared with every other
    /// snapshot of the cluster.
    health: Arc<crate::health::ClusterHealth>,
}

/// Per-listener data the request path needs, computed once.
#[derive(Debug, Clone)]
pub struct ListenerSnapshot {
    name: String,
    /// Position in `config.listeners`, which is what the router takes.
    index: usize,
    trusted_hops: u32,
    /// Plain, or the listener's live TLS config (shared across snapshots, see `tls::store`).
    tls: crate::tls::server::Termination,
}

impl Snapshot {
    /// Compiles `config` into a snapshot, taking endpoint state from `registry` (creating what is
    /// new). Clusters fed by discovery have no endpoints here (see [`Self::build_with`]).
    pub fn build(config: Arc<Config>, registry: &EndpointRegistry, version: u64) -> Self {
        Self::build_with(config, registry, &DiscoveredSets::default(), version)
    }

    /// [`Self::build`] taking each discovery cluster's endpoints from `discovered` (its last
    /// published set for the cluster's current source; none yet = no endpoints, so requests get
    /// 503 with `retry-after` until the provider's first answer). The one build path that both
    /// config reloads and discovery updates go through, so they always agree.
    pub fn build_with(
        config: Arc<Config>,
        registry: &EndpointRegistry,
        discovered: &DiscoveredSets,
        version: u64,
    ) -> Self {
        let router = Arc::new(Router::new(&config));
        let clusters = config
            .clusters
            .values()
            .map(|cluster| {
                let set = discovered.get(&cluster.name).map(|s| Arc::clone(s.value()));
                let snapshot = ClusterSnapshot::build(cluster, registry, set.as_deref());
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
                // Re-checks the certificate files: a reload picks up rotated certificates.
                tls: crate::tls::server::Termination::of(l),
            })
            .collect();
        let metrics = Arc::new(SnapshotMetrics::build(&config));
        let resilience = Arc::new(crate::resilience::RouteTable::build(&config, None));
        let stats = Arc::new(crate::admin::status::StatsTable::build(&config, None));
        // The exporter is a running proxy's (Shared::new and publish set it), not something
        // `switchyard explain` or a reload's first build should start a thread for.
        let tracer = None;
        // Like the tracer, the cache is made by `Shared` (new, or carried from the running
        // snapshot): one made here would be thrown away on every reload.
        let cache = None;
        Self {
            version,
            config,
            router,
            clusters,
            listeners,
            loaded_at: SystemTime::now(),
            metrics,
            resilience,
            stats,
            tracer,
            cache,
        }
    }

    /// The response cache, when `[cache]` is configured.
    pub fn cache(&self) -> Option<&Arc<crate::cache::Cache>> {
        self.cache.as_ref()
    }

    /// The status page's request rings (`GET /stats`).
    pub fn stats(&self) -> &crate::admin::status::StatsTable {
        &self.stats
    }

    /// The span exporter, when `[tracing] otlp` is set.
    pub fn tracer(&self) -> Option<&crate::trace::Tracer> {
        self.tracer.as_deref()
    }

    /// When this version was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The precomputed metric series of this version's routes and listeners.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.metrics
    }

    /// The retry/hedge state of route `index` (budget, metric handles).
    pub fn resilience(&self, index: usize) -> Option<&crate::resilience::RouteResilience> {
        self.resilience.get(index)
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
    fn build(
        config: &ClusterConfig,
        registry: &EndpointRegistry,
        discovered: Option<&DiscoveredSet>,
    ) -> Self {
        let list: &[StaticEndpoint] = match (&config.endpoints, discovered) {
            (EndpointSource::Static(list), _) => list,
            // A set published for another source (the cluster's discovery changed in a reload)
            // is stale: the new source's task has not answered yet.
            (source, Some(set)) if set.source == *source => &set.endpoints,
            _ => &[],
        };
        let mut endpoints: Vec<Arc<EndpointState>> = list
            .iter()
            .map(|e| registry.get_or_create(&config.name, e.address, e.weight))
            .collect();
        endpoints.sort_by_key(|e| e.address());
        endpoints.dedup_by_key(|e| e.address());
        let balancer = balance::build(config, &endpoints);
        Self {
            config: config.clone(),
            endpoints,
            balancer,
            health: registry.cluster_health(&config.name),
        }
    }

    /// The cluster's health state: limit counters, panic flag, the health task's inbox.
    pub fn health(&self) -> &Arc<crate::health::ClusterHealth> {
        &self.health
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

    /// Whether and how connections are TLS-terminated.
    pub fn tls(&self) -> &crate::tls::server::Termination {
        &self.tls
    }
}

/// What every worker and control task shares: the current snapshot and the endpoint registry.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    registry: EndpointRegistry,
    /// The last endpoint set each discovery task published, per cluster; every build reads it.
    discovered: DiscoveredSets,
    /// Serialises publishers (the reload task and discovery tasks) so that one's load-build-store
    /// never overwrites the other's newer snapshot. Control side only, never held across
    /// `.await`, never taken by the request path.
    publishing: Mutex<()>,
    /// The discovery tasks, attached once the control runtime runs; [`Self::publish`] hands it
    /// every new config so sources follow reloads.
    discovery: OnceLock<Supervisor>,
    /// The health tasks, attached once the control runtime runs; every publish (reload or
    /// discovery) hands them the new snapshot under `publishing`, so they follow at once and in
    /// publish order.
    health: OnceLock<crate::health::Supervisor>,
    /// Set once shutdown starts; readiness reports 503 from then on.
    draining: AtomicBool,
}

impl Shared {
    /// Builds version 1 from `config`.
    pub fn new(config: Config) -> Self {
        let registry = EndpointRegistry::new();
        let mut snapshot = Snapshot::build(Arc::new(config), &registry, 1);
        snapshot.tracer = crate::trace::Tracer::build(&snapshot.config.tracing, None);
        snapshot.cache = crate::cache::Cache::follow(None, snapshot.config.cache.as_ref());
        for cluster in snapshot.clusters() {
            crate::discovery::record_endpoint_count(cluster.name(), cluster.endpoints().len());
        }
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            discovered: DiscoveredSets::default(),
            publishing: Mutex::new(()),
            discovery: OnceLock::new(),
            health: OnceLock::new(),
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
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let version = self.snapshot.load().version() + 1;
        let built =
            Snapshot::build_with(Arc::new(config), &self.registry, &self.discovered, version);
        // Routes whose budget settings did not change keep their budget across the reload.
        let resilience = crate::resilience::RouteTable::build(
            &built.config,
            Some(&self.snapshot.load().resilience),
        );
        // Rings and the exporter carry over the same way (by name; by target).
        let previous = self.snapshot.load();
        let stats = crate::admin::status::StatsTable::build(&built.config, Some(&previous.stats));
        let tracer = crate::trace::Tracer::build(&built.config.tracing, previous.tracer.as_ref());
        // An unchanged `[cache]` keeps the running cache and its contents.
        let cache =
            crate::cache::Cache::follow(previous.cache.as_ref(), built.config.cache.as_ref());
        let next = Arc::new(Snapshot {
            resilience: Arc::new(resilience),
            stats: Arc::new(stats),
            tracer,
            cache,
            ..built
        });
        self.snapshot.store(Arc::clone(&next));
        for cluster in next.clusters() {
            crate::discovery::record_endpoint_count(cluster.name(), cluster.endpoints().len());
        }
        // Sets of sources no longer configured are stale from now on; a cluster that gets the
        // same source back later starts empty, as at start.
        self.discovered.retain(|name, set| {
            next.config
                .clusters
                .get(name)
                .is_some_and(|c| c.endpoints == set.source)
        });
        if let Some(discovery) = self.discovery.get() {
            discovery.apply(&next.config);
        }
        crate::admin::metrics::set_config_version(version);
        self.registry
            .retain(|cluster, address| next.has_endpoint(cluster, address));
        if let Some(health) = self.health.get() {
            health.apply(&next, &self.registry);
        }
        next
    }

    /// Publishes a discovery task's new endpoint set for `cluster`: rebuilds that cluster's
    /// endpoints and balancer table only, and stores a snapshot with the same config, version and
    /// everything else shared. Endpoints that stay keep their state; the state of removed ones is
    /// forgotten by the registry while requests still holding it finish undisturbed. A cluster
    /// gone from the config (or fed by another source now) ignores the set.
    pub fn publish_endpoints(&self, cluster: &str, set: Arc<DiscoveredSet>) -> Arc<Snapshot> {
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot.load_full();
        let Some(config) = current
            .config
            .clusters
            .get(cluster)
            .filter(|c| c.endpoints == set.source)
        else {
            return current;
        };
        self.discovered.insert(cluster.to_owned(), Arc::clone(&set));
        let rebuilt = ClusterSnapshot::build(config, &self.registry, Some(&set));
        let count = rebuilt.endpoints.len();
        let mut clusters = current.clusters.clone();
        clusters.insert(cluster.to_owned(), Arc::new(rebuilt));
        let next = Arc::new(Snapshot {
            version: current.version,
            config: Arc::clone(&current.config),
            router: Arc::clone(&current.router),
            clusters,
            listeners: current.listeners.clone(),
            loaded_at: current.loaded_at,
            metrics: Arc::clone(&current.metrics),
            resilience: Arc::clone(&current.resilience),
            stats: Arc::clone(&current.stats),
            tracer: current.tracer.clone(),
            cache: current.cache.clone(),
        });
        self.snapshot.store(Arc::clone(&next));
        crate::discovery::record_endpoint_count(cluster, count);
        self.registry
            .retain(|c, address| c != cluster || next.has_endpoint(c, address));
        if let Some(health) = self.health.get() {
            health.apply(&next, &self.registry);
        }
        next
    }

    /// Attaches the discovery supervisor (once, at start) and starts the current config's
    /// sources; from then on every [`Self::publish`] re-applies it. A second call is ignored.
    pub fn attach_discovery(&self, supervisor: Supervisor) {
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let supervisor = self.discovery.get_or_init(|| supervisor);
        supervisor.apply(self.snapshot.load().config());
    }

    /// Attaches the health supervisor (once, at start) and applies the current snapshot to it;
    /// from then on [`Self::publish`] and [`Self::publish_endpoints`] apply each new snapshot
    /// before they return. Under `publishing`, so a snapshot published meanwhile is not missed.
    /// A second call is ignored.
    pub fn attach_health(&self, supervisor: crate::health::Supervisor) {
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let supervisor = self.health.get_or_init(|| supervisor);
        supervisor.apply(&self.snapshot.load(), &self.registry);
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
