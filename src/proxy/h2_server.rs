//! Our HTTP/2 server: the `h2` crate driven directly, every stream served in the connection's
//! own task.
//!
//! hyper's HTTP/2 server spawned a task per stream, boxed each stream's service future, and
//! piped each response body through its own adapter; each stream then woke its own task and
//! reached the connection through `h2`'s shared store. Here [`Connection`] accepts streams and
//! polls each stream's future (the request, then its response body) from one
//! `FuturesUnordered` in the connection's task: no task, no spawn and no cross-task wake-up per
//! stream. The protections are the ones hyper was configured with (see [`Settings::new`]): the
//! same `h2` limits, keep-alive pings, GOAWAY on graceful shutdown, RST_STREAM on a client's
//! cancel (the stream's future is dropped, so its upstream request is cancelled and the access
//! log records a client that went away), trailers both ways. CONNECT is refused by the request
//! checks (`hygiene::h2`), and extended CONNECT is never announced, so there are no tunnels.
//!
//! What the server still does that hyper did: a `date` header on responses without one, a
//! `content-length` from a body's exact size when the response has none, connection-specific
//! headers removed from responses, request body capacity released as each DATA frame is
//! taken. Re-measure with `python3 benches/load/breakdown.py --switchyard BINARY` (h2c row).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use h2::server::{Handshake, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use super::hygiene;
use super::woken::Woken;
use crate::config::LimitsConfig;
use crate::wire::{BoxError, ProxyBody};

/// The `h2` crate's defaults that hyper overrode, kept as hyper had them (window sizes sized
/// for servers that are not memory constrained; 400 KiB buffered per stream at most).
const CONN_WINDOW: u32 = 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// How every HTTP/2 connection of a worker is served, configured once from `[limits]`.
#[derive(Debug, Clone)]
pub struct Settings {
    builder: h2::server::Builder,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
}

impl Settings {
    /// The `h2` limits hyper was configured with before this server replaced it.
    pub fn new(limits: &LimitsConfig) -> Self {
        let header_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(header_list)
            .max_concurrent_streams(hygiene::H2_MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487): streams the client opens and resets before we
            // accept them; beyond 20 pending the connection is closed with ENHANCE_YOUR_CALM.
            .max_pending_accept_reset_streams(20)
            // Streams we had to reset because the client misbehaved; beyond this, GOAWAY.
            .max_local_error_reset_streams(Some(256));
        Self {
            builder,
            keepalive_interval: limits.h2_keepalive_interval,
            keepalive_timeout: limits.h2_keepalive_interval.min(Duration::from_secs(20)),
        }
    }

    /// A connection on `io` (whose preface has arrived or is on its way) that serves each
    /// accepted stream with `serve`.
    pub fn serve_connection<T, F, S>(&self, io: T, serve: F) -> Connection<T, F, S>
    where
        T: AsyncRead + AsyncWrite + Unpin,
        F: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> S,
        S: Future<Output = ()>,
    {
        Connection {
            phase: Phase::Handshaking(self.builder.handshake(io)),
            streams: FuturesUnordered::new(),
            serve,
            keepalive: None,
            interval: self.keepalive_interval,
            timeout: self.keepalive_timeout,
            close_pending: false,
        }
    }
}

enum Phase<T: AsyncRead + AsyncWrite + Unpin> {
    Handshaking(Handshake<T, Bytes>),
    Serving(h2::server::Connection<T, Bytes>),
}

/// One HTTP/2 connection and its streams in progress: resolves when the connection is closed
/// (after a graceful shutdown, once the last stream is done). Dropping it resets every stream.
pub struct Connection<T: AsyncRead + AsyncWrite + Unpin, F, S> {
    phase: Phase<T>,
    /// Boxed: see [`boxed_in_place`].
    streams: FuturesUnordered<Pin<Box<S>>>,
    serve: F,
    keepalive: Option<KeepAlive>,
    interval: Duration,
    timeout: Duration,
    close_pending: bool,
}

