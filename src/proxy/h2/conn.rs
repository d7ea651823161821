//! One HTTP/2 server connection (RFC 9113): frames read in place from one buffer, streams kept
//! in a small slab and polled from the connection's own task, every frame we send appended to
//! one write buffer that is flushed once per pass (a small response's HEADERS and DATA leave in
//! one write).
//!
//! A pass of [`Connection::poll`]: read what the socket has (unless the write buffer is backed
//! up: a client that does not read stops being read, which bounds what its PINGs and SETTINGS
//! can make us owe), handle every complete frame, poll the streams that woke, give back the
//! flow-control capacity the request bodies released, write. Errors follow RFC 9113 5.4: a
//! stream error resets the stream (RST_STREAM) and the connection goes on; a connection error
//! sends GOAWAY and closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::time::Sleep;

use super::body::{ConnWake, Recv, RequestBody, SlotWaker, StreamError, MAX_SLOTS, RELEASE_AT};
use super::frame::{self, Head, Reason, HEADER_LEN};
use super::hpack::{Decoder, Encoder, FieldName, Pseudo};
use super::response;
use super::Config;
use crate::proxy::request_body::DownstreamBody;
use crate::proxy::woken::Woken;
use crate::wire::{BoxError, ProxyBody};

/// The client connection preface (RFC 9113 3.4); also what protocol detection looks for
/// (`hygiene::io`, `transparent::detect`).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes read per read call at most: one largest frame we accept and its header.
const READ_CHUNK: usize = frame::MIN_MAX_FRAME_SIZE as usize + HEADER_LEN;
/// Above this many unwritten bytes, nothing more is read or taken from response bodies until
/// the client reads.
const WRITE_HIGH: usize = 64 * 1024;
/// A header block (HEADERS and its CONTINUATIONs, still compressed) longer than this ends the
/// connection (ENHANCE_YOUR_CALM): the CONTINUATION flood bound. Several times the header list
/// limit, since compression only ever shrinks a list so far.
const BLOCK_MULTIPLIER: usize = 4;
/// Streams the client may reset while they are served before the connection is closed
/// (CVE-2023-44487, rapid reset; the `h2` crate's `max_pending_accept_reset_streams(20)`). One
/// comes back with each stream that completes.
const RESET_BUDGET: u32 = 20;
/// Streams we may reset for the client's errors before the connection is closed.
const LOCAL_RESET_MAX: u32 = 256;
/// Frames that do no work (SETTINGS, PING, PRIORITY, empty DATA, unknown types) allowed
/// between two requests before the connection is closed with ENHANCE_YOUR_CALM.
const IDLE_FRAMES_MAX: u32 = 10_000;
/// Closed streams remembered, to tell a frame on a stream we reset (ignored) from one on a
/// stream the client closed (STREAM_CLOSED) or never opened (PROTOCOL_ERROR).
const CLOSED_MEMORY: usize = 128;
/// Our keep-alive PING's payload.
const KEEPALIVE_PING: [u8; 8] = *b"swyd-ka!";

const _: () = assert!(super::super::hygiene::H2_MAX_CONCURRENT_STREAMS as usize <= MAX_SLOTS);

/// A connection error (RFC 9113 5.4.1): GOAWAY with `reason`.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 connection error {reason}: {why}")]
pub struct ConnError {
    pub reason: Reason,
    pub why: &'static str,
}

fn conn_err<T>(reason: Reason, why: &'static str) -> Result<T, ConnError> {
    Err(ConnError { reason, why })
}

/// Why a connection was closed by its keep-alive pings.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 keep-alive ping not answered")]
struct KeepAliveTimedOut;

/// What a stream's slot runs.
enum Task<S> {
    /// The request's future, until its response head.
    Serving(Pin<Box<S>>),
    /// The response body, sent as the windows allow.
    Sending(ProxyBody),
    /// The response is sent; the client's side is still open.
    Done,
}

struct Slot<S> {
    id: u32,
    task: Task<S>,
    /// The request body's shared half, when the request has a body.
    recv: Option<Arc<Recv>>,
    /// The client has not ended its side yet.
    remote_open: bool,
    /// What the client may still send on the stream, and what we may.
    recv_window: i64,
    send_window: i64,
    /// `content-length`, and the DATA bytes received (RFC 9113 8.1.1).
    expect_len: Option<u64>,
    received: u64,
    /// A chunk taken from the response body, not sent yet; and whether it is the last.
    pending: Option<(Bytes, bool)>,
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        if let Some(recv) = &self.recv {
            recv.fail(StreamError::Closed);
        }
    }
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    dependency: Option<u32>,
    buf: BytesMut,
}

/// The keep-alive pinger: a PING after each interval in which no stream was opened; a PONG
/// not back within the timeout closes the connection. Behind [`Woken`], so the connection's
/// frequent wake-ups do not poll its timer.
struct KeepAlive {
    timer: Pin<Box<Woken<Sleep>>>,
    awaiting_pong: bool,
    opened: bool,
    interval: Duration,
    timeout: Duration,
}

impl KeepAlive {
    fn arm(&mut self, after: Duration) {
        self.timer = Box::pin(Woken::new(tokio::time::sleep(after)));
    }
}

enum Phase {
    Preface,
    Running,
    /// GOAWAY sent (or the client left): write what is left, then close.
    Closing {
        result: Result<(), BoxError>,
        timer: Option<Pin<Box<Sleep>>>,
    },
    Closed,
}

/// One HTTP/2 connection and its streams in progress: resolves when the connection is closed
/// (after a graceful shutdown, once the last stream is done). Dropping it drops every stream
/// (which cancels their upstream requests) and fails their request bodies.
pub struct Connection<T, F, S> {
    io: T,
    serve: F,
    slots: Vec<Option<Slot<S>>>,
    /// One waker per slot, made when the slot is first used.
    wakers: Vec<Waker>,
    c: Core,
}

