//! Our HTTP/2 server (RFC 9113), every stream served in the connection's own task.
//!
//! The `h2` crate's server kept each connection's streams in a shared store behind a mutex,
//! built each request's header map and handed DATA through per-stream queues and capacity
//! claims; each stream of ours then woke the connection through it. Here [`Connection`] reads
//! frames in place from one buffer (DATA payloads and header blocks are slices of it), decodes
//! header blocks with our HPACK ([`hpack`]) straight into the request, polls each stream's
//! future (the request, then its response body) from a small slab with a waker per slot, and
//! writes every frame into one buffer flushed once per pass. See `conn` for the frame handling
//! and `body` for the request body.
//!
//! What it keeps from the server on the `h2` crate (and from hyper before that): our SETTINGS
//! (1 MiB stream and connection windows, 16 KiB frames, `H2_MAX_CONCURRENT_STREAMS`, the header
//! list limit of `[limits]`, no push, a 4 KiB header table), keep-alive pings, GOAWAY on
//! graceful shutdown, the stream's future dropped on a client's RST_STREAM or disconnect (its
//! upstream request is cancelled and the access log records a client that went away), trailers
//! both ways, a `date` on responses without one, `content-length` from a body's exact size,
//! connection-specific headers removed from responses (`response`), request body capacity
//! released as each DATA frame is taken, and the protections: rapid reset (CVE-2023-44487),
//! CONTINUATION, PING and SETTINGS floods, a cap on streams reset for the client's errors.
//! CONNECT is refused by the request checks (`hygiene::h2`), and extended CONNECT is never
//! announced, so there are no tunnels.
//!
//! Re-measure with `python3 benches/load/breakdown.py --switchyard BINARY` (h2c row), and check
//! conformance with h2spec (`/work/notes/h2spec.md` tells how to run it).

mod body;
mod conn;
mod frame;
pub mod hpack;
mod response;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::request_body::DownstreamBody;
use crate::config::LimitsConfig;
use crate::wire::ProxyBody;

pub use body::{RequestBody, StreamError};
pub use conn::{Connection, PREFACE};

/// The windows we announce: sized for servers that are not memory constrained, as hyper had
/// them (a client may have this much in flight per stream and per connection).
const CONN_WINDOW: u32 = 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;

/// What every connection of a worker is served with, from `[limits]`.
#[derive(Debug, Clone)]
struct Config {
    max_header_list: usize,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    /// How long a closing connection may take to write its last frames.
    close_grace: Duration,
}

/// How every HTTP/2 connection of a worker is served, configured once from `[limits]`.
#[derive(Debug, Clone)]
pub struct Settings {
    config: Config,
}

impl Settings {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            config: Config {
                max_header_list: usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX),
                keepalive_interval: limits.h2_keepalive_interval,
                keepalive_timeout: limits.h2_keepalive_interval.min(Duration::from_secs(20)),
                close_grace: limits.body_read_timeout,
            },
        }
    }

    /// A connection on `io` (whose preface has arrived or is on its way) that serves each
    /// stream's request with `serve`.
    pub fn serve_connection<T, F, S>(&self, io: T, serve: F) -> Connection<T, F, S>
    where
        T: AsyncRead + AsyncWrite + Unpin,
        F: FnMut(Request<DownstreamBody>) -> S,
        S: Future<Output = Response<ProxyBody>>,
    {
        Connection::new(io, serve, &self.config)
    }
}
