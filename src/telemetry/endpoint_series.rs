//! Endpoint-labelled series (`upstream_requests_total{cluster,endpoint,outcome}`,
//! `endpoint_healthy`, `endpoint_ejected`, `circuit_state`) and the
//! `[metrics] max_endpoint_series` budget that keeps their cardinality bounded.
//!
//! An endpoint's label is fixed when its [`crate::endpoint::EndpointState`] is created (snapshot
//! builds, off the request path): its address while the budget lasts, `other` after. Discovery
//! churn (a new address per deploy) can then never grow the scrape without bound. An endpoint
//! that leaves (reload, discovery) gives its label back to the budget (see
//! [`EndpointMetrics::release`]), so the budget bounds the endpoints that exist, not the ones
//! ever seen.
//!
//! **Rendered at scrape time, not registered in the recorder.** A series of an endpoint that is
//! gone must go with it (a stale `endpoint_ejected = 1` pages someone), but the Prometheus recorder
//! (`metrics-exporter-prometheus` 0.16) has no way to delete a series: its only removal is an idle
//! timeout, which would also drop a gauge that is simply steady (an endpoint healthy for an hour)
//! and orphan the counter handles the request path holds. So these four families never enter the
//! recorder: the gauges are read from the `EndpointState` atomics, the counter from per-endpoint
//! atomics, for the endpoints of the live snapshot, at each scrape (`admin::endpoint_render`). A
//! removed endpoint's series are gone at the next scrape; Prometheus treats a counter series that
//! ends like any other that ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use metrics::SharedString;

use crate::wire::Outcome;

/// Attempts by outcome, indexed by [`Outcome::index`].
type OutcomeCounts = [AtomicU64; Outcome::ALL.len()];

/// [`EndpointMetrics::hold`] values: which budget entry the endpoint holds.
const HOLDS_OWN: u8 = 0;
const HOLDS_OTHER: u8 = 1;
const RELEASED: u8 = 2;

/// The metric label and request counts of one endpoint. The label is the address while the
/// `[metrics] max_endpoint_series` budget lasts, else `other`; an `other` endpoint is given its
/// own label later when another endpoint leaves ([`crate::endpoint::EndpointRegistry::retain`]
/// promotes), so a deploy that replaces every endpoint in one update does not leave the new
/// ones folded for their whole life.
#[derive(Debug)]
pub struct EndpointMetrics {
    cluster: String,
    address: SocketAddr,
    /// Read at scrapes and written by a promotion only, never on the request path.
    label: Mutex<SharedString>,
    /// `HOLDS_OWN`, `HOLDS_OTHER` or `RELEASED`.
    hold: AtomicU8,
    /// This endpoint's attempts since it was created or promoted. An `other` endpoint's are
    /// summed into its cluster's `other` series; when it leaves or is promoted they move to the
    /// cluster's retired counts, so that series never goes down (Prometheus would read that as
    /// a counter reset).
    counts: OutcomeCounts,
}

impl EndpointMetrics {
    /// Labels for endpoint `address` of `cluster`, folding to `other` when the process's
    /// endpoint-series budget is spent.
    pub fn new(cluster: &str, address: SocketAddr) -> Self {
        let own = ENDPOINT_BUDGET.claim(cluster, address);
        let label = if own {
            SharedString::from(address.to_string())
        } else {
            SharedString::const_str(OTHER_ENDPOINT)
        };
        Self {
            cluster: cluster.to_owned(),
            address,
            label: Mutex::new(label),
            hold: AtomicU8::new(if own { HOLDS_OWN } else { HOLDS_OTHER }),
            counts: OutcomeCounts::default(),
        }
    }

