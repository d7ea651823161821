//! Wiring: start and graceful shutdown, the worker threads and their accept loops, the reloader.
//! The top of the crate: it puts together what every module below provides and nothing below
//! names it.
//!
//! Threading (docs/architecture.md, "Threading model"): `[runtime] workers` OS threads, each
//! running a current-thread tokio runtime with its own accept socket per listener (`SO_REUSEPORT`,
//! so the kernel balances connections) and its own upstream connections. Shared state is atomics
//! and one `ArcSwap`d [`crate::state::Snapshot`]. Control tasks (reload, discovery, health, admin)
//! run on a separate small runtime reachable through [`ProxyHandle::control`].
//!
//! - [`start`](mod@start): [`start()`] / [`start_prebound`] in three steps: [`bind`] the sockets (or take them
//!   pre-bound), build the first snapshot, spawn workers, control tasks and the admin API.
//! - [`handle`]: the [`ProxyHandle`] a running proxy is controlled through, and its shutdown.
//! - [`run`](mod@run): the CLI's [`run()`], start to signal to drain.
//! - [`workers`]: the worker threads.
//! - [`accept`]: one worker's accept loops, a set that reloads change while the worker runs.
//! - [`reload`]: the reloader task, the folder watcher and listener rebinding.
//! - [`retire`]: freeing a replaced snapshot off the control thread.

mod accept;
mod bind;
mod handle;
pub mod reload;
mod retire;
mod run;
mod start;
mod workers;

pub use bind::Prebound;
pub use handle::ProxyHandle;
pub use run::run;
pub use start::{start, start_prebound, StartError};
// The reload handle lives with the shared state (the admin server holds one); `start` hands it
// out, so the entry point names it too.
pub use crate::state::reload::{ReloadError, ReloadHandle, Reloaded, Trigger};
