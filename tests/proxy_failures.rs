//! What a client sees when forwarding cannot succeed (DESIGN.md "Statuses"), and graceful
//! shutdown.

mod proxy_helpers;

use std::time::{Duration, Instant};

use proxy_helpers::{get, simple_config, start_proxy, url, wait_until, Backend};

#[tokio::test]
async fn no_matching_route_is_404_with_a_short_body() {
    let backend = Backend::start("b0");
    let route = "match = { path_prefix = \"/api\" }";
    let proxy = start_proxy(&simple_config(1, &[backend.addr], route, ""));
    let reply = get(&url(&proxy, "/other")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "no route\n");
    assert_eq!(reply.header("via"), "1.1 switchyard");
    assert_eq!(reply.header("x-request-id").len(), 32);
    assert!(backend.seen().is_empty());
    assert_eq!(get(&url(&proxy, "/api/x")).await.status, 200);
    proxy.shutdown();
}

#[tokio::test]
async fn malformed_path_is_400() {
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(1, &[backend.addr], "", ""));
    assert_eq!(get(&url(&proxy, "/a%00b")).await.status, 400);
    assert!(backend.seen().is_empty());
    proxy.shutdown();
}

#[tokio::test]
async fn closed_endpoint_port_is_502() {
    // Bind then drop: the port is very likely closed for the rest of the test.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port");
    let proxy = start_proxy(&simple_config(1, &[closed], "", ""));
    let reply = get(&url(&proxy, "/")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.text(), "bad gateway\n");
    let state = proxy
        .shared()
        .registry()
        .get("app", closed)
        .expect("endpoint registered");
    assert_eq!(
        state.in_flight(),
        0,
        "the failed request released its in-flight count"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn hanging_backend_hits_the_route_timeout_as_504() {
    let backend = Backend::start("b0");
    let route = "timeout = \"200ms\"";
    let proxy = start_proxy(&simple_config(1, &[backend.addr], route, ""));
    let started = Instant::now();
    let reply = get(&url(&proxy, "/hang")).await;
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The backend did get it: this is a timeout, not a connect failure.
    assert_eq!(backend.seen().len(), 1);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_stops_listening() {
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(2, &[backend.addr], "", ""));
    let target = url(&proxy, "/slow");
    let in_flight = tokio::spawn(async move { get(&target).await });

    let state = proxy
        .shared()
        .registry()
        .get("app", backend.addr)
        .expect("endpoint registered");
    assert!(
        wait_until(|| state.in_flight() == 1),
        "request never reached the proxy"
    );
    let addr = proxy.listener_addr("public").expect("listener");
    proxy.shutdown();

    let reply = in_flight.await.expect("request task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener still accepting after shutdown"
    );
}

#[test]
fn dropping_the_handle_stops_the_listeners() {
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(2, &[backend.addr], "", ""));
    let addr = proxy.listener_addr("public").expect("listener");
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(proxy);
    assert!(
        wait_until(|| std::net::TcpStream::connect(addr).is_err()),
        "listener still accepting after the handle was dropped"
    );
}

#[tokio::test]
async fn cluster_without_endpoints_is_503_with_retry_after() {
    // Discovery is not active yet, so a discovery-fed cluster has no endpoints: the one way to
    // reach an empty cluster with a valid config today.
    let proxy = start_proxy(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"

[clusters.app]
discovery = { dns = "app.invalid:8080" }
"#,
    );
    let reply = get(&url(&proxy, "/")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), "1");
    proxy.shutdown();
}
