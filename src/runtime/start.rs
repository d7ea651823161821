//! Starting the proxy, in three steps: [`bind`](super::bind) the sockets (or take them
//! pre-bound), [`build`] the first snapshot and what the process shares, [`spawn`] the workers,
//! the control tasks and the admin API. [`start`] and [`start_prebound`] compose them.

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use thiserror::Error;
use tokio::sync::{mpsc as tokio_mpsc, watch};

use super::bind::{self, Bound, Prebound};
use super::handle::ProxyHandle;
use super::reload;
use super::workers::{self, Worker};
use crate::admin;
use crate::config::Config;
use crate::state::Shared;

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener address could not be bound (in use, not local, no permission), or a
    /// pre-bound socket could not be used.
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
    /// A pre-bound socket was handed in for a listener the config does not define.
    #[error("pre-bound socket for listener {0:?}, which the config does not define")]
    UnknownListener(String),
    /// A pre-bound admin socket is not on loopback and the config sets no admin token (the
    /// rule validation applies to `admin.listen`).
    #[error(
        "admin: the pre-bound socket listens on {0}, not a loopback address; set `token_file` \
         (a bearer token every admin request must carry) to listen on it"
    )]
    AdminWithoutToken(SocketAddr),
    /// A runtime or thread could not be created (out of memory, thread or fd limits).
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The mesh could not start (its secret file, or its UDP address).
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
}

/// Binds every listener and the admin socket from `config` (port 0 is allowed: it resolves
/// once and every worker shares the port), then builds and spawns. Returns once all sockets are
/// bound and registered, so connections are accepted from then on.
pub fn start(config: Config) -> Result<ProxyHandle, StartError> {
    start_prebound(config, Prebound::new())
}

/// [`start`] serving the listeners and the admin API that `prebound` names on the sockets it
/// holds (the rest are bound from the config): for tests and embedders that bind themselves.
pub fn start_prebound(config: Config, prebound: Prebound) -> Result<ProxyHandle, StartError> {
    let workers = config.runtime.workers.max(1);
    let bound = bind::bind(&config, workers, prebound)?;
    let built = build(config);
    spawn(bound, built)
}

/// What [`build`] makes: the state every thread shares, and the metrics recorder when it could
/// be installed.
struct Built {
    shared: Arc<Shared>,
    recorder: Option<&'static PrometheusHandle>,
}

/// The process-wide pieces (TLS crypto provider, metrics recorder) and the first snapshot.
fn build(config: Config) -> Built {
    // rustls picks its crypto provider from crate features; if a dependency ever enables a
    // second one, building a TLS config would panic on the ambiguity. Installing `ring`
    // explicitly settles it. `Err` only means a provider is already installed (a second
    // `start` in one process, e.g. tests), which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The recorder must exist before the snapshot registers its series handles.
    let recorder = match crate::telemetry::metrics::install() {
        Ok(recorder) => Some(recorder),
        Err(reason) => {
            tracing::warn!(reason, "metrics are not recorded; /metrics answers 503");
            None
        }
    };
    crate::telemetry::metrics::set_max_endpoint_series(config.metrics.max_endpoint_series);
    let shared = Arc::new(Shared::new(config));
    crate::telemetry::metrics::set_config_version(shared.snapshot().version());
    Built { shared, recorder }
}

/// Starts a worker thread per socket set in `bound` and the control runtime with discovery,
/// health, the mesh member, the reloader and the admin API on it.
fn spawn(bound: Bound, built: Built) -> Result<ProxyHandle, StartError> {
    let Bound {
        admin: admin_listener,
        admin_addr,
        listeners,
        sockets,
    } = bound;
    let Built { shared, recorder } = built;
    let config = Arc::clone(shared.snapshot().config());
    let workers = sockets.len();
    let (stop, stop_rx) = watch::channel(false);
    let (closed_tx, listeners_closed) = mpsc::channel();
    workers::raise_fd_limit();
    // `max_connections` counts every worker's connections together.
    let connections = Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections));
    let mut commands = Vec::with_capacity(workers);
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
        crate::telemetry::runtime_tasks::watch(format!("worker-{index}"), runtime.handle().clone());
        let (command_tx, command_rx) = tokio_mpsc::unbounded_channel();
        commands.push(command_tx);
        prepared.push(Worker {
            index,
            runtime,
            listeners: registered,
            shared: Arc::clone(&shared),
            limits: config.limits.clone(),
            connections: Arc::clone(&connections),
            drain_timeout: config.runtime.drain_timeout,
            shutdown: stop_rx.clone(),
            listeners_closed: closed_tx.clone(),
            commands: command_rx,
        });
    }

    let (control_thread, control) =
        workers::spawn_control(stop_rx.clone()).map_err(StartError::Runtime)?;
    crate::telemetry::runtime_tasks::watch("control".to_owned(), control.clone());
    // Clusters with a `discovery` source start empty; their provider tasks fill them.
    crate::discovery::start(&shared, control.clone());
    // One health task per cluster (checks, ejection, panic mode). The supervisor attaches to
    // `shared`, which applies every snapshot it publishes (reload, discovery) at once.
    crate::health::Supervisor::start(&control, &shared, stop_rx.clone());
    // The mesh member and the tunnel it announces, which the reloader replaces when a reload
    // moves the inbound listener.
    let announced = match &config.mesh {
        Some(mesh) => {
            let port = reload::inbound_port(&config, &listeners);
            let tunnel = crate::mesh::tunnel::tunnel_ad(&config, port);
            let handle = crate::mesh::start(mesh, tunnel.clone(), &shared, &control)?;
            Some((handle, tunnel))
        }
        None => None,
    };
    let mesh = announced.as_ref().map(|(handle, _)| handle.clone());
    let listeners = Arc::new(ArcSwap::from_pointee(listeners));
    let reload = reload::spawn(
        &control,
        Arc::clone(&shared),
        Arc::clone(&listeners),
        commands,
        announced,
        stop_rx.clone(),
    );
    let state = admin::AdminState {
        shared: Arc::clone(&shared),
        reload: reload.clone(),
        mesh: mesh.clone(),
    };
    admin::server::spawn(&control, admin_listener, state, stop_rx.clone())
        .map_err(StartError::Runtime)?;
    if let Some(recorder) = recorder {
        control.spawn(upkeep(recorder, stop_rx));
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

/// How often the recorder's histograms are drained into their buckets between scrapes (the
/// exporter's own default period), so samples never pile up unbounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

async fn upkeep(recorder: &'static PrometheusHandle, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = crate::wire::shutdown::stopped(&mut stop) => break,
            () = tokio::time::sleep(UPKEEP_INTERVAL) => recorder.run_upkeep(),
        }
    }
}
