//! HTTP/2 upstreams: multiplexing, GOAWAY mid-load, and gRPC (unary, server-streaming and
//! bidirectional streaming) with trailers both ways and `te: trailers` kept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::HttpClient;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::DEADLINE;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// The file's config: `workers` workers, a 5 s route timeout, an h2 cluster of `endpoint`.
fn config(endpoint: SocketAddr, workers: usize) -> ProxyConfig {
    ProxyConfig::new([endpoint])
        .workers(workers)
        .route("timeout = \"5s\"")
        .cluster_lines("protocol = \"h2\"")
}

#[tokio::test]
async fn concurrent_requests_multiplex_on_one_connection() {
    let backend = Backend::start(Behavior::Delay(std::time::Duration::from_millis(100)));
    let proxy = config(backend.addr(), 1).start();
    let mut calls = Vec::new();
    for _ in 0..20 {
        let target = proxy.url("public", "/");
        calls.push(tokio::spawn(async move {
            HttpClient::http1().get(&target).await
        }));
    }
    for call in calls {
        assert_eq!(call.await.expect("task").expect("reply").status, 200);
    }
    assert_eq!(
        backend.connections(),
        1,
        "one HTTP/2 connection carried all 20"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_load_loses_no_request() {
    let (backend, connections) = crate::support::h2_server::goaway_backend(7).await;
    let proxy = config(backend, 1).start();
    let http = HttpClient::http1();
    // 10 rounds of 10 concurrent requests: GOAWAYs land while streams are in flight.
    for round in 0..10 {
        let mut calls = Vec::new();
        for _ in 0..10 {
            let (http, target) = (http.clone(), proxy.url("public", "/"));
            calls.push(tokio::spawn(async move { http.get(&target).await }));
        }
        for call in calls {
            let reply = call.await.expect("task").expect("reply");
            assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
            assert_eq!(reply.text(), "ok");
        }
    }
    // One connection at a time (requests wait for the one being opened), each sent a GOAWAY at
    // its 7th stream and taking at most the 10 in flight after it before the final GOAWAY:
    // 100 requests need at least 6 connections.
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        opened >= 6,
        "only {opened} connections: were GOAWAYs ignored?"
    );
    proxy.shutdown();
}

// ---- gRPC ----

/// A length-prefixed gRPC message (uncompressed).
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(0);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// Splits complete gRPC messages off the front of `buf`.
fn take_messages(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        let frame = buf.split_to(5 + len);
        out.push(frame.freeze().slice(5..));
    }
    out
}

/// A body fed from a channel: data frames, then optionally trailers.
struct ChanBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, HeaderValue::from_static(v));
    }
    Frame::trailers(map)
}

/// A gRPC service over h2c: `/t.Echo/Unary` echoes one message, `/t.Echo/Server` answers three
/// messages, `/t.Echo/Bidi` echoes each message as it arrives and reports the client's trailer.
/// Every call ends with `grpc-status: 0`, or 3 if the request lacked `te: trailers`.
async fn grpc_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: Request<Incoming>| async move {
                let (tx, rx) = mpsc::channel(16);
                let te_ok = req.headers().get("te").is_some_and(|v| v == "trailers");
                let path = req.uri().path().to_owned();
                tokio::spawn(serve_call(path, te_ok, req.into_body(), tx));
                let mut response = Response::new(ChanBody(rx));
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/grpc"));
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn serve_call(path: String, te_ok: bool, mut body: Incoming, tx: mpsc::Sender<Frame<Bytes>>) {
    let mut buf = BytesMut::new();
    let mut client_trailer = "none";
    // Bounded by the request body: one pass per frame.
    while let Some(Ok(frame)) = body.frame().await {
        match frame.into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                if path.ends_with("/Bidi") {
                    for message in take_messages(&mut buf) {
                        let _ = tx.send(Frame::data(grpc_frame(&message))).await;
                    }
                }
            }
            Err(frame) => {
                if frame
                    .trailers_ref()
                    .is_some_and(|t| t.contains_key("x-client-trailer"))
                {
                    client_trailer = "seen";
                }
            }
        }
    }
    if path.ends_with("/Unary") {
        for message in take_messages(&mut buf) {
            let _ = tx.send(Frame::data(grpc_frame(&message))).await;
        }
    } else if path.ends_with("/Server") {
        for part in ["one", "two", "three"] {
            let _ = tx.send(Frame::data(grpc_frame(part.as_bytes()))).await;
        }
    }
    let status = if te_ok { "0" } else { "3" };
    let _ = tx
        .send(trailers(&[
            ("grpc-status", status),
            ("x-client-trailer", client_trailer),
        ]))
        .await;
}

