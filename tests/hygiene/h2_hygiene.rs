//! HTTP/2 requests the proxy refuses or bounds, with the `h2` crate as client (and raw frames
//! where `h2` itself refuses to send the bad request).

use std::time::Duration;

use crate::support::hygiene::h2raw::{self, RawH2};
use crate::support::hygiene::{rejected, start};
use bytes::Bytes;
use http::{Request, StatusCode};
use tokio::net::TcpStream;

type SendRequest = h2::client::SendRequest<Bytes>;

async fn h2_client(
    addr: std::net::SocketAddr,
) -> (SendRequest, tokio::task::JoinHandle<()>, usize) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let send = send.ready().await.expect("ready");
    // The server's SETTINGS have arrived once the first request can be sent.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver, 0)
}

/// Sends a body-less request and returns the status, or the stream error.
async fn status_of(send: &mut SendRequest, req: Request<()>) -> Result<StatusCode, h2::Error> {
    let (resp, _) = send.send_request(req, true)?;
    let resp = tokio::time::timeout(crate::support::DEADLINE, resp)
        .await
        .expect("answer within the deadline")?;
    Ok(resp.status())
}

#[tokio::test]
async fn host_must_agree_with_authority() {
    let (backend, proxy, addr) = start();
    let before = rejected(&proxy, "host_mismatch");
    let (mut send, _driver, _) = h2_client(addr).await;
    let req = Request::get("http://a/x")
        .header("host", "b")
        .body(())
        .expect("req");
    assert_eq!(status_of(&mut send, req).await.expect("answered"), 400);
    assert!(rejected(&proxy, "host_mismatch") > before);
    let ok = Request::get("http://a/x")
        .header("host", "a")
        .body(())
        .expect("req");
    assert_eq!(status_of(&mut send, ok).await.expect("answered"), 200);
    assert_eq!(
        backend.request_count(),
        1,
        "only the agreeing request went through"
    );
}

