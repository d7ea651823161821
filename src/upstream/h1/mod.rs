//! Our own HTTP/1.1 client connection, driven by the request's own task.
//!
//! Why not hyper's `client::conn::http1`: its connection can only be driven through its
//! dispatch channel (a `SendRequest` handing the request over an mpsc channel to a
//! `Connection` future, the response coming back on a oneshot, `want` signalling readiness), so
//! every upstream connection needs a driver task and every request crosses tasks twice. Measured
//! with `benches/load/breakdown.py` (callgrind, 50 keep-alive connections), that dispatch cost
//! about 2.3k instructions per request plus about 1k of copying the request into the channel,
//! and driving hyper's `Connection` inside the request's task instead ran *more* instructions
//! (docs/performance.md, "Fifth pass": its channels woke the same task for everything). Here
//! there is no channel and no task: the request's task writes the head (and the first piece of
//! the body) with one write, parses the response head ([`parse`]), and the response body reads
//! the socket itself when the downstream side polls it ([`BodyReader`], [`decode`]).
//!
//! What hyper's client did and this keeps: the request framing rules ([`encode`]), 1xx interim
//! responses dropped, HEAD/204/304/101 bodiless, Content-Length / chunked / close-delimited
//! bodies with trailers, the response head limits (100 fields, about 400 KiB), and reading
//! the response while the request body is still being sent (a backend may answer early).
//!
//! Reuse: a connection goes back to the pool only when its response body was read to the end,
//! the request was written whole, both sides allowed keep-alive, and no byte follows the
//! response. A pooled connection is checked when handed out ([`Conn::is_idle_clean`], no
//! syscall unless the socket became readable): one the backend closed, or that received stray
//! bytes, is dropped and the request goes on a fresh one, never counted against the endpoint.
//!
//! Re-measure: `python3 benches/load/breakdown.py --switchyard target/release/switchyard`
//! against a build of the previous commit; the "upstream client dispatch" and "hyper h1 codec"
//! rows are the ones this module moved.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};

pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod parse;

use self::decode::{Decoded, Decoder, Framing};
use self::encode::BodyFraming;
use self::parse::Head;
use super::connect::OpenConn;
use super::dial::{Dialed, Via};
use super::pool;
use crate::endpoint::EndpointState;
use crate::wire::outcome::{find_in_chain, BoxError, FailureKind, UpstreamError};
use crate::wire::{Body, ClientBodyError};

/// Read buffer growth: a head and a small body fit in one read.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free space the buffer grows (or, once the bodies read before were sent on
/// and dropped, is reclaimed in place) before a read. Room for a head and a 4 KiB body: with
/// only 2 KiB, one 4 KiB response in three or four was read in two pieces, which also cost a
/// second downstream write. Re-check with `strace -c -f -p PID` under `wrk` on a 4 KiB
/// response: reads and writes per request (two of each when every response takes one read).
const MIN_READ_SPACE: usize = 8 * 1024;

/// One upstream HTTP/1.1 connection. Counted open (its [`OpenConn`]) for as long as it
/// exists: in a request, in a response body, idle in a pool, or in an upgrade tunnel.
pub(crate) struct Conn {
    io: Dialed,
    /// Bytes read and not yet consumed; keeps its allocation between requests.
    rbuf: BytesMut,
    /// The request head being written; keeps its allocation between requests.
    wbuf: Vec<u8>,
    slot: OpenConn,
    /// The route it was made on (direct or a tunnel peer), re-checked by the pool when the
    /// meshed table changes (see the module doc of `upstream::dial`).
    via: Via,
}

/// A request written and its final response head read.
pub(crate) struct Sent {
    pub head: Head,
    /// Everything of the exchange allows the connection to carry another request once the
    /// response body has ended (and the upload, if any, too).
    pub reusable: bool,
    /// The rest of the request, when the response head came before it was all written.
    pub upload: Option<Upload>,
}

/// The unwritten rest of a request whose response has started (see [`BodyReader`]).
pub(crate) struct Upload(Box<Writer>);

/// A failed exchange; `unsent` gives the request back when not a byte of it was written and
/// its body was never polled, so it can go on a fresh connection.
pub(crate) struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Request<Body>>,
}

