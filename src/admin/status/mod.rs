//! The status page (admin `GET /`) and the `GET /stats` summary it draws its charts from.
//!
//! The page is one self-contained HTML file (inline CSS and JS, no external asset, compiled in
//! with `include_str!`) that polls the admin JSON documents — `/config`, `/upstreams`,
//! `/mesh/members`, `/stats` — every two seconds and renders listeners and routes, clusters
//! with each endpoint's health, ejection, breaker, in-flight and EWMA, per-route and
//! per-cluster request rate and p50/p99 sparklines, the cache hit ratio and mesh members. Being
//! a view over the same JSON an operator or a script reads, it can never show something the
//! API does not.
//!
//! The rings behind the charts are recorded by the request path, so they live below it, in
//! [`crate::telemetry::stats`].

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::state::Snapshot;

/// The status page, served as is.
pub const PAGE: &str = include_str!("page.html");

/// `Content-Security-Policy` of the page: nothing outside the admin listener may load, which
/// keeps the page self-contained by construction (a CDN link would simply fail in tests).
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

/// `GET /stats`: the snapshot's route and cluster rings, plus the cache's hit ratio read from
/// `rendered` (the Prometheus text of `switchyard_cache_requests_total`): `null` without
/// `[cache]` (the page shows "cache off"), a `null` ratio while the cache has seen no request.
pub fn stats(snapshot: &Snapshot, rendered: Option<&str>) -> Value {
    let now = SystemTime::now();
    let mut view = snapshot.stats().view(now);
    view["now"] = json!(crate::wire::time::rfc3339(now));
    view["cache"] = match snapshot.config().cache {
        Some(_) => rendered
            .and_then(cache)
            .unwrap_or_else(|| json!({ "hit_ratio": null, "requests": {} })),
        None => Value::Null,
    };
    view
}

/// The cache's request counts by `result`, and hits over all of them. Read from the scrape
/// text rather than from the cache itself so `/stats` shows exactly what `/metrics` does (and,
/// like `/metrics`, counts every proxy of a process together).
fn cache(rendered: &str) -> Option<Value> {
    const PREFIX: &str = "switchyard_cache_requests_total{";
    let mut results = serde_json::Map::new();
    let mut total = 0.0;
    for line in rendered.lines().filter(|l| l.starts_with(PREFIX)) {
        let (labels, value) = line[PREFIX.len()..].split_once("} ")?;
        let result = labels
            .split(',')
            .find_map(|l| l.strip_prefix("result=\""))
            .and_then(|l| l.strip_suffix('"'))?;
        let count: f64 = value.trim().parse().ok()?;
        total += count;
        results.insert(result.to_owned(), json!(count));
    }
    if total <= 0.0 {
        return None;
    }
    let hits = results.get("hit").and_then(Value::as_f64).unwrap_or(0.0);
    Some(json!({ "requests": results, "hit_ratio": hits / total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ratio_comes_from_the_scrape() {
        let text = "# HELP x\nswitchyard_cache_requests_total{result=\"hit\"} 3\n\
                    switchyard_cache_requests_total{result=\"miss\"} 1\nother 5\n";
        let v = cache(text).expect("cache on");
        assert_eq!(v["hit_ratio"], 0.75);
        assert_eq!(v["requests"]["miss"], 1.0);
        assert!(cache("switchyard_requests_total{code=\"200\"} 4\n").is_none());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "<link", "src=\""] {
            assert!(!PAGE.contains(needle), "status page references {needle}");
        }
    }
}
