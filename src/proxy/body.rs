//! Bodies crossing the proxy: the downstream request body on its way up, the upstream response
//! body on its way down. The body types themselves and the small generated bodies
//! ([`full`]) are in `wire`, which every layer shares; they are re-exported here because the
//! request path builds its error pages through this module.
//!
//! Both streamed directions pass frames through one at a time (no buffering here, so each
//! connection's flow control is the backpressure: a slow reader stops the writer) and stamp one
//! shared [`Activity`] clock, which the response body checks against the route's
//! `idle_timeout`: a stream with no bytes in either direction for that long is aborted, one that
//! keeps moving (long downloads, SSE, streaming gRPC) lives as long as it moves.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::endpoint::InFlightGuard;
use crate::upstream::UpstreamBody;
use crate::wire::activity::Activity;
use crate::wire::{self, BoxError};

pub use crate::wire::{full, ProxyBody};

/// The route's stream idle limit and the clock both directions stamp.
#[derive(Debug, Clone)]
pub struct IdleWatch {
    /// Shared by the request and the response body of one exchange.
    pub activity: Activity,
    /// The route's `idle_timeout`.
    pub limit: Duration,
}

/// Why a stream was cut after its response had started (the client sees an abort).
#[derive(Debug, thiserror::Error)]
#[error("no bytes in either direction for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// The downstream request body as sent upstream: frames (data and trailers) pass unchanged and
/// stamp `idle` when there is one.
pub fn request(body: wire::Body, idle: Option<&IdleWatch>) -> wire::Body {
    match idle {
        // An empty body has no bytes to stamp.
        Some(watch) if !body.is_end_stream() => Stamped {
            inner: body,
            activity: watch.activity.clone(),
        }
        .boxed_unsync(),
        _ => body,
    }
}

/// A streamed upstream body that keeps its endpoint's in-flight count up until the last byte
/// (or an abort): for least-request balancing a request is in flight until its body is done.
/// With `idle`, it errors (so the server aborts the downstream response: an HTTP/1 connection
/// closes, an HTTP/2 stream is reset) after that much silence.
pub fn upstream(body: UpstreamBody, guard: InFlightGuard, idle: Option<IdleWatch>) -> ProxyBody {
    let timer = idle.map(|watch| Timer { sleep: None, watch });
    Guarded {
        inner: body,
        timer,
        _guard: guard,
    }
    .boxed_unsync()
}

struct Timer {
    /// Armed the first time the body waits, from the shared clock: a body that never waits
    /// (a small response, read with its head) registers no timer at all.
    sleep: Option<Pin<Box<Sleep>>>,
    watch: IdleWatch,
}

impl Timer {
    /// `Ready` once the stream has been silent for the whole limit; arms or re-arms otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Self { sleep, watch } = self;
        // Bounded: each pass either returns or re-arms the sleep to a later deadline.
        for _ in 0..4 {
            let sleep = match sleep {
                Some(sleep) => sleep,
                None => match watch.activity.remaining(watch.limit) {
                    None => return Poll::Ready(()),
                    Some(left) => sleep.insert(Box::pin(tokio::time::sleep(left))),
                },
            };
            ready!(sleep.as_mut().poll(cx));
            match watch.activity.remaining(watch.limit) {
                None => return Poll::Ready(()),
                Some(left) => {
                    let deadline = tokio::time::Instant::now() + left;
                    sleep.as_mut().reset(deadline);
                }
            }
        }
        // Still active after several re-arms in one poll: ask to be polled again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

pin_project! {
    struct Guarded {
        #[pin]
        inner: UpstreamBody,
        timer: Option<Timer>,
        _guard: InFlightGuard,
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                // The last frame needs no stamp: once the body has ended, nothing watches the
                // clock (the body is the only watcher). Most responses are one frame, so this
                // saves a clock read per request.
                if let (Some(timer), Some(Ok(_))) = (this.timer.as_ref(), &frame) {
                    if !this.inner.is_end_stream() {
                        timer.watch.activity.touch();
                    }
                }
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer {
                Some(timer) => {
                    ready!(timer.poll_expired(cx));
                    let limit = timer.watch.limit;
                    tracing::debug!(?limit, "response stream idle: aborting");
                    Poll::Ready(Some(Err(Box::new(IdleTimeout(limit)))))
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    struct Stamped {
        #[pin]
        inner: wire::Body,
        activity: Activity,
    }
}

impl Body for Stamped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(_)) = &frame {
            this.activity.touch();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
