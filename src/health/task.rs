//! The health task of one cluster: the single writer of its endpoints' health, ejection and
//! breaker state and of its panic flag (linkerd's style: a task owns the state and receives
//! outcomes over a channel, instead of a lock every request would take).
//!
//! Inputs: outcome reports from the request path (bounded mpsc, `try_send`), probe results,
//! timers (probe rounds, window ticks, ejection deadlines), and new cluster snapshots from the
//! supervisor (reload, discovery). It ends when the supervisor drops its snapshot sender (the
//! cluster is gone) or at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::checker::{self, Checker};
use super::ejection::Ejector;
use super::panic;
use crate::balance::locality::{self, Spill};
use crate::endpoint::{EndpointState, Report};
use crate::state::{ClusterSnapshot, Shared, Tunnels};
use crate::telemetry::metrics::CLUSTER_LOCAL_SHARE;

/// How many reports may wait for the task before the request path starts dropping them.
pub const REPORT_QUEUE: usize = 4096;

/// A long way off: the deadline of timers that are switched off.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// The task's owned state; built (and its first state published) before the task is spawned,
/// so `initial` verdicts and panic mode hold from the moment the cluster is served.
pub struct ClusterTask {
    cluster: Arc<ClusterSnapshot>,
    ejector: Ejector,
    checker: Option<Checker>,
    next_probe: Instant,
    /// The panic flag last published (`None` before the first), so the flag, its gauge and
    /// its log line change only when the verdict does.
    panic: Option<bool>,
    /// Handed to the checker: probes of meshed endpoints go through the tunnel.
    tunnels: Option<Arc<Tunnels>>,
    /// `locality = "prefer_local"`: the spill rule's state (kept across snapshots) and the
    /// share last published (`None` before the first), so the gauge moves only on a change.
    spill: Spill,
    local_share: Option<f64>,
}

impl ClusterTask {
    /// Owned state for `cluster`, with its initial state published. `tunnels`: the proxy's
    /// meshed table and tunnel identity (`Shared::tunnels`), so probes reach meshed endpoints
    /// the way requests do.
    pub fn new(cluster: Arc<ClusterSnapshot>, tunnels: Option<Arc<Tunnels>>) -> Self {
        let config = cluster.config();
        let mut task = Self {
            ejector: Ejector::new(config.outlier_detection.clone()),
            checker: None,
            next_probe: Instant::now(),
            panic: None,
            tunnels,
            spill: Spill::new(),
            local_share: None,
            cluster: Arc::clone(&cluster),
        };
        task.apply(cluster);
        task
    }

    fn endpoints(&self) -> &[Arc<EndpointState>] {
        self.cluster.endpoints()
    }

    /// Takes a new snapshot of the cluster (state of surviving endpoints is kept).
    fn apply(&mut self, cluster: Arc<ClusterSnapshot>) {
        // A discovery update of the snapshot this task holds: follow just what changed (same
        // config, so the checker's settings stand), not the whole list.
        if let Some((joined, left)) = cluster.changes_since(&self.cluster) {
            let endpoints = cluster.endpoints();
            let joined: Vec<Arc<EndpointState>> = joined
                .iter()
                .filter_map(|&i| endpoints.get(i as usize).cloned())
                .collect();
            self.ejector.change_endpoints(&joined, left);
            match &mut self.checker {
                Some(checker) => checker.change_endpoints(&joined, left),
                None => {
                    for e in &joined {
                        checker::publish_verdict(e, true, false);
                    }
                }
            }
            self.cluster = cluster;
            self.publish_panic();
            self.publish_locality(false);
            return;
        }
        self.cluster = cluster;
        let config = self.cluster.config();
        let endpoints = self.cluster.endpoints();
        self.ejector
            .set_endpoints(endpoints, config.outlier_detection.clone());
        match (&config.health_check, &mut self.checker) {
            (Some(hc), Some(checker)) => {
                checker.set_endpoints(endpoints, hc.clone(), config.protocol, config.tls.clone());
            }
            (Some(hc), None) => {
                let mut checker = Checker::new(
                    hc.clone(),
                    config.protocol,
                    config.tls.clone(),
                    self.tunnels.clone(),
                );
                checker.set_endpoints(endpoints, hc.clone(), config.protocol, config.tls.clone());
                // Every endpoint is fresh here and gets its first probe at once (`start_fresh`):
                // the first round is one interval after that, not immediately too, or two
                // back-to-back passes would meet `healthy_threshold = 2` within milliseconds.
                self.next_probe = Instant::now() + checker.next_delay();
                self.checker = Some(checker);
            }
            (None, _) => {
                // No active checks (any more): nothing can hold an endpoint unhealthy.
                self.checker = None;
                for e in endpoints {
                    checker::publish_verdict(e, true, false);
                }
            }
        }
        self.publish_panic();
        self.publish_locality(false);
    }

