//! [`GuardedIo`]: the accepted socket as hyper sees it, with every HTTP/1 request head checked
//! before hyper may read it, and our own timers on every wait for the client.
//!
//! HTTP/1 is served by our own server now (`proxy::h1`), which takes heads and decoded bodies
//! from `io::h1` (`poll_head`, `poll_body`): the same phases, timers and refusals as the byte path
//! below, which still carries HTTP/2 and upgraded connections. Where the text below says
//! "hyper" for HTTP/1, read "the HTTP/1 session".
//!
//! Inbound bytes are buffered and walked through a small state machine: a head is released to
//! hyper only once [`head::check`] accepts it whole; then exactly its body (by `Content-Length`
//! or by following the chunks) is released as it arrives; then the next head. So a smuggled
//! second request inside a body, or a bad head after good ones, never reaches hyper.
//!
//! Refusing works without hyper's help:
//! - A bad head: the reader reports end-of-stream from that point. hyper (with half-close on)
//!   still answers the requests before it, then sees the end and shuts the connection down;
//!   our `poll_shutdown` writes the refusal first. Pipelined answers stay in order.
//! - A bad body (broken chunks, over `max_body_bytes`, `body_read_timeout`): the request is
//!   already with the service, so the reader fails, which aborts the body and with it the
//!   upstream request. If the service has not answered yet, our 400/408/413 is written right
//!   away and hyper's own output is discarded. The read fails with the [`Reject`] inside its
//!   `io::Error`, so the request path blames the client for the failed upstream request, never
//!   the endpoint (see `proxy::request_body`).
//!
//! Timers run only while hyper waits for the client, so a slow upstream is never blamed on
//! the client: `first_byte_timeout` (accept → first complete head, which also bounds the
//! protocol detection), `header_read_timeout` (a head's first byte → its end), `keepalive_timeout`
//! (idle between requests), `body_read_timeout` (no body byte while hyper wants one).
//!
//! Parking: after [`PARK_AFTER`] idle between requests ([`FIRST_PARK_AFTER`] after the
//! connection's first request), hyper's session is told end-of-stream
//! (it ends cleanly, freeing its buffers) while the socket stays open; the server then waits
//! in [`GuardedIo::poll_arrival`] and starts a new session on the next request's first byte.

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

use super::chunked::{ChunkError, Chunked};
use super::head::{self, Framing};
use super::{ConnState, Limits, Reject};

/// The HTTP/2 client connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much is read from the socket at once into our own buffer (heads).
const READ_CHUNK: usize = 16 * 1024;

/// Most body bytes read at once straight into hyper's buffer.
const DIRECT_READ_MAX: usize = 256 * 1024;

/// How long an HTTP/1 connection waits for its next request before it is parked: hyper's session
/// ends (see [`GuardedIo::is_parked`]) and with it the tens of KiB that hyper keeps per connection
/// (read and write buffers, dispatcher state), so an idle keep-alive connection costs a socket and
/// a small task (`benches/load/run.sh` reports RSS per idle connection). Long enough that a client
/// keeping a connection busy never pays for a new session (under load a connection waits far less
/// than this between requests); short enough that a burst of connections does not leave a
/// high-water mark of session memory behind. HAProxy and NGINX release their buffers as soon as a
/// connection goes idle; a hyper session costs more to rebuild than a pooled buffer, hence the
/// grace period.
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
    /// Releasing a body of known length; then `next`.
    Length(u64, After),
    /// Following a chunked body; then `next`.
    Chunked(Box<Chunked>, After),
    /// The request asked to upgrade; waiting for the service's answer.
    AwaitUpgrade,
    /// Not HTTP/1 any more (HTTP/2, or an accepted upgrade): bytes pass unchecked.
    Passthrough,
    /// Nothing more goes to hyper; reads report end-of-stream.
    Closed,
}

/// What follows a message.
#[derive(Debug, Clone, Copy)]
enum After {
    Head,
    AwaitUpgrade,
    Closed,
}

