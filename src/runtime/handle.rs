//! Starting and stopping the proxy: [`start`] for tests and embedding, [`run`] for the CLI.

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use thiserror::Error;
use tokio::sync::{mpsc as tokio_mpsc, watch};

use super::reload::{self, LiveListener, ReloadHandle, Trigger};
use super::workers::{self, Worker};
use super::Shared;
use crate::admin;
use crate::config::Config;
use crate::proxy::listener::bind_reuseport;

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener address could not be bound (in use, not local, no permission).
    #[error("listener {listener:?}: cannot listen on {address}: {source}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A runtime or thread could not be created (out of memory, thread or fd limits).
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The mesh could not start (its secret file, or its UDP address).
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
}

/// A running proxy. Dropping it signals shutdown without waiting; [`ProxyHandle::shutdown`]
/// also waits for the drain.
#[derive(Debug)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    /// The listeners as running, in config order; the reloader replaces the table.
    listeners: Arc<ArcSwap<Vec<LiveListener>>>,
    /// Asks the reloader for a reload (`POST /reload`, `SIGHUP`).
    reload: ReloadHandle,
    /// The admin listener's resolved address.
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    /// One message per worker once its listening sockets are closed.
    listeners_closed: mpsc::Receiver<()>,
    workers: usize,
    threads: Vec<JoinHandle<()>>,
    control: tokio::runtime::Handle,
    /// The mesh member, when `[mesh]` is configured.
    mesh: Option<crate::mesh::MeshHandle>,
}

