//! Bounded loads for the hashing balancers (`balance_factor = c`): "Consistent Hashing with
//! Bounded Loads", Mirrokni, Thorup and Zadimoghaddam, SODA 2018 (as in HAProxy's
//! `hash-balance-factor` and Envoy's `hash_balance_factor`).
//!
//! A request may go to an endpoint only if that endpoint's in-flight count after the increment
//! stays ≤ ⌈c × (T + 1) × share⌉, where T is the cluster's total in flight before this request
//! and share = weight / total weight (1/n with equal weights, the paper's ⌈c(T+1)/n⌉).
//! Otherwise the request walks on from its hashed position to the next candidate. Hot keys thus
//! spill onto their ring neighbours instead of melting one endpoint, while every other key keeps
//! its endpoint. The increment is a compare-and-swap against the cap
//! ([`EndpointState::try_start_request`]), so concurrent requests cannot all pass the check and
//! then overshoot together.
//!
//! T is summed over the cluster's endpoints at admission (O(n) relaxed loads, only for clusters
//! with `balance_factor`) rather than kept in one shared counter that every request of every
//! cluster would contend on. A stale (low) T only makes the cap stricter; the caps always add up
//! to more than T, so some endpoint has room, and [`choose`](super::choose) takes the first
//! usable one anyway in the rare race where every cap looks full.

use std::sync::Arc;

use crate::endpoint::{EndpointState, InFlightGuard};

/// ⌈c × (total_in_flight + 1) × share⌉, at least 1. A hair below the exact value is rounded
/// down first, so float error never turns an exact integer cap into the next one.
pub fn bounded_cap(c: f64, total_in_flight: u64, share: f64) -> u64 {
    let cap = c * (total_in_flight as f64 + 1.0) * share;
    ((cap - 1e-9).ceil() as u64).max(1)
}

/// Admits one request to `endpoints[index]` under the cap, or refuses.
pub(crate) fn admit(
    endpoints: &[Arc<EndpointState>],
    index: usize,
    c: f64,
    share: f64,
) -> Option<InFlightGuard> {
    let endpoint = endpoints.get(index)?;
    let total: u64 = endpoints.iter().map(|e| e.in_flight()).sum();
    endpoint.try_start_request(bounded_cap(c, total, share))
}

#[cfg(test)]
mod tests {
    use super::super::p2c::tests::endpoints;
    use super::*;

    #[test]
    fn cap_matches_the_integer_formula() {
        // c = 1.25 = 5/4: ⌈5(T+1) / 4n⌉ in integers.
        for n in 1..20u64 {
            for total in 0..200u64 {
                let exact = (5 * (total + 1)).div_ceil(4 * n);
                assert_eq!(
                    bounded_cap(1.25, total, 1.0 / n as f64),
                    exact.max(1),
                    "n={n} T={total}"
                );
            }
        }
    }

    #[test]
    fn admission_stops_at_the_cap() {
        let eps = endpoints(4);
        let mut guards = Vec::new();
        // T = 0: cap ⌈1.25 × 1 / 4⌉ = 1.
        guards.push(admit(&eps, 0, 1.25, 0.25).expect("room"));
        // T = 1: cap ⌈1.25 × 2 / 4⌉ = 1, endpoint 0 is full.
        assert!(admit(&eps, 0, 1.25, 0.25).is_none());
        guards.push(admit(&eps, 1, 1.25, 0.25).expect("room"));
        assert_eq!(eps[0].in_flight(), 1);
        drop(guards);
        assert_eq!(eps[0].in_flight() + eps[1].in_flight(), 0);
    }
}
