//! State-machine tests of the one ejection path: explicit instants, no sockets, no sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::OutlierDetection;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: 5,
        consecutive_gateway_errors: 3,
        failure_rate: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        success_rate_stdev: 1.9,
        base_time: Duration::from_millis(500),
        max_time: Duration::from_millis(1200),
        max_percent: 50,
        probe_requests: 3,
    }
}

fn setup(n: u16, config: OutlierDetection) -> (Ejector, Vec<Arc<EndpointState>>) {
    let endpoints: Vec<Arc<EndpointState>> = (1..=n)
        .map(|p| Arc::new(EndpointState::new("c", addr(p), 1)))
        .collect();
    let mut ejector = Ejector::new(config.clone());
    ejector.set_endpoints(&endpoints, config);
    (ejector, endpoints)
}

fn feed(ejector: &mut Ejector, port: u16, attempt: Attempt, times: usize, now: Instant) {
    for _ in 0..times {
        ejector.on_outcome(addr(port), attempt, now);
    }
}

#[test]
fn consecutive_gateway_errors_eject_on_the_third() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    feed(&mut ej, 1, Attempt::GatewayError, 2, now);
    assert_eq!(eps[0].breaker(), BreakerPhase::Closed);
    feed(&mut ej, 1, Attempt::GatewayError, 1, now);
    assert_eq!(eps[0].breaker(), BreakerPhase::Open);
    assert_eq!(
        eps[0].health().trigger(),
        Some(Trigger::ConsecutiveGatewayErrors)
    );
    assert_eq!(eps[0].ejections(), 1);
    assert_eq!(ej.next_deadline(), Some(now + Duration::from_millis(500)));
}

#[test]
fn consecutive_5xx_ejects_and_success_resets_the_count() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    feed(&mut ej, 2, Attempt::ServerError, 4, now);
    feed(&mut ej, 2, Attempt::Success, 1, now);
    feed(&mut ej, 2, Attempt::ServerError, 4, now);
    assert_eq!(eps[1].breaker(), BreakerPhase::Closed);
    feed(&mut ej, 2, Attempt::ServerError, 1, now);
    assert_eq!(eps[1].breaker(), BreakerPhase::Open);
    assert_eq!(eps[1].health().trigger(), Some(Trigger::Consecutive5xx));
}

#[test]
fn failure_rate_needs_min_requests() {
    let mut c = config();
    c.consecutive_5xx = 0;
    c.consecutive_gateway_errors = 0;
    let (mut ej, eps) = setup(4, c);
    let now = Instant::now();
    for _ in 0..9 {
        feed(&mut ej, 1, Attempt::ServerError, 1, now);
        feed(&mut ej, 1, Attempt::Success, 1, now);
    }
    assert_eq!(eps[0].breaker(), BreakerPhase::Closed, "18 requests < 20");
    feed(&mut ej, 1, Attempt::Success, 1, now);
    feed(&mut ej, 1, Attempt::ServerError, 1, now);
    assert_eq!(eps[0].breaker(), BreakerPhase::Open);
    assert_eq!(eps[0].health().trigger(), Some(Trigger::FailureRate));
}

#[test]
fn success_rate_outlier_is_ejected_on_tick() {
    let mut c = config();
    c.consecutive_5xx = 0;
    c.consecutive_gateway_errors = 0;
    c.failure_rate = 1.0;
    c.success_rate_stdev = 1.0;
    let (mut ej, eps) = setup(4, c);
    let now = Instant::now();
    for port in 1..=3 {
        feed(&mut ej, port, Attempt::Success, 30, now);
    }
    for _ in 0..15 {
        feed(&mut ej, 4, Attempt::Success, 1, now);
        feed(&mut ej, 4, Attempt::ServerError, 1, now);
    }
    assert_eq!(eps[3].breaker(), BreakerPhase::Closed);
    ej.on_tick(now);
    assert_eq!(eps[3].breaker(), BreakerPhase::Open);
    assert_eq!(eps[3].health().trigger(), Some(Trigger::SuccessRate));
    assert!(eps[..3].iter().all(|e| e.breaker() == BreakerPhase::Closed));
}

