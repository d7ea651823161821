//! The one ejection path end to end, through the proxy to real backends: each trigger ejects
//! while the endpoint left in service keeps serving, half-open admits exactly `probe_requests`,
//! ejections back off, `max_percent` holds, and ejection never empties a cluster (a lone
//! endpoint is never ejected; the last one in service stays in). And only the upstream's own
//! failures feed it: a client that breaks, abandons, resets or stalls its request body (HTTP/1.1
//! and HTTP/2) is a 400, 408 or 499 in the access log and metrics, never a failure of the
//! endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::{HttpClient, HttpResponse};
use crate::support::launcher::{BinProxy, Pipe, TestProxy};
use crate::support::metrics;
use crate::support::net::closed_port;
use crate::support::raw_client::{raw_request, RawConn};
use crate::support::{wait_until_async, DEADLINE};
use switchyard::endpoint::BreakerPhase;

/// The file's config: route to `cluster` (2 s timeout), round robin over `endpoints` with
/// `outlier_detection = { OUTLIER }`.
fn config(cluster: &str, endpoints: &[SocketAddr], outlier: &str) -> ProxyConfig {
    ProxyConfig::new(endpoints.iter().copied())
        .workers(2)
        .drain_timeout("1s")
        .cluster(cluster)
        .route("timeout = \"2s\"")
        .cluster_lines("balance = \"round_robin\"")
        .cluster_lines(&format!("outlier_detection = {{ {outlier} }}"))
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

/// Sends requests until `failing` is ejected; returns how many reached it (the requests sent
/// minus those the `good` backends answered: a connect failure leaves no trace elsewhere).
async fn eject_by(
    proxy: &TestProxy,
    cluster: &str,
    failing: SocketAddr,
    good: &[&Backend],
) -> usize {
    let served = || good.iter().map(|b| b.request_count()).sum::<usize>();
    let served_before = served();
    for sent in 1..=50 {
        let before = served();
        let _ = get(proxy).await;
        if served() > before {
            continue;
        }
        let ejected = wait_until_async(Duration::from_millis(300), || {
            phase(proxy, cluster, failing) == BreakerPhase::Open
        })
        .await;
        if ejected {
            return sent - (served() - served_before);
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

/// The `/upstreams` entry of the endpoint at `addr` in the first cluster.
fn endpoint_view(view: &serde_json::Value, addr: SocketAddr) -> serde_json::Value {
    view["clusters"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
        .expect("endpoint listed")
}

#[tokio::test]
async fn each_passive_trigger_ejects_and_the_endpoint_left_serves() {
    let dead = closed_port();
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
        // A second, healthy endpoint: a cluster's last endpoint in service is never ejected.
        let good = Backend::start(Behavior::fixed(200, "ok"));
        let proxy = config(cluster, &[addr, good.addr()], "base_time = \"30s\"").start();
        assert_eq!(
            eject_by(&proxy, cluster, addr, &[&good]).await,
            expected,
            "{cluster}"
        );
        // Every request now goes to the endpoint left in service.
        for _ in 0..4 {
            let reply = get(&proxy).await;
            assert_eq!((reply.status.as_u16(), reply.text()), (200, "ok".into()));
        }
        let view = upstreams(&proxy).await;
        let endpoint = endpoint_view(&view, addr);
        assert_eq!(endpoint["trigger"], trigger, "{cluster}: {view}");
        assert_eq!(endpoint["breaker"], "open");
        assert_eq!(endpoint["ejections"], 1);
        assert!(endpoint["ejected_until"].is_string(), "{view}");
        assert_eq!(view["clusters"][0]["panic_mode"], false, "{view}");
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
async fn a_lone_endpoint_is_never_ejected_so_its_maintenance_page_and_recovery_pass() {
    // Issue 26: with defaults, three 503s from a one-endpoint cluster's origin ejected it and
    // the route answered its own 503 for 30 s, though the origin was back at once.
    let backend = Backend::start(Behavior::script(|_, i| {
        if i < 5 {
            Action::respond(503, "maintenance")
        } else {
            Action::respond(200, "back")
        }
    }));
    let addr = backend.addr();
    let proxy = config("lone", &[addr], "base_time = \"30s\"").start();
    for i in 0..5 {
        let reply = get(&proxy).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (503, "maintenance".into()),
            "request {i} reached the origin"
        );
    }
    // Room for the health task to act on those reports (it must not eject).
    let ejected = wait_until_async(Duration::from_secs(1), || {
        phase(&proxy, "lone", addr) != BreakerPhase::Closed
    })
    .await;
    assert!(!ejected, "a cluster's only endpoint was ejected");
    let reply = get(&proxy).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "back".into()));
    assert_eq!(backend.request_count(), 6);
    let view = upstreams(&proxy).await;
    let endpoint = endpoint_view(&view, addr);
    assert_eq!(endpoint["breaker"], "closed", "{view}");
    assert_eq!(endpoint["ejections"], 0, "{view}");
    proxy.shutdown();
}

#[tokio::test]
async fn a_request_before_the_panic_flag_is_up_still_reaches_the_cluster() {
    // The health task raises the panic flag just after the change that takes the last endpoint
    // out; a request in that moment must take panic routing on its own. Set the breaker as the
    // task would, without telling the task (its window ticks every 10 s here, and a success
    // is not sent to it), so the flag stays down — unless the task was still starting up on a
    // loaded machine, in which case this request meets the flag instead and passes either way.
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let addr = backend.addr();
    let outlier = "base_time = \"30s\", window = \"100s\"";
    let proxy = config("moment", &[addr], outlier).start();
    assert_eq!(get(&proxy).await.status, 200);
    let registry = proxy.handle().shared().registry();
    let state = registry.get("moment", addr).expect("state");
    state.set_breaker(BreakerPhase::Open);
    let reply = get(&proxy).await;
    assert_eq!((reply.status.as_u16(), reply.text()), (200, "ok".into()));
    assert_eq!(backend.request_count(), 2);
    proxy.shutdown();

    // With panic mode off (`panic_threshold = 0`) an endpoint out is out: the proxy's own 503,
    // at once, with `retry-after`.
    let proxy = config("off", &[addr], outlier)
        .cluster_lines("panic_threshold = 0.0\n")
        .start();
    let registry = proxy.handle().shared().registry();
    let state = registry.get("off", addr).expect("state");
    state.set_breaker(BreakerPhase::Open);
    let started = Instant::now();
    let reply = get(&proxy).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.text(), "no healthy upstream\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(backend.request_count(), 2, "nothing reached the backend");
    proxy.shutdown();
}

#[tokio::test]
async fn max_percent_ejects_only_what_it_allows_and_never_the_last_endpoint() {
    // 50 % of three: one ejection, however many fail.
    let bad: Vec<Backend> = (0..2)
        .map(|_| Backend::start(Behavior::fixed(503, "down")))
        .collect();
    let good = Backend::start(Behavior::fixed(200, "ok"));
    let addrs = [bad[0].addr(), bad[1].addr(), good.addr()];
    let proxy = config("third", &addrs, "max_percent = 50, base_time = \"30s\"").start();
    let open = |proxy: &TestProxy, cluster: &str, addrs: &[SocketAddr]| {
        addrs
            .iter()
            .filter(|a| phase(proxy, cluster, **a) == BreakerPhase::Open)
            .count()
    };
    for _ in 0..30 {
        let _ = get(&proxy).await;
    }
    assert!(wait_until_async(DEADLINE, || open(&proxy, "third", &addrs) == 1).await);
    for _ in 0..20 {
        let _ = get(&proxy).await;
    }
    assert_eq!(open(&proxy, "third", &addrs), 1, "one of three at 50 %");
    let view = upstreams(&proxy).await;
    let breakers: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| endpoint_view(&view, *a)["breaker"].clone())
        .collect();
    assert_eq!(
        breakers.iter().filter(|b| **b == "open").count(),
        1,
        "{view}"
    );
    assert_eq!(breakers[2], "closed", "the healthy endpoint: {view}");
    let ejected = addrs[..2]
        .iter()
        .map(|a| endpoint_view(&view, *a))
        .find(|e| e["breaker"] == "open")
        .expect("one ejected");
    assert!(ejected["ejected_until"].is_string(), "{view}");
    assert_eq!(
        view["clusters"][0]["panic_mode"], false,
        "two of three in service"
    );
    proxy.shutdown();

    // 100 % of three, all failing: two go, the last stays in service — and with one of three
    // in service the cluster is in panic, so requests still reach the origins (their own 503
    // answers, not the proxy's "no healthy upstream").
    let down: Vec<Backend> = (0..3)
        .map(|_| Backend::start(Behavior::fixed(503, "down")))
        .collect();
    let addrs: Vec<SocketAddr> = down.iter().map(Backend::addr).collect();
    let proxy = config("all", &addrs, "max_percent = 100, base_time = \"30s\"").start();
    for _ in 0..30 {
        let _ = get(&proxy).await;
    }
    assert!(wait_until_async(DEADLINE, || open(&proxy, "all", &addrs) == 2).await);
    for _ in 0..10 {
        let reply = get(&proxy).await;
        assert_eq!((reply.status.as_u16(), reply.text()), (503, "down".into()));
    }
    assert_eq!(open(&proxy, "all", &addrs), 2, "never the last endpoint");
    let view = upstreams(&proxy).await;
    assert_eq!(view["clusters"][0]["panic_mode"], true, "{view}");
    proxy.shutdown();
}

#[tokio::test]
async fn failure_rate_over_the_window_ejects() {
    let flaky = Backend::start(Behavior::script(|_, i| {
        Action::status(if i % 2 == 0 { 500 } else { 200 })
    }));
    let good = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(
        "rate",
        &[flaky.addr(), good.addr()],
        "consecutive_5xx = 0, consecutive_gateway_errors = 0, failure_rate = 0.5, min_requests = 10, window = \"10s\"",
    ).start();
    assert_eq!(eject_by(&proxy, "rate", flaky.addr(), &[&good]).await, 10);
    let view = upstreams(&proxy).await;
    assert_eq!(
        endpoint_view(&view, flaky.addr())["trigger"],
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
    let proxy = config(
        "outlier",
        &addrs,
        "consecutive_5xx = 0, consecutive_gateway_errors = 0, failure_rate = 1.0, min_requests = 10, success_rate_stdev = 1.0, window = \"2s\"",
    ).start();
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
    // The endpoint left in service (a cluster's last endpoint is never ejected).
    let good = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(
        "breaker",
        &[backend.addr(), good.addr()],
        "base_time = \"300ms\", max_time = \"10s\", probe_requests = 2",
    )
    .start();
    let addr = backend.addr();
    eject_by(&proxy, "breaker", addr, &[&good]).await;
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
    // A failing trial re-ejects, for base_time × 2. Requests alternate: the trial is the first
    // one that reaches the failing endpoint.
    let before = backend.request_count();
    let mut trial = None;
    for _ in 0..10 {
        let reply = get(&proxy).await;
        if backend.request_count() > before {
            trial = Some(reply);
            break;
        }
    }
    let trial = trial.expect("a trial reached the half-open endpoint");
    assert_eq!((trial.status.as_u16(), trial.text()), (503, "down".into()));
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::Open).await);
    let reejected_at = Instant::now();
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::HalfOpen).await);
    let second = reejected_at.elapsed();
    assert!(second > first, "backoff grows: {first:?} then {second:?}");
    assert!(second >= Duration::from_millis(500), "{second:?}");
    assert_eq!(state.ejections(), 2);

    // Half-open: slow successes; of eight concurrent requests (four of which the rotation
    // offers the half-open endpoint first) exactly two are trials, the rest go to the other
    // endpoint.
    backend.set_behavior(Behavior::script(|_, _| {
        Action::Delay(Duration::from_millis(300), Box::new(Action::status(200)))
    }));
    let before = backend.request_count();
    let url = proxy.url("public", "/");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { HttpClient::http1().get(&url).await.expect("reply").status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").as_u16(), 200);
    }
    assert_eq!(backend.request_count() - before, 2);
    // Both trials succeeded: closed again, traffic flows.
    assert!(wait_until_async(DEADLINE, || state.breaker() == BreakerPhase::Closed).await);
    let before = backend.request_count();
    for _ in 0..4 {
        assert_eq!(get(&proxy).await.status, 200);
    }
    assert!(backend.request_count() > before, "back in the rotation");
    proxy.shutdown();
}

