//! Cluster limits (`circuit_breaker`): `max_connections`, `max_pending`, `max_requests`,
//! `max_retries`. Over a limit the request fails fast with 503 + `retry-after` and is counted in
//! `circuit_rejections_total{cluster,reason}` — Envoy's cluster circuit breaking, which protects
//! a struggling cluster from a pile-up instead of queueing into it.
//!
//! Counters are per-cluster atomics in [`ClusterHealth`], reserved with a compare-and-swap so
//! concurrent requests on different workers cannot overshoot a limit between check and
//! increment. A limit of 0 means "no limit".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::health::{saturating_decrement, ClusterHealth};
use crate::config::{ClusterConfig, Protocol};
use crate::wire::ProxyError;

/// Which limit refused a request (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// Every open connection is busy and the cluster has `max_connections` open.
    MaxConnections = 0,
    /// `max_pending` requests are already waiting for a response head.
    MaxPending = 1,
    /// `max_requests` requests are already in flight.
    MaxRequests = 2,
    /// `max_retries` retries are already in flight.
    MaxRetries = 3,
}

impl LimitReason {
    /// Every reason, in label-table order.
    pub const ALL: [LimitReason; 4] = [
        Self::MaxConnections,
        Self::MaxPending,
        Self::MaxRequests,
        Self::MaxRetries,
    ];

    /// The metric label value (the config key's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::MaxPending => "max_pending",
            Self::MaxRequests => "max_requests",
            Self::MaxRetries => "max_retries",
        }
    }
}

/// One reserved unit of a cluster counter; released on drop (so a cancelled request or a
/// panicking task still gives its slot back).
#[derive(Debug)]
#[must_use = "the slot is released when dropped"]
pub struct Slot {
    cluster: Arc<ClusterHealth>,
    which: Counter,
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    Requests,
    Pending,
    Retries,
}

fn counter(cluster: &ClusterHealth, which: Counter) -> &AtomicU64 {
    match which {
        Counter::Requests => &cluster.requests,
        Counter::Pending => &cluster.pending,
        Counter::Retries => &cluster.retries,
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        saturating_decrement(counter(&self.cluster, self.which));
    }
}

fn reserve(
    cluster: &Arc<ClusterHealth>,
    which: Counter,
    limit: u32,
    reason: LimitReason,
) -> Result<Slot, ProxyError> {
    let cap = u64::from(limit);
    let taken = counter(cluster, which).fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (limit == 0 || n < cap).then_some(n + 1)
    });
    if taken.is_err() {
        return Err(reject(cluster, reason));
    }
    Ok(Slot {
        cluster: Arc::clone(cluster),
        which,
    })
}

fn reject(cluster: &ClusterHealth, reason: LimitReason) -> ProxyError {
    cluster.count_rejection(reason);
    ProxyError::Overloaded {
        cluster: cluster.name().to_owned(),
        reason: reason.as_str(),
    }
}

/// What a request holds while it goes through a cluster: `pending` until the response head
/// arrives (drop it then), `request` until the response body ends (hand it to the in-flight
/// guard with `InFlightGuard::hold`).
#[derive(Debug)]
pub struct Admission {
    /// Counts against `max_pending`.
    pub pending: Slot,
    /// Counts against `max_requests`.
    pub request: Slot,
}

/// The cluster-limit check before picking an endpoint.
pub fn admit(config: &ClusterConfig, health: &Arc<ClusterHealth>) -> Result<Admission, ProxyError> {
    let limits = &config.circuit_breaker;
    // HTTP/1: a request needs a connection of its own; when every open one is busy and the
    // cluster is at `max_connections`, a new connection would be needed and is not allowed.
    // HTTP/2 multiplexes, so a new stream never needs a new connection.
    if config.protocol == Protocol::Http1 && limits.max_connections > 0 {
        let open = health.connections();
        if open >= u64::from(limits.max_connections) && health.requests() >= open {
            return Err(reject(health, LimitReason::MaxConnections));
        }
    }
    let request = reserve(
        health,
        Counter::Requests,
        limits.max_requests,
        LimitReason::MaxRequests,
    )?;
    let pending = reserve(
        health,
        Counter::Pending,
        limits.max_pending,
        LimitReason::MaxPending,
    )?;
    Ok(Admission { pending, request })
}

/// For the retry layer: reserves one of the cluster's `max_retries` concurrent retries; hold
/// the slot for the retry's duration.
pub fn try_retry(config: &ClusterConfig, health: &Arc<ClusterHealth>) -> Result<Slot, ProxyError> {
    reserve(
        health,
        Counter::Retries,
        config.circuit_breaker.max_retries,
        LimitReason::MaxRetries,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Arc<ClusterHealth> {
        Arc::new(ClusterHealth::new("c"))
    }

    #[test]
    fn reserve_stops_at_the_limit_and_drop_releases() {
        let c = cluster();
        let a = reserve(&c, Counter::Requests, 2, LimitReason::MaxRequests).expect("first");
        let b = reserve(&c, Counter::Requests, 2, LimitReason::MaxRequests).expect("second");
        let third = reserve(&c, Counter::Requests, 2, LimitReason::MaxRequests);
        assert!(matches!(
            third,
            Err(ProxyError::Overloaded {
                reason: "max_requests",
                ..
            })
        ));
        drop(a);
        let again = reserve(&c, Counter::Requests, 2, LimitReason::MaxRequests);
        assert!(again.is_ok());
        drop((b, again));
        assert_eq!(c.requests(), 0);
    }

    #[test]
    fn zero_means_unlimited() {
        let c = cluster();
        let slots: Vec<Slot> = (0..100)
            .map(|_| reserve(&c, Counter::Retries, 0, LimitReason::MaxRetries).expect("slot"))
            .collect();
        assert_eq!(slots.len(), 100);
    }
}
