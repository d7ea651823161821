//! The state the control plane publishes and the data plane reads: the immutable [`Snapshot`]
//! of config + endpoints, and [`Shared`], which holds the current one (one `ArcSwap`), the
//! endpoint registry and the sets discovery published.
//!
//! Below the control plane (health, discovery, mesh), the request path (proxy) and the admin
//! server, which all read it; above the policy modules (router, balance, resilience, cache,
//! trace, tls) whose compiled forms a snapshot holds. The control tasks that must follow every
//! publish are attached as [`Follower`]s, so this module never names them.
//!
//! - [`snapshot`]: [`Snapshot`], [`ClusterSnapshot`], [`ListenerSnapshot`]: what a version is
//!   made of, and the one way each part is built.
//! - [`shared`]: [`Shared`], which publishes versions (a reload, a discovery update).
//! - [`targets`]: [`TargetTable`], which cluster an outbound connection's original destination
//!   belongs to.
//! - [`discovered`]: [`DiscoveredSet`], one source's published endpoints.
//! - [`reload`]: [`ReloadHandle`], how the admin API and signals ask the reloader for a reload.

pub mod discovered;
pub mod reload;
pub mod shared;
pub mod snapshot;
pub mod targets;

pub use discovered::{DiscoveredSet, DiscoveredSets};
pub use reload::{ReloadError, ReloadHandle, Reloaded, Trigger};
pub use shared::Shared;
pub use snapshot::{ClusterSnapshot, Intercepting, ListenerSnapshot, Snapshot};
pub use targets::TargetTable;
// The meshed table lives with the pools that read it (`upstream` sits below `state`); named
// here too because `Shared` publishes it.
pub use crate::upstream::dial::{MeshedPeers, TunnelPeer, Tunnels};

use crate::endpoint::EndpointRegistry;

/// A control task that follows every published snapshot: the discovery supervisor (sources
/// follow the config) and the health supervisor (one task per cluster). A trait rather than
/// the two types so the state sits below the control plane that feeds it. [`Shared`] calls
/// followers under its publish lock, so they see versions in publish order.
pub trait Follower: Send + Sync + std::fmt::Debug {
    /// Applies `snapshot`, just published; `registry` holds the state of its endpoints.
    fn follow(&self, snapshot: &Snapshot, registry: &EndpointRegistry);
}
