//! [`ProxyHandle`]: a running proxy, as [`super::start`] returns it — its addresses, its state,
//! the reload handle, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::reload::LiveListener;
use crate::state::reload::ReloadHandle;
use crate::state::Shared;

/// A running proxy. Dropping it signals shutdown without waiting; [`ProxyHandle::shutdown`]
/// also waits for the drain.
#[derive(Debug)]
pub struct ProxyHandle {
    pub(super) shared: Arc<Shared>,
    /// The listeners as running, in config order; the reloader replaces the table.
    pub(super) listeners: Arc<ArcSwap<Vec<LiveListener>>>,
    /// Asks the reloader for a reload (`POST /reload`, `SIGHUP`).
    pub(super) reload: ReloadHandle,
    /// The admin listener's resolved address.
    pub(super) admin: SocketAddr,
    /// Turned true once: every worker, control task and the admin API stop on it.
    pub(super) stop: watch::Sender<bool>,
    /// One message per worker once its listening sockets are closed.
    pub(super) listeners_closed: mpsc::Receiver<()>,
    /// How many `listeners_closed` messages shutdown waits for.
    pub(super) workers: usize,
    /// The control thread and every worker thread, joined by shutdown.
    pub(super) threads: Vec<JoinHandle<()>>,
    /// The control runtime, for tasks started after `start` (the CLI's `SIGHUP` forwarder).
    pub(super) control: tokio::runtime::Handle,
    /// The mesh member, when `[mesh]` is configured.
    pub(super) mesh: Option<crate::mesh::MeshHandle>,
}

impl ProxyHandle {
    /// The resolved address of listener `name` (the real port when configured with port 0).
    /// Follows reloads: a listener added by one is found, a removed one is not.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .load()
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.resolved)
    }

    /// The admin listener's resolved address (the real port when configured with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Every listener's name and resolved address, in config order, as of now.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .load()
            .iter()
            .map(|l| (l.name.clone(), l.resolved))
            .collect()
    }

    /// Reloads the config file on demand (what `POST /reload` and `SIGHUP` use), and the last
    /// reload error.
    pub fn reloader(&self) -> &ReloadHandle {
        &self.reload
    }

    /// The current snapshot and endpoint registry.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The control runtime, where reload, discovery, health and admin tasks are spawned.
    pub fn control(&self) -> &tokio::runtime::Handle {
        &self.control
    }

    /// The mesh member, when `[mesh]` is configured.
    pub fn mesh(&self) -> Option<&crate::mesh::MeshHandle> {
        self.mesh.as_ref()
    }

    /// Stops accepting, lets requests in progress finish (up to `runtime.drain_timeout`), and
    /// joins every thread. When it returns, no listener accepts any more.
    ///
    /// Called from a current-thread tokio runtime (a plain `#[tokio::test]`), the drain may need
    /// that very runtime (a client's HTTP/2 connection answering GOAWAY's ping, a backend in the
    /// test), so blocking it until the drain ends could stall for the whole `drain_timeout`.
    /// There it returns once the listeners are closed and joins the threads on a plain thread.
    /// Elsewhere it blocks until everything has stopped (inside a multi-thread runtime via
    /// `block_in_place`).
    pub fn shutdown(mut self) {
        self.shared.set_draining();
        // Peers drop us (and our services) on `Leave` at once; it must go out while the
        // listeners still serve what they route here meanwhile.
        if let Some(mesh) = &self.mesh {
            mesh.leave(MESH_LEAVE_TIMEOUT);
        }
        self.stop.send_replace(true);
        for _ in 0..self.workers {
            // `Err` = every worker already gone (or panicked); nothing left to wait for.
            if self.listeners_closed.recv().is_err() {
                break;
            }
        }
        let threads = std::mem::take(&mut self.threads);
        let join = move || {
            for thread in threads {
                // A panicked worker already reported its panic; nothing more to do here.
                let _ = thread.join();
            }
        };
        match tokio::runtime::Handle::try_current().map(|rt| rt.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(join),
            Ok(_) => {
                let joiner = std::thread::Builder::new()
                    .name("switchyard-shutdown".to_owned())
                    .spawn(join);
                if let Err(error) = joiner {
                    tracing::warn!(%error, "cannot start the shutdown thread; not waiting for the drain");
                }
            }
            Err(_) => join(),
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// How long shutdown waits for the mesh's `Leave` datagrams to be sent.
const MESH_LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
