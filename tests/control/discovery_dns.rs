//! DNS discovery end to end, through the real binary pointed (with `SWITCHYARD_DNS_SERVER`) at
//! a DNS server on 127.0.0.1 whose answers the test changes: traffic follows A-record and SRV
//! changes at the record TTL, SRV priorities and weights apply, and a failing server (SERVFAIL,
//! NXDOMAIN) keeps the last good set.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::dns::{Answer, DnsServer};
use crate::support::http_client::get;
use crate::support::launcher::BinProxy;
use crate::support::metrics::metric;
use crate::support::traffic::{bodies, wait_for_bodies};
use crate::support::wait_until_async;
use hickory_proto::rr::RecordType;

/// How long a DNS change may take to reach traffic: a 1 s TTL, the 1 s floor, and slack for
/// slow machines.
const DNS_DEADLINE: Duration = Duration::from_secs(15);

/// The binary with one route to cluster `app`, round robin over what `discovery` finds, asking
/// `dns` (the test's name server) instead of the system's.
fn start(dns: &DnsServer, discovery: &str) -> BinProxy {
    let toml = ProxyConfig::new([])
        .cluster_lines(&format!(
            "balance = \"round_robin\"\ndiscovery = {discovery}"
        ))
        .toml();
    BinProxy::start_with(&toml, |mut command| {
        command.env("SWITCHYARD_DNS_SERVER", dns.addr().to_string());
        command
    })
}

/// Backends on the same port at 127.0.0.1 and 127.0.0.2 (one `name:port` names both).
fn twin_backends() -> (Backend, Backend) {
    let one = Backend::start(Behavior::fixed(200, "one"));
    let port = one.addr().port();
    let two = Backend::start_at(
        SocketAddr::from(([127, 0, 0, 2], port)),
        None,
        Behavior::fixed(200, "two"),
    );
    (one, two)
}

#[tokio::test]
async fn a_record_changes_move_traffic_and_failures_keep_the_last_set() {
    let (one, two) = twin_backends();
    assert_ne!(one.addr(), two.addr());
    let dns = DnsServer::start(1);
    dns.set(
        "app.test",
        RecordType::A,
        vec![Answer::A(Ipv4Addr::new(127, 0, 0, 1))],
    );
    let proxy = start(
        &dns,
        &format!(
            "{{ dns = \"app.test:{}\", refresh = \"5s\" }}",
            one.addr().port()
        ),
    );
    let url = format!("http://{}/", proxy.addr);
    wait_for_bodies(&url, &["one"], DNS_DEADLINE)
        .await
        .expect("first answer");

    dns.set(
        "app.test",
        RecordType::A,
        vec![
            Answer::A(Ipv4Addr::new(127, 0, 0, 1)),
            Answer::A(Ipv4Addr::new(127, 0, 0, 2)),
        ],
    );
    wait_for_bodies(&url, &["one", "two"], DNS_DEADLINE)
        .await
        .expect("second address added");
    dns.set(
        "app.test",
        RecordType::A,
        vec![Answer::A(Ipv4Addr::new(127, 0, 0, 2))],
    );
    wait_for_bodies(&url, &["two"], DNS_DEADLINE)
        .await
        .expect("first address removed");

    let upstreams = get(&format!("http://{}/upstreams", proxy.admin))
        .await
        .expect("upstreams")
        .text();
    assert!(upstreams.contains("\"source\":\"dns\""), "{upstreams}");

    // SERVFAIL, then NXDOMAIN: both counted, traffic stays on the last good answer.
    let errors = "switchyard_discovery_errors_total{cluster=\"app\",source=\"dns\"}";
    let before = metric(proxy.admin, errors);
    dns.set_failing(true);
    assert!(wait_until_async(DNS_DEADLINE, || metric(proxy.admin, errors) >= before + 1.0).await);
    assert_eq!(bodies(&url, 6).await, ["two"; 6]);
    dns.set_failing(false);
    dns.set("app.test", RecordType::A, Vec::new());
    let during = metric(proxy.admin, errors);
    assert!(wait_until_async(DNS_DEADLINE, || metric(proxy.admin, errors) >= during + 1.0).await);
    assert_eq!(bodies(&url, 6).await, ["two"; 6]);

    // The name comes back with another address: traffic follows again.
    dns.set(
        "app.test",
        RecordType::A,
        vec![Answer::A(Ipv4Addr::new(127, 0, 0, 1))],
    );
    wait_for_bodies(&url, &["one"], DNS_DEADLINE)
        .await
        .expect("recovery");

    // AAAA records count too: an IPv6 address on the same port joins the set.
    let six = Backend::start_at(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, one.addr().port())),
        None,
        Behavior::fixed(200, "six"),
    );
    dns.set(
        "app.test",
        RecordType::AAAA,
        vec![Answer::Aaaa(std::net::Ipv6Addr::LOCALHOST)],
    );
    wait_for_bodies(&url, &["one", "six"], DNS_DEADLINE)
        .await
        .expect("AAAA added");
    assert!(six.request_count() > 0);
    let updates = "switchyard_discovery_updates_total{cluster=\"app\",source=\"dns\"}";
    assert!(metric(proxy.admin, updates) >= 4.0);
    proxy.process.terminate();
}

#[tokio::test]
async fn srv_priority_and_weight_apply_and_changes_move_traffic() {
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let dns = DnsServer::start(1);
    dns.set(
        "host.test",
        RecordType::A,
        vec![Answer::A(Ipv4Addr::new(127, 0, 0, 1))],
    );
    let srv = |pa: u16, pb: u16| {
        vec![
            Answer::Srv(pa, 1, a.addr().port(), "host.test".into()),
            Answer::Srv(pb, 3, b.addr().port(), "host.test".into()),
        ]
    };
    // `a` is preferred (lower priority value); `b` is only a backup.
    dns.set("_http._tcp.app.test", RecordType::SRV, srv(10, 20));
    let proxy = start(&dns, "{ srv = \"_http._tcp.app.test\", refresh = \"5s\" }");
    let url = format!("http://{}/", proxy.addr);
    wait_for_bodies(&url, &["a"], DNS_DEADLINE)
        .await
        .expect("preferred priority only");

    // Same priority: both, with the SRV weights.
    dns.set("_http._tcp.app.test", RecordType::SRV, srv(10, 10));
    wait_for_bodies(&url, &["a", "b"], DNS_DEADLINE)
        .await
        .expect("equal priority");
    let upstreams: serde_json::Value = serde_json::from_str(
        &get(&format!("http://{}/upstreams", proxy.admin))
            .await
            .expect("upstreams")
            .text(),
    )
    .expect("json");
    let endpoints = upstreams["clusters"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    assert!(
        endpoints.iter().all(|e| e["source"] == "srv"),
        "{endpoints:?}"
    );
    let weight_of = |port: u16| {
        endpoints
            .iter()
            .find(|e| e["address"] == format!("127.0.0.1:{port}"))
            .map(|e| e["weight"].clone())
    };
    assert_eq!(weight_of(a.addr().port()), Some(serde_json::json!(1)));
    assert_eq!(weight_of(b.addr().port()), Some(serde_json::json!(3)));

    // `b` becomes the preferred one.
    dns.set("_http._tcp.app.test", RecordType::SRV, srv(30, 5));
    wait_for_bodies(&url, &["b"], DNS_DEADLINE)
        .await
        .expect("priority change");
    proxy.process.terminate();
}
