//! Whether an attempt's result is worth another try, and whether another try is safe.
//!
//! Two separate questions: the route's `on` list says which failures are worth retrying; the
//! method (or an `idempotency-key`) and [`UpstreamError::sent`] say whether the endpoint may
//! already have acted on the request. A request that reached nobody (connect failure, refused
//! stream, GOAWAY above its stream id) may be retried whatever its method.

use http::{HeaderMap, HeaderName, Method, Response};

use crate::config::{RetryOn, RetryPolicy};
use crate::wire::{FailureKind, UpstreamError};

/// Why an attempt is retried: the `reason` label of `switchyard_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No connection could be made (`connect-failure`).
    ConnectFailure,
    /// The connection or stream broke before a response head (`reset`).
    Reset,
    /// HTTP/2 REFUSED_STREAM or GOAWAY above the stream (`refused-stream`).
    RefusedStream,
    /// A 5xx status (`5xx`).
    Status5xx,
    /// 502, 503 or 504 (`gateway-error`).
    GatewayError,
    /// A status listed in `statuses`.
    Status,
    /// `per_try_timeout` passed without a response head.
    PerTryTimeout,
    /// A gRPC trailers-only response with `grpc-status: 14` (UNAVAILABLE).
    GrpcUnavailable,
}

impl Reason {
    /// Every reason, in label-table order (see [`Reason::index`]).
    pub const ALL: [Reason; 8] = [
        Self::ConnectFailure,
        Self::Reset,
        Self::RefusedStream,
        Self::Status5xx,
        Self::GatewayError,
        Self::Status,
        Self::PerTryTimeout,
        Self::GrpcUnavailable,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectFailure => "connect_failure",
            Self::Reset => "reset",
            Self::RefusedStream => "refused_stream",
            Self::Status5xx => "5xx",
            Self::GatewayError => "gateway_error",
            Self::Status => "status",
            Self::PerTryTimeout => "per_try_timeout",
            Self::GrpcUnavailable => "grpc_unavailable",
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether the request may be sent twice: an idempotent method (RFC 9110 9.2.2) or a client
/// that marked it with `idempotency-key` (draft-ietf-httpapi-idempotency-key-header).
pub fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(&IDEMPOTENCY_KEY)
}

/// Whether `policy` can only retry an attempt that reached no endpoint, whatever the response:
/// `on` names no more than `connect-failure` and `refused-stream`, and neither `statuses` nor
/// `per_try_timeout` is set (a response, or a timed-out attempt, may have been processed). A
/// gRPC request is the exception ([`of_response`] retries UNAVAILABLE under any policy), so
/// the caller checks that too.
pub fn retries_only_unsent(policy: &RetryPolicy) -> bool {
    policy.statuses.is_empty()
        && policy.per_try_timeout.is_none()
        && policy
            .on
            .iter()
            .all(|on| matches!(on, RetryOn::ConnectFailure | RetryOn::RefusedStream))
}

/// A retryable verdict: why, and whether the endpoint certainly did not process the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The `reason` label.
    pub reason: Reason,
    /// `true` when nothing reached the endpoint (any method may be retried).
    pub unsent: bool,
}

/// Classifies a failed attempt under `policy`; `None`: not retryable.
pub fn of_error(policy: &RetryPolicy, error: &UpstreamError) -> Option<Verdict> {
    let (reason, wanted) = match error.kind {
        FailureKind::Connect | FailureKind::ConnectTimeout | FailureKind::PoolExhausted => (
            Reason::ConnectFailure,
            policy.on.contains(&RetryOn::ConnectFailure),
        ),
        FailureKind::RefusedStream => (
            Reason::RefusedStream,
            policy.on.contains(&RetryOn::RefusedStream),
        ),
        FailureKind::Reset | FailureKind::BadResponse => {
            (Reason::Reset, policy.on.contains(&RetryOn::Reset))
        }
        // Only a per-try limit produces a timeout inside the loop (the route timeout ends the
        // whole exchange), and moving on is what `per_try_timeout` is for.
        FailureKind::Timeout => (Reason::PerTryTimeout, policy.per_try_timeout.is_some()),
        // Another endpoint would get the same unexpressible request.
        FailureKind::BadRequest => return None,
        // The client broke its own request: another try has no body to send, and the failure
        // is no reason to spend the budget.
        FailureKind::Client(_) => return None,
    };
    wanted.then_some(Verdict {
        reason,
        unsent: !error.sent,
    })
}

