//! Shadow traffic (route `mirror`, issue 28): copies reach the shadow cluster byte-exact with
//! `-shadow` on the host, never change, delay or fail the client's answer, never touch the
//! primary cluster's health, follow `percent`, and skip bodies over `max_body`.
//!
//! Each test uses its own route and cluster names: the metrics recorder is process-wide.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::metrics;
use crate::support::net::closed_port;
use crate::support::raw_client::RawConn;
use crate::support::{wait_until, DEADLINE};
use switchyard::wire::Outcome;

/// A proxy with route `NAME` to cluster `NAME-primary` (`primary`) mirroring to cluster
/// `NAME-shadow` (`shadow`) with `mirror = { cluster = ..., MIRROR }`; `route` adds route lines.
fn start(
    name: &str,
    primary: SocketAddr,
    shadow: SocketAddr,
    mirror: &str,
    route: &str,
) -> TestProxy {
    Proxy::start_toml(&format!(
        "[runtime]\nworkers = 1\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"{name}\"\nlistener = \"public\"\ncluster = \"{name}-primary\"\n\
         mirror = {{ cluster = \"{name}-shadow\", {mirror} }}\n{route}\n\n\
         [clusters.{name}-primary]\nendpoints = [\"{primary}\"]\n\
         outlier_detection = {{ consecutive_5xx = 2, consecutive_gateway_errors = 2 }}\n\n\
         [clusters.{name}-shadow]\nendpoints = [\"{shadow}\"]\n\
         outlier_detection = {{ consecutive_5xx = 2, consecutive_gateway_errors = 2 }}\n"
    ))
}

/// `switchyard_mirrored_requests_total` of route `name` with `outcome`.
fn mirrored(proxy: &TestProxy, name: &str, outcome: &str) -> f64 {
    metrics::metric(
        proxy.admin_addr(),
        &format!(
            "switchyard_mirrored_requests_total{{route=\"{name}\",cluster=\"{name}-shadow\",outcome=\"{outcome}\"}}"
        ),
    )
}

/// Every mirrored outcome of route `name`, summed.
fn mirrored_total(proxy: &TestProxy, name: &str) -> f64 {
    metrics::sum(
        &metrics::scrape(proxy.admin_addr()),
        "switchyard_mirrored_requests_total",
        &[&format!("route=\"{name}\"")],
    )
}

/// The primary endpoint saw nothing but successes and is in service.
fn assert_primary_untouched(proxy: &TestProxy, cluster: &str, addr: SocketAddr, served: u64) {
    let state = proxy
        .handle()
        .shared()
        .registry()
        .get(cluster, addr)
        .expect("primary endpoint");
    assert_eq!(state.metrics().count(Outcome::Success), served, "{cluster}");
    for outcome in [
        Outcome::Error5xx,
        Outcome::ConnectFailure,
        Outcome::Reset,
        Outcome::Timeout,
    ] {
        assert_eq!(state.metrics().count(outcome), 0, "{cluster}: {outcome:?}");
    }
    assert!(state.is_healthy(), "{cluster}");
    assert_eq!(state.ejections(), 0, "{cluster}");
}

