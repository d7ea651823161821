//! Process runtime: the state model (snapshot + endpoint registry), worker threads, start and
//! graceful shutdown.
//!
//! Threading (DESIGN.md): `[runtime] workers` OS threads, each running a current-thread tokio
//! runtime with its own accept socket per listener (`SO_REUSEPORT`, so the kernel balances
//! connections) and its own upstream connections. Shared state is atomics and one `ArcSwap`d
//! [`Snapshot`]. Control tasks (reload, discovery, health, admin) run on a separate small
//! runtime reachable through [`ProxyHandle::control`].

mod endpoint;
mod handle;
pub mod reload;
mod retire;
mod snapshot;
mod workers;

pub use endpoint::{BreakerPhase, EndpointKey, EndpointRegistry, EndpointState, InFlightGuard};
pub use handle::{run, start, ProxyHandle, StartError};
pub use reload::{ReloadError, ReloadHandle, Reloaded, Trigger};
pub use snapshot::{ClusterSnapshot, ListenerSnapshot, Shared, Snapshot};
