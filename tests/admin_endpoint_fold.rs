//! `[metrics] max_endpoint_series`: past the budget, endpoint series share the label `other`.
//!
//! Its own test binary: the budget is process-wide (like the recorder it protects), so no other
//! test may create endpoints in this process.

mod support;

use http::StatusCode;
use support::backend::{Backend, Behavior};
use support::http_client;
use support::launcher::Proxy;

#[tokio::test]
async fn endpoints_beyond_the_budget_are_labelled_other() {
    let a = Backend::start_named("a", Behavior::Echo);
    let b = Backend::start_named("b", Behavior::Echo);
    let (first, second) = if a.addr() < b.addr() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let proxy = Proxy::start_toml(&format!(
        r#"
[metrics]
max_endpoint_series = 1

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
cluster = "fold"

[clusters.fold]
balance = "round_robin"
endpoints = ["{}", "{}"]
"#,
        first.addr(),
        second.addr()
    ));
    for _ in 0..4 {
        let resp = http_client::get(&proxy.url("public", "/"))
            .await
            .expect("request");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert!(first.request_count() > 0 && second.request_count() > 0);

    let scrape = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    let line = |endpoint: &str| {
        format!(
            "switchyard_upstream_requests_total{{cluster=\"fold\",endpoint=\"{endpoint}\",outcome=\"success\"}} {}",
            if endpoint == "other" { second.request_count() } else { first.request_count() }
        )
    };
    // Snapshots list endpoints by address, so the lower address took the one labelled series.
    assert!(
        scrape.contains(&line(&first.addr().to_string())),
        "{scrape}"
    );
    assert!(scrape.contains(&line("other")), "{scrape}");
    assert!(!scrape.contains(&second.addr().to_string()), "{scrape}");
}
