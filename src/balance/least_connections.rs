//! `least_connections`: power of two choices on open upstream connections, as the endpoint's pool
//! counts them in [`EndpointState::connections`], weighted like `least_request`.
//!
//! Ties — common, since idle pooled connections count too and an HTTP/2 endpoint multiplexes on
//! one — are broken by in-flight requests, so two endpoints with equal pools still prefer the one
//! doing less work right now.

use std::time::{Duration, Instant};

use super::p2c::{Load, P2c};
use crate::endpoint::EndpointState;

/// Load = open connections, then requests in flight.
#[derive(Debug)]
pub(crate) struct Connections;

impl Load for Connections {
    const NAME: &'static str = "least_connections";
    const NEEDS_CLOCK: bool = false;

    fn costs(
        a: &EndpointState,
        b: &EndpointState,
        _now: Option<Instant>,
    ) -> ((f64, f64), (f64, f64)) {
        let cost = |e: &EndpointState| (e.connections() as f64 + 1.0, e.in_flight() as f64 + 1.0);
        (cost(a), cost(b))
    }
}

/// The `least_connections` balancer.
pub(crate) fn new(weights: &[u32], slow_start: Duration) -> P2c<Connections> {
    P2c::new(weights, slow_start)
}

#[cfg(test)]
mod tests {
    use super::super::p2c::tests::{endpoints, first_counts};
    use super::*;

    #[test]
    fn fewer_connections_win_then_fewer_requests() {
        let eps = endpoints(2);
        eps[0].connection_opened();
        eps[0].connection_opened();
        eps[1].connection_opened();
        let _busy = (eps[1].start_request(), eps[1].start_request());
        let counts = first_counts(&new(&[1, 1], Duration::ZERO), &eps, 500);
        assert_eq!(counts, vec![0, 500]);
        // Equal connections: in-flight decides.
        eps[1].connection_opened();
        let counts = first_counts(&new(&[1, 1], Duration::ZERO), &eps, 500);
        assert_eq!(counts, vec![500, 0]);
    }
}
