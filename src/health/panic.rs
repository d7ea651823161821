//! Panic mode (Envoy's panic threshold): when fewer than `panic_threshold` of a cluster's
//! endpoints are in service — passing active checks and not ejected — the checks are probably
//! wrong or the whole cluster is struggling, and sending everything to the few left would
//! overload them. So traffic spreads over all endpoints again, failing checks, ejected or
//! half-open alike (Envoy's panic routing includes outlier-ejected hosts too). Ejection itself
//! keeps at least one endpoint in service, but health checks can take out the rest, and so a
//! cluster that has endpoints is never left with nowhere to send a request. `panic_threshold =
//! 0` turns panic mode off: then a cluster with every endpoint out answers 503.
//!
//! The health task publishes the flag after the change that causes it, so a request in
//! between could find every endpoint out and the flag not yet up: the request path covers that
//! moment itself (see [`super::panic_routes`]).

use std::sync::Arc;

use crate::endpoint::ClusterHealth;
use crate::endpoint::{BreakerPhase, EndpointState};

/// Whether `endpoint` counts as in service: passing active checks (always, without them) and
/// breaker closed. A half-open endpoint is still on trial, so it does not count yet — the same
/// rule `max_percent` counts ejections by.
pub fn in_service(endpoint: &EndpointState) -> bool {
    endpoint.is_healthy() && endpoint.breaker() == BreakerPhase::Closed
}

/// Whether `endpoints` are in panic: the fraction in service is below `threshold`. An empty
/// cluster is not in panic (there is nothing to spread over).
pub fn in_panic(endpoints: &[Arc<EndpointState>], threshold: f64) -> bool {
    if endpoints.is_empty() {
        return false;
    }
    let serving = endpoints.iter().filter(|e| in_service(e)).count();
    (serving as f64) < threshold * endpoints.len() as f64
}

/// Publishes the panic flag (request path, `panic_mode{cluster}`), logging changes.
pub fn publish(cluster: &ClusterHealth, on: bool) {
    if cluster.panic() != on {
        if on {
            tracing::warn!(
                cluster = cluster.name(),
                "panic mode: too few endpoints in service; balancing across all of them"
            );
        } else {
            tracing::info!(cluster = cluster.name(), "panic mode over");
        }
    }
    cluster.set_panic(on);
    metrics::gauge!(super::PANIC_MODE, "cluster" => cluster.name().to_owned()).set(if on {
        1.0
    } else {
        0.0
    });
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn endpoints(healthy: &[bool]) -> Vec<Arc<EndpointState>> {
        healthy
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let port = u16::try_from(i + 1).expect("small");
                let e = EndpointState::new("c", SocketAddr::from(([127, 0, 0, 1], port)), 1);
                e.set_healthy(h);
                Arc::new(e)
            })
            .collect()
    }

    #[test]
    fn below_threshold_is_panic() {
        assert!(!in_panic(&endpoints(&[true, true, false, false]), 0.5));
        assert!(in_panic(&endpoints(&[true, false, false, false]), 0.5));
        assert!(in_panic(&endpoints(&[false, false]), 0.5));
        assert!(!in_panic(&endpoints(&[false, false]), 0.0));
        assert!(!in_panic(&[], 0.5));
    }

    #[test]
    fn ejected_and_half_open_endpoints_are_out_of_service() {
        let eps = endpoints(&[true, true, true, true]);
        eps[0].set_breaker(BreakerPhase::Open);
        assert!(!in_panic(&eps, 0.5), "three of four in service");
        eps[1].set_breaker(BreakerPhase::HalfOpen);
        assert!(!in_panic(&eps, 0.5), "two of four");
        eps[2].set_healthy(false);
        assert!(
            in_panic(&eps, 0.5),
            "one of four: an ejection and a failing check add up"
        );
        assert!(!in_service(&eps[1]));
        assert!(in_service(&eps[3]));
    }
}
