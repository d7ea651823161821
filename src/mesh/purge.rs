//! Cache purges over the mesh: a purge one member runs is carried in its record
//! ([`super::state::Purge`]) and run once by every other member.
//!
//! [`apply`] runs a peer's purge on the response cache ([`crate::cache::Cache::purge`]); the
//! admin API's `POST /cache/purge` runs it locally and hands it to [`super::MeshHandle`] to
//! spread.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use super::codec::NodeId;
use super::state::PurgeTarget;
use super::View;
use crate::runtime::Shared;

/// Metric: purges received from peers and applied here.
pub const PURGES_TOTAL: &str = "switchyard_mesh_purges_total";

/// Runs a peer's purge on this proxy's cache (nothing to do without `[cache]`).
pub fn apply(shared: &Shared, target: &PurgeTarget) {
    metrics::counter!(PURGES_TOTAL).increment(1);
    let snapshot = shared.snapshot();
    let Some(cache) = snapshot.cache() else {
        return;
    };
    let removed = cache.purge(&to_cache(target));
    tracing::info!(?target, removed, "mesh: purge from a peer");
}

/// The cache's form of a purge carried over the mesh.
pub fn to_cache(target: &PurgeTarget) -> crate::cache::Purge {
    match target {
        PurgeTarget::Prefix(prefix) => crate::cache::Purge::Prefix(prefix.clone()),
        PurgeTarget::Key(url) => crate::cache::Purge::Key(url.clone()),
    }
}

/// The mesh's form of a purge the admin API ran.
pub fn from_cache(purge: &crate::cache::Purge) -> PurgeTarget {
    match purge {
        crate::cache::Purge::Prefix(prefix) => PurgeTarget::Prefix(prefix.clone()),
        crate::cache::Purge::Key(url) => PurgeTarget::Key(url.clone()),
    }
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
