//! What one attempt at one endpoint came to: the error kinds the retry and ejection logic branch
//! on, whether the endpoint may have seen the request, and the `outcome` metric label.
//!
//! Modelled on pingora's error type: one error says which way it failed and whether another try
//! is safe, so callers never parse messages.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use super::client_side::ClientBodyError;

/// Boxed error of a body or connection in either direction.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The `outcome` label of `switchyard_upstream_requests_total` (the five values of the README's
/// "Metrics" table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A response head below 500 arrived.
    Success,
    /// A response head of 500 or above arrived.
    Error5xx,
    /// No connection could be made (refused, unreachable, connect timeout, pool wait exhausted).
    ConnectFailure,
    /// The connection or stream failed after it was made: reset, early close, refused stream, or
    /// a malformed response (all answered 502 and counted as gateway errors alike, so one outcome
    /// covers them).
    Reset,
    /// No response head within the attempt's time limit.
    Timeout,
}

impl Outcome {
    /// Every outcome, in label-table order (see [`Outcome::index`]).
    pub const ALL: [Outcome; 5] = [
        Self::Success,
        Self::Error5xx,
        Self::ConnectFailure,
        Self::Reset,
        Self::Timeout,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error5xx => "error_5xx",
            Self::ConnectFailure => "connect_failure",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
        }
    }

    /// Position in [`Outcome::ALL`]; indexes precomputed label sets.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The outcome of a response head with `status`.
    pub fn of_status(status: http::StatusCode) -> Self {
        if status.is_server_error() {
            Self::Error5xx
        } else {
            Self::Success
        }
    }
}

/// How an attempt failed; each kind maps to one client status (see `ProxyError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// TCP connect refused or unreachable (502).
    Connect,
    /// TCP connect did not finish within `connect_timeout` (502).
    ConnectTimeout,
    /// `max_connections_per_endpoint` stayed reached for the whole bounded wait (503).
    PoolExhausted,
    /// The connection or stream was reset or closed before a complete response head (502).
    Reset,
    /// HTTP/2 REFUSED_STREAM, or a stream above a GOAWAY's last-stream-id: not processed (502).
    RefusedStream,
    /// The response head broke HTTP framing rules (502); the connection is discarded.
    BadResponse,
    /// No response head within the attempt's time limit (504).
    Timeout,
    /// The request cannot be expressed to this endpoint (e.g. a Host that is no valid HTTP/2
    /// authority); nothing was sent (502).
    BadRequest,
    /// The client caused it: its request body broke, was abandoned or stalled (see
    /// [`super::client_side`]). Carries the status the client is owed (400, 408, 413, 499);
    /// never counted against the endpoint.
    Client(http::StatusCode),
}

impl FailureKind {
    /// The metric outcome this failure counts as; `None` for a failure of the client's, which
    /// is no attempt outcome of the endpoint's.
    pub fn outcome(self) -> Option<Outcome> {
        Some(match self {
            Self::Connect | Self::ConnectTimeout | Self::PoolExhausted => Outcome::ConnectFailure,
            Self::Reset | Self::RefusedStream | Self::BadResponse | Self::BadRequest => {
                Outcome::Reset
            }
            Self::Timeout => Outcome::Timeout,
            Self::Client(_) => return None,
        })
    }
}

/// One failed attempt at one endpoint.
#[derive(Debug, Error)]
#[error("{kind:?} at {address} (request {}): {detail}", if *.sent { "maybe processed" } else { "not processed" })]
pub struct UpstreamError {
    /// How it failed.
    pub kind: FailureKind,
    /// The endpoint.
    pub address: SocketAddr,
    /// `false` when the endpoint certainly did not process the request (nothing written, or a
    /// refused stream), so sending it elsewhere cannot duplicate its effects.
    pub sent: bool,
    /// What the connector or client said.
    pub detail: String,
}

impl UpstreamError {
    /// A failure before anything was written.
    pub fn unsent(kind: FailureKind, address: SocketAddr, detail: impl ToString) -> Self {
        Self {
            kind,
            address,
            sent: false,
            detail: detail.to_string(),
        }
    }

    /// A failure after the request may have reached the endpoint.
    pub fn sent(kind: FailureKind, address: SocketAddr, detail: impl ToString) -> Self {
        Self {
            kind,
            address,
            sent: true,
            detail: detail.to_string(),
        }
    }

    /// The attempt's time limit passed before a response head.
    pub fn timeout(address: SocketAddr, limit: Duration) -> Self {
        Self::sent(
            FailureKind::Timeout,
            address,
            format!("no response head in {limit:?}"),
        )
    }

    /// Whether trying another endpoint (or a fresh connection) cannot duplicate the request.
    pub fn retry_safe(&self) -> bool {
        !self.sent
    }
}

/// Classifies a hyper client error for a request that was handed to a connection.
pub(crate) fn classify(error: &hyper::Error, address: SocketAddr) -> UpstreamError {
    // hyper's client fails the exchange with the request body's own error.
    if let Some(client) = find::<ClientBodyError>(error) {
        return UpstreamError::sent(FailureKind::Client(client.status), address, error);
    }
    if let Some(h2) = find::<h2::Error>(error) {
        // A stream the server refused, or one above a GOAWAY's last-stream-id, was never
        // processed (RFC 9113 8.7): safe to send again on another connection.
        let refused =
            h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.is_remote());
        if refused {
            return UpstreamError::unsent(FailureKind::RefusedStream, address, error);
        }
    }
    let kind = if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
        FailureKind::BadResponse
    } else {
        FailureKind::Reset
    };
    UpstreamError::sent(kind, address, error)
}

/// The first error of type `E` in `error`'s source chain, `error` itself excluded.
fn find<E: StdError + 'static>(error: &hyper::Error) -> Option<&E> {
    error.source().and_then(find_in_chain)
}

/// The first error of type `E` in the chain that starts at `error` (itself included): how a
/// failure the client caused is recognised however deep the I/O layers wrapped it.
pub(crate) fn find_in_chain<'a, E: StdError + 'static>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    // Bounded: error chains are short, and the loop stops at the first match.
    for _ in 0..8 {
        let error = current?;
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_design_md_and_index_all() {
        let labels: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            labels,
            [
                "success",
                "error_5xx",
                "connect_failure",
                "reset",
                "timeout"
            ]
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        assert_eq!(
            Outcome::of_status(http::StatusCode::BAD_GATEWAY),
            Outcome::Error5xx
        );
        assert_eq!(
            Outcome::of_status(http::StatusCode::NOT_FOUND),
            Outcome::Success
        );
    }

    #[test]
    fn retry_safety_follows_sent() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(UpstreamError::unsent(FailureKind::Connect, addr, "x").retry_safe());
        assert!(!UpstreamError::sent(FailureKind::Reset, addr, "x").retry_safe());
        let t = UpstreamError::timeout(addr, Duration::from_secs(1));
        assert_eq!(t.kind.outcome(), Some(Outcome::Timeout));
        assert_eq!(FailureKind::RefusedStream.outcome(), Some(Outcome::Reset));
        assert_eq!(
            FailureKind::PoolExhausted.outcome(),
            Some(Outcome::ConnectFailure)
        );
        let aborted = FailureKind::Client(http::StatusCode::BAD_REQUEST);
        assert_eq!(aborted.outcome(), None, "no outcome of the endpoint's");
    }
}
