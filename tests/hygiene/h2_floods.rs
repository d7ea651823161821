//! HTTP/2 floods against the proxy: rapid reset, CONTINUATION, PING and SETTINGS floods. Each
//! must end with the flooding connection cut (or absorbed) at bounded cost, upstream requests
//! cancelled, and the proxy still serving everyone else.

use std::io::Write;
use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::hygiene::h2raw::{self, RawH2};
use crate::support::hygiene::{config, limits};
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::raw_client::raw_request;
use crate::support::{wait_until, DEADLINE};
use http::Request;
use tokio::net::TcpStream;

fn still_serving(proxy: &TestProxy) {
    let resp = raw_request(
        proxy.addr("public"),
        b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "proxy no longer serves: {resp:?}");
}

#[tokio::test]
async fn rapid_reset_cancels_every_upstream_request() {
    let backend = Backend::start(Behavior::script(|req, _| {
        if req.uri.path() == "/hang" {
            crate::support::backend::Action::Hang
        } else {
            crate::support::backend::Action::status(200)
        }
    }));
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let tcp = TcpStream::connect(proxy.addr("public"))
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.expect("ready");
    let mut opened = 0;
    for _ in 0..1000 {
        let req = Request::get("http://a/hang").body(()).expect("req");
        let Ok((_resp, mut stream)) = send.send_request(req, false) else {
            break; // GOAWAY: the server had enough
        };
        stream.send_reset(h2::Reason::CANCEL);
        opened += 1;
        match tokio::time::timeout(DEADLINE, send.clone().ready()).await {
            Ok(Ok(s)) => send = s,
            _ => break,
        }
    }
    assert!(opened > 0);
    // Every request that reached the backend was cancelled with its stream: no upstream
    // connection stays open waiting for an answer nobody wants.
    let settled = wait_until(DEADLINE, || backend.open_connections() == 0);
    assert!(
        settled,
        "{} upstream connections still open",
        backend.open_connections()
    );
    drop(send);
    driver.abort();
    still_serving(&proxy);
}

/// Floods raw bytes from a thread without reading anything; returns how many frames were
/// written before the proxy cut the connection (or `total` if it never did).
fn flood(proxy: &TestProxy, first: Vec<u8>, frame: Vec<u8>, total: usize) -> usize {
    let mut conn = RawH2::connect(proxy.addr("public"));
    conn.stream
        .set_write_timeout(Some(DEADLINE))
        .expect("write timeout");
    if conn.send(&first).is_err() {
        return 0;
    }
    let batch: Vec<u8> = frame.repeat(256);
    let mut sent = 0;
    while sent < total {
        if conn.stream.write_all(&batch).is_err() {
            break;
        }
        sent += 256;
    }
    sent
}

#[test]
fn continuation_flood_is_cut_at_the_header_limit() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let fields = h2raw::get("a", "/");
    let head = h2raw::frame(h2raw::HEADERS, 0, 1, &h2raw::block(&fields));
    let filler = h2raw::block(&[("x-fill", &"f".repeat(1000))]).repeat(15);
    let continuation = h2raw::frame(h2raw::CONTINUATION, 0, 1, &filler);
    // 100 000 × 15 KB = 1.5 GB if nobody stops it; the limit is 4 KiB of headers.
    let sent = flood(&proxy, head, continuation, 100_000);
    assert!(
        sent < 100_000,
        "the proxy read 1.5 GB of CONTINUATION frames"
    );
    assert_eq!(backend.request_count(), 0);
    still_serving(&proxy);
}

#[test]
fn ping_flood_from_a_client_that_never_reads_is_cut() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let ping = h2raw::frame(h2raw::PING, 0, 0, &[7u8; 8]);
    // 2 M pings = 34 MB of pongs owed: far more than socket buffers hold.
    let sent = flood(&proxy, Vec::new(), ping, 2_000_000);
    assert!(
        sent < 2_000_000,
        "every ping was accepted while no pong was read"
    );
    still_serving(&proxy);
}

#[test]
fn settings_flood_from_a_client_that_never_reads_is_cut() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    // SETTINGS_INITIAL_WINDOW_SIZE = 65535, over and over: each needs an ACK.
    let settings = h2raw::frame(h2raw::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
    let sent = flood(&proxy, Vec::new(), settings, 2_000_000);
    assert!(
        sent < 2_000_000,
        "every SETTINGS was accepted while no ACK was read"
    );
    still_serving(&proxy);
}

#[tokio::test]
async fn many_concurrent_streams_beyond_the_limit_are_refused_not_queued() {
    let backend = Backend::start(Behavior::Delay(Duration::from_millis(200)));
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let mut raw = RawH2::connect(proxy.addr("public"));
    // 150 streams at once, ignoring the advertised 100.
    for i in 0..150u32 {
        raw.request(2 * i + 1, &h2raw::get("a", "/"));
    }
    let mut refused = 0;
    let mut answered = 0;
    while refused + answered < 150 {
        let Some(f) = raw.next(DEADLINE) else { break };
        match f.kind {
            h2raw::RST_STREAM => refused += 1,
            h2raw::HEADERS => answered += 1,
            h2raw::GOAWAY => break,
            _ => {}
        }
    }
    assert!(answered <= 100, "{answered} streams served at once");
    assert!(
        refused >= 50 || answered < 150,
        "refused {refused}, answered {answered}"
    );
    assert!(
        backend.request_count() <= 100,
        "{}",
        backend.request_count()
    );
}

/// Reads frames, answering every PING when `answer`, until stream 1 gets its response head or
/// the connection ends; the `:status` static index seen (if any) and whether it ended.
fn await_head(conn: &mut RawH2, answer: bool, deadline: Duration) -> (Option<u8>, bool) {
    let end = std::time::Instant::now() + deadline;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        let Some(frame) = conn.next(left) else {
            // `next` also gives up at the deadline: ended only if time is left.
            return (None, std::time::Instant::now() < end);
        };
        if frame.kind == h2raw::PING && frame.flags & 0x1 == 0 && answer {
            let pong = h2raw::frame(h2raw::PING, 0x1, 0, &frame.payload);
            if conn.send(&pong).is_err() {
                return (None, true);
            }
        }
        if frame.kind == h2raw::HEADERS && frame.stream == 1 {
            return (frame.payload.first().map(|b| b & 0x7f), false);
        }
    }
    (None, false)
}

#[test]
fn keepalive_pings_cut_a_client_that_stopped_answering() {
    // The request waits 3 s on the backend, so neither the idle timer (no stream open) nor a
    // body timer can end the connection: only the unanswered keep-alive PING can.
    let backend = Backend::start(Behavior::Delay(Duration::from_secs(3)));
    let proxy = Proxy::start_toml(&config(
        &backend,
        &limits("h2_keepalive_interval = \"200ms\""),
    ));
    let started = std::time::Instant::now();
    let mut silent = RawH2::connect(proxy.addr("public"));
    silent.request(1, &h2raw::get("a", "/"));
    let (status, ended) = await_head(&mut silent, false, Duration::from_secs(2));
    assert_eq!(status, None, "no answer can come before the backend's");
    assert!(ended, "a client that answers no PING is cut");
    assert!(started.elapsed() < Duration::from_secs(2));

    // One that answers them keeps its connection until the (late) response.
    let mut alive = RawH2::connect(proxy.addr("public"));
    alive.request(1, &h2raw::get("a", "/"));
    let (status, ended) = await_head(&mut alive, true, DEADLINE);
    assert_eq!(status, Some(8), "200 after the backend's delay");
    assert!(!ended);
}
