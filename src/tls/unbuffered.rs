//! A TLS stream over rustls' unbuffered API whose buffers exist only while bytes move: the
//! record layer of the mTLS tunnel (`tls::tunnel`), as a tokio `AsyncRead + AsyncWrite`, so the
//! opaque copy, the HTTP pools and hyper use it like any stream.
//!
//! ## Why unbuffered
//!
//! A buffered rustls connection (what tokio-rustls drives) owns its I/O buffers: the deframer's
//! read buffer grows to a record while one arrives and stays at 4 KiB once used, with no API to
//! release it, and the plaintext and TLS send queues keep their allocations. A sidecar holds
//! one tunnel per intercepted connection, most of them idle (issue 27's target: 4 KiB per idle
//! intercepted connection), so those buffers were the largest item of an idle connection. With
//! the unbuffered API the caller owns the buffers: here they are allocated when bytes come or
//! go and freed when the stream goes idle (a read that would wait with no partial record
//! buffered, a flush with nothing left to send). What an idle stream keeps is rustls' connection
//! state (keys, the handshake's leftovers, the peer's certificate) and the socket.
//! [`TlsStream::buffer_capacity`] says what a stream holds now (the tests assert it is 0 when
//! idle). Re-measure the per-connection cost with `benches/transparent/run.sh` (idle memory).
//!
//! ## Buffers and bounds
//!
//! - Received ciphertext: up to [`BURST`] (four largest records), so one read syscall takes
//!   several records of a bulk stream; a record never exceeds [`MAX_RECORD`], so a buffer with
//!   that much room always makes progress.
//! - Ciphertext to send: one write takes at most four records of plaintext ([`BURST_PLAIN`]),
//!   encrypted into one buffer and sent with one `write` (a bulk copy writes 64 KiB at a time).
//!   A write that the socket did not take entirely is finished by the next write or flush.
//! - Plaintext the caller had no room for: only the rest of a record (rustls hands out whole
//!   records), kept until the next read.
//!
//! ## Semantics (as tokio-rustls)
//!
//! - `close_notify` from the peer is EOF (a read returns 0 bytes); a TCP EOF without it is
//!   `UnexpectedEof`, as a truncation must not look like a clean end.
//! - Half-close: `poll_shutdown` sends `close_notify` then FIN; reading goes on. After the
//!   peer's `close_notify` we may still write (TLS 1.3).
//! - KeyUpdate: rustls handles the peer's (and answers with the next record we send) and
//!   renews our keys before they wear out.
//! - A protocol error (garbage, a bad record) is an `InvalidData` error, never a panic; rustls'
//!   alert is sent if the socket takes it at once.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::CommonState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest TLS record on the wire: the 5-byte header and at most 2^14 + 256 bytes of
/// ciphertext (RFC 8446 section 5.2).
pub const MAX_RECORD: usize = 5 + (1 << 14) + 256;

/// Plaintext bytes in a full record.
const MAX_FRAGMENT: usize = 1 << 14;

/// Receive buffer: four largest records (see the module doc).
pub const BURST: usize = 4 * MAX_RECORD;

/// Plaintext one write encrypts at most: four full records.
pub const BURST_PLAIN: usize = 4 * MAX_FRAGMENT;

/// The most ciphertext waiting to be sent: a burst and a handshake flight's worth. More means
/// rustls produced something we never asked for; an error rather than unbounded growth.
const MAX_OUTGOING: usize = BURST + 4 * MAX_RECORD;

/// One side of an unbuffered connection: the client and server types of rustls have the same
/// methods but no common trait for `process_tls_records`.
pub trait Side:
    std::ops::DerefMut<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    /// rustls' per-side data type.
    type Data;

    /// `process_tls_records` of the side.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// What [`TlsStream::process`] stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The handshake needs bytes from the peer.
    Blocked,
    /// Handshake done, every complete record processed; carries what a write encrypted.
    Traffic(usize),
    /// Both sides sent `close_notify`.
    Closed,
    /// A read has plaintext and no room for the next record.
    ReadFull,
}

