//! Active health checks for one cluster, owned by the cluster's health task: probe every
//! endpoint each `interval` (±10 % jitter, so a fleet of sidecars does not probe in lockstep),
//! and flip an endpoint's verdict only after `healthy_threshold` / `unhealthy_threshold`
//! consecutive results (pingora's rule: one lost probe must not flap the endpoint).
//!
//! A failed verdict is the "failed active check" trigger: the endpoint is marked unhealthy
//! (trigger `health_check`, logged like an ejection) rather than given an ejection timer — it
//! returns when probes pass again, and panic mode may still use it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;

use super::probe;
use crate::config::{ClusterTls, HealthCheckConfig, Protocol};
use crate::endpoint::EndpointState;
use crate::endpoint::Trigger;
use crate::state::Tunnels;
use crate::wire::time::epoch_ms;

/// Consecutive probe results of one endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// Probe scheduling and verdicts for one cluster.
#[derive(Debug)]
pub struct Checker {
    config: HealthCheckConfig,
    protocol: Protocol,
    /// The cluster's `tls` table: HTTP probes speak TLS exactly as requests do.
    tls: Option<Arc<ClusterTls>>,
    /// The meshed table and our tunnel identity: a probe of a meshed endpoint goes through the
    /// tunnel, as requests do (`None`: always direct).
    tunnels: Option<Arc<Tunnels>>,
    streaks: HashMap<SocketAddr, Streak>,
    /// Endpoints with a probe still running: a slow endpoint gets one probe at a time.
    probing: HashSet<SocketAddr>,
    /// Endpoints new since the last [`Checker::start_fresh`]: probed at once rather than at the
    /// next round (up to `interval` away), as Envoy does for new hosts, so an endpoint added by
    /// a reload or discovery gets its first verdict right away.
    fresh: Vec<SocketAddr>,
}

impl Checker {
    /// A checker for `config` on a cluster speaking `protocol` (over TLS when `tls` is its
    /// `tls` table, through the tunnel to endpoints `tunnels` lists as meshed); call
    /// [`Checker::set_endpoints`] next.
    pub fn new(
        config: HealthCheckConfig,
        protocol: Protocol,
        tls: Option<ClusterTls>,
        tunnels: Option<Arc<Tunnels>>,
    ) -> Self {
        Self {
            config,
            protocol,
            tls: tls.map(Arc::new),
            tunnels,
            streaks: HashMap::new(),
            probing: HashSet::new(),
            fresh: Vec::new(),
        }
    }

    /// Takes a new endpoint list and config (the cluster's protocol and `tls` table, which a
    /// reload may change). An endpoint never probed starts in the configured `initial` state;
    /// one already probed keeps its verdict.
    pub fn set_endpoints(
        &mut self,
        endpoints: &[Arc<EndpointState>],
        config: HealthCheckConfig,
        protocol: Protocol,
        tls: Option<ClusterTls>,
    ) {
        self.config = config;
        self.protocol = protocol;
        self.tls = tls.map(Arc::new);
        let mut streaks = HashMap::with_capacity(endpoints.len());
        for e in endpoints {
            let streak = self.streaks.remove(&e.address()).unwrap_or_else(|| {
                if e.health().last_probe().is_none() {
                    publish_verdict(e, self.config.initial_healthy, false);
                }
                self.fresh.push(e.address());
                Streak::default()
            });
            streaks.insert(e.address(), streak);
        }
        self.streaks = streaks;
    }

    /// A discovery update under the same config: `joined` are taken in as
    /// [`Self::set_endpoints`] takes new endpoints (initial verdict, probed at once), `left`
    /// are forgotten; the rest keep their streaks. Time proportional to the change.
    pub fn change_endpoints(&mut self, joined: &[Arc<EndpointState>], left: &[SocketAddr]) {
        for address in left {
            self.streaks.remove(address);
        }
        for e in joined {
            if self.streaks.contains_key(&e.address()) {
                continue;
            }
            if e.health().last_probe().is_none() {
                publish_verdict(e, self.config.initial_healthy, false);
            }
            self.fresh.push(e.address());
            self.streaks.insert(e.address(), Streak::default());
        }
    }

    /// Time to the next round: `interval` ± 10 %.
    pub fn next_delay(&self) -> Duration {
        self.config.interval.mul_f64(0.9 + 0.2 * fastrand::f64())
    }

    /// Starts a probe of every endpoint that has none running.
    pub fn start_round(
        &mut self,
        endpoints: &[Arc<EndpointState>],
        probes: &mut JoinSet<(SocketAddr, bool)>,
    ) {
        for e in endpoints {
            self.spawn_probe(e.address(), probes);
        }
    }

