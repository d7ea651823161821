//! Cache purges over the mesh: a purge one member runs is carried in its record
//! ([`super::state::Purge`]) and run once by every other member.
//!
//! [`apply`] is the hook into the response cache. The cache (`crate::cache`) is being built
//! alongside the mesh; until it exposes a purge function, [`apply`] logs the purge and counts it
//! in `switchyard_mesh_purges_total`, and wiring it is one call in that function.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use super::codec::NodeId;
use super::state::PurgeTarget;
use super::View;
use crate::runtime::Shared;

/// Metric: purges received from peers and applied here.
pub const PURGES_TOTAL: &str = "switchyard_mesh_purges_total";

/// Runs a peer's purge on this proxy's cache.
pub fn apply(shared: &Shared, target: &PurgeTarget) {
    let _ = shared;
    tracing::info!(?target, "mesh: purge from a peer");
    metrics::counter!(PURGES_TOTAL).increment(1);
}

/// Applies every purge of another member once, as records arrive.
pub async fn run(shared: Weak<Shared>, mut views: watch::Receiver<Arc<View>>) {
    // (owner, purge id): each owner numbers its purges, a new generation starts over.
    let mut done: HashSet<(NodeId, u64)> = HashSet::new();
    // A member that starts while a purge is recent runs it too: purging a cache that just
    // started costs nothing, and skipping could miss a purge that raced the start.
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        let Some(proxy) = shared.upgrade() else {
            return;
        };
        for record in &view.records {
            if Some(record.id) == view.local {
                continue;
            }
            for purge in &record.purges {
                if done.insert((record.id, purge.id)) {
                    apply(&proxy, &purge.target);
                }
            }
        }
        drop(proxy);
        if views.changed().await.is_err() {
            return;
        }
    }
}