/// Everything but the socket, the service and the streams.
struct Core {
    rbuf: BytesMut,
    wbuf: BytesMut,
    phase: Phase,
    settings_seen: bool,
    decoder: Decoder,
    encoder: Encoder,
    block: Option<Block>,
    /// The highest stream id the client opened (or tried to).
    last_id: u32,
    /// GOAWAY sent: no new streams.
    going_away: bool,
    read_eof: bool,
    /// Bytes written whose `poll_flush` has not completed yet.
    unflushed: bool,
    peer_init_window: i64,
    peer_max_frame: usize,
    /// The connection windows: what we may send, what the client may.
    send_window: i64,
    recv_window: i64,
    /// Received bytes consumed (or discarded) and not given back yet.
    unreported: u64,
    max_header_list: usize,
    active: usize,
    closed: [u32; CLOSED_MEMORY],
    closed_at: usize,
    reset_budget: u32,
    local_resets: u32,
    idle_frames: u32,
    /// Slots to poll that no waker marked (new streams, opened windows).
    local_ready: u128,
    /// Slots that stopped sending because the write buffer was full.
    starved: u128,
    wake: Arc<ConnWake>,
    keepalive: KeepAlive,
    close_grace: Duration,
}

/// In [`Core::closed`]: the stream was reset by us (late frames are ignored).
const BY_US: u32 = 1 << 31;

/// What a frame on a stream that is not open means.
enum Gone {
    /// Never opened: a stream id above the highest one seen.
    Idle,
    /// We reset it: frames in flight are ignored.
    ResetByUs,
    /// Closed by the client (END_STREAM or RST_STREAM).
    Closed,
    /// An id below the highest that we do not remember: never opened, or closed long ago.
    Skipped,
}

