//! [`GuardedIo`]: the accepted socket, with our own timers on every wait for the client and our
//! own answer to a refused request.
//!
//! The first bytes decide the protocol ([`GuardedIo::poll_arrival`]: the HTTP/2 preface, or what
//! TLS ALPN settled). HTTP/1 is read through `io::h1` ([`GuardedIo::poll_head`],
//! [`GuardedIo::poll_body`]) by our own server (`proxy::h1`): every head is checked and parsed in
//! one pass ([`head::parse`](super::head::parse)), every body is decoded exactly to its end (by
//! `Content-Length` or by following the chunks), so a smuggled second request inside a body, or
//! a bad head after good ones, never becomes a request. The `AsyncRead`/`AsyncWrite` side
//! carries HTTP/2 (after the preface, to our HTTP/2 server) and upgraded tunnels: bytes pass
//! unchecked there.
//!
//! Refusing:
//! - A bad head: no request is made of it; the session ends after answering the requests before
//!   it, and our `poll_shutdown` writes the refusal. Pipelined answers stay in order.
//! - A bad body (broken chunks, over `max_body_bytes`, `body_read_timeout`): the request is
//!   already with the service, so the body read fails, which aborts the upstream request. If
//!   the service has not answered yet, our 400/408/413 is written right away and the session's
//!   own answer is refused. The read fails with the [`Reject`](super::Reject) inside its
//!   `io::Error`, so the request path blames the client for the failed upstream request, never
//!   the endpoint (see `proxy::request_body`).
//!
//! Timers run only while we wait for the client, so a slow upstream is never blamed on the
//! client: `first_byte_timeout` (accept → first complete head, which also bounds the protocol
//! detection), `header_read_timeout` (a head's first byte → its end), `keepalive_timeout` (idle
//! between requests), `body_read_timeout` (no body byte while the request reads its body).
//!
//! Parking: after [`PARK_AFTER`] idle between requests ([`FIRST_PARK_AFTER`] after the
//! connection's first request), the HTTP/1 session ends (freeing its buffers) while the socket
//! stays open; the server then waits in [`GuardedIo::poll_arrival`] and starts a new session on
//! the next request's first byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

mod h1;
mod ops;

pub use h1::NextHead;

use super::chunked::Chunked;
use super::{ConnState, Limits};
use crate::proxy::h2::PREFACE as H2_PREFACE;

/// How much is read from the socket at once into our own buffer (heads).
const READ_CHUNK: usize = 16 * 1024;

/// How long an HTTP/1 connection waits for its next request before it is parked: the session
/// ends (see [`GuardedIo::is_parked`]) and with it what it keeps per connection (write buffer,
/// header map, the request future's slot: see `proxy::server`), so an idle keep-alive connection
/// costs a socket and a small task (`benches/load/run.sh` reports RSS per idle connection). Long
/// enough that a client keeping a connection busy never pays for a new session (under load a
/// connection waits far less than this between requests); short enough that a burst of
/// connections does not leave a high-water mark of session memory behind. HAProxy and NGINX
/// release their buffers as soon as a connection goes idle; a session costs more to rebuild than
/// a pooled buffer, hence the grace period.
pub const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// [`PARK_AFTER`] for a connection's first idle period (after its first request). A burst of
/// new connections that each send one request and then idle (what `benches/load/run.py` opens
/// for its memory figures) otherwise holds 20 ms worth of new connections' sessions at once,
/// which set the peak RSS (VmHWM) and stayed resident after they were freed. A client that
/// keeps its connection busy sends its second request within this too; one that comes back
/// later than this but within 20 ms pays one new session, once. Re-measure with
/// `benches/load/idle_memory.py` (peak and per-connection RSS).
pub const FIRST_PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Debug)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a body of known length (bytes left); then what follows.
    Length(u64, After),
    /// Following a chunked body; then what follows.
    Chunked(Box<Chunked>, After),
    /// Not HTTP/1 any more (HTTP/2, or an accepted upgrade): bytes pass unchecked.
    Passthrough,
    /// Nothing more is read: no more requests, and reads report end-of-stream.
    Closed,
}

/// What follows a message. A request that asked to upgrade is followed by the next head too:
/// the session reads nothing before it has answered, and a 101 takes the socket
/// ([`GuardedIo::switch_protocols`]).
#[derive(Debug, Clone, Copy)]
enum After {
    Head,
    Closed,
}