/// A TLS stream over a TCP socket with caller-owned, idle-freed buffers (see the module doc).
pub struct TlsStream<C> {
    io: TcpStream,
    conn: C,
    /// Received ciphertext; `incoming[in_start..]` is not processed yet. Empty (no allocation)
    /// while idle.
    incoming: Vec<u8>,
    in_start: usize,
    /// Ciphertext to send: `outgoing[out_start..out_end]`. The vector's length is what was
    /// initialised (encryption writes into a slice); freed on a flush with nothing left.
    outgoing: Vec<u8>,
    out_start: usize,
    out_end: usize,
    /// Plaintext a read had no room for: `plain[plain_start..]`.
    plain: Vec<u8>,
    plain_start: usize,
    /// The peer's `close_notify` came: reads are at EOF.
    read_closed: bool,
    /// We queued our `close_notify`: no more writes.
    write_closed: bool,
    /// The socket ended (TCP EOF).
    eof: bool,
    /// A TLS error ended the connection (its kind): rustls is not driven again (it would
    /// process the same bad bytes and alert twice), every later call fails with this kind.
    failed: Option<io::ErrorKind>,
}

impl<C> std::fmt::Debug for TlsStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("io", &self.io)
            .field(
                "buffer_capacity",
                &(self.incoming.capacity() + self.outgoing.capacity() + self.plain.capacity()),
            )
            .field("read_closed", &self.read_closed)
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

/// Client side of a handshake over `io` (see [`TlsStream::handshake`]).
pub type ClientStream = TlsStream<UnbufferedClientConnection>;
/// Server side of a handshake over `io` (see [`TlsStream::handshake`]).
pub type ServerStream = TlsStream<UnbufferedServerConnection>;

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

fn too_large(required: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS output of {required} bytes exceeds the stream's bound"),
    )
}

impl<C: Side> TlsStream<C> {
    /// Wraps a connected socket and a fresh rustls connection; call [`Self::handshake`] next.
    pub fn new(io: TcpStream, conn: C) -> Self {
        Self {
            io,
            conn,
            incoming: Vec::new(),
            in_start: 0,
            outgoing: Vec::new(),
            out_start: 0,
            out_end: 0,
            plain: Vec::new(),
            plain_start: 0,
            read_closed: false,
            write_closed: false,
            eof: false,
            failed: None,
        }
    }

