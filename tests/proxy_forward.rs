//! End-to-end forwarding over real sockets: bodies, headers, round robin, h2c, several workers.

mod proxy_helpers;

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use proxy_helpers::{client, get, send, simple_config, start_proxy, url, Backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn get_returns_the_backend_body_with_proxy_headers() {
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(1, &[backend.addr], "", ""));

    let reply = get(&url(&proxy, "/hello")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "b0");
    assert_eq!(reply.header("via"), "1.1 switchyard");
    let id = reply.header("x-request-id").to_owned();
    assert_eq!(id.len(), 32, "generated request id {id:?}");

    let seen = backend.seen();
    let upstream = seen.last().expect("backend got the request");
    let proxy_addr = proxy.listener_addr("public").expect("listener").to_string();
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
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(1, &[backend.addr], "", ""));
    let req = Request::get(url(&proxy, "/"))
        .header("x-request-id", "abc-123")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::default())
        .expect("request");
    let reply = send(&client(false, false), req).await;
    assert_eq!(reply.header("x-request-id"), "abc-123");
    let seen = backend.seen();
    let upstream = seen.last().expect("backend got the request");
    assert_eq!(upstream["x-request-id"], "abc-123");
    assert!(!upstream.contains_key("x-private"));
    // trusted_hops = 0: the client's own entries are not believed.
    assert_eq!(upstream["x-forwarded-for"], "127.0.0.1");
    proxy.shutdown();
}

#[tokio::test]
async fn post_body_of_one_mebibyte_arrives_byte_exact() {
    let backend = Backend::start("echo");
    let proxy = start_proxy(&simple_config(2, &[backend.addr], "", ""));
    let body: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let req = Request::post(url(&proxy, "/upload"))
        .body(Full::new(Bytes::from(body.clone())))
        .expect("request");
    let reply = send(&client(false, false), req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "echoed body differs");
    proxy.shutdown();
}

#[tokio::test]
async fn round_robin_spreads_evenly_over_three_backends() {
    let backends = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = start_proxy(&simple_config(2, &addrs, "", ""));
    let http = client(false, false);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let req = Request::get(url(&proxy, "/"))
            .body(Full::default())
            .expect("request");
        *counts.entry(send(&http, req).await.text()).or_default() += 1;
    }
    // Equal weights and one shared counter per cluster: the rotation is exact, whichever worker
    // served each request.
    for name in ["a", "b", "c"] {
        assert_eq!(counts.get(name), Some(&100), "{counts:?}");
    }
    proxy.shutdown();
}

#[tokio::test]
async fn h2c_downstream_is_detected() {
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(1, &[backend.addr], "", ""));
    let req = Request::get(url(&proxy, "/h2"))
        .body(Full::default())
        .expect("request");
    let reply = send(&client(true, false), req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.text(), "b0");
    assert_eq!(reply.header("via"), "1.1 switchyard");
    let seen = backend.seen();
    // HTTP/2 has no Host header; the :authority becomes the upstream Host.
    let proxy_addr = proxy.listener_addr("public").expect("listener").to_string();
    assert_eq!(seen.last().expect("request")["host"], proxy_addr.as_str());
    proxy.shutdown();
}

#[tokio::test]
async fn h2_cluster_speaks_http2_upstream() {
    let backend = Backend::start("h2");
    let proxy = start_proxy(&simple_config(1, &[backend.addr], "", "protocol = \"h2\""));
    let body = Bytes::from_static(b"over h2");
    let req = Request::post(url(&proxy, "/"))
        .body(Full::new(body.clone()))
        .expect("request");
    let reply = send(&client(false, false), req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_11, "downstream stays HTTP/1.1");
    assert_eq!(reply.body, body);
    proxy.shutdown();
}

#[tokio::test]
async fn absolute_form_target_routes_on_its_authority() {
    let backend = Backend::start("b0");
    let route = "match = { host = \"example.test\", path_prefix = \"/x\" }";
    let proxy = start_proxy(&simple_config(1, &[backend.addr], route, ""));
    let addr = proxy.listener_addr("public").expect("listener");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET http://example.test/x/y HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(proxy_helpers::DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("answer within the deadline")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("b0"), "{text}");
    assert_eq!(
        backend.seen().last().expect("request")["host"],
        "example.test"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_worker_accepts_connections() {
    let backend = Backend::start("b0");
    let proxy = start_proxy(&simple_config(4, &[backend.addr], "", ""));
    // Fresh connections only: SO_REUSEPORT hashes each onto one of the four sockets, so a worker
    // that did not accept would leave some of these 64 hanging until the deadline.
    let http = client(false, true);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (http, target) = (http.clone(), url(&proxy, "/"));
        tasks.push(tokio::spawn(async move {
            let req = Request::get(target).body(Full::default()).expect("request");
            send(&http, req).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    assert_eq!(backend.seen().len(), 64);
    proxy.shutdown();
}