/// Every byte value, `len` bytes.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[test]
fn the_copy_arrives_byte_exact_with_a_shadow_host_and_its_answer_is_discarded() {
    let primary = Backend::start(Behavior::fixed(200, "primary"));
    let shadow = Backend::start(Behavior::fixed(500, "shadow"));
    let name = "mirror-exact";
    let proxy = start(name, primary.addr(), shadow.addr(), "percent = 100", "");
    let body = binary(20_000);
    let mut conn = RawConn::connect(proxy.addr("public"));

    // A body with a length.
    let mut request = format!(
        "POST /orders?id=7 HTTP/1.1\r\nHost: orders.example:8080\r\nx-test: one\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    conn.send(&request).expect("send");
    let reply = conn.read_response();
    assert_eq!((reply.status, reply.body_text().as_str()), (200, "primary"));

    // A chunked body, in three chunks.
    let mut request =
        b"PUT /chunked HTTP/1.1\r\nHost: orders.example\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for part in body.chunks(7_000) {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    conn.send(&request).expect("send");
    let reply = conn.read_response();
    assert_eq!((reply.status, reply.body_text().as_str()), (200, "primary"));

    // No body.
    conn.send(b"GET /plain HTTP/1.1\r\nHost: orders.example\r\n\r\n")
        .expect("send");
    let reply = conn.read_response();
    assert_eq!((reply.status, reply.body_text().as_str()), (200, "primary"));

    assert!(wait_until(DEADLINE, || shadow.request_count() == 3));
    let copies = shadow.requests();
    let originals = primary.requests();
    assert_eq!(originals.len(), 3);
    let by_path = |list: &[crate::support::backend::RecordedRequest], path: &str| {
        list.iter()
            .find(|r| r.uri.path() == path)
            .cloned()
            .unwrap_or_else(|| panic!("{path} not received"))
    };
    for (path, method, host, sent) in [
        ("/orders", "POST", "orders.example-shadow:8080", &body[..]),
        ("/chunked", "PUT", "orders.example-shadow", &body[..]),
        ("/plain", "GET", "orders.example-shadow", &b""[..]),
    ] {
        let copy = by_path(&copies, path);
        let original = by_path(&originals, path);
        assert_eq!(copy.method.as_str(), method);
        assert_eq!(copy.uri, original.uri, "same target");
        assert_eq!(copy.headers["host"], host);
        assert_ne!(original.headers["host"], host, "the primary keeps the host");
        assert_eq!(copy.body.as_ref(), sent, "{path}: byte-exact copy");
        assert_eq!(original.body.as_ref(), sent, "{path}: primary body");
        // The same head rules: forwarding headers, request id.
        for header in ["x-forwarded-for", "x-request-id", "via"] {
            assert_eq!(
                copy.headers.get(header),
                original.headers.get(header),
                "{path}: {header}"
            );
        }
    }
    assert_eq!(by_path(&copies, "/orders").headers["x-test"], "one");
    assert!(wait_until(DEADLINE, || mirrored(&proxy, name, "5xx") == 3.0));
    // The shadow's own endpoint counts its answers as usual; the primary's are untouched.
    let shadow_state = proxy
        .handle()
        .shared()
        .registry()
        .get("mirror-exact-shadow", shadow.addr())
        .expect("shadow endpoint");
    assert_eq!(shadow_state.metrics().count(Outcome::Error5xx), 3);
    assert_primary_untouched(&proxy, "mirror-exact-primary", primary.addr(), 3);
    proxy.shutdown();
}

/// Sends `n` requests one after another; each must be the primary's 200 well before the
/// shadow's delay (`bound`).
async fn assert_unaffected(proxy: &TestProxy, n: usize, bound: Duration) {
    let client = HttpClient::http1();
    for i in 0..n {
        let started = Instant::now();
        let reply = client
            .post(&proxy.url("public", "/x"), format!("request {i}"))
            .await
            .expect("reply");
        let took = started.elapsed();
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, "primary".into())
        );
        assert!(took < bound, "request {i} took {took:?}");
    }
}

#[tokio::test]
async fn a_slow_shadow_never_delays_the_client_and_times_out_on_its_own() {
    let primary = Backend::start(Behavior::fixed(200, "primary"));
    let shadow = Backend::start(Behavior::Delay(Duration::from_secs(5)));
    let name = "mirror-slow";
    // The route's timeout (2 s) is the shadow's limit too.
    let proxy = start(
        name,
        primary.addr(),
        shadow.addr(),
        "percent = 100",
        "timeout = \"2s\"",
    );
    assert_unaffected(&proxy, 4, Duration::from_millis(1500)).await;
    assert!(
        crate::support::wait_until_async(DEADLINE, || mirrored(&proxy, name, "timeout") == 4.0)
            .await
    );
    assert_primary_untouched(&proxy, "mirror-slow-primary", primary.addr(), 4);
    let shadow_state = proxy
        .handle()
        .shared()
        .registry()
        .get("mirror-slow-shadow", shadow.addr())
        .expect("shadow endpoint");
    assert_eq!(shadow_state.metrics().count(Outcome::Timeout), 4);
    proxy.shutdown();
}

#[tokio::test]
async fn a_failing_or_down_shadow_never_fails_the_client_nor_the_primary() {
    let failing = Backend::start(Behavior::fixed(503, "no"));
    let reset = Backend::start(Behavior::Reset);
    let cases = [
        ("mirror-503", failing.addr(), "5xx"),
        ("mirror-reset", reset.addr(), "error"),
        ("mirror-down", closed_port(), "error"),
    ];
    for (name, shadow, outcome) in cases {
        let primary = Backend::start(Behavior::fixed(200, "primary"));
        let proxy = start(
            name,
            primary.addr(),
            shadow,
            "percent = 100",
            "timeout = \"5s\"",
        );
        assert_unaffected(&proxy, 6, Duration::from_millis(1500)).await;
        assert!(
            crate::support::wait_until_async(DEADLINE, || mirrored(&proxy, name, outcome) == 6.0)
                .await,
            "{name}"
        );
        assert_primary_untouched(&proxy, &format!("{name}-primary"), primary.addr(), 6);
        // The failures are the shadow cluster's.
        let shadow_state = proxy
            .handle()
            .shared()
            .registry()
            .get(&format!("{name}-shadow"), shadow)
            .expect("shadow endpoint");
        let failures: u64 = [
            Outcome::Error5xx,
            Outcome::ConnectFailure,
            Outcome::Reset,
            Outcome::Timeout,
        ]
        .iter()
        .map(|o| shadow_state.metrics().count(*o))
        .sum();
        assert!(
            failures >= 1,
            "{name}: the shadow endpoint counts its failures"
        );
        assert_eq!(shadow_state.metrics().count(Outcome::Success), 0, "{name}");
        proxy.shutdown();
    }
}

