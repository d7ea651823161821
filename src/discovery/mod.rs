//! Service discovery: where a cluster's endpoints come from when the config does not list them.
//!
//! Task model (docs/architecture.md, "State model": control logic is a task that owns its state
//! and publishes results): every cluster with a `discovery` source gets one provider task on
//! the control runtime. The task owns everything it has learned (the last good
//! set, the etcd revision, the file's last contents) and reports through its [`Sink`], which
//! publishes a [`DiscoveredSet`] with [`Shared::publish_endpoints`]: that rebuilds the cluster's
//! endpoint list and balancer table off the request path and stores one new snapshot. The build
//! runs on the blocking pool, never on the control runtime's one thread: it takes the lock that a
//! reload holds for its whole build, and waiting for it there would stall the admin API, health
//! probes and mesh timers for as long as the reload lasts. A `maglev` cluster at scale is
//! published with an interim table, and its full table follows from a build off the publishing
//! path (the sink's completion worker; docs/discovery-scale.md, "Maglev"). A request
//! never waits for discovery; a cluster whose source has not answered yet has no endpoints, so
//! requests get 503 with `retry-after`, exactly as for any empty cluster.
//!
//! Providers: [`file`](mod@file) (a watched JSON file), [`dns`] (A/AAAA or SRV, refreshed at the
//! record TTL), [`etcd`] (list, then watch a key prefix over etcd's v3 JSON gateway). Every
//! provider keeps its last good set when its source fails, counting the failure in
//! `switchyard_discovery_errors_total`. `mesh` sources are fed by the mesh member
//! (`crate::mesh::discovery`, one task for every mesh cluster, through the same [`Sink`]), so the
//! [`Supervisor`] starts no task for them.
//!
//! The [`Supervisor`] maps the config's sources to running tasks: started by `runtime::start`
//! and re-applied on every config publish, it starts tasks for new or changed sources and aborts
//! the ones whose source went away. Tasks hold only a `Weak` of the shared state, so a stopped
//! proxy is freed even if a task outlives it.

mod base64;
pub mod dns;
mod endpoints;
pub mod etcd;
pub mod etcd_api;
pub mod file;
pub mod register;
mod supervisor;

use std::fmt::Display;
use std::sync::{Arc, Weak};

use metrics::Counter;

pub use endpoints::{parse_endpoint, parse_endpoint_list};
pub use supervisor::{start, Supervisor};
// Published sets are part of the shared state every snapshot build reads.
pub use crate::state::{DiscoveredSet, DiscoveredSets};

use crate::config::{EndpointSource, StaticEndpoint};
use crate::state::Shared;

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::{
    record_endpoint_count, DISCOVERY_ENDPOINTS as ENDPOINTS,
    DISCOVERY_ERRORS_TOTAL as ERRORS_TOTAL, DISCOVERY_UPDATES_TOTAL as UPDATES_TOTAL,
};

/// The `source` label of metrics and of `/upstreams` for endpoints from `source`.
pub fn source_label(source: &EndpointSource) -> &'static str {
    match source {
        EndpointSource::Static(_) => "static",
        EndpointSource::Dns { .. } => "dns",
        EndpointSource::Srv { .. } => "srv",
        EndpointSource::File(_) => "file",
        EndpointSource::Etcd { .. } => "etcd",
        EndpointSource::Mesh(_) => "mesh",
    }
}

/// A provider's only way out: publishes sets for one cluster and counts updates and errors.
#[derive(Debug)]
pub struct Sink {
    shared: Weak<Shared>,
    cluster: String,
    source: EndpointSource,
    /// What was last published, to skip rebuilding a snapshot for an unchanged answer.
    last: Option<Arc<DiscoveredSet>>,
    updates: Counter,
    errors: Counter,
    /// Snapshots this sink has published (the `discovery update` log line carries it).
    publishes: u64,
    /// The full balancer builds that interim publishes left for later (see [`Completion`]).
    completion: Arc<Completion>,
}

/// A cluster's pending full balancer build: when a publish went live with a stand-in table
/// (`ClusterSnapshot::is_interim`, maglev at scale), the full table is built off the
/// publishing path by one worker on the blocking pool, so the provider goes on to its next
/// set at once. One worker per cluster at a time, and it always builds for the cluster's
/// current snapshot when it starts a build, so sets published meanwhile are skipped and only
/// the newest is built; a build overtaken by a newer set is carried over to it
/// (`Shared::complete_cluster`), and the worker goes on with that one.
#[derive(Debug)]
struct Completion {
    cluster: String,
    state: std::sync::Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Set by every interim publish (and by a carried-over build): the worker is to look at
    /// the cluster again.
    wake: bool,
    /// Whether a worker runs (it stops when it finds `wake` unset, and clears this, both
    /// under the lock, so a wake-up given meanwhile is never left without a worker).
    running: bool,
}

