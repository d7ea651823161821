//! The cache's series in a real `/metrics` scrape. It runs alone in its own process
//! (`support::alone`): the recorder is process-wide, so exact counts need no other test beside it.

use crate::support::cache::*;
use crate::support::http_client;
use crate::support::metrics::value;
use http::Method;

#[tokio::test]
async fn cache_metrics_in_a_real_scrape() {
    if !crate::support::alone::in_own_process("cache_metrics::cache_metrics_in_a_real_scrape") {
        return;
    }
    let (backend, proxy) = start(|req, _| match req.uri.path() {
        _ if req.headers.contains_key("if-none-match") => respond(304, &[("etag", "\"e\"")], ""),
        "/nostore" => respond(200, &[("cache-control", "no-store")], "n"),
        "/stale" => respond(
            200,
            &[("cache-control", "max-age=0"), ("etag", "\"e\"")],
            "s",
        ),
        _ => respond(200, &[("cache-control", "max-age=60")], "body"),
    });
    get(&proxy, "/fresh", &[]).await; // miss
    get(&proxy, "/fresh", &[]).await; // hit
    get(&proxy, "/fresh", &[]).await; // hit
    get(&proxy, "/nostore", &[]).await; // uncacheable
    get(&proxy, "/stale", &[]).await; // miss
    get(&proxy, "/stale", &[]).await; // revalidated
    get(&proxy, "/fresh", &[("range", "bytes=0-1")]).await; // bypass
    send(&proxy, Method::POST, "/other", &[]).await; // bypass (method)

    let scrape = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    let count = |result: &str| {
        value(
            &scrape,
            &format!("switchyard_cache_requests_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(count("hit"), Some(2.0), "{scrape}");
    assert_eq!(count("miss"), Some(2.0), "{scrape}");
    assert_eq!(count("uncacheable"), Some(1.0), "{scrape}");
    assert_eq!(count("revalidated"), Some(1.0), "{scrape}");
    assert_eq!(count("bypass"), Some(2.0), "{scrape}");
    assert_eq!(count("stale"), Some(0.0), "{scrape}");
    assert_eq!(
        value(&scrape, "switchyard_cache_entries"),
        Some(2.0),
        "{scrape}"
    );
    let bytes = value(&scrape, "switchyard_cache_bytes").expect("cache_bytes");
    assert!(bytes > 0.0 && bytes < 8192.0, "{bytes}");
    assert_eq!(
        value(&scrape, "switchyard_cache_evictions_total"),
        Some(0.0),
        "{scrape}"
    );
    // Hits count under their route and its cluster like every other request.
    let requests = "switchyard_requests_total{listener=\"public\",route=\"route-1\",cluster=\"origin\",code=\"200\"}";
    assert_eq!(value(&scrape, requests), Some(8.0), "{scrape}");
    // A reload that keeps [cache] keeps the cache, and its gauges with it.
    let text = config(&backend, 1, "debug_headers = true", "");
    std::fs::write(proxy.config_path(), text).expect("write config");
    let reload = http_client::post(&proxy.admin_url("/reload"), "")
        .await
        .expect("reload");
    assert_eq!(reload.status.as_u16(), 200);
    let after = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    assert_eq!(
        value(&after, "switchyard_cache_entries"),
        Some(2.0),
        "{after}"
    );
    for name in [
        "switchyard_cache_requests_total",
        "switchyard_cache_bytes",
        "switchyard_cache_entries",
        "switchyard_cache_evictions_total",
    ] {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
}