#[tokio::test]
async fn max_percent_keeps_part_of_the_cluster_in() {
    let backends: Vec<Backend> = (0..4)
        .map(|_| Backend::start(Behavior::fixed(503, "down")))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let proxy = config("pct", &addrs, "max_percent = 50, base_time = \"30s\"").start();
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
    let good: Vec<Backend> = (0..2)
        .map(|_| Backend::start(Behavior::fixed(200, "ok")))
        .collect();
    let outlier = "base_time = \"30s\", max_percent = 100";
    let proxy = config("keep", &[down.addr(), good[0].addr()], outlier).start();
    eject_by(&proxy, "keep", down.addr(), &[&good[0]]).await;

    // What a reload (or discovery) does: publish a new snapshot with two more endpoints (four
    // in all, so two ejected still leave half in service: no panic mode).
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"keep\"\ntimeout = \"2s\"\n\n\
         [clusters.keep]\nbalance = \"round_robin\"\nendpoints = [\"{}\", \"{}\", \"{}\", \"{}\"]\n\
         outlier_detection = {{ {outlier} }}\n",
        down.addr(),
        good[0].addr(),
        good[1].addr(),
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
    assert_eq!(
        eject_by(&proxy, "keep", later.addr(), &[&good[0], &good[1]]).await,
        3
    );
    assert_eq!(down.request_count(), 3, "the ejected endpoint stayed out");
    proxy.shutdown();
}

