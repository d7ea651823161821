//! Shared by the `hygiene_*`, `limits_*` and `h2_*` tests: a proxy in front of one echo
//! backend with small limits, and reading `switchyard_rejected_requests_total` off /metrics.

#![allow(dead_code)]

use std::net::SocketAddr;

pub mod h2raw;

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::raw_client::raw_request;

/// Limits small enough to hit quickly: 4 KiB heads, 512-byte URIs, 1 KiB bodies, 300 ms
/// timers (keep-alive 500 ms), `extra` appended to `[limits]`.
pub fn limits(extra: &str) -> String {
    format!(
        r#"
[limits]
max_header_bytes = "4KiB"
max_uri_bytes = "512"
max_body_bytes = "1KiB"
first_byte_timeout = "300ms"
header_read_timeout = "300ms"
body_read_timeout = "300ms"
keepalive_timeout = "500ms"
{extra}
"#
    )
}

/// One listener `public`, one route, one cluster of `backend`, one worker, then `tail`.
pub fn config(backend: &Backend, tail: &str) -> String {
    format!(
        r#"
[runtime]
workers = 1
drain_timeout = "2s"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"

[clusters.app]
balance = "round_robin"
endpoints = ["{}"]
{tail}
"#,
        backend.addr()
    )
}

/// An echo backend and a proxy in front of it with [`limits`]`("")`.
pub fn start() -> (Backend, TestProxy, SocketAddr) {
    start_with(&limits(""))
}

/// An echo backend and a proxy in front of it with `tail` appended to the config.
pub fn start_with(tail: &str) -> (Backend, TestProxy, SocketAddr) {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, tail));
    let addr = proxy.addr("public");
    (backend, proxy, addr)
}

/// `switchyard_rejected_requests_total{reason}` as the admin listener reports it (0 when the
/// series does not exist yet). The recorder is process-wide: compare before and after.
pub fn rejected(proxy: &TestProxy, reason: &str) -> u64 {
    let resp = raw_request(
        proxy.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "/metrics: {}", resp.body_text());
    let needle = format!("switchyard_rejected_requests_total{{reason=\"{reason}\"}} ");
    resp.body_text()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