#[tokio::test]
async fn ten_percent_of_ten_thousand_requests_are_copied() {
    const REQUESTS: usize = 10_000;
    const TASKS: usize = 20;
    let primary = Backend::start(Behavior::fixed(200, "primary"));
    let shadow = Backend::start(Behavior::fixed(200, "shadow"));
    let name = "mirror-share";
    let proxy = start(name, primary.addr(), shadow.addr(), "percent = 10", "");
    let client = Arc::new(HttpClient::http1());
    let url = proxy.url("public", "/share");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, url) = (Arc::clone(&client), url.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..REQUESTS / TASKS {
                    let reply = client.get(&url).await.expect("reply");
                    ok += usize::from(reply.status == 200);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.expect("task");
    }
    assert_eq!(ok, REQUESTS);
    // Copies finish after their requests: wait for the counters to settle on the shadow's count.
    assert!(
        crate::support::wait_until_async(DEADLINE, || {
            mirrored(&proxy, name, "2xx") as usize == shadow.request_count()
                && mirrored_total(&proxy, name) as usize == shadow.request_count()
        })
        .await
    );
    let copied = shadow.request_count();
    // 10 % +- 1.5 %: five standard deviations of a binomial(10,000, 0.1) either side.
    assert!(
        (850..=1150).contains(&copied),
        "{copied} copies of {REQUESTS}"
    );
    assert_eq!(primary.request_count(), REQUESTS);
    proxy.shutdown();
}

#[test]
fn a_body_over_max_body_is_not_copied() {
    let primary = Backend::start(Behavior::Echo);
    let shadow = Backend::start(Behavior::fixed(200, "shadow"));
    let name = "mirror-big";
    let proxy = start(
        name,
        primary.addr(),
        shadow.addr(),
        "percent = 100, max_body = \"1KiB\"",
        "",
    );
    let mut conn = RawConn::connect(proxy.addr("public"));
    let big = binary(2048);
    // Declared too large: skipped up front.
    let mut request = format!(
        "POST /declared HTTP/1.1\r\nHost: a\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    conn.send(&request).expect("send");
    let reply = conn.read_response();
    assert_eq!((reply.status, reply.body.len()), (200, big.len()));
    // Found too large while streaming (chunked: no length up front).
    let mut request =
        b"POST /streamed HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for part in big.chunks(600) {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    conn.send(&request).expect("send");
    let reply = conn.read_response();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, big, "the primary gets the whole body");
    // Exactly max_body: copied.
    let fits = binary(1024);
    let mut request = format!(
        "POST /fits HTTP/1.1\r\nHost: a\r\ncontent-length: {}\r\n\r\n",
        fits.len()
    )
    .into_bytes();
    request.extend_from_slice(&fits);
    conn.send(&request).expect("send");
    assert_eq!(conn.read_response().status, 200);

    assert!(wait_until(DEADLINE, || mirrored(&proxy, name, "2xx") == 1.0));
    assert_eq!(mirrored(&proxy, name, "skipped_body"), 2.0);
    let copies = shadow.requests();
    assert_eq!(copies.len(), 1, "only the body within max_body");
    assert_eq!(copies[0].uri.path(), "/fits");
    assert_eq!(copies[0].body.as_ref(), &fits[..]);
    proxy.shutdown();
}

