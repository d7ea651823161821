//! Proves the test support itself: every backend behaviour, the raw client's framing, and every
//! fault of the fault proxy, each exercised directly (no switchyard in between), so the tests that
//! build on them fail only for switchyard's faults.

/// The fault proxy's faults, one test each.
mod faults;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::backend::{Action, Backend, Behavior, DIE_MID_BODY_LEN, DIE_MID_BODY_SENT};
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::{BinProcess, Proxy, TestProxy};
use crate::support::raw_client::{raw_request, RawConn};
use crate::support::{wait_until, DEADLINE};
use bytes::Bytes;
use http::{Method, StatusCode, Version};

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").into_bytes()
}

/// Reads until EOF or error; returns what arrived and the error kind, if any.
fn read_all(stream: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

#[tokio::test]
async fn fixed_response_is_served_and_recorded() {
    let backend = Backend::start_named("alpha", Behavior::fixed(201, "made"));
    let resp = http_client::post(&backend.url("/things?x=1"), "payload")
        .await
        .expect("post");
    assert_eq!(resp.status, StatusCode::CREATED);
    assert_eq!(resp.text(), "made");
    assert_eq!(resp.header("x-backend"), Some("alpha"));
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, Method::POST);
    assert_eq!(reqs[0].uri.to_string(), "/things?x=1");
    assert_eq!(reqs[0].body, Bytes::from_static(b"payload"));
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn echo_returns_body_and_request_info_over_http1_and_h2c() {
    let backend = Backend::start(Behavior::Echo);
    let resp = http_client::post(&backend.url("/e"), "ping")
        .await
        .expect("h1");
    assert_eq!(resp.text(), "ping");
    assert_eq!(resp.header("x-echo-method"), Some("POST"));
    assert_eq!(resp.header("x-echo-uri"), Some("/e"));
    assert_eq!(resp.header("x-echo-version"), Some("HTTP/1.1"));
    assert_eq!(
        resp.header("x-backend"),
        Some(backend.addr().to_string().as_str())
    );

    let resp = http_client::post_h2(&backend.url("/e2"), "pong")
        .await
        .expect("h2c");
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.text(), "pong");
    assert_eq!(resp.header("x-echo-version"), Some("HTTP/2.0"));
    assert_eq!(backend.requests()[1].version, Version::HTTP_2);
}

#[tokio::test]
async fn delay_holds_the_response_headers() {
    let backend = Backend::start(Behavior::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let resp = http_client::get(&backend.url("/")).await.expect("get");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.text(), "delayed");
}

#[tokio::test]
async fn hang_never_answers_but_records_the_request() {
    let backend = Backend::start(Behavior::Hang);
    let client = HttpClient::http1().with_timeout(Duration::from_millis(300));
    let err = client.get(&backend.url("/h")).await.expect_err("must hang");
    assert!(err.to_string().contains("deadline"), "{err}");
    assert_eq!(backend.request_count(), 1);
    assert_eq!(backend.open_connections(), 1);
}

#[test]
fn reset_behavior_resets_each_connection() {
    let backend = Backend::start(Behavior::Reset);
    // No write first: a write that meets the RST would consume the error and leave EOF.
    let mut stream = TcpStream::connect(backend.addr()).expect("connect");
    let (data, err) = read_all(&mut stream);
    assert!(data.is_empty());
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
    assert_eq!(backend.connections(), 1);
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn script_decides_per_request() {
    let backend = Backend::start(Behavior::script(|req, n| match n {
        0 => Action::status(503),
        1 => Action::respond(200, format!("second {}", req.uri)),
        _ => Action::Reset,
    }));
    let client = HttpClient::http1();
    let first = client.get(&backend.url("/a")).await.expect("first");
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    let second = client.get(&backend.url("/b")).await.expect("second");
    assert_eq!(second.text(), "second /b");
    assert!(client.get(&backend.url("/c")).await.is_err());
    assert_eq!(backend.request_count(), 3);
}

#[test]
fn script_reset_sends_a_real_rst_after_reading_the_request() {
    let backend = Backend::start(Behavior::script(|_, _| Action::Reset));
    let mut stream = TcpStream::connect(backend.addr()).expect("connect");
    stream.write_all(&get_req("/r")).expect("write");
    let (data, err) = read_all(&mut stream);
    assert!(data.is_empty());
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
    assert_eq!(backend.requests()[0].uri.path(), "/r");
}

#[test]
fn slow_body_streams_chunks_apart_and_the_raw_client_dechunks() {
    let backend = Backend::start(Behavior::SlowBody {
        chunk: Bytes::from_static(b"tick;"),
        interval: Duration::from_millis(100),
        chunks: 3,
    });
    let started = Instant::now();
    let resp = raw_request(backend.addr(), &get_req("/slow"));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.body_text(), "tick;tick;tick;");
    assert!(resp.complete);
}

