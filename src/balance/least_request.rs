//! `least_request`: power of two choices on in-flight requests, weighted as
//! `weight / (active + 1)` (Envoy's default balancer). A request without a hash key on a hashing
//! cluster is balanced by this too.

use std::time::{Duration, Instant};

use super::p2c::{Load, P2c};
use crate::endpoint::EndpointState;

/// Load = requests in flight to the endpoint, plus the one about to be sent.
#[derive(Debug)]
pub(crate) struct InFlight;

impl Load for InFlight {
    const NAME: &'static str = "least_request";
    const NEEDS_CLOCK: bool = false;

    fn costs(
        a: &EndpointState,
        b: &EndpointState,
        _now: Option<Instant>,
    ) -> ((f64, f64), (f64, f64)) {
        let cost = |e: &EndpointState| (e.in_flight() as f64 + 1.0, 0.0);
        (cost(a), cost(b))
    }
}

/// The `least_request` balancer.
pub(crate) fn new(weights: &[u32], slow_start: Duration) -> P2c<InFlight> {
    P2c::new(weights, slow_start)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::p2c::tests::{endpoints, first_counts};
    use super::*;

    #[test]
    fn the_single_busiest_endpoint_is_never_first() {
        for n in [2, 3, 10] {
            let eps = endpoints(n);
            // Endpoint 1 strictly busiest; the rest hold assorted lower loads.
            let guards: Vec<_> = (0..5).map(|_| eps[1].start_request()).collect();
            let other: Vec<_> = (0..n)
                .filter(|&i| i != 1)
                .map(|i| eps[i].start_request())
                .collect();
            let counts = first_counts(&new(&vec![1; n], Duration::ZERO), &eps, 5000);
            assert_eq!(counts[1], 0, "n={n}: {counts:?}");
            drop((guards, other));
        }
    }

    #[test]
    fn weights_divide_the_load() {
        // Endpoint 0 weight 3 with 2 in flight scores 3/3 = 1 per... cost (2+1)/3 = 1;
        // endpoint 1 weight 1 with 1 in flight costs (1+1)/1 = 2: endpoint 0 wins.
        let eps = endpoints(2);
        let _a = (eps[0].start_request(), eps[0].start_request());
        let _b = eps[1].start_request();
        let counts = first_counts(&new(&[3, 1], Duration::ZERO), &eps, 1000);
        assert_eq!(counts, vec![1000, 0]);
    }

    #[test]
    fn equal_load_spreads_evenly() {
        let eps = endpoints(4);
        let counts = first_counts(&new(&[1; 4], Duration::ZERO), &eps, 40_000);
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{c}");
        }
    }

    #[test]
    fn slow_start_holds_a_new_endpoint_back() {
        let old = endpoints(1).remove(0);
        // Let the old endpoint's 50 ms ramp finish (time passing is the point here, not
        // synchronisation), then add a new one: ~10 % of its weight against the old one's 100 %.
        let ramp = Duration::from_millis(50);
        while old.created().elapsed() < ramp {
            std::hint::spin_loop();
        }
        let new_one = Arc::new(EndpointState::new(
            "c",
            "127.0.0.1:9999".parse().expect("addr"),
            1,
        ));
        let eps = vec![old, new_one];
        // The idle new endpoint (cost 1 / ~0.1) loses to the old one even with 2 in flight there
        // (cost 3 / 1) during the first quarter of its ramp (13 ms of slack for a slow machine).
        let _busy: Vec<_> = (0..2).map(|_| eps[0].start_request()).collect();
        let counts = first_counts(&new(&[1, 1], ramp), &eps, 50);
        assert_eq!(counts[0], 50, "{counts:?}");
        // Without slow start the idle endpoint wins every time.
        let counts = first_counts(&new(&[1, 1], Duration::ZERO), &eps, 50);
        assert_eq!(counts[1], 50, "{counts:?}");
    }
}