    /// Recomputes panic mode from the endpoints' verdicts and breaker phases and publishes it
    /// when it changed. Called after every event (one pass over the endpoints' atomics), so
    /// every trigger, deadline, probe and snapshot is covered without each one reporting
    /// whether it changed anything.
    fn publish_panic(&mut self) {
        let on = panic::in_panic(self.endpoints(), self.cluster.config().panic_threshold);
        if self.panic != Some(on) {
            self.panic = Some(on);
            panic::publish(self.cluster.health(), on);
        }
    }

    /// Recomputes the zone share of a `prefer_local` cluster and publishes it when it changed:
    /// the capacity half after every event (an ejection moves traffic at once), the load half
    /// only when `tick` (it steps per [`locality::TICK`]). See `balance::locality`.
    fn publish_locality(&mut self, tick: bool) {
        let Some(zoned) = self.cluster.zoned() else {
            return;
        };
        let local = zoned.local().sample(panic::in_service);
        let remote = zoned.remote().sample(panic::in_service);
        if tick {
            self.spill
                .observe(&local, &remote, self.cluster.config().locality_spill_ratio);
        }
        let share = self
            .spill
            .share(&local, &remote, self.cluster.health().panic());
        if self.local_share != Some(share) {
            self.local_share = Some(share);
            let health = self.cluster.health();
            health.set_local_share(share);
            metrics::gauge!(CLUSTER_LOCAL_SHARE, "cluster" => health.name().to_owned()).set(share);
        }
    }

    fn endpoint(&self, address: SocketAddr) -> Option<&Arc<EndpointState>> {
        let endpoints = self.endpoints();
        endpoints
            .binary_search_by(|e| e.address().cmp(&address))
            .ok()
            .and_then(|i| endpoints.get(i))
    }

    /// A report names an endpoint this task does not track yet: a snapshot was published and
    /// the supervisor has not passed it on. Catch up from `shared` at once, so the report (and
    /// the ones after it) count.
    fn catch_up(&mut self, address: SocketAddr, shared: &Shared) {
        if self.ejector.tracks(address) {
            return;
        }
        let snapshot = shared.snapshot();
        if let Some(cluster) = snapshot.cluster(self.cluster.name()) {
            if !Arc::ptr_eq(cluster, &self.cluster) {
                self.apply(Arc::clone(cluster));
            }
        }
    }

    fn on_probe(&mut self, address: SocketAddr, passed: bool) {
        let Some(endpoint) = self.endpoint(address).cloned() else {
            // Removed while probed: forget the probe, or a later return of the same address
            // would never be probed again.
            if let Some(checker) = &mut self.checker {
                checker.forget(address);
            }
            return;
        };
        if let Some(checker) = &mut self.checker {
            checker.on_result(&endpoint, passed);
        }
    }
}

