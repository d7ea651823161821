//! Health: active checks, the one ejection path (outlier detection + breaker), cluster limits
//! and panic mode.
//!
//! - [`checker`] / [`probe`]: HTTP and TCP probes, jittered interval, consecutive thresholds.
//! - [`ejection`]: every passive trigger ends in one function that honours `max_percent`, backs
//!   off (`base_time × times ejected`, capped at `max_time`) and runs the half-open phase.
//! - [`limits`]: `circuit_breaker` thresholds, 503 + `retry-after` when over.
//! - [`panic`]: Envoy's panic threshold.
//!
//! **One writer, no mutex on the request path.** Each cluster has one health task ([`task`]) on
//! the control runtime that owns all mutable health state and publishes results into the
//! `EndpointState` atomics. The request path calls [`admit`] (reads the breaker phase and the
//! verdict; in half-open takes a trial permit by compare-and-swap) and [`record`] (hands the
//! outcome to the task with a non-blocking `try_send`; a success with the breaker closed, the
//! common case, only bumps an atomic counter the task reads on its tick, so requests do not
//! wake the control thread). This is linkerd's breaker design — a
//! task fed by a channel — chosen over CAS-guarded transitions on shared atomics because the
//! triggers need per-endpoint windows and cross-endpoint statistics (success-rate outliers,
//! `max_percent`) that are simple as owned data and hard as lock-free data.

pub mod checker;
pub mod ejection;
pub mod limits;
pub mod panic;
pub mod probe;
mod state;
mod supervisor;
mod task;
mod window;

use http::StatusCode;
use metrics::Label;

pub use state::{Attempt, ClusterHealth, EndpointHealth, Report, Trigger};
pub use supervisor::Supervisor;

use crate::runtime::{BreakerPhase, ClusterSnapshot, EndpointState};
use crate::upstream::FailureKind;

/// `switchyard_endpoint_healthy{cluster,endpoint}`: 1 when active checks pass.
pub const ENDPOINT_HEALTHY: &str = "switchyard_endpoint_healthy";
/// `switchyard_endpoint_ejected{cluster,endpoint}`: 1 while ejected (breaker open).
pub const ENDPOINT_EJECTED: &str = "switchyard_endpoint_ejected";
/// `switchyard_circuit_state{cluster,endpoint}`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "switchyard_circuit_state";
/// `switchyard_circuit_rejections_total{cluster,reason}`: requests refused by cluster limits.
pub const CIRCUIT_REJECTIONS_TOTAL: &str = "switchyard_circuit_rejections_total";
/// `switchyard_panic_mode{cluster}`: 1 while the cluster is in panic mode.
pub const PANIC_MODE: &str = "switchyard_panic_mode";

/// The request path's candidate filter (`balance::choose`'s `usable`): whether endpoint
/// `index` of `cluster` may take this request. Open breaker: never (even in panic mode).
/// Failing active checks: only in panic mode. Half-open: only with one of the
/// `probe_requests` trial permits, taken here.
pub fn admit(cluster: &ClusterSnapshot, index: usize) -> bool {
    let Some(endpoint) = cluster.endpoints().get(index) else {
        return false;
    };
    if !endpoint.is_healthy() && !cluster.health().panic() {
        return false;
    }
    match endpoint.breaker() {
        BreakerPhase::Closed => true,
        BreakerPhase::Open => false,
        BreakerPhase::HalfOpen => endpoint.health().take_permit(),
    }
}

/// The request path's report of one attempt at `endpoint`: a response head's status, or how
/// the attempt failed. Never blocks (see [`ClusterHealth::report`]).
pub fn record<B>(
    cluster: &ClusterSnapshot,
    endpoint: &EndpointState,
    result: &Result<http::Response<B>, crate::upstream::UpstreamError>,
) {
    let attempt = match result {
        Ok(response) => Some(attempt_of_status(response.status())),
        Err(error) => attempt_of_failure(error.kind),
    };
    match attempt {
        // The common case costs one atomic add: the health task collects these on its own
        // schedule (see `EndpointHealth::count_quiet_success`). Half-open trials, answers to
        // an open breaker and successes that could fire the failure rate still go through the
        // channel, where their order matters.
        Some(Attempt::Success)
            if endpoint.breaker() == BreakerPhase::Closed
                && !endpoint.health().reports_successes() =>
        {
            endpoint.health().count_quiet_success();
        }
        Some(attempt) => cluster.health().report(Report::Outcome {
            address: endpoint.address(),
            attempt,
            quiet: endpoint.health().quiet_successes(),
        }),
        None => {}
    }
}

/// How a response status counts: 502/503/504 are gateway errors, other 5xx server errors.
pub fn attempt_of_status(status: StatusCode) -> Attempt {
    match status.as_u16() {
        502..=504 => Attempt::GatewayError,
        500..=599 => Attempt::ServerError,
        _ => Attempt::Success,
    }
}

/// How a failed attempt counts; `None` for failures that say nothing about the endpoint (our
/// own pool limit, a request we could not express, a stream the endpoint refused unprocessed).
pub fn attempt_of_failure(kind: FailureKind) -> Option<Attempt> {
    match kind {
        FailureKind::Connect
        | FailureKind::ConnectTimeout
        | FailureKind::Reset
        | FailureKind::BadResponse
        | FailureKind::Timeout => Some(Attempt::GatewayError),
        FailureKind::PoolExhausted | FailureKind::BadRequest | FailureKind::RefusedStream => None,
    }
}

/// `{cluster, endpoint}` labels of `endpoint` (the endpoint label honours
/// `max_endpoint_series`). Built on state changes only, never per request.
fn endpoint_labels(endpoint: &EndpointState) -> Vec<Label> {
    vec![
        Label::new("cluster", endpoint.cluster().to_owned()),
        Label::new("endpoint", endpoint.metrics().endpoint_label().clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_failures_classify() {
        assert_eq!(attempt_of_status(StatusCode::OK), Attempt::Success);
        assert_eq!(attempt_of_status(StatusCode::NOT_FOUND), Attempt::Success);
        assert_eq!(
            attempt_of_status(StatusCode::INTERNAL_SERVER_ERROR),
            Attempt::ServerError
        );
        assert_eq!(
            attempt_of_status(StatusCode::SERVICE_UNAVAILABLE),
            Attempt::GatewayError
        );
        assert_eq!(
            attempt_of_failure(FailureKind::Connect),
            Some(Attempt::GatewayError)
        );
        assert_eq!(attempt_of_failure(FailureKind::PoolExhausted), None);
    }
}