impl After {
    fn phase(self) -> Phase {
        match self {
            Self::Head => Phase::Head,
            Self::AwaitUpgrade => Phase::AwaitUpgrade,
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
    /// Bytes read from the socket and not yet handed to hyper.
    inbuf: BytesMut,
    /// How many bytes at the front of `inbuf` are checked and may go to hyper.
    ready: usize,
    phase: Phase,
    eof: bool,
    /// Request heads handed to hyper so far.
    heads: u64,
    /// When the first byte of the head being read arrived.
    head_started: Option<Instant>,
    /// Since when hyper has been waiting for the client (reset by every byte handed over).
    waiting_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    /// Since when the client has accepted none of our bytes (its receive window is full).
    write_stalled_since: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Our own response, written when hyper shuts the connection down. Boxed: it is rare, and
    /// inline it would size every connection's task.
    farewell: Option<Box<Bytes>>,
    /// We answered in hyper's place; its output is refused from now on.
    hijacked: bool,
    /// The connection went idle and hyper's session was told end-of-stream so that its
    /// buffers are freed; the socket stays open for the next request (see [`PARK_AFTER`]).
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
            ready: 0,
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

    /// Whether the end of hyper's session was ours, to free its memory while the connection
    /// idles: the socket is still open and [`GuardedIo::poll_arrival`] waits for the next
    /// request. Otherwise the session ended because the connection did.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Puts back bytes a finished hyper session had read but not parsed. They came from us,
    /// so they are already checked: they go to the next session first, as they are.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inbuf = BytesMut::with_capacity(bytes.len() + self.inbuf.len());
        inbuf.extend_from_slice(bytes);
        inbuf.extend_from_slice(&self.inbuf);
        self.inbuf = inbuf;
        self.ready += bytes.len();
    }

    /// The client sent bytes: the wait for it is over, and a head's timer starts with its
    /// first byte.
    fn bytes_arrived(&mut self) {
        self.waiting_since = None;
        if matches!(self.phase, Phase::Head) {
            self.head_started.get_or_insert_with(Instant::now);
        }
    }

    /// Walks the state machine over the buffered bytes (all unchecked: `ready` is 0). Returns
    /// whether anything changed.
    fn advance(&mut self) -> Result<bool, Reject> {
        let buffered = self.inbuf.len();
        match &mut self.phase {
            Phase::Head => {
                if buffered == 0 {
                    return Ok(false);
                }
                if self.may_be_preface() && self.inbuf.len() < H2_PREFACE.len() {
                    if H2_PREFACE.starts_with(&self.inbuf) {
                        return Ok(false);
                    }
                } else if self.may_be_preface() && self.inbuf.starts_with(H2_PREFACE) {
                    self.phase = Phase::Passthrough;
                    self.ready = buffered;
                    return Ok(true);
                }
                let Some(head) = head::check(&self.inbuf, &self.limits)? else {
                    return Ok(false);
                };
                self.ready = head.len;
                self.heads += 1;
                self.head_started = None;
                let after = if head.close {
                    After::Closed
                } else if head.upgrade {
                    After::AwaitUpgrade
                } else {
                    After::Head
                };
                self.phase = match head.framing {
                    Framing::None | Framing::Length(0) => after.phase(),
                    Framing::Length(n) => Phase::Length(n, after),
                    Framing::Chunked => Phase::Chunked(
                        Box::new(Chunked::new(
                            self.limits.max_body_bytes,
                            self.limits.max_header_bytes,
                        )),
                        after,
                    ),
                };
                Ok(true)
            }
            Phase::Length(left, after) => {
                if buffered == 0 {
                    return Ok(false);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buffered);
                self.ready = n;
                *left -= n as u64;
                if *left == 0 {
                    self.phase = after.phase();
                }
                Ok(true)
            }
            Phase::Chunked(chunked, after) => {
                let n = chunked.feed(&self.inbuf).map_err(|e| match e {
                    ChunkError::Malformed => Reject::BadChunk,
                    ChunkError::TooLarge => Reject::BodyTooLarge,
                })?;
                self.ready = n;
                if chunked.is_done() {
                    self.phase = after.phase();
                    return Ok(true);
                }
                Ok(n > 0)
            }
            Phase::AwaitUpgrade | Phase::Passthrough | Phase::Closed => Ok(false),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Parked: the session that reads is over; its next read must not take client bytes.
        if buf.remaining() == 0 || this.parked {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.inbuf[..n]);
                this.inbuf.advance(n);
                this.ready -= n;
                this.waiting_since = None;
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Passthrough if this.inbuf.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                Phase::Passthrough => {
                    this.ready = this.inbuf.len();
                    continue;
                }
                Phase::AwaitUpgrade => {
                    if this.state.responses() < this.heads {
                        this.state.park(cx.waker());
                        // Re-check: the answer may have come between the load and the park.
                        if this.state.responses() < this.heads {
                            return Poll::Pending;
                        }
                    }
                    this.phase = if this.state.switched() {
                        Phase::Passthrough
                    } else {
                        Phase::Head
                    };
                    continue;
                }
                _ => {}
            }
            let body = matches!(this.phase, Phase::Length(..) | Phase::Chunked(..));
            match this.advance() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(reject) if body => return this.refuse_body(cx, reject),
                Err(reject) => return this.refuse_head(reject),
            }
            if this.eof {
                if body {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                // A partial head followed by EOF is dropped: nothing complete to answer.
                this.phase = Phase::Closed;
                this.inbuf.clear();
                return Poll::Ready(Ok(()));
            }
            let read = if body && this.inbuf.is_empty() {
                match this.read_body_direct(cx, buf) {
                    // Body bytes went straight into hyper's buffer.
                    Poll::Ready(Ok(Ok(n))) if n > 0 => {
                        this.waiting_since = None;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(Ok(_))) => Poll::Ready(Ok(0)),
                    Poll::Ready(Ok(Err(reject))) => return this.refuse_body(cx, reject),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            } else {
                this.read_more(cx)
            };
            match read {
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => this.bytes_arrived(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return this.on_pending(cx),
            }
        }
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
    /// Waits for the client's next bytes without any hyper session, so the wait holds no
    /// buffer of hyper's: before the first request (to choose HTTP/1 or HTTP/2 by the
    /// preface) and while parked between requests. The first-byte and keep-alive timers run
    /// as they do under hyper.
    pub fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Arrival>> {
        loop {
            match self.phase {
                Phase::Head => {}
                Phase::Passthrough => return Poll::Ready(Ok(Arrival::Http2)),
                Phase::Closed => return Poll::Ready(Ok(Arrival::Closed)),
                // Mid-message: not a state a session ends in, but hyper can take it from here.
                _ => return Poll::Ready(Ok(Arrival::Http1)),
            }
            // Before the first head, bytes that may still become the HTTP/2 preface decide
            // nothing yet.
            let undecided = self.may_be_preface()
                && self.inbuf.len() < H2_PREFACE.len()
                && H2_PREFACE.starts_with(&self.inbuf);
            if self.ready > 0 || !(self.inbuf.is_empty() || undecided) {
                let http2 = match self.protocols {
                    Protocols::Detect => self.inbuf.starts_with(H2_PREFACE),
                    Protocols::Http1 => false,
                    Protocols::Http2 => true,
                };
                if self.heads == 0 && http2 {
                    self.phase = Phase::Passthrough;
                    self.ready = self.inbuf.len();
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
            // hyper ends its session with a shutdown; the connection itself stays open.
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
        let mut buf = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut io, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 0, "the preface is refused, not handed to hyper");
        let farewell: &[u8] = io.farewell.as_deref().map_or(&[], |bytes| bytes);
        assert!(farewell.starts_with(b"HTTP/1.1 400"), "{farewell:?}");
    }

    /// The first idle period parks after `FIRST_PARK_AFTER`, every later one after
    /// `PARK_AFTER`, each counted from the moment hyper waits for the next head.
    #[tokio::test]
    async fn the_first_idle_period_parks_sooner() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = guarded(server);
        let mut head = [0u8; 64];
        for (request, grace) in [
            (&b"GET /1 "[..], FIRST_PARK_AFTER),
            (b"GET /2 ", PARK_AFTER),
        ] {
            client.write_all(request).await.unwrap();
            client
                .write_all(b"HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(arrival(&mut io).await, Arrival::Http1);
            let n = tokio::io::AsyncReadExt::read(&mut io, &mut head)
                .await
                .unwrap();
            assert!(head[..n].starts_with(request));
            // hyper now waits for the next head.
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
        let mut head = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut io, &mut head)
            .await
            .unwrap();
        assert!(head[..n].starts_with(b"GET / "));

        // hyper waits for the next head; past PARK_AFTER the read reports end-of-stream.
        let eof = tokio::io::AsyncReadExt::read(&mut io, &mut head)
            .await
            .unwrap();
        assert_eq!(eof, 0);
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
        let n = tokio::io::AsyncReadExt::read(&mut io, &mut head)
            .await
            .unwrap();
        assert!(head[..n].starts_with(b"GET /next "));
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
