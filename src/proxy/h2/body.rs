//! A stream's request body, and the wake-ups the connection's streams share.
//!
//! The connection's task polls every stream's future itself; each stream slot has a waker of
//! its own that sets the slot's bit in [`ConnWake::ready`] and wakes the task, so a wake-up
//! polls the streams that asked for it and no others (`FuturesUnordered`'s idea, with the
//! wakers made once per slot, not per stream). A request body may be read from another task
//! (an upstream connection's), so what it shares with the connection is behind a mutex, one
//! per stream, taken once per DATA frame on each side.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::{Body, Frame, SizeHint};

use super::frame::Reason;

/// Slots a connection can have at once (a bit each in a `u128`).
pub const MAX_SLOTS: usize = 128;

/// Consumed bytes are given back to the client (WINDOW_UPDATE) once this many have been taken
/// from a stream's body or from all of the connection's: a quarter of the 1 MiB windows, so a
/// body streams without waiting on updates and small bodies need none.
pub const RELEASE_AT: u64 = 256 * 1024;

/// What a connection's task and its streams' wakers share.
#[derive(Default)]
pub struct ConnWake {
    pub task: AtomicWaker,
    /// Slots whose future (or response body) woke.
    ready: [AtomicU64; 2],
    /// Slots whose body released enough for a stream WINDOW_UPDATE, or was dropped.
    window: [AtomicU64; 2],
    /// Bytes taken by bodies, not yet given back to the connection's window.
    released: AtomicU64,
}

impl ConnWake {
    fn mark(&self, set: &[AtomicU64; 2], slot: usize) {
        if let Some(word) = set.get(slot / 64) {
            word.fetch_or(1 << (slot % 64), Ordering::AcqRel);
        }
        self.task.wake();
    }

    fn take(set: &[AtomicU64; 2]) -> u128 {
        // Loads first: the swaps (a locked instruction each) only when a bit is set.
        let mut bits = 0u128;
        for (i, word) in set.iter().enumerate() {
            if word.load(Ordering::Acquire) != 0 {
                bits |= u128::from(word.swap(0, Ordering::AcqRel)) << (64 * i);
            }
        }
        bits
    }

    /// The slots that woke since the last call.
    pub fn take_ready(&self) -> u128 {
        Self::take(&self.ready)
    }

    /// The slots with released stream capacity (or a dropped body) since the last call.
    pub fn take_window(&self) -> u128 {
        Self::take(&self.window)
    }

    /// Connection capacity released by bodies since the last call.
    pub fn take_released(&self) -> u64 {
        if self.released.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.released.swap(0, Ordering::AcqRel)
    }

    fn release(&self, len: u64) {
        let before = self.released.fetch_add(len, Ordering::AcqRel);
        if before < RELEASE_AT && before + len >= RELEASE_AT {
            self.task.wake();
        }
    }
}

/// The waker of one slot.
pub struct SlotWaker {
    pub conn: Arc<ConnWake>,
    pub slot: usize,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.conn.mark(&self.conn.ready, self.slot);
    }
}

/// Why a request body failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum StreamError {
    #[error("HTTP/2 stream reset by the client ({0})")]
    Reset(Reason),
    #[error("HTTP/2 request broke the protocol ({0})")]
    Broken(Reason),
    #[error("HTTP/2 connection closed before the request body ended")]
    Closed,
}

/// What a body and its connection share.
pub struct Recv {
    inner: Mutex<RecvInner>,
    conn: Arc<ConnWake>,
    slot: usize,
}

#[derive(Default)]
struct RecvInner {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    end: bool,
    error: Option<StreamError>,
    waker: Option<Waker>,
    /// Bytes taken since the last stream WINDOW_UPDATE.
    released: u64,
    dropped: bool,
}

