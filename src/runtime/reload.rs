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
//! Requests in flight hold the snapshot they loaded and finish on it.

mod accept;
mod listeners;
mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Shared, Snapshot};
use crate::admin::metrics::{CONFIG_RELOADS_TOTAL, CONFIG_RELOAD_DURATION_SECONDS};
use crate::config::Config;
use crate::proxy::server::stopped;

pub(super) use accept::{AcceptLoops, ListenerCommand};
pub use listeners::LiveListener;

/// What asked for a reload; logged, and the watcher's requests are quiet about a config file
/// that is missing for a moment (an editor that deletes before it writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An event in the config file's folder, after the quiet period.
    Watch,
    /// `SIGHUP`.
    Signal,
    /// `POST /reload`.
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "file change",
            Self::Signal => "SIGHUP",
            Self::Admin => "POST /reload",
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// A new snapshot with this version is live.
    Published {
        /// The new snapshot's version.
        version: u64,
    },
    /// The file's content is the running one's; nothing was rebuilt.
    Unchanged {
        /// The running snapshot's version.
        version: u64,
    },
}

impl Reloaded {
    /// The version live after the reload.
    pub fn version(self) -> u64 {
        match self {
            Self::Published { version } | Self::Unchanged { version } => version,
        }
    }
}

/// Why a reload was refused; the old config serves on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", errors.join("\n"))]
pub struct ReloadError {
    /// One message per problem, config errors as `FILE:LINE:COL: message`.
    pub errors: Vec<String>,
}

impl ReloadError {
    fn one(message: String) -> Self {
        Self {
            errors: vec![message],
        }
    }
}

/// One request to the reloader; `reply` is `None` for fire-and-forget triggers.
struct Request {
    trigger: Trigger,
    reply: Option<oneshot::Sender<Result<Reloaded, ReloadError>>>,
}

/// What the admin API and the watcher share with the reloader: a way to ask for a reload and
/// the last failure. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    requests: mpsc::UnboundedSender<Request>,
    /// The last failed reload's errors, one per line; `None` after a success.
    last_error: Arc<ArcSwapOption<String>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}

impl ReloadHandle {
    /// Reloads now and waits for the outcome. Reloads queue behind each other.
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            trigger,
            reply: Some(reply),
        };
        if self.requests.send(request).is_err() {
            return Err(ReloadError::one("the proxy is shutting down".to_owned()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ReloadError::one("the proxy is shutting down".to_owned())))
    }

    /// Asks for a reload without waiting (the watcher and `SIGHUP`).
    pub fn trigger(&self, trigger: Trigger) {
        // `Err`: the reloader is gone because shutdown began; nothing left to reload.
        let _ = self.requests.send(Request {
            trigger,
            reply: None,
        });
    }

    /// The last failed reload's errors (one per line), until a reload succeeds.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }
}

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
}

/// Starts the reloader and the folder watcher on `control`; returns the handle the admin API
/// and the signal handler use. The watcher failing to start (no inotify instances left) is
/// logged: `SIGHUP` and `POST /reload` still work.
pub(super) fn spawn(
    control: &tokio::runtime::Handle,
    shared: Arc<Shared>,
    live: Arc<ArcSwap<Vec<LiveListener>>>,
    workers: Vec<mpsc::UnboundedSender<ListenerCommand>>,
    shutdown: watch::Receiver<bool>,
) -> ReloadHandle {
    let startup = Arc::clone(shared.snapshot().config());
    let path = startup.source.clone();
    let (requests, mut inbox) = mpsc::unbounded_channel::<Request>();
    let last_error = Arc::new(ArcSwapOption::empty());
    let handle = ReloadHandle {
        requests,
        last_error: Arc::clone(&last_error),
    };
    let mut reloader = Reloader {
        shared,
        path: path.clone(),
        live,
        workers,
        startup,
        last_error,
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
        if sha256 == running.config().sha256 {
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
        self.keep_restart_only_sections(&mut config);

        let plan = listeners::plan(&self.live.load(), &config.listeners, self.workers.len())
            .map_err(ReloadError::one)?;
        crate::admin::metrics::set_max_endpoint_series(config.metrics.max_endpoint_series);
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
        self.live.store(Arc::new(live));
        Ok(Reloaded::Published {
            version: published.version(),
        })
    }

    /// Keeps the sections a running process cannot change (worker threads, drain settings, the
    /// admin socket, connection limits, the log format) as they were at start, and says so when
    /// the file changed them: they take effect on the next restart.
    fn keep_restart_only_sections(&self, config: &mut Config) {
        let startup = &self.startup;
        let mut ignored = Vec::new();
        if config.runtime != startup.runtime {
            ignored.push("[runtime]");
            config.runtime = startup.runtime.clone();
        }
        if config.admin != startup.admin {
            ignored.push("[admin]");
            config.admin = startup.admin.clone();
        }
        if config.limits != startup.limits {
            ignored.push("[limits]");
            config.limits = startup.limits.clone();
        }
        if config.log.format != startup.log.format {
            ignored.push("log.format");
            config.log.format = startup.log.format;
        }
        if !ignored.is_empty() {
            tracing::warn!(
                "config reload: {} changed; applied at the next restart only",
                ignored.join(", ")
            );
        }
    }
}