/// Runs the health task of `cluster` until `snapshots` closes or `stop` turns true.
/// `shared` lets it catch up with a just-published snapshot (see `ClusterTask::catch_up`);
/// `own_sender` is a sender of `reports` kept here so the channel never reads as closed (the
/// request path's copy may be replaced at any time).
pub async fn run(
    mut task: ClusterTask,
    shared: Arc<Shared>,
    mut snapshots: watch::Receiver<Arc<ClusterSnapshot>>,
    mut reports: mpsc::Receiver<Report>,
    own_sender: mpsc::Sender<Report>,
    mut stop: watch::Receiver<bool>,
) {
    snapshots.borrow_and_update();
    let mut probes: JoinSet<(SocketAddr, bool)> = JoinSet::new();
    let mut tick = tokio::time::interval(task.ejector.tick_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only polled while the cluster has a zone split.
    let mut zone_tick = tokio::time::interval(locality::TICK);
    zone_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Endpoints a snapshot just added: probed now, not at the next round.
        if let Some(checker) = &mut task.checker {
            checker.start_fresh(&mut probes);
        }
        let now = Instant::now();
        let deadline = task.ejector.next_deadline().unwrap_or(now + FAR);
        let probe_at = if task.checker.is_some() {
            task.next_probe
        } else {
            now + FAR
        };
        tokio::select! {
            _ = crate::wire::shutdown::stopped(&mut stop) => break,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let period = task.ejector.tick_period();
                let cluster = Arc::clone(&snapshots.borrow_and_update());
                task.apply(cluster);
                if task.ejector.tick_period() != period {
                    tick = tokio::time::interval(task.ejector.tick_period());
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
            }
            Some(report) = reports.recv() => match report {
                Report::Outcome { address, attempt, quiet } => {
                    task.catch_up(address, &shared);
                    task.ejector.absorb_quiet(address, quiet);
                    task.ejector.on_outcome(address, attempt, Instant::now());
                }
                Report::Quorum { address } => {
                    task.catch_up(address, &shared);
                    task.ejector.on_quorum(address, Instant::now());
                }
            },
            _ = tick.tick() => task.ejector.on_tick(Instant::now()),
            _ = zone_tick.tick(), if task.cluster.zoned().is_some() => {
                task.publish_locality(true);
                continue;
            }
            () = sleep_until(deadline) => task.ejector.on_deadline(Instant::now()),
            () = sleep_until(probe_at) => {
                let cluster = Arc::clone(&task.cluster);
                if let Some(checker) = &mut task.checker {
                    checker.start_round(cluster.endpoints(), &mut probes);
                    task.next_probe = Instant::now() + checker.next_delay();
                }
            }
            Some(done) = probes.join_next(), if !probes.is_empty() => {
                if let Ok((address, passed)) = done {
                    task.on_probe(address, passed);
                }
            }
        }
        task.publish_panic();
        task.publish_locality(false);
    }
    probes.abort_all();
    drop(own_sender);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::endpoint::BreakerPhase;
    use crate::health::Attempt;
    use crate::state::Shared;

    fn shared() -> Shared {
        let text = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"

[clusters.app]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9002"]
outlier_detection = { base_time = "30s", max_time = "300s", probe_requests = 1 }
"#;
        Shared::new(crate::config::parse(text, Path::new("t.toml")).expect("config"))
    }

    /// Lets the task run until it waits again (paused time auto-advances only when idle).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ejects_reopens_half_open_and_closes_in_paused_time() {
        let shared = Arc::new(shared());
        let snapshot = shared.snapshot();
        let cluster = Arc::clone(snapshot.cluster("app").expect("cluster"));
        let endpoint = Arc::clone(&cluster.endpoints()[0]);
        let (_snapshots_tx, snapshots_rx) = watch::channel(Arc::clone(&cluster));
        let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
        cluster.health().set_reports(Some(reports_tx.clone()));
        let (_stop_tx, stop_rx) = watch::channel(false);
        let state = ClusterTask::new(Arc::clone(&cluster), None);
        let task = tokio::spawn(run(
            state,
            Arc::clone(&shared),
            snapshots_rx,
            reports_rx,
            reports_tx,
            stop_rx,
        ));

        let address = endpoint.address();
        for _ in 0..3 {
            cluster.health().report(Report::Outcome {
                address,
                attempt: Attempt::GatewayError,
                quiet: 0,
            });
        }
        settle().await;
        assert_eq!(endpoint.breaker(), BreakerPhase::Open);

        // 30 s of virtual time pass in no real time.
        tokio::time::sleep(Duration::from_secs(29)).await;
        settle().await;
        assert_eq!(endpoint.breaker(), BreakerPhase::Open);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(endpoint.breaker(), BreakerPhase::HalfOpen);
        assert!(endpoint.health().take_permit());
        assert!(!endpoint.health().take_permit(), "probe_requests = 1");

        cluster.health().report(Report::Outcome {
            address,
            attempt: Attempt::Success,
            quiet: 0,
        });
        settle().await;
        assert_eq!(endpoint.breaker(), BreakerPhase::Closed);
        task.abort();
    }
}