    /// The `endpoint` label value now: the address, or `other`.
    pub fn endpoint_label(&self) -> SharedString {
        self.label
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts one attempt at this endpoint in `upstream_requests_total`.
    pub fn record_upstream(&self, outcome: Outcome) {
        self.counts[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts counted on this endpoint with `outcome` (see [`EndpointMetrics::counts`]).
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()].load(Ordering::Relaxed)
    }

    /// Whether the endpoint is labelled `other` now.
    pub fn is_folded(&self) -> bool {
        self.hold.load(Ordering::Relaxed) == HOLDS_OTHER
    }

    /// Gives the endpoint's label back to the budget: the registry calls it when the endpoint
    /// leaves (its state may live on a while in requests still running; it is no longer
    /// rendered). Idempotent; dropping the metrics releases too.
    pub fn release(&self) {
        match self.hold.swap(RELEASED, Ordering::Relaxed) {
            HOLDS_OWN => ENDPOINT_BUDGET.release(&self.cluster, self.address),
            HOLDS_OTHER => ENDPOINT_BUDGET.unfold(&self.cluster, &self.counts),
            _ => {}
        }
    }

    /// Gives an `other` endpoint its own label if the budget has room now; `false` when it
    /// has none (or the endpoint is not folded).
    pub fn promote(&self) -> bool {
        if !self.is_folded() || !ENDPOINT_BUDGET.claim(&self.cluster, self.address) {
            return false;
        }
        if self
            .hold
            .compare_exchange(HOLDS_OTHER, HOLDS_OWN, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Released meanwhile: the claim is not needed.
            ENDPOINT_BUDGET.release(&self.cluster, self.address);
            return false;
        }
        // Counts first, label second: a scrape in between sees this endpoint in `other` with
        // nothing of its own left, never its counts twice.
        ENDPOINT_BUDGET.unfold(&self.cluster, &self.counts);
        *self.label.lock().unwrap_or_else(PoisonError::into_inner) =
            SharedString::from(self.address.to_string());
        true
    }
}

impl Drop for EndpointMetrics {
    fn drop(&mut self) {
        self.release();
    }
}

/// The label an endpoint gets once the budget is spent.
pub const OTHER_ENDPOINT: &str = "other";

/// Process-wide, like the recorder whose cardinality it guards. Starts at the config default
/// (`[metrics] max_endpoint_series = 1000`); [`set_max_endpoint_series`] applies the config.
static ENDPOINT_BUDGET: EndpointBudget = EndpointBudget::new(1000);

/// Sets `[metrics] max_endpoint_series` for endpoints created (or promoted) from now on (the
/// process's latest config wins; endpoints already labelled keep their label).
pub fn set_max_endpoint_series(max: usize) {
    ENDPOINT_BUDGET.max.store(max, Ordering::Relaxed);
}

/// The counts of `cluster`'s removed endpoints, which the `other` series keeps so a counter
/// never goes down (the scrape renders them, see `admin::endpoint_render`).
pub fn retired(cluster: &str) -> [u64; Outcome::ALL.len()] {
    ENDPOINT_BUDGET.retired(cluster)
}

/// Whether the process's budget has room and some endpoint is labelled `other`: then a
/// promotion pass over the endpoints can give labels out.
pub fn promotions_possible() -> bool {
    ENDPOINT_BUDGET.room() && ENDPOINT_BUDGET.folded() > 0
}

/// Hands out endpoint labels: while fewer than `max` distinct cluster + address pairs hold
/// one, a new pair gets its address; later ones get `other`. A label is held until released
/// (the endpoint left), so the budget counts endpoints that exist, not endpoints ever seen.
#[derive(Debug)]
pub struct EndpointBudget {
    max: AtomicUsize,
    /// Endpoints labelled `other` now.
    folded: AtomicUsize,
    /// A std `Mutex` is fine: taken only when an endpoint state is created, promoted or leaves
    /// (snapshot builds, off the request path) and at scrapes, never across an `.await`.
    labels: Mutex<Labels>,
}

#[derive(Debug)]
struct Labels {
    /// Pairs with their own label, and how many live states hold it: a state of a removed
    /// endpoint may outlive a new state for the same address, and the label is freed only
    /// when neither holds it.
    held: BTreeMap<(String, SocketAddr), usize>,
    /// Per cluster, the attempts of `other` endpoints that left or were promoted: part of the
    /// `other` series for the process's life (one entry per cluster name, bounded by the
    /// config), so that series never goes down.
    retired: BTreeMap<String, [u64; Outcome::ALL.len()]>,
}

impl EndpointBudget {
    /// A budget of `max` endpoint labels.
    pub const fn new(max: usize) -> Self {
        Self {
            max: AtomicUsize::new(max),
            folded: AtomicUsize::new(0),
            labels: Mutex::new(Labels {
                held: BTreeMap::new(),
                retired: BTreeMap::new(),
            }),
        }
    }

