//! The downstream request body as the upstream side takes it: bytes counted (`bytes_in`), the
//! HTTP/2 limits applied, and every failure turned into a
//! [`ClientBodyError`](wire::client_side::ClientBodyError) recorded on the request's
//! [`ClientBody`], so that the attempt streaming the body blames the client and not the endpoint
//! (see `wire::client_side`).
//!
//! HTTP/1 bodies are checked on the socket by `GuardedIo` (framing, `max_body_bytes`,
//! `body_read_timeout`) as our HTTP/1 server reads them (`proxy::h1`); its refusal reaches us as
//! the [`Reject`] inside the `io::Error` the body read fails with. HTTP/2
//! bodies arrive frame by frame from our HTTP/2 server (`proxy::h2`), so the two limits that need the body's
//! progress are enforced here: `max_body_bytes` for a body without a declared length (a declared
//! one is checked with the head) and `body_read_timeout`, which runs only while the upstream
//! wants body bytes the client has not sent — an upstream that stops reading is never the
//! client's fault.

use std::error::Error as StdError;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::h2::RequestBody as H2Body;
use super::hygiene::Reject;
use crate::wire::client_side::CLIENT_CLOSED;
use crate::wire::{self, BoxError, ClientBody};

/// The limits an HTTP/2 request body gets here (HTTP/1 ones are `GuardedIo`'s).
#[derive(Debug, Clone, Copy)]
pub struct H2Limits {
    /// `max_body_bytes`; `None` when unlimited or already checked against `content-length`.
    pub max_body_bytes: Option<u64>,
    /// `body_read_timeout`.
    pub read_timeout: Duration,
}

/// A downstream request body as the server hands it to the handler: the seam between the two
/// protocols' servers and the request path.
#[derive(Debug)]
pub enum DownstreamBody {
    /// No body (HTTP/1 without framing or `Content-Length: 0`).
    Empty,
    /// Read off an HTTP/1 connection by our own server (`proxy::h1`).
    Http1(super::h1::RequestBody),
    /// An HTTP/2 stream's body (our HTTP/2 server, `proxy::h2`).
    Http2(H2Body),
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Http1(body) => Pin::new(body).poll_frame(cx),
            Self::Http2(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Http1(body) => body.is_end_stream(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Http1(body) => body.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

/// Wraps the downstream `body` (which has not ended yet), recording on `client`.
pub fn downstream(body: DownstreamBody, client: ClientBody, h2: Option<H2Limits>) -> wire::Body {
    Downstream {
        inner: body,
        client,
        left: h2.and_then(|l| l.max_body_bytes),
        stall: h2.map(|l| Stall::new(l.read_timeout)),
    }
    .boxed_unsync()
}

/// The HTTP/2 body timer: armed when the upstream asks for a frame the client has not sent,
/// disarmed by the next frame.
struct Stall {
    limit: Duration,
    /// Made on the first wait (a body that never waits costs no timer), then re-armed in place.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// Arms the timer if it is not running; whether it has run out.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.limit;
            match self.sleep.as_mut() {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

/// Why we cut an HTTP/2 body ourselves.
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("request body over max_body_bytes")]
    TooLarge,
    #[error("no request body byte for {0:?}")]
    Stalled(Duration),
}

pin_project! {
    struct Downstream {
        #[pin]
        inner: DownstreamBody,
        client: ClientBody,
        // Bytes an HTTP/2 body may still send under `max_body_bytes`.
        left: Option<u64>,
        stall: Option<Stall>,
    }
}

impl Body for Downstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Pending => {
                this.client.set_waiting(true);
                let Some(stall) = this.stall.as_mut() else {
                    return Poll::Pending;
                };
                if !stall.expired(cx) {
                    return Poll::Pending;
                }
                Reject::BodyTimeout.count();
                let error = Box::new(Cut::Stalled(stall.limit));
                let status = Reject::BodyTimeout.status();
                return Poll::Ready(Some(Err(this.client.fail(status, error))));
            }
            Poll::Ready(frame) => frame,
        };
        this.client.set_waiting(false);
        if let Some(stall) = this.stall.as_mut() {
            stall.armed = false;
        }
        match frame {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.client.count(len);
                if let Some(left) = this.left.as_mut() {
                    if len > *left {
                        Reject::BodyTooLarge.count();
                        let status = Reject::BodyTooLarge.status();
                        return Poll::Ready(Some(Err(this
                            .client
                            .fail(status, Box::new(Cut::TooLarge)))));
                    }
                    *left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                let status = status_of(&error);
                tracing::debug!(%error, %status, "request body failed on the client's side");
                Poll::Ready(Some(Err(this.client.fail(status, error))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status a client is owed for a body that failed with `error`: `GuardedIo`'s refusal when
/// it refused the body (an HTTP/1 body's error is that `io::Error`, the [`Reject`] inside it,
/// found anywhere in the error's chain) (400 broken chunks, 408 stalled, 413 too large), else
/// 499. A body ends that way when the client hung up, half-closed mid-body, or reset its HTTP/2
/// stream — and also when our HTTP/2 server reset a stream whose body broke HTTP/2's rules (a
/// short `content-length`): that stream can carry no answer any more, so it is logged as one whose
/// client is gone.
fn status_of(error: &BoxError) -> StatusCode {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&**error);
    // Bounded: error chains are short.
    for _ in 0..8 {
        let Some(current) = source else {
            break;
        };
        let refused = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Reject>());
        if let Some(reject) = refused {
            return reject.status();
        }
        source = current.source();
    }
    StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ClientBodyError;

    #[test]
    fn a_refusal_inside_an_io_error_keeps_its_status() {
        let refused = std::io::Error::new(std::io::ErrorKind::InvalidData, Reject::BadChunk);
        let inner = refused
            .get_ref()
            .and_then(|e| e.downcast_ref::<Reject>())
            .copied();
        assert_eq!(inner, Some(Reject::BadChunk));
        assert_eq!(Reject::BadChunk.status(), StatusCode::BAD_REQUEST);
        assert!(ClientBodyError {
            status: StatusCode::BAD_REQUEST,
            source: Box::new(refused),
        }
        .to_string()
        .contains("bad_chunk"));
    }
}
