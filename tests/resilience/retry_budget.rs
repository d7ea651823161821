//! The retry budget under total backend failure (issue 8): backend requests stay within
//! (1 + ratio) × client requests + min_per_sec × seconds.

use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::Proxy;

#[tokio::test]
async fn retries_stay_within_the_budget_when_everything_fails() {
    let a = Backend::start(Behavior::fixed(503, "down"));
    let b = Backend::start(Behavior::fixed(503, "down"));
    let (ratio, min_per_sec) = (0.2_f64, 2_u32);
    let toml = format!(
        "[runtime]\nworkers = 2\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"api\"\nlistener = \"public\"\ncluster = \"app\"\n\
         retry = {{ attempts = 5, backoff = \"1ms\", budget = {{ ratio = {ratio}, min_per_sec = {min_per_sec} }} }}\n\n\
         [clusters.app]\nendpoints = [\"{}\", \"{}\"]\n",
        a.addr(),
        b.addr()
    );
    let proxy = Proxy::start_toml(&toml);
    let client = HttpClient::http1();
    let url = proxy.url("public", "/x");
    let started = Instant::now();
    let mut sent = 0_u32;
    // Bounded both ways: at most 2 s and at most 2,000 requests.
    while started.elapsed() < Duration::from_secs(2) && sent < 2000 {
        let reply = client.get(&url).await.expect("reply");
        assert_eq!(reply.status, 503, "the original failure is returned");
        sent += 1;
    }
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let backend = (a.request_count() + b.request_count()) as f64;
    let bound = (1.0 + ratio) * f64::from(sent) + f64::from(min_per_sec) * seconds + 1.0;
    assert!(
        backend <= bound,
        "{backend} backend requests for {sent} client requests exceed {bound}"
    );
    assert!(
        backend > f64::from(sent),
        "some retries were made ({backend} for {sent})"
    );
    let metrics = crate::support::http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("switchyard_retry_budget_exhausted_total{route=\"api\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_retries_total{route=\"api\",reason=\"gateway_error\"}"));
    proxy.shutdown();
}