impl Completion {
    fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            state: std::sync::Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the worker, starting one when none runs. Needs a Tokio runtime (the caller, a
    /// provider task, runs on the control runtime).
    fn request(self: &Arc<Self>, shared: Weak<Shared>) {
        let mut pending = self.lock();
        pending.wake = true;
        if pending.running {
            return;
        }
        pending.running = true;
        drop(pending);
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // Clears `running` however the worker ends (a panicking build included), so the
            // next interim publish starts a new worker.
            struct Stop<'a>(&'a Completion);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.lock().running = false;
                }
            }
            let _stop = Stop(&this);
            loop {
                {
                    let mut pending = this.lock();
                    if !pending.wake {
                        return;
                    }
                    pending.wake = false;
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let snapshot = shared.snapshot();
                let Some(target) = snapshot.cluster(&this.cluster).filter(|c| c.is_interim())
                else {
                    continue;
                };
                let target = Arc::clone(target);
                drop(snapshot);
                if let crate::state::shared::Completed::Rebased { .. } =
                    shared.complete_cluster(&target)
                {
                    // The newest set got the finished table carried over: complete it next.
                    this.lock().wake = true;
                }
            }
        });
    }
}

impl Sink {
    /// A sink publishing `cluster`'s sets from `source` into `shared`.
    pub fn new(shared: Weak<Shared>, cluster: &str, source: EndpointSource) -> Self {
        let labels = [
            ("cluster", cluster.to_owned()),
            ("source", source_label(&source).to_owned()),
        ];
        Self {
            updates: metrics::counter!(UPDATES_TOTAL, &labels),
            errors: metrics::counter!(ERRORS_TOTAL, &labels),
            shared,
            cluster: cluster.to_owned(),
            source,
            last: None,
            publishes: 0,
            completion: Arc::new(Completion::new(cluster)),
        }
    }

    /// The cluster this sink feeds (for log lines).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Publishes `endpoints` as the cluster's new set (sorted and deduplicated by address here;
    /// the first of duplicates wins). An unchanged set publishes nothing. Returns `false` once
    /// the proxy is gone, so the provider can end. The snapshot is built on the blocking pool
    /// (see the module doc); this task waits for it, so its sets stay in order.
    pub async fn publish(&mut self, mut endpoints: Vec<StaticEndpoint>) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        // A stable sort: a list already in address order (the etcd provider's) is one pass.
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        if self.last.as_ref().is_some_and(|l| l.endpoints == endpoints) {
            return true;
        }
        tracing::info!(
            cluster = %self.cluster,
            source = source_label(&self.source),
            endpoints = endpoints.len(),
            "discovery update"
        );
        let set = Arc::new(DiscoveredSet {
            source: self.source.clone(),
            endpoints,
        });
        let (cluster, published) = (self.cluster.clone(), Arc::clone(&set));
        let built =
            tokio::task::spawn_blocking(move || shared.publish_endpoints(&cluster, published))
                .await;
        let snapshot = match built {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // A panicked build published nothing; the next answer of the source tries again.
                self.error(&format!("building the endpoint set failed: {error}"));
                return self.is_open();
            }
        };
        if snapshot
            .cluster(&self.cluster)
            .is_some_and(|c| c.is_interim())
        {
            self.completion.request(self.shared.clone());
        }
        self.updates.increment(1);
        self.publishes += 1;
        self.last = Some(set);
        true
    }

    /// How many snapshots this sink has published.
    pub fn publishes(&self) -> u64 {
        self.publishes
    }

    /// Records a failed lookup, read or watch: the last good set stays published.
    pub fn error(&self, error: &dyn Display) {
        tracing::warn!(
            cluster = %self.cluster,
            source = source_label(&self.source),
            %error,
            "discovery failed; keeping the last good endpoint set"
        );
        self.errors.increment(1);
    }

    /// Whether the proxy this sink publishes to still exists.
    pub fn is_open(&self) -> bool {
        self.shared.strong_count() > 0
    }
}

