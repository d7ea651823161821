//! The immutable view of config + endpoints that a request is served from.
//!
//! Built off the request path and published with one `ArcSwap` store in [`super::Shared`]; a
//! request loads it once and keeps that `Arc` to the end, so a reload never changes the rules
//! under a request in progress. Everything that must agree — routes, each cluster's endpoint
//! list and the balancer table indexing it — is in the same snapshot.
//!
//! A snapshot is two parts, and there is one way to make each:
//! - [`Rules`], everything compiled from one config (router, listeners, metric handles, budgets,
//!   rings, exporter, cache), made only by [`Rules::compile`];
//! - the clusters, each a [`ClusterSnapshot`] made only by `ClusterSnapshot::build` from the
//!   cluster's config and its current endpoint set, or, for a discovery update, by
//!   `ClusterSnapshot::build_after`, which makes the same from the cluster snapshot before and
//!   the new set, reusing what did not change (docs/discovery-scale.md).
//!
//! A reload compiles both ([`Snapshot::compile`]); a discovery update keeps the rules as they are
//! and replaces one cluster ([`Snapshot::with_cluster`]). Both end in the same two-field
//! constructor, so a field added to the snapshot is a compile error until both paths say where
//! it comes from, and nothing is filled in after construction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{DiscoveredSet, DiscoveredSets};
use crate::balance::locality::Zoned;
use crate::balance::{self, Balancer, PickContext};
use crate::config::{ClusterConfig, Config, EndpointSource, Locality, StaticEndpoint};
use crate::endpoint::{EndpointRegistry, EndpointState, InFlightGuard};
use crate::resilience::{RouteResilience, RouteTable};
use crate::router::Router;
use crate::telemetry::metrics::SnapshotMetrics;
use crate::telemetry::stats::StatsTable;

/// One published version of the proxy's rules.
#[derive(Debug)]
pub struct Snapshot {
    /// What the config compiles to; every discovery update of this version shares it.
    rules: Rules,
    /// By name, looked up once per request (the route's pick). foldhash: cluster names come
    /// from the config, not from clients, so SipHash's flood resistance buys nothing here and
    /// costs time on every request (compare the two with a microbenchmark of `get` on the
    /// config's cluster names before changing it).
    clusters: foldhash::HashMap<String, Arc<ClusterSnapshot>>,
    /// Outbound interception's address -> cluster table, over exactly these clusters'
    /// endpoints (so rebuilt whenever one of them changes).
    targets: super::TargetTable,
}

/// Everything a snapshot compiles from its config alone (and from what earlier versions hand
/// on), never from endpoint sets: a discovery update shares it unchanged, so what depends on a
/// cluster's endpoints belongs in [`ClusterSnapshot`] instead. Every field is cheap to clone (an
/// `Arc` or a number), which is all a discovery update pays for it.
#[derive(Debug, Clone)]
struct Rules {
    /// Increases by one per reload; discovery updates keep it.
    version: u64,
    /// When this version was compiled (the admin API's `loaded_at`).
    loaded_at: SystemTime,
    config: Arc<Config>,
    router: Arc<Router>,
    /// In config order; looked up by name once per connection.
    listeners: Arc<[ListenerSnapshot]>,
    /// Metric series per route × cluster and listener, so requests never format labels.
    metrics: Arc<SnapshotMetrics>,
    /// Per-route retry budgets and retry/hedge metric handles, by route index.
    resilience: Arc<RouteTable>,
    /// Per-route rate limiters (buckets, mesh shares), by route index; a route whose
    /// `rate_limit` did not change keeps its limiter across a reload.
    rate_limits: Arc<crate::ratelimit::RateLimits>,
    /// The status page's per-route and per-cluster rings, handed on by name across reloads.
    stats: Arc<StatsTable>,
    /// The OTLP exporter `[tracing] otlp` asks for, kept across reloads that keep it.
    tracer: Option<Arc<crate::trace::Tracer>>,
    /// The response cache (`[cache]`): one per process, handed from snapshot to snapshot while
    /// `[cache]` stays the same (see `cache::Cache::follow`).
    cache: Option<Arc<crate::cache::Cache>>,
    /// The tunnel configs of `[identity]` (shared across snapshots, see `tls::store`); `None`
    /// without `[identity]`, or when its files never loaded (logged).
    tunnel_tls: Option<Arc<crate::tls::tunnel::TunnelTls>>,
}

