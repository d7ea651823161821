//! The ground floor: vocabulary every other layer speaks and that depends on nothing of ours
//! but the config. Nothing here knows about snapshots, endpoints or metrics.
//!
//! - [`error`]: [`ProxyError`] (each variant with its status and the side that failed) and
//!   [`PathError`] (a request path that cannot be routed).
//! - [`outcome`]: how one upstream attempt ended: [`Outcome`], [`FailureKind`], [`UpstreamError`],
//!   hyper/h2 error classification.
//! - [`client_side`]: failures the client caused (its request body broke, was abandoned or
//!   stalled), told apart from the endpoint's so they never count against it.
//! - [`body`]: the type-erased request and response bodies ([`Body`], [`ProxyBody`]).
//! - [`activity`]: the shared "last byte moved" clock behind the route `idle_timeout`.
//! - [`deadline`]: attempt time limits on one deadline queue per worker thread.
//! - [`headers`]: hop-by-hop stripping, `x-forwarded-*`, `x-request-id`, `traceparent`, `via`,
//!   and the one-pass header scan ([`headers::Present`]) the request path and tracing share.
//! - [`time`]: RFC 3339 and epoch-millisecond formatting.
//! - [`shutdown`]: waiting on the process's shutdown signal.
//! - [`upgrade`]: the client's upgraded connection, from the HTTP/1 server to the tunnel.

pub mod activity;
pub mod body;
pub mod client_side;
pub mod deadline;
pub mod error;
pub mod headers;
pub mod outcome;
pub mod shutdown;
pub mod time;
pub mod upgrade;

pub use body::{empty_body, full, Body, ProxyBody};
pub use client_side::{ClientBody, ClientBodyError};
pub use error::{PathError, ProxyError, Side};
pub use outcome::{BoxError, FailureKind, Outcome, UpstreamError};
