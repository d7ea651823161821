//! [`Shared`]: what every worker and control task shares — the published snapshot, the
//! endpoint registry and the endpoint sets discovery published — and the two ways a new
//! snapshot is published (a reload, a discovery update).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;

use super::snapshot::{ClusterSnapshot, Lineage};
use super::{DiscoveredSet, DiscoveredSets, Follower, MeshedPeers, Snapshot, Tunnels};
use crate::config::Config;
use crate::endpoint::EndpointRegistry;

/// What [`Shared::complete_cluster`] did with an interim cluster's full build.
#[derive(Debug)]
pub enum Completed {
    /// The full table is live.
    Published,
    /// Nothing published: the cluster was replaced (a reload, a full build) or is gone.
    Superseded,
    /// A newer interim set (`replaced`) had been published meanwhile: the full table was
    /// carried over to it and `published` (still interim) stored in its place. Whoever
    /// waits to complete `replaced` is to complete `published` instead.
    Rebased {
        /// The interim snapshot the rebase replaced.
        replaced: Arc<ClusterSnapshot>,
        /// The rebased interim snapshot now live.
        published: Arc<ClusterSnapshot>,
    },
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
    discovery: OnceLock<Box<dyn Follower>>,
    /// The health tasks, attached once the control runtime runs; every publish (reload or
    /// discovery) hands them the new snapshot under `publishing`, so they follow at once and in
    /// publish order.
    health: OnceLock<Box<dyn Follower>>,
    /// Set once shutdown starts; readiness reports 503 from then on.
    draining: AtomicBool,
    /// The meshed table (the mesh member publishes it) and a copy of the current snapshot's
    /// tunnel TLS, which the workers' pools read per new connection, and whose generation they
    /// check per checkout (see `upstream::dial`).
    tunnels: Arc<Tunnels>,
    /// Intercepted connections by direction, protocol, target and identity (`/upstreams`).
    intercepted: crate::telemetry::intercept::InterceptTallies,
}

