//! etcd discovery against a real etcd (started by the test on free loopback ports; the test
//! fails with install instructions when `etcd` is missing): put, delete and lease expiry move
//! traffic, a bad value keeps the last good set, an etcd restart mid-test is survived and the
//! watch catches up, and `switchyard register` adds a key that disappears when it exits.

mod support;

use std::time::{Duration, Instant};

use support::backend::{Backend, Behavior};
use support::etcd::Etcd;
use support::http_client::get;
use support::launcher::{BinProcess, Proxy, TestProxy};

/// Lease expiry and reconnect backoff take seconds; generous for slow machines.
const ETCD_DEADLINE: Duration = Duration::from_secs(20);

fn start(etcd: &Etcd, cluster: &str, prefix: &str) -> TestProxy {
    Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"{cluster}\"\n\n\
         [clusters.{cluster}]\nbalance = \"round_robin\"\n\
         discovery = {{ etcd = {{ endpoints = [\"{}\"], prefix = \"{prefix}\" }} }}\n",
        etcd.url()
    ))
}

async fn bodies(url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match get(url).await {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => format!("!{}", r.status.as_u16()),
            Err(e) => format!("!{e:?}"),
        });
    }
    out
}

/// Polls until a batch of requests gets exactly `names` (`"!503"` for an empty cluster).
async fn wait_for(url: &str, names: &[&str]) -> Result<(), Vec<String>> {
    let end = Instant::now() + ETCD_DEADLINE;
    loop {
        let got = bodies(url, 12).await;
        if got.iter().all(|b| names.contains(&b.as_str()))
            && names.iter().all(|n| got.iter().any(|b| b == n))
        {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(got);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(proxy: &TestProxy, series: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn put_delete_and_lease_expiry_move_traffic() {
    let etcd = Etcd::start();
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let proxy = start(&etcd, "orders", "/services/orders/");
    let url = proxy.url("public", "/");
    wait_for(&url, &["!503"])
        .await
        .expect("empty before any key");

    etcd.put("/services/orders/a", &format!("\"{}\"", a.addr()), None);
    // A key outside the prefix is not an endpoint.
    etcd.put("/services/other/b", &format!("\"{}\"", b.addr()), None);
    wait_for(&url, &["a"]).await.expect("put");
    etcd.put(
        "/services/orders/b",
        &format!("{{ \"address\": \"{}\", \"weight\": 2 }}", b.addr()),
        None,
    );
    wait_for(&url, &["a", "b"]).await.expect("second put");
    let upstreams = get(&proxy.admin_url("/upstreams"))
        .await
        .expect("upstreams")
        .text();
    assert!(upstreams.contains("\"source\":\"etcd\""), "{upstreams}");

    // A bad value keeps that key's last good endpoint; it is counted as an error.
    let errors = "switchyard_discovery_errors_total{cluster=\"orders\",source=\"etcd\"}";
    etcd.put("/services/orders/b", "not json", None);
    let end = Instant::now() + ETCD_DEADLINE;
    while metric(&proxy, errors).await < 1.0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&proxy, errors).await >= 1.0);
    wait_for(&url, &["a", "b"])
        .await
        .expect("bad value keeps the set");

    etcd.delete("/services/orders/a");
    wait_for(&url, &["b"]).await.expect("delete");

    // A key on a lease that is never renewed disappears when the lease expires.
    let lease = etcd.grant(2);
    etcd.put(
        "/services/orders/a",
        &format!("\"{}\"", a.addr()),
        Some(lease),
    );
    wait_for(&url, &["a", "b"]).await.expect("leased put");
    wait_for(&url, &["b"]).await.expect("lease expiry");
    assert_eq!(
        metric(&proxy, "switchyard_endpoints{cluster=\"orders\"}").await,
        1.0
    );
    proxy.shutdown();
}

#[tokio::test]
async fn an_etcd_restart_keeps_the_set_and_the_watch_catches_up() {
    let mut etcd = Etcd::start();
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let c = Backend::start(Behavior::fixed(200, "c"));
    let proxy = start(&etcd, "restart", "/svc/restart/");
    let url = proxy.url("public", "/");
    etcd.put("/svc/restart/a", &format!("\"{}\"", a.addr()), None);
    wait_for(&url, &["a"]).await.expect("first put");

    // etcd down: the watch breaks, errors are counted, traffic keeps the last good set.
    etcd.kill();
    let errors = "switchyard_discovery_errors_total{cluster=\"restart\",source=\"etcd\"}";
    let end = Instant::now() + ETCD_DEADLINE;
    while metric(&proxy, errors).await < 1.0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(&proxy, errors).await >= 1.0,
        "lost watch not reported"
    );
    assert_eq!(bodies(&url, 6).await, ["a"; 6]);

    // Back up, changed at once (possibly before the proxy reconnects): the re-list sees it.
    etcd.restart();
    etcd.put("/svc/restart/b", &format!("\"{}\"", b.addr()), None);
    wait_for(&url, &["a", "b"])
        .await
        .expect("caught up after restart");
    // And the new watch is live.
    etcd.delete("/svc/restart/a");
    etcd.put("/svc/restart/c", &format!("\"{}\"", c.addr()), None);
    wait_for(&url, &["b", "c"]).await.expect("watch resumed");
    proxy.shutdown();
}

#[tokio::test]
async fn register_keeps_a_leased_key_and_deletes_it_on_exit() {
    let etcd = Etcd::start();
    let app = Backend::start(Behavior::fixed(200, "registered"));
    let proxy = start(&etcd, "reg", "/services/reg/");
    let url = proxy.url("public", "/");
    let address = app.addr().to_string();
    let mut register = BinProcess::spawn(&[
        "register",
        "--etcd",
        &etcd.url(),
        "--service",
        "reg",
        "--address",
        &address,
        "--ttl",
        "2s",
    ]);
    register.expect_line("registered /services/reg/");
    wait_for(&url, &["registered"]).await.expect("registered");
    let keys = etcd.keys("/services/reg/");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].0, format!("/services/reg/{address}"));

    // Kept alive past several TTLs.
    let kept_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < kept_until {
        assert_eq!(etcd.keys("/services/reg/").len(), 1, "lease not kept alive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    register.terminate();
    let status = register.wait_exit(ETCD_DEADLINE).expect("register exits");
    assert!(status.success(), "{status:?}");
    assert!(etcd.keys("/services/reg/").is_empty(), "key left behind");
    wait_for(&url, &["!503"]).await.expect("deregistered");
    proxy.shutdown();
}

#[test]
fn the_etcd_example_loads_with_discovery_active() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/etcd/switchyard.toml");
    let config = switchyard::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.inactive_features().is_empty(),
        "{:?}",
        config.inactive_features()
    );
    let summary = config.summary();
    assert!(
        summary.contains("discovery etcd /services/orders/"),
        "{summary}"
    );
}
