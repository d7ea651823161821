//! The reading side of our own HTTP/1 server (`proxy::h1`): request heads parsed once (the
//! strict check and the parse are one pass, [`head::parse`]) and request bodies decoded, straight
//! from `GuardedIo`'s buffer, with the same phases, timers and refusals as the byte path hyper
//! used to read through (`poll_read`).

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{GuardedIo, Phase};
use crate::proxy::hygiene::chunked::{ChunkError, Chunked};
use crate::proxy::hygiene::head::{self, Framing, Head};
use crate::proxy::hygiene::Reject;

/// Most body bytes read from the socket at once.
const BODY_READ_MAX: usize = 64 * 1024;

/// What [`GuardedIo::poll_head`] found.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once; a box would cost an allocation"
)]
pub enum NextHead {
    /// A request head that passed every check, and the request it carries (without body).
    Request(Head, Request<()>),
    /// No more requests on this session: the connection ended, timed out, was refused (the
    /// refusal is written at shutdown), or parked ([`GuardedIo::is_parked`]).
    End,
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Waits for the next request head, with the first-byte, header, keep-alive and park
    /// timers.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<NextHead>> {
        loop {
            if self.parked {
                return Poll::Ready(Ok(NextHead::End));
            }
            match self.phase {
                Phase::Head => {}
                // The answer to the upgrade request was not a 101 (a 101 takes the socket).
                Phase::AwaitUpgrade => {
                    self.phase = Phase::Head;
                    continue;
                }
                // A body left unread, or not HTTP/1 any more: nothing to parse.
                _ => return Poll::Ready(Ok(NextHead::End)),
            }
            if !self.inbuf.is_empty() {
                match head::locate(&self.inbuf, &self.limits) {
                    Ok(Some(end)) => {
                        let bytes = self.inbuf.split_to(end).freeze();
                        match head::parse(&bytes, &self.limits) {
                            Ok((head, request)) => {
                                self.accept_head(&head);
                                return Poll::Ready(Ok(NextHead::Request(head, request)));
                            }
                            Err(reject) => {
                                let _ = self.refuse_head(reject);
                                return Poll::Ready(Ok(NextHead::End));
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(reject) => {
                        let _ = self.refuse_head(reject);
                        return Poll::Ready(Ok(NextHead::End));
                    }
                }
            }
            if self.eof {
                // A partial head followed by EOF is dropped: nothing complete to answer.
                self.phase = Phase::Closed;
                self.inbuf.clear();
                return Poll::Ready(Ok(NextHead::End));
            }
            match self.read_more(cx) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => self.bytes_arrived(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // A timer may have run out and changed the phase (or parked): look again.
                Poll::Pending => match self.on_pending(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                },
            }
        }
    }

    /// The phase after an accepted head: its body, then what follows the message.
    fn accept_head(&mut self, head: &Head) {
        self.heads += 1;
        self.head_started = None;
        self.waiting_since = None;
        let after = if head.close {
            super::After::Closed
        } else if head.upgrade {
            super::After::AwaitUpgrade
        } else {
            super::After::Head
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
    }

    /// The next piece of the current request's body (`None`: it ended), decoded, with the
    /// body timer and the strict chunk grammar. A refusal (broken chunks, over
    /// `max_body_bytes`, `body_read_timeout`) is answered at once if the request has no
    /// answer yet, and the read fails with the [`Reject`] inside its error, as `poll_read`'s
    /// does.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            match &mut self.phase {
                Phase::Length(left, after) => {
                    if !self.inbuf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(self.inbuf.len());
                        *left -= n as u64;
                        if *left == 0 {
                            self.phase = after.phase();
                        }
                        self.waiting_since = None;
                        return Poll::Ready(Ok(Some(self.inbuf.split_to(n).freeze())));
                    }
                }
                Phase::Chunked(chunked, after) => {
                    if !self.inbuf.is_empty() {
                        let left = chunked.data_left();
                        if left > 0 {
                            let n = usize::try_from(left)
                                .unwrap_or(usize::MAX)
                                .min(self.inbuf.len());
                            chunked.took_data(n as u64);
                            self.waiting_since = None;
                            return Poll::Ready(Ok(Some(self.inbuf.split_to(n).freeze())));
                        }
                        match chunked.skip_framing(&self.inbuf) {
                            Ok(used) => {
                                self.inbuf.advance(used);
                                if chunked.is_done() {
                                    self.phase = after.phase();
                                    return Poll::Ready(Ok(None));
                                }
                                // Framing only, or data next: look again.
                                if !self.inbuf.is_empty() {
                                    continue;
                                }
                            }
                            Err(e) => {
                                let reject = match e {
                                    ChunkError::Malformed => Reject::BadChunk,
                                    ChunkError::TooLarge => Reject::BodyTooLarge,
                                };
                                return self.refuse_body(cx, reject).map(|r| r.map(|()| None));
                            }
                        }
                    }
                }
                _ => return Poll::Ready(Ok(None)),
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            match self.read_body(cx) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => self.bytes_arrived(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => match self.on_pending(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                },
            }
        }
    }

    /// Reads body bytes straight into `inbuf`'s spare room (no copy through a stack chunk as
    /// for heads): they leave it as shared slices.
    fn read_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let want = match &self.phase {
            Phase::Length(left, _) => usize::try_from(*left).unwrap_or(usize::MAX),
            _ => BODY_READ_MAX,
        }
        .clamp(1, BODY_READ_MAX);
        if self.inbuf.capacity() - self.inbuf.len() < want.min(4096) {
            self.inbuf.reserve(want);
        }
        std::pin::pin!(self.inner.read_buf(&mut self.inbuf)).poll(cx)
    }

    /// Whether the current request's body is still being read (it was not read to its end).
    pub fn body_unread(&self) -> bool {
        matches!(self.phase, Phase::Length(..) | Phase::Chunked(..))
    }

    /// The response to the upgrade request was a 101: from now on bytes pass unchecked (what
    /// is buffered first), for the tunnel.
    pub fn switch_protocols(&mut self) {
        self.phase = Phase::Passthrough;
        self.ready = self.inbuf.len();
    }

    /// Nothing more is read on this connection (an answer with `connection: close`).
    pub fn close_reading(&mut self) {
        self.phase = Phase::Closed;
    }
}