#[test]
fn half_open_admits_exactly_probe_requests_and_successes_close() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    feed(&mut ej, 1, Attempt::GatewayError, 3, now);
    let later = now + Duration::from_millis(500);
    ej.on_deadline(later - Duration::from_millis(1));
    assert_eq!(eps[0].breaker(), BreakerPhase::Open, "not yet");
    ej.on_deadline(later);
    assert_eq!(eps[0].breaker(), BreakerPhase::HalfOpen);
    let h = eps[0].health();
    assert!(h.take_permit() && h.take_permit() && h.take_permit());
    assert!(!h.take_permit(), "exactly probe_requests trials");
    feed(&mut ej, 1, Attempt::Success, 2, later);
    assert_eq!(eps[0].breaker(), BreakerPhase::HalfOpen);
    feed(&mut ej, 1, Attempt::Success, 1, later);
    assert_eq!(eps[0].breaker(), BreakerPhase::Closed);
    assert_eq!(eps[0].ejected_until_ms(), 0);
}

#[test]
fn a_failed_trial_re_ejects_for_longer_up_to_max_time() {
    let (mut ej, eps) = setup(4, config());
    let mut now = Instant::now();
    feed(&mut ej, 1, Attempt::GatewayError, 3, now);
    let mut lengths = Vec::new();
    for _ in 0..3 {
        let deadline = ej.next_deadline().expect("ejected");
        lengths.push(deadline - now);
        now = deadline;
        ej.on_deadline(now);
        assert_eq!(eps[0].breaker(), BreakerPhase::HalfOpen);
        feed(&mut ej, 1, Attempt::GatewayError, 1, now);
        assert_eq!(eps[0].health().trigger(), Some(Trigger::HalfOpenFailure));
    }
    let ms: Vec<u128> = lengths.iter().map(Duration::as_millis).collect();
    assert_eq!(
        ms,
        [500, 1000, 1200],
        "base × times ejected, capped at max_time"
    );
    assert_eq!(eps[0].ejections(), 4);
}

#[test]
fn max_percent_holds_but_one_may_always_go() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    for port in 1..=4 {
        feed(&mut ej, port, Attempt::GatewayError, 3, now);
    }
    let open = eps
        .iter()
        .filter(|e| e.breaker() == BreakerPhase::Open)
        .count();
    assert_eq!(open, 2, "50 % of 4");

    let mut c = config();
    c.max_percent = 0;
    let (mut ej, eps) = setup(3, c);
    for port in 1..=3 {
        feed(&mut ej, port, Attempt::GatewayError, 3, now);
    }
    let open = eps
        .iter()
        .filter(|e| e.breaker() == BreakerPhase::Open)
        .count();
    assert_eq!(open, 1);
}

#[test]
fn stalled_trials_are_refilled_and_quorum_ejects() {
    let (mut ej, eps) = setup(2, config());
    let now = Instant::now();
    ej.on_quorum(addr(2), now);
    assert_eq!(eps[1].health().trigger(), Some(Trigger::MeshQuorum));
    let t = now + Duration::from_millis(500);
    ej.on_deadline(t);
    let h = eps[1].health();
    while h.take_permit() {}
    ej.on_tick(t + Duration::from_millis(499));
    assert_eq!(h.permits(), 0);
    ej.on_tick(t + Duration::from_millis(500));
    assert_eq!(
        h.permits(),
        3,
        "trials that never reported are handed out again"
    );
}

#[test]
fn surviving_endpoints_keep_their_phase_across_updates() {
    let (mut ej, eps) = setup(3, config());
    let now = Instant::now();
    feed(&mut ej, 1, Attempt::GatewayError, 3, now);
    ej.set_endpoints(&eps[..2], config());
    assert_eq!(eps[0].breaker(), BreakerPhase::Open);
    assert!(ej.next_deadline().is_some());
}