    /// Runs the handshake to its end (our last flight sent). A TCP EOF before is
    /// `UnexpectedEof`; a refused handshake is `InvalidData` with rustls' error.
    pub async fn handshake(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let step = self.process_or_alert(None, None)?;
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                self.release_write();
                self.release_read();
                return Poll::Ready(Ok(()));
            }
            match step {
                Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "tls handshake: peer closed",
                    )))
                }
                Step::Blocked | Step::Traffic(_) | Step::ReadFull => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tls handshake eof",
                        )));
                    }
                }
            }
        }
    }

    /// rustls' view of the connection: ALPN, the peer's certificates.
    pub fn session(&self) -> &CommonState {
        &self.conn
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }

    /// Bytes of buffer this stream holds now (received, to send, undelivered plaintext): 0
    /// while idle. For tests and for measuring.
    pub fn buffer_capacity(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity() + self.plain.capacity()
    }

    /// Runs rustls over the unprocessed received bytes until it needs more of them (or has
    /// plaintext a read has no room for). Handshake messages it produces go to `outgoing`;
    /// plaintext goes to `read` while whole records fit, else to `plain`; `write` is
    /// encrypted (at most [`BURST_PLAIN`]) once the connection carries traffic.
    fn process(
        &mut self,
        mut read: Option<&mut ReadBuf<'_>>,
        write: Option<&[u8]>,
    ) -> io::Result<Step> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "TLS connection failed earlier"));
        }
        loop {
            let incoming = self.incoming.get_mut(self.in_start..).unwrap_or_default();
            let UnbufferedStatus { discard, state } = self.conn.process(incoming);
            let outcome: io::Result<Option<Step>> = match state {
                Err(error) => Err(tls_error(error)),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut outcome = Ok(None);
                    loop {
                        if let (Some(read), Some(len)) = (read.as_deref(), records.peek_len()) {
                            // Leave a record rustls holds for the next read rather than split
                            // it, unless this read got nothing yet.
                            if read.remaining() < len.get() && !read.filled().is_empty() {
                                outcome = Ok(Some(Step::ReadFull));
                                break;
                            }
                        }
                        match records.next_record() {
                            None => break,
                            Some(Err(error)) => {
                                outcome = Err(tls_error(error));
                                break;
                            }
                            Some(Ok(record)) => {
                                let payload = record.payload;
                                let direct = match read.as_deref_mut() {
                                    Some(read) if self.plain.len() == self.plain_start => {
                                        let n = read.remaining().min(payload.len());
                                        read.put_slice(&payload[..n]);
                                        n
                                    }
                                    _ => 0,
                                };
                                if direct < payload.len() {
                                    if self.plain_start == self.plain.len() {
                                        self.plain.clear();
                                        self.plain_start = 0;
                                    }
                                    self.plain.extend_from_slice(&payload[direct..]);
                                }
                            }
                        }
                    }
                    outcome
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Ok(Some(Step::Closed))
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let mut result = Ok(None);
                    loop {
                        let room = &mut self.outgoing[self.out_end..];
                        match encode.encode(room) {
                            Ok(n) => {
                                self.out_end += n;
                                break;
                            }
                            Err(EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => {
                                if let Err(error) =
                                    grow(&mut self.outgoing, self.out_end + required_size)
                                {
                                    result = Err(error);
                                    break;
                                }
                            }
                            Err(error @ EncodeError::AlreadyEncoded) => {
                                result = Err(io::Error::other(error));
                                break;
                            }
                        }
                    }
                    result
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The bytes are ours to send now (`poll_send`); rustls only needs to know
                    // they will not be encoded again.
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Step::Blocked)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match write {
                    Some(data) if !data.is_empty() => {
                        let data = &data[..data.len().min(BURST_PLAIN)];
                        let records = data.len().div_ceil(MAX_FRAGMENT);
                        let mut result = grow(
                            &mut self.outgoing,
                            self.out_end + data.len() + records * (MAX_RECORD - MAX_FRAGMENT),
                        )
                        .map(|()| None);
                        while result.is_ok() {
                            match traffic.encrypt(data, &mut self.outgoing[self.out_end..]) {
                                Ok(n) => {
                                    self.out_end += n;
                                    result = Ok(Some(Step::Traffic(data.len())));
                                    break;
                                }
                                Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                    required_size,
                                })) => {
                                    result = grow(&mut self.outgoing, self.out_end + required_size)
                                        .map(|()| None);
                                }
                                Err(error @ EncryptError::EncryptExhausted) => {
                                    result = Err(io::Error::other(error));
                                }
                            }
                        }
                        result
                    }
                    _ => Ok(Some(Step::Traffic(0))),
                },
                Ok(ConnectionState::ReadEarlyData(_)) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS early data, which the tunnel never enables",
                )),
                Ok(other) => Err(io::Error::other(format!(
                    "unexpected TLS connection state {other:?}"
                ))),
            };
            self.in_start += discard;
            if self.in_start == self.incoming.len() {
                self.incoming.clear();
                self.in_start = 0;
            }
            if let Some(step) = outcome? {
                return Ok(step);
            }
        }
    }

    /// [`Self::process`], and on a protocol error one attempt to send rustls' alert.
    fn process_or_alert(
        &mut self,
        read: Option<&mut ReadBuf<'_>>,
        write: Option<&[u8]>,
    ) -> io::Result<Step> {
        self.process(read, write).inspect_err(|error| {
            if self.failed.is_some() {
                return;
            }
            self.failed = Some(error.kind());
            // rustls queued its alert: asked with no received bytes (so the bad ones are not
            // processed again), it hands it out first; sent if the socket takes it now (best
            // effort: the connection is over either way).
            let status = self.conn.process(&mut []);
            if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
                let mut alert = [0u8; 64];
                if let Ok(n) = encode.encode(&mut alert) {
                    let _ = self.io.try_write(&alert[..n]);
                }
            }
            self.out_start = 0;
            self.out_end = 0;
            self.release_write();
        })
    }

    /// Reads from the socket into `incoming` (allocated now if there was none): the number of
    /// bytes, 0 at EOF. Waits for readiness first, so an idle stream allocates nothing.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.eof {
            return Poll::Ready(Ok(0));
        }
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            if self.incoming.capacity() == 0 {
                self.incoming = take(&RECEIVE);
                self.incoming.clear();
                self.incoming.reserve_exact(BURST);
            } else if self.incoming.capacity() - self.incoming.len() < MAX_RECORD
                && self.in_start > 0
            {
                self.incoming.drain(..self.in_start);
                self.in_start = 0;
            }
            if self.incoming.len() == self.incoming.capacity() {
                // rustls keeps asking for bytes with a full buffer: not a record we can read.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS record larger than the receive buffer",
                )));
            }
            match self.io.try_read_buf(&mut self.incoming) {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(0));
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.release_read();
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Writes `outgoing` to the socket until it is all sent (Ready) or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_start < self.out_end {
            let n =
                ready!(Pin::new(&mut self.io)
                    .poll_write(cx, &self.outgoing[self.out_start..self.out_end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_start += n;
        }
        self.out_start = 0;
        self.out_end = 0;
        Poll::Ready(Ok(()))
    }

    /// Frees the read side's buffers when they hold nothing: the receive buffer (back to the
    /// thread's pool) and delivered plaintext. Called when a read waits.
    fn release_read(&mut self) {
        if self.in_start == self.incoming.len() {
            give(&RECEIVE, std::mem::take(&mut self.incoming));
            self.in_start = 0;
        }
        if self.plain_start == self.plain.len() {
            self.plain = Vec::new();
            self.plain_start = 0;
        }
    }

    /// Frees the send buffer when everything in it went out (back to the thread's pool).
    /// Called by a flush: the writer is done for now.
    fn release_write(&mut self) {
        if self.out_start == self.out_end {
            give(&SEND, std::mem::take(&mut self.outgoing));
            self.out_start = 0;
            self.out_end = 0;
        }
    }
}

/// Buffers a thread keeps for its streams' next bursts, per kind. Without them a bulk copy
/// would allocate (and, for the send buffer, zero) a buffer at every burst; with them the
/// memory held is a few buffers per worker thread, not per connection.
const POOLED: usize = 4;

type Pool = RefCell<Vec<Vec<u8>>>;

thread_local! {
    /// Receive buffers (capacity [`BURST`]; their length is cleared on reuse).
    static RECEIVE: Pool = const { RefCell::new(Vec::new()) };
    /// Send buffers (their length is what was zeroed once: reused without zeroing again).
    static SEND: Pool = const { RefCell::new(Vec::new()) };
}

/// A buffer from the thread's pool, or an empty vector.
fn take(pool: &'static std::thread::LocalKey<Pool>) -> Vec<u8> {
    pool.try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Returns a buffer to the thread's pool (dropped if the pool is full or it is empty).
fn give(pool: &'static std::thread::LocalKey<Pool>, buffer: Vec<u8>) {
    if buffer.capacity() == 0 {
        return;
    }
    let _ = pool.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED {
            pool.push(buffer);
        }
    });
}

