//! The [`Supervisor`]: one provider task per discovery cluster on the control runtime, kept in
//! line with the config on every publish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{dns, etcd, file, Sink};
use crate::config::{Config, EndpointSource};
use crate::state::Shared;

/// A running provider task and the source it was started for.
#[derive(Debug)]
struct Task {
    source: EndpointSource,
    abort: tokio::task::AbortHandle,
}

/// Keeps one provider task per discovery cluster running on the control runtime, matching the
/// config it was last given.
#[derive(Debug)]
pub struct Supervisor {
    shared: Weak<Shared>,
    control: tokio::runtime::Handle,
    /// Cluster name -> its task. Control side only; the lock is never held across `.await`.
    tasks: Mutex<HashMap<String, Task>>,
}

impl Supervisor {
    /// A supervisor spawning onto `control` and publishing into `shared`; runs nothing until
    /// [`Self::apply`].
    pub fn new(shared: &Arc<Shared>, control: tokio::runtime::Handle) -> Self {
        Self {
            shared: Arc::downgrade(shared),
            control,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Brings the tasks in line with `config`: a cluster whose source is unchanged keeps its
    /// task (and so its state: etcd revision, DNS schedule); a changed or removed source's task
    /// is aborted; a new source gets a task. `Shared::publish` calls this on every reload.
    pub fn apply(&self, config: &Config) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|name, task| {
            let keep = config
                .clusters
                .get(name)
                .is_some_and(|c| c.endpoints == task.source);
            if !keep {
                task.abort.abort();
            }
            keep
        });
        for cluster in config.clusters.values() {
            if tasks.contains_key(&cluster.name) {
                continue;
            }
            let sink = Sink::new(
                Weak::clone(&self.shared),
                &cluster.name,
                cluster.endpoints.clone(),
            );
            let abort = match &cluster.endpoints {
                // Static lists are in the config itself; mesh discovery is the mesh's.
                EndpointSource::Static(_) | EndpointSource::Mesh(_) => continue,
                EndpointSource::File(path) => self.control.spawn(file::run(path.clone(), sink)),
                EndpointSource::Dns { .. } | EndpointSource::Srv { .. } => self
                    .control
                    .spawn(dns::run(cluster.endpoints.clone(), sink)),
                EndpointSource::Etcd {
                    endpoints,
                    prefix,
                    watch_timeout,
                } => self.control.spawn(etcd::run(
                    endpoints.clone(),
                    prefix.clone(),
                    *watch_timeout,
                    sink,
                )),
            }
            .abort_handle();
            tasks.insert(
                cluster.name.clone(),
                Task {
                    source: cluster.endpoints.clone(),
                    abort,
                },
            );
        }
    }

    /// How many provider tasks are running (tests and the admin view).
    pub fn running(&self) -> usize {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in tasks.values() {
            task.abort.abort();
        }
    }
}

/// Starts discovery for a freshly started proxy: attaches a [`Supervisor`] on `control` to
/// `shared`, which starts the tasks of the current config and follows every later publish.
pub fn start(shared: &Arc<Shared>, control: tokio::runtime::Handle) {
    shared.attach_discovery(Supervisor::new(shared, control));
}

impl crate::state::Follower for Supervisor {
    /// Sources follow the config: started, restarted or stopped to match it.
    fn follow(&self, snapshot: &crate::state::Snapshot, _: &crate::endpoint::EndpointRegistry) {
        self.apply(snapshot.config());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `[clusters.meshed]` needs a `[mesh]` section, which needs a key file.
    fn config(cluster: &str) -> Config {
        let dir = tempfile::tempdir().expect("tmp");
        let key = dir.path().join("mesh.key");
        std::fs::write(&key, "k".repeat(64)).expect("write key");
        let text = format!(
            "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\nlistener = \"public\"\ncluster = \"app\"\n\n\
             [clusters.app]\nendpoints = [\"127.0.0.1:1\"]\n\n[clusters.{cluster}]\n\
             discovery = {{ file = \"{cluster}.json\" }}\n\n\
             [clusters.meshed]\ndiscovery = {{ mesh = \"meshed\" }}\n\n\
             [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{}\"\n",
            key.display()
        );
        crate::config::parse(&text, Path::new("test.toml")).expect("valid config")
    }

    #[test]
    fn apply_runs_one_task_per_non_static_non_mesh_source() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Shared::new(config("a")));
        let supervisor = Supervisor::new(&shared, runtime.handle().clone());
        supervisor.apply(&config("a"));
        assert_eq!(supervisor.running(), 1);
        let task = |s: &Supervisor| {
            s.tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get("a")
                .map(|t| t.abort.id())
        };
        let first = task(&supervisor);
        // Unchanged source: the same task keeps running.
        supervisor.apply(&config("a"));
        assert_eq!(task(&supervisor), first);
        // Another cluster: the old task goes, a new one comes.
        supervisor.apply(&config("b"));
        assert_eq!(supervisor.running(), 1);
        assert!(task(&supervisor).is_none());
    }
}