/// Exponential backoff between reconnects or retries: doubles from `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    current: std::time::Duration,
    initial: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    pub(crate) fn new(initial: std::time::Duration, max: std::time::Duration) -> Self {
        Self {
            current: initial,
            initial,
            max,
        }
    }

    /// The delay to wait now; the next one is twice as long (capped).
    pub(crate) fn next_delay(&mut self) -> std::time::Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// After a success: the next failure waits `initial` again.
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn config(file: &str) -> Config {
        let text = format!(
            "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\nlistener = \"public\"\ncluster = \"app\"\n\n\
             [clusters.app]\ndiscovery = {{ file = \"{file}\" }}\n"
        );
        crate::config::parse(&text, Path::new("test.toml")).expect("valid config")
    }

    fn endpoint(port: u16) -> StaticEndpoint {
        StaticEndpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            zone: None,
        }
    }

    fn ports(shared: &Shared) -> Vec<u16> {
        let snapshot = shared.snapshot();
        let cluster = snapshot.cluster("app").expect("cluster app");
        cluster
            .endpoints()
            .iter()
            .map(|e| e.address().port())
            .collect()
    }

    #[tokio::test]
    async fn published_sets_rebuild_the_cluster_keep_state_and_follow_reloads() {
        let shared = Arc::new(Shared::new(config("a.json")));
        assert!(ports(&shared).is_empty(), "discovery clusters start empty");
        let source = shared.snapshot().config().clusters["app"].endpoints.clone();
        let mut sink = Sink::new(Arc::downgrade(&shared), "app", source);

        assert!(
            sink.publish(vec![endpoint(2), endpoint(1), endpoint(2)])
                .await
        );
        assert_eq!(ports(&shared), [1, 2], "sorted, deduplicated");
        assert_eq!(shared.snapshot().version(), 1, "same config, same version");
        let kept = shared
            .registry()
            .get("app", endpoint(1).address)
            .expect("registered");
        let removed = shared
            .registry()
            .get("app", endpoint(2).address)
            .expect("registered");
        let in_flight = removed.start_request();

        assert!(sink.publish(vec![endpoint(1), endpoint(3)]).await);
        assert_eq!(ports(&shared), [1, 3]);
        let after = shared.registry().get("app", endpoint(1).address);
        assert!(after.is_some_and(|s| Arc::ptr_eq(&s, &kept)), "state kept");
        assert!(shared.registry().get("app", endpoint(2).address).is_none());
        drop(in_flight);
        assert_eq!(removed.in_flight(), 0, "the guard decrements the old state");

        // A reload with the same source keeps the discovered set.
        shared.publish(config("a.json"));
        assert_eq!(ports(&shared), [1, 3]);
        assert_eq!(shared.snapshot().version(), 2);
        // A reload to another source drops it, and the old source's late sets are ignored.
        shared.publish(config("b.json"));
        assert!(ports(&shared).is_empty());
        assert!(sink.publish(vec![endpoint(4)]).await);
        assert!(ports(&shared).is_empty());
        // Back to the first source: empty until its task publishes again.
        shared.publish(config("a.json"));
        assert!(ports(&shared).is_empty());

        drop(shared);
        assert!(!sink.publish(vec![endpoint(5)]).await, "the proxy is gone");
    }

    #[tokio::test]
    async fn an_interim_maglev_table_is_replaced_by_the_full_one_in_the_background() {
        let text = "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
                    [[routes]]\nlistener = \"public\"\ncluster = \"app\"\n\n\
                    [clusters.app]\nbalance = \"maglev\"\nhash_on = \"header:x-user\"\n\
                    discovery = { file = \"a.json\" }\n";
        let config = crate::config::parse(text, Path::new("test.toml")).expect("valid config");
        let shared = Arc::new(Shared::new(config));
        let source = shared.snapshot().config().clusters["app"].endpoints.clone();
        let mut sink = Sink::new(Arc::downgrade(&shared), "app", source);
        // 700 endpoints (the second table size), then three updates back to back.
        assert!(sink.publish((1000..1700).map(endpoint).collect()).await);
        for start in [1010, 1020, 1030] {
            assert!(sink.publish((start..1700).map(endpoint).collect()).await);
            assert_eq!(ports(&shared).first(), Some(&start), "live at once");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let done = loop {
            let snapshot = shared.snapshot();
            let cluster = snapshot.cluster("app").expect("cluster app");
            if !cluster.is_interim() || std::time::Instant::now() > deadline {
                break !cluster.is_interim();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(done, "the full table replaced the interim one");
        assert_eq!(ports(&shared).len(), 670);
        assert_eq!(
            sink.publishes(),
            4,
            "a completion is not a discovery update"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn labels_name_each_source() {
        let srv = EndpointSource::Srv {
            name: "_http._tcp.a".into(),
            refresh: Duration::from_secs(1),
        };
        assert_eq!(source_label(&srv), "srv");
        assert_eq!(source_label(&EndpointSource::File("a".into())), "file");
        assert_eq!(source_label(&EndpointSource::Static(Vec::new())), "static");
    }
}