/// Makes `buffer` at least `len` bytes long (zeroed: rustls encodes into a slice), within
/// [`MAX_OUTGOING`].
fn grow(buffer: &mut Vec<u8>, len: usize) -> io::Result<()> {
    if len > MAX_OUTGOING {
        return Err(too_large(len));
    }
    if buffer.capacity() == 0 {
        *buffer = take(&SEND);
    }
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    Ok(())
}

impl<C: Side + Unpin> AsyncRead for TlsStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_start < this.plain.len() {
                let rest = &this.plain[this.plain_start..];
                let n = buf.remaining().min(rest.len());
                buf.put_slice(&rest[..n]);
                this.plain_start += n;
                if this.plain_start == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_start = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let queued = this.out_end;
            let step = this.process_or_alert(Some(&mut *buf), None)?;
            if this.out_end > queued {
                // rustls had something to send while reading (after the handshake it answers
                // a KeyUpdate with our next write, so this is rare). Sent without waiting:
                // waiting here would register the reader's waker for the socket's
                // writability and take it from a writer in another task (a split stream),
                // which would then never wake. What the socket did not take goes with the
                // next write or flush.
                match this
                    .io
                    .try_write(&this.outgoing[this.out_start..this.out_end])
                {
                    Ok(n) => this.out_start += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
                if this.out_start == this.out_end {
                    this.out_start = 0;
                    this.out_end = 0;
                }
            }
            if buf.filled().len() > before || this.plain_start < this.plain.len() {
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || step == Step::Closed {
                this.read_closed = true;
                this.release_read();
                return Poll::Ready(Ok(()));
            }
            match this.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    )));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    this.release_read();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<C: Side + Unpin> AsyncWrite for TlsStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        // What an earlier write left goes first: at most one burst waits.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let written = match this.process_or_alert(None, Some(data))? {
            Step::Traffic(n) => n,
            Step::Closed => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "TLS connection closed",
                )))
            }
            Step::Blocked | Step::ReadFull => {
                return Poll::Ready(Err(io::Error::other(
                    "TLS write before the handshake completed",
                )))
            }
        };
        // Out now if the socket takes it; the rest goes with the next write or flush (the
        // socket's readiness wakes the task).
        if let Poll::Ready(Err(error)) = this.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let (Some(first), None) = (slices.next(), slices.next()) else {
            // Several slices (an HTTP head and its body): joined into one record rather than
            // a record each.
            let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(BURST_PLAIN);
            let mut joined = Vec::with_capacity(total);
            for b in bufs {
                let n = (total - joined.len()).min(b.len());
                joined.extend_from_slice(&b[..n]);
            }
            return self.poll_write(cx, &joined);
        };
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        this.release_write();
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed.is_some() {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        }
        if !this.write_closed {
            ready!(this.poll_send(cx))?;
            this.write_closed = true;
            this.queue_close_notify()?;
        }
        ready!(this.poll_send(cx))?;
        this.release_write();
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<C: Side> TlsStream<C> {
    /// Encodes our `close_notify` into `outgoing` (nothing if both sides closed already).
    fn queue_close_notify(&mut self) -> io::Result<()> {
        // Complete records first (their plaintext kept for reads: reading goes on after our
        // half-close), so that rustls is in its writing state.
        if self.process(None, None)? == Step::Closed {
            return Ok(());
        }
        let incoming = self.incoming.get_mut(self.in_start..).unwrap_or_default();
        let UnbufferedStatus { discard, state } = self.conn.process(incoming);
        let result = match state {
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                let mut result = grow(&mut self.outgoing, self.out_end + MAX_RECORD);
                if result.is_ok() {
                    match traffic.queue_close_notify(&mut self.outgoing[self.out_end..]) {
                        Ok(n) => self.out_end += n,
                        Err(error) => result = Err(io::Error::other(error)),
                    }
                }
                result
            }
            // Anything else (records to read first, closed, an error): no alert; the FIN
            // ends our side all the same.
            _ => Ok(()),
        };
        self.in_start += discard;
        result
    }
}

#[cfg(test)]
mod tests;
