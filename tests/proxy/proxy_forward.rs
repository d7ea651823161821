//! End-to-end forwarding over real sockets: bodies, headers, round robin, h2c, several workers.

use std::collections::HashMap;

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::{self, HttpClient};
use crate::support::raw_client::raw_request;
use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::Full;

/// The file's config: `workers` workers, `route` and `cluster` lines, cluster `app` of
/// `backends`.
fn config(workers: usize, backends: &[&Backend], route: &str, cluster: &str) -> ProxyConfig {
    ProxyConfig::new(backends.iter().map(|b| b.addr()))
        .workers(workers)
        .drain_timeout("5s")
        .route(route)
        .cluster_lines(cluster)
}

#[tokio::test]
async fn get_returns_the_backend_body_with_proxy_headers() {
    let backend = Backend::start_named("b0", Behavior::fixed(200, "b0"));
    let proxy = config(1, &[&backend], "", "").start();

    let reply = http_client::get(&proxy.url("public", "/hello"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "b0");
    assert_eq!(reply.header("via"), Some("1.1 switchyard"));
    let id = reply.header("x-request-id").expect("request id").to_owned();
    assert_eq!(id.len(), 32, "generated request id {id:?}");

    let seen = backend.requests();
    let upstream = &seen.last().expect("backend got the request").headers;
    let proxy_addr = proxy.addr("public").to_string();
    assert_eq!(upstream["x-request-id"], id.as_str());
    assert_eq!(upstream["x-forwarded-for"], "127.0.0.1");
    assert_eq!(upstream["x-forwarded-proto"], "http");
    assert_eq!(upstream["x-forwarded-host"], proxy_addr.as_str());
    assert_eq!(
        upstream["host"],
        proxy_addr.as_str(),
        "client's Host is kept"
    );
    assert!(upstream.contains_key("traceparent"));
    proxy.shutdown();
}

#[tokio::test]
async fn client_request_id_is_kept_and_hop_by_hop_headers_are_stripped() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(1, &[&backend], "", "").start();
    let req = Request::get(proxy.url("public", "/"))
        .header("x-request-id", "abc-123")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::<Bytes>::default())
        .expect("request");
    let reply = HttpClient::http1().send(req).await.expect("reply");
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
    let seen = backend.requests();
    let upstream = &seen.last().expect("backend got the request").headers;
    assert_eq!(upstream["x-request-id"], "abc-123");
    assert!(!upstream.contains_key("x-private"));
    // trusted_hops = 0: the client's own entries are not believed.
    assert_eq!(upstream["x-forwarded-for"], "127.0.0.1");
    proxy.shutdown();
}

#[tokio::test]
async fn post_body_of_one_mebibyte_arrives_byte_exact() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = config(2, &[&backend], "", "").start();
    let body: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let reply = http_client::post(&proxy.url("public", "/upload"), body.clone())
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "echoed body differs");
    proxy.shutdown();
}

#[tokio::test]
async fn round_robin_spreads_evenly_over_three_backends() {
    let backends = ["a", "b", "c"].map(|n| Backend::start_named(n, Behavior::fixed(200, n)));
    let proxy = config(
        2,
        &backends.iter().collect::<Vec<_>>(),
        "",
        "balance = \"round_robin\"",
    )
    .start();
    let http = HttpClient::http1();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let reply = http.get(&proxy.url("public", "/")).await.expect("reply");
        *counts.entry(reply.text()).or_default() += 1;
    }
    // Equal weights and one rotation shared by both workers: sequential requests take exact
    // turns, so each endpoint gets its third. (The default, least_request, would pick at
    // random between idle endpoints and only come within a few percent.)
    for name in ["a", "b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert_eq!(n, 100, "{counts:?}");
    }
    proxy.shutdown();
}

#[tokio::test]
async fn h2c_downstream_is_detected() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = config(1, &[&backend], "", "").start();
    let reply = http_client::get_h2(&proxy.url("public", "/h2"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.header("via"), Some("1.1 switchyard"));
    // HTTP/2 has no Host header; the :authority becomes the upstream Host.
    let proxy_addr = proxy.addr("public").to_string();
    assert_eq!(reply.header("x-echo-host"), Some(proxy_addr.as_str()));
    proxy.shutdown();
}

#[tokio::test]
async fn h2_cluster_speaks_http2_upstream() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = config(1, &[&backend], "", "protocol = \"h2\"").start();
    let reply = http_client::post(&proxy.url("public", "/"), "over h2")
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_11, "downstream stays HTTP/1.1");
    assert_eq!(reply.text(), "over h2");
    assert_eq!(backend.requests()[0].version, Version::HTTP_2);
    proxy.shutdown();
}

#[tokio::test]
async fn absolute_form_target_routes_on_its_authority() {
    let backend = Backend::start(Behavior::Echo);
    let route = "match = { host = \"example.test\", path_prefix = \"/x\" }";
    let proxy = config(1, &[&backend], route, "").start();
    let addr = proxy.addr("public");
    let reply = tokio::task::spawn_blocking(move || {
        raw_request(
            addr,
            b"GET http://example.test/x/y HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .expect("raw client");
    assert_eq!(reply.status, 200);
    assert_eq!(backend.requests()[0].headers["host"], "example.test");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_worker_accepts_connections() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(4, &[&backend], "", "").start();
    // Fresh connections only (a client per request): SO_REUSEPORT hashes each onto one of the
    // four sockets, so a worker that did not accept would leave some of these 64 hanging.
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let target = proxy.url("public", "/");
        tasks.push(tokio::spawn(async move {
            let req = http_client::request(Method::GET, &target, Bytes::new()).expect("request");
            HttpClient::http1().send(req).await.expect("reply").status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    assert_eq!(backend.request_count(), 64);
    proxy.shutdown();
}
