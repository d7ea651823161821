//! Bounded loads (`balance_factor`): under concurrent, Zipf-skewed traffic no endpoint's
//! in-flight count exceeds ⌈c × (total in flight + 1) / n⌉ at admission.
//!
//! Each round, 8 threads admit requests concurrently and hold them (so totals only grow within
//! the round), checking after every admission that its endpoint is within ⌈c × T / n⌉ for the
//! total T read afterwards; then everything is released. While totals only grow, a correct
//! compare-and-swap admission implies exactly that bound, so any overshoot fails the test.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use switchyard::balance::{self, Balancer, PickContext};
use switchyard::config::{BalanceAlgorithm, HashOn};
use switchyard::endpoint::{EndpointState, InFlightGuard};

const ENDPOINTS: usize = 10;
const THREADS: usize = 8;
const ROUNDS: usize = 25;
const PER_ROUND: usize = 40;
const C: f64 = 1.25;
const KEYS: usize = 1000;

/// Cumulative Zipf(s = 1.2) over `KEYS` keys: key 0 alone draws about a fifth of the traffic.
fn zipf_cdf() -> Vec<f64> {
    let weights: Vec<f64> = (1..=KEYS).map(|k| 1.0 / (k as f64).powf(1.2)).collect();
    let total: f64 = weights.iter().sum();
    weights
        .iter()
        .scan(0.0, |sum, w| {
            *sum += w / total;
            Some(*sum)
        })
        .collect()
}

fn key_hash(key: usize) -> u64 {
    let path = format!("/user/{key}");
    balance::request_hash(&HashOn::Path, &http::HeaderMap::new(), &path, None).expect("path")
}

/// ⌈c × t / n⌉ for c = 5/4, in integers.
fn bound(total: u64) -> u64 {
    (5 * total).div_ceil(4 * ENDPOINTS as u64)
}

/// Runs the workload; returns the largest `load - bound` seen (≤ 0 means the cap held).
fn worst_overshoot(algorithm: BalanceAlgorithm, factor: Option<f64>) -> i64 {
    let listed: Vec<(String, u32)> = (0..ENDPOINTS)
        .map(|i| (format!("10.0.0.{i}:80"), 1))
        .collect();
    let states: Arc<Vec<Arc<EndpointState>>> = Arc::new(
        listed
            .iter()
            .map(|(a, _)| {
                let addr: SocketAddr = a.parse().expect("address");
                Arc::new(EndpointState::new("c", addr, 1))
            })
            .collect(),
    );
    let balancer: Arc<dyn Balancer> =
        Arc::from(balance::hashing(algorithm, &listed, factor, Duration::ZERO));
    let cdf = Arc::new(zipf_cdf());
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (states, balancer, cdf, barrier) = (
                Arc::clone(&states),
                Arc::clone(&balancer),
                Arc::clone(&cdf),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                let mut worst = i64::MIN;
                for _ in 0..ROUNDS {
                    barrier.wait();
                    let mut held: Vec<InFlightGuard> = Vec::with_capacity(PER_ROUND);
                    for _ in 0..PER_ROUND {
                        let u = rng.f64();
                        let key = cdf.partition_point(|&c| c < u).min(KEYS - 1);
                        let ctx = PickContext {
                            endpoints: &states,
                            client: None,
                            random: rng.u64(..),
                            hash: Some(key_hash(key)),
                        };
                        let (index, guard) =
                            balance::choose(balancer.as_ref(), &ctx, |_| true).expect("endpoint");
                        let load = states[index].in_flight();
                        let total: u64 = states.iter().map(|e| e.in_flight()).sum();
                        worst = worst.max(load as i64 - bound(total) as i64);
                        held.push(guard);
                    }
                    // Everyone finishes admitting before anyone releases.
                    barrier.wait();
                    drop(held);
                }
                worst
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("worker thread"))
        .max()
        .unwrap_or(i64::MIN)
}

#[test]
fn bounded_loads_never_exceed_the_cap_under_concurrency() {
    for algorithm in [BalanceAlgorithm::RingHash, BalanceAlgorithm::Maglev] {
        let worst = worst_overshoot(algorithm, Some(C));
        assert!(
            worst <= 0,
            "{algorithm:?}: an endpoint went {worst} over the cap"
        );
    }
}

#[test]
fn without_a_balance_factor_the_same_traffic_overshoots() {
    // The workload is skewed enough that plain hashing breaks the cap: the test above can fail.
    for algorithm in [BalanceAlgorithm::RingHash, BalanceAlgorithm::Maglev] {
        let worst = worst_overshoot(algorithm, None);
        assert!(
            worst > 0,
            "{algorithm:?}: plain hashing stayed within the cap ({worst})"
        );
    }
}
