//! Hot reload: re-read the config file, validate it, build the whole next snapshot and publish
//! it with one `ArcSwap` store — or keep serving the old one and say why.
//!
//! One owned-state task (the *reloader*, on the control runtime) performs every reload, so they
//! never overlap; three triggers feed it:
//! - the folder watcher ([`watcher`]): any event in the config file's folder, debounced;
//! - `SIGHUP` (only under [`super::run`], the CLI);
//! - `POST /reload` on the admin API, which waits for the answer.
//!
//! A reload, in order: read the file; if its SHA-256 equals the running config's, nothing
//! happens; parse and validate (every error, as `FILE:LINE:COL: message`); bind the sockets of
//! added and re-addressed listeners ([`listeners`]); build and publish the snapshot through
//! [`Shared::publish`] (the one build path, shared with discovery, which keeps the
//! `EndpointState` of every endpoint present before and after); then tell the workers which
//! accept loops to start and stop. Any failure before the publish leaves everything as it was:
//! the old snapshot serves on, `config_reloads_total{result="failure"}` increments and
//! `/config.last_error` shows the errors until the next success.
//!
//! Some sections cannot change in a running process (`[runtime]`, `[admin]`, `[limits]`,
//! `log.format`, `[mesh]`): a reload keeps them as started, logs a warning, and lists the ones
//! the file changed in [`ReloadHandle::restart_required`], which `POST /reload` and `/config`
//! show, until a reload of a file that matches the running process again.
//!
//! Requests in flight hold the snapshot they loaded and finish on it.

mod listeners;
mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::mesh::state::TunnelAd;
use crate::runtime::accept::ListenerCommand;
use crate::state::reload::{ReloadError, ReloadHandle, Reloaded, Request, Trigger};
use crate::state::{Shared, Snapshot};
use crate::telemetry::metrics::{CONFIG_RELOADS_TOTAL, CONFIG_RELOAD_DURATION_SECONDS};
use crate::wire::shutdown::stopped;

pub use listeners::LiveListener;

/// The reloader task's state: what is running now, beyond the snapshot itself.
struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    /// Listeners as running; also read by `ProxyHandle::listener_addr`.
    live: Arc<ArcSwap<Vec<LiveListener>>>,
    /// One command channel per worker thread.
    workers: Vec<mpsc::UnboundedSender<ListenerCommand>>,
    /// The config the process started with: sections that cannot change without a restart
    /// (threads, admin socket, connection limits, log format) are kept from it.
    startup: Arc<Config>,
    last_error: Arc<ArcSwapOption<String>>,
    restart_required: Arc<ArcSwap<Vec<&'static str>>>,
    /// The mesh member, when `[mesh]` is configured, and the tunnel it announces now: a reload
    /// that moves, adds or removes the inbound listener announces the new one (owned by this
    /// task alone, so no lock).
    mesh: Option<(crate::mesh::MeshHandle, Option<TunnelAd>)>,
}

/// The bound port of `config`'s inbound listener in `live` (the real one when configured with
/// port 0): peers open their tunnels to it on our mesh address's IP. Start and every reload
/// compute the announcement from it.
pub(super) fn inbound_port(config: &Config, live: &[LiveListener]) -> Option<u16> {
    config
        .listeners
        .iter()
        .find(|l| matches!(l.mode, crate::config::ListenerMode::Inbound(_)))
        .and_then(|l| live.iter().find(|running| running.name == l.name))
        .map(|running| running.resolved.port())
}

