//! The one ejection path. Every trigger — consecutive 5xx, consecutive gateway errors, failure
//! rate over a window, success-rate outlier, a quorum of mesh peers — ends in [`Ejector::eject`],
//! which applies `max_percent`, computes the duration and publishes the breaker phase. (An
//! active-check failure marks the endpoint unhealthy instead, see `checker`.)
//!
//! Ejection never empties a cluster: at most `max_percent` of its endpoints are out at once
//! (at least one may always go, as Envoy's `max_ejection_percent` allows), but never the last
//! one in service, so a one-endpoint cluster is never ejected — NGINX's rule for its last
//! server. An origin whose only instance answers a maintenance 503 then passes that answer on
//! and is reached again the moment it recovers, instead of the route answering its own 503 for
//! `base_time`. What remains in service may still be too little; `panic` handles that.
//!
//! Breaker phases (Envoy outlier detection + a circuit breaker's half-open state):
//! closed → (trigger) → open for `base_time × times ejected`, capped at `max_time` →
//! half-open, admitting exactly `probe_requests` trial requests → all succeed: closed; one
//! fails: open again, for longer.
//!
//! Owned by the cluster's health task: plain fields, no atomics, no locks; results are
//! published into `EndpointState` (the request path reads the phase, nothing else).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::window::Window;
use crate::config::OutlierDetection;
use crate::endpoint::{Attempt, Trigger};
use crate::endpoint::{BreakerPhase, EndpointState};
use crate::wire::time::epoch_ms;

/// Success-rate outlier detection needs this many endpoints with `min_requests` in the window:
/// with fewer, a mean and a deviation say nothing (Envoy's `success_rate_minimum_hosts` is 5;
/// 3 keeps small clusters covered — set `success_rate_stdev` accordingly, since with n
/// endpoints no single one can sit more than (n − 1)/√n deviations below the mean).
pub const SUCCESS_RATE_MIN_ENDPOINTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { since: Instant, successes: u32 },
}

#[derive(Debug)]
struct Tracked {
    endpoint: Arc<EndpointState>,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    window: Window,
    phase: Phase,
    /// The endpoint's quiet-success count already taken into account.
    quiet_seen: u64,
}

impl Tracked {
    /// Takes the quiet successes counted since the last look, up to `upto`: in the window and
    /// as the end of any run of failures. Outside closed they say nothing new (answers to
    /// requests admitted before the ejection), as reported successes do not.
    fn absorb(&mut self, upto: u64) {
        let new = upto.saturating_sub(self.quiet_seen);
        if new == 0 {
            return;
        }
        self.quiet_seen = upto;
        if self.phase == Phase::Closed {
            self.window.record_successes(new);
            self.consecutive_5xx = 0;
            self.consecutive_gateway = 0;
        }
    }

    /// Tells the request path whether a success may fire a trigger here: only while the window
    /// holds failures (the failure rate is checked on every outcome). Otherwise successes are
    /// counted quietly, and nothing is lost: they end failure runs in order (see `absorb`) and
    /// the success-rate check runs on the tick, after they are taken in.
    fn publish_watch(&self) {
        let watch = self.phase == Phase::Closed && self.window.totals().1 > 0;
        self.endpoint.health().set_report_successes(watch);
    }

    /// A new endpoint's entry: nothing owns its state's phase yet, so it starts closed.
    fn fresh(endpoint: &Arc<EndpointState>) -> Self {
        endpoint.clear_ejection();
        endpoint.set_breaker(BreakerPhase::Closed);
        endpoint.health().set_permits(0);
        Self {
            endpoint: Arc::clone(endpoint),
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            window: Window::default(),
            phase: Phase::Closed,
            quiet_seen: endpoint.health().quiet_successes(),
        }
    }

    fn reset_counts(&mut self) {
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.window.clear();
    }
}

/// Outlier detection and breaker state for one cluster's endpoints.
#[derive(Debug)]
pub struct Ejector {
    config: OutlierDetection,
    tracked: HashMap<SocketAddr, Tracked>,
}

impl Ejector {
    /// No endpoints yet; see [`Ejector::set_endpoints`].
    pub fn new(config: OutlierDetection) -> Self {
        Self {
            config,
            tracked: HashMap::new(),
        }
    }

