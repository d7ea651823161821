//! [`GuardedIo`]: the accepted socket as hyper sees it, with every HTTP/1 request head checked
//! before hyper may read it, and our own timers on every wait for the client.
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
//!   away and hyper's own output is discarded.
//!
//! Timers run only while hyper waits for the client, so a slow upstream is never blamed on
//! the client: `first_byte_timeout` (accept → first complete head, which also bounds the
//! protocol detection), `header_read_timeout` (a head's first byte → its end), `keepalive_timeout`
//! (idle between requests), `body_read_timeout` (no body byte while hyper wants one).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

mod ops;

use super::chunked::{ChunkError, Chunked};
use super::head::{self, Framing};
use super::{ConnState, Limits, Reject};

/// The HTTP/2 client connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much is read from the socket at once into our own buffer (heads).
const READ_CHUNK: usize = 16 * 1024;

/// Most body bytes read at once straight into hyper's buffer.
const DIRECT_READ_MAX: usize = 256 * 1024;

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
    /// Our own response, written when hyper shuts the connection down.
    farewell: Option<Bytes>,
    /// We answered in hyper's place; its output is refused from now on.
    hijacked: bool,
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
        }
    }

    /// Whether the connection turned out to be HTTP/2 (prior knowledge).
    pub fn is_passthrough(&self) -> bool {
        matches!(self.phase, Phase::Passthrough)
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
                if self.heads == 0 && self.inbuf.len() < H2_PREFACE.len() {
                    if H2_PREFACE.starts_with(&self.inbuf) {
                        return Ok(false);
                    }
                } else if self.heads == 0 && self.inbuf.starts_with(H2_PREFACE) {
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
        if buf.remaining() == 0 {
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
                Poll::Ready(Ok(_)) => {
                    this.waiting_since = None;
                    if matches!(this.phase, Phase::Head) && this.head_started.is_none() {
                        this.head_started = Some(Instant::now());
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some((at, wait)) = this.deadline(Instant::now()) else {
                        return Poll::Pending;
                    };
                    if at != this.timer_at {
                        this.timer_at = at;
                        this.timer.as_mut().reset(at.into());
                    }
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    return this.on_timeout(cx, wait);
                }
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