/// `switchyard run` with one endpoint, default outlier detection (3 gateway errors in a row
/// eject) and JSON access-log lines, for the attribution tests: a client that breaks its own
/// request must never count against the endpoint.
struct Blamed {
    bin: BinProxy,
    proxy: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
}

impl Blamed {
    /// `route` is appended to the route table, `tail` to the file.
    fn start(backend: SocketAddr, route: &str, tail: &str) -> Self {
        // `tail` may open with cluster keys, so `[log]` comes after it.
        let toml = ProxyConfig::new([backend])
            .workers(1)
            .drain_timeout("1s")
            .route(route)
            .tail(tail)
            .tail("\n[log]\nformat = \"json\"")
            .toml();
        let bin = BinProxy::start(&toml);
        Self {
            proxy: bin.addr,
            admin: bin.admin,
            backend,
            bin,
        }
    }

    fn admin_get(&self, path: &str) -> String {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let response = raw_request(self.admin, request.as_bytes());
        assert_eq!(response.status, 200, "admin {path}: {response:?}");
        response.body_text()
    }

    /// The sum of every `metric` sample whose labels contain all of `labels`.
    fn metric(&self, metric: &str, labels: &[&str]) -> u64 {
        metrics::sum(&metrics::scrape(self.admin), metric, labels) as u64
    }

