//! The endpoint pool: keep-alive reuse, idle expiry, the idle-close race, connection caps,
//! connect timeouts, exact connection counts, IPv6.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::net::closed_port;
use crate::support::{wait_until_async, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The file's config: one worker, listener on `listen`, `route` and `cluster` lines.
fn config(listen: &str, endpoint: SocketAddr, route: &str, cluster: &str) -> ProxyConfig {
    ProxyConfig::new([endpoint])
        .workers(1)
        .listen(listen)
        .route(route)
        .cluster_lines(cluster)
}

fn state(proxy: &TestProxy, addr: SocketAddr) -> Arc<switchyard::endpoint::EndpointState> {
    proxy
        .handle()
        .shared()
        .registry()
        .get("app", addr)
        .expect("endpoint registered")
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_until_it_idles_out() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let pool = "pool = { idle_timeout = \"300ms\" }";
    let proxy = config("127.0.0.1:0", backend.addr(), "", pool).start();
    let http = HttpClient::http1();
    for _ in 0..20 {
        let reply = http.get(&proxy.url("public", "/")).await.expect("reply");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        backend.connections(),
        1,
        "keep-alive: one upstream connection"
    );
    let endpoint = state(&proxy, backend.addr());
    assert_eq!(endpoint.connections(), 1);
    assert_eq!(endpoint.in_flight(), 0);
    // Past the pool's idle timeout the reaper closes it, and the count follows.
    assert!(wait_until_async(DEADLINE, || endpoint.connections() == 0).await);
    assert!(wait_until_async(DEADLINE, || backend.open_connections() == 0).await);
    let reply = http.get(&proxy.url("public", "/")).await.expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(
        backend.connections(),
        2,
        "an expired connection is never reused"
    );
    proxy.shutdown();
}

/// A keep-alive HTTP/1.1 backend that closes a connection idle for `idle`, like most servers
/// do; answers every request `200 ok`. Returns its address and its connection count.
async fn closing_backend(idle: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    crate::support::tcp_server::bind_counting(move |mut stream| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // One request per loop; ends when the client closes or stays quiet for `idle`.
        for _ in 0..1000 {
            let head_end = loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    break i + 4;
                }
                match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            buf.drain(..head_end + length);
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn posts_just_after_the_backend_idle_close_never_fail() {
    let (addr, accepted) = closing_backend(Duration::from_secs(1)).await;
    // The pool gives up on idle connections before the backend does (DESIGN.md's advice).
    let proxy = config(
        "127.0.0.1:0",
        addr,
        "",
        "pool = { idle_timeout = \"900ms\" }",
    )
    .start();
    let http = HttpClient::http1();
    for i in 0..5 {
        if i > 0 {
            // The interval under test: just past the backend's idle close.
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
        let reply = http
            .post(&proxy.url("public", "/write"), "payload")
            .await
            .expect("reply");
        assert_eq!(reply.status, 200, "POST {i} failed");
        assert_eq!(reply.text(), "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "each POST got a fresh connection"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn the_connection_cap_queues_then_fails_with_503() {
    let backend = Backend::start(Behavior::Delay(Duration::from_millis(1500)));
    let cluster = "connect_timeout = \"300ms\"\npool = { max_connections_per_endpoint = 2 }";
    let proxy = config("127.0.0.1:0", backend.addr(), "", cluster).start();
    let mut calls = Vec::new();
    for _ in 0..3 {
        let target = proxy.url("public", "/");
        calls.push(tokio::spawn(async move { http_client::get(&target).await }));
        // Let each request take its slot in order (the third finds both taken).
        let endpoint = state(&proxy, backend.addr());
        let expected = calls.len().min(2) as u64;
        assert!(wait_until_async(DEADLINE, || endpoint.connections() >= expected).await);
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("task").expect("reply"));
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(codes, [200, 200, 503], "{codes:?}");
    assert_eq!(statuses[2].header("retry-after"), Some("1"));
    assert_eq!(backend.connections(), 2);
    proxy.shutdown();
}

#[tokio::test]
async fn requests_under_the_cap_wait_for_a_free_connection() {
    let backend = Backend::start(Behavior::Delay(Duration::from_millis(50)));
    let cluster = "connect_timeout = \"5s\"\npool = { max_connections_per_endpoint = 1 }";
    let proxy = config("127.0.0.1:0", backend.addr(), "", cluster).start();
    let mut calls = Vec::new();
    for _ in 0..6 {
        let target = proxy.url("public", "/");
        calls.push(tokio::spawn(async move { http_client::get(&target).await }));
    }
    for call in calls {
        assert_eq!(call.await.expect("task").expect("reply").status, 200);
    }
    assert_eq!(
        backend.connections(),
        1,
        "the cap held: one connection, reused"
    );
    proxy.shutdown();
}

/// A listening socket whose accept queue is full: further connects get no SYN-ACK and hang,
/// like a blackholed address. The returned streams keep the queue full.
fn full_backlog() -> (SocketAddr, socket2::Socket, Vec<std::net::TcpStream>) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    // Linux queues backlog + 1 connections; a few more than that is plenty.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
    }
    (addr, socket, fillers)
}

#[tokio::test]
async fn connect_timeout_to_an_unanswering_address_is_502() {
    let (addr, _socket, _fillers) = full_backlog();
    let cluster = "connect_timeout = \"250ms\"";
    let proxy = config("127.0.0.1:0", addr, "timeout = \"10s\"", cluster).start();
    let started = Instant::now();
    let reply = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("reply");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 502);
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "connect_timeout, not the route timeout: {elapsed:?}"
    );
    assert_eq!(state(&proxy, addr).connections(), 0);
    proxy.shutdown();
}

#[tokio::test]
async fn blackholed_endpoint_ends_at_the_route_timeout() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let fault = FaultProxy::start(backend.addr());
    fault.set(Fault::Blackhole);
    let proxy = config("127.0.0.1:0", fault.addr(), "timeout = \"300ms\"", "").start();
    let started = Instant::now();
    let reply = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(backend.request_count(), 0);
    let endpoint = state(&proxy, fault.addr());
    assert_eq!(endpoint.in_flight(), 0);
    // The timed-out connection is dropped, never pooled.
    assert!(wait_until_async(DEADLINE, || endpoint.connections() == 0).await);
    proxy.shutdown();
}

#[tokio::test]
async fn ipv6_listener_and_endpoint() {
    // Required, not optional: CI and the development machines have ::1, and a test that
    // passes without testing anything hides a lost IPv6 path.
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!(
            "this test needs IPv6 loopback (::1 on lo; `ip -6 addr show lo`): bind [::1]:0: {e}"
        );
    }
    let backend = Backend::start_at("[::1]:0".parse().expect("addr"), None, Behavior::Echo);
    let proxy = config("[::1]:0", backend.addr(), "", "").start();
    assert!(proxy.addr("public").is_ipv6());
    let reply = http_client::post(&proxy.url("public", "/v6"), "six")
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "six");
    assert_eq!(backend.request_count(), 1);
    proxy.shutdown();
}