impl<T, F, S> Connection<T, F, S>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<DownstreamBody>) -> S,
    S: Future<Output = Response<ProxyBody>>,
{
    pub(super) fn new(io: T, serve: F, config: &Config) -> Self {
        let mut wbuf = BytesMut::with_capacity(4096);
        frame::put_settings(
            &mut wbuf,
            &[
                (frame::SETTINGS_HEADER_TABLE_SIZE, 4096),
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (
                    frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                    super::super::hygiene::H2_MAX_CONCURRENT_STREAMS,
                ),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, super::STREAM_WINDOW),
                (frame::SETTINGS_MAX_FRAME_SIZE, frame::MIN_MAX_FRAME_SIZE),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    u32::try_from(config.max_header_list).unwrap_or(u32::MAX),
                ),
            ],
        );
        // The connection window starts at 65 535 whatever SETTINGS say (RFC 9113 6.9.2).
        let raise = i64::from(super::CONN_WINDOW) - frame::DEFAULT_WINDOW;
        if raise > 0 {
            frame::put_window_update(&mut wbuf, 0, raise as u32);
        }
        Connection {
            io,
            serve,
            slots: Vec::new(),
            wakers: Vec::new(),
            c: Core {
                rbuf: BytesMut::new(),
                wbuf,
                phase: Phase::Preface,
                settings_seen: false,
                decoder: Decoder::new(4096),
                encoder: Encoder::new(),
                block: None,
                last_id: 0,
                going_away: false,
                read_eof: false,
                unflushed: false,
                peer_init_window: frame::DEFAULT_WINDOW,
                peer_max_frame: frame::MIN_MAX_FRAME_SIZE as usize,
                send_window: frame::DEFAULT_WINDOW,
                recv_window: i64::from(super::CONN_WINDOW),
                unreported: 0,
                max_header_list: config.max_header_list,
                active: 0,
                closed: [0; CLOSED_MEMORY],
                closed_at: 0,
                reset_budget: RESET_BUDGET,
                local_resets: 0,
                idle_frames: 0,
                local_ready: 0,
                starved: 0,
                wake: Arc::new(ConnWake::default()),
                keepalive: KeepAlive {
                    timer: Box::pin(Woken::new(tokio::time::sleep(config.keepalive_interval))),
                    awaiting_pong: false,
                    opened: false,
                    interval: config.keepalive_interval,
                    timeout: config.keepalive_timeout,
                },
                close_grace: config.close_grace,
            },
        }
    }

    /// Stops accepting streams (GOAWAY with the last stream id) and lets the open ones finish.
    pub fn graceful_shutdown(&mut self) {
        if !self.c.going_away {
            self.c.going_away = true;
            frame::put_goaway(&mut self.c.wbuf, self.c.last_id, Reason::NO_ERROR);
            self.c.wake.task.wake();
        }
    }

    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.c.wake.task.register(cx.waker());
        // Bounded: a few passes, then the task yields (woken again if there is more to do).
        for _ in 0..16 {
            if matches!(self.c.phase, Phase::Closing { .. } | Phase::Closed) {
                return self.poll_closing(cx);
            }
            let mut progress = false;
            if !self.c.read_eof && self.c.wbuf.len() < WRITE_HIGH {
                match self.read(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.c.read_eof = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(error)) => {
                        self.close_streams();
                        return Poll::Ready(Err(error.into()));
                    }
                    Poll::Pending => {}
                }
            }
            if let Err(error) = self.process() {
                self.fail(error);
                continue;
            }
            if let Err(error) = self.poll_keepalive(cx) {
                self.close_streams();
                frame::put_goaway(&mut self.c.wbuf, self.c.last_id, Reason::NO_ERROR);
                self.c.enter_closing(Err(error));
                continue;
            }
            self.release_capacity();
            self.poll_streams();
            match self.flush(cx) {
                Poll::Ready(Err(error)) => {
                    self.close_streams();
                    return Poll::Ready(Err(error.into()));
                }
                Poll::Ready(Ok(wrote)) => {
                    if wrote && self.c.starved != 0 {
                        self.c.local_ready |= std::mem::take(&mut self.c.starved);
                        progress = true;
                    }
                }
                Poll::Pending => {}
            }
            if self.c.read_eof {
                // The client is gone: nothing it asked for can reach it any more.
                self.close_streams();
                self.c.enter_closing(Ok(()));
                continue;
            }
            if self.c.going_away && self.c.active == 0 && self.c.block.is_none() {
                self.c.enter_closing(Ok(()));
                continue;
            }
            if !progress && self.c.local_ready == 0 {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads what the socket has onto the end of the read buffer.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let rbuf = &mut self.c.rbuf;
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        std::pin::pin!(self.io.read_buf(rbuf)).poll(cx)
    }

    /// Writes the write buffer; `Ok(true)` when it is empty.
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.c.wbuf.is_empty() && !self.c.unflushed {
            return Poll::Ready(Ok(true));
        }
        // Until `poll_flush` says so, written bytes may still sit in the stream (TLS records
        // that the socket could not take): flushed again on the next pass even if nothing
        // more is written.
        self.c.unflushed = true;
        // Bounded: each write takes bytes or returns.
        while !self.c.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.c.wbuf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.c.wbuf.advance(n),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Empty: its whole capacity is reused from the start.
        self.c.wbuf.clear();
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.c.unflushed = false;
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Phase::Closing { result, timer } = &mut self.c.phase else {
            return Poll::Ready(Ok(()));
        };
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(self.c.close_grace)));
        let expired = timer.as_mut().poll(cx).is_ready();
        let result = std::mem::replace(result, Ok(()));
        if !expired {
            let flushed = match self.flush(cx) {
                Poll::Ready(Ok(_)) => Pin::new(&mut self.io).poll_shutdown(cx).map(|_| ()),
                Poll::Ready(Err(_)) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            };
            if flushed.is_pending() {
                if let Phase::Closing { result: kept, .. } = &mut self.c.phase {
                    *kept = result;
                }
                return Poll::Pending;
            }
        }
        self.c.phase = Phase::Closed;
        Poll::Ready(result)
    }

    /// A connection error: GOAWAY, every stream dropped, then close.
    fn fail(&mut self, error: ConnError) {
        tracing::debug!(%error, "HTTP/2 connection error");
        self.close_streams();
        frame::put_goaway(&mut self.c.wbuf, self.c.last_id, error.reason);
        self.c.going_away = true;
        self.c.enter_closing(Err(Box::new(error)));
    }

    fn close_streams(&mut self) {
        for slot in &mut self.slots {
            if let Some(slot) = slot.take() {
                if let Some(recv) = &slot.recv {
                    recv.fail(StreamError::Closed);
                }
            }
        }
        self.c.active = 0;
        self.c.block = None;
    }

    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        let ka = &mut self.c.keepalive;
        if ka.timer.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        if ka.awaiting_pong {
            tracing::debug!("HTTP/2 keep-alive timed out: closing the connection");
            return Err(Box::new(KeepAliveTimedOut));
        }
        if std::mem::take(&mut ka.opened) {
            let interval = ka.interval;
            ka.arm(interval);
        } else {
            ka.awaiting_pong = true;
            let timeout = ka.timeout;
            ka.arm(timeout);
            frame::put_ping(&mut self.c.wbuf, 0, KEEPALIVE_PING);
        }
        // The new timer is polled once, so it wakes the task.
        let _ = self.c.keepalive.timer.as_mut().poll(cx);
        Ok(())
    }

    /// Gives back the capacity request bodies consumed: the connection's once enough is owed,
    /// and each stream's whose body asked.
    fn release_capacity(&mut self) {
        self.c.unreported += self.c.wake.take_released();
        if self.c.unreported >= RELEASE_AT {
            let n = std::mem::take(&mut self.c.unreported);
            self.c.recv_window += n as i64;
            frame::put_window_update(&mut self.c.wbuf, 0, n as u32);
        }
        let mut bits = self.c.wake.take_window();
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(Some(slot)) = self.slots.get_mut(i) else {
                continue;
            };
            let Some(recv) = &slot.recv else { continue };
            if recv.dropped() {
                // Nobody reads the rest of the body: once the response is sent, the stream
                // is reset (NO_ERROR, RFC 9113 8.1) rather than left open.
                if matches!(slot.task, Task::Done) {
                    self.close(i, Some(Reason::NO_ERROR), true);
                }
                continue;
            }
            let n = recv.take_released();
            if n > 0 && slot.remote_open {
                slot.recv_window += n as i64;
                frame::put_window_update(&mut self.c.wbuf, slot.id, n as u32);
            }
        }
    }

    /// Handles every complete frame in the read buffer.
    fn process(&mut self) -> Result<(), ConnError> {
        if matches!(self.c.phase, Phase::Preface) {
            let have = self.c.rbuf.len().min(PREFACE.len());
            if self.c.rbuf[..have] != PREFACE[..have] {
                return conn_err(Reason::PROTOCOL_ERROR, "invalid connection preface");
            }
            if have < PREFACE.len() {
                return Ok(());
            }
            self.c.rbuf.advance(PREFACE.len());
            self.c.phase = Phase::Running;
        }
        // Bounded by the bytes read: each pass consumes a frame or stops.
        while let Some(head) = Head::parse(&self.c.rbuf) {
            if head.len > frame::MIN_MAX_FRAME_SIZE as usize {
                return conn_err(Reason::FRAME_SIZE_ERROR, "frame larger than MAX_FRAME_SIZE");
            }
            if self.c.rbuf.len() < HEADER_LEN + head.len {
                break;
            }
            if !matches!(self.c.phase, Phase::Running) {
                // An error closed the connection: the rest is not read.
                self.c.rbuf.clear();
                break;
            }
            if !self.c.settings_seen {
                if head.kind != frame::SETTINGS || head.has(frame::ACK) {
                    return conn_err(Reason::PROTOCOL_ERROR, "first frame is not SETTINGS");
                }
                self.c.settings_seen = true;
            }
            if let Some(block) = &self.c.block {
                if head.kind != frame::CONTINUATION || head.stream != block.stream {
                    return conn_err(Reason::PROTOCOL_ERROR, "header block interrupted");
                }
            }
            match head.kind {
                frame::DATA | frame::HEADERS | frame::CONTINUATION => {
                    let mut bytes = self.c.rbuf.split_to(HEADER_LEN + head.len);
                    bytes.advance(HEADER_LEN);
                    let payload = bytes.freeze();
                    match head.kind {
                        frame::DATA => self.on_data(head, payload)?,
                        frame::HEADERS => self.on_headers(head, payload)?,
                        _ => self.on_continuation(head, &payload)?,
                    }
                }
                _ => {
                    let end = HEADER_LEN + head.len;
                    let payload = self.c.rbuf.split_to(end);
                    self.on_control(head, &payload[HEADER_LEN..])?;
                }
            }
        }
        Ok(())
    }

    fn on_control(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        match head.kind {
            frame::PRIORITY => {
                self.c.idle_frame()?;
                if head.stream == 0 {
                    return conn_err(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0");
                }
                if payload.len() != 5 {
                    self.stream_error(head.stream, Reason::FRAME_SIZE_ERROR)?;
                } else if frame::u32_at(payload, 0) & 0x7fff_ffff == head.stream {
                    self.stream_error(head.stream, Reason::PROTOCOL_ERROR)?;
                }
                Ok(())
            }
            frame::RST_STREAM => {
                if head.stream == 0 {
                    return conn_err(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0");
                }
                if payload.len() != 4 {
                    return conn_err(Reason::FRAME_SIZE_ERROR, "RST_STREAM length");
                }
                let reason = Reason(frame::u32_at(payload, 0));
                match self.find(head.stream) {
                    Some(i) => {
                        let serving = self.slots[i]
                            .as_ref()
                            .is_some_and(|s| !matches!(s.task, Task::Done));
                        if let Some(Some(slot)) = self.slots.get(i) {
                            if let Some(recv) = &slot.recv {
                                recv.fail(StreamError::Reset(reason));
                            }
                        }
                        tracing::debug!(%reason, "stream reset by the client");
                        self.close(i, None, false);
                        if serving {
                            if self.c.reset_budget == 0 {
                                return conn_err(
                                    Reason::ENHANCE_YOUR_CALM,
                                    "too many streams reset while served",
                                );
                            }
                            self.c.reset_budget -= 1;
                        }
                        Ok(())
                    }
                    None => match self.c.gone(head.stream) {
                        Gone::Idle => conn_err(Reason::PROTOCOL_ERROR, "RST_STREAM on idle stream"),
                        _ => Ok(()),
                    },
                }
            }
            frame::SETTINGS => self.on_settings(head, payload),
            frame::PUSH_PROMISE => conn_err(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
            frame::PING => {
                if head.stream != 0 {
                    return conn_err(Reason::PROTOCOL_ERROR, "PING on a stream");
                }
                let Ok(data) = <[u8; 8]>::try_from(payload) else {
                    return conn_err(Reason::FRAME_SIZE_ERROR, "PING length");
                };
                if head.has(frame::ACK) {
                    let ka = &mut self.c.keepalive;
                    if ka.awaiting_pong && data == KEEPALIVE_PING {
                        ka.awaiting_pong = false;
                        let interval = ka.interval;
                        // Polled (so armed) later in this pass.
                        ka.arm(interval);
                    }
                } else {
                    self.c.idle_frame()?;
                    frame::put_ping(&mut self.c.wbuf, frame::ACK, data);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    return conn_err(Reason::PROTOCOL_ERROR, "GOAWAY on a stream");
                }
                if payload.len() < 8 {
                    return conn_err(Reason::FRAME_SIZE_ERROR, "GOAWAY length");
                }
                // The client opens no more streams: finish these, then close.
                self.c.going_away = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, payload),
            _ => {
                // Unknown frame types are ignored (RFC 9113 5.5).
                self.c.idle_frame()
            }
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return conn_err(Reason::PROTOCOL_ERROR, "SETTINGS on a stream");
        }
        if head.has(frame::ACK) {
            if !payload.is_empty() {
                return conn_err(Reason::FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return conn_err(Reason::FRAME_SIZE_ERROR, "SETTINGS length");
        }
        self.c.idle_frame()?;
        for pair in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([pair[0], pair[1]]);
            let value = frame::u32_at(pair, 2);
            match id {
                frame::SETTINGS_HEADER_TABLE_SIZE => {
                    self.c.encoder.set_max_table_size(value as usize);
                }
                frame::SETTINGS_ENABLE_PUSH if value > 1 => {
                    return conn_err(Reason::PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1");
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return conn_err(
                            Reason::FLOW_CONTROL_ERROR,
                            "INITIAL_WINDOW_SIZE too large",
                        );
                    }
                    let delta = value - self.c.peer_init_window;
                    self.c.peer_init_window = value;
                    for (i, slot) in self.slots.iter_mut().enumerate() {
                        let Some(slot) = slot else { continue };
                        slot.send_window += delta;
                        if slot.send_window > frame::MAX_WINDOW {
                            return conn_err(Reason::FLOW_CONTROL_ERROR, "stream window overflow");
                        }
                        if delta > 0 && slot.pending.is_some() {
                            self.c.local_ready |= 1 << i;
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::MIN_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value) {
                        return conn_err(Reason::PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
                    }
                    self.c.peer_max_frame = value as usize;
                }
                // No push, no limit we need to follow on what we send: ignored, as are
                // unknown settings (RFC 9113 6.5.2).
                _ => {}
            }
        }
        frame::put_head(&mut self.c.wbuf, 0, frame::SETTINGS, frame::ACK, 0);
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return conn_err(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE length");
        }
        let increment = i64::from(frame::u32_at(payload, 0) & 0x7fff_ffff);
        if head.stream == 0 {
            if increment == 0 {
                return conn_err(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
            }
            self.c.send_window += increment;
            if self.c.send_window > frame::MAX_WINDOW {
                return conn_err(Reason::FLOW_CONTROL_ERROR, "connection window overflow");
            }
            for (i, slot) in self.slots.iter().enumerate() {
                if slot.as_ref().is_some_and(|s| s.pending.is_some()) {
                    self.c.local_ready |= 1 << i;
                }
            }
            return Ok(());
        }
        let Some(i) = self.find(head.stream) else {
            return match self.c.gone(head.stream) {
                Gone::Idle => conn_err(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream"),
                _ => Ok(()),
            };
        };
        let Some(slot) = self.slots[i].as_mut() else {
            return Ok(());
        };
        if increment == 0 {
            return self.stream_error(head.stream, Reason::PROTOCOL_ERROR);
        }
        slot.send_window += increment;
        if slot.send_window > frame::MAX_WINDOW {
            return self.stream_error(head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        if slot.pending.is_some() {
            self.c.local_ready |= 1 << i;
        }
        Ok(())
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return conn_err(Reason::PROTOCOL_ERROR, "DATA on stream 0");
        }
        let len = payload.len() as i64;
        if len > self.c.recv_window {
            return conn_err(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            );
        }
        self.c.recv_window -= len;
        let Some((range, _)) = frame::strip(&head, &payload, false) else {
            return conn_err(Reason::PROTOCOL_ERROR, "DATA padding");
        };
        let end = head.has(frame::END_STREAM);
        if range.is_empty() && !end {
            self.c.idle_frame()?;
        }
        let Some(i) = self.find(head.stream) else {
            self.c.unreported += len as u64;
            return match self.c.gone(head.stream) {
                Gone::Idle => conn_err(Reason::PROTOCOL_ERROR, "DATA on idle stream"),
                Gone::ResetByUs => Ok(()),
                Gone::Closed | Gone::Skipped => {
                    self.stream_error(head.stream, Reason::STREAM_CLOSED)
                }
            };
        };
        let Some(slot) = self.slots[i].as_mut() else {
            return Ok(());
        };
        // Padding is consumed at once.
        self.c.unreported += (payload.len() - range.len()) as u64;
        if !slot.remote_open {
            self.c.unreported += range.len() as u64;
            return self.stream_error(head.stream, Reason::STREAM_CLOSED);
        }
        if len > slot.recv_window {
            self.c.unreported += range.len() as u64;
            return self.stream_error(head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        slot.recv_window -= len;
        let pad = payload.len() - range.len();
        if pad > 0 && !end {
            // Padding is never read: its stream capacity goes back at once too, or a client
            // that pads a lot would run its stream's window down.
            slot.recv_window += pad as i64;
            frame::put_window_update(&mut self.c.wbuf, slot.id, pad as u32);
        }
        slot.received += range.len() as u64;
        let mismatch = match slot.expect_len {
            Some(expected) => slot.received > expected || (end && slot.received != expected),
            None => false,
        };
        if mismatch {
            self.c.unreported += range.len() as u64;
            if let Some(recv) = &slot.recv {
                recv.fail(StreamError::Broken(Reason::PROTOCOL_ERROR));
            }
            return self.stream_error(head.stream, Reason::PROTOCOL_ERROR);
        }
        let data = payload.slice(range);
        let data_len = data.len() as u64;
        let taken = match &slot.recv {
            Some(recv) => recv.push(data, end),
            None => false,
        };
        if !taken {
            self.c.unreported += data_len;
        }
        if end {
            slot.remote_open = false;
            if matches!(slot.task, Task::Done) {
                self.close(i, None, false);
            }
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return conn_err(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
        }
        let priority = head.has(frame::PRIORITY_FLAG);
        let Some((range, dependency)) = frame::strip(&head, &payload, priority) else {
            return conn_err(Reason::PROTOCOL_ERROR, "HEADERS padding");
        };
        if head.stream > self.c.last_id && head.stream.is_multiple_of(2) {
            return conn_err(Reason::PROTOCOL_ERROR, "even stream id from a client");
        }
        let fragment = payload.slice(range);
        let end_stream = head.has(frame::END_STREAM);
        if head.has(frame::END_HEADERS) {
            return self.on_block(head.stream, end_stream, dependency, &fragment);
        }
        if fragment.len() > self.block_cap() {
            return conn_err(Reason::ENHANCE_YOUR_CALM, "header block too large");
        }
        self.c.block = Some(Block {
            stream: head.stream,
            end_stream,
            dependency,
            buf: BytesMut::from(&fragment[..]),
        });
        Ok(())
    }

    fn block_cap(&self) -> usize {
        self.c
            .max_header_list
            .saturating_mul(BLOCK_MULTIPLIER)
            .max(frame::MIN_MAX_FRAME_SIZE as usize)
    }

    fn on_continuation(&mut self, head: Head, payload: &Bytes) -> Result<(), ConnError> {
        let cap = self.block_cap();
        let Some(block) = &mut self.c.block else {
            return conn_err(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS");
        };
        if block.buf.len() + payload.len() > cap {
            return conn_err(Reason::ENHANCE_YOUR_CALM, "header block too large");
        }
        block.buf.extend_from_slice(payload);
        if !head.has(frame::END_HEADERS) {
            return Ok(());
        }
        let Some(block) = self.c.block.take() else {
            return Ok(());
        };
        let bytes = block.buf.freeze();
        self.on_block(block.stream, block.end_stream, block.dependency, &bytes)
    }

    /// A complete header block on `stream`.
    fn on_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        dependency: Option<u32>,
        block: &Bytes,
    ) -> Result<(), ConnError> {
        if let Some(i) = self.find(stream) {
            return self.on_trailers(i, end_stream, block);
        }
        if stream <= self.c.last_id {
            self.discard_block(block)?;
            return match self.c.gone(stream) {
                Gone::ResetByUs => Ok(()),
                Gone::Closed => conn_err(Reason::STREAM_CLOSED, "HEADERS on a closed stream"),
                Gone::Idle | Gone::Skipped => {
                    conn_err(Reason::PROTOCOL_ERROR, "stream id below the last one")
                }
            };
        }
        self.c.last_id = stream;
        if self.c.going_away {
            // Past our GOAWAY: ignored, but decoded (the compression state is shared).
            return self.discard_block(block);
        }
        if dependency == Some(stream) {
            self.discard_block(block)?;
            return self.stream_error(stream, Reason::PROTOCOL_ERROR);
        }
        if self.c.active >= super::super::hygiene::H2_MAX_CONCURRENT_STREAMS as usize {
            self.discard_block(block)?;
            return self.stream_error(stream, Reason::REFUSED_STREAM);
        }
        let parsed = self.decode_request(block)?;
        self.c.idle_frames = 0;
        self.c.keepalive.opened = true;
        let (parts, expect_len) = match parsed {
            Decoded::Request(parts, expect_len) => (parts, expect_len),
            Decoded::TooLarge => {
                self.answer_now(
                    stream,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    end_stream,
                );
                return Ok(());
            }
            Decoded::Malformed(why) => {
                tracing::debug!(why, "malformed HTTP/2 request");
                return self.stream_error(stream, Reason::PROTOCOL_ERROR);
            }
        };
        if end_stream && expect_len.is_some_and(|n| n != 0) {
            return self.stream_error(stream, Reason::PROTOCOL_ERROR);
        }
        let Some(i) = self.free_slot() else {
            return self.stream_error(stream, Reason::REFUSED_STREAM);
        };
        let recv = (!end_stream).then(|| Recv::new(Arc::clone(&self.c.wake), i));
        let body = match &recv {
            Some(recv) => DownstreamBody::Http2(RequestBody::new(Arc::clone(recv), &parts.headers)),
            None => DownstreamBody::Empty,
        };
        let request = Request::from_parts(parts, body);
        let serve = &mut self.serve;
        let future = boxed_in_place(|| serve(request));
        self.slots[i] = Some(Slot {
            id: stream,
            task: Task::Serving(future),
            recv,
            remote_open: !end_stream,
            recv_window: i64::from(super::STREAM_WINDOW),
            send_window: self.c.peer_init_window,
            expect_len,
            received: 0,
            pending: None,
        });
        self.c.active += 1;
        self.c.local_ready |= 1 << i;
        Ok(())
    }

    /// Trailers (or a second HEADERS) on the open stream in slot `i`.
    fn on_trailers(&mut self, i: usize, end_stream: bool, block: &Bytes) -> Result<(), ConnError> {
        let mut trailers = HeaderMap::new();
        let mut malformed = false;
        let mut size = 0usize;
        let max = self.c.max_header_list;
        self.c
            .decoder
            .decode(block, usize::MAX, &mut |name, value| match name {
                FieldName::Header(name) => {
                    size += name.as_str().len() + value.len() + 32;
                    if size > max {
                        malformed = true;
                        return;
                    }
                    match HeaderValue::from_maybe_shared(value) {
                        Ok(value) => {
                            trailers.append(name, value);
                        }
                        Err(_) => malformed = true,
                    }
                }
                _ => malformed = true,
            })
            .map_err(|_| ConnError {
                reason: Reason::COMPRESSION_ERROR,
                why: "header block does not decode",
            })?;
        let Some(slot) = self.slots[i].as_mut() else {
            return Ok(());
        };
        let id = slot.id;
        if !slot.remote_open {
            return self.stream_error(id, Reason::STREAM_CLOSED);
        }
        if !end_stream || malformed {
            if let Some(recv) = &slot.recv {
                recv.fail(StreamError::Broken(Reason::PROTOCOL_ERROR));
            }
            return self.stream_error(id, Reason::PROTOCOL_ERROR);
        }
        if slot.expect_len.is_some_and(|n| n != slot.received) {
            if let Some(recv) = &slot.recv {
                recv.fail(StreamError::Broken(Reason::PROTOCOL_ERROR));
            }
            return self.stream_error(id, Reason::PROTOCOL_ERROR);
        }
        slot.remote_open = false;
        if let Some(recv) = &slot.recv {
            recv.trailers(trailers);
        }
        if matches!(slot.task, Task::Done) {
            self.close(i, None, false);
        }
        Ok(())
    }

    fn discard_block(&mut self, block: &Bytes) -> Result<(), ConnError> {
        self.c
            .decoder
            .decode(block, usize::MAX, &mut |_, _| {})
            .map_err(|_| ConnError {
                reason: Reason::COMPRESSION_ERROR,
                why: "header block does not decode",
            })
    }

    fn decode_request(&mut self, block: &Bytes) -> Result<Decoded, ConnError> {
        let mut fields = Fields::default();
        let max = self.c.max_header_list;
        self.c
            .decoder
            .decode(block, usize::MAX, &mut |name, value| {
                fields.add(name, value, max)
            })
            .map_err(|_| ConnError {
                reason: Reason::COMPRESSION_ERROR,
                why: "header block does not decode",
            })?;
        Ok(fields.into_request())
    }

    /// Answers `stream` with `status` and no body, without a request (431).
    fn answer_now(&mut self, stream: u32, status: StatusCode, request_ended: bool) {
        let empty = HeaderMap::new();
        let at = self.c.wbuf.len();
        frame::put_head(
            &mut self.c.wbuf,
            0,
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            stream,
        );
        self.c
            .encoder
            .encode_response(status, &empty, &mut self.c.wbuf);
        let len = self.c.wbuf.len() - at - HEADER_LEN;
        frame::set_len(&mut self.c.wbuf, at, len);
        if request_ended {
            self.c.remember(stream, false);
        } else {
            frame::put_reset(&mut self.c.wbuf, stream, Reason::NO_ERROR);
            self.c.remember(stream, true);
        }
    }

    /// A stream error: RST_STREAM, the stream (if open) dropped.
    fn stream_error(&mut self, stream: u32, reason: Reason) -> Result<(), ConnError> {
        self.c.local_resets += 1;
        if self.c.local_resets > LOCAL_RESET_MAX {
            return conn_err(Reason::ENHANCE_YOUR_CALM, "too many stream errors");
        }
        match self.find(stream) {
            Some(i) => self.close(i, Some(reason), true),
            None => {
                frame::put_reset(&mut self.c.wbuf, stream, reason);
                self.c.remember(stream, true);
            }
        }
        Ok(())
    }

    /// Frees slot `i`, sending RST_STREAM with `reset` if given.
    fn close(&mut self, i: usize, reset: Option<Reason>, by_us: bool) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::take) else {
            return;
        };
        if let Some(reason) = reset {
            frame::put_reset(&mut self.c.wbuf, slot.id, reason);
        }
        self.c.remember(slot.id, by_us);
        self.c.active -= 1;
        self.c.local_ready &= !(1 << i);
        self.c.starved &= !(1 << i);
        drop(slot);
    }

    fn find(&self, stream: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|s| s.id == stream))
    }

    fn free_slot(&mut self) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            return Some(i);
        }
        if self.slots.len() >= MAX_SLOTS {
            return None;
        }
        self.slots.push(None);
        let i = self.slots.len() - 1;
        if self.wakers.len() <= i {
            self.wakers.push(Waker::from(Arc::new(SlotWaker {
                conn: Arc::clone(&self.c.wake),
                slot: i,
            })));
        }
        Some(i)
    }

    /// Polls the streams that woke.
    fn poll_streams(&mut self) {
        let mut bits = std::mem::take(&mut self.c.local_ready) | self.c.wake.take_ready();
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.poll_slot(i);
        }
    }

    fn poll_slot(&mut self, i: usize) {
        let (Some(Some(slot)), Some(waker)) = (self.slots.get_mut(i), self.wakers.get(i)) else {
            return;
        };
        let mut cx = Context::from_waker(waker);
        let outcome = loop {
            match &mut slot.task {
                Task::Serving(future) => match future.as_mut().poll(&mut cx) {
                    Poll::Pending => break Outcome::Pending,
                    Poll::Ready(response) => {
                        if let Some(body) = self.c.send_head(slot.id, response) {
                            slot.task = Task::Sending(body);
                        } else {
                            break Outcome::Sent;
                        }
                    }
                },
                Task::Sending(_) => break self.c.send_body(slot, i, &mut cx),
                Task::Done => break Outcome::Pending,
            }
        };
        match outcome {
            Outcome::Pending => {}
            Outcome::Sent => {
                self.c.reset_budget = (self.c.reset_budget + 1).min(RESET_BUDGET);
                slot.task = Task::Done;
                slot.pending = None;
                if !slot.remote_open {
                    self.close(i, None, false);
                } else if slot.recv.as_ref().is_none_or(|r| r.dropped()) {
                    self.close(i, Some(Reason::NO_ERROR), true);
                }
            }
            Outcome::Reset(reason) => self.close(i, Some(reason), true),
        }
    }
}

enum Outcome {
    Pending,
    Sent,
    Reset(Reason),
}

impl Core {
    fn enter_closing(&mut self, result: Result<(), BoxError>) {
        self.phase = Phase::Closing {
            result,
            timer: None,
        };
    }

    /// A frame that does no work: counted against [`IDLE_FRAMES_MAX`].
    fn idle_frame(&mut self) -> Result<(), ConnError> {
        self.idle_frames += 1;
        if self.idle_frames > IDLE_FRAMES_MAX {
            return conn_err(
                Reason::ENHANCE_YOUR_CALM,
                "too many frames without a request",
            );
        }
        Ok(())
    }

    fn remember(&mut self, stream: u32, by_us: bool) {
        self.closed[self.closed_at] = stream | if by_us { BY_US } else { 0 };
        self.closed_at = (self.closed_at + 1) % CLOSED_MEMORY;
    }

    /// What a stream that has no slot is.
    fn gone(&self, stream: u32) -> Gone {
        if stream > self.last_id {
            return Gone::Idle;
        }
        match self.closed.iter().find(|&&c| c & !BY_US == stream) {
            Some(c) if c & BY_US != 0 => Gone::ResetByUs,
            Some(_) => Gone::Closed,
            // Never opened (skipped over, or even), or forgotten long ago.
            None => Gone::Skipped,
        }
    }

    /// Encodes the response head; the body, unless the head ended the stream.
    fn send_head(&mut self, stream: u32, response: Response<ProxyBody>) -> Option<ProxyBody> {
        let (mut head, body) = response.into_parts();
        response::prepare(&mut head, &body);
        let end = body.is_end_stream();
        self.put_headers(stream, end, |encoder, dst| {
            encoder.encode_response(head.status, &head.headers, dst);
        });
        (!end).then_some(body)
    }

    /// Appends a HEADERS frame (and CONTINUATIONs if the peer's frame size needs them).
    fn put_headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        encode: impl FnOnce(&mut Encoder, &mut BytesMut),
    ) {
        let at = self.wbuf.len();
        let flags = frame::END_HEADERS | if end_stream { frame::END_STREAM } else { 0 };
        frame::put_head(&mut self.wbuf, 0, frame::HEADERS, flags, stream);
        encode(&mut self.encoder, &mut self.wbuf);
        let len = self.wbuf.len() - at - HEADER_LEN;
        if len <= self.peer_max_frame {
            frame::set_len(&mut self.wbuf, at, len);
            return;
        }
        let block = self.wbuf.split_off(at + HEADER_LEN);
        self.wbuf.truncate(at);
        frame::put_block(
            &mut self.wbuf,
            stream,
            &block,
            end_stream,
            self.peer_max_frame,
        );
    }

    /// Sends what the response body has, as the windows allow.
    fn send_body<S>(&mut self, slot: &mut Slot<S>, i: usize, cx: &mut Context<'_>) -> Outcome {
        // Bounded by the body and the windows: each pass sends a frame or returns.
        loop {
            if let Some((chunk, last)) = slot.pending.take() {
                if chunk.is_empty() {
                    frame::put_data(&mut self.wbuf, slot.id, &[], last);
                    if last {
                        return Outcome::Sent;
                    }
                    continue;
                }
                let window = slot.send_window.min(self.send_window);
                if window <= 0 {
                    slot.pending = Some((chunk, last));
                    return Outcome::Pending;
                }
                if self.wbuf.len() >= WRITE_HIGH {
                    slot.pending = Some((chunk, last));
                    self.starved |= 1 << i;
                    return Outcome::Pending;
                }
                let n = chunk.len().min(window as usize).min(self.peer_max_frame);
                let end = last && n == chunk.len();
                frame::put_data(&mut self.wbuf, slot.id, &chunk[..n], end);
                slot.send_window -= n as i64;
                self.send_window -= n as i64;
                if n < chunk.len() {
                    slot.pending = Some((chunk.slice(n..), last));
                    continue;
                }
                if last {
                    return Outcome::Sent;
                }
                continue;
            }
            let Task::Sending(body) = &mut slot.task else {
                return Outcome::Pending;
            };
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Outcome::Pending,
                Poll::Ready(None) => {
                    frame::put_data(&mut self.wbuf, slot.id, &[], true);
                    return Outcome::Sent;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let last = body.is_end_stream();
                        if data.is_empty() && !last {
                            continue;
                        }
                        slot.pending = Some((data, last));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.put_headers(slot.id, true, |encoder, dst| {
                                encoder.encode_trailers(&trailers, dst);
                            });
                            return Outcome::Sent;
                        }
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "response body ended early");
                    return Outcome::Reset(response::reason_of(&*error));
                }
            }
        }
    }
}