    /// Attempts at the endpoint that counted as its failure (every outcome but `success`).
    fn endpoint_failures(&self) -> u64 {
        let endpoint = format!("endpoint=\"{}\"", self.backend);
        ["error_5xx", "connect_failure", "reset", "timeout"]
            .iter()
            .map(|outcome| {
                let outcome = format!("outcome=\"{outcome}\"");
                self.metric(
                    "switchyard_upstream_requests_total",
                    &[endpoint.as_str(), outcome.as_str()],
                )
            })
            .sum()
    }

    /// Requests answered (or logged) with `code`, from `switchyard_requests_total`.
    fn requests_with(&self, code: u16) -> u64 {
        let code = format!("code=\"{code}\"");
        self.metric("switchyard_requests_total", &["cluster=\"app\"", &code])
    }

    /// The endpoint is in service: not ejected, breaker closed, and a plain GET reaches it.
    fn assert_in_service(&self, fault: &str) {
        let view: serde_json::Value =
            serde_json::from_str(&self.admin_get("/upstreams")).expect("/upstreams is JSON");
        let endpoint = &view["clusters"][0]["endpoints"][0];
        assert_eq!(endpoint["breaker"], "closed", "after {fault}: {view}");
        assert_eq!(endpoint["ejections"], 0, "after {fault}: {view}");
        let ok = raw_request(
            self.proxy,
            b"GET /after HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(ok.status, 200, "after {fault}: {ok:?}");
    }

    /// Stops the proxy; its access-log lines (JSON).
    fn stop(mut self) -> Vec<serde_json::Value> {
        self.bin.process.terminate();
        assert!(
            self.bin.process.wait_exit(DEADLINE).is_some(),
            "exits on SIGTERM"
        );
        self.bin.process.expect_line("stopped");
        self.bin
            .process
            .output(Pipe::Stderr)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "switchyard::access")
            .collect()
    }
}

