//! Endpoint-labelled series (`upstream_requests_total{cluster,endpoint,outcome}`) and the
//! `[metrics] max_endpoint_series` budget that keeps their cardinality bounded.
//!
//! An endpoint's label is fixed when its [`crate::runtime::EndpointState`] is created (snapshot
//! builds, off the request path): its address while the budget lasts, `other` after. Discovery
//! churn (a new address per deploy) can then never grow the scrape without bound.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{Counter, SharedString};

use super::metrics::UPSTREAM_REQUESTS_TOTAL;
use crate::upstream::Outcome;

/// The metric labels of one endpoint, fixed when its state is created: the address, or `other`
/// once `[metrics] max_endpoint_series` endpoints have their own label.
#[derive(Debug)]
pub struct EndpointMetrics {
    cluster: SharedString,
    endpoint: SharedString,
    outcomes: [OnceLock<Counter>; Outcome::ALL.len()],
}

impl EndpointMetrics {
    /// Labels for endpoint `address` of `cluster`, folding to `other` when the process's
    /// endpoint-series budget is spent.
    pub fn new(cluster: &str, address: SocketAddr) -> Self {
        Self {
            cluster: SharedString::from(cluster.to_owned()),
            endpoint: ENDPOINT_BUDGET.label(cluster, address),
            outcomes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The `endpoint` label value: the address, or `other`.
    pub fn endpoint_label(&self) -> &SharedString {
        &self.endpoint
    }

    /// Counts one attempt at this endpoint in `upstream_requests_total`.
    pub fn record_upstream(&self, outcome: Outcome) {
        self.outcomes[outcome.index()]
            .get_or_init(|| {
                metrics::counter!(
                    UPSTREAM_REQUESTS_TOTAL,
                    "cluster" => self.cluster.clone(),
                    "endpoint" => self.endpoint.clone(),
                    "outcome" => outcome.as_str()
                )
            })
            .increment(1);
    }
}

/// The label an endpoint gets once the budget is spent.
pub const OTHER_ENDPOINT: &str = "other";

/// Process-wide, like the recorder whose cardinality it guards. Starts at the config default
/// (`[metrics] max_endpoint_series = 1000`); [`set_max_endpoint_series`] applies the config.
static ENDPOINT_BUDGET: EndpointBudget = EndpointBudget::new(1000);

/// Sets `[metrics] max_endpoint_series` for endpoints created from now on (the process's
/// latest config wins; endpoints already labelled keep their label).
pub fn set_max_endpoint_series(max: usize) {
    ENDPOINT_BUDGET.max.store(max, Ordering::Relaxed);
}

/// Hands out endpoint labels: the first `max` distinct cluster + address pairs get their
/// address, later ones `other`. A pair seen before keeps its own label (its series exist
/// already), so an endpoint that leaves and comes back does not spend the budget twice.
#[derive(Debug)]
pub struct EndpointBudget {
    max: AtomicUsize,
    /// Pairs with their own label. A std `Mutex` is fine: taken only when an endpoint state is
    /// created (snapshot builds, off the request path), never across an `.await`.
    labelled: Mutex<Option<HashSet<(String, SocketAddr)>>>,
}

impl EndpointBudget {
    /// A budget of `max` endpoint labels.
    pub const fn new(max: usize) -> Self {
        Self {
            max: AtomicUsize::new(max),
            labelled: Mutex::new(None),
        }
    }

    /// The label for `cluster`/`address`.
    pub fn label(&self, cluster: &str, address: SocketAddr) -> SharedString {
        let mut labelled = self.labelled.lock().unwrap_or_else(PoisonError::into_inner);
        let labelled = labelled.get_or_insert_with(HashSet::new);
        let key = (cluster.to_owned(), address);
        if labelled.contains(&key) || labelled.len() < self.max.load(Ordering::Relaxed) {
            labelled.insert(key);
            SharedString::from(address.to_string())
        } else {
            SharedString::const_str(OTHER_ENDPOINT)
        }
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
        assert_eq!(&*budget.label("a", addr(1)), "127.0.0.1:1");
        assert_eq!(&*budget.label("b", addr(1)), "127.0.0.1:1");
        assert_eq!(&*budget.label("a", addr(2)), OTHER_ENDPOINT);
        // Seen before: keeps its own series.
        assert_eq!(&*budget.label("a", addr(1)), "127.0.0.1:1");
    }
}
