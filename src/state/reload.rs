//! The reloader's handle: how the admin API (`POST /reload`), `SIGHUP` and the folder watcher
//! ask for a reload, and the last outcome they show. The reloader task itself is wiring
//! (`runtime::reload`); the handle is here, below the admin server that holds it.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot};

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
    /// How the log names it.
    pub fn as_str(self) -> &'static str {
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
    /// A refusal with one message.
    pub(crate) fn one(message: String) -> Self {
        Self {
            errors: vec![message],
        }
    }
}

/// One request to the reloader; `reply` is `None` for fire-and-forget triggers.
pub(crate) struct Request {
    pub(crate) trigger: Trigger,
    pub(crate) reply: Option<oneshot::Sender<Result<Reloaded, ReloadError>>>,
}

/// What the admin API and the watcher share with the reloader: a way to ask for a reload and
/// the last failure. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    pub(crate) requests: mpsc::UnboundedSender<Request>,
    /// The last failed reload's errors, one per line; `None` after a success.
    pub(crate) last_error: Arc<ArcSwapOption<String>>,
    /// The sections the last loaded file changed that only a restart applies.
    pub(crate) restart_required: Arc<ArcSwap<Vec<&'static str>>>,
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

    /// The sections (`"[mesh]"`, `"[admin]"`, …) that the last loaded config file sets
    /// differently from the running process and that take effect only at the next restart;
    /// empty when the file matches the process.
    pub fn restart_required(&self) -> Arc<Vec<&'static str>> {
        self.restart_required.load_full()
    }
}
