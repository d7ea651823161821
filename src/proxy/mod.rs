//! The downstream side: listening sockets, server connections and the request path.
//!
//! - [`listener`]: `SO_REUSEPORT` sockets, one per worker per listener.
//! - [`server`]: accept loops and HTTP/1.1 + h2c connections (hyper-util `auto`), graceful drain.
//! - [`handler`]: the request path itself — route, pick, forward — in one readable function.
//! - [`headers`]: hop-by-hop stripping, `x-forwarded-*`, `x-request-id`, `traceparent`, `via`.
//! - [`error`]: [`ProxyError`], each variant with its status and the side that failed.
//!
//! - [`hygiene`]: between the socket and hyper — strict HTTP/1 head checks (smuggling), size
//!   limits, our own first-byte/header/body/keep-alive timers, HTTP/2 request checks.

pub mod access_log;
pub mod body;
pub mod error;
pub mod handler;
pub mod headers;
pub mod hygiene;
pub mod listener;
pub mod server;
mod woken;

pub use error::{ProxyError, Side};
