//! Worker and control threads.
//!
//! Runtimes and tokio listeners are created on the thread that calls `start`, so every bind or
//! runtime error surfaces there synchronously; each runtime then moves to its own thread and is
//! driven by `block_on` until shutdown.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch, Semaphore};

use super::accept::{AcceptLoops, ListenerCommand};
use crate::config::LimitsConfig;
use crate::proxy::listener::Acceptor;
use crate::proxy::server::ConnServer;
use crate::state::Shared;
use crate::upstream::Upstream;

/// Everything one worker thread needs, assembled before the thread starts.
pub(super) struct Worker {
    pub index: usize,
    pub runtime: Runtime,
    /// Listener name and this worker's socket for it, already registered with `runtime`.
    pub listeners: Vec<(Arc<str>, Acceptor)>,
    pub shared: Arc<Shared>,
    pub limits: LimitsConfig,
    /// `max_connections` permits, shared by every worker.
    pub connections: Arc<Semaphore>,
    pub drain_timeout: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// Told once this worker's listening sockets are closed (the drain may go on after).
    pub listeners_closed: std::sync::mpsc::Sender<()>,
    /// Listeners a reload starts or stops while the worker runs.
    pub commands: mpsc::UnboundedReceiver<ListenerCommand>,
}

/// A current-thread runtime: it cost less CPU per request than a multi-thread runtime with one
/// worker (docs/architecture.md, "Threading model"). To re-check, build both flavours and compare
/// them with `benches/load/run.sh --instructions --baseline OLD_BINARY`.
pub(super) fn current_thread_runtime() -> io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (once per process): every downstream and
/// upstream connection is a descriptor, and the common soft default of 1024 is far below
/// `max_connections`. Failure is logged, not fatal: the proxy still runs, with fewer sockets.
pub(super) fn raise_fd_limit() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    });
}

/// Registers `socket` with `runtime`'s reactor (must happen inside the runtime's context).
pub(super) fn register(runtime: &Runtime, socket: std::net::TcpListener) -> io::Result<Acceptor> {
    let _context = runtime.enter();
    Acceptor::from_std(socket)
}

impl Worker {
    /// Starts the worker's thread.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("switchyard-worker-{}", self.index))
            .spawn(move || {
                let Worker {
                    runtime,
                    listeners,
                    shared,
                    limits,
                    connections,
                    drain_timeout,
                    shutdown,
                    listeners_closed,
                    index,
                    commands,
                } = self;
                let stopped = Stopped {
                    drain_timeout,
                    shutdown,
                    listeners_closed,
                    commands,
                };
                let server = ConnServer::new(&limits, connections);
                // This thread alone runs the runtime's tasks: attempts may share its deadline
                // queue instead of a tokio timer each.
                crate::wire::deadline::enable_on_this_thread();
                runtime.block_on(serve(listeners, shared, server, stopped, index));
                // Dropping the runtime cancels what the drain left behind (connections that
                // outlived `drain_timeout`, idle upstream connections).
                drop(runtime);
            })
    }
}

/// How a worker learns to stop and reports its progress.
struct Stopped {
    drain_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    listeners_closed: std::sync::mpsc::Sender<()>,
    commands: mpsc::UnboundedReceiver<ListenerCommand>,
}

async fn serve(
    listeners: Vec<(Arc<str>, Acceptor)>,
    shared: Arc<Shared>,
    server: ConnServer,
    stopped: Stopped,
    index: usize,
) {
    let Stopped {
        drain_timeout,
        shutdown,
        listeners_closed,
        commands,
    } = stopped;
    let upstream = Arc::new(Upstream::with_tunnels(Arc::clone(shared.tunnels())));
    // Every connection task holds a sender; `recv()` yields `None` once all are gone.
    let (active, mut all_closed) = mpsc::channel::<()>(1);
    let mut accept_loops = AcceptLoops::new(server, shared, upstream, active, index);
    for (name, listener) in listeners {
        accept_loops.start(name, listener);
    }
    // Until shutdown; reloads add, rebind and remove listeners meanwhile. Returns once every
    // accept loop has ended (and dropped its socket and its `active` sender).
    accept_loops.run(commands, shutdown).await;
    // Listeners are closed now (a finished task has dropped its future, and with it the socket);
    // connections saw the same signal and are finishing.
    let _ = listeners_closed.send(());
    if tokio::time::timeout(drain_timeout, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = index,
            ?drain_timeout,
            "drain timeout: closing remaining connections"
        );
    }
}

/// Starts the control runtime's thread; it runs until `shutdown`, and the returned handle spawns
/// control tasks onto it.
pub(super) fn spawn_control(
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<(JoinHandle<()>, tokio::runtime::Handle)> {
    let runtime = current_thread_runtime()?;
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new()
        .name("switchyard-control".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                crate::wire::shutdown::stopped(&mut shutdown).await;
            });
            // Control tasks hold no request state; don't wait for them.
            runtime.shutdown_background();
        })?;
    Ok((thread, handle))
}
