//! DNS discovery end to end, through the real binary pointed (with `SWITCHYARD_DNS_SERVER`) at
//! a DNS server on 127.0.0.1 whose answers the test changes: traffic follows A-record and SRV
//! changes at the record TTL, SRV priorities and weights apply, and a failing server (SERVFAIL,
//! NXDOMAIN) keeps the last good set.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::backend::{Backend, Behavior};
use support::dns::{Answer, DnsServer};
use support::http_client::get;
use support::launcher::BinProcess;

/// How long a DNS change may take to reach traffic: a 1 s TTL, the 1 s floor, and slack for
/// slow machines.
const DNS_DEADLINE: Duration = Duration::from_secs(15);

struct Running {
    process: BinProcess,
    public: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start(dns: &DnsServer, discovery: &str) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\nlistener = \"public\"\ncluster = \"app\"\n\n\
             [clusters.app]\nbalance = \"round_robin\"\ndiscovery = {discovery}\n"
        ),
    )
    .expect("write config");
    let mut command = BinProcess::command(&["run", "-c", config.to_str().expect("utf-8 path")]);
    command.env("SWITCHYARD_DNS_SERVER", dns.addr().to_string());
    let process = BinProcess::spawn_command(command);
    let public = process.wait_for_addr("listening on");
    let admin = process.wait_for_addr("admin API listening on");
    Running {
        process,
        public,
        admin,
        _dir: dir,
    }
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

/// Polls until a batch of requests is served by exactly the backends `names`.
async fn wait_for_backends(url: &str, names: &[&str]) -> Result<(), Vec<String>> {
    let end = Instant::now() + DNS_DEADLINE;
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

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = get(&format!("http://{admin}/metrics"))
        .await
        .expect("scrape")
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric_at_least(admin: SocketAddr, series: &str, value: f64) -> bool {
    let end = Instant::now() + DNS_DEADLINE;
    while Instant::now() < end {
        if metric(admin, series).await >= value {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
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
    let url = format!("http://{}/", proxy.public);
    wait_for_backends(&url, &["one"])
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
    wait_for_backends(&url, &["one", "two"])
        .await
        .expect("second address added");
    dns.set(
        "app.test",
        RecordType::A,
        vec![Answer::A(Ipv4Addr::new(127, 0, 0, 2))],
    );
    wait_for_backends(&url, &["two"])
        .await
        .expect("first address removed");

    let upstreams = get(&format!("http://{}/upstreams", proxy.admin))
        .await
        .expect("upstreams")
        .text();
    assert!(upstreams.contains("\"source\":\"dns\""), "{upstreams}");

    // SERVFAIL, then NXDOMAIN: both counted, traffic stays on the last good answer.
    let errors = "switchyard_discovery_errors_total{cluster=\"app\",source=\"dns\"}";
    let before = metric(proxy.admin, errors).await;
    dns.set_failing(true);
    assert!(wait_metric_at_least(proxy.admin, errors, before + 1.0).await);
    assert_eq!(bodies(&url, 6).await, ["two"; 6]);
    dns.set_failing(false);
    dns.set("app.test", RecordType::A, Vec::new());
    let during = metric(proxy.admin, errors).await;
    assert!(wait_metric_at_least(proxy.admin, errors, during + 1.0).await);
    assert_eq!(bodies(&url, 6).await, ["two"; 6]);

    // The name comes back with another address: traffic follows again.
    dns.set(
        "app.test",
        RecordType::A,
        vec![Answer::A(Ipv4Addr::new(127, 0, 0, 1))],
    );
    wait_for_backends(&url, &["one"]).await.expect("recovery");

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
    wait_for_backends(&url, &["one", "six"])
        .await
        .expect("AAAA added");
    assert!(six.request_count() > 0);
    let updates = "switchyard_discovery_updates_total{cluster=\"app\",source=\"dns\"}";
    assert!(metric(proxy.admin, updates).await >= 4.0);
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
    let url = format!("http://{}/", proxy.public);
    wait_for_backends(&url, &["a"])
        .await
        .expect("preferred priority only");

    // Same priority: both, with the SRV weights.
    dns.set("_http._tcp.app.test", RecordType::SRV, srv(10, 10));
    wait_for_backends(&url, &["a", "b"])
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
    wait_for_backends(&url, &["b"])
        .await
        .expect("priority change");
    proxy.process.terminate();
}
