//! The one ejection path. Every trigger — consecutive 5xx, consecutive gateway errors, failure
//! rate over a window, success-rate outlier, a quorum of mesh peers — ends in [`Ejector::eject`],
//! which applies `max_percent`, computes the duration and publishes the breaker phase. (An
//! active-check failure marks the endpoint unhealthy instead, see `checker`, so panic mode can
//! still use it.)
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::state::{Attempt, Trigger};
use super::window::Window;
use crate::config::OutlierDetection;
use crate::runtime::{BreakerPhase, EndpointState};

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
            let tracked = self.tracked.remove(&endpoint.address()).unwrap_or_else(|| {
                // Nothing owns this state's phase yet: start from closed.
                endpoint.clear_ejection();
                endpoint.set_breaker(BreakerPhase::Closed);
                endpoint.health().set_permits(0);
                publish_phase(endpoint, BreakerPhase::Closed);
                Tracked {
                    endpoint: Arc::clone(endpoint),
                    consecutive_5xx: 0,
                    consecutive_gateway: 0,
                    window: Window::default(),
                    phase: Phase::Closed,
                    quiet_seen: endpoint.health().quiet_successes(),
                }
            });
            next.insert(endpoint.address(), tracked);
        }
        self.tracked = next;
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

    /// Takes `address` out. Returns whether it was (max_percent may refuse). A half-open
    /// failure is always honoured: that endpoint already counts as ejected.
    pub fn eject(&mut self, address: SocketAddr, trigger: Trigger, now: Instant) -> bool {
        let ejected = self
            .tracked
            .values()
            .filter(|t| !matches!(t.phase, Phase::Closed))
            .count();
        // At most max_percent of the cluster, but always at least one endpoint may go.
        let allowed = (self.tracked.len() * self.config.max_percent as usize / 100).max(1);
        let config = &self.config;
        let Some(t) = self.tracked.get_mut(&address) else {
            return false;
        };
        let already_out = !matches!(t.phase, Phase::Closed);
        if !already_out && ejected >= allowed {
            tracing::debug!(cluster = t.endpoint.cluster(), endpoint = %address,
                trigger = trigger.as_str(), "ejection refused: max_percent reached");
            t.reset_counts();
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
        publish_phase(endpoint, BreakerPhase::Open);
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
    publish_phase(endpoint, BreakerPhase::HalfOpen);
    tracing::info!(cluster = endpoint.cluster(), endpoint = %endpoint.address(),
        permits, "endpoint half-open: admitting trial requests");
}

fn close(endpoint: &EndpointState) {
    endpoint.health().set_permits(0);
    endpoint.set_breaker(BreakerPhase::Closed);
    publish_phase(endpoint, BreakerPhase::Closed);
    tracing::info!(cluster = endpoint.cluster(), endpoint = %endpoint.address(),
        "endpoint restored: trial requests succeeded");
}

/// `circuit_state` and `endpoint_ejected` for `endpoint`.
fn publish_phase(endpoint: &EndpointState, phase: BreakerPhase) {
    let labels = super::endpoint_labels(endpoint);
    metrics::gauge!(super::CIRCUIT_STATE, labels.clone()).set(f64::from(phase as u8));
    let ejected = if phase == BreakerPhase::Open {
        1.0
    } else {
        0.0
    };
    metrics::gauge!(super::ENDPOINT_EJECTED, labels).set(ejected);
}

/// Milliseconds since the Unix epoch (the unit of `EndpointState::ejected_until_ms`).
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "ejection_tests.rs"]
mod tests;