/// Where a snapshot stands in a process, which decides the parts that belong to a running
/// proxy rather than to the config: the exporter (a thread), the cache (its contents), and the
/// retry budgets and status rings that outlive a reload.
#[derive(Debug, Clone, Copy)]
pub(super) enum Lineage<'a> {
    /// No running proxy (`switchyard explain`, tests of the compiled rules): no exporter thread
    /// is started and no cache is made; budgets and rings start empty.
    Detached,
    /// A running proxy's first version: exporter and cache as configured, all fresh.
    First,
    /// The version after this one: budgets, rings, exporter and cache are taken over from it
    /// wherever their settings did not change.
    After(&'a Snapshot),
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
    health: Arc<crate::endpoint::ClusterHealth>,
    /// Each endpoint's zone (same order as `endpoints`), as its source gave it.
    zones: Vec<Option<Arc<str>>>,
    /// `locality = "prefer_local"` with `[runtime] zone` set: the endpoints split into the
    /// local and remote sets, each with its balancer; `None` otherwise (zone-blind).
    zoned: Option<Zoned>,
    /// For a discovery update: what changed from the cluster snapshot it was built after, so
    /// the health task holding that one follows the change without a pass over every endpoint.
    since: Option<Since>,
    /// Whether `balancer` is a stand-in ([`balance::Balancer::interim`]) that the full build
    /// for these same endpoints is to replace ([`Self::completed`]).
    interim: bool,
}

/// How a cluster snapshot differs from the one it was built after ([`ClusterSnapshot::build_after`]).
#[derive(Debug)]
struct Since {
    /// The address of the earlier cluster snapshot, only ever compared with the address of one
    /// a caller holds: the caller's `Arc` keeps its snapshot alive, and the earlier one was alive
    /// when this one was built after it, so equal addresses mean the same snapshot (two live
    /// values never share an address). Not a pointer to follow: nothing is read through it.
    base: usize,
    /// Indices (into this snapshot's endpoints) of the endpoints that joined.
    joined: Vec<u32>,
    /// Addresses of the endpoints that left.
    left: Vec<SocketAddr>,
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
    /// `Some` for a transparent (`outbound` / `inbound`) listener: its settings and series.
    intercepting: Option<Arc<Intercepting>>,
}

/// What an intercepting listener's connections are handled with, built once per snapshot.
#[derive(Debug)]
pub struct Intercepting {
    /// The listener's mode (never `Http`) with its settings.
    pub mode: crate::config::ListenerMode,
    /// Its metric series.
    pub series: crate::telemetry::intercept::ListenerSeries,
    /// Every listener address of the config: an outbound original destination among them is
    /// a loop (the proxy's own connection, or a client calling a listener through the
    /// redirect).
    pub own_addresses: Vec<SocketAddr>,
}

impl Snapshot {
    /// Compiles `config` on its own, for inspecting what a config does (`switchyard explain`,
    /// tests): endpoint state comes from `registry` (created where new), clusters fed by
    /// discovery have no endpoints, and nothing a running proxy would start (the OTLP exporter's
    /// thread, the response cache) is made.
    pub fn build(config: Arc<Config>, registry: &EndpointRegistry, version: u64) -> Self {
        Self::compile(
            config,
            registry,
            &DiscoveredSets::default(),
            version,
            Lineage::Detached,
        )
    }

    /// The full build, which both a proxy's start and every reload go through: the rules of
    /// `config`, and every cluster with endpoints from its config or, for a discovery cluster,
    /// from its last published set in `discovered` (none yet = no endpoints, so requests get
    /// 503 with `retry-after` until the provider's first answer).
    pub(super) fn compile(
        config: Arc<Config>,
        registry: &EndpointRegistry,
        discovered: &DiscoveredSets,
        version: u64,
        lineage: Lineage<'_>,
    ) -> Self {
        let clusters = config
            .clusters
            .values()
            .map(|cluster| {
                let set = discovered.get(&cluster.name).map(|s| Arc::clone(s.value()));
                let zone = config.runtime.zone.as_deref();
                let snapshot = ClusterSnapshot::build(cluster, zone, registry, set.as_deref());
                (cluster.name.clone(), Arc::new(snapshot))
            })
            .collect();
        Self::assemble(Rules::compile(config, version, lineage), clusters)
    }

