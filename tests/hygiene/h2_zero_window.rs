//! A zero-window stall: an HTTP/2 client that asks for a large response and opens no flow-control
//! window. The proxy must not buffer the response on its behalf (it runs alone in its own
//! process, `support::alone`, so the resident-memory reading is not disturbed by other tests), and must close the stalled
//! connection after `body_read_timeout`.

use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::hygiene::{config, limits};
use crate::support::launcher::Proxy;
use crate::support::raw_client::raw_request;
use bytes::Bytes;
use http::Request;
use tokio::net::TcpStream;

/// Resident set size of this process (proxy, backend and client together), in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test]
async fn a_zero_window_client_does_not_make_the_proxy_buffer_the_response() {
    if !crate::support::alone::in_own_process(
        "h2_zero_window::a_zero_window_client_does_not_make_the_proxy_buffer_the_response",
    ) {
        return;
    }
    const SIZE: usize = 128 * 1024 * 1024;
    let backend = Backend::start(Behavior::fixed(200, Bytes::from(vec![b'w'; SIZE])));
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let addr = proxy.addr("public");
    // Warm up (runtimes, pools, allocator arenas) before the baseline.
    assert_eq!(
        raw_request(
            addr,
            b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    let baseline = rss();
    // The warm-up's upstream connection stays pooled; the stalled request needs another.
    let idle_upstream = backend.open_connections();

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.expect("ready");
    let (resp, _) = send
        .send_request(Request::get("http://a/big").body(()).expect("req"), true)
        .expect("send");
    let resp = tokio::time::timeout(crate::support::DEADLINE, resp)
        .await
        .expect("head within the deadline")
        .expect("response head");
    assert_eq!(resp.status(), 200);
    // Give the proxy every chance to pull the body (the stall is the scenario, not a sync).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss().saturating_sub(baseline);
    assert!(
        grown < 32 * 1024 * 1024,
        "resident memory grew by {} MiB for a stalled {} MiB response",
        grown >> 20,
        SIZE >> 20
    );
    // Everyone else is still served while the stalled stream is open.
    assert_eq!(
        raw_request(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    // The stalled stream is cut after body_read_timeout (300 ms): the connection ends and the
    // upstream request with it.
    tokio::time::timeout(crate::support::DEADLINE, driver)
        .await
        .expect("the proxy closed the stalled connection")
        .expect("driver");
    let upstream_closed = crate::support::wait_until_async(crate::support::DEADLINE, || {
        backend.open_connections() <= idle_upstream
    })
    .await;
    assert!(
        upstream_closed,
        "the upstream request outlived the stalled stream"
    );
    drop(resp);
    drop(send);
}
