//! What a client sees when forwarding cannot succeed (DESIGN.md "Statuses"), and graceful
//! shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client;
use crate::support::net::closed_port;
use crate::support::{wait_until_async, DEADLINE};

/// The file's config: `workers` workers, cluster `app` of `endpoints`, `route` lines.
fn config(workers: usize, endpoints: &[SocketAddr], route: &str) -> ProxyConfig {
    ProxyConfig::new(endpoints.iter().copied())
        .workers(workers)
        .drain_timeout("5s")
        .route(route)
}

#[tokio::test]
async fn no_matching_route_is_404_with_a_short_body() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(1, &[backend.addr()], "match = { path_prefix = \"/api\" }").start();
    let reply = http_client::get(&proxy.url("public", "/other"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "no route\n");
    assert_eq!(reply.header("via"), Some("1.1 switchyard"));
    assert_eq!(reply.header("x-request-id").map(str::len), Some(32));
    assert_eq!(backend.request_count(), 0);
    let ok = http_client::get(&proxy.url("public", "/api/x"))
        .await
        .expect("reply");
    assert_eq!(ok.status, 200);
    proxy.shutdown();
}

#[tokio::test]
async fn malformed_path_is_400() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(1, &[backend.addr()], "").start();
    let reply = http_client::get(&proxy.url("public", "/a%00b"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 400);
    assert_eq!(backend.request_count(), 0);
    proxy.shutdown();
}

#[tokio::test]
async fn closed_endpoint_port_is_502() {
    // Bind then drop: the port is very likely closed for the rest of the test.
    let closed = closed_port();
    let proxy = config(1, &[closed], "").start();
    let reply = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.text(), "bad gateway\n");
    let state = proxy
        .handle()
        .shared()
        .registry()
        .get("app", closed)
        .expect("endpoint registered");
    assert_eq!(
        state.in_flight(),
        0,
        "the failed request released its in-flight count"
    );
    assert_eq!(
        state.connections(),
        0,
        "the failed connect is not counted as open"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn hanging_backend_hits_the_route_timeout_as_504() {
    let backend = Backend::start(Behavior::Hang);
    let proxy = config(1, &[backend.addr()], "timeout = \"200ms\"").start();
    let started = Instant::now();
    let reply = http_client::get(&proxy.url("public", "/hang"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 504);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The backend did get it: this is a timeout, not a connect failure.
    assert_eq!(backend.request_count(), 1);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_stops_listening() {
    let backend = Backend::start(Behavior::Delay(Duration::from_millis(300)));
    let proxy = config(2, &[backend.addr()], "").start();
    let target = proxy.url("public", "/slow");
    let in_flight = tokio::spawn(async move { http_client::get(&target).await });

    let state = proxy
        .handle()
        .shared()
        .registry()
        .get("app", backend.addr())
        .expect("endpoint registered");
    assert!(
        wait_until_async(DEADLINE, || state.in_flight() == 1).await,
        "request never reached the proxy"
    );
    let addr = proxy.addr("public");
    proxy.shutdown();

    let reply = in_flight.await.expect("request task").expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref(), crate::support::backend::DELAYED_BODY);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener still accepting after shutdown"
    );
}

#[test]
fn dropping_the_proxy_stops_the_listeners() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(2, &[backend.addr()], "").start();
    let addr = proxy.addr("public");
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(proxy);
    assert!(
        crate::support::wait_until(DEADLINE, || std::net::TcpStream::connect(addr).is_err()),
        "listener still accepting after the proxy was dropped"
    );
}

#[tokio::test]
async fn grpc_request_to_a_dead_endpoint_gets_grpc_status_unavailable() {
    let closed = closed_port();
    let proxy = config(1, &[closed], "").start();
    let req = http::Request::post(proxy.url("public", "/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .expect("request");
    let reply = http_client::HttpClient::h2c()
        .send(req)
        .await
        .expect("reply");
    assert_eq!(reply.status, 200, "gRPC failures travel as grpc-status");
    assert_eq!(reply.header("grpc-status"), Some("14"));
    assert_eq!(reply.header("grpc-message"), Some("bad gateway"));
    assert!(reply.body.is_empty());
    proxy.shutdown();
}

#[tokio::test]
async fn grpc_request_past_the_route_timeout_gets_deadline_exceeded() {
    let backend = Backend::start(Behavior::Hang);
    let proxy = config(1, &[backend.addr()], "timeout = \"200ms\"").start();
    let req = http::Request::post(proxy.url("public", "/pkg.Svc/Call"))
        .header("content-type", "application/grpc+proto")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .expect("request");
    let reply = http_client::HttpClient::h2c()
        .send(req)
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("4"));
    proxy.shutdown();
}