impl Recv {
    pub fn new(conn: Arc<ConnWake>, slot: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(RecvInner::default()),
            conn,
            slot,
        })
    }

    fn lock(&self) -> MutexGuard<'_, RecvInner> {
        // A panic while holding it leaves nothing half-done that matters here.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a DATA payload (and the end of the stream) to the body; false when nobody
    /// reads the body any more (the caller gives the bytes back at once).
    pub fn push(&self, data: Bytes, end: bool) -> bool {
        let mut inner = self.lock();
        if inner.dropped {
            return false;
        }
        if !data.is_empty() {
            inner.data.push_back(data);
        }
        inner.end |= end;
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The request's trailers, which end it.
    pub fn trailers(&self, trailers: HeaderMap) {
        let mut inner = self.lock();
        inner.trailers = Some(trailers);
        inner.end = true;
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Fails the body (unless it ended): the stream was reset or the connection closed.
    pub fn fail(&self, error: StreamError) {
        let mut inner = self.lock();
        if inner.end || inner.error.is_some() {
            return;
        }
        inner.error = Some(error);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Capacity taken since the last call, for a stream WINDOW_UPDATE.
    pub fn take_released(&self) -> u64 {
        std::mem::take(&mut self.lock().released)
    }

    /// Whether the body was dropped.
    pub fn dropped(&self) -> bool {
        self.lock().dropped
    }
}

/// A stream's request body: DATA frames as the connection received them, their flow-control
/// capacity given back as each is taken (the upstream side's own backpressure holds frames,
/// not the window).
pub struct RequestBody {
    shared: Arc<Recv>,
    /// The bytes `content-length` says are still to come, for the size hint.
    left: Option<u64>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    /// The body of a request with `headers` (which did not end with them).
    pub fn new(shared: Arc<Recv>, headers: &HeaderMap) -> Self {
        // The request checks refuse a malformed or repeated length; this one only sizes hints.
        let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
        let left = match (lengths.next(), lengths.next()) {
            (Some(value), None) => value.to_str().ok().and_then(|v| v.parse().ok()),
            _ => None,
        };
        Self { shared, left }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = &mut *self;
        let mut inner = this.shared.lock();
        if let Some(error) = inner.error {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(data) = inner.data.pop_front() {
            let len = data.len() as u64;
            inner.released += len;
            let update = !inner.end && inner.released >= RELEASE_AT;
            drop(inner);
            let conn = &this.shared.conn;
            conn.release(len);
            if update {
                conn.mark(&conn.window, this.shared.slot);
            }
            if let Some(left) = &mut this.left {
                *left = left.saturating_sub(len);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = inner.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if inner.end {
            return Poll::Ready(None);
        }
        match &inner.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let inner = self.shared.lock();
        inner.end && inner.data.is_empty() && inner.trailers.is_none() && inner.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.dropped = true;
        let unread: u64 = inner.data.iter().map(|d| d.len() as u64).sum();
        inner.data.clear();
        let open = !inner.end;
        drop(inner);
        let conn = &self.shared.conn;
        if unread > 0 {
            conn.release(unread);
        }
        if open {
            // The connection may now reset the rest of the stream (see `Task::Done`).
            conn.mark(&conn.window, self.shared.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(body: &mut RequestBody) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body).poll_frame(&mut cx)
    }

    #[test]
    fn data_then_trailers_then_end_and_capacity_is_released() {
        let conn = Arc::new(ConnWake::default());
        let recv = Recv::new(Arc::clone(&conn), 3);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "5".parse().expect("value"));
        let mut body = RequestBody::new(Arc::clone(&recv), &headers);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(poll(&mut body).is_pending());
        assert!(recv.push(Bytes::from_static(b"hello"), false));
        match poll(&mut body) {
            Poll::Ready(Some(Ok(frame))) => {
                assert_eq!(frame.into_data().ok().as_deref(), Some(&b"hello"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(conn.take_released(), 5);
        assert_eq!(recv.take_released(), 5);
        recv.trailers(HeaderMap::new());
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(f))) if f.is_trailers()));
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn a_reset_fails_the_body_and_a_dropped_body_takes_nothing() {
        let conn = Arc::new(ConnWake::default());
        let recv = Recv::new(Arc::clone(&conn), 70);
        let mut body = RequestBody::new(Arc::clone(&recv), &HeaderMap::new());
        recv.fail(StreamError::Reset(Reason::CANCEL));
        assert!(matches!(
            poll(&mut body),
            Poll::Ready(Some(Err(StreamError::Reset(_))))
        ));
        drop(body);
        assert!(recv.dropped());
        assert_eq!(conn.take_window(), 1 << 70);
        assert!(!recv.push(Bytes::from_static(b"x"), false));
    }
}