impl After {
    fn phase(self) -> Phase {
        match self {
            Self::Head => Phase::Head,
            Self::Closed => Phase::Closed,
        }
    }
}

/// Which protocols a connection may speak: what TLS ALPN settled, or nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// No ALPN (plaintext, or a TLS client that offered none): the first bytes decide, the
    /// HTTP/2 preface meaning HTTP/2 (prior knowledge) and anything else HTTP/1.
    Detect,
    /// ALPN `http/1.1`: HTTP/1 only; the HTTP/2 preface is a bad HTTP/1 request (400).
    Http1,
    /// ALPN `h2`: HTTP/2 only; the first bytes go to the HTTP/2 server whatever they are, and
    /// it closes a connection that does not open with the preface. An HTTP/1 answer there
    /// would be a protocol the client said it does not speak on this connection.
    Http2,
}

impl Protocols {
    /// The protocols of a TLS connection that negotiated `alpn` (`None`: no ALPN).
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            Some(b"http/1.1") => Self::Http1,
            _ => Self::Detect,
        }
    }
}

/// The guarded socket; see the module doc.
pub struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    limits: Arc<Limits>,
    accepted: Instant,
    /// Bytes read from the socket and not yet taken (a head in progress, body bytes, or what
    /// was buffered when the connection switched to HTTP/2 or a tunnel).
    inbuf: BytesMut,
    phase: Phase,
    eof: bool,
    /// Request heads accepted so far.
    heads: u64,
    /// When the first byte of the head being read arrived.
    head_started: Option<Instant>,
    /// Since when we have been waiting for the client (reset by every byte taken).
    waiting_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    /// Since when the client has accepted none of our bytes (its receive window is full).
    write_stalled_since: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Our own response (a refused head), written when the connection is shut down. Boxed: it
    /// is rare, and inline it would size every connection's task.
    farewell: Option<Box<Bytes>>,
    /// We answered a refused body in the session's place; its own output is refused from now on.
    hijacked: bool,
    /// The connection went idle and the HTTP/1 session ended so that its buffers are freed;
    /// the socket stays open for the next request (see [`PARK_AFTER`]).
    parked: bool,
    /// What the first bytes may be (TLS ALPN).
    protocols: Protocols,
}

