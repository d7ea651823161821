//! Active health checks end to end: a `/healthz` flipping to 503 stops traffic within
//! `interval × unhealthy_threshold` + one interval and traffic returns after recovery; TCP
//! probes follow a backend going away and coming back; panic mode spreads traffic over all
//! endpoints when too few pass, ejected ones included.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::HttpClient;
use crate::support::launcher::TestProxy;
use crate::support::wait_until_check;
use crate::support::{wait_until_async, DEADLINE};

const INTERVAL: Duration = Duration::from_millis(100);
/// Room for scheduling on a busy 2-core CI machine, on top of the bound under test.
const SLACK: Duration = Duration::from_millis(250);

/// The file's config: one route to `cluster`, round robin over `endpoints`, `extra` lines at
/// the end of the cluster's table.
fn config(cluster: &str, endpoints: &[SocketAddr], extra: &str) -> ProxyConfig {
    ProxyConfig::new(endpoints.iter().copied())
        .workers(2)
        .drain_timeout("1s")
        .cluster(cluster)
        .cluster_lines("balance = \"round_robin\"")
        .cluster_lines(extra)
}

/// A backend whose `/healthz` answers the status in `health`; other paths get 200.
fn checked_backend(health: &Arc<AtomicU16>) -> Backend {
    let health = Arc::clone(health);
    Backend::start(Behavior::script(move |req, _| {
        if req.uri.path() == "/healthz" {
            Action::status(health.load(Ordering::Relaxed))
        } else {
            Action::status(200)
        }
    }))
}

/// Requests (not probes) the backend got.
fn traffic(backend: &Backend) -> usize {
    backend
        .requests()
        .iter()
        .filter(|r| r.uri.path() != "/healthz")
        .count()
}

fn healthy(proxy: &TestProxy, cluster: &str, addr: SocketAddr) -> bool {
    proxy
        .handle()
        .shared()
        .registry()
        .get(cluster, addr)
        .is_some_and(|e| e.is_healthy())
}

async fn send(proxy: &TestProxy, n: usize) {
    let http = HttpClient::http1();
    for _ in 0..n {
        let reply = http
            .get(&proxy.url("public", "/work"))
            .await
            .expect("reply");
        assert_eq!(reply.status, 200);
    }
}

#[tokio::test]
async fn failing_healthz_stops_traffic_in_time_and_recovery_brings_it_back() {
    let flipping = Arc::new(AtomicU16::new(200));
    let steady = Arc::new(AtomicU16::new(200));
    let a = checked_backend(&flipping);
    let b = checked_backend(&steady);
    let proxy = config(
        "flip",
        &[a.addr(), b.addr()],
        "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"200ms\", healthy_threshold = 2, unhealthy_threshold = 3 }",
    ).start();
    // Probes run.
    assert!(
        wait_until_async(DEADLINE, || a.request_count() > traffic(&a)
            && b.request_count() > 0)
        .await
    );
    send(&proxy, 10).await;
    assert!(traffic(&a) >= 4, "both endpoints serve while healthy");

    flipping.store(503, Ordering::Relaxed);
    let flipped = Instant::now();
    assert!(wait_until_async(DEADLINE, || !healthy(&proxy, "flip", a.addr())).await);
    let took = flipped.elapsed();
    // The 10 % jitter can stretch each of the intervals.
    let bound = INTERVAL.mul_f64(1.1) * 4 + SLACK;
    assert!(took <= bound, "unhealthy after {took:?}, bound {bound:?}");
    let before = traffic(&a);
    send(&proxy, 10).await;
    assert_eq!(traffic(&a), before, "no traffic to the unhealthy endpoint");

    let view: serde_json::Value = serde_json::from_slice(
        &HttpClient::http1()
            .get(&proxy.admin_url("/upstreams"))
            .await
            .expect("admin")
            .body,
    )
    .expect("json");
    let endpoints = view["clusters"][0]["endpoints"].as_array().expect("array");
    let down = endpoints
        .iter()
        .find(|e| e["address"] == a.addr().to_string())
        .expect("endpoint a");
    assert_eq!(down["healthy"], false);
    assert_eq!(down["trigger"], "health_check");
    assert_eq!(down["last_probe"]["passed"], false);
    assert!(down["last_probe"]["at"].is_string());

    flipping.store(200, Ordering::Relaxed);
    let recovered = Instant::now();
    assert!(wait_until_async(DEADLINE, || healthy(&proxy, "flip", a.addr())).await);
    let took = recovered.elapsed();
    let bound = INTERVAL.mul_f64(1.1) * 3 + SLACK;
    assert!(
        took <= bound,
        "healthy again after {took:?}, bound {bound:?}"
    );
    send(&proxy, 10).await;
    assert!(traffic(&a) > before, "traffic returns");
    proxy.shutdown();
}

