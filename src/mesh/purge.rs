//! Cache purges over the mesh: a purge one member runs is carried in its record
//! ([`super::state::Purge`]) and run once by every other member.
//!
//! [`apply`] runs a peer's purge on the response cache ([`crate::cache::Cache::purge`]); the
//! admin API's `POST /cache/purge` runs it locally and hands it to [`super::MeshHandle`] to
//! spread.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::codec::NodeId;
use super::state::{PurgeTarget, PURGE_TTL_MS};
use super::View;
use crate::state::Shared;

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::MESH_PURGES_TOTAL as PURGES_TOTAL;

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

/// The purges of other members already run here, so each runs once.
#[derive(Debug, Default)]
struct Done {
    /// (owner, purge id) -> when we ran it. Each owner numbers its purges; a new generation
    /// starts over.
    ran: HashMap<(NodeId, u64), Instant>,
}

impl Done {
    /// The purges in `view` not run yet, marked as run. Then forgets the purges no live record
    /// carries any more and that ran more than twice [`PURGE_TTL_MS`] ago: records only move
    /// forward, so such a purge cannot come back, and the grace covers a member flapping out
    /// of the view. So the set is bounded by the live records' purges (each record holds at
    /// most `MAX_PURGES`) plus what ran in the last two minutes.
    fn fresh(&mut self, view: &View, now: Instant) -> Vec<PurgeTarget> {
        let mut fresh = Vec::new();
        let mut carried = std::collections::HashSet::new();
        for record in &view.records {
            if Some(record.id) == view.local {
                continue;
            }
            for purge in &record.purges {
                let key = (record.id, purge.id);
                carried.insert(key);
                if let std::collections::hash_map::Entry::Vacant(entry) = self.ran.entry(key) {
                    entry.insert(now);
                    fresh.push(purge.target.clone());
                }
            }
        }
        let grace = Duration::from_millis(2 * PURGE_TTL_MS);
        self.ran
            .retain(|key, &mut at| carried.contains(key) || now.duration_since(at) < grace);
        fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ran.len()
    }
}

/// Applies every purge of another member once, as records arrive.
pub async fn run(shared: Weak<Shared>, mut views: watch::Receiver<Arc<View>>) {
    let mut done = Done::default();
    // A member that starts while a purge is recent runs it too: purging a cache that just
    // started costs nothing, and skipping could miss a purge that raced the start.
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        let Some(proxy) = shared.upgrade() else {
            return;
        };
        for target in done.fresh(&view, Instant::now()) {
            apply(&proxy, &target);
        }
        drop(proxy);
        if views.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::state::{MemberState, Purge};

    fn record(port: u16, purges: std::ops::Range<u64>) -> MemberState {
        MemberState {
            purges: purges
                .map(|id| Purge {
                    id,
                    at_ms: 0,
                    target: PurgeTarget::Prefix(format!("/{id}")),
                })
                .collect(),
            ..MemberState::new(NodeId {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                generation: 1,
            })
        }
    }

    fn view(records: Vec<MemberState>) -> View {
        let local = NodeId {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            generation: 1,
        };
        View::new(local, Vec::new(), records, 0)
    }

    #[tokio::test(start_paused = true)]
    async fn each_purge_runs_once_and_is_forgotten_once_no_record_carries_it() {
        let mut done = Done::default();
        assert_eq!(
            done.fresh(&view(vec![record(2, 0..3)]), Instant::now())
                .len(),
            3
        );
        assert!(
            done.fresh(&view(vec![record(2, 0..3)]), Instant::now())
                .is_empty(),
            "ran once"
        );
        // The owner drops its old purges: they are still remembered within the grace period,
        // so a copy of the old record does not run them twice.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            done.fresh(&view(vec![record(2, 3..4)]), Instant::now())
                .len(),
            1
        );
        assert!(done
            .fresh(&view(vec![record(2, 0..3)]), Instant::now())
            .is_empty());
        assert_eq!(done.len(), 4);
        // Many members come and go over hours: the set holds only what records still carry.
        for round in 0..100u16 {
            tokio::time::advance(Duration::from_secs(60)).await;
            done.fresh(&view(vec![record(10 + round, 0..16)]), Instant::now());
        }
        assert!(
            done.len() <= 16 * 3,
            "the set is bounded by live records and the grace: {}",
            done.len()
        );
    }
}