impl Shared {
    /// Builds version 1 from `config`: a running proxy's first snapshot, with its exporter and
    /// cache when configured.
    pub fn new(config: Config) -> Self {
        let registry = EndpointRegistry::new();
        let discovered = DiscoveredSets::default();
        let snapshot =
            Snapshot::compile(Arc::new(config), &registry, &discovered, 1, Lineage::First);
        for cluster in snapshot.clusters() {
            crate::telemetry::metrics::record_endpoint_count(
                cluster.name(),
                cluster.endpoints().len(),
            );
        }
        let tunnels = Arc::new(Tunnels::default());
        tunnels.set_tls(snapshot.tunnel_tls().cloned());
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            discovered,
            publishing: Mutex::new(()),
            discovery: OnceLock::new(),
            health: OnceLock::new(),
            draining: AtomicBool::new(false),
            tunnels,
            intercepted: Default::default(),
        }
    }

    /// The tallies of intercepted connections (transparent listeners), for the admin API.
    pub fn intercepted(&self) -> &crate::telemetry::intercept::InterceptTallies {
        &self.intercepted
    }

    /// The workloads reachable through the mTLS tunnel, as the mesh last published them.
    /// Lock-free; load it once per connection.
    pub fn meshed(&self) -> Arc<MeshedPeers> {
        self.tunnels.meshed()
    }

    /// Replaces the meshed table: the mesh member task, whenever records or liveness change.
    pub fn publish_meshed(&self, peers: MeshedPeers) {
        self.tunnels.publish_meshed(peers);
    }

    /// The meshed table and tunnel TLS together, for each worker's upstream pools.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
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
        let previous = self.snapshot.load_full();
        let version = previous.version() + 1;
        let next = Arc::new(Snapshot::compile(
            Arc::new(config),
            &self.registry,
            &self.discovered,
            version,
            Lineage::After(&previous),
        ));
        self.snapshot.store(Arc::clone(&next));
        // Under the publish lock, right after the snapshot: the pools' copy follows it.
        self.tunnels.set_tls(next.tunnel_tls().cloned());
        for cluster in next.clusters() {
            crate::telemetry::metrics::record_endpoint_count(
                cluster.name(),
                cluster.endpoints().len(),
            );
        }
        // Sets of sources no longer configured are stale from now on; a cluster that gets the
        // same source back later starts empty, as at start.
        self.discovered.retain(|name, set| {
            next.config()
                .clusters
                .get(name)
                .is_some_and(|c| c.endpoints == set.source)
        });
        if let Some(discovery) = self.discovery.get() {
            discovery.follow(&next, &self.registry);
        }
        crate::telemetry::metrics::set_config_version(version);
        self.registry
            .retain(|cluster, address| next.has_endpoint(cluster, address));
        if let Some(health) = self.health.get() {
            health.follow(&next, &self.registry);
        }
        next
    }

    /// Publishes a discovery task's new endpoint set for `cluster`: rebuilds that cluster's
    /// endpoints and balancer table only, and stores a snapshot with the same config, version and
    /// everything else shared. Endpoints that stay keep their state; the state of removed ones is
    /// forgotten by the registry while requests still holding it finish undisturbed. A cluster
    /// gone from the config (or fed by another source now) ignores the set. A `maglev` cluster
    /// at scale comes back with an interim table ([`ClusterSnapshot::is_interim`]): the caller
    /// then has [`Self::complete_cluster`] run for it (`discovery::Sink` does).
    pub fn publish_endpoints(&self, cluster: &str, set: Arc<DiscoveredSet>) -> Arc<Snapshot> {
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot.load_full();
        let Some(config) = current
            .config()
            .clusters
            .get(cluster)
            .filter(|c| c.endpoints == set.source)
        else {
            return current;
        };
        self.discovered.insert(cluster.to_owned(), Arc::clone(&set));
        let zone = current.config().runtime.zone.as_deref();
        // The cluster's part of the current snapshot was built from this same config (a reload
        // rebuilds every cluster), so what it holds can be reused: see `build_after`.
        let (rebuilt, removed) = match current.cluster(cluster) {
            Some(previous) => {
                ClusterSnapshot::build_after(config, zone, &self.registry, &set, previous)
            }
            None => {
                let built = ClusterSnapshot::build(config, zone, &self.registry, Some(&set));
                (built, Vec::new())
            }
        };
        let count = rebuilt.endpoints().len();
        let next = Arc::new(current.with_cluster(rebuilt));
        self.snapshot.store(Arc::clone(&next));
        crate::telemetry::metrics::record_endpoint_count(cluster, count);
        // Only the endpoints that left: the registry holds exactly the snapshot's endpoints,
        // so nothing else of this cluster (or any other) can have become stale.
        self.registry.remove(cluster, &removed);
        if let Some(health) = self.health.get() {
            health.follow(&next, &self.registry);
        }
        next
    }

    /// Replaces `interim`, a cluster snapshot [`Self::publish_endpoints`] published with a
    /// stand-in balancer ([`ClusterSnapshot::is_interim`]), by the same cluster with its
    /// balancer built in full, if `interim` is still the cluster's current part. The build runs
    /// without the publish lock, so discovery updates and reloads are not held up by it; the
    /// check is made again under the lock before the store. When a newer interim set replaced
    /// `interim` during the build, the full table is carried over to it instead
    /// ([`ClusterSnapshot::rebased`]) and that is published, still interim: the caller then
    /// completes the newest set (see [`Completed::Rebased`]). Call it on the blocking pool.
    pub fn complete_cluster(&self, interim: &Arc<ClusterSnapshot>) -> Completed {
        let current = |snapshot: &Snapshot| {
            snapshot
                .cluster(interim.name())
                .is_some_and(|c| Arc::ptr_eq(c, interim))
        };
        // Superseded before the build started: build for the newest set only.
        if !current(&self.snapshot.load()) {
            return Completed::Superseded;
        }
        let Some(full) = ClusterSnapshot::completed(interim) else {
            return Completed::Superseded;
        };
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.snapshot.load_full();
        let (cluster, outcome) = if current(&now) {
            (full, None)
        } else {
            let Some(newer) = now.cluster(interim.name()) else {
                return Completed::Superseded;
            };
            let Some(rebased) = ClusterSnapshot::rebased(&full, newer) else {
                return Completed::Superseded;
            };
            (rebased, Some(Arc::clone(newer)))
        };
        let next = Arc::new(now.with_cluster(cluster));
        self.snapshot.store(Arc::clone(&next));
        if let Some(health) = self.health.get() {
            health.follow(&next, &self.registry);
        }
        match (outcome, next.cluster(interim.name())) {
            (Some(replaced), Some(published)) => Completed::Rebased {
                replaced,
                published: Arc::clone(published),
            },
            _ => Completed::Published,
        }
    }

    /// Attaches the discovery supervisor (once, at start) and starts the current config's
    /// sources; from then on every [`Self::publish`] re-applies it. A second call is ignored.
    pub fn attach_discovery(&self, supervisor: impl Follower + 'static) {
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let supervisor = self.discovery.get_or_init(|| Box::new(supervisor));
        supervisor.follow(&self.snapshot.load(), &self.registry);
    }

    /// Attaches the health supervisor (once, at start) and applies the current snapshot to it;
    /// from then on [`Self::publish`] and [`Self::publish_endpoints`] apply each new snapshot
    /// before they return. Under `publishing`, so a snapshot published meanwhile is not missed.
    /// A second call is ignored.
    pub fn attach_health(&self, supervisor: impl Follower + 'static) {
        let _serial = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let supervisor = self.health.get_or_init(|| Box::new(supervisor));
        supervisor.follow(&self.snapshot.load(), &self.registry);
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
    use std::net::SocketAddr;
    use std::path::Path;

    use super::*;
    use crate::config::{EndpointSource, StaticEndpoint};
    use crate::state::ListenerSnapshot;

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

    /// A maglev cluster at the second table size, fed by discovery: sets of `ports`.
    fn maglev_shared() -> (Shared, EndpointSource) {
        let text = "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\ncluster = \"app\"\n\n[clusters.app]\nbalance = \"maglev\"\nhash_on = \"header:x-user\"\ndiscovery = { file = \"app.json\" }\n";
        let shared = Shared::new(crate::config::parse(text, Path::new("t.toml")).expect("valid"));
        let source = shared.snapshot().config().clusters["app"].endpoints.clone();
        (shared, source)
    }

    fn set(source: &EndpointSource, ports: impl Iterator<Item = u16>) -> Arc<DiscoveredSet> {
        let mut endpoints: Vec<StaticEndpoint> = ports
            .map(|p| StaticEndpoint {
                address: SocketAddr::from(([10, 0, 0, 1], p)),
                weight: 1,
                zone: None,
            })
            .collect();
        endpoints.sort_by_key(|e| e.address);
        Arc::new(DiscoveredSet {
            source: source.clone(),
            endpoints,
        })
    }

    /// The first candidate's address for each of a few thousand keys.
    fn picks(cluster: &ClusterSnapshot, balancer: &dyn crate::balance::Balancer) -> Vec<String> {
        (0..3000u64)
            .map(|k| {
                let ctx = crate::balance::PickContext {
                    endpoints: cluster.endpoints(),
                    client: None,
                    random: 0,
                    hash: Some(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                };
                let first = balancer.candidates(&ctx).next().expect("a candidate");
                cluster.endpoints()[first].address().to_string()
            })
            .collect()
    }

    #[test]
    fn a_large_maglev_update_goes_live_at_once_and_its_full_table_follows() {
        let (shared, source) = maglev_shared();
        // 700 endpoints: above the smallest table, where maglev publishes an interim table.
        shared.publish_endpoints("app", set(&source, 1000..1700));
        let first = shared.snapshot().cluster("app").cloned().expect("app");
        assert!(
            !first.is_interim(),
            "a first set has no table to derive from"
        );

        // B: 50 leave, 10 join. Live at once, with a table naming none of the 50.
        shared.publish_endpoints("app", set(&source, (1050..1700).chain(2000..2010)));
        let b = shared.snapshot().cluster("app").cloned().expect("app");
        assert!(b.is_interim());
        assert_eq!(b.endpoints().len(), 660);
        for address in picks(&b, b.balancer()) {
            let port: u16 = address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            assert!(
                (1050..1700).contains(&port),
                "{address}: left, or joined without slots"
            );
        }
        // Keys whose endpoint stayed do not move in the interim.
        let kept = picks(&first, first.balancer())
            .iter()
            .zip(picks(&b, b.balancer()))
            .filter(|(before, _)| {
                let port: u16 = before
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                port >= 1050
            })
            .all(|(before, after)| *before == after);
        assert!(kept, "surviving endpoints keep their keys");

        // C arrives before B's full build: B's build is not published, C's is.
        shared.publish_endpoints("app", set(&source, (1060..1700).chain(2000..2020)));
        let c = shared.snapshot().cluster("app").cloned().expect("app");
        assert!(c.is_interim());
        assert!(
            matches!(shared.complete_cluster(&b), Completed::Superseded),
            "a build superseded before it started is not made"
        );
        assert!(Arc::ptr_eq(
            shared.snapshot().cluster("app").expect("app"),
            &c
        ));
        // Had B's build finished after C was published, B's full table would be carried over
        // to C: keys of endpoints still listed stay where the full table put them, and
        // nothing names an endpoint C does not list.
        let full_b = ClusterSnapshot::completed(&b).expect("b is interim");
        let full_b = Arc::new(full_b);
        let rebased = ClusterSnapshot::rebased(&full_b, &c).expect("c is interim");
        assert!(rebased.is_interim());
        for (before, after) in picks(&full_b, full_b.balancer())
            .iter()
            .zip(picks(&rebased, rebased.balancer()))
        {
            let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            let listed = |a: &str| c.endpoints().iter().any(|e| e.address().to_string() == a);
            assert!(listed(&after), "{after} is not in C");
            if listed(before) {
                assert_eq!(*before, after);
            } else {
                assert!(port(before).is_some_and(|p| p < 1060), "{before}");
            }
        }
        assert!(matches!(shared.complete_cluster(&c), Completed::Published));
        let done = shared.snapshot().cluster("app").cloned().expect("app");
        assert!(!done.is_interim());
        assert_eq!(done.endpoints().len(), c.endpoints().len());
        assert!(done
            .endpoints()
            .iter()
            .zip(c.endpoints())
            .all(|(x, y)| Arc::ptr_eq(x, y)));
        assert_eq!(done.changes_since(&c), Some((&[][..], &[][..])));
        // The final table is the from-scratch one: a function of the endpoint set alone.
        let scratch = crate::balance::build(done.config(), done.endpoints());
        assert_eq!(
            picks(&done, done.balancer()),
            picks(&done, scratch.as_ref())
        );
        assert!(matches!(shared.complete_cluster(&c), Completed::Superseded));
        assert!(matches!(
            shared.complete_cluster(&done),
            Completed::Superseded
        ));
    }

    #[test]
    fn a_discovery_update_keeps_the_version_and_a_reload_keeps_the_set() {
        let text = "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\ncluster = \"app\"\n\n[clusters.app]\ndiscovery = { file = \"app.json\" }\n";
        let parse = || crate::config::parse(text, Path::new("test.toml")).expect("valid config");
        let shared = Shared::new(parse());
        let source: EndpointSource = shared
            .snapshot()
            .config()
            .clusters
            .get("app")
            .map(|c| c.endpoints.clone())
            .expect("cluster app");
        assert_eq!(
            shared
                .snapshot()
                .cluster("app")
                .map(|c| c.endpoints().len()),
            Some(0)
        );
        let set = Arc::new(DiscoveredSet {
            source,
            endpoints: vec![StaticEndpoint {
                address: addr("127.0.0.1:9201"),
                weight: 1,
                zone: None,
            }],
        });
        let updated = shared.publish_endpoints("app", set);
        assert_eq!(updated.version(), 1);
        assert!(updated.has_endpoint("app", addr("127.0.0.1:9201")));
        // A reload of the same source builds the cluster from the published set.
        let reloaded = shared.publish(parse());
        assert_eq!(reloaded.version(), 2);
        assert!(reloaded.has_endpoint("app", addr("127.0.0.1:9201")));
    }
}
