//! `peak_ewma`: power of two choices on cost = peak-sensitive latency EWMA × (in flight + 1)
//! (Finagle's `PeakEwma`, as in linkerd and tower's `load::peak_ewma`).
//!
//! The estimate jumps straight up to any sample above it ("peak") and otherwise decays towards
//! new samples with weight `1 - e^(-Δt/τ)`, τ = [`DECAY`]: one slow response makes an endpoint
//! expensive at once, and it earns its way back over seconds. At pick time the estimate is also
//! decayed towards zero by the time since its last sample, so an endpoint that stopped getting
//! traffic because it was slow is tried again eventually rather than starved forever.
//!
//! Samples live in [`EndpointState`] (shared by every worker and surviving reloads) and are fed
//! by [`observe`], which the request handler calls with each response's time to headers.
//!
//! An endpoint with no sample yet is scored with its rival's latency, so the comparison falls to
//! in-flight counts: neither starved (tower uses a large default RTT) nor flooded (a zero one).

use std::time::{Duration, Instant};

use super::p2c::{Load, P2c};
use crate::endpoint::EndpointState;

/// The EWMA's time constant τ (Finagle and linkerd use 10 s).
pub const DECAY: Duration = Duration::from_secs(10);

/// Smallest sample stored, so a real sample is never mistaken for "no sample yet" (0).
const MIN_SAMPLE_MS: f64 = 0.001;

/// Folds one response latency, measured up to `now`, into `endpoint`'s peak EWMA.
pub fn observe(endpoint: &EndpointState, latency: Duration, now: Instant) {
    let sample = (latency.as_secs_f64() * 1000.0).max(MIN_SAMPLE_MS);
    endpoint.update_ewma_ms(now, |previous, since| {
        if previous <= 0.0 || sample > previous {
            sample
        } else {
            let decay = (-since.as_secs_f64() / DECAY.as_secs_f64()).exp();
            previous * decay + sample * (1.0 - decay)
        }
    });
}

/// The estimate at `now`: the stored EWMA decayed towards zero by the time since its sample;
/// `None` before the first sample.
pub fn estimate_ms(endpoint: &EndpointState, now: Instant) -> Option<f64> {
    let stored = endpoint.ewma_ms();
    if stored <= 0.0 {
        return None;
    }
    let since = now.saturating_duration_since(endpoint.ewma_stamp());
    Some(stored * (-since.as_secs_f64() / DECAY.as_secs_f64()).exp())
}

/// Load = decayed peak EWMA × (in flight + 1).
///
/// Both estimates decay by `e^(-(now - stamp)/τ)`; in a comparison the common `e^(-now/τ)`
/// cancels, so `a`'s estimate is scaled by `e^((stamp_a - stamp_b)/τ)` instead. Same order, one
/// `exp` instead of two and no clock read (together a third of the pick's cost).
#[derive(Debug)]
pub(crate) struct PeakEwma;

impl Load for PeakEwma {
    const NAME: &'static str = "peak_ewma";
    const NEEDS_CLOCK: bool = false;

    fn costs(
        a: &EndpointState,
        b: &EndpointState,
        _now: Option<Instant>,
    ) -> ((f64, f64), (f64, f64)) {
        let (ea, eb) = (a.ewma_ms(), b.ewma_ms());
        // Without a sample, borrow the rival's (decayed alike); without either, latency cancels.
        let (la, lb) = if ea > 0.0 && eb > 0.0 {
            let (sa, sb) = (a.ewma_stamp(), b.ewma_stamp());
            let apart = if sa >= sb {
                sa.duration_since(sb).as_secs_f64()
            } else {
                -sb.duration_since(sa).as_secs_f64()
            };
            let x = apart / DECAY.as_secs_f64();
            // Under steady traffic both samples are recent and x is tiny: a Taylor polynomial
            // (error below 3e-5 for |x| < 0.05) saves the `exp` call. Clamped so estimates
            // hours apart cannot overflow to infinity.
            let scale = if x.abs() < 0.05 {
                1.0 + x + x * x / 2.0
            } else {
                x.clamp(-700.0, 700.0).exp()
            };
            (ea * scale, eb)
        } else {
            (1.0, 1.0)
        };
        let cost = |latency: f64, e: &EndpointState| (latency * (e.in_flight() as f64 + 1.0), 0.0);
        (cost(la, a), cost(lb, b))
    }
}

/// The `peak_ewma` balancer.
pub(crate) fn new(weights: &[u32], slow_start: Duration) -> P2c<PeakEwma> {
    P2c::new(weights, slow_start)
}

#[cfg(test)]
mod tests {
    use super::super::p2c::tests::{endpoints, first_counts};
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn peaks_jump_up_and_decay_down() {
        let e = &endpoints(1)[0];
        let t0 = Instant::now();
        observe(e, ms(10), t0);
        assert!((e.ewma_ms() - 10.0).abs() < 1e-9);
        observe(e, ms(100), t0 + ms(1));
        assert!((e.ewma_ms() - 100.0).abs() < 1e-9, "peak taken at once");
        // A 10 ms sample τ later pulls the estimate most of the way down: 100/e + 10(1 - 1/e).
        observe(e, ms(10), t0 + ms(1) + DECAY);
        let expected = 100.0 / std::f64::consts::E + 10.0 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((e.ewma_ms() - expected).abs() < 0.01, "{}", e.ewma_ms());
        // Reading decays towards zero with time, without writing.
        let later = estimate_ms(e, e.ewma_stamp() + DECAY).expect("sampled");
        assert!(
            (later - expected / std::f64::consts::E).abs() < 0.01,
            "{later}"
        );
    }

    #[test]
    fn an_old_peak_has_decayed_by_comparison_time() {
        let eps = endpoints(2);
        let t0 = Instant::now();
        // Endpoint 0 was slow (100 ms) 20 s (2τ) before endpoint 1 answered in 30 ms: decayed
        // to 100 / e² ≈ 13.5 ms, it is now the cheaper one.
        observe(&eps[0], ms(100), t0);
        observe(&eps[1], ms(30), t0 + 2 * DECAY);
        let balancer = new(&[1, 1], Duration::ZERO);
        assert_eq!(first_counts(&balancer, &eps, 100), vec![100, 0]);
        // Only 5 s apart, 100 / e^0.5 ≈ 61 ms still loses to 30 ms.
        let eps = endpoints(2);
        observe(&eps[0], ms(100), t0);
        observe(&eps[1], ms(30), t0 + DECAY / 2);
        assert_eq!(first_counts(&balancer, &eps, 100), vec![0, 100]);
    }

    #[test]
    fn a_slow_endpoint_loses_and_unsampled_ones_compete_on_in_flight() {
        let eps = endpoints(2);
        let balancer = new(&[1, 1], Duration::ZERO);
        // No samples: in-flight decides.
        let _busy = eps[0].start_request();
        assert_eq!(first_counts(&balancer, &eps, 200), vec![0, 200]);
        // Endpoint 1 is 10× slower: 1 in flight at 10 ms (cost 20) beats 0 at 100 ms (100).
        observe(&eps[0], ms(10), Instant::now());
        observe(&eps[1], ms(100), Instant::now());
        assert_eq!(first_counts(&balancer, &eps, 200), vec![200, 0]);
        // Only endpoint 1 sampled: endpoint 0 borrows its latency, in-flight decides again.
        let eps2 = endpoints(2);
        observe(&eps2[1], ms(100), Instant::now());
        let _busy2 = eps2[1].start_request();
        assert_eq!(first_counts(&balancer, &eps2, 200), vec![200, 0]);
    }
}