#[tokio::test]
async fn die_mid_body_sends_part_then_cuts_the_connection() {
    let backend = Backend::start(Behavior::DieMidBody);
    assert!(http_client::get(&backend.url("/")).await.is_err());
    let resp = raw_request(backend.addr(), &get_req("/"));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length"),
        Some(DIE_MID_BODY_LEN.to_string().as_str())
    );
    assert_eq!(resp.body, DIE_MID_BODY_SENT);
    assert!(!resp.complete);
    assert!(resp.closed);
}

#[tokio::test]
async fn set_behavior_applies_to_later_requests() {
    let backend = Backend::start(Behavior::fixed(200, "one"));
    assert_eq!(
        http_client::get(&backend.url("/")).await.expect("1").text(),
        "one"
    );
    backend.set_behavior(Behavior::fixed(500, "two"));
    let resp = http_client::get(&backend.url("/")).await.expect("2");
    assert_eq!((resp.status.as_u16(), resp.text().as_str()), (500, "two"));
}

#[test]
fn stop_closes_listener_and_connections() {
    let mut backend = Backend::start(Behavior::Hang);
    let addr = backend.addr();
    let mut open = TcpStream::connect(addr).expect("connect");
    open.write_all(&get_req("/")).expect("write");
    assert!(wait_until(DEADLINE, || backend.request_count() == 1));
    backend.stop();
    let (data, _) = read_all(&mut open);
    assert!(data.is_empty());
    let refused = TcpStream::connect(addr).expect_err("listener must be gone");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn backend_serves_on_ipv6_loopback() {
    let addr: SocketAddr = "[::1]:0".parse().expect("addr");
    let backend = Backend::start_at(addr, Some("v6"), Behavior::fixed(200, "six"));
    assert!(backend.addr().is_ipv6());
    let resp = http_client::get(&backend.url("/")).await.expect("get");
    assert_eq!(resp.text(), "six");
}

#[test]
fn raw_client_keeps_alive_and_sees_close() {
    let backend = Backend::start(Behavior::fixed(200, "same"));
    let mut conn = RawConn::connect(backend.addr());
    for _ in 0..2 {
        conn.send(&get_req("/")).expect("send");
        let resp = conn.read_response();
        assert_eq!((resp.status, resp.body_text().as_str()), (200, "same"));
        assert!(resp.complete && !resp.closed);
    }
    assert_eq!(backend.connections(), 1);

    let closing = raw_request(
        backend.addr(),
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(closing.status, 200);
    assert!(closing.closed);
    let kept = raw_request(backend.addr(), &get_req("/"));
    assert!(!kept.closed);
}

#[test]
fn raw_client_reports_no_response_as_status_zero() {
    let backend = Backend::start(Behavior::Reset);
    let resp = raw_request(backend.addr(), &get_req("/"));
    assert_eq!(resp.status, 0);
    assert!(resp.closed);
}

#[tokio::test]
async fn in_process_launcher_starts_a_proxy_from_toml() {
    let backend = Backend::start_named("only", Behavior::Echo);
    let proxy = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "main"
listen = "127.0.0.1:0"

[[routes]]
listener = "main"
match = {{ path_prefix = "/" }}
cluster = "c"

[clusters.c]
endpoints = ["{}"]
"#,
        backend.addr()
    ));
    assert_ne!(proxy.addr("main").port(), 0);
    assert!(proxy.config_path().is_file());
    let resp = http_client::post(&proxy.url("main", "/via"), "hi")
        .await
        .expect("through the proxy");
    assert_eq!(resp.text(), "hi");
    assert_eq!(resp.header("x-backend"), Some("only"));
    assert_eq!(backend.requests()[0].uri.path(), "/via");
    proxy.shutdown();
}

#[test]
fn in_process_launcher_reports_config_errors_with_their_position() {
    let err = TestProxy::try_start_toml("[[listeners]]\nname = 5\n")
        .err()
        .expect("invalid config must not start");
    assert!(err.contains("switchyard.toml:2:"), "{err}");
}

#[test]
fn binary_launcher_captures_output_and_exit_status() {
    let out = BinProcess::run(&["--help"], DEADLINE);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("demo"), "{}", out.stdout);
    let bad = BinProcess::run(&["no-such-command"], DEADLINE);
    assert!(!bad.status.success());
    assert!(!bad.stderr.is_empty());
}