#[test]
fn an_abandoned_body_is_not_copied() {
    let primary = Backend::start(Behavior::fixed(200, "primary"));
    let shadow = Backend::start(Behavior::fixed(200, "shadow"));
    let name = "mirror-abandoned";
    let proxy = start(name, primary.addr(), shadow.addr(), "percent = 100", "");
    {
        let mut conn = RawConn::connect(proxy.addr("public"));
        conn.send(b"POST /abandoned HTTP/1.1\r\nHost: a\r\ncontent-length: 100\r\n\r\nonly part")
            .expect("send");
        // The primary is reached (its head went out) before the client goes.
        let registry = proxy.handle().shared().registry();
        let state = || registry.get("mirror-abandoned-primary", primary.addr());
        assert!(wait_until(DEADLINE, || state().is_some_and(|s| s.in_flight() == 1)));
    }
    let registry = proxy.handle().shared().registry();
    let state = registry
        .get("mirror-abandoned-primary", primary.addr())
        .expect("primary");
    assert!(wait_until(DEADLINE, || state.in_flight() == 0));
    // A complete request after it is copied, and is the only copy.
    let mut conn = RawConn::connect(proxy.addr("public"));
    conn.send(b"POST /complete HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\n\r\ndone")
        .expect("send");
    assert_eq!(conn.read_response().status, 200);
    assert!(wait_until(DEADLINE, || mirrored(&proxy, name, "2xx") == 1.0));
    let copies = shadow.requests();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].uri.path(), "/complete");
    assert_eq!(mirrored_total(&proxy, name), 1.0);
    proxy.shutdown();
}

#[tokio::test]
async fn a_retried_request_is_copied_once_and_an_h2_client_body_is_copied_too() {
    let primary = Backend::start(Behavior::Echo);
    let shadow = Backend::start(Behavior::fixed(200, "shadow"));
    let name = "mirror-retried";
    // Two primary endpoints, one refusing connections: round robin sends some first attempts
    // there, and the retry reads the body from the replay buffer the tee feeds.
    let dead = closed_port();
    let proxy = Proxy::start_toml(&format!(
        "[runtime]\nworkers = 1\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"{name}\"\nlistener = \"public\"\ncluster = \"{name}-primary\"\n\
         debug_headers = true\nretry = {{ attempts = 2, on = [\"connect-failure\"] }}\n\
         mirror = {{ cluster = \"{name}-shadow\" }}\n\n\
         [clusters.{name}-primary]\nbalance = \"round_robin\"\n\
         endpoints = [\"{dead}\", \"{}\"]\n\n\
         [clusters.{name}-shadow]\nendpoints = [\"{}\"]\n",
        primary.addr(),
        shadow.addr()
    ));
    let body = binary(30_000);
    let client = HttpClient::http1();
    let mut retried = 0;
    for _ in 0..4 {
        let reply = client
            .post(&proxy.url("public", "/retried"), body.clone())
            .await
            .expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body.as_ref(),
            &body[..],
            "the primary echoes the body"
        );
        retried += usize::from(reply.header("x-switchyard-attempts") == Some("2"));
    }
    assert!(
        retried >= 1,
        "round robin puts some first attempts on the dead endpoint"
    );
    let h2 = HttpClient::h2c()
        .post(&proxy.url("public", "/h2"), body.clone())
        .await
        .expect("h2 reply");
    assert_eq!(h2.status, 200);
    assert!(crate::support::wait_until_async(DEADLINE, || shadow.request_count() == 5).await);
    for copy in shadow.requests() {
        assert_eq!(copy.body.as_ref(), &body[..], "{}: byte-exact", copy.uri);
    }
    assert!(
        crate::support::wait_until_async(DEADLINE, || mirrored(&proxy, name, "2xx") == 5.0).await
    );
    proxy.shutdown();
}

#[tokio::test]
async fn a_hung_shadow_holds_at_most_the_in_flight_bound_and_the_rest_are_dropped() {
    const BOUND: usize = 128; // resilience::mirror::MAX_IN_FLIGHT
    let primary = Backend::start(Behavior::fixed(200, "primary"));
    let shadow = Backend::start(Behavior::Hang);
    let name = "mirror-bound";
    let proxy = start(
        name,
        primary.addr(),
        shadow.addr(),
        "percent = 100",
        "timeout = \"3s\"",
    );
    let client = HttpClient::http1();
    let started = Instant::now();
    for _ in 0..BOUND + 10 {
        let reply = client.get(&proxy.url("public", "/x")).await.expect("reply");
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, "primary".into())
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the client never waits for the hung copies ({:?})",
        started.elapsed()
    );
    assert_eq!(mirrored(&proxy, name, "dropped"), 10.0);
    // The copies in flight end at the route's timeout, which frees their slots.
    assert!(
        crate::support::wait_until_async(DEADLINE, || mirrored(&proxy, name, "timeout")
            == BOUND as f64)
        .await
    );
    let reply = client.get(&proxy.url("public", "/x")).await.expect("reply");
    assert_eq!(reply.status, 200);
    assert!(crate::support::wait_until_async(DEADLINE, || shadow.heads() > BOUND).await);
    assert_eq!(
        mirrored(&proxy, name, "dropped"),
        10.0,
        "a slot was free again"
    );
    assert_primary_untouched(
        &proxy,
        "mirror-bound-primary",
        primary.addr(),
        BOUND as u64 + 11,
    );
    proxy.shutdown();
}