#[tokio::test]
async fn limits_and_expectations_apply_to_http2() {
    let (backend, _proxy, addr) = start();
    let (mut send, _driver, _) = h2_client(addr).await;
    let long = format!("http://a/{}", "u".repeat(600));
    for (req, want) in [
        (Request::get(long.as_str()).body(()).expect("req"), 414),
        (
            Request::post("http://a/")
                .header("expect", "magic")
                .body(())
                .expect("req"),
            417,
        ),
    ] {
        let what = format!("{req:?}");
        assert_eq!(
            status_of(&mut send, req).await.expect("answered"),
            want,
            "{what}"
        );
    }
    // A declared length over max_body_bytes is answered before any body is read (the stream
    // stays open on our side: ending it early would be a length mismatch of its own).
    let req = Request::post("http://a/")
        .header("content-length", "2048")
        .body(())
        .expect("req");
    let (resp, _body) = send.send_request(req, false).expect("send");
    let resp = tokio::time::timeout(crate::support::DEADLINE, resp)
        .await
        .expect("answer within the deadline")
        .expect("answered");
    assert_eq!(resp.status(), 413);
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn a_header_list_over_max_header_bytes_is_not_forwarded() {
    let (backend, _proxy, addr) = start();
    let (mut send, _driver, _) = h2_client(addr).await;
    let req = Request::get("http://a/")
        .header("x-big", "b".repeat(8 * 1024))
        .body(())
        .expect("req");
    match status_of(&mut send, req).await {
        Ok(status) => assert_eq!(status, 431),
        Err(e) => assert!(e.is_reset() || e.is_go_away() || e.is_io(), "{e}"),
    }
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn the_server_announces_its_stream_and_header_limits() {
    let (_backend, _proxy, addr) = start();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.expect("ready");
    // Settings are applied once a round trip happened.
    let req = Request::get("http://a/").body(()).expect("req");
    assert_eq!(status_of(&mut send, req).await.expect("answered"), 200);
    drop(send);
    driver.abort();
    // The raw view of the SETTINGS frame: MAX_CONCURRENT_STREAMS (3) = 100 and
    // MAX_HEADER_LIST_SIZE (6) = 4096.
    let mut raw = RawH2::connect(addr);
    let settings = loop {
        let f = raw.next(crate::support::DEADLINE).expect("server SETTINGS");
        if f.kind == h2raw::SETTINGS && f.flags & 1 == 0 {
            break f.payload;
        }
    };
    let pairs: Vec<(u16, u32)> = settings
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert!(pairs.contains(&(3, 100)), "{pairs:?}");
    assert!(pairs.contains(&(6, 4096)), "{pairs:?}");
}

#[test]
fn malformed_http2_requests_are_refused_and_not_forwarded() {
    let (backend, _proxy, addr) = start();
    let mut cases: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    let mut with = |what, extra: &[(&'static str, &'static str)]| {
        let mut f = h2raw::get("a", "/");
        f.extend_from_slice(extra);
        cases.push((what, f));
    };
    with("connection header", &[("connection", "keep-alive")]);
    with("transfer-encoding", &[("transfer-encoding", "chunked")]);
    with("te gzip", &[("te", "gzip")]);
    with("upper-case name", &[("X-Upper", "1")]);
    cases.push((
        "missing :path",
        vec![(":method", "GET"), (":scheme", "http"), (":authority", "a")],
    ));
    cases.push((
        "pseudo after regular",
        vec![
            (":method", "GET"),
            ("x-a", "1"),
            (":scheme", "http"),
            (":path", "/"),
        ],
    ));
    cases.push(("unknown pseudo", {
        let mut f = h2raw::get("a", "/");
        f.push((":evil", "1"));
        f
    }));
    for (what, fields) in cases {
        let mut conn = RawH2::connect(addr);
        conn.request(1, &fields);
        let out = conn.outcome(1, Duration::from_secs(5));
        assert!(
            out.reset || out.status == Some(400) || out.goaway || out.closed,
            "{what}: {out:?}"
        );
        assert_ne!(out.status, Some(200), "{what}");
    }
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_keepalive_timeout() {
    let (_backend, _proxy, addr) = start();
    let (mut send, driver, _) = h2_client(addr).await;
    let req = Request::get("http://a/").body(()).expect("req");
    assert_eq!(status_of(&mut send, req).await.expect("answered"), 200);
    let idle_from = std::time::Instant::now();
    // The connection task ends when the server sends GOAWAY and closes (500 ms keep-alive).
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("server closed the idle connection")
        .expect("driver");
    assert!(idle_from.elapsed() >= Duration::from_millis(450));
}

#[test]
fn the_server_pings_at_h2_keepalive_interval() {
    let (_backend, _proxy, addr) = crate::support::hygiene::start_with(
        &crate::support::hygiene::limits("h2_keepalive_interval = \"200ms\""),
    );
    let mut raw = RawH2::connect(addr);
    // Acknowledge the server's SETTINGS so the connection is fully up, then wait for a PING.
    raw.send(&h2raw::frame(h2raw::SETTINGS, 1, 0, &[]))
        .expect("ack");
    let mut pinged = false;
    while let Some(f) = raw.next(Duration::from_secs(3)) {
        if f.kind == h2raw::PING && f.flags & 1 == 0 {
            pinged = true;
            break;
        }
    }
    assert!(pinged, "no keep-alive PING within 3 s at a 200 ms interval");
}

#[tokio::test]
async fn a_streamed_http2_body_over_max_body_bytes_gets_413() {
    let (backend, proxy, addr) = start();
    let before = rejected(&proxy, "body_too_large");
    let (mut send, _driver, _) = h2_client(addr).await;
    // No content-length: the 1 KiB limit can only trip while the body streams.
    let req = Request::post("http://a/upload").body(()).expect("req");
    let (resp, mut body) = send.send_request(req, false).expect("send");
    for _ in 0..4 {
        body.reserve_capacity(512);
        if body.send_data(Bytes::from(vec![b'x'; 512]), false).is_err() {
            break;
        }
    }
    let resp = tokio::time::timeout(crate::support::DEADLINE, resp)
        .await
        .expect("answer within the deadline")
        .expect("answered");
    assert_eq!(resp.status(), 413);
    assert!(rejected(&proxy, "body_too_large") > before);
    assert!(backend.requests().iter().all(|r| r.body.len() <= 1024));
}

/// CONNECT over HTTP/2 opens a tunnel the proxy does not offer: 501, counted, never forwarded.
/// (The server does not announce extended CONNECT, so RFC 8441 websockets cannot ask for it.)
#[tokio::test]
async fn connect_is_refused_with_501() {
    let (backend, proxy, addr) = start();
    let before = rejected(&proxy, "connect_method");
    let (mut send, _driver, _) = h2_client(addr).await;
    let req = Request::builder()
        .method(http::Method::CONNECT)
        .uri("example.com:443")
        .body(())
        .expect("req");
    assert_eq!(
        status_of(&mut send, req).await.expect("answered"),
        StatusCode::NOT_IMPLEMENTED
    );
    assert!(rejected(&proxy, "connect_method") > before);
    assert_eq!(backend.request_count(), 0);
}

/// A request forwarded from an HTTP/2 client carries `via: 2 switchyard` (RFC 9110 7.6.3: the
/// protocol it was received with), after the client's own entry.
#[tokio::test]
async fn requests_from_http2_clients_carry_via_with_version_2() {
    let (backend, _proxy, addr) = start();
    let (mut send, _driver, _) = h2_client(addr).await;
    let req = Request::get("http://a/v")
        .header("via", "1.1 edge")
        .body(())
        .expect("req");
    assert_eq!(status_of(&mut send, req).await.expect("answered"), 200);
    let seen = backend.requests();
    assert_eq!(seen[0].headers["via"], "1.1 edge, 2 switchyard");
}