enum Failure {
    Write(io::Error),
    Read(io::Error),
    Eof,
    Body(BoxError),
    Framing(&'static str),
    Parse(parse::ParseError),
}

impl Conn {
    pub(crate) fn new(io: Dialed, slot: OpenConn, via: Via) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            slot,
            via,
        }
    }

    /// The route it was made on, for the pool's check at checkout (which may record a newer
    /// table generation in it).
    pub(crate) fn via_mut(&mut self) -> &mut Via {
        &mut self.via
    }

    /// The parts an upgrade tunnel needs: the socket, bytes already read past the 101 head,
    /// and the connection's count.
    pub(crate) fn into_parts(self) -> (Dialed, BytesMut, OpenConn) {
        (self.io, self.rbuf, self.slot)
    }

    /// Bytes were read past what the exchange consumed.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Whether an idle connection can carry a request: nothing arrived on it (the backend did
    /// not close it, nor send stray bytes). Costs no syscall unless the socket turned
    /// readable since its last read.
    pub(crate) fn is_idle_clean(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ_SPACE {
            self.rbuf.reserve(READ_CHUNK);
        }
        std::pin::pin!(self.io.read_buf(&mut self.rbuf)).poll(cx)
    }

    /// Writes `req` and reads its final response head; the body stays on the socket for
    /// [`BodyReader`]. Reads while writing, so an answer that comes before the whole upload
    /// (a 413, or a backend that streams while it reads) is not stuck behind it: the rest of
    /// the upload goes to the body reader ([`Sent::upload`]).
    pub(crate) async fn send(
        &mut self,
        req: Request<Body>,
        address: SocketAddr,
        lines: &super::HeadLines<'_>,
    ) -> Result<Sent, SendError> {
        let (mut parts, body) = req.into_parts();
        let body_len = if body.is_end_stream() {
            None
        } else {
            Some(body.size_hint().exact())
        };
        self.wbuf.clear();
        let (framing, close) = encode::encode_head(&mut parts, body_len, lines, &mut self.wbuf);
        let done = framing == BodyFraming::Length(0);
        let mut writer = Writer {
            pos: 0,
            data: Bytes::new(),
            tail: b"",
            framing,
            body: Some(body),
            polled: false,
            sent: 0,
            done,
            flushed: false,
            written: false,
            failed: None,
        };
        let method = &parts.method;
        let spare = &mut parts.headers;
        let result =
            std::future::poll_fn(|cx| self.poll_exchange(cx, &mut writer, method, spare)).await;
        let failure = match result {
            Ok(head) => {
                let reusable = head.keep_alive && !close && writer.failed.is_none();
                // An answer before the whole request was written (a backend that streams its
                // response while it reads, or refuses early): the body reader goes on
                // writing, as hyper's connection did.
                let upload =
                    (!writer.flushed && writer.failed.is_none()).then(|| Upload(Box::new(writer)));
                return Ok(Sent {
                    head,
                    reusable,
                    upload,
                });
            }
            Err(failure) => failure,
        };
        let unwritten = !writer.written
            && matches!(failure, Failure::Write(_) | Failure::Read(_) | Failure::Eof);
        let error = match failure {
            Failure::Body(error) => match find_in_chain::<ClientBodyError>(&*error) {
                Some(client) => {
                    UpstreamError::sent(FailureKind::Client(client.status), address, &error)
                }
                None => UpstreamError::sent(
                    FailureKind::Reset,
                    address,
                    format!("request body: {error}"),
                ),
            },
            Failure::Parse(error) => UpstreamError::sent(FailureKind::BadResponse, address, error),
            Failure::Framing(detail) => UpstreamError::sent(FailureKind::Reset, address, detail),
            Failure::Write(error) | Failure::Read(error) if unwritten => {
                UpstreamError::unsent(FailureKind::Reset, address, error)
            }
            Failure::Eof if unwritten => UpstreamError::unsent(
                FailureKind::Reset,
                address,
                "connection closed before the request was written",
            ),
            Failure::Write(error) | Failure::Read(error) => {
                UpstreamError::sent(FailureKind::Reset, address, error)
            }
            Failure::Eof => UpstreamError::sent(
                FailureKind::Reset,
                address,
                match writer.failed {
                    Some(error) => format!("connection closed before a response head: {error}"),
                    None => "connection closed before a response head".to_owned(),
                },
            ),
        };
        let unsent = match (unwritten, writer.polled, writer.body.take()) {
            (true, false, Some(body)) => Some(Request::from_parts(parts, body)),
            _ => None,
        };
        Err(SendError { error, unsent })
    }

    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut Writer,
        method: &Method,
        spare: &mut HeaderMap,
    ) -> Poll<Result<Head, Failure>> {
        // Bounded by the socket: every pass either reads bytes or returns.
        loop {
            if !writer.flushed && writer.failed.is_none() {
                match writer.poll_write(&mut self.io, &mut self.wbuf, cx) {
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                    Poll::Ready(Err(Failure::Write(error))) if writer.written => {
                        // The backend may have answered and closed (an early 413): read on,
                        // and report the write's error if no response comes.
                        writer.failed = Some(error);
                    }
                    Poll::Ready(Err(failure)) => return Poll::Ready(Err(failure)),
                }
            }
            match parse::parse(&mut self.rbuf, method, spare) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(error) => return Poll::Ready(Err(Failure::Parse(error))),
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(Failure::Eof)),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(Failure::Read(error))),
            }
        }
    }
}

