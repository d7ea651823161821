//! A gRPC unary call between two sidecars over mTLS: client -> web sidecar (h2c) -> HTTP/2 over
//! mTLS -> orders sidecar (routes by the client identity) -> h2c gRPC backend. The message,
//! `te: trailers`, the response trailers and the forwarded identity all arrive.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::support::launcher::Proxy;
use crate::support::tls::{Ca, Leaf};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A body of fixed frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// An h2c gRPC backend answering every call with `pong:<request message>` and the caller's
/// `x-forwarded-client-cert` in a response header; `grpc-status: 0` in the trailers.
async fn grpc_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let te = req.headers().get("te").cloned();
                    let xfcc = req.headers().get("x-forwarded-client-cert").cloned();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let message = body.map(|b| b.slice(5.min(b.len())..)).unwrap_or_default();
                    let mut reply = b"pong:".to_vec();
                    reply.extend_from_slice(&message);
                    let mut trailers = HeaderMap::new();
                    let ok = te.as_ref().is_some_and(|v| v == "trailers");
                    trailers.insert(
                        "grpc-status",
                        HeaderValue::from_static(if ok { "0" } else { "3" }),
                    );
                    let frames = Frames(VecDeque::from([
                        Frame::data(grpc_frame(&reply)),
                        Frame::trailers(trailers),
                    ]));
                    let mut response = Response::new(frames);
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    if let Some(xfcc) = xfcc {
                        response.headers_mut().insert("x-seen-client-cert", xfcc);
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_call_between_two_sidecars_over_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "mesh");
    let orders = ca.issue(
        "orders",
        &Leaf::named("orders").uri("spiffe://local/orders"),
    );
    let web = ca.issue("web", &Leaf::named("web").uri("spiffe://local/web"));
    let backend = grpc_backend().await;
    let orders_proxy = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "mesh"
listen = "127.0.0.1:0"
tls = {{ cert = "{}", key = "{}", client_ca = "{}" }}

[[routes]]
listener = "mesh"
match = {{ client_identity = "spiffe://local/web" }}
cluster = "app"

[clusters.app]
protocol = "h2"
endpoints = ["{backend}"]
"#,
        orders.0.display(),
        orders.1.display(),
        ca.cert_path.display()
    ));
    let web_proxy = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "local"
listen = "127.0.0.1:0"

[[routes]]
listener = "local"
match = {{ path_prefix = "/" }}
cluster = "orders"

[clusters.orders]
protocol = "h2"
endpoints = ["{}"]
tls = {{ sni = "orders", ca = "{}", cert = "{}", key = "{}" }}
"#,
        orders_proxy.addr("mesh"),
        ca.cert_path.display(),
        web.0.display(),
        web.1.display()
    ));

    let tcp = tokio::net::TcpStream::connect(web_proxy.addr("local"))
        .await
        .expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = Request::post(format!(
        "http://{}/orders.Orders/Get",
        web_proxy.addr("local")
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(grpc_frame(b"ping")))
    .expect("request");
    let response = client.send_request(req).await.expect("response");
    assert_eq!(response.status(), 200);
    let seen = response
        .headers()
        .get("x-seen-client-cert")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(seen.ends_with(";URI=\"spiffe://local/web\""), "{seen:?}");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), grpc_frame(b"pong:ping"));
}