    /// This version with `cluster` in place of the cluster of the same name (a discovery
    /// update): same rules, same version, every other cluster shared.
    pub(super) fn with_cluster(&self, cluster: ClusterSnapshot) -> Self {
        let mut clusters = self.clusters.clone();
        clusters.insert(cluster.name().to_owned(), Arc::new(cluster));
        Self::assemble(self.rules.clone(), clusters)
    }

    /// The one constructor: exhaustive, so a new part must be accounted for by both builds.
    fn assemble(rules: Rules, clusters: foldhash::HashMap<String, Arc<ClusterSnapshot>>) -> Self {
        let targets = super::TargetTable::build(&rules.config, clusters.values());
        Self {
            rules,
            clusters,
            targets,
        }
    }

    /// The outbound listener's address -> cluster table (empty without an outbound listener).
    pub fn targets(&self) -> &super::TargetTable {
        &self.targets
    }

    /// The response cache, when `[cache]` is configured (and the snapshot is a running proxy's).
    pub fn cache(&self) -> Option<&Arc<crate::cache::Cache>> {
        self.rules.cache.as_ref()
    }

    /// This sidecar's mTLS tunnel identity (`[identity]`), reloaded with the config.
    pub fn tunnel_tls(&self) -> Option<&Arc<crate::tls::tunnel::TunnelTls>> {
        self.rules.tunnel_tls.as_ref()
    }

    /// The status page's request rings (`GET /stats`).
    pub fn stats(&self) -> &StatsTable {
        &self.rules.stats
    }

    /// The span exporter, when `[tracing] otlp` is set (and the snapshot is a running proxy's).
    pub fn tracer(&self) -> Option<&crate::trace::Tracer> {
        self.rules.tracer.as_deref()
    }

    /// When this version was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.rules.loaded_at
    }

    /// The precomputed metric series of this version's routes and listeners.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.rules.metrics
    }

    /// The retry/hedge state of route `index` (budget, metric handles).
    pub fn resilience(&self, index: usize) -> Option<&RouteResilience> {
        self.rules.resilience.get(index)
    }

    /// The rate limiters of every route (`rate_limit`), by route index.
    pub fn rate_limits(&self) -> &crate::ratelimit::RateLimits {
        &self.rules.rate_limits
    }

    /// Increases by one on every reload; the admin API and metrics show it.
    pub fn version(&self) -> u64 {
        self.rules.version
    }

    /// The config this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.rules.config
    }

    /// The compiled routes.
    pub fn router(&self) -> &Router {
        &self.rules.router
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
        self.rules.listeners.iter().find(|l| l.name == name)
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

impl Rules {
    /// The only place rules are made. What carries over from an earlier version is decided
    /// here, from `lineage`, so a part is never made one way and then replaced.
    fn compile(config: Arc<Config>, version: u64, lineage: Lineage<'_>) -> Self {
        let previous = match lineage {
            Lineage::After(previous) => Some(&previous.rules),
            Lineage::Detached | Lineage::First => None,
        };
        let (tracer, cache) = match lineage {
            Lineage::Detached => (None, None),
            Lineage::First | Lineage::After(_) => (
                crate::trace::Tracer::build(
                    &config.tracing,
                    previous.and_then(|p| p.tracer.as_ref()),
                ),
                crate::cache::Cache::follow(
                    previous.and_then(|p| p.cache.as_ref()),
                    config.cache.as_ref(),
                ),
            ),
        };
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
                intercepting: intercepting(&config, l),
            })
            .collect();
        // Like listener TLS: re-checks the files (a reload picks up rotated certificates); a
        // start or reload with files that do not load was refused before (`tls::store::preload`),
        // so a failure here is a detached build's, or files broken since.
        let tunnel_tls = config.identity.as_ref().and_then(|spec| {
            crate::tls::store::tunnel(spec)
                .map_err(|error| {
                    tracing::error!(%error, "[identity] does not load; no mTLS tunnels");
                })
                .ok()
        });
        Self {
            version,
            loaded_at: SystemTime::now(),
            router: Arc::new(Router::new(&config)),
            listeners,
            metrics: Arc::new(SnapshotMetrics::build(&config)),
            // Routes whose budget settings did not change keep their budget across the reload.
            resilience: Arc::new(RouteTable::build(&config, previous.map(|p| &*p.resilience))),
            // Buckets and mesh shares carry over for routes whose `rate_limit` is unchanged.
            rate_limits: Arc::new(crate::ratelimit::RateLimits::build(
                &config,
                previous.map(|p| &*p.rate_limits),
            )),
            // Rings carry over by route and cluster name.
            stats: Arc::new(StatsTable::build(&config, previous.map(|p| &*p.stats))),
            tracer,
            cache,
            tunnel_tls,
            config,
        }
    }
}

