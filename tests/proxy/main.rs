//! Forwarding through the proxy: requests and responses, upstream protocols (HTTP/1, h2,
//! WebSocket), the connection pool, streaming, failures and the fault catalogue, shutdown, the
//! demo, shadow traffic (route `mirror`), starting on pre-bound sockets, the embeddable tower layers (`examples/embed`), and the
//! self-tests of `support`'s backends and fault proxy.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod demo;
mod embed;
mod fault_catalogue;
mod mirror;
mod prebound;
mod proxy_failures;
mod proxy_forward;
mod shutdown_signals;
mod support_selftest;
mod transparent_intercept;
mod upstream_h2;
mod upstream_malformed;
mod upstream_pool;
mod upstream_streaming;
mod upstream_websocket;
