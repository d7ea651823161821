//! The one ejection path end to end, through the proxy to real backends: each trigger ejects,
//! an all-ejected cluster answers 503 + `retry-after` at once, half-open admits exactly
//! `probe_requests`, ejections back off, and `max_percent` holds.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::backend::{Action, Backend, Behavior};
use support::http_client::{HttpClient, HttpResponse};
use support::launcher::{Proxy, TestProxy};
use support::{wait_until_async, DEADLINE};
use switchyard::runtime::BreakerPhase;

fn start(cluster: &str, endpoints: &[SocketAddr], outlier: &str) -> TestProxy {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    Proxy::start_toml(&format!(
        "[runtime]\nworkers = 2\ndrain_timeout = \"1s\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"{cluster}\"\ntimeout = \"2s\"\n\n\
         [clusters.{cluster}]\nbalance = \"round_robin\"\nendpoints = [{}]\n\
         outlier_detection = {{ {outlier} }}\n",
        list.join(", ")
    ))
}

fn phase(proxy: &TestProxy, cluster: &str, addr: SocketAddr) -> BreakerPhase {
    proxy
        .handle()
        .shared()
        .registry()
        .get(cluster, addr)
        .expect("endpoint registered")
        .breaker()
}

async fn get(proxy: &TestProxy) -> HttpResponse {
    HttpClient::http1()
        .get(&proxy.url("public", "/"))
        .await
        .expect("reply")
}

/// Sends requests until the endpoint is ejected; returns how many reached the backend.
async fn eject_by(proxy: &TestProxy, cluster: &str, backend_addr: SocketAddr) -> usize {
    for sent in 1..=50 {
        let _ = get(proxy).await;
        let ejected = wait_until_async(Duration::from_millis(300), || {
            phase(proxy, cluster, backend_addr) == BreakerPhase::Open
        })
        .await;
        if ejected {
            return sent;
        }
    }
    panic!("never ejected");
}

async fn upstreams(proxy: &TestProxy) -> serde_json::Value {
    let reply = HttpClient::http1()
        .get(&proxy.admin_url("/upstreams"))
        .await
        .expect("admin reply");
    serde_json::from_slice(&reply.body).expect("json")
}

async fn assert_fails_fast(proxy: &TestProxy) {
    let started = Instant::now();
    let reply = get(proxy).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.text(), "no healthy upstream\n");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn each_passive_trigger_ejects_and_an_all_ejected_cluster_fails_fast() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let gateway = Backend::start(Behavior::fixed(503, "busy"));
    let server = Backend::start(Behavior::fixed(500, "bug"));
    let reset = Backend::start(Behavior::Reset);
    let cases = [
        ("gw", gateway.addr(), 3, "consecutive_gateway_errors"),
        ("fivexx", server.addr(), 5, "consecutive_5xx"),
        ("connect", dead, 3, "consecutive_gateway_errors"),
        ("reset", reset.addr(), 3, "consecutive_gateway_errors"),
    ];
    for (cluster, addr, expected, trigger) in cases {
        let proxy = start(cluster, &[addr], "base_time = \"30s\"");
        assert_eq!(eject_by(&proxy, cluster, addr).await, expected, "{cluster}");
        assert_fails_fast(&proxy).await;
        let view = upstreams(&proxy).await;
        let endpoint = &view["clusters"][0]["endpoints"][0];
        assert_eq!(endpoint["trigger"], trigger, "{cluster}: {view}");
        assert_eq!(endpoint["breaker"], "open");
        assert_eq!(endpoint["ejections"], 1);
        assert!(endpoint["ejected_until"].is_string(), "{view}");
        let metrics = HttpClient::http1()
            .get(&proxy.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text();
        let series =
            format!("switchyard_circuit_state{{cluster=\"{cluster}\",endpoint=\"{addr}\"}} 2");
        assert!(metrics.contains(&series), "{series} missing");
        proxy.shutdown();
    }
    assert_eq!(
        gateway.request_count(),
        3,
        "nothing reached it once ejected"
    );
    assert_eq!(server.request_count(), 5);
}