/// Access-log lines of `path` with `status`.
fn logged(lines: &[serde_json::Value], path: &str, status: u16) -> usize {
    lines
        .iter()
        .filter(|l| l["path"] == path && l["status"] == status)
        .count()
}

/// How many times each client fault is committed: more than the 3 gateway errors in a row that
/// eject by default.
const FAULTS: usize = 5;

/// Opens an HTTP/1.1 upload of `head` plus `first` body bytes and returns once the proxy has
/// forwarded it (the backend has its head), so the fault that follows hits a
/// request in flight.
fn upload_in_flight(blamed: &Blamed, backend: &Backend, head: &[u8], first: &[u8]) -> RawConn {
    let before = backend.heads();
    let mut conn = RawConn::connect(blamed.proxy);
    conn.send(head).expect("send head");
    conn.send(first).expect("send the first body bytes");
    if !crate::support::wait_until(DEADLINE, || backend.heads() > before) {
        // Typically a 503 `no healthy upstream`: earlier faults ejected the endpoint.
        let answer = conn.read_response();
        panic!(
            "upload {} never reached the backend; the proxy answered {} {:?}",
            before + 1,
            answer.status,
            answer.body_text()
        );
    }
    conn
}

#[test]
fn a_malformed_chunk_from_the_client_is_a_400_and_never_ejects() {
    let backend = Backend::start(Behavior::Echo);
    let blamed = Blamed::start(backend.addr(), "", "");
    for _ in 0..FAULTS {
        let mut conn = upload_in_flight(
            &blamed,
            &backend,
            b"POST /chunks HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
        );
        conn.send(b"zz\r\nnot a chunk size\r\n")
            .expect("send the bad chunk");
        let response = conn.read_response();
        assert_eq!(response.status, 400, "{response:?}");
    }
    blamed.assert_in_service("malformed chunks");
    assert_eq!(
        blamed.endpoint_failures(),
        0,
        "counted against the endpoint"
    );
    assert_eq!(blamed.requests_with(400), FAULTS as u64);
    assert_eq!(blamed.requests_with(502), 0);
    let lines = blamed.stop();
    assert_eq!(logged(&lines, "/chunks", 400), FAULTS, "{lines:#?}");
}

