//! The connection driven over an in-memory pipe by a hand-written client: stream states and
//! the stream or connection errors RFC 9113 asks for, and a property test that arbitrary
//! frames never panic it and always let it finish. (h2spec checks conformance against the
//! built binary; `tests/hygiene` the floods and limits end to end.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::{self, Head, Reason};
use super::{Config, Connection};
use crate::proxy::request_body::DownstreamBody;
use crate::wire::{self, ProxyBody};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn config() -> Config {
    Config {
        max_header_list: 4096,
        keepalive_interval: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(20),
        close_grace: Duration::from_millis(200),
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    frame::put_head(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out.to_vec()
}

/// Literal fields without indexing, no Huffman (RFC 7541 6.2.2).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn get(path: &str) -> Vec<u8> {
    block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", path),
    ])
}

type Served = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

/// Answers `/hang` never, `/echo` with the request body, anything else with 200 "ok"; counts
/// the request futures dropped.
fn service(dropped: Arc<AtomicUsize>) -> impl FnMut(Request<DownstreamBody>) -> Served + Unpin {
    move |req: Request<DownstreamBody>| {
        let guard = DropCount(Arc::clone(&dropped));
        Box::pin(async move {
            let _guard = guard;
            match req.uri().path() {
                "/hang" => std::future::pending().await,
                "/echo" => {
                    let body = req.into_body().collect().await;
                    let bytes = body.map(|b| b.to_bytes()).unwrap_or_default();
                    Response::new(wire::body::full(bytes))
                }
                _ => Response::new(wire::body::full("ok")),
            }
        })
    }
}

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
    task: tokio::task::JoinHandle<Result<(), crate::wire::BoxError>>,
    dropped: Arc<AtomicUsize>,
}

impl Client {
    /// A connection with the preface and an empty SETTINGS sent.
    async fn start() -> Client {
        let (mut io, server) = tokio::io::duplex(256 * 1024);
        let dropped = Arc::new(AtomicUsize::new(0));
        let conn = Connection::new(server, service(Arc::clone(&dropped)), &config());
        let task = tokio::spawn(conn);
        io.write_all(PREFACE).await.expect("preface");
        io.write_all(&frame(frame::SETTINGS, 0, 0, &[]))
            .await
            .expect("settings");
        Client {
            io,
            buf: Vec::new(),
            task,
            dropped,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
    }

    /// The next frame, or `None` at the end of the connection (or after 2 s).
    async fn next(&mut self) -> Option<(Head, Vec<u8>)> {
        loop {
            if let Some(head) = Head::parse(&self.buf) {
                if self.buf.len() >= frame::HEADER_LEN + head.len {
                    let payload =
                        self.buf[frame::HEADER_LEN..frame::HEADER_LEN + head.len].to_vec();
                    self.buf.drain(..frame::HEADER_LEN + head.len);
                    return Some((head, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(2), self.io.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Frames until one of `kind` (skipping SETTINGS, WINDOW_UPDATE and the others).
    async fn until(&mut self, kind: u8) -> Option<(Head, Vec<u8>)> {
        while let Some((head, payload)) = self.next().await {
            if head.kind == kind {
                return Some((head, payload));
            }
        }
        None
    }

    /// The error code of the next GOAWAY (a connection error).
    async fn goaway(&mut self) -> Option<Reason> {
        let (_, payload) = self.until(frame::GOAWAY).await?;
        Some(Reason(frame::u32_at(&payload, 4)))
    }

    /// The stream and error code of the next RST_STREAM (a stream error).
    async fn reset(&mut self) -> Option<(u32, Reason)> {
        let (head, payload) = self.until(frame::RST_STREAM).await?;
        Some((head.stream, Reason(frame::u32_at(&payload, 0))))
    }
}

const EH_ES: u8 = frame::END_HEADERS | frame::END_STREAM;

#[tokio::test]
async fn a_request_is_answered_with_headers_then_data_in_one_go() {
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, EH_ES, 1, &get("/"))).await;
    let (head, _) = c.until(frame::HEADERS).await.expect("response head");
    assert_eq!(head.stream, 1);
    assert!(head.has(frame::END_HEADERS) && !head.has(frame::END_STREAM));
    let (head, payload) = c.until(frame::DATA).await.expect("body");
    assert_eq!((head.stream, payload.as_slice()), (1, &b"ok"[..]));
    assert!(head.has(frame::END_STREAM));
}

#[tokio::test]
async fn a_request_body_streams_to_the_handler_and_trailers_end_it() {
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, frame::END_HEADERS, 1, &get("/echo")))
        .await;
    c.send(&frame(frame::DATA, 0, 1, b"hello ")).await;
    // Padded: pad length 3, "world", 3 bytes of padding.
    c.send(&frame(frame::DATA, frame::PADDED, 1, b"\x03world\0\0\0"))
        .await;
    c.send(&frame(frame::HEADERS, EH_ES, 1, &block(&[("x-t", "1")])))
        .await;
    let (_, payload) = c.until(frame::DATA).await.expect("echo");
    assert_eq!(payload, b"hello world");
}

#[tokio::test]
async fn frames_on_idle_streams_are_connection_errors() {
    for bad in [
        frame(frame::DATA, 0, 1, b"x"),
        frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8]),
        frame(frame::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 1]),
        frame(frame::CONTINUATION, frame::END_HEADERS, 1, &[]),
    ] {
        let mut c = Client::start().await;
        c.send(&bad).await;
        assert_eq!(c.goaway().await, Some(Reason::PROTOCOL_ERROR), "{bad:?}");
    }
}

