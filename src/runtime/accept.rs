//! One worker's accept loops, as a set that reloads change while the worker runs.
//!
//! Each listener's accept loop has its own stop signal, which the connections it accepted also
//! watch: stopping a listener (removed, or replaced by a rebind) closes its socket at once and
//! drains its connections the way shutdown does (HTTP/1 answers what is in progress with
//! `Connection: close`, HTTP/2 sends GOAWAY) while every other listener keeps its socket and
//! accepts without a gap. Shutdown stops them all.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::proxy::listener::Acceptor;
use crate::proxy::server::{ConnServer, ListenerContext};
use crate::state::Shared;
use crate::upstream::Upstream;
use crate::wire::shutdown::stopped;

/// What the reloader tells a worker about its listeners.
#[derive(Debug)]
pub enum ListenerCommand {
    /// Accept on `socket` (this worker's `SO_REUSEPORT` socket) under `name`; a loop already
    /// running under that name (the old address of a rebound listener) stops and drains.
    Start {
        name: Arc<str>,
        socket: std::net::TcpListener,
    },
    /// Stop accepting under `name` and drain its connections (the listener was removed).
    Stop { name: Arc<str> },
}

/// A running accept loop and its stop signal.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The worker's accept loops by listener name.
pub struct AcceptLoops {
    server: ConnServer,
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    /// Cloned into every connection task; the worker's drain waits until all clones are gone.
    active: mpsc::Sender<()>,
    running: HashMap<Arc<str>, Running>,
    /// Stopped loops not yet finished; awaited at shutdown so "listeners closed" is true.
    retired: Vec<JoinHandle<()>>,
    worker: usize,
}

impl AcceptLoops {
    /// An empty set for worker `worker`.
    pub fn new(
        server: ConnServer,
        shared: Arc<Shared>,
        upstream: Arc<Upstream>,
        active: mpsc::Sender<()>,
        worker: usize,
    ) -> Self {
        Self {
            server,
            shared,
            upstream,
            active,
            running: HashMap::new(),
            retired: Vec::new(),
            worker,
        }
    }

    /// Starts accepting on `listener` under `name`, replacing (and draining) any loop of that
    /// name. The new socket accepts before the old one closes, so a rebind has no accept gap.
    pub fn start(&mut self, name: Arc<str>, listener: Acceptor) {
        let (stop, stop_rx) = watch::channel(false);
        let ctx = ListenerContext {
            shared: Arc::clone(&self.shared),
            upstream: Arc::clone(&self.upstream),
            name: Arc::clone(&name),
        };
        let server = self.server.clone();
        let active = self.active.clone();
        let task = tokio::spawn(async move {
            server.accept_loop(listener, ctx, stop_rx, active).await;
        });
        if let Some(old) = self.running.insert(name, Running { stop, task }) {
            self.retire(old);
        }
    }

    fn stop(&mut self, name: &str) {
        if let Some(old) = self.running.remove(name) {
            self.retire(old);
        }
    }

    fn retire(&mut self, old: Running) {
        // The value stays `true` after the sender drops, so connections still see the signal.
        old.stop.send_replace(true);
        self.retired.retain(|task| !task.is_finished());
        self.retired.push(old.task);
    }

    /// Applies `commands` until `shutdown`, then stops every loop and waits until each socket
    /// is closed. Connections go on draining after this returns.
    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<ListenerCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut open = true;
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                command = commands.recv(), if open => match command {
                    Some(ListenerCommand::Start { name, socket }) => {
                        // Inside the worker's runtime: the socket registers with its reactor.
                        match Acceptor::from_std(socket) {
                            Ok(listener) => self.start(name, listener),
                            Err(error) => tracing::error!(
                                worker = self.worker, listener = %name, %error,
                                "cannot register the listener's socket; this worker does not accept on it"
                            ),
                        }
                    }
                    Some(ListenerCommand::Stop { name }) => self.stop(&name),
                    // The reloader is gone (it stops at shutdown too); wait for the signal.
                    None => open = false,
                },
            }
        }
        let running: Vec<Running> = self.running.drain().map(|(_, r)| r).collect();
        for loop_ in running {
            self.retire(loop_);
        }
        for task in self.retired {
            // An accept loop ends once stopped; a panic in one was already reported by tokio.
            let _ = task.await;
        }
    }
}