#[test]
fn a_client_hanging_up_mid_upload_is_a_499_and_never_ejects() {
    let backend = Backend::start(Behavior::Echo);
    let blamed = Blamed::start(backend.addr(), "", "");
    for _ in 0..FAULTS {
        let conn = upload_in_flight(
            &blamed,
            &backend,
            b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\n",
            &[b'x'; 1000],
        );
        drop(conn);
    }
    // Every abort is accounted for (logged) before the endpoint is judged.
    assert!(
        crate::support::wait_until(DEADLINE, || blamed.requests_with(499) == FAULTS as u64),
        "499s: {}",
        blamed.requests_with(499)
    );
    blamed.assert_in_service("uploads abandoned mid-body");
    assert_eq!(
        blamed.endpoint_failures(),
        0,
        "counted against the endpoint"
    );
    assert_eq!(blamed.requests_with(502), 0);
    let lines = blamed.stop();
    assert_eq!(logged(&lines, "/upload", 499), FAULTS, "{lines:#?}");
}

#[test]
fn a_client_stalling_its_upload_past_the_route_timeout_is_a_408_and_never_ejects() {
    let backend = Backend::start(Behavior::Echo);
    // The route gives up before the client's own body_read_timeout (30 s): the endpoint was
    // still waiting for the body, so the timeout is the client's.
    let blamed = Blamed::start(backend.addr(), "timeout = \"500ms\"", "");
    for _ in 0..FAULTS {
        let mut conn = upload_in_flight(
            &blamed,
            &backend,
            b"POST /stall HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\n",
            &[b'x'; 1000],
        );
        let response = conn.read_response();
        assert_eq!(response.status, 408, "{response:?}");
    }
    blamed.assert_in_service("stalled uploads");
    assert_eq!(
        blamed.endpoint_failures(),
        0,
        "counted against the endpoint"
    );
    let lines = blamed.stop();
    assert_eq!(logged(&lines, "/stall", 408), FAULTS, "{lines:#?}");
}

/// An h2c connection to the proxy, its driver running on the test's runtime.
async fn h2c(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.expect("ready")
}

/// Opens an h2c upload with part of its body sent and returns once the backend got it.
async fn h2_upload_in_flight(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    backend: &Backend,
    path: &str,
    content_length: Option<u64>,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let before = backend.heads();
    let mut request = http::Request::post(format!("http://app{path}"))
        .body(())
        .expect("request");
    if let Some(length) = content_length {
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length.into());
    }
    let (response, mut body) = send.send_request(request, false).expect("open stream");
    body.send_data(bytes::Bytes::from_static(&[b'x'; 1000]), false)
        .expect("send part of the body");
    if !wait_until_async(DEADLINE, || backend.heads() > before).await {
        // Typically a 503 `no healthy upstream`: earlier faults ejected the endpoint.
        let answer = tokio::time::timeout(DEADLINE, response).await;
        panic!(
            "upload {} never reached the backend; the proxy answered {answer:?}",
            before + 1
        );
    }
    (response, body)
}

#[tokio::test]
async fn an_h2_client_resetting_cutting_short_or_overrunning_its_upload_never_ejects() {
    // Upstream over HTTP/1.1 (the aborted body closes the connection) and over h2c (only the
    // upstream stream is reset, and hyper reports the reset, not the body's error).
    for protocol in ["http1", "h2"] {
        h2_faults_never_eject(protocol).await;
    }
}