/// Starts the reloader and the folder watcher on `control`; returns the handle the admin API
/// and the signal handler use. The watcher failing to start (no inotify instances left) is
/// logged: `SIGHUP` and `POST /reload` still work.
pub(super) fn spawn(
    control: &tokio::runtime::Handle,
    shared: Arc<Shared>,
    live: Arc<ArcSwap<Vec<LiveListener>>>,
    workers: Vec<mpsc::UnboundedSender<ListenerCommand>>,
    mesh: Option<(crate::mesh::MeshHandle, Option<TunnelAd>)>,
    shutdown: watch::Receiver<bool>,
) -> ReloadHandle {
    let startup = Arc::clone(shared.snapshot().config());
    let path = startup.source.clone();
    let (requests, mut inbox) = mpsc::unbounded_channel::<Request>();
    let last_error = Arc::new(ArcSwapOption::empty());
    let restart_required = Arc::new(ArcSwap::from_pointee(Vec::new()));
    let handle = ReloadHandle {
        requests,
        last_error: Arc::clone(&last_error),
        restart_required: Arc::clone(&restart_required),
    };
    let mut reloader = Reloader {
        shared,
        path: path.clone(),
        live,
        workers,
        startup,
        last_error,
        restart_required,
        mesh,
    };
    let mut stop = shutdown.clone();
    control.spawn(async move {
        loop {
            let request = tokio::select! {
                _ = stopped(&mut stop) => break,
                request = inbox.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
            };
            // Held until the answer is out: freeing it is not part of the reload.
            let replaced = reloader.shared.snapshot();
            let outcome = reloader.reload(request.trigger, &replaced).await;
            if let Some(reply) = request.reply {
                // `Err`: the admin client went away; the reload happened all the same.
                let _ = reply.send(outcome);
            }
            super::retire::retire(replaced, &reloader.shared.snapshot());
        }
    });
    watcher::spawn(control, &path, handle.clone(), shutdown);
    handle
}

impl Reloader {
    /// Reloads over `running`, the snapshot published when the request was taken.
    async fn reload(
        &mut self,
        trigger: Trigger,
        running: &Snapshot,
    ) -> Result<Reloaded, ReloadError> {
        let started = Instant::now();
        let outcome = self.attempt(trigger, running).await;
        match &outcome {
            Ok(Reloaded::Unchanged { .. }) => {}
            Ok(Reloaded::Published { version }) => {
                metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "success").increment(1);
                metrics::histogram!(CONFIG_RELOAD_DURATION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(version, trigger = trigger.as_str(), elapsed = ?started.elapsed(), "config reloaded");
            }
            Err(error) => {
                metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "failure").increment(1);
                metrics::histogram!(CONFIG_RELOAD_DURATION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                self.last_error.store(Some(Arc::new(error.to_string())));
                for message in &error.errors {
                    tracing::error!(
                        trigger = trigger.as_str(),
                        "config reload failed, old config kept: {message}"
                    );
                }
            }
        }
        outcome
    }