impl<T> GuardedIo<T> {
    /// Wraps a socket accepted just now.
    pub fn new(inner: T, state: Arc<ConnState>, limits: Arc<Limits>) -> Self {
        let accepted = Instant::now();
        let timer_at = accepted + limits.first_byte_timeout;
        Self {
            inner,
            state,
            limits,
            accepted,
            inbuf: BytesMut::new(),
            phase: Phase::Head,
            eof: false,
            heads: 0,
            head_started: None,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep_until(timer_at.into())),
            timer_at,
            write_stalled_since: None,
            write_timer: None,
            farewell: None,
            hijacked: false,
            parked: false,
            protocols: Protocols::Detect,
        }
    }

    /// Holds the connection to the protocols ALPN settled (by default the first bytes decide).
    pub fn with_protocols(mut self, protocols: Protocols) -> Self {
        self.protocols = protocols;
        self
    }

    /// Whether the bytes before the first head may still be the HTTP/2 preface.
    fn may_be_preface(&self) -> bool {
        self.heads == 0 && self.protocols == Protocols::Detect
    }

    /// Whether the end of the HTTP/1 session was ours, to free its memory while the connection
    /// idles: the socket is still open and [`GuardedIo::poll_arrival`] waits for the next
    /// request. Otherwise the session ended because the connection did.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// The client sent bytes: the wait for it is over, and a head's timer starts with its
    /// first byte.
    fn bytes_arrived(&mut self) {
        self.waiting_since = None;
        if matches!(self.phase, Phase::Head) {
            self.head_started.get_or_insert_with(Instant::now);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    /// HTTP/2 (after the preface) and upgraded tunnels read here: the bytes pass unchecked,
    /// what is still buffered first. HTTP/1 is read through `poll_head` and `poll_body`, never
    /// here: in any other phase this reports end-of-stream.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 || !matches!(this.phase, Phase::Passthrough) {
            return Poll::Ready(Ok(()));
        }
        if this.inbuf.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.inbuf.len().min(buf.remaining());
        buf.put_slice(&this.inbuf[..n]);
        this.inbuf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// What [`GuardedIo::poll_arrival`] found the client sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// HTTP/1 bytes: serve them with an HTTP/1 session.
    Http1,
    /// The HTTP/2 preface (prior knowledge, or ALPN `h2`): serve the rest with HTTP/2.
    Http2,
    /// Nothing more will come (end-of-stream, a timeout, or a refusal to write at shutdown).
    Closed,
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Waits for the client's next bytes outside any session, so the wait holds no session
    /// buffer: before the first request (to choose HTTP/1 or HTTP/2 by the preface, or by
    /// ALPN) and while parked between requests. The first-byte and keep-alive timers run as
    /// they do within a session.
    pub fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Arrival>> {
        loop {
            match self.phase {
                Phase::Head => {}
                Phase::Passthrough => return Poll::Ready(Ok(Arrival::Http2)),
                Phase::Closed => return Poll::Ready(Ok(Arrival::Closed)),
                // Mid-body: not a state a parked session ends in; HTTP/1 goes on from here.
                _ => return Poll::Ready(Ok(Arrival::Http1)),
            }
            // Before the first head, bytes that may still become the HTTP/2 preface decide
            // nothing yet.
            let undecided = self.may_be_preface()
                && self.inbuf.len() < H2_PREFACE.len()
                && H2_PREFACE.starts_with(&self.inbuf);
            if !(self.inbuf.is_empty() || undecided) {
                let http2 = match self.protocols {
                    Protocols::Detect => self.inbuf.starts_with(H2_PREFACE),
                    Protocols::Http1 => false,
                    Protocols::Http2 => true,
                };
                if self.heads == 0 && http2 {
                    self.phase = Phase::Passthrough;
                    return Poll::Ready(Ok(Arrival::Http2));
                }
                self.parked = false;
                return Poll::Ready(Ok(Arrival::Http1));
            }
            if self.eof {
                self.phase = Phase::Closed;
                self.inbuf.clear();
                continue;
            }
            match self.read_more(cx) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => self.bytes_arrived(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // A timer ran out and changed the phase (or parked): look again.
                Poll::Pending => ready!(self.on_pending(cx))?,
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.hijacked {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.hijacked {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // Nothing of ours is pending on a parked connection: it closes when dropped.
            return Poll::Ready(Ok(()));
        }
        while let Some(farewell) = this.farewell.as_mut() {
            if farewell.is_empty() {
                this.farewell = None;
                break;
            }
            match Pin::new(&mut this.inner).poll_write(cx, farewell) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => this.farewell = None,
                Poll::Ready(Ok(n)) => farewell.advance(n),
                Poll::Pending => return Poll::Pending,
            }
        }
        ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        this.drain(cx);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    const FIRST_BYTE: Duration = Duration::from_secs(10);

    fn guarded(server: tokio::io::DuplexStream) -> GuardedIo<tokio::io::DuplexStream> {
        let limits = Limits {
            max_header_bytes: 8192,
            max_uri_bytes: 4096,
            max_body_bytes: None,
            first_byte_timeout: FIRST_BYTE,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
        };
        GuardedIo::new(server, ConnState::new(), Arc::new(limits))
    }

    /// Waits for `poll_arrival`'s verdict.
    async fn arrival(io: &mut GuardedIo<tokio::io::DuplexStream>) -> Arrival {
        poll_fn(|cx| io.poll_arrival(cx)).await.expect("arrival")
    }

    /// Polls `poll_arrival` once (a parked wait must not resolve without bytes).
    fn arrival_now(io: &mut GuardedIo<tokio::io::DuplexStream>) -> Poll<io::Result<Arrival>> {
        let waker = std::task::Waker::noop();
        io.poll_arrival(&mut Context::from_waker(waker))
    }

    /// Waits for `poll_head`'s next head: the request's method and target, or `None` when the
    /// session ends.
    async fn next_head(io: &mut GuardedIo<tokio::io::DuplexStream>) -> Option<String> {
        match poll_fn(|cx| io.poll_head(cx, &mut None))
            .await
            .expect("head")
        {
            NextHead::Request(_, request) => {
                Some(format!("{} {}", request.method(), request.uri()))
            }
            NextHead::End => None,
        }
    }

    /// ALPN decides instead of the first bytes: `h2` hands even an HTTP/1 head to the HTTP/2
    /// server (which refuses it), `http/1.1` checks the preface as an HTTP/1 head (400).
    #[tokio::test(start_paused = true)]
    async fn alpn_overrides_detection() {
        assert_eq!(Protocols::from_alpn(Some(b"h2")), Protocols::Http2);
        assert_eq!(Protocols::from_alpn(Some(b"http/1.1")), Protocols::Http1);
        assert_eq!(Protocols::from_alpn(None), Protocols::Detect);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server).with_protocols(Protocols::Http2);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(arrival(&mut io).await, Arrival::Http2);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server).with_protocols(Protocols::Http1);
        client.write_all(H2_PREFACE).await.unwrap();
        assert_eq!(arrival(&mut io).await, Arrival::Http1);
        assert_eq!(
            next_head(&mut io).await,
            None,
            "the preface is refused, not made a request"
        );
        let farewell: &[u8] = io.farewell.as_deref().map_or(&[], |bytes| bytes);
        assert!(farewell.starts_with(b"HTTP/1.1 400"), "{farewell:?}");
    }

    /// The first idle period parks after `FIRST_PARK_AFTER`, every later one after
    /// `PARK_AFTER`, each counted from the moment the session waits for the next head.
    #[tokio::test]
    async fn the_first_idle_period_parks_sooner() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server);
        for (request, grace) in [("GET /1", FIRST_PARK_AFTER), ("GET /2", PARK_AFTER)] {
            client.write_all(request.as_bytes()).await.unwrap();
            client
                .write_all(b" HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(arrival(&mut io).await, Arrival::Http1);
            assert_eq!(next_head(&mut io).await.as_deref(), Some(request));
            // The session now waits for the next head.
            let now = Instant::now();
            io.waiting_since = None;
            assert_eq!(io.deadline(now), Some((now + grace, ops::Wait::Park)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_waits_for_bytes_then_resumes_http1() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(arrival(&mut io).await, Arrival::Http1);
        assert_eq!(next_head(&mut io).await.as_deref(), Some("GET /"));

        // The session waits for the next head; past the park grace the session ends.
        assert_eq!(next_head(&mut io).await, None);
        assert!(io.is_parked());
        // Parked with nothing sent: the wait stays pending, however often it is polled.
        for _ in 0..3 {
            assert!(arrival_now(&mut io).is_pending());
        }
        client
            .write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(arrival(&mut io).await, Arrival::Http1);
        assert!(!io.is_parked());
        assert_eq!(next_head(&mut io).await.as_deref(), Some("GET /next"));
    }

    /// The byte path: nothing while the connection is HTTP/1 (that is read through
    /// `poll_head`/`poll_body`); after a 101, what was buffered first, then the socket as is.
    #[tokio::test(start_paused = true)]
    async fn after_an_upgrade_bytes_pass_unchecked_buffered_first() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server);
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\nearly",
            )
            .await
            .unwrap();
        assert_eq!(arrival(&mut io).await, Arrival::Http1);
        let mut buf = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut io, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 0, "HTTP/1 bytes never leave through the byte path");
        assert_eq!(next_head(&mut io).await.as_deref(), Some("GET /ws"));
        io.switch_protocols();
        client.write_all(b" late \x00\r\n").await.unwrap();
        let mut got = Vec::new();
        while got.len() < b"early late \x00\r\n".len() {
            let n = tokio::io::AsyncReadExt::read(&mut io, &mut buf)
                .await
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"early late \x00\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn the_preface_picks_http2_and_a_silent_client_is_closed() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        assert!(
            arrival_now(&mut io).is_pending(),
            "half a preface decides nothing"
        );
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        assert_eq!(arrival(&mut io).await, Arrival::Http2);

        let (_client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server);
        let waited = tokio::time::timeout(
            FIRST_BYTE + Duration::from_secs(1),
            poll_fn(|cx| io.poll_arrival(cx)),
        )
        .await;
        assert_eq!(waited.unwrap().unwrap(), Arrival::Closed);
    }
}
