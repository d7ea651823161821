//! Shared by the `hygiene_*`, `limits_*` and `h2_*` tests: a proxy in front of one echo
//! backend with small limits, and reading `switchyard_rejected_requests_total` off /metrics.

use std::net::SocketAddr;

pub mod h2raw;

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::metrics;

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
    ProxyConfig::new([backend.addr()])
        .workers(1)
        .drain_timeout("2s")
        .cluster_lines("balance = \"round_robin\"")
        .tail(tail)
        .toml()
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
    let series = format!("switchyard_rejected_requests_total{{reason=\"{reason}\"}}");
    metrics::metric(proxy.admin_addr(), &series) as u64
}