/// Why a connection was closed by its keep-alive pings.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 keep-alive ping not answered")]
struct KeepAliveTimedOut;

/// The keep-alive pinger: a PING after each `interval` in which no stream was opened; a PONG
/// not back within `timeout` closes the connection. Behind [`Woken`], so the connection's
/// frequent wake-ups do not poll its timer.
struct KeepAlive {
    active: Arc<AtomicBool>,
    timed_out: bool,
    pinger: Pin<Box<Woken<Pinger>>>,
}

type Pinger = Pin<Box<dyn Future<Output = ()> + Send>>;

fn pinger(
    mut ping_pong: PingPong,
    active: Arc<AtomicBool>,
    interval: Duration,
    timeout: Duration,
) -> Pinger {
    Box::pin(async move {
        loop {
            tokio::time::sleep(interval).await;
            if active.swap(false, Ordering::Relaxed) {
                continue;
            }
            if ping_pong.send_ping(Ping::opaque()).is_err() {
                // The connection is closing; nothing to watch.
                std::future::pending::<()>().await;
            }
            let pong = std::future::poll_fn(|cx| ping_pong.poll_pong(cx));
            match tokio::time::timeout(timeout, pong).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => std::future::pending::<()>().await,
                Err(_) => return,
            }
        }
    })
}

impl<T, F, S> Connection<T, F, S>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> S,
    S: Future<Output = ()>,
{
    /// Stops accepting streams (GOAWAY) and lets the open ones finish.
    pub fn graceful_shutdown(&mut self) {
        match &mut self.phase {
            Phase::Handshaking(_) => self.close_pending = true,
            Phase::Serving(conn) => conn.graceful_shutdown(),
        }
    }

    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let conn = loop {
            match &mut self.phase {
                Phase::Handshaking(handshake) => {
                    let mut conn = ready!(Pin::new(handshake).poll(cx))?;
                    if self.close_pending {
                        conn.graceful_shutdown();
                    }
                    if let Some(ping_pong) = conn.ping_pong() {
                        let active = Arc::new(AtomicBool::new(false));
                        let future =
                            pinger(ping_pong, Arc::clone(&active), self.interval, self.timeout);
                        self.keepalive = Some(KeepAlive {
                            active,
                            timed_out: false,
                            pinger: Box::pin(Woken::new(future)),
                        });
                    }
                    self.phase = Phase::Serving(conn);
                }
                Phase::Serving(conn) => break conn,
            }
        };
        if let Some(keepalive) = &mut self.keepalive {
            if !keepalive.timed_out && keepalive.pinger.as_mut().poll(cx).is_ready() {
                tracing::debug!("HTTP/2 keep-alive timed out: closing the connection");
                keepalive.timed_out = true;
                conn.abrupt_shutdown(Reason::NO_ERROR);
            }
        }
        // Bounded: each pass accepts at least one stream, and `h2` accepts no more than
        // `H2_MAX_CONCURRENT_STREAMS` at once.
        loop {
            // The streams first: what they sent is written by the accept below, in this poll.
            while let Poll::Ready(Some(())) = self.streams.poll_next_unpin(cx) {}
            let mut accepted = false;
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        accepted = true;
                        let serve = &mut self.serve;
                        self.streams
                            .push(boxed_in_place(|| serve(request, respond)));
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                    Poll::Ready(None) => {
                        return Poll::Ready(match &self.keepalive {
                            Some(keepalive) if keepalive.timed_out => {
                                Err(Box::new(KeepAliveTimedOut))
                            }
                            _ => Ok(()),
                        });
                    }
                    Poll::Pending => break,
                }
            }
            if !accepted {
                return Poll::Pending;
            }
            if let Some(keepalive) = &self.keepalive {
                keepalive.active.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl<T, F, S> Future for Connection<T, F, S>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RecvStream>, SendResponse<Bytes>) -> S + Unpin,
    S: Future<Output = ()>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_connection(cx)
    }
}