    /// Starts a probe of every endpoint that is new since the last call and still listed.
    pub fn start_fresh(&mut self, probes: &mut JoinSet<(SocketAddr, bool)>) {
        let fresh = std::mem::take(&mut self.fresh);
        for address in fresh {
            if self.streaks.contains_key(&address) {
                self.spawn_probe(address, probes);
            }
        }
    }

    /// Probes `address` unless a probe of it is still running.
    fn spawn_probe(&mut self, address: SocketAddr, probes: &mut JoinSet<(SocketAddr, bool)>) {
        if !self.probing.insert(address) {
            return;
        }
        let config = self.config.clone();
        let protocol = self.protocol;
        let tls = self.tls.clone();
        let tunnels = self.tunnels.clone();
        probes.spawn(async move {
            let passed = probe::probe(
                address,
                &config,
                protocol,
                tls.as_deref(),
                tunnels.as_deref(),
            )
            .await;
            (address, passed)
        });
    }

    /// Marks the probe of `address` as finished without a verdict (the endpoint is gone).
    pub fn forget(&mut self, address: SocketAddr) {
        self.probing.remove(&address);
    }

    /// Records a finished probe and flips the verdict once a threshold is reached.
    pub fn on_result(&mut self, endpoint: &EndpointState, passed: bool) {
        let address = endpoint.address();
        self.probing.remove(&address);
        endpoint
            .health()
            .set_last_probe(passed, epoch_ms(SystemTime::now()));
        let Some(streak) = self.streaks.get_mut(&address) else {
            return;
        };
        if passed {
            streak.passes = streak.passes.saturating_add(1);
            streak.failures = 0;
        } else {
            streak.failures = streak.failures.saturating_add(1);
            streak.passes = 0;
        }
        let healthy = endpoint.is_healthy();
        if !healthy && streak.passes >= self.config.healthy_threshold.max(1) {
            publish_verdict(endpoint, true, true);
        } else if healthy && streak.failures >= self.config.unhealthy_threshold.max(1) {
            publish_verdict(endpoint, false, true);
        }
    }
}

/// Writes the verdict (which `endpoint_healthy` shows at the next scrape) and, on a change,
/// the log line naming the trigger.
pub fn publish_verdict(endpoint: &EndpointState, healthy: bool, log: bool) {
    endpoint.set_healthy(healthy);
    if healthy {
        if log {
            tracing::info!(cluster = endpoint.cluster(), endpoint = %endpoint.address(),
                "endpoint healthy again: active checks pass");
        }
    } else {
        endpoint.health().set_trigger(Trigger::HealthCheck);
        if log {
            tracing::warn!(cluster = endpoint.cluster(), endpoint = %endpoint.address(),
                trigger = Trigger::HealthCheck.as_str(), "endpoint ejected as unhealthy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthCheckKind;

    fn config() -> HealthCheckConfig {
        HealthCheckConfig {
            kind: HealthCheckKind::Tcp,
            path: "/healthz".to_owned(),
            host: String::new(),
            statuses: vec![(200, 399)],
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            initial_healthy: false,
        }
    }

    #[test]
    fn verdicts_flip_only_after_consecutive_thresholds() {
        let e = Arc::new(EndpointState::new(
            "c",
            SocketAddr::from(([127, 0, 0, 1], 1)),
            1,
        ));
        let mut checker = Checker::new(config(), Protocol::Http1, None, None);
        checker.set_endpoints(std::slice::from_ref(&e), config(), Protocol::Http1, None);
        assert!(!e.is_healthy(), "initial = unhealthy");
        checker.on_result(&e, true);
        assert!(!e.is_healthy());
        checker.on_result(&e, true);
        assert!(e.is_healthy(), "healthy_threshold = 2");
        checker.on_result(&e, false);
        checker.on_result(&e, false);
        checker.on_result(&e, true);
        checker.on_result(&e, false);
        checker.on_result(&e, false);
        assert!(e.is_healthy(), "a pass resets the failure streak");
        checker.on_result(&e, false);
        assert!(!e.is_healthy(), "unhealthy_threshold = 3");
        assert_eq!(e.health().trigger(), Some(Trigger::HealthCheck));
        assert_eq!(e.health().last_probe(), Some(false));
        // A probed endpoint keeps its verdict across updates; `initial` is for new ones only.
        checker.set_endpoints(std::slice::from_ref(&e), config(), Protocol::Http1, None);
        assert!(!e.is_healthy());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let checker = Checker::new(config(), Protocol::Http1, None, None);
        for _ in 0..100 {
            let d = checker.next_delay();
            assert!(d >= Duration::from_millis(90) && d <= Duration::from_millis(110));
        }
    }
}
