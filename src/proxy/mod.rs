//! The downstream side: listening sockets, server connections and the request path.
//!
//! - [`listener`]: `SO_REUSEPORT` sockets, one per worker per listener.
//! - [`server`]: accept loops, connections (HTTP/1.1 or HTTP/2, by the preface or TLS ALPN),
//!   graceful drain.
//! - [`h1`]: our own HTTP/1.1 server session (heads and bodies read through
//!   `hygiene::GuardedIo`, responses framed by `h1::encode`).
//! - [`h2`]: our HTTP/2 server (frames, HPACK, streams polled in the connection's task).
//! - [`handler`]: the request's edges — snapshot, request id, access log, error responses — and
//!   the head rules applied on the way up and down.
//! - [`stack`]: the per-route stack, every layer in order (route, cache, cluster limits, retry,
//!   balancer, endpoint pool, outlier), composed in one file.
//! - [`layers`]: the balancer, retry and outlier layers as tower middleware, for embedders who
//!   wrap their own HTTP client (the proxy calls the functions they wrap directly).
//! - `mirror`: shadow traffic (route `mirror`) — a sampled request's copy to the shadow
//!   cluster, its body teed as the primary reads it, the answer discarded.
//! - [`attempt`]: the stack's retry layer — retries and hedges as `resilience` decides them.
//! - [`transparent`]: the `outbound` and `inbound` listener modes of a transparent sidecar:
//!   original destination, protocol detection, opaque TCP, the mTLS tunnel's server side.
//! - [`log_text`]: the text log format's field escaping (no value can forge a field).
//! - The header rules, `ProxyError` and the body types are in [`crate::wire`], below every
//!   module that needs them.
//! - [`request_body`]: the downstream request body on its way up — counted, HTTP/2 limits
//!   applied, its failures recorded as the client's.
//! - [`hygiene`]: between the socket and the servers — the strict HTTP/1 head parser
//!   (smuggling), size limits, our own first-byte/header/body/keep-alive timers, HTTP/2 request
//!   checks.

pub mod access_log;
pub mod attempt;
pub mod body;
pub mod h1;
pub mod h2;
pub mod handler;
pub mod hygiene;
pub mod layers;
pub mod listener;
pub mod log_text;
mod mirror;
pub mod request_body;
pub mod server;
pub mod stack;
pub mod transparent;
mod woken;