#[tokio::test]
async fn attempts_connections_and_connect_times_reach_the_metrics() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let closed = closed_port();
    let proxy = Proxy::start_toml(&format!(
        "[runtime]\nworkers = 1\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\nmatch = {{ path_prefix = \"/dead\" }}\ncluster = \"dead\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"metered\"\n\n\
         [clusters.metered]\nendpoints = [\"{}\"]\n\n\
         [clusters.dead]\nendpoints = [\"{closed}\"]\n",
        backend.addr()
    ));
    let http = HttpClient::http1();
    for _ in 0..3 {
        assert_eq!(
            http.get(&proxy.url("public", "/"))
                .await
                .expect("reply")
                .status,
            200
        );
    }
    assert_eq!(
        http.get(&proxy.url("public", "/dead"))
            .await
            .expect("reply")
            .status,
        502
    );
    let text = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    let success = format!(
        "switchyard_upstream_requests_total{{cluster=\"metered\",endpoint=\"{}\",outcome=\"success\"}} 3",
        backend.addr()
    );
    let refused = format!(
        "switchyard_upstream_requests_total{{cluster=\"dead\",endpoint=\"{closed}\",outcome=\"connect_failure\"}} 1"
    );
    assert!(has(&success), "{success} not in:\n{text}");
    assert!(has(&refused), "{refused} not in:\n{text}");
    assert!(
        has("switchyard_upstream_connections{cluster=\"metered\"} 1"),
        "{text}"
    );
    assert!(
        has("switchyard_upstream_connect_duration_seconds_count{cluster=\"metered\"} 1"),
        "{text}"
    );
    proxy.shutdown();
}

/// With several workers each keeps its own pool, so the one connection the cap allows may be
/// parked idle in another worker's pool: a request must still get through (the idle connection
/// is closed for it), never wait for a connection nobody uses and end in 503.
#[tokio::test]
async fn the_cap_with_two_workers_frees_idle_connections_of_the_other_worker() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = Proxy::start_toml(&format!(
        "[runtime]\nworkers = 2\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"app\"\n\n\
         [clusters.app]\nendpoints = [\"{}\"]\nconnect_timeout = \"1s\"\n\
         pool = {{ max_connections_per_endpoint = 1, idle_timeout = \"60s\" }}\n",
        backend.addr()
    ));
    let endpoint = state(&proxy, backend.addr());
    // Each call is a fresh client connection, which the kernel hands to either worker by its
    // port hash: with 16 of them, both workers serve some (all on one has odds of 2^-15).
    let mut codes = Vec::new();
    for _ in 0..16 {
        let reply = http_client::get(&proxy.url("public", "/"))
            .await
            .expect("reply");
        codes.push(reply.status.as_u16());
        assert!(endpoint.connections() <= 1, "the cap held");
    }
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
    // The backend notices the close of a handed-over connection on its own thread.
    assert!(
        wait_until_async(DEADLINE, || backend.open_connections() <= 1).await,
        "the cap held at the backend"
    );
    proxy.shutdown();
}
