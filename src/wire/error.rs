//! The one error type of the request path: which side failed, the status the client gets, and
//! whether trying again elsewhere is safe.

use std::time::Duration;

use http::StatusCode;
use thiserror::Error;

use super::outcome::{FailureKind, UpstreamError};

/// Which party a failure is attributed to (metrics, access log, retry decisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The cluster or one of its endpoints failed us.
    Upstream,
    /// Our own bug or resource problem.
    Internal,
}

/// Everything that can end a request before an upstream response starts streaming.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// 404, downstream: no route matches.
    #[error("no route")]
    NoRoute,
    /// 400, downstream: the request target cannot be normalised.
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    /// 403, downstream: the route's `allow` does not name the client's identity (or the
    /// client has none).
    #[error("client identity not allowed by the route")]
    Forbidden,
    /// 400, downstream: the request lacks something routing needs (e.g. a usable target).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Downstream: the request body failed on the client's side while it streamed upstream —
    /// 400 malformed, 408 stalled, 413 over `max_body_bytes`, 499 the client hung up or reset
    /// the stream (see `wire::client_side`). Nothing about the endpoint.
    #[error("request body failed on the client's side ({0})")]
    ClientBody(StatusCode),
    /// 503 with `retry-after`, upstream: the cluster has no endpoint to send to.
    #[error("cluster {cluster:?} has no available endpoint")]
    NoEndpoint {
        /// The cluster that was picked.
        cluster: String,
    },
    /// 503 with `retry-after`, upstream: a cluster limit (`circuit_breaker`) is reached; the
    /// request was not sent. Retrying into an overloaded cluster is what the limit prevents.
    #[error("cluster {cluster:?} is over its {reason} limit")]
    Overloaded {
        /// The cluster.
        cluster: String,
        /// The limit (`max_requests`, `max_pending`, `max_connections`, `max_retries`).
        reason: &'static str,
    },
    /// 502, upstream: connecting to the endpoint failed (refused, unreachable, connect timeout).
    /// Nothing was sent, so another endpoint may be tried.
    #[error("connect to upstream failed: {0}")]
    Connect(#[source] UpstreamError),
    /// 503 with `retry-after`, upstream: the endpoint's `max_connections_per_endpoint` stayed
    /// reached for the whole bounded wait. Nothing was sent.
    #[error("upstream connection limit reached: {0}")]
    PoolExhausted(#[source] UpstreamError),
    /// 502, upstream: the exchange failed after the connection was made — reset, closed,
    /// refused stream, or a malformed response. [`UpstreamError::sent`] says whether the
    /// endpoint may have processed it.
    #[error("upstream request failed: {0}")]
    Upstream(#[source] UpstreamError),
    /// 504, upstream: no response headers within the route's `timeout`.
    #[error("no upstream response within {0:?}")]
    Timeout(Duration),
    /// 500, internal: we built something invalid; a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> Self {
        match error.kind {
            FailureKind::Connect | FailureKind::ConnectTimeout => Self::Connect(error),
            FailureKind::PoolExhausted => Self::PoolExhausted(error),
            FailureKind::Reset
            | FailureKind::RefusedStream
            | FailureKind::BadResponse
            | FailureKind::BadRequest => Self::Upstream(error),
            // The error keeps no limit; callers that know it (the handler: the route's
            // `timeout`) build `Timeout` themselves. The status is the same either way.
            FailureKind::Timeout => Self::Timeout(Duration::ZERO),
            FailureKind::Client(status) => Self::ClientBody(status),
        }
    }
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BadPath(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ClientBody(status) => *status,
            Self::NoEndpoint { .. } | Self::PoolExhausted(_) | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Connect(_) | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who failed.
    pub fn side(&self) -> Side {
        match self {
            Self::NoRoute
            | Self::Forbidden
            | Self::BadPath(_)
            | Self::BadRequest(_)
            | Self::ClientBody(_) => Side::Downstream,
            Self::NoEndpoint { .. }
            | Self::Overloaded { .. }
            | Self::Connect(_)
            | Self::PoolExhausted(_)
            | Self::Upstream(_)
            | Self::Timeout(_) => Side::Upstream,
            Self::Internal(_) => Side::Internal,
        }
    }

    /// Whether the request certainly did not reach an endpoint, so sending it to another one
    /// cannot duplicate its effects.
    pub fn retry_safe(&self) -> bool {
        match self {
            Self::Connect(_) | Self::NoEndpoint { .. } | Self::PoolExhausted(_) => true,
            Self::Upstream(e) => e.retry_safe(),
            _ => false,
        }
    }

    /// Whether the client should get `retry-after` (every 503 carries it: README, "Statuses the
    /// proxy itself returns").
    pub fn retry_after(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// The `grpc-status` a gRPC client gets instead of the HTTP status (README, "Statuses the
    /// proxy itself returns": 14
    /// UNAVAILABLE for 502/503, 4 DEADLINE_EXCEEDED for 504; 1 CANCELLED for a client that
    /// went away, 8 RESOURCE_EXHAUSTED for a body over the limit; the rest per gRPC's
    /// HTTP-to-gRPC status mapping).
    pub fn grpc_status(&self) -> u8 {
        match self.status().as_u16() {
            502 | 503 => 14,
            504 | 408 => 4,
            499 => 1,
            413 => 8,
            404 => 12,
            403 => 7,
            400 | 500 => 13,
            _ => 2,
        }
    }

    /// The short text body the client sees (no internals leaked).
    pub fn body_text(&self) -> &'static str {
        match self {
            Self::NoRoute => "no route\n",
            Self::Forbidden => "forbidden\n",
            Self::BadPath(_) | Self::BadRequest(_) => "bad request\n",
            Self::ClientBody(status) => match status.as_u16() {
                408 => "request timeout\n",
                413 => "payload too large\n",
                499 => "client closed request\n",
                _ => "bad request\n",
            },
            Self::NoEndpoint { .. } => "no healthy upstream\n",
            Self::PoolExhausted(_) => "upstream connection limit reached\n",
            Self::Overloaded { .. } => "upstream overloaded\n",
            Self::Connect(_) | Self::Upstream(_) => "bad gateway\n",
            Self::Timeout(_) => "gateway timeout\n",
            Self::Internal(_) => "internal error\n",
        }
    }
}

/// Why a request path cannot be routed at all; the proxy answers 400 and forwards nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// Origin-form targets start with `/`; absolute-form is turned into origin-form by the proxy
    /// before routing, and `*` (OPTIONS) has no route to match.
    #[error("the request path does not start with '/'")]
    NotOriginForm,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-escape at byte {0} of the path")]
    InvalidEscape(usize),
    /// `%00`: many backends end strings at NUL, so the path they act on would differ from ours.
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
    /// A raw control byte (0x00-0x1F, 0x7F), never valid in a request target.
    #[error("the path contains the control byte 0x{0:02X}")]
    ControlByte(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_design_table() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoRoute.body_text(), "no route\n");
        assert_eq!(ProxyError::BadPath(PathError::EncodedNul).status(), 400);
        let empty = ProxyError::NoEndpoint {
            cluster: "a".into(),
        };
        assert_eq!(empty.status(), 503);
        assert!(empty.retry_safe());
        assert_eq!(ProxyError::Timeout(Duration::from_secs(1)).status(), 504);
        assert_eq!(
            ProxyError::Timeout(Duration::from_secs(1)).side(),
            Side::Upstream
        );
        assert_eq!(ProxyError::BadRequest("x").side(), Side::Downstream);
    }

    #[test]
    fn a_client_failure_keeps_its_status_and_blames_the_client() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        for (code, grpc, text) in [
            (400, 13, "bad request\n"),
            (408, 4, "request timeout\n"),
            (413, 8, "payload too large\n"),
            (499, 1, "client closed request\n"),
        ] {
            let status = StatusCode::from_u16(code).expect("status");
            let kind = FailureKind::Client(status);
            let error = ProxyError::from(UpstreamError::sent(kind, addr, "x"));
            assert_eq!(error.status(), status);
            assert_eq!(error.side(), Side::Downstream);
            assert_eq!(error.grpc_status(), grpc);
            assert_eq!(error.body_text(), text);
            assert!(!error.retry_after());
        }
    }

    #[test]
    fn upstream_failures_map_to_status_grpc_status_and_retry_safety() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let refused = ProxyError::from(UpstreamError::unsent(FailureKind::Connect, addr, "x"));
        assert_eq!(
            (refused.status(), refused.grpc_status()),
            (StatusCode::BAD_GATEWAY, 14)
        );
        assert!(refused.retry_safe());
        let full = ProxyError::from(UpstreamError::unsent(FailureKind::PoolExhausted, addr, "x"));
        assert_eq!(full.status(), 503);
        assert!(full.retry_after());
        let bad = ProxyError::from(UpstreamError::sent(FailureKind::BadResponse, addr, "x"));
        assert_eq!(bad.status(), 502);
        assert!(!bad.retry_safe());
        let refused_stream =
            ProxyError::from(UpstreamError::unsent(FailureKind::RefusedStream, addr, "x"));
        assert!(refused_stream.retry_safe());
        let late = ProxyError::from(UpstreamError::timeout(addr, Duration::from_secs(1)));
        assert_eq!(
            (late.status(), late.grpc_status()),
            (StatusCode::GATEWAY_TIMEOUT, 4)
        );
    }
}