#[tokio::test]
async fn tcp_probe_follows_the_listener() {
    let mut a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let addr = a.addr();
    let proxy = config(
        "tcp",
        &[addr, b.addr()],
        "health_check = { kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", healthy_threshold = 1, unhealthy_threshold = 2 }",
    ).start();
    a.stop();
    assert!(wait_until_async(DEADLINE, || !healthy(&proxy, "tcp", addr)).await);
    // With `a` out, every request succeeds on `b` (no 502 from the dead one).
    send(&proxy, 6).await;
    let back = Backend::start_at(addr, None, Behavior::fixed(200, "a again"));
    assert!(wait_until_async(DEADLINE, || healthy(&proxy, "tcp", addr)).await);
    send(&proxy, 6).await;
    assert!(
        back.request_count() > 0,
        "traffic returns to the restarted endpoint"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn panic_mode_spreads_over_all_endpoints() {
    let health: Vec<Arc<AtomicU16>> = (0..4).map(|_| Arc::new(AtomicU16::new(200))).collect();
    let backends: Vec<Backend> = health.iter().map(checked_backend).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let proxy = config(
        "panicky",
        &addrs,
        "panic_threshold = 0.5\nhealth_check = { interval = \"100ms\", timeout = \"200ms\", healthy_threshold = 1, unhealthy_threshold = 1 }",
    ).start();
    let unhealthy = || {
        addrs
            .iter()
            .filter(|a| !healthy(&proxy, "panicky", **a))
            .count()
    };
    // Two of four failing: 50 % pass, not below the threshold — only the healthy two serve.
    health[0].store(500, Ordering::Relaxed);
    health[1].store(500, Ordering::Relaxed);
    assert!(wait_until_async(DEADLINE, || unhealthy() == 2).await);
    let before: Vec<usize> = backends.iter().map(traffic).collect();
    send(&proxy, 12).await;
    let during: Vec<usize> = backends.iter().map(traffic).collect();
    assert_eq!(&during[..2], &before[..2]);
    assert!(!proxy
        .handle()
        .shared()
        .snapshot()
        .cluster("panicky")
        .expect("c")
        .health()
        .panic());

    // Three of four failing: below 50 %, so traffic spreads over all four.
    health[2].store(500, Ordering::Relaxed);
    assert!(wait_until_async(DEADLINE, || unhealthy() == 3).await);
    let snapshot = proxy.handle().shared().snapshot();
    let cluster = snapshot.cluster("panicky").expect("cluster");
    assert!(wait_until_async(DEADLINE, || cluster.health().panic()).await);
    send(&proxy, 20).await;
    let after: Vec<usize> = backends.iter().map(traffic).collect();
    for i in 0..4 {
        assert!(
            after[i] > during[i],
            "endpoint {i} gets traffic in panic mode: {after:?}"
        );
    }
    let metrics = HttpClient::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text();
    assert!(metrics.contains("switchyard_panic_mode{cluster=\"panicky\"} 1"));
    proxy.shutdown();
}

#[tokio::test]
async fn with_every_endpoint_failing_checks_panic_mode_still_reaches_them_ejected_ones_too() {
    // Issue 26: a cluster that has endpoints must not answer 503 because all of them are out.
    // Both fail their probes from the start (panic mode at once); `a` also fails requests until
    // it is ejected, and panic routing must include it even so (Envoy's rule).
    let sick = Arc::new(AtomicU16::new(503));
    let a_answers = Arc::new(AtomicU16::new(503));
    let answers = Arc::clone(&a_answers);
    let a = Backend::start(Behavior::script(move |req, _| {
        if req.uri.path() == "/healthz" {
            Action::status(503)
        } else {
            Action::status(answers.load(Ordering::Relaxed))
        }
    }));
    let b = checked_backend(&sick);
    let proxy = config(
        "allsick",
        &[a.addr(), b.addr()],
        "health_check = { interval = \"100ms\", timeout = \"200ms\", unhealthy_threshold = 1, initial = \"unhealthy\" }\n\
         outlier_detection = { base_time = \"30s\" }",
    ).start();
    let snapshot = proxy.handle().shared().snapshot();
    let cluster = snapshot.cluster("allsick").expect("cluster");
    assert!(
        cluster.health().panic(),
        "no endpoint passes: panic from the start"
    );
    let http = HttpClient::http1();
    let url = proxy.url("public", "/work");
    let registry = proxy.handle().shared().registry();
    let a_state = registry.get("allsick", a.addr()).expect("a");
    let mut ejected = false;
    for _ in 0..40 {
        let reply = http.get(&url).await.expect("reply");
        assert_ne!(reply.text(), "no healthy upstream\n");
        if wait_until_async(Duration::from_millis(100), || {
            a_state.breaker() == switchyard::endpoint::BreakerPhase::Open
        })
        .await
        {
            ejected = true;
            break;
        }
    }
    assert!(ejected, "a's 503 answers eject it");
    assert!(
        traffic(&b) > 0,
        "the other unhealthy endpoint served in panic mode"
    );

    // `a` answers again but stays ejected for 30 s: panic routing still sends it requests.
    a_answers.store(200, Ordering::Relaxed);
    let before = (traffic(&a), traffic(&b));
    send(&proxy, 20).await;
    assert!(
        traffic(&a) > before.0,
        "the ejected endpoint gets traffic in panic mode"
    );
    assert!(traffic(&b) > before.1);

    let view: serde_json::Value = serde_json::from_slice(
        &http
            .get(&proxy.admin_url("/upstreams"))
            .await
            .expect("admin")
            .body,
    )
    .expect("json");
    assert_eq!(view["clusters"][0]["panic_mode"], true, "{view}");
    let endpoints = view["clusters"][0]["endpoints"].as_array().expect("array");
    assert!(endpoints.iter().all(|e| e["healthy"] == false), "{view}");
    let a_view = endpoints
        .iter()
        .find(|e| e["address"] == a.addr().to_string())
        .expect("endpoint a");
    assert_eq!(a_view["breaker"], "open", "{view}");
    proxy.shutdown();
}

#[tokio::test]
async fn initial_unhealthy_holds_until_probes_pass() {
    let up = Arc::new(AtomicU16::new(200));
    let a = checked_backend(&up);
    let proxy = config(
        "initial",
        &[a.addr()],
        // No panic mode, which would otherwise send to the lone unhealthy endpoint anyway.
        // Two passing probes an interval apart (the start-up probe, then the first round). At
        // 100 ms and then at 1 s, a loaded machine let both pass before the first request
        // below, which then found the endpoint healthy; 4 s leaves that request 3.6 s.
        "panic_threshold = 0.0\nhealth_check = { interval = \"4s\", timeout = \"200ms\", healthy_threshold = 2, initial = \"unhealthy\" }",
    ).start();
    // Set before `start` returned: the first request finds no healthy endpoint.
    let reply = HttpClient::http1()
        .get(&proxy.url("public", "/work"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 503);
    assert_eq!(traffic(&a), 0);
    assert!(wait_until_async(DEADLINE, || healthy(&proxy, "initial", a.addr())).await);
    send(&proxy, 3).await;
    assert_eq!(traffic(&a), 3);
    proxy.shutdown();
}

/// The start-up probe of a new cluster and its first round are one interval apart: two
/// back-to-back passes used to meet `healthy_threshold = 2` at once, so `initial = "unhealthy"`
/// held for milliseconds instead of an interval.
#[tokio::test]
async fn the_first_round_comes_one_interval_after_the_start_up_probe() {
    let up = Arc::new(AtomicU16::new(200));
    let a = checked_backend(&up);
    let proxy = config(
        "first_round",
        &[a.addr()],
        "panic_threshold = 0.0\nhealth_check = { path = \"/healthz\", interval = \"30s\", timeout = \"1s\", healthy_threshold = 2, initial = \"unhealthy\" }",
    ).start();
    let probes = || a.request_count() - traffic(&a);
    assert!(
        wait_until_async(DEADLINE, || probes() >= 1).await,
        "no start-up probe"
    );
    // The next round is due 27 s (interval - 10 % jitter) after the start: half a second gives
    // a second probe every chance to show up early and stays far inside that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(probes(), 1, "a second probe right after the start-up one");
    assert!(
        !healthy(&proxy, "first_round", a.addr()),
        "one pass of two made it healthy"
    );
    proxy.shutdown();
}

/// `last_probe.passed` of `addr` in `/upstreams`; `None` while it was never probed (or is not
/// listed).
async fn last_probe(proxy: &TestProxy, addr: SocketAddr) -> Option<bool> {
    let reply = HttpClient::http1()
        .get(&proxy.admin_url("/upstreams"))
        .await
        .expect("admin");
    let view: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    let endpoints = view["clusters"][0]["endpoints"].as_array()?.clone();
    endpoints
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .and_then(|e| e["last_probe"]["passed"].as_bool())
}

#[tokio::test]
async fn an_endpoint_added_by_a_reload_is_probed_at_once() {
    let up = Arc::new(AtomicU16::new(200));
    let (a, b) = (checked_backend(&up), checked_backend(&up));
    // A round every 30 s: after the start-up round, only a probe of the new endpoint at the
    // reload itself can show a result within the bound below.
    let extra = "health_check = { path = \"/healthz\", interval = \"30s\", timeout = \"1s\" }";
    let proxy = config("grown", &[a.addr()], extra).start();
    let probed = wait_until_check(DEADLINE, || async {
        last_probe(&proxy, a.addr()).await == Some(true)
    })
    .await;
    assert!(probed, "the start-up round never probed a");

    let text = config("grown", &[a.addr(), b.addr()], extra).toml();
    let tmp = proxy.config_path().with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, proxy.config_path()).expect("rename config into place");
    let reload = HttpClient::http1()
        .post(&proxy.admin_url("/reload"), "")
        .await
        .expect("POST /reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    let reloaded = Instant::now();
    // Polled until DEADLINE so a failure shows how late it came; asserted against a tighter bound.
    wait_until_check(DEADLINE, || async {
        last_probe(&proxy, b.addr()).await.is_some()
    })
    .await;
    let took = reloaded.elapsed();
    assert_eq!(last_probe(&proxy, b.addr()).await, Some(true), "b probed");
    assert!(
        took <= Duration::from_secs(1),
        "the new endpoint's first probe came {took:?} after the reload"
    );
    assert!(b.requests().iter().any(|r| r.uri.path() == "/healthz"));
    proxy.shutdown();
}