/// The intercepting part of listener `l`'s snapshot (`None` for an `http` listener).
fn intercepting(config: &Config, l: &crate::config::ListenerConfig) -> Option<Arc<Intercepting>> {
    use crate::config::ListenerMode;
    use crate::telemetry::intercept::{Direction, ListenerSeries};
    let direction = match &l.mode {
        ListenerMode::Http => return None,
        ListenerMode::Outbound(_) => Direction::Outbound,
        ListenerMode::Inbound(_) => Direction::Inbound,
    };
    let mut own_addresses: Vec<SocketAddr> = config.listeners.iter().map(|l| l.listen).collect();
    own_addresses.push(config.admin.listen);
    if let Some(mesh) = &config.mesh {
        own_addresses.push(mesh.listen);
    }
    Some(Arc::new(Intercepting {
        mode: l.mode.clone(),
        series: ListenerSeries::new(&l.name, direction),
        own_addresses,
    }))
}

impl ClusterSnapshot {
    /// The only place a cluster's part of a snapshot is made, by a reload and a discovery update
    /// alike: `discovered` is the cluster's last published set, if any; `local_zone` is
    /// `[runtime] zone`.
    pub(super) fn build(
        config: &ClusterConfig,
        local_zone: Option<&str>,
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
        let mut listed: Vec<(Arc<EndpointState>, Option<Arc<str>>)> = list
            .iter()
            .map(|e| {
                let state = registry.get_or_create(&config.name, e.address, e.weight);
                (state, e.zone.as_deref().map(Arc::from))
            })
            .collect();
        listed.sort_by_key(|(e, _)| e.address());
        listed.dedup_by_key(|(e, _)| e.address());
        let (endpoints, zones): (Vec<_>, Vec<_>) = listed.into_iter().unzip();
        let balancer = balance::build(config, &endpoints);
        // The split is made whenever the cluster asks for it and the proxy has a zone, even if
        // one side is empty, so its metrics and `/upstreams` say where picks go; the strings
        // are compared here once, never per request.
        let zoned = match (config.locality, local_zone) {
            (Locality::PreferLocal, Some(own)) => Some(Zoned::build(config, &endpoints, |i| {
                zones.get(i).and_then(Option::as_deref) == Some(own)
            })),
            _ => None,
        };
        Self {
            config: config.clone(),
            endpoints,
            balancer,
            health: registry.cluster_health(&config.name),
            zones,
            zoned,
            since: None,
            interim: false,
        }
    }

