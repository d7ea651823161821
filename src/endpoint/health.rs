//! The health state the request path reads: per endpoint ([`EndpointHealth`], inside
//! `EndpointState`) and per cluster ([`ClusterHealth`], shared by every snapshot of the cluster).
//!
//! Writers: the cluster's health task writes the breaker phase, the verdicts, the trigger and the
//! panic flag (one writer each). The request path only reads them, bumps counters, and takes
//! half-open trial permits with a compare-and-swap — so no request ever waits on a lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use metrics::Counter;
use tokio::sync::mpsc;

use super::limits::LimitReason;
use crate::telemetry::metrics::CIRCUIT_REJECTIONS_TOTAL;

/// Which trigger took an endpoint out (or, for `HealthCheck`, marked it unhealthy). Stored as
/// `u8` in [`EndpointHealth`]; shown by `/upstreams` and named in the ejection log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `consecutive_5xx` responses (or gateway failures) in a row.
    Consecutive5xx = 1,
    /// `consecutive_gateway_errors`: 502/503/504, connect failure, reset, timeout in a row.
    ConsecutiveGatewayErrors = 2,
    /// Failure rate over `window` reached `failure_rate` with at least `min_requests`.
    FailureRate = 3,
    /// Success rate below mean − `success_rate_stdev` × σ of the cluster's endpoints.
    SuccessRate = 4,
    /// Active health checks failed `unhealthy_threshold` times in a row.
    HealthCheck = 5,
    /// A half-open trial request failed: re-ejected for longer.
    HalfOpenFailure = 6,
    /// Enough mesh peers reported the endpoint (the mesh issue feeds this).
    MeshQuorum = 7,
}

impl Trigger {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Consecutive5xx,
            2 => Self::ConsecutiveGatewayErrors,
            3 => Self::FailureRate,
            4 => Self::SuccessRate,
            5 => Self::HealthCheck,
            6 => Self::HalfOpenFailure,
            7 => Self::MeshQuorum,
            _ => return None,
        })
    }

    /// The spelling in logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consecutive5xx => "consecutive_5xx",
            Self::ConsecutiveGatewayErrors => "consecutive_gateway_errors",
            Self::FailureRate => "failure_rate",
            Self::SuccessRate => "success_rate",
            Self::HealthCheck => "health_check",
            Self::HalfOpenFailure => "half_open_failure",
            Self::MeshQuorum => "mesh_quorum",
        }
    }
}

/// What one attempt at an endpoint said about the endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A response below 500.
    Success,
    /// A 5xx that is not a gateway error (500, 501, 505, …).
    ServerError,
    /// 502/503/504, connect failure, reset, malformed response or timeout.
    GatewayError,
}

impl Attempt {
    /// Whether the attempt counts as a failure for rates and half-open trials.
    pub fn failed(self) -> bool {
        self != Self::Success
    }
}

/// A message from the request path (or the mesh) to the cluster's health task.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    /// One attempt at `address` ended like this.
    Outcome {
        /// The endpoint.
        address: SocketAddr,
        /// What it said.
        attempt: Attempt,
        /// The endpoint's quiet-success count when this was sent: the task counts the quiet
        /// successes up to here before this outcome, so their order against it is kept.
        quiet: u64,
    },
    /// A quorum of mesh peers saw `address` failing: eject it (hook for the mesh issue).
    Quorum {
        /// The endpoint.
        address: SocketAddr,
    },
}

/// Last active probe result, as stored (0 = no probe yet).
const PROBE_PASS: u8 = 1;
const PROBE_FAIL: u8 = 2;

/// Health facts of one endpoint beyond the flags `EndpointState` already has.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// The cluster's shared state; set once when the registry creates the endpoint, so the
    /// upstream pool's connection counts reach the cluster's `max_connections` counter.
    cluster: OnceLock<Arc<ClusterHealth>>,
    /// Half-open trial admissions left; the request path takes them by CAS, the health task
    /// refills them. Zero outside half-open.
    permits: AtomicU32,
    /// 0 (none yet), [`PROBE_PASS`] or [`PROBE_FAIL`].
    last_probe: AtomicU8,
    /// When the last probe finished, ms since the Unix epoch.
    last_probe_ms: AtomicU64,
    /// The last [`Trigger`] that fired, 0 if none ever did.
    trigger: AtomicU8,
    /// Successes of a closed breaker, counted here instead of sent to the health task: one
    /// channel message per request woke the control thread every time (a futex/eventfd write
    /// and a context switch, a large share of the proxy's CPU under load; re-check with
    /// `benches/load/run.sh`, CPU per request). The task
    /// reads the count on its tick and before every reported outcome.
    quiet_successes: AtomicU64,
    /// Set by the health task while a success could fire a trigger (the failure-rate window
    /// holds failures): successes are then reported like failures, in order.
    report_successes: AtomicBool,
}