#[tokio::test]
async fn stream_ids_must_be_odd_and_increasing() {
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, EH_ES, 2, &get("/"))).await;
    assert_eq!(c.goaway().await, Some(Reason::PROTOCOL_ERROR));

    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, EH_ES, 5, &get("/"))).await;
    c.send(&frame(frame::HEADERS, EH_ES, 3, &get("/"))).await;
    assert_eq!(c.goaway().await, Some(Reason::PROTOCOL_ERROR));
}

#[tokio::test]
async fn frames_after_the_client_ended_its_side_are_stream_closed() {
    // Half-closed (remote): DATA is a stream error.
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, EH_ES, 1, &get("/hang")))
        .await;
    c.send(&frame(frame::DATA, 0, 1, b"x")).await;
    assert_eq!(c.reset().await, Some((1, Reason::STREAM_CLOSED)));
    // Closed by the client's RST_STREAM: DATA is STREAM_CLOSED too.
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, frame::END_HEADERS, 1, &get("/hang")))
        .await;
    c.send(&frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8])).await;
    c.send(&frame(frame::DATA, 0, 1, b"x")).await;
    assert_eq!(c.reset().await, Some((1, Reason::STREAM_CLOSED)));
}

#[tokio::test]
async fn a_client_reset_drops_the_stream_future() {
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, EH_ES, 1, &get("/hang")))
        .await;
    c.send(&frame(frame::PING, 0, 0, &[1; 8])).await;
    assert!(c.until(frame::PING).await.is_some());
    assert_eq!(c.dropped.load(Ordering::Relaxed), 0);
    c.send(&frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8])).await;
    c.send(&frame(frame::PING, 0, 0, &[2; 8])).await;
    assert!(c.until(frame::PING).await.is_some());
    assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn rapid_resets_end_the_connection() {
    let mut c = Client::start().await;
    let mut bytes = Vec::new();
    for i in 0..40u32 {
        let id = 2 * i + 1;
        bytes.extend(frame(frame::HEADERS, EH_ES, id, &get("/hang")));
        bytes.extend(frame(frame::RST_STREAM, 0, id, &[0, 0, 0, 8]));
    }
    c.send(&bytes).await;
    assert_eq!(c.goaway().await, Some(Reason::ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn window_updates_and_priority_are_checked() {
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, EH_ES, 1, &get("/hang")))
        .await;
    c.send(&frame(frame::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 0]))
        .await;
    assert_eq!(c.reset().await, Some((1, Reason::PROTOCOL_ERROR)));
    // A PRIORITY that depends on its own stream; ones on idle streams are fine.
    c.send(&frame(frame::PRIORITY, 0, 9, &[0, 0, 0, 1, 16]))
        .await;
    c.send(&frame(frame::PRIORITY, 0, 3, &[0, 0, 0, 3, 16]))
        .await;
    assert_eq!(c.reset().await, Some((3, Reason::PROTOCOL_ERROR)));
    c.send(&frame(
        frame::WINDOW_UPDATE,
        0,
        0,
        &[0x7f, 0xff, 0xff, 0xff],
    ))
    .await;
    assert_eq!(c.goaway().await, Some(Reason::FLOW_CONTROL_ERROR));
}

