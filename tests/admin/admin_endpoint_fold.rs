//! `[metrics] max_endpoint_series`: past the budget, endpoint series share the label `other`;
//! a label frees when its endpoint leaves, and goes to an endpoint labelled `other`.
//!
//! Runs alone in its own process (`support::alone`): the budget is process-wide (like the
//! recorder it protects), so no other test may create endpoints in that process.

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client;
use crate::support::launcher::Proxy;
use http::StatusCode;

#[tokio::test]
async fn endpoints_beyond_the_budget_are_labelled_other() {
    if !crate::support::alone::in_own_process(
        "admin_endpoint_fold::endpoints_beyond_the_budget_are_labelled_other",
    ) {
        return;
    }
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
    let other_before = second.request_count();

    // The labelled endpoint leaves, a new one comes, in one reload: the freed label goes to an
    // endpoint that exists (the lower address of the two `other` ones), not to nobody.
    let third = Backend::start_named("c", Behavior::Echo);
    let config = std::fs::read_to_string(proxy.config_path()).expect("config");
    let edited = config.replace(&first.addr().to_string(), &third.addr().to_string());
    std::fs::write(proxy.config_path(), edited).expect("rewrite config");
    proxy
        .handle()
        .reloader()
        .reload(switchyard::runtime::Trigger::Admin)
        .await
        .expect("reload");
    for _ in 0..4 {
        let resp = http_client::get(&proxy.url("public", "/"))
            .await
            .expect("request");
        assert_eq!(resp.status, StatusCode::OK);
    }
    let scrape = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    assert!(
        !scrape.contains(&first.addr().to_string()),
        "the removed endpoint's series are gone:\n{scrape}"
    );
    let (promoted, folded) = if second.addr() < third.addr() {
        (second, &third)
    } else {
        (&third, second)
    };
    let own = format!("cluster=\"fold\",endpoint=\"{}\"", promoted.addr());
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("switchyard_endpoint_healthy{") && l.contains(&own)),
        "{own} has its own label:\n{scrape}"
    );
    assert!(!scrape.contains(&folded.addr().to_string()), "{scrape}");
    // `other` counted `second` until its promotion; it never goes down.
    let other = scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "switchyard_upstream_requests_total{cluster=\"fold\",endpoint=\"other\",outcome=\"success\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    assert!(other >= other_before, "{other} < {other_before}:\n{scrape}");
}
