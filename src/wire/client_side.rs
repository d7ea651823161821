//! Failures that belong to the client: a request body that broke, was abandoned or stalled on
//! the downstream side while an attempt streamed it upstream.
//!
//! Such a failure surfaces as the attempt's failure (hyper's client sees its request body fail,
//! or the attempt's time runs out while the body waits for the client), yet says nothing about
//! the endpoint. Outlier detection, the breaker, retries and the endpoint's outcome metric only
//! hear of failures the endpoint caused, so every attempt failure is checked here first:
//!
//! - [`ClientBodyError`] is the error the downstream body yields: hyper's HTTP/1.1 client hands
//!   it back inside its own error, where [`super::outcome::classify`] finds it.
//! - [`ClientBody`] records the same failure out of band, because hyper's HTTP/2 client does not
//!   hand the body's error back (it resets the stream and reports the reset), and because a
//!   timeout that passes while the body waits on the client is no error of the body at all.
//!
//! What the client is told follows the cause: 400 for a malformed body, 413 over
//! `max_body_bytes`, 408 for a body that stalled, and 499 (nginx's "client closed request") for
//! a client that hung up or reset its stream.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use http::StatusCode;

use super::outcome::{BoxError, FailureKind, UpstreamError};

/// The status logged for a client that went away mid-request (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// The downstream request body failed on the client's side; `status` is what the client is
/// owed (and what the access log and request metrics record).
#[derive(Debug, thiserror::Error)]
#[error("request body failed on the client's side ({status}): {source}")]
pub struct ClientBodyError {
    /// 400, 408, 413 or 499.
    pub status: StatusCode,
    /// What the downstream connection or our own limit said.
    #[source]
    pub source: BoxError,
}

/// What the request path knows of one downstream request body, shared by the body itself (which
/// writes it), the attempts (which read it to blame the right side) and the access log
/// (`bytes_in`). Made only for requests that have a body; one allocation holds all of it.
#[derive(Debug, Clone, Default)]
pub struct ClientBody(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// Body bytes received from the client.
    bytes: AtomicU64,
    /// The status of the first client-side failure; 0 while there is none.
    failed: AtomicU16,
    /// The body's last poll found nothing from the client yet: the upstream waits on it.
    waiting: AtomicBool,
}

impl ClientBody {
    /// A body with nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` bytes received.
    pub fn count(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// Records that the body failed on the client's side with `status` (the first failure
    /// wins) and returns the error the body yields.
    pub fn fail(&self, status: StatusCode, source: BoxError) -> BoxError {
        let _ =
            self.0
                .failed
                .compare_exchange(0, status.as_u16(), Ordering::SeqCst, Ordering::SeqCst);
        Box::new(ClientBodyError { status, source })
    }

    /// The client-side failure, if the body had one.
    pub fn failure(&self) -> Option<StatusCode> {
        match self.0.failed.load(Ordering::SeqCst) {
            0 => None,
            code => StatusCode::from_u16(code).ok(),
        }
    }

    /// Whether the upstream is waiting for body bytes the client has not sent.
    pub fn set_waiting(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::Relaxed);
    }

    fn waiting(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed)
    }

    /// Re-attributes an attempt's failure that the client caused: its body failed (whatever
    /// hyper reported), or the attempt's time ran out while the body waited for the client (the
    /// endpoint cannot answer a request it has not received; Envoy likewise starts its route
    /// timeout only once the downstream request is complete). Upstream failures pass unchanged.
    pub fn blame(&self, error: UpstreamError) -> UpstreamError {
        if matches!(error.kind, FailureKind::Client(_)) {
            return error;
        }
        let status = match self.failure() {
            Some(status) => status,
            None if error.kind == FailureKind::Timeout && self.waiting() => {
                StatusCode::REQUEST_TIMEOUT
            }
            None => return error,
        };
        UpstreamError {
            kind: FailureKind::Client(status),
            ..error
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_failures_the_client_caused_are_re_attributed() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let client = ClientBody::new();
        let reset = || UpstreamError::sent(FailureKind::Reset, addr, "reset");
        let timeout = || UpstreamError::timeout(addr, Duration::from_secs(1));
        assert_eq!(client.blame(reset()).kind, FailureKind::Reset);
        assert_eq!(client.blame(timeout()).kind, FailureKind::Timeout);
        // Waiting on the client when the time ran out: the client's.
        client.set_waiting(true);
        assert_eq!(
            client.blame(timeout()).kind,
            FailureKind::Client(StatusCode::REQUEST_TIMEOUT)
        );
        assert_eq!(client.blame(reset()).kind, FailureKind::Reset);
        // A failed body takes every failure; the first status stays.
        let error = client.fail(StatusCode::BAD_REQUEST, "bad chunk".into());
        assert!(error.downcast_ref::<ClientBodyError>().is_some());
        let _ = client.fail(
            StatusCode::from_u16(CLIENT_CLOSED).expect("499"),
            "gone".into(),
        );
        assert_eq!(client.failure(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            client.blame(reset()).kind,
            FailureKind::Client(StatusCode::BAD_REQUEST)
        );
    }
}