/// Per upstream `protocol`, streams that break mid-upload: reset by the client (499), ended
/// before their `content-length` (reset by the proxy before any answer: 499), and bodies
/// over `max_body_bytes` (413).
async fn h2_faults_never_eject(protocol: &'static str) {
    let backend = Backend::start(Behavior::Echo);
    let blamed = Blamed::start(
        backend.addr(),
        "",
        &format!("protocol = \"{protocol}\"\n\n[limits]\nmax_body_bytes = \"4KiB\""),
    );
    let mut send = h2c(blamed.proxy).await;
    for _ in 0..FAULTS {
        let (_response, mut body) =
            h2_upload_in_flight(&mut send, &backend, "/h2-reset", None).await;
        body.send_reset(h2::Reason::CANCEL);
    }
    for _ in 0..FAULTS {
        let (response, mut body) =
            h2_upload_in_flight(&mut send, &backend, "/h2-short", Some(3000)).await;
        body.send_data(bytes::Bytes::new(), true)
            .expect("end the stream early");
        let ended = tokio::time::timeout(DEADLINE, response)
            .await
            .expect("the stream ends");
        assert!(ended.is_err(), "a short body was answered: {ended:?}");
    }
    for _ in 0..FAULTS {
        let (response, mut body) =
            h2_upload_in_flight(&mut send, &backend, "/h2-large", None).await;
        body.send_data(bytes::Bytes::from_static(&[b'y'; 8 * 1024]), true)
            .expect("send past max_body_bytes");
        let response = tokio::time::timeout(DEADLINE, response)
            .await
            .expect("the stream ends")
            .expect("answered");
        assert_eq!(response.status(), 413, "{protocol}");
    }
    let blamed = tokio::task::spawn_blocking(move || {
        assert!(
            crate::support::wait_until(DEADLINE, || blamed.requests_with(499) == 2 * FAULTS as u64),
            "499s: {}",
            blamed.requests_with(499)
        );
        blamed.assert_in_service("h2 uploads reset, cut short or too large");
        assert_eq!(
            blamed.endpoint_failures(),
            0,
            "counted against the endpoint ({protocol})"
        );
        assert_eq!(blamed.requests_with(413), FAULTS as u64);
        assert_eq!(blamed.requests_with(502), 0);
        blamed
    })
    .await
    .expect("checks");
    let lines = tokio::task::spawn_blocking(move || blamed.stop())
        .await
        .expect("stop");
    assert_eq!(logged(&lines, "/h2-reset", 499), FAULTS, "{lines:#?}");
    assert_eq!(logged(&lines, "/h2-short", 499), FAULTS, "{lines:#?}");
    assert_eq!(logged(&lines, "/h2-large", 413), FAULTS, "{lines:#?}");
}

#[tokio::test]
async fn an_h2_upload_that_stalls_ends_after_body_read_timeout_and_never_ejects() {
    let backend = Backend::start(Behavior::Echo);
    // The route timeout is far off: what ends the stream is the body's own limit.
    let blamed = Blamed::start(
        backend.addr(),
        "timeout = \"20s\"",
        "[limits]\nbody_read_timeout = \"1s\"",
    );
    let mut send = h2c(blamed.proxy).await;
    for _ in 0..FAULTS {
        let (response, _body) = h2_upload_in_flight(&mut send, &backend, "/h2-stall", None).await;
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("the stream ends well before the route timeout");
        let waited = started.elapsed();
        let response = ended.expect("answered before the stream ends");
        assert_eq!(response.status(), 408);
        // About body_read_timeout: not at once (the body was merely slow so far), and far
        // below the route timeout. The timer started a little before `started`.
        assert!(
            waited > Duration::from_millis(500) && waited < Duration::from_secs(8),
            "ended after {waited:?} (body_read_timeout 1 s)"
        );
    }
    let blamed = tokio::task::spawn_blocking(move || {
        blamed.assert_in_service("stalled h2 uploads");
        assert_eq!(
            blamed.endpoint_failures(),
            0,
            "counted against the endpoint"
        );
        assert_eq!(
            blamed.metric(
                "switchyard_rejected_requests_total",
                &["reason=\"body_timeout\""]
            ),
            FAULTS as u64
        );
        blamed
    })
    .await
    .expect("checks");
    let lines = tokio::task::spawn_blocking(move || blamed.stop())
        .await
        .expect("stop");
    assert_eq!(logged(&lines, "/h2-stall", 408), FAULTS, "{lines:#?}");
}
