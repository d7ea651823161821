//! Starts, re-points and stops the per-cluster health tasks as snapshots change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::task::{self, REPORT_QUEUE};
use crate::endpoint::EndpointRegistry;
use crate::state::{ClusterSnapshot, Shared, Snapshot};

/// Owner of the health tasks; cheap to clone. `Shared` keeps one and applies every snapshot it
/// publishes (reload and discovery alike) before the publish returns, so no poll is needed: a
/// new cluster or endpoint is known to its task as soon as requests can reach it.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Handle,
    /// Handed to each task so it can catch up with a snapshot published moments ago. `Weak`:
    /// `Shared` owns this supervisor, and a strong reference back would keep both alive forever.
    shared: Weak<Shared>,
    stop: watch::Receiver<bool>,
    /// Per cluster, the sender of its task's snapshots; dropping it ends the task. A std
    /// `Mutex`: control side only, held for a map update, never across `.await`.
    tasks: Mutex<HashMap<String, watch::Sender<Arc<ClusterSnapshot>>>>,
}

impl Supervisor {
    /// Starts a task per cluster of the current snapshot on `runtime` (the control runtime) and
    /// attaches itself to `shared`, which from then on calls [`Self::apply`] on every publish.
    /// Every task stops when `stop` turns true.
    pub fn start(runtime: &Handle, shared: &Arc<Shared>, stop: watch::Receiver<bool>) -> Self {
        let supervisor = Self {
            inner: Arc::new(Inner {
                runtime: runtime.clone(),
                shared: Arc::downgrade(shared),
                stop,
                tasks: Mutex::new(HashMap::new()),
            }),
        };
        shared.attach_health(supervisor.clone());
        supervisor
    }

    /// Brings the health tasks in line with `snapshot`: new clusters get a task, existing ones
    /// get the new endpoint list and config (their learned state stays), removed ones stop.
    /// `Shared` calls it on every publish (reload, discovery), under its publish lock.
    pub fn apply(&self, snapshot: &Snapshot, registry: &EndpointRegistry) {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|name, _| snapshot.cluster(name).is_some());
        for cluster in snapshot.clusters() {
            if let Some(sender) = tasks.get(cluster.name()) {
                // A discovery publish shares every other cluster's snapshot: no need to wake
                // those tasks.
                if !Arc::ptr_eq(&sender.borrow(), cluster) {
                    sender.send_replace(Arc::clone(cluster));
                }
                continue;
            }
            // `Shared` calls this from its own methods, so the upgrade holds; were it gone
            // (a stray caller after shutdown), there is nothing to check any more.
            let Some(shared) = self.inner.shared.upgrade() else {
                return;
            };
            let (snapshots_tx, snapshots_rx) = watch::channel(Arc::clone(cluster));
            let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
            cluster.health().set_reports(Some(reports_tx.clone()));
            let state =
                task::ClusterTask::new(Arc::clone(cluster), Some(Arc::clone(shared.tunnels())));
            self.inner.runtime.spawn(task::run(
                state,
                shared,
                snapshots_rx,
                reports_rx,
                reports_tx,
                self.inner.stop.clone(),
            ));
            tasks.insert(cluster.name().to_owned(), snapshots_tx);
        }
        registry.retain_clusters(|name| snapshot.cluster(name).is_some());
    }
}

impl crate::state::Follower for Supervisor {
    fn follow(&self, snapshot: &Snapshot, registry: &EndpointRegistry) {
        self.apply(snapshot, registry);
    }
}
