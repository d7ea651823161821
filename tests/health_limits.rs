//! Cluster limits (`circuit_breaker`) end to end: over a limit the request fails at once with
//! 503 + `retry-after` and is counted in `circuit_rejections_total{cluster,reason}`.

mod support;

use std::time::{Duration, Instant};

use support::backend::{Backend, Behavior};
use support::http_client::HttpClient;
use support::launcher::{Proxy, TestProxy};
use support::{wait_until_async, DEADLINE};

fn start(cluster: &str, backend: &Backend, limits: &str) -> TestProxy {
    Proxy::start_toml(&format!(
        "[runtime]\nworkers = 2\ndrain_timeout = \"1s\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"{cluster}\"\ntimeout = \"30s\"\n\n\
         [clusters.{cluster}]\nendpoints = [\"{}\"]\ncircuit_breaker = {{ {limits} }}\n",
        backend.addr()
    ))
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
    let proxy = start("reqs", &backend, "max_requests = 2");
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
    let proxy = start("pend", &backend, "max_pending = 1");
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