/// The request's way onto the socket: the pending bytes are `wbuf[pos..]`, then `data`, then
/// `tail`, written with one vectored write where the socket allows.
struct Writer {
    pos: usize,
    data: Bytes,
    tail: &'static [u8],
    framing: BodyFraming,
    body: Option<Body>,
    /// The body was polled: the request can no longer be handed back whole.
    polled: bool,
    /// Body bytes taken so far (checked against a Content-Length).
    sent: u64,
    /// The body has no more frames to take: the request is whole once the pending bytes are
    /// written.
    done: bool,
    /// Everything was written and flushed.
    flushed: bool,
    /// A byte reached the socket.
    written: bool,
    /// The socket refused a write after some bytes went: no more writes.
    failed: Option<io::Error>,
}

impl Writer {
    fn pending(&self, out: &[u8]) -> bool {
        self.pos < out.len() || !self.data.is_empty() || !self.tail.is_empty()
    }

    fn poll_write(
        &mut self,
        io: &mut Dialed,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Failure>> {
        if !self.polled && !self.done {
            // The body's first piece, if it is already here, goes out with the head.
            let _ = self.poll_body(out, cx)?;
        }
        // Bounded by the body: every pass writes bytes, takes a frame, or returns.
        loop {
            while self.pending(out) {
                let n = ready!(self.write_some(io, out, cx)).map_err(Failure::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Failure::Write(io::ErrorKind::WriteZero.into())));
                }
                self.written = true;
                self.advance(out, n);
            }
            if self.done {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(Failure::Write)?;
                self.flushed = true;
                return Poll::Ready(Ok(()));
            }
            if self.poll_body(out, cx)?.is_pending() {
                // Waiting for the client: what was written must not wait in a TLS buffer.
                if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(cx) {
                    return Poll::Ready(Err(Failure::Write(error)));
                }
                return Poll::Pending;
            }
        }
    }

    /// Takes the body's next frame into the pending bytes.
    fn poll_body(&mut self, out: &mut Vec<u8>, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        let Some(body) = self.body.as_mut() else {
            self.done = true;
            return Poll::Ready(Ok(()));
        };
        self.polled = true;
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        let end = body.is_end_stream();
        if self.pos == out.len() {
            out.clear();
            self.pos = 0;
        }
        let chunked = matches!(self.framing, BodyFraming::Chunked { .. });
        match frame {
            None => {
                self.finish(out, None)?;
            }
            Some(Err(error)) => return Poll::Ready(Err(Failure::Body(error))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !data.is_empty() {
                        self.sent += data.len() as u64;
                        if let BodyFraming::Length(len) = self.framing {
                            if self.sent > len {
                                return Poll::Ready(Err(Failure::Framing(
                                    "request body longer than its Content-Length",
                                )));
                            }
                        }
                        if chunked {
                            encode::chunk_head(data.len(), out);
                            self.tail = if end { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                        }
                        self.data = data;
                        if end {
                            self.done = true;
                            self.check_length()?;
                        } else if self.framing == BodyFraming::Length(self.sent) {
                            // hyper's encoder stops at the length too, without waiting for
                            // the body to say it ended.
                            self.done = true;
                        }
                    } else if end {
                        self.finish(out, None)?;
                    }
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    self.finish(out, trailers.as_ref())?;
                }
            },
        }
        Poll::Ready(Ok(()))
    }

    fn finish(&mut self, out: &mut Vec<u8>, trailers: Option<&HeaderMap>) -> Result<(), Failure> {
        self.done = true;
        if let BodyFraming::Chunked { trailers: allowed } = &self.framing {
            encode::last_chunk(trailers, allowed, out);
        }
        self.check_length()
    }

    fn check_length(&self) -> Result<(), Failure> {
        match self.framing {
            BodyFraming::Length(len) if self.sent != len => Err(Failure::Framing(
                "request body shorter than its Content-Length",
            )),
            _ => Ok(()),
        }
    }

    fn write_some(
        &self,
        io: &mut Dialed,
        out: &[u8],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let segments = [&out[self.pos..], &self.data[..], self.tail];
        if io.is_write_vectored() {
            let mut slices = [io::IoSlice::new(&[]); 3];
            let mut count = 0;
            for segment in segments.iter().filter(|s| !s.is_empty()) {
                slices[count] = io::IoSlice::new(segment);
                count += 1;
            }
            Pin::new(io).poll_write_vectored(cx, &slices[..count])
        } else {
            let first = segments
                .iter()
                .find(|s| !s.is_empty())
                .map_or(&[][..], |s| s);
            Pin::new(io).poll_write(cx, first)
        }
    }

    fn advance(&mut self, out: &[u8], mut n: usize) {
        let head = (out.len() - self.pos).min(n);
        self.pos += head;
        n -= head;
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        let tail = self.tail.len().min(n);
        self.tail = &self.tail[tail..];
    }
}

