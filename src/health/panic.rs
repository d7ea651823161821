//! Panic mode (Envoy's panic threshold): when fewer than `panic_threshold` of a cluster's
//! endpoints pass active health checks, the checks are probably wrong (or the whole cluster is
//! struggling), and sending everything to the few "healthy" ones would overload them. So traffic
//! spreads over all endpoints again, healthy or not. Ejected endpoints stay out even then: an
//! open breaker means the endpoint failed real requests, not just probes.

use std::sync::Arc;

use super::state::ClusterHealth;
use crate::runtime::EndpointState;

/// Whether `endpoints` are in panic: some fail active checks, and the passing fraction is
/// below `threshold`. An empty cluster is not in panic (there is nothing to spread over).
pub fn in_panic(endpoints: &[Arc<EndpointState>], threshold: f64) -> bool {
    if endpoints.is_empty() {
        return false;
    }
    let healthy = endpoints.iter().filter(|e| e.is_healthy()).count();
    (healthy as f64) < threshold * endpoints.len() as f64
}

/// Publishes the panic flag (request path, `panic_mode{cluster}`), logging changes.
pub fn publish(cluster: &ClusterHealth, on: bool) {
    if cluster.panic() != on {
        if on {
            tracing::warn!(
                cluster = cluster.name(),
                "panic mode: too few endpoints pass health checks; balancing across all"
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
}