    /// The cluster after a discovery update: `set` (sorted by address, addresses unique, as
    /// `discovery::Sink` publishes it) replaces the endpoints of `previous`, this cluster's
    /// part of the current snapshot, built from the same `config`. What did not change is
    /// reused rather than looked up or rebuilt: one merge walk over the two address-ordered
    /// lists keeps every surviving endpoint's state `Arc` and zone (no registry lookup: the
    /// registry holds exactly the current snapshot's states), asks the registry only for the
    /// endpoints that joined, and hands the balancer the [`balance::Diff`] so tables that can
    /// be derived are ([`balance::build_after`]). Returns the addresses that left, for the
    /// registry to forget. A set that is not in canonical order takes [`Self::build`]'s path,
    /// which sorts.
    pub(super) fn build_after(
        config: &ClusterConfig,
        local_zone: Option<&str>,
        registry: &EndpointRegistry,
        set: &DiscoveredSet,
        previous: &ClusterSnapshot,
    ) -> (Self, Vec<SocketAddr>) {
        let list = &set.endpoints;
        let sorted = list.windows(2).all(|w| w[0].address < w[1].address);
        if !sorted || set.source != config.endpoints {
            let built = Self::build(config, local_zone, registry, Some(set));
            let removed = previous
                .endpoints
                .iter()
                .map(|e| e.address())
                .filter(|&a| built.index_of(a).is_none())
                .collect();
            return (built, removed);
        }
        let old = &previous.endpoints;
        let mut diff = balance::Diff {
            old_to_new: vec![balance::GONE; old.len()],
            changed: Vec::new(),
        };
        let mut removed = Vec::new();
        let mut joined = Vec::new();
        let mut endpoints = Vec::with_capacity(list.len());
        let mut zones = Vec::with_capacity(list.len());
        let mut j = 0;
        for (i, e) in list.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(balance::GONE);
            while let Some(gone) = old.get(j).filter(|o| o.address() < e.address) {
                removed.push(gone.address());
                j += 1;
            }
            let zone = e.zone.as_deref();
            match old.get(j).filter(|o| o.address() == e.address) {
                Some(kept) => {
                    if kept.weight() != e.weight {
                        kept.set_weight(e.weight);
                        diff.changed.push(index);
                    }
                    if let Some(slot) = diff.old_to_new.get_mut(j) {
                        *slot = index;
                    }
                    endpoints.push(Arc::clone(kept));
                    let before = previous.zones.get(j).cloned().flatten();
                    zones.push(match before {
                        Some(same) if Some(&*same) == zone => Some(same),
                        _ => zone.map(Arc::from),
                    });
                    j += 1;
                }
                None => {
                    endpoints.push(registry.get_or_create(&config.name, e.address, e.weight));
                    zones.push(zone.map(Arc::from));
                    diff.changed.push(index);
                    joined.push(index);
                }
            }
        }
        removed.extend(old.iter().skip(j).map(|e| e.address()));
        // A stand-in table when the full one is slow to build (maglev at scale): the update
        // goes live now, and the full build follows off this path (`Shared::complete_cluster`),
        // so the table that stays is still a function of the endpoint set alone. Not with a
        // zone split, whose own balancers are built here in full anyway.
        let zone_split = matches!(
            (config.locality, local_zone),
            (Locality::PreferLocal, Some(_))
        );
        let interim = match zone_split {
            true => None,
            false => balance::interim_after(config, &endpoints, previous.balancer(), &diff),
        };
        let is_interim = interim.is_some();
        let balancer = interim.unwrap_or_else(|| {
            balance::build_after(config, &endpoints, previous.balancer(), &diff)
        });
        let zoned = match (config.locality, local_zone) {
            (Locality::PreferLocal, Some(own)) => Some(Zoned::build(config, &endpoints, |i| {
                zones.get(i).and_then(Option::as_deref) == Some(own)
            })),
            _ => None,
        };
        let built = Self {
            config: config.clone(),
            endpoints,
            balancer,
            health: Arc::clone(&previous.health),
            zones,
            zoned,
            since: Some(Since {
                base: std::ptr::from_ref(previous) as usize,
                joined,
                left: removed.clone(),
            }),
            interim: is_interim,
        };
        (built, removed)
    }

    /// `current` (an interim cluster snapshot) with a new stand-in balancer derived from
    /// `full`, a full build for an earlier set of the same cluster that `current` superseded
    /// while it was being built: the full table's slots carried over to `current`'s endpoints
    /// in one pass, as [`Self::build_after`] does from any previous table. Without it, under
    /// changes that come faster than a full build, every build would be superseded and the
    /// published table would stay derived from interim tables, with joined endpoints holding
    /// no slots, for as long as the changes go on; with it, the table is never more than one
    /// build behind. Still interim: `current`'s own full build follows. `None` when either is
    /// not of the kind (not interim, a zone split, another algorithm or size).
    pub(crate) fn rebased(full: &Self, current: &Arc<Self>) -> Option<Self> {
        if !current.interim || current.zoned.is_some() || full.zoned.is_some() {
            return None;
        }
        if full.balancer.name() != current.balancer.name() {
            return None;
        }
        // Old (full's) index -> new (current's) index, by address: both lists are in order.
        let mut diff = balance::Diff {
            old_to_new: vec![balance::GONE; full.endpoints.len()],
            changed: Vec::new(),
        };
        let mut j = 0;
        for (i, e) in current.endpoints.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(balance::GONE);
            while full
                .endpoints
                .get(j)
                .is_some_and(|o| o.address() < e.address())
            {
                j += 1;
            }
            match full.endpoints.get(j).filter(|o| o.address() == e.address()) {
                Some(_) => {
                    if let Some(slot) = diff.old_to_new.get_mut(j) {
                        *slot = index;
                    }
                    j += 1;
                }
                None => diff.changed.push(index),
            }
        }
        let balancer =
            balance::interim_after(&current.config, &current.endpoints, full.balancer(), &diff)?;
        Some(Self {
            config: current.config.clone(),
            endpoints: current.endpoints.clone(),
            balancer,
            health: Arc::clone(&current.health),
            zones: current.zones.clone(),
            zoned: None,
            since: Some(Since {
                base: Arc::as_ptr(current) as usize,
                joined: Vec::new(),
                left: Vec::new(),
            }),
            interim: true,
        })
    }

    /// Whether this cluster's balancer is a stand-in waiting for its full build
    /// ([`Self::completed`]).
    pub fn is_interim(&self) -> bool {
        self.interim
    }

    /// The same cluster with the balancer built from scratch over the same endpoints (the full
    /// build an interim snapshot left for later: the expensive part, made without the publish
    /// lock), or `None` when `this` is not interim. The result differs from `this` in the
    /// balancer alone: same endpoints, states, zones and health, and no endpoint joined or
    /// left since `this`, which is what the health task is told.
    pub(crate) fn completed(this: &Arc<Self>) -> Option<Self> {
        if !this.interim || this.zoned.is_some() {
            return None;
        }
        Some(Self {
            config: this.config.clone(),
            endpoints: this.endpoints.clone(),
            balancer: balance::build(&this.config, &this.endpoints),
            health: Arc::clone(&this.health),
            zones: this.zones.clone(),
            zoned: None,
            since: Some(Since {
                base: Arc::as_ptr(this) as usize,
                joined: Vec::new(),
                left: Vec::new(),
            }),
            interim: false,
        })
    }

    /// When this snapshot was built after `earlier` by a discovery update: the endpoints that
    /// joined (indices into [`Self::endpoints`]) and the addresses that left. `None` for any
    /// other pair (a full build, or `earlier` not the one this was built after, as when a
    /// follower skipped versions): the caller then compares the whole lists.
    pub fn changes_since(&self, earlier: &Arc<ClusterSnapshot>) -> Option<(&[u32], &[SocketAddr])> {
        let since = self.since.as_ref()?;
        (Arc::as_ptr(earlier) as usize == since.base)
            .then_some((since.joined.as_slice(), since.left.as_slice()))
    }

    /// The index of the endpoint at `address`, if listed (binary search: canonical order).
    pub fn index_of(&self, address: SocketAddr) -> Option<usize> {
        self.endpoints
            .binary_search_by(|e| e.address().cmp(&address))
            .ok()
    }

    /// The request path's pick over this cluster (`balance::choose`, or the zone choice first
    /// with `locality = "prefer_local"`): the first usable candidate with its in-flight guard.
    pub fn choose(
        &self,
        ctx: &PickContext<'_>,
        usable: impl FnMut(usize) -> bool,
    ) -> Option<(usize, InFlightGuard)> {
        match &self.zoned {
            None => balance::choose(self.balancer.as_ref(), ctx, usable),
            Some(zoned) => zoned.choose(ctx, self.health.local_share(), usable),
        }
    }

    /// The zone split, when the cluster prefers the local zone and the proxy has one.
    pub fn zoned(&self) -> Option<&Zoned> {
        self.zoned.as_ref()
    }

    /// The zone of endpoint `index` (`None`: none given, or no such endpoint).
    pub fn zone(&self, index: usize) -> Option<&str> {
        self.zones.get(index).and_then(Option::as_deref)
    }

    /// The cluster's health state: limit counters, panic flag, the health task's inbox.
    pub fn health(&self) -> &Arc<crate::endpoint::ClusterHealth> {
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

    /// The transparent settings of an `outbound` / `inbound` listener; `None` for `http`.
    pub fn intercepting(&self) -> Option<&Arc<Intercepting>> {
        self.intercepting.as_ref()
    }
}

#[cfg(test)]
mod tests;