/// An h2c connection to the proxy, as a gRPC client makes, and the task driving it (aborted at
/// the end of a test so the proxy's drain does not wait for an idle client).
async fn grpc_client(
    proxy: &TestProxy,
) -> (
    hyper::client::conn::http2::SendRequest<ChanBody>,
    tokio::task::JoinHandle<()>,
) {
    let stream = tokio::net::TcpStream::connect(proxy.addr("public"))
        .await
        .expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn grpc_request(proxy: &TestProxy, method: &str, body: ChanBody) -> Request<ChanBody> {
    Request::post(proxy.url("public", &format!("/t.Echo/{method}")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request")
}

/// Reads a gRPC response: its messages and its trailers.
async fn read_call(body: &mut Incoming) -> (Vec<Bytes>, HeaderMap) {
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        match frame.expect("frame").into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                messages.extend(take_messages(&mut buf));
            }
            Err(frame) => trailers = frame.into_trailers().unwrap_or_default(),
        }
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_with_trailers() {
    let backend = grpc_backend().await;
    let proxy = config(backend, 1).start();
    let (mut client, conn) = grpc_client(&proxy).await;

    let (tx, rx) = mpsc::channel(4);
    tx.send(Frame::data(grpc_frame(b"ping")))
        .await
        .expect("queue");
    drop(tx);
    let response = client
        .send_request(grpc_request(&proxy, "Unary", ChanBody(rx)))
        .await
        .expect("unary");
    assert_eq!(response.status(), 200);
    let (messages, trailers) = read_call(&mut response.into_body()).await;
    assert_eq!(messages, [Bytes::from_static(b"ping")]);
    assert_eq!(
        trailers["grpc-status"], "0",
        "te: trailers reached the backend"
    );

    let (tx, rx) = mpsc::channel(4);
    tx.send(Frame::data(grpc_frame(b"go")))
        .await
        .expect("queue");
    drop(tx);
    let response = client
        .send_request(grpc_request(&proxy, "Server", ChanBody(rx)))
        .await
        .expect("server streaming");
    let (messages, trailers) = read_call(&mut response.into_body()).await;
    assert_eq!(
        messages,
        ["one", "two", "three"].map(|s| Bytes::from(s.as_bytes()))
    );
    assert_eq!(trailers["grpc-status"], "0");
    // Our connection goes first, or the proxy's drain would wait for it.
    conn.abort();
    let _ = conn.await;
    proxy.shutdown();
}

#[tokio::test]
async fn grpc_bidi_streaming_interleaves_and_forwards_client_trailers() {
    let backend = grpc_backend().await;
    let proxy = config(backend, 1).start();
    let (mut client, conn) = grpc_client(&proxy).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(Frame::data(grpc_frame(b"first")))
        .await
        .expect("queue");
    let response = client
        .send_request(grpc_request(&proxy, "Bidi", ChanBody(rx)))
        .await
        .expect("bidi");
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    // Each reply arrives before the next message is sent: the call truly streams both ways.
    for next in [&b"second"[..], b"third"] {
        let echoed = tokio::time::timeout(DEADLINE, async {
            loop {
                let frame = body.frame().await.expect("open").expect("frame");
                buf.extend_from_slice(&frame.into_data().expect("data"));
                if let Some(m) = take_messages(&mut buf).pop() {
                    return m;
                }
            }
        })
        .await
        .expect("echo before the next message");
        assert!(!echoed.is_empty());
        tx.send(Frame::data(grpc_frame(next))).await.expect("queue");
    }
    tx.send(trailers(&[("x-client-trailer", "1")]))
        .await
        .expect("queue");
    drop(tx);
    let (messages, trailers) = read_call(&mut body).await;
    assert_eq!(messages.len(), 1, "the third echo");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers["x-client-trailer"], "seen",
        "client trailers reached the backend"
    );
    // Every handle on our connection goes first, or the proxy's drain would wait for it.
    drop((body, client));
    conn.abort();
    let _ = conn.await;
    proxy.shutdown();
}

#[tokio::test]
async fn a_request_cancelled_mid_connect_does_not_block_the_next_one() {
    // A listener whose accept queue is full: the proxy's connect hangs (no SYN-ACK).
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
    }
    let proxy = Proxy::start_toml(&format!(
        "[runtime]\nworkers = 1\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"app\"\ntimeout = \"300ms\"\n\n\
         [clusters.app]\nprotocol = \"h2\"\nconnect_timeout = \"10s\"\nendpoints = [\"{addr}\"]\n"
    ));
    let http = HttpClient::http1();
    // The route timeout drops the request while its connect is still pending.
    let first = http.get(&proxy.url("public", "/")).await.expect("reply");
    assert_eq!(first.status, 504);

    // Now the endpoint answers: drain the queue and serve h2c on the same socket.
    let queued = fillers.len();
    drop(fillers);
    socket.set_nonblocking(true).expect("nonblocking");
    let listener =
        tokio::net::TcpListener::from_std(std::net::TcpListener::from(socket)).expect("listener");
    let accepted = crate::support::tcp_server::serve_counting(listener, |stream| async move {
        let service = service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                Bytes::from_static(b"ok"),
            )))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    // Once the fillers are out of the accept queue, a connect is answered at once.
    assert!(
        crate::support::wait_until_async(DEADLINE, || accepted.load(Ordering::SeqCst) >= queued)
            .await
    );
    // Without clearing the cancelled connect's mark this would wait for a connection that is
    // never coming, and fail.
    let second = http.get(&proxy.url("public", "/")).await.expect("reply");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.text(), "ok");
    proxy.shutdown();
}
