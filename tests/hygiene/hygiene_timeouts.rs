//! Our own timers with real slow clients (300 ms limits, see `support::hygiene::limits`):
//! nothing sent, a drip-fed head, an idle keep-alive connection, a stalled body, a client that
//! stops reading.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::hygiene::{config, limits, rejected, start};
use crate::support::launcher::Proxy;
use crate::support::raw_client::RawConn;
use bytes::Bytes;

/// A timer set to 300 ms must not fire before this…
const EARLY: Duration = Duration::from_millis(250);
/// …and must have fired by this (generous for slow CI machines).
const LATE: Duration = Duration::from_secs(3);

fn assert_closed_on_time(conn: &mut RawConn, started: Instant, limit: Duration, what: &str) {
    assert!(conn.wait_closed(LATE), "{what}: still open after {LATE:?}");
    let took = started.elapsed();
    assert!(
        took >= limit.saturating_sub(Duration::from_millis(50)),
        "{what}: closed after {took:?}, before its {limit:?} limit"
    );
}

#[test]
fn a_client_that_sends_nothing_is_closed_after_first_byte_timeout() {
    let (_backend, _proxy, addr) = start();
    let started = Instant::now();
    let mut conn = RawConn::connect(addr);
    assert_closed_on_time(
        &mut conn,
        started,
        Duration::from_millis(300),
        "silent client",
    );
}

#[test]
fn a_drip_fed_head_gets_408_after_header_read_timeout() {
    let (backend, proxy, addr) = start();
    let before = rejected(&proxy, "header_timeout");
    let mut conn = RawConn::connect(addr);
    let started = Instant::now();
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n").expect("send");
    // Slowloris: a header line every 50 ms, never the empty line. Paced, not synchronising:
    // the server is expected to cut us off in the middle.
    for i in 0..40 {
        if conn.send(format!("x-drip-{i}: 1\r\n").as_bytes()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_millis(600) {
            break;
        }
    }
    let resp = conn.read_response();
    assert_eq!(resp.status, 408, "{resp:?}");
    assert!(resp.closed || conn.wait_closed(LATE));
    assert!(started.elapsed() >= EARLY);
    assert!(rejected(&proxy, "header_timeout") > before);
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn a_partial_first_head_is_bounded_by_first_byte_timeout() {
    let (_backend, _proxy, addr) = start();
    let started = Instant::now();
    let mut conn = RawConn::connect(addr);
    conn.send(b"GET / HT").expect("send");
    let resp = conn.read_response();
    assert_eq!(resp.status, 408, "{resp:?}");
    assert!(started.elapsed() >= EARLY);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let (_backend, _proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    assert_eq!(conn.read_response().status, 200);
    let idle_from = Instant::now();
    // Not before the 500 ms keep-alive (the 300 ms first-byte limit no longer applies), though
    // the connection is parked 20 ms in: the keep-alive counts from the response, across it.
    assert_closed_on_time(
        &mut conn,
        idle_from,
        Duration::from_millis(500),
        "idle keep-alive",
    );
}

#[test]
fn a_stalled_body_gets_408_and_the_upstream_request_is_aborted() {
    let (backend, proxy, addr) = start();
    let before = rejected(&proxy, "body_timeout");
    let mut conn = RawConn::connect(addr);
    let started = Instant::now();
    conn.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .expect("send");
    let resp = conn.read_response();
    assert_eq!(resp.status, 408, "{resp:?}");
    assert!(resp.closed || conn.wait_closed(LATE));
    assert!(started.elapsed() >= EARLY);
    assert!(rejected(&proxy, "body_timeout") > before);
    // The backend never got the whole body: at most an aborted request without one.
    assert!(backend.requests().iter().all(|r| r.body.len() < 10));
}

#[test]
fn a_slow_body_that_keeps_moving_is_not_cut() {
    let (backend, _proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    conn.send(b"POST /drip HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n")
        .expect("send");
    // 8 bytes 100 ms apart: 800 ms in all, never 300 ms without progress.
    for b in b"abcdefgh" {
        std::thread::sleep(Duration::from_millis(100));
        conn.send(std::slice::from_ref(b)).expect("send");
    }
    let resp = conn.read_response();
    assert_eq!((resp.status, resp.body_text().as_str()), (200, "abcdefgh"));
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn a_client_that_stops_reading_is_closed() {
    const SIZE: usize = 64 * 1024 * 1024;
    let backend = Backend::start(Behavior::fixed(200, Bytes::from(vec![b'z'; SIZE])));
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let before = rejected(&proxy, "slow_read");
    let mut stream = std::net::TcpStream::connect(proxy.addr("public")).expect("connect");
    std::io::Write::write_all(&mut stream, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").expect("send");
    // The scenario itself: a client that reads nothing while the proxy's writes stall.
    let stalled = crate::support::wait_until(crate::support::DEADLINE, || {
        rejected(&proxy, "slow_read") > before
    });
    assert!(stalled, "slow reader never cut off");
    stream
        .set_read_timeout(Some(crate::support::DEADLINE))
        .expect("timeout");
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        assert!(received <= SIZE + 4096, "more than the response?");
    }
    assert!(
        received < SIZE,
        "the whole body arrived: the stall was not cut"
    );
}
