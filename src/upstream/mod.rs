//! The upstream side: our own endpoint pools, our own HTTP/1.1 client connection ([`h1`]) and
//! `hyper::client::conn` for HTTP/2.
//!
//! hyper-util's legacy `Client` cannot cap connections per endpoint, count them, say whether a
//! request was written, or retire one connection; balancing, retries and ejection need all four.
//! So every worker keeps one pool per `EndpointState` ([`pool`], lock-free because workers are
//! current-thread runtimes), connections are opened by [`connect`] (TCP_NODELAY, keepalive,
//! `connect_timeout`, counted exactly on `EndpointState`), and each attempt ([`exchange`]) ends
//! in an [`Outcome`] for `switchyard_upstream_requests_total` or an [`UpstreamError`] saying how
//! it failed and whether the endpoint may have seen the request (retry safety).
//!
//! - `Outcome`, `FailureKind`, `UpstreamError` and the client-side failures live in
//!   [`crate::wire`], the ground floor, because every layer above speaks them.
//! - [`pool`]: per-worker pools, the connection cap's bounded wait, the idle reaper.
//! - [`connect`]: TCP connect, TLS, the HTTP/2 handshake and driver task, connection counting.
//! - [`h1`]: the HTTP/1.1 client connection, driven by the request's own task (no channel, no
//!   task per connection): request encoding, response head parsing, body decoding.
//! - [`exchange`]: one attempt, resends of unprocessed requests (stale connection, GOAWAY,
//!   REFUSED_STREAM), HTTP/1.1 framing rules on the response head.
//! - [`body`]: the response body that returns its connection to the pool when it ends.
//! - [`dial`]: plain TCP or the mTLS tunnel to a meshed peer ([`dial::Dialed`]), and the
//!   meshed table ([`dial::MeshedPeers`]) the pools consult per new connection, and again for
//!   a pooled connection only when the table changed (a generation counter).
//! - [`upgrade`]: the WebSocket / HTTP/1.1 Upgrade byte tunnel.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};

mod body;
mod connect;
pub mod dial;
mod exchange;
mod h1;
mod pool;
pub mod upgrade;

pub use body::UpstreamBody;
pub use pool::PoolLabels;

use crate::config::ClusterConfig;
use crate::endpoint::EndpointState;
use crate::wire::{Body, ClientBody, Outcome, UpstreamError};

/// Fields of the request head that the HTTP/1.1 client writes after the header map's, rather
/// than the request path inserting them into the map (each insert hashes the name and probes
/// the map). `handler::upstream_head` fills it only for an HTTP/1.1 cluster, and only with
/// what it would otherwise have inserted; the default writes nothing.
#[derive(Debug, Default)]
pub struct HeadLines<'a> {
    /// The connection's forwarding fields, complete `name: value\r\n` lines
    /// (`headers::forwarding_lines`).
    pub conn: &'a [u8],
    /// Our `via` line, when the client sent no `via` (`headers::request_via_line`).
    pub via: &'static [u8],
    /// The value of `x-forwarded-host`, when it is ours to set.
    pub forwarded_host: Option<http::HeaderValue>,
}

/// A failed attempt's request, handed back when the endpoint certainly saw none of it: no
/// connection could be leased (connect failure, timeout, pool exhausted), or every
/// connection tried closed before a byte was written. Its body was never polled. A retry
/// sends it as it is, so a request whose route retries only such failures needs no copy of
/// its head for a retry that may never happen (`proxy::attempt`). Only for an HTTP/1.1
/// cluster: an HTTP/2 request has been given its absolute target by then, and hyper does not
/// hand back a refused stream's request with a body. Boxed on that (rare) failure, so that
/// every attempt's result, carried up through the request's nested futures, grows by a
/// pointer rather than by a request (their size is copied per request).
pub type Unsent = Option<Box<Request<Body>>>;

/// One worker's handle on the upstream side.
///
/// It holds no connection state: the pools live in a thread-local of the worker's thread (see
/// [`pool`]), which is what makes them per worker and lock-free. What it holds is the
/// process's tunnel lookup, which every new connection consults.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The meshed table and our tunnel TLS (`state::Shared`'s), read once per new connection
    /// (and its generation once per checkout, see [`dial`]);
    /// `None` (embedders, [`Upstream::new`]): every connection is direct.
    tunnels: Option<Arc<dial::Tunnels>>,
}

impl Upstream {
    /// The upstream side of one worker, with no tunnels: every connection goes straight to
    /// the endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// The upstream side of one worker of a proxy: new connections to a meshed endpoint of a
    /// cluster without its own `tls` go through the mTLS tunnel (see [`dial`]).
    pub fn with_tunnels(tunnels: Arc<dial::Tunnels>) -> Self {
        Self {
            tunnels: Some(tunnels),
        }
    }

    /// Sends `req` (origin-form target, `Host` already set, version chosen by the cluster's
    /// protocol) to `endpoint` and returns the response head with a streaming body. `timeout`
    /// (the deadline, and the limit it came from for the error) bounds the whole attempt until
    /// the response head (connect and pool wait included); a deadline rather than a duration, so
    /// the timer takes the caller's clock reading instead of its own. `client`
    /// is the downstream body's record (requests with a body): a failure the client caused comes
    /// back as [`FailureKind::Client`](crate::wire::FailureKind::Client). Counts the attempt in
    /// `switchyard_upstream_requests_total`, unless the client caused its failure.
    /// `lines`: fields the HTTP/1.1 client writes after the map's (always empty for an HTTP/2
    /// cluster). With a failure, the request itself when not a byte of it (nor of its body)
    /// was written and the cluster speaks HTTP/1.1 (see [`Unsent`]).
    #[allow(
        clippy::manual_async_fn,
        reason = "arguments held once: see the module doc of proxy::stack"
    )]
    pub fn send<'a>(
        &'a self,
        cluster: &'a ClusterConfig,
        endpoint: &'a Arc<EndpointState>,
        req: Request<Body>,
        timeout: Option<(Instant, Duration)>,
        client: Option<&'a ClientBody>,
        lines: &'a HeadLines<'a>,
    ) -> impl Future<Output = (Result<Response<UpstreamBody>, UpstreamError>, Unsent)> + 'a {
        // The exchange is built inside the block: built before it, the whole exchange future
        // would be the block's capture and be copied wherever the block moves.
        async move {
            // Pinned where it is built: the timer wraps a reference to it, so the (large)
            // exchange future is not moved into the timer and again into this block's state.
            let attempt = std::pin::pin!(exchange::exchange(
                cluster,
                endpoint,
                req,
                lines,
                self.tunnels.as_deref(),
            ));
            let (result, unsent) = match timeout {
                Some((at, limit)) => crate::wire::deadline::timeout_at(at, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        (Err(UpstreamError::timeout(endpoint.address(), limit)), None)
                    }),
                None => attempt.await,
            };
            let result = match (result, client) {
                (Err(error), Some(client)) => Err(client.blame(error)),
                (result, _) => result,
            };
            let outcome = match &result {
                Ok(response) => Some(Outcome::of_status(response.status())),
                Err(error) => error.kind.outcome(),
            };
            if let Some(outcome) = outcome {
                endpoint.metrics().record_upstream(outcome);
            }
            (result, unsent)
        }
    }
}