    /// Takes a label for `cluster`/`address`: `true` when it is the endpoint's own (then
    /// [`Self::release`] must give it back), `false` for `other` (counted as folded until
    /// [`Self::unfold`]).
    pub fn claim(&self, cluster: &str, address: SocketAddr) -> bool {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (cluster.to_owned(), address);
        let held = labels.held.len();
        if let Some(holders) = labels.held.get_mut(&key) {
            *holders += 1;
            true
        } else if held < self.max.load(Ordering::Relaxed) {
            labels.held.insert(key, 1);
            true
        } else {
            self.folded.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives back one hold of the label of `cluster`/`address`.
    pub fn release(&self, cluster: &str, address: SocketAddr) {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (cluster.to_owned(), address);
        if let Some(holders) = labels.held.get_mut(&key) {
            *holders -= 1;
            if *holders == 0 {
                labels.held.remove(&key);
            }
        }
    }

    /// An `other` endpoint of `cluster` leaves the fold (gone, or promoted): its counts move
    /// to the cluster's retired ones (swapped out, so none is counted twice or lost).
    fn unfold(&self, cluster: &str, counts: &OutcomeCounts) {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        let retired = labels.retired.entry(cluster.to_owned()).or_default();
        for (total, count) in retired.iter_mut().zip(counts) {
            *total += count.swap(0, Ordering::Relaxed);
        }
        drop(labels);
        let _ = self
            .folded
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The retired `other` counts of `cluster`.
    pub fn retired(&self, cluster: &str) -> [u64; Outcome::ALL.len()] {
        let labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        labels.retired.get(cluster).copied().unwrap_or_default()
    }

    /// Pairs holding their own label now.
    pub fn labelled(&self) -> usize {
        let labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        labels.held.len()
    }

    fn room(&self) -> bool {
        self.labelled() < self.max.load(Ordering::Relaxed)
    }

    fn folded(&self) -> usize {
        self.folded.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn endpoint_labels_fold_to_other_beyond_the_budget() {
        let budget = EndpointBudget::new(2);
        assert!(budget.claim("a", addr(1)));
        assert!(budget.claim("b", addr(1)));
        assert!(!budget.claim("a", addr(2)), "other");
        // Still held: a second state of the same pair shares its label.
        assert!(budget.claim("a", addr(1)));
        assert_eq!(budget.folded(), 1);
    }

    #[test]
    fn released_labels_go_to_new_endpoints() {
        let budget = EndpointBudget::new(1000);
        for port in 1..=1000 {
            assert!(budget.claim("c", addr(port)), "{port}");
        }
        assert!(!budget.claim("c", addr(1001)), "budget spent");
        for port in 1..=1000 {
            budget.release("c", addr(port));
        }
        assert_eq!(budget.labelled(), 0);
        assert!(
            budget.claim("c", addr(1002)),
            "a freed label is given out again"
        );
    }

    #[test]
    fn a_label_held_twice_frees_after_both_releases() {
        let budget = EndpointBudget::new(1);
        assert!(budget.claim("a", addr(1)));
        // A new state for the same address while the old one still runs a request.
        assert!(budget.claim("a", addr(1)));
        budget.release("a", addr(1));
        assert!(!budget.claim("a", addr(2)), "still held once");
        budget.release("a", addr(1));
        assert!(budget.claim("a", addr(2)));
    }

    #[test]
    fn other_counts_move_to_retired_and_never_go_down() {
        let budget = EndpointBudget::new(0);
        assert!(!budget.claim("a", addr(1)));
        let counts = OutcomeCounts::default();
        counts[0].fetch_add(3, Ordering::Relaxed);
        budget.unfold("a", &counts);
        assert_eq!(counts[0].load(Ordering::Relaxed), 0, "moved, not copied");
        assert_eq!(budget.retired("a")[0], 3);
        assert_eq!(budget.retired("b")[0], 0);
        assert_eq!(budget.folded(), 0);
    }
}
