//! Each fault of the fault proxy, exercised between a client and a backend (or a bare TCP
//! upstream where the fault is about TCP, not HTTP).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::{get_req, read_all};
use crate::support::backend::{Backend, Behavior};
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::http_client;
use crate::support::raw_client::RawConn;
use crate::support::{wait_until, DEADLINE};

#[tokio::test]
async fn fault_none_forwards_and_counts_connections() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = FaultProxy::start(backend.addr());
    for i in 0..3 {
        let resp = http_client::post(&proxy.url("/n"), format!("b{i}"))
            .await
            .expect("post");
        assert_eq!(resp.text(), format!("b{i}"));
    }
    assert_eq!(proxy.connections(), 3);
    assert_eq!(backend.connections(), 3);
    assert_eq!(proxy.fault(), Fault::None);
}

#[tokio::test]
async fn fault_latency_delays_each_direction() {
    let backend = Backend::start(Behavior::fixed(200, "late"));
    let proxy = FaultProxy::start(backend.addr());
    proxy.set(Fault::Latency(Duration::from_millis(200)));
    let started = Instant::now();
    let resp = http_client::get(&proxy.url("/")).await.expect("get");
    assert_eq!(resp.text(), "late");
    // At least one chunk each way, each held 200 ms.
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn fault_bandwidth_caps_throughput() {
    let backend = Backend::start(Behavior::fixed(200, vec![b'x'; 10_000]));
    let proxy = FaultProxy::start(backend.addr());
    proxy.set(Fault::Bandwidth(20_000));
    let started = Instant::now();
    let resp = http_client::get(&proxy.url("/")).await.expect("get");
    assert_eq!(resp.body.len(), 10_000);
    // 10 000 body bytes at 20 000 B/s take at least half a second.
    assert!(
        started.elapsed() >= Duration::from_millis(490),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn fault_reset_resets_new_and_existing_connections() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = FaultProxy::start(backend.addr());
    let mut existing = RawConn::connect(proxy.addr());
    existing.send(&get_req("/")).expect("send");
    assert_eq!(existing.read_response().status, 200);
    let mut existing_raw = TcpStream::connect(proxy.addr()).expect("connect");
    assert!(wait_until(DEADLINE, || proxy.open_connections() == 2));

    proxy.set(Fault::Reset);
    let (data, err) = read_all(&mut existing_raw);
    assert!(data.is_empty());
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
    assert!(existing.wait_closed(DEADLINE));

    // No write first: a write that meets the RST would consume the error and leave EOF.
    let mut fresh = TcpStream::connect(proxy.addr()).expect("connect");
    let (data, err) = read_all(&mut fresh);
    assert!(data.is_empty());
    assert_eq!(err, Some(ErrorKind::ConnectionReset));
}

#[test]
fn fault_half_close_gives_the_upstream_eof_after_the_request() {
    // An upstream that answers only once it sees EOF: it proves the write side was closed.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream_addr = upstream.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = upstream.accept().expect("accept");
        let (got, _) = read_all(&mut conn);
        conn.write_all(format!("got {} bytes", got.len()).as_bytes())
            .expect("reply");
    });
    let proxy = FaultProxy::start(upstream_addr);
    proxy.set(Fault::HalfClose);
    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.write_all(b"hello").expect("write");
    let (reply, err) = read_all(&mut client);
    assert_eq!(err, None);
    assert_eq!(reply, b"got 5 bytes");
    server.join().expect("upstream thread");
}

#[test]
fn fault_blackhole_accepts_and_never_answers() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = FaultProxy::start(backend.addr());
    proxy.set(Fault::Blackhole);
    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.write_all(&get_req("/")).expect("write");
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let err = client.read(&mut [0u8; 64]).expect_err("nothing may arrive");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(proxy.connections(), 1);
    assert_eq!(backend.connections(), 0);
}

#[test]
fn fault_truncate_forwards_only_n_response_bytes() {
    let backend = Backend::start(Behavior::fixed(200, vec![b'y'; 1000]));
    let proxy = FaultProxy::start(backend.addr());
    proxy.set(Fault::Truncate(20));
    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.write_all(&get_req("/")).expect("write");
    let (data, err) = read_all(&mut client);
    assert_eq!(err, None);
    assert_eq!(data.len(), 20);
    assert!(data.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn fault_refuse_closes_the_port_and_reopens_it() {
    let backend = Backend::start(Behavior::fixed(200, "back"));
    let proxy = FaultProxy::start(backend.addr());
    proxy.set(Fault::Refuse);
    let err = TcpStream::connect(proxy.addr()).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    proxy.set(Fault::None);
    let resp = http_client::get(&proxy.url("/")).await.expect("get");
    assert_eq!(resp.text(), "back");
}
