//! What the `cache_*` tests share: a proxy whose one route caches, in front of a scripted
//! backend that counts requests, and a GET with extra request headers.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::backend::{Action, Backend, Behavior, RecordedRequest};
use crate::support::config::ProxyConfig;
use crate::support::http_client::{HttpClient, HttpResponse};
use crate::support::launcher::{Proxy, TestProxy};

/// The config: one listener `public`, one cached route (plus `route` lines) to cluster
/// `origin`, and `[cache]` (plus `cache` lines).
pub fn config(backend: &Backend, workers: usize, route: &str, cache: &str) -> String {
    // A 5 s route timeout unless the test sets its own.
    let timeout = if route.contains("timeout =") {
        ""
    } else {
        "timeout = \"5s\""
    };
    ProxyConfig::new([backend.addr()])
        .workers(workers)
        .drain_timeout("2s")
        .cluster("origin")
        .route("cache = true")
        .route(timeout)
        .route(route)
        .tail(&format!("[cache]\n{cache}"))
        .toml()
}

/// A backend answering with `script`, and a proxy caching it with default `[cache]` settings.
pub fn start(
    script: impl Fn(&RecordedRequest, usize) -> Action + Send + Sync + 'static,
) -> (Backend, TestProxy) {
    start_with(script, 1, "", "")
}

/// [`start`] with workers, extra route lines and `[cache]` lines.
pub fn start_with(
    script: impl Fn(&RecordedRequest, usize) -> Action + Send + Sync + 'static,
    workers: usize,
    route: &str,
    cache: &str,
) -> (Backend, TestProxy) {
    let backend = Backend::start(Behavior::script(script));
    let proxy = Proxy::start_toml(&config(&backend, workers, route, cache));
    (backend, proxy)
}

/// `Action::Respond` with headers.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Action {
    Action::Respond {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: Bytes::from(body.to_owned()),
    }
}

/// A request through the proxy with extra headers; panics on a transport failure.
pub async fn send(
    proxy: &TestProxy,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url("public", path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    HttpClient::http1()
        .with_timeout(Duration::from_secs(10))
        .send(req)
        .await
        .expect("response through the proxy")
}

/// GET with extra headers.
pub async fn get(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    send(proxy, Method::GET, path, headers).await
}

/// Requests the backend received for `path`.
pub fn upstream_count(backend: &Backend, path: &str) -> usize {
    backend
        .requests()
        .iter()
        .filter(|r| r.uri.path() == path)
        .count()
}

/// The `Cache-Status` value (ours is the last member).
pub fn cache_status(response: &HttpResponse) -> String {
    response
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The response's `Age`, as a number.
pub fn age(response: &HttpResponse) -> Option<u64> {
    response.header("age").and_then(|a| a.parse().ok())
}
