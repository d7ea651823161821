//! etcd discovery against a real etcd (started by the test on free loopback ports; the test
//! fails with install instructions when `etcd` is missing): put, delete and lease expiry move
//! traffic, a bad value keeps the last good set, an etcd restart mid-test is survived and the
//! watch catches up, and `switchyard register` adds a key that disappears when it exits.

use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::etcd::Etcd;
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::http_client::get;
use crate::support::launcher::{BinProcess, Proxy};
use crate::support::metrics::metric;
use crate::support::traffic::{bodies, wait_for_bodies};
use crate::support::wait_until_async;

/// Lease expiry and reconnect backoff take seconds; generous for slow machines.
const ETCD_DEADLINE: Duration = Duration::from_secs(20);

/// The file's config: round robin over what etcd at `etcd` lists under `prefix`.
fn config(etcd: &Etcd, cluster: &str, prefix: &str) -> ProxyConfig {
    ProxyConfig::new([])
        .cluster(cluster)
        .cluster_lines(&format!(
            "balance = \"round_robin\"\n\
         discovery = {{ etcd = {{ endpoints = [\"{}\"], prefix = \"{prefix}\" }} }}",
            etcd.url()
        ))
}

#[tokio::test]
async fn put_delete_and_lease_expiry_move_traffic() {
    let etcd = Etcd::start();
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let proxy = config(&etcd, "orders", "/services/orders/").start();
    let url = proxy.url("public", "/");
    wait_for_bodies(&url, &["!503"], ETCD_DEADLINE)
        .await
        .expect("empty before any key");

    etcd.put("/services/orders/a", &format!("\"{}\"", a.addr()), None);
    // A key outside the prefix is not an endpoint.
    etcd.put("/services/other/b", &format!("\"{}\"", b.addr()), None);
    wait_for_bodies(&url, &["a"], ETCD_DEADLINE)
        .await
        .expect("put");
    etcd.put(
        "/services/orders/b",
        &format!("{{ \"address\": \"{}\", \"weight\": 2 }}", b.addr()),
        None,
    );
    wait_for_bodies(&url, &["a", "b"], ETCD_DEADLINE)
        .await
        .expect("second put");
    let upstreams = get(&proxy.admin_url("/upstreams"))
        .await
        .expect("upstreams")
        .text();
    assert!(upstreams.contains("\"source\":\"etcd\""), "{upstreams}");

    // A bad value keeps that key's last good endpoint; it is counted as an error.
    let errors = "switchyard_discovery_errors_total{cluster=\"orders\",source=\"etcd\"}";
    etcd.put("/services/orders/b", "not json", None);
    wait_until_async(ETCD_DEADLINE, || metric(proxy.admin_addr(), errors) >= 1.0).await;
    assert!(metric(proxy.admin_addr(), errors) >= 1.0);
    wait_for_bodies(&url, &["a", "b"], ETCD_DEADLINE)
        .await
        .expect("bad value keeps the set");

    etcd.delete("/services/orders/a");
    wait_for_bodies(&url, &["b"], ETCD_DEADLINE)
        .await
        .expect("delete");

    // A key on a lease that is never renewed disappears when the lease expires.
    let lease = etcd.grant(2);
    etcd.put(
        "/services/orders/a",
        &format!("\"{}\"", a.addr()),
        Some(lease),
    );
    wait_for_bodies(&url, &["a", "b"], ETCD_DEADLINE)
        .await
        .expect("leased put");
    wait_for_bodies(&url, &["b"], ETCD_DEADLINE)
        .await
        .expect("lease expiry");
    assert_eq!(
        metric(
            proxy.admin_addr(),
            "switchyard_endpoints{cluster=\"orders\"}"
        ),
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
    let proxy = config(&etcd, "restart", "/svc/restart/").start();
    let url = proxy.url("public", "/");
    etcd.put("/svc/restart/a", &format!("\"{}\"", a.addr()), None);
    wait_for_bodies(&url, &["a"], ETCD_DEADLINE)
        .await
        .expect("first put");

    // etcd down: the watch breaks, errors are counted, traffic keeps the last good set.
    etcd.kill();
    let errors = "switchyard_discovery_errors_total{cluster=\"restart\",source=\"etcd\"}";
    wait_until_async(ETCD_DEADLINE, || metric(proxy.admin_addr(), errors) >= 1.0).await;
    assert!(
        metric(proxy.admin_addr(), errors) >= 1.0,
        "lost watch not reported"
    );
    assert_eq!(bodies(&url, 6).await, ["a"; 6]);

    // Back up, changed at once (possibly before the proxy reconnects): the re-list sees it.
    etcd.restart();
    etcd.put("/svc/restart/b", &format!("\"{}\"", b.addr()), None);
    wait_for_bodies(&url, &["a", "b"], ETCD_DEADLINE)
        .await
        .expect("caught up after restart");
    // And the new watch is live.
    etcd.delete("/svc/restart/a");
    etcd.put("/svc/restart/c", &format!("\"{}\"", c.addr()), None);
    wait_for_bodies(&url, &["b", "c"], ETCD_DEADLINE)
        .await
        .expect("watch resumed");
    proxy.shutdown();
}

/// Issue 26: etcd reached through a relay that starts black-holing (accepts bytes, answers
/// nothing). Without a liveness check the watch waited forever on a stale set and counted no
/// error; now silence past `watch_timeout` is probed, the failure counted, the last good set
/// kept, and once the relay heals the proxy reconnects and sees a new put.
#[tokio::test]
async fn a_black_holed_etcd_is_counted_and_the_watch_recovers() {
    let etcd = Etcd::start();
    let etcd_addr = etcd
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("etcd address");
    let relay = FaultProxy::start(etcd_addr);
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let proxy = Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"hole\"\n\n\
         [clusters.hole]\nbalance = \"round_robin\"\n\
         discovery = {{ etcd = {{ endpoints = [\"{}\"], prefix = \"/svc/hole/\", \
         watch_timeout = \"1s\" }} }}\n",
        relay.url("")
    ));
    let url = proxy.url("public", "/");
    etcd.put("/svc/hole/a", &format!("\"{}\"", a.addr()), None);
    wait_for_bodies(&url, &["a"], ETCD_DEADLINE)
        .await
        .expect("first put");

    let errors = "switchyard_discovery_errors_total{cluster=\"hole\",source=\"etcd\"}";
    let before = metric(proxy.admin_addr(), errors);
    relay.set(Fault::Blackhole);
    wait_until_async(ETCD_DEADLINE, || {
        metric(proxy.admin_addr(), errors) > before
    })
    .await;
    assert!(
        metric(proxy.admin_addr(), errors) > before,
        "a black-holed etcd was not counted within {ETCD_DEADLINE:?}"
    );
    // The last good set serves on meanwhile.
    assert_eq!(bodies(&url, 6).await, ["a"; 6]);

    relay.set(Fault::None);
    etcd.put("/svc/hole/b", &format!("\"{}\"", b.addr()), None);
    wait_for_bodies(&url, &["a", "b"], ETCD_DEADLINE)
        .await
        .expect("the put made after the relay healed is seen");
    proxy.shutdown();
}

#[tokio::test]
async fn register_keeps_a_leased_key_and_deletes_it_on_exit() {
    let etcd = Etcd::start();
    let app = Backend::start(Behavior::fixed(200, "registered"));
    let proxy = config(&etcd, "reg", "/services/reg/").start();
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
    wait_for_bodies(&url, &["registered"], ETCD_DEADLINE)
        .await
        .expect("registered");
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
    wait_for_bodies(&url, &["!503"], ETCD_DEADLINE)
        .await
        .expect("deregistered");
    proxy.shutdown();
}

#[test]
fn the_etcd_example_loads_with_etcd_discovery() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/etcd/switchyard.toml");
    let config = switchyard::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let summary = config.summary();
    assert!(
        summary.contains("discovery etcd /services/orders/"),
        "{summary}"
    );
}