/// A request's header block, decoded.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once"
)]
enum Decoded {
    Request(http::request::Parts, Option<u64>),
    TooLarge,
    Malformed(&'static str),
}

/// The fields of a request's header block as they are decoded.
#[derive(Default)]
struct Fields {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    regular: bool,
    size: usize,
    too_large: bool,
    malformed: Option<&'static str>,
    content_length: Option<Option<u64>>,
}

impl Fields {
    fn add(&mut self, name: FieldName, value: Bytes, max: usize) {
        if self.malformed.is_some() {
            return;
        }
        let name_len = match &name {
            FieldName::Pseudo(p) => p.as_str().len(),
            FieldName::Header(h) => h.as_str().len(),
            FieldName::Invalid => 0,
        };
        self.size += name_len + value.len() + 32;
        if self.size > max {
            self.too_large = true;
        }
        if self.too_large {
            return;
        }
        match name {
            FieldName::Pseudo(pseudo) => {
                if self.regular {
                    self.malformed = Some("pseudo-header after a regular one");
                    return;
                }
                let slot = match pseudo {
                    Pseudo::Method => &mut self.method,
                    Pseudo::Scheme => &mut self.scheme,
                    Pseudo::Authority => &mut self.authority,
                    Pseudo::Path => &mut self.path,
                    Pseudo::Status => {
                        self.malformed = Some(":status in a request");
                        return;
                    }
                    Pseudo::Protocol => {
                        self.malformed = Some(":protocol without extended CONNECT");
                        return;
                    }
                };
                if slot.is_some() {
                    self.malformed = Some("repeated pseudo-header");
                    return;
                }
                *slot = Some(value);
            }
            FieldName::Header(name) => {
                self.regular = true;
                if name == header::CONNECTION
                    || name == header::TRANSFER_ENCODING
                    || name == header::UPGRADE
                    || name == "keep-alive"
                    || name == "proxy-connection"
                {
                    self.malformed = Some("connection-specific header");
                    return;
                }
                if name == header::TE && value != "trailers" {
                    self.malformed = Some("te other than trailers");
                    return;
                }
                if name == header::CONTENT_LENGTH {
                    let parsed = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok());
                    self.content_length = match self.content_length {
                        None => Some(parsed),
                        Some(before) if before == parsed => Some(parsed),
                        // Two different lengths: no length to hold DATA to.
                        Some(_) => Some(None),
                    };
                }
                match HeaderValue::from_maybe_shared(value) {
                    Ok(value) => {
                        self.headers.append(name, value);
                    }
                    Err(_) => self.malformed = Some("invalid header value"),
                }
            }
            FieldName::Invalid => self.malformed = Some("invalid field name"),
        }
    }

