//! Balancing end to end, through the proxy to real backends: the load-aware balancers starve a
//! slow endpoint, hashing pins a key to one endpoint, and key-less requests still get served.

use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::HttpClient;
use http::{Method, Request};
use http_body_util::Full;

/// The file's config: two workers, cluster `app` of `backends` with `cluster` lines.
fn config(backends: &[&Backend], cluster: &str) -> ProxyConfig {
    ProxyConfig::new(backends.iter().map(|b| b.addr()))
        .workers(2)
        .drain_timeout("5s")
        .cluster_lines(cluster)
}

/// Sends `total` GETs from `concurrency` tasks at once; every one must succeed.
async fn load(url: &str, total: usize, concurrency: usize) {
    let http = HttpClient::http1();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (http, url) = (http.clone(), url.to_owned());
            let share = total / concurrency + usize::from(t < total % concurrency);
            tokio::spawn(async move {
                for _ in 0..share {
                    let reply = http.get(&url).await.expect("reply");
                    assert_eq!(reply.status, 200);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
}

/// Five endpoints answering in 10 ms and one in 100 ms; 400 requests at concurrency 16.
async fn slow_endpoint_share(balance: &str) -> f64 {
    let fast: Vec<Backend> = (0..5)
        .map(|_| Backend::start(Behavior::Delay(Duration::from_millis(10))))
        .collect();
    let slow = Backend::start(Behavior::Delay(Duration::from_millis(100)));
    let mut all: Vec<&Backend> = fast.iter().collect();
    all.push(&slow);
    let proxy = config(&all, &format!("balance = \"{balance}\"")).start();
    load(&proxy.url("public", "/"), 400, 16).await;
    let total: usize = all.iter().map(|b| b.request_count()).sum();
    assert_eq!(total, 400);
    proxy.shutdown();
    let share = slow.request_count() as f64 / total as f64;
    eprintln!("{balance}: slow endpoint share {:.1} %", share * 100.0);
    share
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_starves_a_ten_times_slower_endpoint() {
    let share = slow_endpoint_share("least_request").await;
    assert!(share < 0.10, "slow endpoint got {:.1} %", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_starves_a_ten_times_slower_endpoint() {
    let share = slow_endpoint_share("peak_ewma").await;
    assert!(share < 0.10, "slow endpoint got {:.1} %", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_starves_a_ten_times_slower_endpoint() {
    let share = slow_endpoint_share("least_connections").await;
    assert!(share < 0.10, "slow endpoint got {:.1} %", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_does_not_and_so_the_test_can_fail() {
    // The same traffic under round robin gives the slow endpoint its sixth.
    let share = slow_endpoint_share("round_robin").await;
    assert!(share > 0.15, "slow endpoint got {:.1} %", share * 100.0);
}

fn get_with(url: &str, header: Option<(&str, String)>) -> Request<Full<bytes::Bytes>> {
    let mut req = Request::builder().method(Method::GET).uri(url);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    req.body(Full::default()).expect("request")
}

#[tokio::test]
async fn hashing_pins_each_key_and_serves_key_less_requests() {
    for balance in ["ring_hash", "maglev"] {
        let backends: Vec<Backend> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| Backend::start_named(n, Behavior::fixed(200, *n)))
            .collect();
        let refs: Vec<&Backend> = backends.iter().collect();
        let proxy = config(
            &refs,
            &format!(
                "balance = \"{balance}\"\nhash_on = \"header:x-user-id\"\nbalance_factor = 1.5"
            ),
        )
        .start();
        let http = HttpClient::http1();
        let url = proxy.url("public", "/");
        let mut homes = std::collections::HashSet::new();
        for user in 0..20 {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..5 {
                let req = get_with(&url, Some(("x-user-id", format!("user-{user}"))));
                let reply = http.send(req).await.expect("reply");
                seen.insert(reply.text());
            }
            assert_eq!(seen.len(), 1, "{balance}: user-{user} went to {seen:?}");
            homes.extend(seen);
        }
        assert!(
            homes.len() >= 3,
            "{balance}: 20 keys landed on only {homes:?}"
        );
        // No key: least_request serves it.
        let reply = http.send(get_with(&url, None)).await.expect("reply");
        assert_eq!(reply.status, 200);
        proxy.shutdown();
    }
}
