//! Malformed upstream responses (DESIGN.md "Statuses"): 502 while nothing was sent downstream,
//! an aborted stream once something was, and the offending connection is never reused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::config::ProxyConfig;
use crate::support::http_client;
use crate::support::raw_client::RawConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood";

/// A backend speaking raw bytes: the first request it receives gets `bad`, every later one
/// `GOOD`; connections stay open for reuse. Returns its address and accepted-connection count.
async fn raw_backend(bad: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    crate::support::tcp_server::bind_counting(move |mut stream| {
        let requests = Arc::clone(&requests);
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            for _ in 0..100 {
                // Requests from the proxy here have no body: a head is one request.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                buf.drain(..end);
                let reply = if requests.fetch_add(1, Ordering::SeqCst) == 0 {
                    bad
                } else {
                    GOOD
                };
                // One write: stray bytes arrive together with the head they follow.
                if stream.write_all(reply).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// The file's config: one worker, cluster `app` of `endpoint`.
fn config(endpoint: SocketAddr) -> ProxyConfig {
    ProxyConfig::new([endpoint]).workers(1)
}

/// The first request (with `method`) gets `bad` and must fail with 502; the second must succeed
/// on a new upstream connection.
async fn expect_502_then_fresh_connection(method: &str, bad: &'static [u8]) {
    let (addr, accepted) = raw_backend(bad).await;
    let proxy = config(addr).start();
    let url = proxy.url("public", "/");
    let req = http::Request::builder()
        .method(method)
        .uri(&url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let reply = http_client::HttpClient::http1()
        .send(req)
        .await
        .expect("reply");
    assert_eq!(reply.status, 502, "{}", String::from_utf8_lossy(bad));
    let reply = http_client::get(&url).await.expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "good");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the connection that carried the bad response was reused"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn transfer_encoding_with_content_length_is_502() {
    expect_502_then_fresh_connection(
        "GET",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_502() {
    expect_502_then_fresh_connection(
        "GET",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    )
    .await;
}

#[tokio::test]
async fn a_garbled_status_line_is_502() {
    expect_502_then_fresh_connection("GET", b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n").await;
}

#[tokio::test]
async fn a_body_on_204_is_502() {
    expect_502_then_fresh_connection("GET", b"HTTP/1.1 204 No Content\r\n\r\nhello").await;
}

#[tokio::test]
async fn a_204_announcing_a_length_is_502() {
    expect_502_then_fresh_connection(
        "GET",
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
}

#[tokio::test]
async fn a_body_on_304_is_502() {
    expect_502_then_fresh_connection("GET", b"HTTP/1.1 304 Not Modified\r\n\r\nhello").await;
}

#[tokio::test]
async fn a_body_after_a_head_response_is_502() {
    expect_502_then_fresh_connection("HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        .await;
}

#[tokio::test]
async fn bad_chunk_framing_after_the_head_aborts_the_downstream_stream() {
    let (addr, accepted) =
        raw_backend(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
            .await;
    let proxy = config(addr).start();
    let proxy_addr = proxy.addr("public");
    let reply = tokio::task::spawn_blocking(move || {
        let mut conn = RawConn::connect(proxy_addr);
        conn.send(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .expect("send");
        conn.read_response()
    })
    .await
    .expect("raw client");
    // The head was already on its way: the client sees it, then a cut, never a clean end.
    assert_eq!(reply.status, 200);
    assert!(!reply.complete, "the stream must be aborted, not ended");
    assert!(reply.closed);
    let next = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("reply");
    assert_eq!(next.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    proxy.shutdown();
}

#[tokio::test]
async fn an_upstream_103_early_hints_is_dropped_and_the_final_response_forwarded() {
    // Issue 26 §4: hyper 1.x's server cannot send 1xx interim responses, so switchyard drops
    // them (RFC 8297 §2 lets an intermediary): the client gets the final 200, and its
    // headers are the 200's only.
    const HINTED: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-final: 1\r\n\r\nhinted";
    let (addr, _) = raw_backend(HINTED).await;
    let proxy = config(addr).start();
    let reply = http_client::get(&proxy.url("public", "/page"))
        .await
        .expect("a response");
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "hinted")
    );
    assert_eq!(reply.header("x-final"), Some("1"));
    assert_eq!(
        reply.header("link"),
        None,
        "the 103's fields stay in the 103"
    );
    // The upstream connection stays usable after the interim response.
    let next = http_client::get(&proxy.url("public", "/again"))
        .await
        .expect("a response");
    assert_eq!((next.status.as_u16(), next.text().as_str()), (200, "good"));
}
