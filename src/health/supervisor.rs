//! Starts, re-points and stops the per-cluster health tasks as snapshots change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::task::{self, REPORT_QUEUE};
use crate::runtime::{ClusterSnapshot, EndpointRegistry, Shared, Snapshot};

/// How often the supervisor looks for a snapshot nobody told it about (one atomic load). Reload and discovery call
/// [`Supervisor::apply`] right after publishing; this is the safety net for a publisher that
/// does not, so a new cluster is never left without health state for long.
const POLL: Duration = Duration::from_millis(200);

/// Owner of the health tasks; cheap to clone (the reload path keeps one).
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Handle,
    /// Handed to each task so it can catch up with a snapshot published moments ago.
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// Per cluster, the sender of its task's snapshots; dropping it ends the task. A std
    /// `Mutex`: control side only, held for a map update, never across `.await`.
    tasks: Mutex<HashMap<String, watch::Sender<Arc<ClusterSnapshot>>>>,
    /// Version of the last applied snapshot.
    applied: AtomicU64,
}

impl Supervisor {
    /// Starts a task per cluster of the current snapshot on `runtime` (the control runtime),
    /// plus the poll described at [`POLL`]. Everything stops when `stop` turns true.
    pub fn start(runtime: &Handle, shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Self {
        let supervisor = Self {
            inner: Arc::new(Inner {
                runtime: runtime.clone(),
                shared: Arc::clone(&shared),
                stop: stop.clone(),
                tasks: Mutex::new(HashMap::new()),
                applied: AtomicU64::new(0),
            }),
        };
        supervisor.apply(&shared.snapshot(), shared.registry());
        let poller = supervisor.clone();
        runtime.spawn(async move {
            let mut stop = stop;
            let mut poll = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    _ = crate::proxy::server::stopped(&mut stop) => break,
                    _ = poll.tick() => {
                        let snapshot = shared.snapshot();
                        if poller.applied() != snapshot.version() {
                            poller.apply(&snapshot, shared.registry());
                        }
                    }
                }
            }
        });
        supervisor
    }

    fn applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }

    /// Brings the health tasks in line with `snapshot`: new clusters get a task, existing ones
    /// get the new endpoint list and config (their learned state stays), removed ones stop.
    /// Call after every publish (reload, discovery).
    pub fn apply(&self, snapshot: &Snapshot, registry: &EndpointRegistry) {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|name, _| snapshot.cluster(name).is_some());
        for cluster in snapshot.clusters() {
            if let Some(sender) = tasks.get(cluster.name()) {
                sender.send_replace(Arc::clone(cluster));
                continue;
            }
            let (snapshots_tx, snapshots_rx) = watch::channel(Arc::clone(cluster));
            let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
            cluster.health().set_reports(Some(reports_tx.clone()));
            let state = task::ClusterTask::new(Arc::clone(cluster));
            self.inner.runtime.spawn(task::run(
                state,
                Arc::clone(&self.inner.shared),
                snapshots_rx,
                reports_rx,
                reports_tx,
                self.inner.stop.clone(),
            ));
            tasks.insert(cluster.name().to_owned(), snapshots_tx);
        }
        registry.retain_clusters(|name| snapshot.cluster(name).is_some());
        self.inner
            .applied
            .store(snapshot.version(), Ordering::Relaxed);
    }
}
