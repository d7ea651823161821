//! The side paths of [`GuardedIo`]: timers, refusals, the slow-reader watch, reading into the
//! buffer and the lingering drain. Split from `mod.rs` to keep the main paths readable.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{GuardedIo, Phase, FIRST_PARK_AFTER, PARK_AFTER, READ_CHUNK};
use crate::proxy::hygiene::{count, Reject};

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    FirstByte,
    /// The connection has idled for [`super::PARK_AFTER`] ([`super::FIRST_PARK_AFTER`] after its
    /// first request): end the HTTP/1 session, keep the socket.
    Park,
    Idle,
    Header,
    Body,
}

impl<T> GuardedIo<T> {
    /// What we are waiting on from the client and until when; `None` = no limit (the bytes are
    /// no longer HTTP/1, or nothing more is read).
    pub(super) fn deadline(&mut self, now: Instant) -> Option<(Instant, Wait)> {
        let waiting = *self.waiting_since.get_or_insert(now);
        let first = self.accepted + self.limits.first_byte_timeout;
        match self.phase {
            Phase::Head if self.inbuf.is_empty() && self.heads == 0 => {
                Some((first, Wait::FirstByte))
            }
            Phase::Head if self.inbuf.is_empty() => {
                let idle = waiting + self.limits.keepalive_timeout;
                let grace = if self.heads == 1 {
                    FIRST_PARK_AFTER
                } else {
                    PARK_AFTER
                };
                let park = waiting + grace;
                if self.parked || park >= idle {
                    Some((idle, Wait::Idle))
                } else {
                    Some((park, Wait::Park))
                }
            }
            Phase::Head => {
                let started = *self.head_started.get_or_insert(now);
                let mut at = started + self.limits.header_read_timeout;
                if self.heads == 0 {
                    at = at.min(first);
                }
                Some((at, Wait::Header))
            }
            Phase::Length(..) | Phase::Chunked(..) => {
                Some((waiting + self.limits.body_read_timeout, Wait::Body))
            }
            Phase::Passthrough | Phase::Closed => None,
        }
    }

    /// A refusal found while reading a head: no more requests, the answer at shutdown.
    pub(super) fn refuse_head(&mut self, reject: Reject) -> Poll<io::Result<()>> {
        reject.count();
        tracing::debug!(reason = reject.reason(), "request refused");
        self.farewell = Some(Box::new(reject.http1_response()));
        self.phase = Phase::Closed;
        self.inbuf.clear();
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// A refusal inside a body the service already has: answer now unless it has answered,
    /// then fail the read so the body (and the upstream request reading it) is aborted.
    pub(super) fn refuse_body(
        &mut self,
        cx: &mut Context<'_>,
        reject: Reject,
    ) -> Poll<io::Result<()>> {
        reject.count();
        tracing::debug!(reason = reject.reason(), "request body refused");
        if self.state.responses() < self.heads {
            self.write_now(cx, &reject.http1_response());
            self.hijacked = true;
        }
        self.phase = Phase::Closed;
        self.inbuf.clear();
        let kind = match reject {
            Reject::BodyTimeout => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::InvalidData,
        };
        // The refusal itself rides inside the error, so the request body's reader can tell
        // the client's fault (and its status) from a broken connection.
        Poll::Ready(Err(io::Error::new(kind, reject)))
    }

    /// Best-effort write of a short response: the socket's send buffer is empty (no response
    /// is in progress), so it goes out in one call in practice; if not, the close says enough.
    fn write_now(&mut self, cx: &mut Context<'_>, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[off..]) {
                Poll::Ready(Ok(n)) if n > 0 => off += n,
                _ => break,
            }
        }
    }

    /// Slow-read protection: a client that takes none of our bytes for `body_read_timeout`
    /// (the same "no progress" limit as for its body) fails the write, closing the connection.
    pub(super) fn watch_write(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if result.is_ready() {
            self.write_stalled_since = None;
            return result;
        }
        let now = Instant::now();
        let at = *self.write_stalled_since.get_or_insert(now) + self.limits.body_read_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())));
        if timer.deadline() != at.into() {
            timer.as_mut().reset(at.into());
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        count("slow_read");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading",
        )))
    }

    /// Lingering close, shortened: discard what the client already sent, so closing a socket
    /// with unread input does not turn into an RST that could destroy our answer in flight.
    pub(super) fn drain(&mut self, _cx: &mut Context<'_>) {
        // Uninitialised: zeroing 16 KiB per read is wasted work (see `read_more`).
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        // Polled with a waker that does nothing: the drain wants no wake-up, and a socket that
        // is not on the reactor yet (`proxy::listener::Connection`) then tries its read
        // without joining the reactor just to be closed.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Bounded: at most 16 reads (256 KiB), and only what is already there.
        for _ in 0..16 {
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                _ => break,
            }
        }
    }

    /// Reads what the socket has (up to [`READ_CHUNK`]) onto the end of `inbuf`.
    pub(super) fn read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // A stack chunk, not spare room in `inbuf`: a 16 KiB buffer kept per idle connection
        // would cost RSS, while `inbuf` only grows to what the client actually sent. Left
        // uninitialised (`ReadBuf::uninit`): zeroing the chunk on every head read showed up
        // as the only `memset` in a load profile (`benches/load/run.sh --instructions` runs
        // the proxy under callgrind).
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                self.inbuf.extend_from_slice(buf.filled());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The socket has nothing for us: arms the timer for what we are waiting on, and acts on
    /// it once it runs out.
    pub(super) fn on_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((at, wait)) = self.deadline(Instant::now()) else {
            return Poll::Pending;
        };
        if at != self.timer_at {
            self.timer_at = at;
            self.timer.as_mut().reset(at.into());
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.on_timeout(cx, wait)
    }

    fn on_timeout(&mut self, cx: &mut Context<'_>, wait: Wait) -> Poll<io::Result<()>> {
        match wait {
            // Ends the HTTP/1 session between requests (`poll_head` reports no more); `parked`
            // keeps the socket open for `poll_arrival`, and our buffer goes too.
            Wait::Park => {
                self.parked = true;
                self.inbuf = BytesMut::new();
                Poll::Ready(Ok(()))
            }
            // Nothing of a request arrived: close quietly, as for any idle connection.
            Wait::FirstByte | Wait::Idle => {
                self.phase = Phase::Closed;
                Poll::Ready(Ok(()))
            }
            Wait::Header => self.refuse_head(Reject::HeaderTimeout),
            Wait::Body => self.refuse_body(cx, Reject::BodyTimeout),
        }
    }
}
