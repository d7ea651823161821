//! Zone-aware routing (`locality = "prefer_local"`) end to end: three backends in zone `a` (the
//! proxy's), three in `b`. Light load stays in `a`; a slow `a` spills to `b` and traffic comes
//! back once it is fast again; an `a` with two of three endpoints failing their health checks
//! spills about half; hashing keeps each key on one endpoint inside `a`. No request fails
//! during any of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Empty;

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::{metrics, wait_until_check, DEADLINE};

/// Six backends: `a0..a2` (zone a), `b0..b2` (zone b), each answering its name.
fn backends() -> (Vec<Backend>, Vec<Backend>) {
    let start = |zone: &str, i: usize| {
        let name = format!("{zone}{i}");
        Backend::start_named(&name, Behavior::fixed(200, name.clone()))
    };
    (
        (0..3).map(|i| start("a", i)).collect(),
        (0..3).map(|i| start("b", i)).collect(),
    )
}

/// A proxy in zone `a` (`zone = None`: no `[runtime] zone`) with cluster `cluster` over `a`
/// and `b`, plus `lines` in the cluster's table.
fn proxy(
    zone: Option<&str>,
    cluster: &str,
    a: &[Backend],
    b: &[Backend],
    lines: &str,
) -> TestProxy {
    let endpoint = |backend: &Backend, zone: &str| {
        format!("{{ address = \"{}\", zone = \"{zone}\" }}", backend.addr())
    };
    let endpoints: Vec<String> = a
        .iter()
        .map(|x| endpoint(x, "a"))
        .chain(b.iter().map(|x| endpoint(x, "b")))
        .collect();
    let runtime = zone.map_or(String::new(), |z| format!("zone = \"{z}\"\n"));
    Proxy::start_toml(&format!(
        "[runtime]\nworkers = 2\ndrain_timeout = \"5s\"\n{runtime}\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"{cluster}\"\n\n\
         [clusters.{cluster}]\nendpoints = [{}]\n{lines}\n",
        endpoints.join(", ")
    ))
}

/// Requests the backends served, health probes not counted.
fn count(backends: &[Backend]) -> usize {
    backends.iter().map(served).sum()
}

fn served(backend: &Backend) -> usize {
    let requests = backend.requests();
    requests
        .iter()
        .filter(|r| r.uri.path() != "/healthz")
        .count()
}

/// Sends `n` GETs one after another; every one must be a 200.
async fn sequential(url: &str, n: usize) {
    let http = HttpClient::http1();
    for _ in 0..n {
        let reply = http.get(url).await.expect("reply");
        assert_eq!(reply.status, 200, "no request fails");
    }
}

/// Clients that loop GETs until stopped; every reply must be a 200 (checked when joined).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<usize>>,
}