/// Starts the worker threads and the control runtime and binds every listener (port 0 is
/// allowed: it resolves once and every worker shares the port). Returns once all sockets are
/// bound and registered, so connections are accepted from then on.
pub fn start(config: Config) -> Result<ProxyHandle, StartError> {
    // rustls picks its crypto provider from crate features; if a dependency ever enables a
    // second one, building a TLS config would panic on the ambiguity. Installing `ring`
    // explicitly settles it. `Err` only means a provider is already installed (a second
    // `start` in one process, e.g. tests), which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The recorder must exist before the snapshot registers its series handles.
    let recorder = admin::metrics::install();
    if let Err(reason) = recorder {
        tracing::warn!(reason, "metrics are not recorded; /metrics answers 503");
    }
    admin::metrics::set_max_endpoint_series(config.metrics.max_endpoint_series);
    let admin_listener =
        admin::server::bind(config.admin.listen).map_err(|source| StartError::Bind {
            listener: "admin".to_owned(),
            address: config.admin.listen,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().map_err(StartError::Runtime)?;
    let workers = config.runtime.workers.max(1);
    let limits = config.limits.clone();
    let drain_timeout = config.runtime.drain_timeout;
    let listener_configs = config.listeners.clone();
    let shared = Arc::new(Shared::new(config));
    admin::metrics::set_config_version(shared.snapshot().version());

    // sockets[w] = worker w's socket for every listener, in config order.
    let mut sockets: Vec<Vec<(Arc<str>, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut listeners = Vec::with_capacity(listener_configs.len());
    let mut commands = Vec::with_capacity(workers);
    for listener in &listener_configs {
        let bind_error = |source| StartError::Bind {
            listener: listener.name.clone(),
            address: listener.listen,
            source,
        };
        let bound = bind_reuseport(listener.listen, workers).map_err(bind_error)?;
        let resolved = bound
            .first()
            .map(std::net::TcpListener::local_addr)
            .transpose()
            .map_err(bind_error)?
            .unwrap_or(listener.listen);
        listeners.push(LiveListener {
            name: listener.name.clone(),
            configured: listener.listen,
            resolved,
        });
        let name: Arc<str> = Arc::from(listener.name.as_str());
        for (slot, socket) in sockets.iter_mut().zip(bound) {
            slot.push((Arc::clone(&name), socket));
        }
    }

    let (stop, stop_rx) = watch::channel(false);
    let (closed_tx, listeners_closed) = mpsc::channel();
    workers::raise_fd_limit();
    // `max_connections` counts every worker's connections together.
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut prepared = Vec::with_capacity(workers);
    for (index, worker_sockets) in sockets.into_iter().enumerate() {
        let runtime = workers::current_thread_runtime().map_err(StartError::Runtime)?;
        let mut registered = Vec::with_capacity(worker_sockets.len());
        for (name, socket) in worker_sockets {
            registered.push((
                name,
                workers::register(&runtime, socket).map_err(StartError::Runtime)?,
            ));
        }
        admin::runtime_tasks::watch(format!("worker-{index}"), runtime.handle().clone());
        let (command_tx, command_rx) = tokio_mpsc::unbounded_channel();
        commands.push(command_tx);
        prepared.push(Worker {
            index,
            runtime,
            listeners: registered,
            shared: Arc::clone(&shared),
            limits: limits.clone(),
            connections: Arc::clone(&connections),
            drain_timeout,
            shutdown: stop_rx.clone(),
            listeners_closed: closed_tx.clone(),
            commands: command_rx,
        });
    }

    let (control_thread, control) =
        workers::spawn_control(stop_rx.clone()).map_err(StartError::Runtime)?;
    admin::runtime_tasks::watch("control".to_owned(), control.clone());
    // Clusters with a `discovery` source start empty; their provider tasks fill them.
    crate::discovery::start(&shared, control.clone());
    // One health task per cluster (checks, ejection, panic mode). The supervisor attaches to
    // `shared`, which applies every snapshot it publishes (reload, discovery) at once.
    crate::health::Supervisor::start(&control, &shared, stop_rx.clone());
    let mesh = match shared.snapshot().config().mesh.clone() {
        Some(config) => Some(crate::mesh::start(&config, &shared, &control)?),
        None => None,
    };
    let listeners = Arc::new(ArcSwap::from_pointee(listeners));
    let reload = reload::spawn(
        &control,
        Arc::clone(&shared),
        Arc::clone(&listeners),
        commands,
        stop_rx.clone(),
    );
    let state = admin::AdminState {
        shared: Arc::clone(&shared),
        reload: reload.clone(),
        mesh: mesh.clone(),
    };
    admin::server::spawn(&control, admin_listener, state, stop_rx.clone())
        .map_err(StartError::Runtime)?;
    if let Ok(recorder) = recorder {
        control.spawn(upkeep(recorder, stop_rx.clone()));
    }
    let mut handle = ProxyHandle {
        shared,
        listeners,
        reload,
        admin: admin_addr,
        stop,
        listeners_closed,
        workers,
        threads: vec![control_thread],
        control,
        mesh,
    };
    for worker in prepared {
        // On error, `handle` drops here and signals the threads already started to stop.
        handle
            .threads
            .push(worker.spawn().map_err(StartError::Runtime)?);
    }
    Ok(handle)
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

/// How often the recorder's histograms are drained into their buckets between scrapes (the
/// exporter's own default period), so samples never pile up unbounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

async fn upkeep(recorder: &'static PrometheusHandle, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = crate::proxy::server::stopped(&mut stop) => break,
            () = tokio::time::sleep(UPKEEP_INTERVAL) => recorder.run_upkeep(),
        }
    }
}

/// What the CLI's main thread waits for during shutdown.
enum Event {
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// Every worker has finished draining.
    Drained,
}

/// Runs the proxy until SIGINT or SIGTERM, then shuts down gracefully and returns `Ok` (exit 0).
/// What `switchyard run` calls.
///
/// Shutdown, in order: `/readyz` answers 503 at once; the proxy keeps serving for
/// `[runtime] shutdown_delay` so load balancers in front notice; then listeners close (new
/// connections are refused), HTTP/2 connections get GOAWAY and HTTP/1 responses
/// `Connection: close`, and requests in flight get up to `drain_timeout` to finish. A second
/// signal at any point exits the process at once with status 1, without waiting.
pub fn run(config: Config) -> anyhow::Result<()> {
    for feature in config.inactive_features() {
        tracing::warn!("{feature}: configured but not active yet; it is validated and ignored");
    }
    let shutdown_delay = config.runtime.shutdown_delay;
    let drain_timeout = config.runtime.drain_timeout;
    // Watch signals before starting, so one that arrives during start is not lost (and a
    // SIGHUP then does not kill the process, its default action).
    let (events_tx, events) = mpsc::channel();
    let (hangups_tx, mut hangups) = tokio_mpsc::unbounded_channel();
    watch_signals(events_tx.clone(), hangups_tx)?;
    let handle = start(config)?;
    let reloader = handle.reloader().clone();
    handle.control().spawn(async move {
        while hangups.recv().await.is_some() {
            reloader.trigger(Trigger::Signal);
        }
    });
    // URLs in the messages: scripts and tests read the real ports (port 0) from these lines.
    for (name, addr) in handle.listeners() {
        tracing::info!(listener = %name, "listening on http://{addr}");
    }
    tracing::info!("admin API listening on http://{}", handle.admin_addr());
    if events.recv().is_err() {
        anyhow::bail!("the signal watcher stopped unexpectedly");
    }
    tracing::info!(?shutdown_delay, "shutting down: not ready, still serving");
    handle.shared().set_draining();
    match events.recv_timeout(shutdown_delay) {
        Ok(Event::Signal) => exit_at_once(),
        Ok(Event::Drained) | Err(_) => {}
    }
    tracing::info!(?drain_timeout, "closing listeners, draining connections");
    let drain = std::thread::Builder::new()
        .name("switchyard-drain".to_owned())
        .spawn(move || {
            handle.shutdown();
            let _ = events_tx.send(Event::Drained);
        })?;
    match events.recv() {
        Ok(Event::Signal) => exit_at_once(),
        Ok(Event::Drained) | Err(_) => {}
    }
    // The drain thread has sent `Drained`, its last act; a panic in it was reported already.
    let _ = drain.join();
    tracing::info!("stopped");
    Ok(())
}

fn exit_at_once() -> ! {
    tracing::warn!("second signal: exiting without waiting for requests in flight");
    std::process::exit(1)
}

/// Forwards SIGINT and SIGTERM to `events`, and SIGHUP (reload) to `hangups`, from a thread of
/// its own. The handlers are registered before this returns. After two SIGINT/SIGTERM the
/// watcher ends: the second one makes `run` exit the process.
fn watch_signals(
    events: mpsc::Sender<Event>,
    hangups: tokio_mpsc::UnboundedSender<()>,
) -> io::Result<()> {
    let runtime = workers::current_thread_runtime()?;
    #[cfg(unix)]
    let (mut interrupt, mut terminate, mut hangup) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _context = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    #[cfg(not(unix))]
    let _ = hangups;
    std::thread::Builder::new()
        .name("switchyard-signals".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let mut stops = 0;
                while stops < 2 {
                    #[cfg(unix)]
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                        _ = hangup.recv() => {
                            // `Err`: the proxy is shutting down; a reload no longer matters.
                            let _ = hangups.send(());
                            continue;
                        }
                    }
                    stops += 1;
                    #[cfg(not(unix))]
                    if tokio::signal::ctrl_c().await.is_err() {
                        return;
                    }
                    if events.send(Event::Signal).is_err() {
                        return;
                    }
                }
            });
        })?;
    Ok(())
}