#[tokio::test]
async fn failure_rate_over_the_window_ejects() {
    let flaky = Backend::start(Behavior::script(|_, i| {
        Action::status(if i % 2 == 0 { 500 } else { 200 })
    }));
    let proxy = start(
        "rate",
        &[flaky.addr()],
        "consecutive_5xx = 0, consecutive_gateway_errors = 0, failure_rate = 0.5, min_requests = 10, window = \"10s\"",
    );
    assert_eq!(eject_by(&proxy, "rate", flaky.addr()).await, 10);
    let view = upstreams(&proxy).await;
    assert_eq!(
        view["clusters"][0]["endpoints"][0]["trigger"],
        "failure_rate"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn a_success_rate_outlier_is_ejected() {
    let good: Vec<Backend> = (0..3)
        .map(|_| Backend::start(Behavior::fixed(200, "ok")))
        .collect();
    let bad = Backend::start(Behavior::script(|_, i| {
        Action::status(if i % 2 == 0 { 500 } else { 200 })
    }));
    let mut addrs: Vec<SocketAddr> = good.iter().map(Backend::addr).collect();
    addrs.push(bad.addr());
    let proxy = start(
        "outlier",
        &addrs,
        "consecutive_5xx = 0, consecutive_gateway_errors = 0, failure_rate = 1.0, min_requests = 10, success_rate_stdev = 1.0, window = \"2s\"",
    );
    for _ in 0..60 {
        let _ = get(&proxy).await;
    }
    assert!(
        wait_until_async(Duration::from_secs(2), || phase(
            &proxy,
            "outlier",
            bad.addr()
        ) == BreakerPhase::Open)
        .await
    );
    let registry = proxy.handle().shared().registry();
    let trigger = registry
        .get("outlier", bad.addr())
        .and_then(|e| e.health().trigger());
    assert_eq!(trigger.map(|t| t.as_str()), Some("success_rate"));
    for addr in &addrs[..3] {
        assert_eq!(phase(&proxy, "outlier", *addr), BreakerPhase::Closed);
    }
    proxy.shutdown();
}

#[tokio::test]
async fn half_open_admits_exactly_probe_requests_and_ejections_back_off() {
    let backend = Backend::start(Behavior::fixed(503, "down"));
    let proxy = start(
        "breaker",
        &[backend.addr()],
        "base_time = \"300ms\", max_time = \"10s\", probe_requests = 2",
    );
    let addr = backend.addr();
    eject_by(&proxy, "breaker", addr).await;
    let state = proxy
        .handle()
        .shared()
        .registry()
        .get("breaker", addr)
        .expect("state");
    // First ejection: about base_time.
    let ejected_at = Instant::now();
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::HalfOpen).await);
    let first = ejected_at.elapsed();
    // A failing trial re-ejects, for base_time × 2.
    let reply = get(&proxy).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "down", "the trial reached the backend");
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::Open).await);
    let reejected_at = Instant::now();
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::HalfOpen).await);
    let second = reejected_at.elapsed();
    assert!(second > first, "backoff grows: {first:?} then {second:?}");
    assert!(second >= Duration::from_millis(500), "{second:?}");
    assert_eq!(state.ejections(), 2);

    // Half-open: slow successes; of four concurrent requests exactly two are trials.
    backend.set_behavior(Behavior::script(|_, _| {
        Action::Delay(Duration::from_millis(300), Box::new(Action::status(200)))
    }));
    let before = backend.request_count();
    let url = proxy.url("public", "/");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { HttpClient::http1().get(&url).await.expect("reply").status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task").as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503]);
    assert_eq!(backend.request_count() - before, 2);
    // Both trials succeeded: closed again, traffic flows.
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::Closed).await);
    assert_eq!(get(&proxy).await.status, 200);
    proxy.shutdown();
}

#[tokio::test]
async fn max_percent_keeps_part_of_the_cluster_in() {
    let backends: Vec<Backend> = (0..4)
        .map(|_| Backend::start(Behavior::fixed(503, "down")))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let proxy = start("pct", &addrs, "max_percent = 50, base_time = \"30s\"");
    for _ in 0..40 {
        let _ = get(&proxy).await;
    }
    let open = || {
        addrs
            .iter()
            .filter(|a| phase(&proxy, "pct", **a) == BreakerPhase::Open)
            .count()
    };
    assert!(wait_until_async(DEADLINE, || open() == 2).await);
    for _ in 0..20 {
        let _ = get(&proxy).await;
    }
    assert_eq!(open(), 2, "50 % of 4, however many fail");
    proxy.shutdown();
}

#[tokio::test]
async fn a_published_snapshot_keeps_ejections_and_tracks_new_endpoints() {
    let down = Backend::start(Behavior::fixed(503, "down"));
    let later = Backend::start(Behavior::fixed(503, "also down"));
    let outlier = "base_time = \"30s\", max_percent = 100";
    let proxy = start("keep", &[down.addr()], outlier);
    eject_by(&proxy, "keep", down.addr()).await;

    // What a reload (or discovery) does: publish a new snapshot with one more endpoint.
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"keep\"\ntimeout = \"2s\"\n\n\
         [clusters.keep]\nbalance = \"round_robin\"\nendpoints = [\"{}\", \"{}\"]\n\
         outlier_detection = {{ {outlier} }}\n",
        down.addr(),
        later.addr()
    );
    let config =
        switchyard::config::parse(&toml, std::path::Path::new("keep.toml")).expect("config");
    proxy.handle().shared().publish(config);
    assert_eq!(
        phase(&proxy, "keep", down.addr()),
        BreakerPhase::Open,
        "state survives"
    );
    // The health task follows the new snapshot: the new endpoint is tracked and ejectable.
    assert_eq!(eject_by(&proxy, "keep", later.addr()).await, 3);
    assert_eq!(down.request_count(), 3, "the ejected endpoint stayed out");
    proxy.shutdown();
}
