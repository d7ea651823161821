//! Cluster limits (`circuit_breaker`) end to end: over a limit the request fails at once with
//! 503 + `retry-after` and is counted in `circuit_rejections_total{cluster,reason}`.

use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::HttpClient;
use crate::support::launcher::TestProxy;
use crate::support::{wait_until_async, DEADLINE};

/// The file's config: route to `cluster` (30 s timeout), `circuit_breaker = { LIMITS }`.
fn config(cluster: &str, backend: &Backend, limits: &str) -> ProxyConfig {
    ProxyConfig::new([backend.addr()])
        .workers(2)
        .drain_timeout("1s")
        .cluster(cluster)
        .route("timeout = \"30s\"")
        .cluster_lines(&format!("circuit_breaker = {{ {limits} }}"))
}

/// Starts `n` requests that the hanging backend will hold, and waits until it has them all.
async fn hold(proxy: &TestProxy, backend: &Backend, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let url = proxy.url("public", "/");
    let held: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let _ = HttpClient::http1().get(&url).await;
            })
        })
        .collect();
    assert!(wait_until_async(DEADLINE, || backend.request_count() == n).await);
    held
}

async fn rejected_at_once(proxy: &TestProxy, cluster: &str, reason: &str) {
    let started = Instant::now();
    let reply = HttpClient::http1()
        .get(&proxy.url("public", "/"))
        .await
        .expect("reply");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.text(), "upstream overloaded\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    let metrics = HttpClient::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text();
    let series = format!(
        "switchyard_circuit_rejections_total{{cluster=\"{cluster}\",reason=\"{reason}\"}} 1"
    );
    assert!(metrics.contains(&series), "{series} missing");
}

#[tokio::test]
async fn max_requests_two_rejects_the_third_at_once() {
    let backend = Backend::start(Behavior::Hang);
    let proxy = config("reqs", &backend, "max_requests = 2").start();
    let held = hold(&proxy, &backend, 2).await;
    rejected_at_once(&proxy, "reqs", "max_requests").await;
    assert_eq!(
        backend.request_count(),
        2,
        "the third never reached the backend"
    );
    for task in held {
        task.abort();
    }
    proxy.shutdown();
}

#[tokio::test]
async fn max_pending_counts_requests_without_a_response_head() {
    let mut backend = Backend::start(Behavior::Hang);
    let proxy = config("pend", &backend, "max_pending = 1").start();
    let held = hold(&proxy, &backend, 1).await;
    rejected_at_once(&proxy, "pend", "max_pending").await;
    // Once the held request ends (its backend goes away: 502), its slots are given back.
    backend.stop();
    for task in held {
        task.await.expect("held request");
    }
    let snapshot = proxy.handle().shared().snapshot();
    let cluster = snapshot.cluster("pend").expect("cluster");
    assert!(wait_until_async(DEADLINE, || cluster.health().requests() == 0).await);
    proxy.shutdown();
}