/// Boxes the future `make` builds, building it in its allocation. A stream's future (its
/// request's whole path, then its response body) is several KiB, though only its arguments
/// are set before the first poll; `FuturesUnordered::push` moves its future by value into its
/// own allocation, which copied all of it (the largest memcpy per h2c request). A box is a
/// pointer to move, and with the allocation made first the compiler writes the arguments into
/// it (the copy is an optimisation the language does not promise to remove). To re-check:
/// the `memcpy` row (and its callers) of `benches/load/breakdown.py`, h2c column.
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// A stream's request body: `h2`'s receive half, its flow-control capacity given back as each
/// DATA frame is taken (the upstream side's own backpressure holds frames, not the window).
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    /// The bytes `content-length` says are still to come, for the size hint.
    left: Option<u64>,
    data_done: bool,
}

impl H2Body {
    /// The body of a request with `headers`.
    pub fn new(recv: RecvStream, headers: &HeaderMap) -> Self {
        // The request checks refuse a malformed or repeated length; this one only sizes hints
        // (and a request that ended with its headers has no body to size).
        let left = if recv.is_end_stream() {
            None
        } else {
            let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
            match (lengths.next(), lengths.next()) {
                (Some(value), None) => value.to_str().ok().and_then(|v| v.parse().ok()),
                _ => None,
            }
        };
        Self {
            recv,
            left,
            data_done: false,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let len = data.len();
                    // Fails only when the stream is already gone; the next poll says so.
                    let _ = this.recv.flow_control().release_capacity(len);
                    if let Some(left) = &mut this.left {
                        *left = left.saturating_sub(len as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Answers one stream with the response of the request future `serve` makes, then streams
/// its body. A client's RST_STREAM before the response drops the request future (which
/// cancels the upstream request); one during the body drops the body.
///
/// `serve` makes the request future on the first poll, in this future's own frame: handed in
/// made, the request future (several KiB) was moved into this one and then into its box, a
/// copy of all of it per stream (see [`boxed_in_place`]).
pub async fn respond<M, F>(serve: M, mut respond: SendResponse<Bytes>)
where
    M: FnOnce() -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut served = std::pin::pin!(serve());
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = served.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => {
                tracing::debug!(?reason, "stream reset by the client before its response");
                Poll::Ready(None)
            }
            // The connection is gone: nobody to answer.
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let Some(response) = response else {
        return;
    };
    let (mut head, body) = response.into_parts();
    let seen = scan(&head.headers);
    if seen.forbidden {
        strip_connection_headers(&mut head.headers);
    }
    if !seen.date {
        head.headers.insert(header::DATE, date());
    }
    let end = body.is_end_stream();
    if !end && !seen.length {
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    let head = Response::from_parts(head, ());
    let send = match respond.send_response(head, end) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, "sending a response head failed");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !end {
        let mut pipe = Pipe {
            body,
            send,
            waiting: None,
        };
        if let Err(error) = std::future::poll_fn(|cx| pipe.poll(cx)).await {
            tracing::debug!(%error, "response body ended early");
        }
    }
}

/// A response body on its way to the client, one frame at a time: the next frame is taken
/// from the body only once the previous one has flow-control capacity, so a client that does
/// not read stops the upstream (and the stall watch sees the body wait).
struct Pipe {
    body: ProxyBody,
    send: SendStream<Bytes>,
    /// A chunk taken from the body, waiting for capacity; and whether it is the last.
    waiting: Option<(Bytes, bool)>,
}

impl Pipe {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Bounded by the body: each pass sends a frame or returns.
        loop {
            // Registered on every pass, so a reset wakes the stream whatever it waits for.
            if let Poll::Ready(reason) = self.send.poll_reset(cx) {
                let reason = reason?;
                return Poll::Ready(Err(Box::new(h2::Error::from(reason))));
            }
            if let Some((chunk, last)) = self.waiting.take() {
                if self.send.capacity() == 0 {
                    match self.send.poll_capacity(cx) {
                        Poll::Pending => {
                            self.waiting = Some((chunk, last));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {
                            // Capacity 0 again (assigned and taken back): wait on.
                            self.waiting = Some((chunk, last));
                            continue;
                        }
                        Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                        Poll::Ready(None) => {
                            return Poll::Ready(Err("stream closed while sending".into()))
                        }
                    }
                }
                self.send.send_data(chunk, last)?;
                if last {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let last = self.body.is_end_stream();
                        if chunk.is_empty() || last {
                            // Nothing more will be taken from the body: no capacity to wait
                            // for before sending (h2 sends it as the window allows).
                            self.send.send_data(chunk, last)?;
                            if last {
                                return Poll::Ready(Ok(()));
                            }
                            continue;
                        }
                        // A claim of one byte, not the chunk: h2 raises it to what is buffered
                        // when the chunk is sent (as hyper does, see its hyper#4003).
                        self.send.reserve_capacity(1);
                        self.waiting = Some((chunk, false));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.send.reserve_capacity(0);
                            self.send.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(error)) => {
                    self.send.send_reset(reason_of(&*error));
                    return Poll::Ready(Err(error));
                }
                None => {
                    self.send.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// The reset reason for a body that failed with `error`: an HTTP/2 reason in its chain (an
/// upstream stream's reset passes on), else INTERNAL_ERROR, as hyper chose.
fn reason_of(error: &(dyn std::error::Error + 'static)) -> Reason {
    let mut current = Some(error);
    // Bounded: error chains are short.
    for _ in 0..8 {
        let Some(error) = current else {
            break;
        };
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            return reason;
        }
        current = error.source();
    }
    Reason::INTERNAL_ERROR
}

/// Headers HTTP/2 forbids in a response (RFC 9113 8.2.2); `h2` would refuse the whole head.
const FORBIDDEN: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// What a response head holds that the server acts on.
#[derive(Debug, Default)]
struct Seen {
    forbidden: bool,
    date: bool,
    length: bool,
}

/// One pass over the few names of a response head (standard names compare as enum tags), so
/// a head pays a hashed lookup only for what it has: the response rules strip the forbidden
/// headers already, and a proxied response brings its own `date` and `content-length`.
fn scan(headers: &HeaderMap) -> Seen {
    let mut seen = Seen::default();
    for name in headers.keys() {
        seen.forbidden |= FORBIDDEN.contains(name);
        seen.date |= name == header::DATE;
        seen.length |= name == header::CONTENT_LENGTH;
    }
    seen
}

/// Removes the headers HTTP/2 forbids in a response.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in &FORBIDDEN {
        headers.remove(name);
    }
}

thread_local! {
    /// The `date` value of the current second, rendered once per second per worker.
    static DATE: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((0, None)) };
}

/// The current `date` header value (RFC 9110 6.6.1), as hyper added it to every response.
fn date() -> HeaderValue {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        match &cached.1 {
            Some(value) if cached.0 == second => value.clone(),
            _ => {
                let text = httpdate::fmt_http_date(now);
                let value = HeaderValue::from_str(&text)
                    .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
                *cached = (second, Some(value.clone()));
                value
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_are_stripped_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::DATE, HeaderValue::from_static("x"));
        let seen = scan(&headers);
        assert!(!seen.forbidden && seen.date && !seen.length, "{seen:?}");
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        assert!(scan(&headers).forbidden);
        strip_connection_headers(&mut headers);
        assert_eq!(headers.len(), 2);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn date_is_an_http_date() {
        let value = date();
        let text = value.to_str().expect("ascii");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }

    #[test]
    fn a_reset_reason_in_the_chain_is_kept() {
        let error = h2::Error::from(Reason::CANCEL);
        assert_eq!(reason_of(&error), Reason::CANCEL);
        let other = std::io::Error::other("x");
        assert_eq!(reason_of(&other), Reason::INTERNAL_ERROR);
    }
}
