//! What the socket wrapper ([`super::GuardedIo`]) and the service of one connection share.
//!
//! The wrapper sees bytes, the service sees requests; some decisions need both. The wrapper
//! must know whether the service already produced a response before it writes a 408 or 413 of
//! its own. The idle and stall watches of HTTP/2 connections need to know whether any stream
//! is open and whether a response body waits on the client. Atomics only: the service runs on
//! the same thread, but the connection's task must be `Send` (it is spawned with
//! `tokio::spawn`).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use crate::wire::BoxError;
use crate::wire::ProxyBody;

/// Per-connection state shared by the socket wrapper and the service.
#[derive(Debug)]
pub struct ConnState {
    born: Instant,
    /// Requests whose response head the service has produced.
    responded: AtomicU64,
    /// Requests (HTTP/2: streams) whose response has not finished.
    open: AtomicUsize,
    /// When `open` last became 0, in milliseconds since `born`.
    idle_since_ms: AtomicU64,
    /// Response bodies that handed the server a frame and have not been asked for the next one.
    unpolled: AtomicUsize,
    /// When the server last asked any response body for a frame, in milliseconds since `born`.
    last_body_poll_ms: AtomicU64,
    /// HTTP/2: the idle and stall watches read `idle_since_ms`, `unpolled` and
    /// `last_body_poll_ms`. HTTP/1 leaves both watches to the socket wrapper, so its requests
    /// skip that bookkeeping (a clock read and two atomics per body frame).
    streams: AtomicBool,
}

impl Default for ConnState {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            responded: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            unpolled: AtomicUsize::new(0),
            last_body_poll_ms: AtomicU64::new(0),
            streams: AtomicBool::new(false),
        }
    }
}

impl ConnState {
    /// A new connection's state, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Turns on the bookkeeping the HTTP/2 idle and stall watches read (see `streams`).
    pub fn watch_streams(&self) {
        self.streams.store(true, Ordering::SeqCst);
    }

    fn watching_streams(&self) -> bool {
        self.streams.load(Ordering::Relaxed)
    }

    /// Marks a request as started; the guard ends it when dropped (keep it in the response
    /// body so a streaming response counts as open).
    pub fn start(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard {
            state: Arc::clone(self),
        }
    }

    /// The service produced a response head.
    pub fn responded(&self) {
        self.responded.fetch_add(1, Ordering::SeqCst);
    }

    /// How many responses the service has produced.
    pub fn responses(&self) -> u64 {
        self.responded.load(Ordering::SeqCst)
    }

    /// When an idle connection should be closed: `None` while a request is open.
    pub fn idle_deadline(&self, keepalive: Duration) -> Option<Instant> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(self.born + since + keepalive)
    }
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When a connection whose client takes no response data should be closed: `None` while
    /// no response body waits on the client. A body waiting on its upstream was polled and
    /// returned `Pending`, so it is not counted; one that handed over a frame and is not asked
    /// for the next waits on the client (an HTTP/2 stream with a zero flow-control window, or
    /// a socket that does not drain).
    pub fn stall_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.unpolled.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_body_poll_ms.load(Ordering::SeqCst));
        Some(self.born + since + limit)
    }
}

/// Holds a request open (see [`ConnState::start`]).
#[derive(Debug)]
pub struct OpenGuard {
    state: Arc<ConnState>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.state.watching_streams() {
            self.state
                .idle_since_ms
                .store(self.state.now_ms(), Ordering::SeqCst);
        }
        self.state.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps `guard` alive until `body` is finished or dropped. `body` comes unboxed (the handler's
/// access-log wrapper), so the two share this one box: one allocation per response.
pub fn hold_open<B>(body: B, guard: OpenGuard) -> ProxyBody
where
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    Held {
        inner: body,
        guard,
        handed: false,
    }
    .boxed_unsync()
}

pin_project! {
    struct Held<B> {
        #[pin]
        inner: B,
        guard: OpenGuard,
        // A frame was handed over and the next one not asked for yet (counted in `unpolled`).
        handed: bool,
    }

    impl<B> PinnedDrop for Held<B> {
        fn drop(this: Pin<&mut Self>) {
            if this.handed {
                this.guard.state.unpolled.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError>> Body for Held<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let state = &this.guard.state;
        if !state.watching_streams() {
            return this.inner.poll_frame(cx);
        }
        if std::mem::take(this.handed) {
            state.unpolled.fetch_sub(1, Ordering::SeqCst);
        }
        state
            .last_body_poll_ms
            .store(state.now_ms(), Ordering::SeqCst);
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            *this.handed = true;
            state.unpolled.fetch_add(1, Ordering::SeqCst);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_waits_for_open_requests() {
        let state = ConnState::new();
        state.watch_streams();
        let keep = Duration::from_secs(5);
        assert!(state.idle_deadline(keep).is_some());
        let guard = state.start();
        assert_eq!(state.idle_deadline(keep), None);
        drop(guard);
        let deadline = state.idle_deadline(keep).expect("idle again");
        assert!(deadline > Instant::now() + Duration::from_secs(4));
        state.responded();
        assert_eq!(state.responses(), 1);
    }
}