impl Load {
    fn start(url: &str, concurrency: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let http = HttpClient::http1();
        let tasks = (0..concurrency)
            .map(|_| {
                let (http, url, stop) = (http.clone(), url.to_owned(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut sent = 0;
                    // Bounded in time even if the test never stops it.
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < DEADLINE {
                        let reply = http.get(&url).await.expect("reply");
                        assert_eq!(reply.status, 200, "no request fails during the shift");
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for task in self.tasks {
            sent += task.await.expect("client task");
        }
        sent
    }
}

/// Waits (up to `deadline`) until, over one window of `window` picks or more, the share of
/// requests that reached `a` satisfies `ok`; returns the last share seen.
async fn wait_for_share(
    a: &[Backend],
    b: &[Backend],
    deadline: Duration,
    ok: impl Fn(f64) -> bool,
) -> (bool, f64) {
    let started = Instant::now();
    let mut last = f64::NAN;
    while started.elapsed() < deadline {
        let (a0, b0) = (count(a), count(b));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (da, db) = (count(a) - a0, count(b) - b0);
        if da + db < 20 {
            continue;
        }
        last = da as f64 / (da + db) as f64;
        eprintln!(
            "{:>5} ms: zone a took {da} of {} ({last:.2})",
            started.elapsed().as_millis(),
            da + db
        );
        if ok(last) {
            return (true, last);
        }
    }
    (false, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_load_stays_in_the_local_zone() {
    let (a, b) = backends();
    let proxy = proxy(Some("a"), "zl_light", &a, &b, "locality = \"prefer_local\"");
    sequential(&proxy.url("public", "/"), 300).await;
    let local = count(&a);
    assert_eq!(local + count(&b), 300);
    assert!(local >= 297, "{local} of 300 in zone a (>= 99 %)");

    let scrape = metrics::scrape(proxy.admin_addr());
    let picks = |zone: &str| {
        let zone = format!("zone=\"{zone}\"");
        metrics::sum(
            &scrape,
            "switchyard_zone_requests_total",
            &["cluster=\"zl_light\"", &zone],
        )
    };
    assert_eq!(picks("local"), local as f64);
    assert_eq!(picks("remote"), (300 - local) as f64);
    let share = metrics::value(
        &scrape,
        "switchyard_cluster_local_share{cluster=\"zl_light\"}",
    );
    assert_eq!(share, Some(1.0));

    let upstreams: serde_json::Value = serde_json::from_slice(
        &HttpClient::http1()
            .get(&proxy.admin_url("/upstreams"))
            .await
            .expect("/upstreams")
            .body,
    )
    .expect("json");
    let cluster = upstreams["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "zl_light"))
        .expect("cluster listed");
    assert_eq!(cluster["locality"], "prefer_local");
    assert_eq!(cluster["local_share"], 1.0);
    let zones: Vec<&str> = cluster["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["zone"].as_str())
        .collect();
    assert_eq!(zones.iter().filter(|z| **z == "a").count(), 3);
    assert_eq!(zones.iter().filter(|z| **z == "b").count(), 3);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefer_local_or_a_zone_traffic_spreads() {
    // The same traffic, zone-blind: so the test above can fail.
    let (a, b) = backends();
    let off = proxy(Some("a"), "zl_off", &a, &b, "");
    sequential(&off.url("public", "/"), 120).await;
    assert!(count(&b) > 24, "zone b got {} of 120", count(&b));
    off.shutdown();
    // prefer_local without [runtime] zone is a no-op.
    let (a, b) = backends();
    let no_zone = proxy(None, "zl_nozone", &a, &b, "locality = \"prefer_local\"");
    sequential(&no_zone.url("public", "/"), 120).await;
    assert!(count(&b) > 24, "zone b got {} of 120", count(&b));
    no_zone.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_local_zone_spills_and_traffic_returns_after_recovery() {
    let (a, b) = backends();
    let proxy = proxy(Some("a"), "zl_slow", &a, &b, "locality = \"prefer_local\"");
    let url = proxy.url("public", "/");
    for backend in &a {
        backend.set_behavior(Behavior::Delay(Duration::from_millis(100)));
    }
    let load = Load::start(&url, 16);
    // 16 clients against 100 ms endpoints: about 5 in flight per zone-a endpoint, over
    // 2 × (0 + 1); the share steps down every 100 ms.
    let (spilled, share) = wait_for_share(&a, &b, Duration::from_secs(5), |s| s < 0.5).await;
    assert!(
        spilled,
        "zone a still took {share:.2} of the traffic after 5 s"
    );
    let sent = load.stop().await;
    assert!(sent > 0);

    // Recovered: light load comes back to zone a.
    for backend in &a {
        backend.set_behavior(Behavior::fixed(200, "a"));
    }
    let load = Load::start(&url, 1);
    let (back, share) = wait_for_share(&a, &b, Duration::from_secs(6), |s| s > 0.95).await;
    load.stop().await;
    assert!(back, "zone a took only {share:.2} after recovering");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_zone_with_two_of_three_out_spills_about_half() {
    let (a, b) = backends();
    // a1 and a2 fail their health checks while `sick`, but answer requests.
    let sick = Arc::new(AtomicBool::new(true));
    for (i, backend) in a.iter().enumerate().skip(1) {
        probe_fails_while(backend, format!("a{i}"), &sick);
    }
    let proxy = proxy(
        Some("a"),
        "zl_half",
        &a,
        &b,
        "locality = \"prefer_local\"\n\
         health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 1, unhealthy_threshold = 1 }",
    );
    let url = proxy.url("public", "/");
    let load = Load::start(&url, 1);
    // Capacity: one of three local endpoints in service against three remote ones,
    // (1/4) / (1/2) = 0.5 of the picks stay local.
    let (spilled, share) =
        wait_for_share(&a, &b, Duration::from_secs(5), |s| (0.3..0.7).contains(&s)).await;
    assert!(spilled, "zone a took {share:.2}, not about half");
    let gauge = metrics::metric(
        proxy.admin_addr(),
        "switchyard_cluster_local_share{cluster=\"zl_half\"}",
    );
    assert!((gauge - 0.5).abs() < 1e-6, "local share {gauge}");
    // The two out of service get nothing: zone a's half goes to a0.
    let before = served(&a[1]) + served(&a[2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = served(&a[1]) + served(&a[2]) - before;
    assert!(extra < 5, "ejected endpoints got {extra} requests");

    sick.store(false, Ordering::Relaxed);
    let (back, share) = wait_for_share(&a, &b, Duration::from_secs(5), |s| s > 0.95).await;
    load.stop().await;
    assert!(back, "zone a took only {share:.2} after recovering");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_stays_in_the_local_zone_and_keeps_each_key_on_one_endpoint() {
    for balance in ["ring_hash", "maglev"] {
        let (a, b) = backends();
        let cluster = format!("zl_{balance}");
        let proxy = proxy(
            Some("a"),
            &cluster,
            &a,
            &b,
            &format!(
                "locality = \"prefer_local\"\nbalance = \"{balance}\"\nhash_on = \"header:x-user\""
            ),
        );
        let url = proxy.url("public", "/");
        let http = HttpClient::http1();
        let mut owners = std::collections::HashMap::new();
        for round in 0..3 {
            for user in 0..40 {
                let request = Request::get(&url)
                    .header("x-user", format!("user-{user}"))
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let reply = http.send(request).await.expect("reply");
                assert_eq!(reply.status, 200);
                let owner = String::from_utf8_lossy(&reply.body).into_owned();
                assert!(
                    owner.starts_with('a'),
                    "{balance}: user-{user} went to {owner}"
                );
                let first = owners.entry(user).or_insert_with(|| owner.clone());
                assert_eq!(
                    *first, owner,
                    "{balance}: user-{user} moved in round {round}"
                );
            }
        }
        let used: std::collections::HashSet<&String> = owners.values().collect();
        assert!(used.len() > 1, "{balance}: 40 keys over one endpoint only");
        assert_eq!(count(&b), 0);
        proxy.shutdown();
    }
}

/// The local share never sends a pick to an empty set: with no endpoint in the proxy's zone,
/// every request is served by the others (and counted remote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_endpoint_means_all_remote() {
    let (a, b) = backends();
    let proxy = proxy(
        Some("c"),
        "zl_elsewhere",
        &a,
        &b,
        "locality = \"prefer_local\"",
    );
    sequential(&proxy.url("public", "/"), 60).await;
    assert_eq!(count(&a) + count(&b), 60);
    let ok = wait_until_check(DEADLINE, || async {
        let scrape = metrics::scrape(proxy.admin_addr());
        metrics::value(
            &scrape,
            "switchyard_cluster_local_share{cluster=\"zl_elsewhere\"}",
        ) == Some(0.0)
    })
    .await;
    assert!(ok, "local share 0 with no local endpoint");
    let scrape = metrics::scrape(proxy.admin_addr());
    let remote = ["cluster=\"zl_elsewhere\"", "zone=\"remote\""];
    assert_eq!(
        metrics::sum(&scrape, "switchyard_zone_requests_total", &remote),
        60.0
    );
    proxy.shutdown();
}

/// Makes `backend` (named `name`) fail its `/healthz` probes while `sick` holds; requests are
/// answered either way.
fn probe_fails_while(backend: &Backend, name: String, sick: &Arc<AtomicBool>) {
    let sick = Arc::clone(sick);
    backend.set_behavior(Behavior::script(move |request, _| {
        if request.uri.path() == "/healthz" && sick.load(Ordering::Relaxed) {
            Action::status(503)
        } else {
            Action::respond(200, name.clone())
        }
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_panic_mode_the_zone_choice_is_zone_blind_and_never_empty() {
    let (a, b) = backends();
    // Every zone-a endpoint and two of zone b fail their checks: one of six in service is
    // below panic_threshold (0.5), so every endpoint takes traffic again, zone a included.
    let sick = Arc::new(AtomicBool::new(true));
    for (i, backend) in a.iter().enumerate() {
        probe_fails_while(backend, format!("a{i}"), &sick);
    }
    for (i, backend) in b.iter().enumerate().skip(1) {
        probe_fails_while(backend, format!("b{i}"), &sick);
    }
    let proxy = proxy(
        Some("a"),
        "zl_panic",
        &a,
        &b,
        "locality = \"prefer_local\"\n\
         health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 1, unhealthy_threshold = 1 }",
    );
    let load = Load::start(&proxy.url("public", "/"), 2);
    // Zone-blind: three of six endpoints are local, so about half the picks.
    let (blind, share) =
        wait_for_share(&a, &b, Duration::from_secs(5), |s| (0.3..0.7).contains(&s)).await;
    assert!(blind, "zone a took {share:.2} in panic mode");
    let panic = metrics::metric(
        proxy.admin_addr(),
        "switchyard_panic_mode{cluster=\"zl_panic\"}",
    );
    assert_eq!(panic, 1.0);
    let before: Vec<usize> = a.iter().chain(&b).map(served).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<usize> = a.iter().chain(&b).map(served).collect();
    assert!(
        before.iter().zip(&after).all(|(x, y)| y > x),
        "every endpoint serves in panic mode: {before:?} -> {after:?}"
    );
    load.stop().await;
    proxy.shutdown();
}