/// A quiet success (the request path's atomic count) as `record` produces it: counted on the
/// endpoint, then taken in by the next report from that endpoint (which carries the count).
fn quiet_success(endpoint: &EndpointState, times: usize) {
    for _ in 0..times {
        endpoint.health().count_quiet_success();
    }
}

fn report(ejector: &mut Ejector, endpoint: &EndpointState, attempt: Attempt, now: Instant) {
    ejector.absorb_quiet(endpoint.address(), endpoint.health().quiet_successes());
    ejector.on_outcome(endpoint.address(), attempt, now);
}

#[test]
fn quiet_successes_end_a_failure_run_in_order() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    for _ in 0..2 {
        report(&mut ej, &eps[0], Attempt::GatewayError, now);
    }
    quiet_success(&eps[0], 1);
    for _ in 0..2 {
        report(&mut ej, &eps[0], Attempt::GatewayError, now);
    }
    assert_eq!(
        eps[0].breaker(),
        BreakerPhase::Closed,
        "2 + success + 2 < 3 in a row"
    );
    report(&mut ej, &eps[0], Attempt::GatewayError, now);
    assert_eq!(eps[0].breaker(), BreakerPhase::Open);
    assert_eq!(
        eps[0].health().trigger(),
        Some(Trigger::ConsecutiveGatewayErrors)
    );
}

#[test]
fn quiet_successes_count_in_the_failure_rate_and_on_tick() {
    let mut c = config();
    c.consecutive_5xx = 0;
    c.consecutive_gateway_errors = 0;
    c.failure_rate = 1.0;
    c.success_rate_stdev = 1.0;
    let (mut ej, eps) = setup(4, c);
    let now = Instant::now();
    // Endpoints 1-3 only ever succeed quietly: the tick must see their 30 requests each, or
    // fewer than three endpoints qualify and no success-rate outlier can be found.
    for endpoint in &eps[..3] {
        quiet_success(endpoint, 30);
    }
    for _ in 0..15 {
        quiet_success(&eps[3], 1);
        report(&mut ej, &eps[3], Attempt::ServerError, now);
    }
    assert_eq!(eps[3].breaker(), BreakerPhase::Closed);
    ej.on_tick(now);
    assert_eq!(eps[3].breaker(), BreakerPhase::Open);
    assert_eq!(eps[3].health().trigger(), Some(Trigger::SuccessRate));
}

#[test]
fn quiet_successes_while_open_are_dropped_not_saved_for_later() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    for _ in 0..3 {
        report(&mut ej, &eps[0], Attempt::GatewayError, now);
    }
    assert_eq!(eps[0].breaker(), BreakerPhase::Open);
    // Answers to requests admitted before the ejection.
    quiet_success(&eps[0], 5);
    ej.on_tick(now);
    ej.on_deadline(now + Duration::from_secs(1));
    assert_eq!(eps[0].breaker(), BreakerPhase::HalfOpen);
    report(&mut ej, &eps[0], Attempt::Success, now);
    assert_eq!(
        eps[0].breaker(),
        BreakerPhase::HalfOpen,
        "one trial of three; the five old successes must not count as trials"
    );
}

#[test]
fn successes_are_reported_only_while_the_window_holds_failures() {
    let (mut ej, eps) = setup(4, config());
    let now = Instant::now();
    assert!(!eps[0].health().reports_successes(), "a clean endpoint");
    report(&mut ej, &eps[0], Attempt::ServerError, now);
    assert!(
        eps[0].health().reports_successes(),
        "a success may now fire the failure rate"
    );
    for _ in 0..Window::BUCKETS {
        ej.on_tick(now);
    }
    assert!(
        !eps[0].health().reports_successes(),
        "the failure slid out of the window"
    );
}