/// A response body read straight off its connection when the downstream side polls it; the
/// connection returns to the pool the moment the body ends cleanly, and is dropped (closed) on
/// any error or when the body is dropped before its end.
pub(crate) struct BodyReader {
    conn: Option<Conn>,
    decoder: Decoder,
    /// The pool to return to, when the exchange allows reuse.
    release: Option<Arc<EndpointState>>,
    /// The rest of the request, written as this body is polled; the connection is reused only
    /// if it was all written.
    upload: Option<Upload>,
    /// Data went out since this body last returned `Pending`. A framing error found right
    /// behind it (in the same read) first returns `Pending` once, so the server flushes the
    /// head and data it holds: the client then sees a response cut short, not a connection
    /// closed without a response (hyper's client channel gave the server that chance too).
    unflushed: bool,
}

impl BodyReader {
    pub(crate) fn new(
        conn: Conn,
        framing: Framing,
        release: Option<Arc<EndpointState>>,
        upload: Option<Upload>,
    ) -> Self {
        Self {
            conn: Some(conn),
            decoder: Decoder::new(framing),
            release,
            upload,
            unflushed: false,
        }
    }

    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.upload.take().is_some() {
            // The request was not written whole: the connection cannot carry another.
            return;
        }
        if let Some(endpoint) = self.release.take() {
            // Bytes past the body's end are no response to anything: never reuse that.
            if conn.rbuf.is_empty() {
                pool::release_h1(&endpoint, conn);
            }
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Bounded by the socket: every pass reads bytes or returns.
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(Upload(writer)) = self.upload.as_mut() {
                match writer.poll_write(&mut conn.io, &mut conn.wbuf, cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => self.upload = None,
                    Poll::Ready(Err(Failure::Body(error))) => {
                        // The client's request body failed: so does the exchange (hyper
                        // closed the connection, failing the response body too).
                        self.conn = None;
                        self.upload = None;
                        return Poll::Ready(Some(Err(error)));
                    }
                    Poll::Ready(Err(_)) => {
                        // The backend stopped reading; its response may still come whole,
                        // but the connection is done.
                        self.upload = None;
                        self.release = None;
                    }
                }
            }
            let decoded = match self.decoder.decode(&mut conn.rbuf) {
                Err(_) if self.unflushed => {
                    // The error stays in the buffer and the decoder's state, found again on
                    // the next poll.
                    self.unflushed = false;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Ok(Decoded::NeedMore) => match conn.poll_fill(cx) {
                    Poll::Pending => {
                        self.unflushed = false;
                        return Poll::Pending;
                    }
                    Poll::Ready(read) => match read {
                        Ok(0) => match self.decoder.eof() {
                            // A body cut short right behind its data: as above.
                            Err(_) if self.unflushed => {
                                self.unflushed = false;
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                            eof => eof,
                        },
                        Ok(_) => continue,
                        Err(error) => {
                            self.conn = None;
                            return Poll::Ready(Some(Err(Box::new(error))));
                        }
                    },
                },
                decoded => decoded,
            };
            return Poll::Ready(match decoded {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_end() {
                        self.finish();
                    }
                    self.unflushed = true;
                    Some(Ok(Frame::data(data)))
                }
                Ok(Decoded::Trailers(trailers)) => {
                    self.finish();
                    Some(Ok(Frame::trailers(trailers)))
                }
                Ok(Decoded::End | Decoded::NeedMore) => {
                    self.finish();
                    None
                }
                Err(error) => {
                    self.conn = None;
                    Some(Err(Box::new(error)))
                }
            });
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_end()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