    fn into_request(self) -> Decoded {
        if self.too_large {
            return Decoded::TooLarge;
        }
        if let Some(why) = self.malformed {
            return Decoded::Malformed(why);
        }
        let Some(method) = self.method.and_then(|m| Method::from_bytes(&m).ok()) else {
            return Decoded::Malformed("missing or invalid :method");
        };
        let is_connect = method == Method::CONNECT;
        // As the `h2` crate built requests: the request checks (`hygiene::h2`) refuse CONNECT
        // and a missing :path.
        let mut parts = uri::Parts::default();
        if let Some(authority) = self.authority {
            match Authority::from_maybe_shared(authority) {
                Ok(authority) => parts.authority = Some(authority),
                Err(_) => return Decoded::Malformed("invalid :authority"),
            }
        }
        match self.scheme {
            Some(_) if is_connect => return Decoded::Malformed(":scheme in CONNECT"),
            Some(scheme) => {
                let Ok(scheme) = Scheme::try_from(&scheme[..]) else {
                    return Decoded::Malformed("invalid :scheme");
                };
                // A URI cannot have a scheme without an authority; a request without
                // :authority has its host in `host`.
                if parts.authority.is_some() {
                    parts.scheme = Some(scheme);
                }
            }
            None if !is_connect => return Decoded::Malformed("missing :scheme"),
            None => {}
        }
        if let Some(path) = self.path {
            if is_connect {
                return Decoded::Malformed(":path in CONNECT");
            }
            if path.is_empty() {
                return Decoded::Malformed("empty :path");
            }
            match PathAndQuery::from_maybe_shared(path) {
                Ok(path) => parts.path_and_query = Some(path),
                Err(_) => return Decoded::Malformed("invalid :path"),
            }
        }
        let Ok(uri) = Uri::from_parts(parts) else {
            return Decoded::Malformed("invalid request target");
        };
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        let (parts, ()) = request.into_parts();
        Decoded::Request(parts, self.content_length.flatten())
    }
}

/// Boxes the future `make` builds, building it in its allocation. A stream's future (its
/// request's whole path) is several KiB, though only its arguments are set before the first
/// poll; moved by value into a box, all of it was copied (the largest memcpy per h2c request).
/// A box is a pointer to move, and with the allocation made first the compiler writes the
/// arguments into it (the copy is an optimisation the language does not promise to remove).
/// To re-check: the `memcpy` row (and its callers) of `benches/load/breakdown.py`, h2c column.
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

impl<T, F, S> Future for Connection<T, F, S>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<DownstreamBody>) -> S + Unpin,
    S: Future<Output = Response<ProxyBody>>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_connection(cx)
    }
}