impl EndpointHealth {
    /// Ties the endpoint to its cluster's state (first call wins: an endpoint never changes
    /// cluster, its key includes the cluster name).
    pub fn bind(&self, cluster: Arc<ClusterHealth>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster's shared state, once bound.
    pub fn cluster(&self) -> Option<&Arc<ClusterHealth>> {
        self.cluster.get()
    }

    /// Takes one half-open trial permit; `false` when none is left.
    pub fn take_permit(&self) -> bool {
        self.permits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Trial permits left.
    pub fn permits(&self) -> u32 {
        self.permits.load(Ordering::Acquire)
    }

    /// Health task only: sets the trial permits.
    pub fn set_permits(&self, n: u32) {
        self.permits.store(n, Ordering::Release);
    }

    /// The last active probe: `Some(passed)`, `None` before the first.
    pub fn last_probe(&self) -> Option<bool> {
        match self.last_probe.load(Ordering::Relaxed) {
            PROBE_PASS => Some(true),
            PROBE_FAIL => Some(false),
            _ => None,
        }
    }

    /// When the last active probe finished (ms since the Unix epoch, 0 = never).
    pub fn last_probe_ms(&self) -> u64 {
        self.last_probe_ms.load(Ordering::Relaxed)
    }

    /// Health task only: records a probe result.
    pub fn set_last_probe(&self, passed: bool, at_ms: u64) {
        let v = if passed { PROBE_PASS } else { PROBE_FAIL };
        self.last_probe.store(v, Ordering::Relaxed);
        self.last_probe_ms.store(at_ms, Ordering::Relaxed);
    }

    /// The last trigger that fired.
    pub fn trigger(&self) -> Option<Trigger> {
        Trigger::from_u8(self.trigger.load(Ordering::Relaxed))
    }

    /// Health task only: records the trigger that fired.
    pub fn set_trigger(&self, trigger: Trigger) {
        self.trigger.store(trigger as u8, Ordering::Relaxed);
    }

    /// Request path: one more success while the breaker is closed.
    pub fn count_quiet_success(&self) {
        self.quiet_successes.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the request path must report successes through the channel (see the field).
    pub fn reports_successes(&self) -> bool {
        self.report_successes.load(Ordering::Relaxed)
    }

    /// Health task only.
    pub fn set_report_successes(&self, on: bool) {
        self.report_successes.store(on, Ordering::Relaxed);
    }

    /// Successes counted by [`EndpointHealth::count_quiet_success`] so far (only grows).
    pub fn quiet_successes(&self) -> u64 {
        self.quiet_successes.load(Ordering::Relaxed)
    }

    /// Upstream pool: a connection opened (feeds the cluster's `max_connections`).
    pub fn connection_opened(&self) {
        if let Some(c) = self.cluster() {
            c.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Upstream pool: a connection closed.
    pub fn connection_closed(&self) {
        if let Some(c) = self.cluster() {
            saturating_decrement(&c.connections);
        }
    }
}

/// Fixed-point one for [`ClusterHealth::local_share`]: 24 bits, so a pick compares it with 24
/// bits of its random number and a share of exactly one keeps every pick local.
pub const SHARE_ONE: u32 = 1 << 24;

/// Per-cluster state that outlives snapshots (kept in the endpoint registry by cluster name):
/// the limit counters, the panic flag, and the sender to the cluster's health task.
#[derive(Debug)]
pub struct ClusterHealth {
    name: String,
    /// Requests admitted and not yet finished (`max_requests`).
    pub(super) requests: AtomicU64,
    /// Requests admitted that have no response head yet (`max_pending`).
    pub(super) pending: AtomicU64,
    /// Retries in flight (`max_retries`).
    pub(super) retries: AtomicU64,
    /// Open upstream connections of all endpoints (`max_connections`).
    pub(super) connections: AtomicU64,
    /// Panic mode: fewer than `panic_threshold` of the endpoints are in service (passing
    /// active checks, not ejected); see `panic`.
    panic: AtomicBool,
    /// `locality = "prefer_local"`: the share of picks kept in the local zone, in units of
    /// 1 / [`SHARE_ONE`]; written by the health task (`balance::locality`'s spill rule), read
    /// with one relaxed load per pick.
    local_share: AtomicU32,
    /// Where the request path reports outcomes; `None` until the supervisor starts the task.
    reports: ArcSwapOption<mpsc::Sender<Report>>,
    /// `circuit_rejections_total{cluster,reason}`, registered once (no label formatting per
    /// rejection).
    rejections: [Counter; LimitReason::ALL.len()],
}

impl ClusterHealth {
    /// Fresh state for cluster `name`: nothing counted, not in panic, no task yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            requests: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            panic: AtomicBool::new(false),
            local_share: AtomicU32::new(SHARE_ONE),
            reports: ArcSwapOption::empty(),
            rejections: LimitReason::ALL.map(|reason| {
                metrics::counter!(CIRCUIT_REJECTIONS_TOTAL,
                    "cluster" => name.to_owned(), "reason" => reason.as_str())
            }),
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the cluster is in panic mode.
    pub fn panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Health task only (`health::panic`), the flag's one writer; public because the health
    /// module sits above this one.
    pub fn set_panic(&self, on: bool) {
        self.panic.store(on, Ordering::Relaxed);
    }

    /// The share of picks kept in the local zone, `0..=SHARE_ONE` (all local until the health
    /// task says otherwise).
    pub fn local_share(&self) -> u32 {
        self.local_share.load(Ordering::Relaxed)
    }

    /// Health task only (`balance::locality`'s spill rule), the share's one writer; `share` is
    /// clamped to `0.0..=1.0`.
    pub fn set_local_share(&self, share: f64) {
        let fixed = (share.clamp(0.0, 1.0) * f64::from(SHARE_ONE)).round() as u32;
        self.local_share.store(fixed, Ordering::Relaxed);
    }

    /// Requests in flight through the cluster's limits.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Open upstream connections over all endpoints.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Health supervisor only: points the request path at the (new) task, or at none.
    pub fn set_reports(&self, sender: Option<mpsc::Sender<Report>>) {
        self.reports.store(sender.map(Arc::new));
    }

    /// Hands `report` to the health task without waiting: when its queue is full the report
    /// is dropped (the task is behind; a few lost samples only delay an ejection).
    pub fn report(&self, report: Report) {
        if let Some(sender) = self.reports.load().as_ref() {
            let _ = sender.try_send(report);
        }
    }

    pub(super) fn count_rejection(&self, reason: LimitReason) {
        self.rejections[reason as usize].increment(1);
    }
}

pub(super) fn saturating_decrement(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(n.saturating_sub(1))
    });
}