    /// How often the window moves on (one of its buckets' span).
    pub fn tick_period(&self) -> Duration {
        self.config.window / Window::BUCKETS as u32
    }

    /// Takes a new endpoint list and config (reload, discovery). Endpoints that stay keep their
    /// phase and counts; new ones start closed.
    pub fn set_endpoints(&mut self, endpoints: &[Arc<EndpointState>], config: OutlierDetection) {
        self.config = config;
        let mut next = HashMap::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let tracked = self
                .tracked
                .remove(&endpoint.address())
                .unwrap_or_else(|| Tracked::fresh(endpoint));
            next.insert(endpoint.address(), tracked);
        }
        self.tracked = next;
    }

    /// A discovery update under the same config: `joined` start closed, `left` are forgotten,
    /// every other endpoint keeps its phase and counts, as [`Self::set_endpoints`] over the new
    /// list would leave them, in time proportional to the change.
    pub fn change_endpoints(&mut self, joined: &[Arc<EndpointState>], left: &[SocketAddr]) {
        for address in left {
            self.tracked.remove(address);
        }
        for endpoint in joined {
            self.tracked
                .entry(endpoint.address())
                .or_insert_with(|| Tracked::fresh(endpoint));
        }
    }

    /// Whether `address` is one of the tracked endpoints.
    pub fn tracks(&self, address: SocketAddr) -> bool {
        self.tracked.contains_key(&address)
    }

    /// Counts `address`'s quiet successes up to `upto` (the count a report carried, so those
    /// that came before it are counted before it).
    pub fn absorb_quiet(&mut self, address: SocketAddr, upto: u64) {
        if let Some(t) = self.tracked.get_mut(&address) {
            t.absorb(upto);
        }
    }

    /// One attempt's outcome.
    pub fn on_outcome(&mut self, address: SocketAddr, attempt: Attempt, now: Instant) {
        let c = &self.config;
        let Some(t) = self.tracked.get_mut(&address) else {
            return;
        };
        let trigger = match t.phase {
            // Answers to requests sent before the ejection say nothing new.
            Phase::Open { .. } => None,
            Phase::HalfOpen { since, successes } => {
                if attempt.failed() {
                    Some(Trigger::HalfOpenFailure)
                } else if successes + 1 >= c.probe_requests {
                    t.phase = Phase::Closed;
                    t.reset_counts();
                    close(&t.endpoint);
                    None
                } else {
                    t.phase = Phase::HalfOpen {
                        since,
                        successes: successes + 1,
                    };
                    None
                }
            }
            Phase::Closed => {
                t.window.record(attempt.failed());
                match attempt {
                    Attempt::Success => {
                        t.consecutive_5xx = 0;
                        t.consecutive_gateway = 0;
                    }
                    Attempt::ServerError => {
                        t.consecutive_5xx += 1;
                        t.consecutive_gateway = 0;
                    }
                    Attempt::GatewayError => {
                        t.consecutive_5xx += 1;
                        t.consecutive_gateway += 1;
                    }
                }
                let (total, failed) = t.window.totals();
                if c.consecutive_gateway_errors > 0
                    && t.consecutive_gateway >= c.consecutive_gateway_errors
                {
                    Some(Trigger::ConsecutiveGatewayErrors)
                } else if c.consecutive_5xx > 0 && t.consecutive_5xx >= c.consecutive_5xx {
                    Some(Trigger::Consecutive5xx)
                } else if total >= u64::from(c.min_requests.max(1))
                    && failed as f64 >= c.failure_rate * total as f64
                    && c.failure_rate > 0.0
                {
                    Some(Trigger::FailureRate)
                } else {
                    None
                }
            }
        };
        t.publish_watch();
        if let Some(trigger) = trigger {
            self.eject(address, trigger, now);
        }
    }

    /// The mesh hook: a quorum of peers reported `address`.
    pub fn on_quorum(&mut self, address: SocketAddr, now: Instant) {
        if matches!(
            self.tracked.get(&address).map(|t| t.phase),
            Some(Phase::Closed)
        ) {
            self.eject(address, Trigger::MeshQuorum, now);
        }
    }

    /// How many endpoints may be out (open or half-open) at once: `max_percent` of the
    /// cluster rounded down, at least one, and never all of them (see the module doc).
    fn allowed(&self) -> usize {
        let n = self.tracked.len();
        (n * self.config.max_percent as usize / 100)
            .max(1)
            .min(n.saturating_sub(1))
    }

    /// Takes `address` out. Returns whether it was (the [`Ejector::allowed`] count may refuse).
    /// A half-open failure is always honoured: that endpoint already counts as ejected.
    pub fn eject(&mut self, address: SocketAddr, trigger: Trigger, now: Instant) -> bool {
        let ejected = self
            .tracked
            .values()
            .filter(|t| !matches!(t.phase, Phase::Closed))
            .count();
        let allowed = self.allowed();
        let config = &self.config;
        let Some(t) = self.tracked.get_mut(&address) else {
            return false;
        };
        let already_out = !matches!(t.phase, Phase::Closed);
        if !already_out && ejected >= allowed {
            tracing::debug!(cluster = t.endpoint.cluster(), endpoint = %address,
                trigger = trigger.as_str(), ejected, allowed,
                "ejection refused: max_percent reached, or the last endpoint in service");
            t.reset_counts();
            t.publish_watch();
            return false;
        }
        let times = t.endpoint.ejections().saturating_add(1);
        let duration = config.base_time.saturating_mul(times).min(config.max_time);
        t.phase = Phase::Open {
            until: now + duration,
        };
        t.reset_counts();
        t.publish_watch();
        let endpoint = &t.endpoint;
        endpoint.eject_until(epoch_ms(SystemTime::now() + duration));
        endpoint.set_breaker(BreakerPhase::Open);
        endpoint.health().set_permits(0);
        endpoint.health().set_trigger(trigger);
        tracing::warn!(cluster = endpoint.cluster(), endpoint = %address,
            trigger = trigger.as_str(), ejections = times, ?duration, "endpoint ejected");
        true
    }

    /// When the next open phase ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracked
            .values()
            .filter_map(|t| match t.phase {
                Phase::Open { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Moves every endpoint whose ejection has ended to half-open with `probe_requests`
    /// trial permits.
    pub fn on_deadline(&mut self, now: Instant) {
        for t in self.tracked.values_mut() {
            if matches!(t.phase, Phase::Open { until } if until <= now) {
                t.phase = Phase::HalfOpen {
                    since: now,
                    successes: 0,
                };
                half_open(&t.endpoint, self.config.probe_requests);
            }
        }
    }

    /// Every window bucket: moves the windows on, runs success-rate outlier detection, and
    /// refills half-open permits that were taken but never answered (a trial whose request
    /// never reached the endpoint must not strand it half-open forever).
    pub fn on_tick(&mut self, now: Instant) {
        let stall = self.config.base_time;
        for t in self.tracked.values_mut() {
            // Before the bucket moves on: the successes of the bucket that ends belong in it.
            let quiet = t.endpoint.health().quiet_successes();
            t.absorb(quiet);
            t.window.rotate();
            t.publish_watch();
            if let Phase::HalfOpen { since, successes } = t.phase {
                if now.duration_since(since) >= stall && t.endpoint.health().permits() == 0 {
                    t.phase = Phase::HalfOpen {
                        since: now,
                        successes,
                    };
                    let left = self.config.probe_requests.saturating_sub(successes);
                    t.endpoint.health().set_permits(left.max(1));
                }
            }
        }
        for address in self.success_rate_outliers() {
            self.eject(address, Trigger::SuccessRate, now);
        }
    }

    /// Endpoints whose success rate is below mean − `success_rate_stdev` × σ.
    fn success_rate_outliers(&self) -> Vec<SocketAddr> {
        let min = u64::from(self.config.min_requests.max(1));
        let rates: Vec<(SocketAddr, f64)> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.phase == Phase::Closed)
            .filter_map(|(a, t)| {
                let (total, failed) = t.window.totals();
                (total >= min).then(|| (*a, (total - failed) as f64 / total as f64))
            })
            .collect();
        if rates.len() < SUCCESS_RATE_MIN_ENDPOINTS {
            return Vec::new();
        }
        let n = rates.len() as f64;
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
        let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
        let floor = mean - self.config.success_rate_stdev * variance.sqrt();
        rates
            .into_iter()
            .filter(|(_, r)| *r < floor)
            .map(|(a, _)| a)
            .collect()
    }
}

fn half_open(endpoint: &EndpointState, permits: u32) {
    endpoint.clear_ejection();
    endpoint.health().set_permits(permits);
    endpoint.set_breaker(BreakerPhase::HalfOpen);
    tracing::info!(cluster = endpoint.cluster(), endpoint = %endpoint.address(),
        permits, "endpoint half-open: admitting trial requests");
}

fn close(endpoint: &EndpointState) {
    endpoint.health().set_permits(0);
    endpoint.set_breaker(BreakerPhase::Closed);
    tracing::info!(cluster = endpoint.cluster(), endpoint = %endpoint.address(),
        "endpoint restored: trial requests succeeded");
}

#[cfg(test)]
mod tests {
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
    fn the_last_endpoint_in_service_is_never_ejected() {
        let now = Instant::now();
        // One endpoint: no trigger takes it out, a mesh quorum neither.
        let mut c = config();
        c.max_percent = 100;
        let (mut ej, eps) = setup(1, c.clone());
        feed(&mut ej, 1, Attempt::GatewayError, 10, now);
        feed(&mut ej, 1, Attempt::ServerError, 10, now);
        ej.on_quorum(addr(1), now);
        assert!(!ej.eject(addr(1), Trigger::SuccessRate, now));
        assert_eq!(eps[0].breaker(), BreakerPhase::Closed);
        assert_eq!(eps[0].ejections(), 0);
        assert_eq!(ej.next_deadline(), None);
        // max_percent = 100 of two or three: all but one.
        for n in [2u16, 3] {
            let (mut ej, eps) = setup(n, c.clone());
            for port in 1..=n {
                feed(&mut ej, port, Attempt::GatewayError, 3, now);
            }
            let open = eps
                .iter()
                .filter(|e| e.breaker() == BreakerPhase::Open)
                .count();
            assert_eq!(open, usize::from(n) - 1, "n = {n}");
        }
        // A half-open endpoint counts as out: while it is on trial the last one stays in.
        let (mut ej, eps) = setup(2, c);
        feed(&mut ej, 1, Attempt::GatewayError, 3, now);
        ej.on_deadline(now + Duration::from_secs(1));
        assert_eq!(eps[0].breaker(), BreakerPhase::HalfOpen);
        feed(&mut ej, 2, Attempt::GatewayError, 3, now);
        assert_eq!(eps[1].breaker(), BreakerPhase::Closed);
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

    /// A discovery update applied as a change (`change_endpoints`) leaves the ejector as a full
    /// `set_endpoints` over the new list would: survivors keep their phase and counts, the
    /// joined start closed, the left are forgotten. Two ejectors over states of their own,
    /// the same history, one update each way.
    #[test]
    fn a_change_equals_setting_the_new_list() {
        let config = OutlierDetection {
            max_percent: 100,
            ..config()
        };
        let now = Instant::now();
        let run = |as_change: bool| {
            let (mut ej, eps) = setup(3, config.clone());
            feed(&mut ej, 1, Attempt::GatewayError, 3, now);
            feed(&mut ej, 2, Attempt::GatewayError, 2, now);
            let joined = Arc::new(EndpointState::new("c", addr(9), 1));
            if as_change {
                ej.change_endpoints(std::slice::from_ref(&joined), &[addr(3)]);
            } else {
                let list = [
                    Arc::clone(&eps[0]),
                    Arc::clone(&eps[1]),
                    Arc::clone(&joined),
                ];
                ej.set_endpoints(&list, config.clone());
            }
            let tracked: Vec<bool> = [1, 2, 3, 9].map(|p| ej.tracks(addr(p))).to_vec();
            // Endpoint 2 kept its run of two: a third gateway error ejects it.
            feed(&mut ej, 2, Attempt::GatewayError, 1, now);
            let phases = [eps[0].breaker(), eps[1].breaker(), joined.breaker()];
            (tracked, phases, ej.next_deadline())
        };
        let (changed, set) = (run(true), run(false));
        assert_eq!(changed, set);
        assert_eq!(changed.0, [true, true, false, true]);
        assert_eq!(
            changed.1,
            [BreakerPhase::Open, BreakerPhase::Open, BreakerPhase::Closed]
        );
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
}