    async fn attempt(
        &mut self,
        trigger: Trigger,
        running: &Snapshot,
    ) -> Result<Reloaded, ReloadError> {
        let path = self.path.clone();
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            // Mid-replace by an editor that deletes before writing: the event of the new file
            // brings the watcher back; reporting the gap as a failure would only be noise.
            Err(error)
                if trigger == Trigger::Watch && error.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::debug!(path = %path.display(), "config file missing for now; waiting for it");
                return Ok(Reloaded::Unchanged {
                    version: running.version(),
                });
            }
            Err(error) => {
                let message = format!("{}: cannot read config: {error}", path.display());
                return Err(ReloadError::one(message));
            }
        };
        let sha256 = crate::config::sha256_hex(text.as_bytes());
        if sha256 == running.config().sha256 && !admin_token_rotated(&running.config().admin) {
            // Back to the running content (an edit undone): nothing stands in error any more.
            self.last_error.store(None);
            return Ok(Reloaded::Unchanged {
                version: running.version(),
            });
        }
        let parsed = tokio::task::spawn_blocking(move || crate::config::parse(&text, &path)).await;
        let mut config = match parsed {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                return Err(ReloadError {
                    errors: errors.errors.iter().map(ToString::to_string).collect(),
                })
            }
            Err(panic) => return Err(ReloadError::one(format!("config parser panicked: {panic}"))),
        };
        let restart_required = self.keep_restart_only_sections(&mut config);
        // The admin socket stays where it was until a restart: a file that moves it to loopback
        // and drops `token_file` in one edit must not leave a non-loopback port open meanwhile.
        if !config.admin.listen.ip().is_loopback() && config.admin.token.is_none() {
            return Err(ReloadError::one(format!(
                "admin.token_file: the admin API listens on {} (not loopback) until the next \
                 restart; it cannot go without a token before then",
                config.admin.listen
            )));
        }

        let plan = listeners::plan(&self.live.load(), &config.listeners, self.workers.len())
            .map_err(ReloadError::one)?;
        crate::telemetry::metrics::set_max_endpoint_series(config.metrics.max_endpoint_series);
        let shared = Arc::clone(&self.shared);
        // Building 10k routes takes milliseconds: off the control runtime's thread, so the
        // admin API answers meanwhile. The request path never waits for it at all.
        // TLS files are loaded first: a config naming certificates that do not load is refused
        // like a syntax error, and the running one (with its certificates) stays.
        let last_error = Arc::clone(&self.last_error);
        let published = tokio::task::spawn_blocking(move || {
            crate::tls::store::preload(&config).map(|()| {
                // Cleared before the swap, so `/config` never shows the new version beside the
                // previous failure's error.
                last_error.store(None);
                shared.publish(config)
            })
        })
        .await
        .map_err(|panic| ReloadError::one(format!("building the snapshot panicked: {panic}")))?
        .map_err(|error| ReloadError::one(format!("tls: {error}")))?;
        let live = plan.apply(&self.workers);
        self.reannounce_tunnel(published.config(), &live);
        self.live.store(Arc::new(live));
        self.restart_required.store(Arc::new(restart_required));
        Ok(Reloaded::Published {
            version: published.version(),
        })
    }

    /// Announces the tunnel `config` and the listeners now running call for, when it differs
    /// from the one announced (the inbound listener moved, appeared or went away). The identity
    /// is restart-only and `tls::store` holds it loaded since the snapshot build, so this reads
    /// no file beyond the store's change check.
    fn reannounce_tunnel(&mut self, config: &Config, live: &[LiveListener]) {
        let Some((mesh, announced)) = &mut self.mesh else {
            return;
        };
        let tunnel = crate::mesh::tunnel::tunnel_ad(config, inbound_port(config, live));
        if tunnel != *announced {
            tracing::info!(
                from = ?announced.as_ref().map(|t| t.port),
                to = ?tunnel.as_ref().map(|t| t.port),
                "inbound listener changed: tunnel announcement updated"
            );
            mesh.announce_tunnel(tunnel.clone());
            *announced = tunnel;
        }
    }

    /// Keeps the sections a running process cannot change (worker threads, drain settings, the
    /// admin socket, connection limits, the log format, the mesh member's socket, identity and
    /// keys, the `[identity]` files) as they were at start, and says so when the file changed
    /// them: they take effect on the next restart. Returns the changed ones.
    fn keep_restart_only_sections(&self, config: &mut Config) -> Vec<&'static str> {
        let startup = &self.startup;
        let mut ignored = Vec::new();
        if config.runtime != startup.runtime {
            ignored.push("[runtime]");
            config.runtime = startup.runtime.clone();
        }
        // The socket stays; the token follows the file (a reload is how it is rotated).
        if config.admin.listen != startup.admin.listen {
            ignored.push("[admin] listen");
            config.admin.listen = startup.admin.listen;
        }
        if config.limits != startup.limits {
            ignored.push("[limits]");
            config.limits = startup.limits.clone();
        }
        if config.log.format != startup.log.format {
            ignored.push("log.format");
            config.log.format = startup.log.format;
        }
        // Kept as started also in the snapshot, so `/config` and mesh discovery describe the
        // member that actually runs.
        if config.mesh != startup.mesh {
            ignored.push("[mesh]");
            config.mesh = startup.mesh.clone();
        }
        // The mesh announces our tunnel identity for the process's life, so the files it is
        // read from stay too; rotated contents (same identity) are still picked up, by the
        // certificate watcher and by every reload (`tls::store`).
        if config.identity != startup.identity {
            ignored.push("[identity]");
            config.identity = startup.identity.clone();
        }
        if !ignored.is_empty() {
            tracing::warn!(
                "config reload: {} changed; applied at the next restart only",
                ignored.join(", ")
            );
        }
        ignored
    }
}

/// Whether `[admin] token_file` now holds another token than the running one (or cannot be
/// read): a reload must then go through even though the config text is unchanged, so that
/// rotating the token needs no edit of the config (and a broken file is reported).
fn admin_token_rotated(admin: &crate::config::AdminConfig) -> bool {
    let Some(path) = &admin.token_file else {
        return false;
    };
    crate::config::admin_token(path).ok() != admin.token
}