/// Classifies a response head under `policy`. gRPC calls are retried only on UNAVAILABLE in a
/// trailers-only response (the status then arrives in the head, before any message): gRPC
/// defines UNAVAILABLE as "try again", and a call whose messages started cannot be replayed.
pub fn of_response<B>(policy: &RetryPolicy, response: &Response<B>, grpc: bool) -> Option<Verdict> {
    if grpc {
        let unavailable = response
            .headers()
            .get(&GRPC_STATUS)
            .is_some_and(|v| v.as_bytes() == b"14");
        // UNAVAILABLE says the server did not act on the call, so it counts as unsent.
        return unavailable.then_some(Verdict {
            reason: Reason::GrpcUnavailable,
            unsent: true,
        });
    }
    let status = response.status().as_u16();
    let reason = if policy.statuses.contains(&status) {
        Reason::Status
    } else if matches!(status, 502..=504) && policy.on.contains(&RetryOn::GatewayError) {
        Reason::GatewayError
    } else if status >= 500 && policy.on.contains(&RetryOn::Status5xx) {
        Reason::Status5xx
    } else {
        return None;
    };
    Some(Verdict {
        reason,
        unsent: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn policy(on: &[RetryOn], statuses: &[u16]) -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on: on.to_vec(),
            statuses: statuses.to_vec(),
            per_try_timeout: None,
            backoff: Duration::from_millis(25),
            buffer: 65536,
            budget: crate::config::RetryBudget {
                ratio: 0.2,
                min_per_sec: 10,
            },
        }
    }

    fn response(status: u16, grpc_status: Option<&'static str>) -> Response<()> {
        let mut r = Response::builder().status(status);
        if let Some(s) = grpc_status {
            r = r.header("grpc-status", s);
        }
        r.body(()).expect("response")
    }

    #[test]
    fn only_unsent_failures_when_nothing_else_is_named() {
        let connect = [RetryOn::ConnectFailure, RetryOn::RefusedStream];
        assert!(retries_only_unsent(&policy(&connect, &[])));
        assert!(retries_only_unsent(&policy(
            &[RetryOn::ConnectFailure],
            &[]
        )));
        assert!(retries_only_unsent(&policy(&[], &[])));
        for other in [RetryOn::Reset, RetryOn::Status5xx, RetryOn::GatewayError] {
            assert!(!retries_only_unsent(&policy(
                &[RetryOn::ConnectFailure, other],
                &[]
            )));
        }
        assert!(!retries_only_unsent(&policy(&connect, &[429])));
        let mut timed = policy(&connect, &[]);
        timed.per_try_timeout = Some(Duration::from_secs(1));
        assert!(!retries_only_unsent(&timed));
    }

    #[test]
    fn methods_and_idempotency_key() {
        let none = HeaderMap::new();
        assert!(idempotent(&Method::GET, &none));
        assert!(idempotent(&Method::DELETE, &none));
        assert!(!idempotent(&Method::POST, &none));
        assert!(!idempotent(&Method::PATCH, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().expect("value"));
        assert!(idempotent(&Method::POST, &keyed));
    }

    #[test]
    fn statuses_follow_on() {
        let p = policy(&[RetryOn::GatewayError], &[429]);
        assert_eq!(
            of_response(&p, &response(503, None), false).map(|v| v.reason),
            Some(Reason::GatewayError)
        );
        assert_eq!(of_response(&p, &response(500, None), false), None);
        assert_eq!(
            of_response(&p, &response(429, None), false).map(|v| v.reason),
            Some(Reason::Status)
        );
        let p = policy(&[RetryOn::Status5xx], &[]);
        assert_eq!(
            of_response(&p, &response(500, None), false).map(|v| v.reason),
            Some(Reason::Status5xx)
        );
        assert_eq!(of_response(&p, &response(404, None), false), None);
    }

    #[test]
    fn grpc_only_on_unavailable() {
        let p = policy(&[RetryOn::Status5xx], &[]);
        assert_eq!(
            of_response(&p, &response(200, Some("14")), true).map(|v| v.reason),
            Some(Reason::GrpcUnavailable)
        );
        assert_eq!(of_response(&p, &response(200, Some("13")), true), None);
        assert_eq!(of_response(&p, &response(503, None), true), None);
    }

    #[test]
    fn errors_follow_on_and_sent() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let p = policy(&[RetryOn::ConnectFailure], &[]);
        let v =
            of_error(&p, &UpstreamError::unsent(FailureKind::Connect, addr, "x")).expect("retry");
        assert_eq!((v.reason, v.unsent), (Reason::ConnectFailure, true));
        assert_eq!(
            of_error(&p, &UpstreamError::sent(FailureKind::Reset, addr, "x")),
            None
        );
        let p = policy(&[RetryOn::Reset], &[]);
        let v = of_error(&p, &UpstreamError::sent(FailureKind::Reset, addr, "x")).expect("retry");
        assert!(!v.unsent);
        assert_eq!(
            of_error(&p, &UpstreamError::timeout(addr, Duration::from_secs(1))),
            None
        );
    }
}