#[tokio::test]
async fn settings_are_acknowledged_and_checked() {
    let mut c = Client::start().await;
    let (head, _) = c.until(frame::SETTINGS).await.expect("our SETTINGS");
    assert!(!head.has(frame::ACK));
    let (head, _) = c
        .until(frame::SETTINGS)
        .await
        .expect("the ACK of the client's");
    assert!(head.has(frame::ACK));
    c.send(&frame(frame::SETTINGS, 0, 0, &[0, 5, 0, 0, 0, 1]))
        .await;
    assert_eq!(c.goaway().await, Some(Reason::PROTOCOL_ERROR));
    let mut c = Client::start().await;
    c.send(&frame(frame::SETTINGS, 0, 0, &[0, 4, 0])).await;
    assert_eq!(c.goaway().await, Some(Reason::FRAME_SIZE_ERROR));
}

#[tokio::test]
async fn a_response_waits_for_the_window_and_respects_it() {
    let (mut io, server) = tokio::io::duplex(256 * 1024);
    let big = Bytes::from(vec![b'z'; 40_000]);
    let body = big.clone();
    let serve = move |_req: Request<DownstreamBody>| {
        let body = body.clone();
        Box::pin(async move { Response::new(wire::body::full(body)) }) as Served
    };
    tokio::spawn(Connection::new(server, serve, &config()));
    io.write_all(PREFACE).await.expect("preface");
    // Initial stream window of 10 bytes.
    io.write_all(&frame(frame::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 10]))
        .await
        .expect("settings");
    let mut c = Client {
        io,
        buf: Vec::new(),
        task: tokio::spawn(async { Ok(()) }),
        dropped: Arc::new(AtomicUsize::new(0)),
    };
    c.send(&frame(frame::HEADERS, EH_ES, 1, &get("/"))).await;
    let (_, first) = c.until(frame::DATA).await.expect("first data");
    assert_eq!(first.len(), 10);
    c.send(&frame(frame::WINDOW_UPDATE, 0, 1, &[0, 0, 0xff, 0xff]))
        .await;
    let mut got = first.len();
    while got < big.len() {
        let (head, payload) = c.until(frame::DATA).await.expect("more data");
        assert!(payload.len() <= frame::MIN_MAX_FRAME_SIZE as usize);
        got += payload.len();
        if head.has(frame::END_STREAM) {
            break;
        }
    }
    assert_eq!(got, big.len());
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_streams_then_closes() {
    let (mut io, server) = tokio::io::duplex(256 * 1024);
    let dropped = Arc::new(AtomicUsize::new(0));
    let conn = Connection::new(server, service(dropped), &config());
    io.write_all(PREFACE).await.expect("preface");
    io.write_all(&frame(frame::SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    io.write_all(&frame(frame::HEADERS, EH_ES, 1, &get("/")))
        .await
        .expect("req");
    let task = tokio::spawn(async move {
        // Let the request arrive, then shut down.
        let mut conn = std::pin::pin!(conn);
        let _ = tokio::time::timeout(Duration::from_millis(50), conn.as_mut()).await;
        conn.as_mut().get_mut().graceful_shutdown();
        conn.await
    });
    let mut c = Client {
        io,
        buf: Vec::new(),
        task,
        dropped: Arc::new(AtomicUsize::new(0)),
    };
    let mut kinds = Vec::new();
    while let Some((head, _)) = c.next().await {
        kinds.push(head.kind);
    }
    assert!(
        kinds.contains(&frame::DATA) && kinds.contains(&frame::GOAWAY),
        "{kinds:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(2), &mut c.task).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

/// One frame of arbitrary type, flags, stream and payload.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..12,
        any::<u8>(),
        0u32..8,
        proptest::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(kind, flags, stream, payload)| frame(kind, flags, stream, &payload))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Arbitrary frames (and arbitrary bytes after them) never panic the connection, and it
    /// always ends once the client has closed.
    #[test]
    fn arbitrary_input_never_panics_and_the_connection_ends(
        frames in proptest::collection::vec(any_frame(), 0..24),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut c = Client::start().await;
            // Requests that get through are served: a request and its answer mixed in.
            c.send(&frame(frame::HEADERS, EH_ES, 1, &get("/"))).await;
            for f in &frames {
                c.send(f).await;
            }
            c.send(&tail).await;
            let _ = c.io.shutdown().await;
            // Drain whatever the server says until it closes.
            while c.next().await.is_some() {}
            let ended = tokio::time::timeout(Duration::from_secs(5), &mut c.task).await;
            prop_assert!(matches!(ended, Ok(Ok(_))), "the connection did not end: {:?}", ended.is_ok());
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn padding_gives_its_stream_capacity_back_at_once() {
    let mut c = Client::start().await;
    c.send(&frame(frame::HEADERS, frame::END_HEADERS, 1, &get("/hang")))
        .await;
    // Pad length 3: the pad-length octet and 3 octets of padding are 4 octets never read.
    c.send(&frame(frame::DATA, frame::PADDED, 1, b"\x03ab\0\0\0"))
        .await;
    let (head, payload) = loop {
        let (head, payload) = c.until(frame::WINDOW_UPDATE).await.expect("update");
        if head.stream == 1 {
            break (head, payload);
        }
    };
    assert_eq!((head.stream, frame::u32_at(&payload, 0)), (1, 4));
}

/// A stream whose first `poll_flush` after each write is not done yet (as a TLS stream whose
/// socket is full): the connection must flush again even with nothing more to write.
struct SlowFlush {
    inner: DuplexStream,
    dirty: bool,
    pending_once: bool,
    flushed: Arc<AtomicUsize>,
}

impl tokio::io::AsyncRead for SlowFlush {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlowFlush {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.dirty = true;
        self.pending_once = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if std::mem::take(&mut self.pending_once) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        if std::mem::take(&mut self.dirty) {
            self.flushed.fetch_add(1, Ordering::Relaxed);
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_flush_that_was_not_done_is_retried_with_nothing_more_to_write() {
    let (mut io, server) = tokio::io::duplex(256 * 1024);
    let flushed = Arc::new(AtomicUsize::new(0));
    let server = SlowFlush {
        inner: server,
        dirty: false,
        pending_once: false,
        flushed: Arc::clone(&flushed),
    };
    let dropped = Arc::new(AtomicUsize::new(0));
    tokio::spawn(Connection::new(server, service(dropped), &config()));
    io.write_all(PREFACE).await.expect("preface");
    io.write_all(&frame(frame::SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    io.write_all(&frame(frame::HEADERS, EH_ES, 1, &get("/")))
        .await
        .expect("request");
    let mut c = Client {
        io,
        buf: Vec::new(),
        task: tokio::spawn(async { Ok(()) }),
        dropped: Arc::new(AtomicUsize::new(0)),
    };
    assert!(c.until(frame::DATA).await.is_some());
    let done = tokio::time::timeout(Duration::from_secs(2), async {
        while flushed.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "the write was never flushed");
}
