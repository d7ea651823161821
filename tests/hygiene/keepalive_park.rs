//! Parked keep-alive connections: an HTTP/1 connection idle for `PARK_AFTER` (20 ms; 5 ms,
//! `FIRST_PARK_AFTER`, after its first request) gives up
//! its hyper session (and the buffers it holds) but stays open. The next request on it must
//! be served exactly as on a fresh session: bodies, pipelining, refusals, upgrades, the
//! keep-alive limit and shutdown all still apply. (`keepalive_timeout` counted across the park
//! is `hygiene_timeouts::an_idle_keep_alive_connection_is_closed_after_keepalive_timeout`.)
//!
//! One test per scenario, but only `parking_frees_the_session_and_the_next_request_resumes`
//! reads the parked gauge, and it runs alone in its own process (`support::alone`): the
//! recorder is process-wide and other tests of the hygiene binary park too.

use std::time::{Duration, Instant};

use crate::support::hygiene::{limits, start, start_with};
use crate::support::metrics;
use crate::support::raw_client::RawConn;

/// Comfortably past `PARK_AFTER` (20 ms), far below the 500 ms keep-alive of `limits`.
const IDLE: Duration = Duration::from_millis(150);

/// A keep-alive connection that has had one request answered (200), now idle.
fn served_once(addr: std::net::SocketAddr, path: &str) -> RawConn {
    let mut conn = RawConn::connect(addr);
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .expect("send");
    assert_eq!(conn.read_response().status, 200);
    conn
}

/// `switchyard_downstream_connections_parked` as /metrics reports it.
fn parked(proxy: &crate::support::launcher::TestProxy) -> u64 {
    metrics::metric(
        proxy.admin_addr(),
        "switchyard_downstream_connections_parked",
    ) as u64
}

#[test]
fn parking_frees_the_session_and_the_next_request_resumes() {
    if !crate::support::alone::in_own_process(
        "keepalive_park::parking_frees_the_session_and_the_next_request_resumes",
    ) {
        return;
    }
    let (backend, proxy, addr) = start();
    let mut conn = served_once(addr, "/one");
    let parked_now = crate::support::wait_until(crate::support::DEADLINE, || parked(&proxy) == 1);
    assert!(parked_now, "the idle connection was never parked");

    conn.send(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(!resp.closed, "parking must not close the connection");
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(paths, ["/one", "/two"]);

    // Closed by the client while parked: the gauge comes back down.
    drop(conn);
    let unparked = crate::support::wait_until(crate::support::DEADLINE, || parked(&proxy) == 0);
    assert!(unparked, "a closed parked connection is still counted");
}

#[test]
fn a_parked_connection_takes_a_body_and_a_pipelined_pair() {
    let (backend, _proxy, addr) = start();
    let mut conn = served_once(addr, "/");

    std::thread::sleep(IDLE);
    conn.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .expect("send");
    let resp = conn.read_response();
    assert_eq!((resp.status, resp.body_text().as_str()), (200, "hello"));

    std::thread::sleep(IDLE);
    conn.send(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    assert_eq!(conn.read_response().status, 200);
    let second = conn.read_response();
    assert_eq!(second.status, 200, "{second:?}");
    assert!(!second.closed);
    assert_eq!(backend.request_count(), 4);
}

#[test]
fn a_bad_head_after_parking_is_refused_and_never_forwarded() {
    let (backend, _proxy, addr) = start();
    let mut conn = served_once(addr, "/");

    std::thread::sleep(IDLE);
    conn.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    )
    .expect("send");
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.closed || conn.wait_closed(crate::support::DEADLINE));
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn a_keepalive_shorter_than_the_park_delay_closes_without_parking() {
    let (_backend, _proxy, addr) = start_with(&limits("").replace(
        "keepalive_timeout = \"500ms\"",
        "keepalive_timeout = \"10ms\"",
    ));
    let mut conn = served_once(addr, "/");
    assert!(conn.wait_closed(Duration::from_secs(3)), "never closed");
}

#[test]
fn shutdown_closes_parked_connections_at_once() {
    let (_backend, proxy, addr) = start();
    let mut conn = served_once(addr, "/");
    std::thread::sleep(IDLE);
    let started = Instant::now();
    proxy.shutdown();
    // Well under the 2 s drain timeout: nothing was in progress to wait for.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(conn.wait_closed(Duration::from_secs(1)));
}
