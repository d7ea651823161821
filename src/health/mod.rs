//! Health: active checks, the one ejection path (outlier detection + breaker) and panic mode.
//!
//! - [`checker`] / [`probe`]: HTTP and TCP probes, jittered interval, consecutive thresholds.
//! - [`ejection`]: every passive trigger ends in one function that honours `max_percent`, backs
//!   off (`base_time × times ejected`, capped at `max_time`) and runs the half-open phase.
//! - Cluster limits (`circuit_breaker`) and the health fields this module's tasks publish live
//!   in [`crate::endpoint`], below every module that reads them.
//! - [`panic`](mod@panic): Envoy's panic threshold; with ejection's "never the last endpoint in
//!   service", a cluster that has endpoints always has somewhere to send a request.
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
pub mod panic;
pub mod probe;
mod supervisor;
mod task;
mod window;

use http::StatusCode;

pub use supervisor::Supervisor;

use crate::endpoint::{Attempt, BreakerPhase, EndpointState, Report};
use crate::state::ClusterSnapshot;
use crate::wire::FailureKind;

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::{
    CIRCUIT_REJECTIONS_TOTAL, CIRCUIT_STATE, ENDPOINT_EJECTED, ENDPOINT_HEALTHY, PANIC_MODE,
};

/// The request path's candidate filter (`balance::choose`'s `usable`): whether endpoint
/// `index` of `cluster` may take this request. In panic mode: every endpoint, ejected or not
/// (Envoy's panic routing). Otherwise: failing active checks or breaker open, no; half-open,
/// only with one of the `probe_requests` trial permits, taken here.
pub fn admit(cluster: &ClusterSnapshot, index: usize) -> bool {
    let Some(endpoint) = cluster.endpoints().get(index) else {
        return false;
    };
    if cluster.health().panic() {
        return true;
    }
    if !endpoint.is_healthy() {
        return false;
    }
    match endpoint.breaker() {
        BreakerPhase::Closed => true,
        BreakerPhase::Open => false,
        BreakerPhase::HalfOpen => endpoint.health().take_permit(),
    }
}

/// Whether a request that [`admit`] found no endpoint for may be routed in panic mode anyway:
/// the cluster has endpoints and panic mode is on (`panic_threshold > 0`). With every endpoint
/// out the cluster is in panic by definition; the health task only raises the flag a moment
/// after the change that takes the last one out, and a request in that moment must not get a
/// 503. So an empty cluster (and one with panic mode off) is the only one that answers
/// "no healthy upstream".
pub fn panic_routes(cluster: &ClusterSnapshot) -> bool {
    cluster.config().panic_threshold > 0.0 && !cluster.endpoints().is_empty()
}

/// The request path's report of one attempt at `endpoint`: a response head's status, or how the
/// attempt failed. Never blocks (see
/// [`ClusterHealth::report`](crate::endpoint::ClusterHealth::report)).
pub fn record<B>(
    cluster: &ClusterSnapshot,
    endpoint: &EndpointState,
    result: &Result<http::Response<B>, crate::wire::UpstreamError>,
) {
    let attempt = match result {
        Ok(response) => Some(attempt_of_status(response.status())),
        Err(error) => attempt_of_failure(error.kind),
    };
    match attempt {
        // An open breaker's answers say nothing new (requests admitted before the ejection, or
        // panic routing): the task would drop them, so they are not sent.
        Some(_) if endpoint.breaker() == BreakerPhase::Open => {}
        // The common case costs one atomic add: the health task collects these on its own
        // schedule (see `EndpointHealth::count_quiet_success`). Half-open trials and successes
        // that could fire the failure rate still go through the channel, where their order
        // matters.
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
/// own pool limit, a request we could not express, a stream the endpoint refused unprocessed,
/// a request body the client broke, abandoned or stalled).
pub fn attempt_of_failure(kind: FailureKind) -> Option<Attempt> {
    match kind {
        FailureKind::Connect
        | FailureKind::ConnectTimeout
        | FailureKind::Reset
        | FailureKind::BadResponse
        | FailureKind::Timeout => Some(Attempt::GatewayError),
        FailureKind::PoolExhausted
        | FailureKind::BadRequest
        | FailureKind::RefusedStream
        | FailureKind::Client(_) => None,
    }
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
        assert_eq!(
            attempt_of_failure(FailureKind::Client(StatusCode::BAD_REQUEST)),
            None
        );
    }
}
