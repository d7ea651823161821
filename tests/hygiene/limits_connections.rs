//! `max_connections`: excess connections are closed at once, the admin listener still answers,
//! and a normal request succeeds again once connections free up.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;

use crate::support::backend::{Backend, Behavior};
use crate::support::hygiene::{config, rejected};
use crate::support::launcher::Proxy;
use crate::support::raw_client::raw_request;
use crate::support::{wait_until, DEADLINE};

/// Whether the server has closed `stream` (EOF or reset), without blocking.
fn closed_by_server(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn idle_connections_beyond_the_limit_are_closed_at_once() {
    // Each idle connection costs two descriptors here (client and proxy in one process).
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    let (limit, total) = if soft >= 12_000 {
        (1000, 5000)
    } else {
        (50, 200)
    };
    println!("RLIMIT_NOFILE {soft}: {total} idle connections, limit {limit}");

    let backend = Backend::start(Behavior::Echo);
    let tail = format!(
        "[limits]\nmax_connections = {limit}\nfirst_byte_timeout = \"60s\"\nkeepalive_timeout = \"60s\"\n"
    );
    let proxy = Proxy::start_toml(&config(&backend, &tail).replace("workers = 1", "workers = 2"));
    let addr = proxy.addr("public");
    let before = rejected(&proxy, "connection_limit");

    let mut idle: Vec<TcpStream> = (0..total)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let excess = total - limit;
    let settled = wait_until(DEADLINE, || {
        idle.iter().filter(|s| closed_by_server(s)).count() == excess
    });
    let open = idle.iter().filter(|s| !closed_by_server(s)).count();
    assert!(settled, "{open} of {total} still open, want {limit}");
    assert_eq!(open, limit);
    assert!(rejected(&proxy, "connection_limit") >= before + excess as u64);

    // The admin listener is not behind the limit.
    let health = raw_request(
        proxy.admin_addr(),
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.status, 200, "{health:?}");

    // Full: a new client is turned away…
    let refused = raw_request(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(refused.status, 0, "{refused:?}");
    assert!(refused.closed);

    // …until a few idle clients leave (the rest stay connected).
    idle.retain(|s| !closed_by_server(s));
    idle.truncate(limit - 10);
    let served = wait_until(DEADLINE, || {
        raw_request(
            addr,
            b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .status
            == 200
    });
    assert!(served, "no request served after connections were freed");
    assert!(backend.request_count() >= 1);
    assert_eq!(idle.len(), limit - 10, "the other idle clients were kept");
}
