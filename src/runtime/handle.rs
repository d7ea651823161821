//! Starting and stopping the proxy: [`start`] for tests and embedding, [`run`] for the CLI.

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use thiserror::Error;
use tokio::sync::watch;

use super::workers::{self, Worker};
use super::Shared;
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
}

/// A running proxy. Dropping it signals shutdown without waiting; [`ProxyHandle::shutdown`]
/// also waits for the drain.
#[derive(Debug)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    /// Listener name and resolved address, in config order.
    listeners: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    /// One message per worker once its listening sockets are closed.
    listeners_closed: mpsc::Receiver<()>,
    workers: usize,
    threads: Vec<JoinHandle<()>>,
    control: tokio::runtime::Handle,
}

/// Starts the worker threads and the control runtime and binds every listener (port 0 is
/// allowed: it resolves once and every worker shares the port). Returns once all sockets are
/// bound and registered, so connections are accepted from then on.
pub fn start(config: Config) -> Result<ProxyHandle, StartError> {
    let workers = config.runtime.workers.max(1);
    let limits = config.limits.clone();
    let drain_timeout = config.runtime.drain_timeout;
    let listener_configs = config.listeners.clone();
    let shared = Arc::new(Shared::new(config));

    // sockets[w] = worker w's socket for every listener, in config order.
    let mut sockets: Vec<Vec<(Arc<str>, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut listeners = Vec::with_capacity(listener_configs.len());
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
        listeners.push((listener.name.clone(), resolved));
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
        });
    }

    let (control_thread, control) =
        workers::spawn_control(stop_rx.clone()).map_err(StartError::Runtime)?;
    let mut handle = ProxyHandle {
        shared,
        listeners,
        stop,
        listeners_closed,
        workers,
        threads: vec![control_thread],
        control,
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
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, addr)| addr)
    }

    /// Every listener's name and resolved address, in config order.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The current snapshot and endpoint registry.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The control runtime, where reload, discovery, health and admin tasks are spawned.
    pub fn control(&self) -> &tokio::runtime::Handle {
        &self.control
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

/// Runs the proxy until SIGINT or SIGTERM, then drains and returns. What `switchyard run` and
/// `switchyard demo` call.
pub fn run(config: Config) -> anyhow::Result<()> {
    for feature in config.inactive_features() {
        tracing::warn!("{feature}: configured but not active yet; it is validated and ignored");
    }
    let shutdown_delay = config.runtime.shutdown_delay;
    let handle = start(config)?;
    for (name, addr) in handle.listeners() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    wait_for_signal()?;
    tracing::info!(?shutdown_delay, "shutting down");
    handle.shared().set_draining();
    // Readiness already says 503; keep serving while load balancers in front notice.
    std::thread::sleep(shutdown_delay);
    handle.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn wait_for_signal() -> io::Result<()> {
    let runtime = workers::current_thread_runtime()?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    })
}
