//! Transparent listeners (issue 27): connections `switchyard redirect` sent to the sidecar
//! without the application knowing, proxied by what they turn out to be.
//!
//! A listener's `mode` decides at accept (`proxy::server`'s accept loop, one branch: an
//! `http` listener's path is unchanged). Per intercepted connection:
//!
//! ```text
//! outbound (mode = "outbound")                 inbound (mode = "inbound")
//!   original_dst: SO_ORIGINAL_DST = D            not redirected -> our mTLS tunnel:
//!     none / one of our listeners -> refused       tls::tunnel::accept -> identity, header
//!   protocol: opaque_ports, else detect          redirected -> plaintext, port = D.port
//!   target: snapshot's table D -> cluster        policy of the port (mtls, allow) ->
//!     HTTP + cluster -> HTTP stack, listener's     refused: 403 (HTTP/1) or close
//!       routes, else route outbound:CLUSTER      protocol: header hint, opaque_ports, detect
//!     opaque + cluster -> an endpoint of its     HTTP on a declared port -> HTTP stack,
//!       balancer, bytes copied                     route inbound:PORT, client identity
//!     unknown -> bytes to D (passthrough)        otherwise -> bytes to 127.0.0.1:PORT
//!   every upstream byte stream: upstream::dial (mTLS tunnel when D's IP is meshed)
//! ```
//!
//! What this follows from the anchors: **Linkerd**'s proxy detects HTTP per connection with a
//! 10 s timeout and treats a silent client as server-speaks-first (opaque), has "opaque ports"
//! that skip detection, forwards unknown destinations to the original address, and carries
//! the original port to the peer proxy in a small transport header over mTLS (which we copy:
//! see `tls::tunnel`). **Istio/Envoy**'s `ORIGINAL_DST` passthrough cluster and `tcp_proxy`
//! (idle timeout 1 h, half-close, bytes and duration per connection, one access-log line),
//! and its `PERMISSIVE`/`STRICT` mTLS per port with `AuthorizationPolicy` principals, which
//! `mtls` and `allow` mirror.
//!
//! Detection reads the first bytes and replays them ([`detect::Prefixed`]) into the same HTTP
//! server an `http` listener uses, so intercepted HTTP gets every layer of the stack
//! (routes, retries, balancing, outlier detection, metrics, access log); the connection's
//! [`InterceptedConn`] only adds the fallback route, the identity header rule and, on the
//! outbound, the app's own head without our forwarding headers and `via`
//! (`ConnContext::adds_forwarding`).
//!
//! - [`original_dst`]: `SO_ORIGINAL_DST` through socket2.
//! - [`detect`]: HTTP/1, h2 or opaque, and the replaying stream.
//! - [`opaque`]: the byte copy, its counts and its access-log line.
//! - [`outbound`], [`inbound`]: the two dispatches above.

pub mod detect;
pub mod inbound;
pub mod opaque;
pub mod original_dst;
pub mod outbound;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::handler::{ConnContext, InterceptedConn};
use super::listener::Connection;
use super::server::ConnServer;
use crate::config::ListenerMode;
use crate::state::Intercepting;
use crate::telemetry::intercept::{Protocol, Refusal};

use crate::tls::tunnel::TunnelProtocol;

/// Serves one connection accepted on an intercepting listener; `held` (permit, guards) is
/// dropped when it ends.
pub(super) async fn serve<G: Send + 'static>(
    server: ConnServer,
    ctx: ConnContext,
    stream: Connection,
    intercepting: Arc<Intercepting>,
    shutdown: watch::Receiver<bool>,
    held: G,
) {
    // SO_ORIGINAL_DST and the TLS tunnel take tokio's stream.
    let stream = match stream.into_registered() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, peer = %ctx.peer, "cannot register the connection");
            return;
        }
    };
    let conn = Conn {
        server,
        ctx,
        intercepting: Arc::clone(&intercepting),
        shutdown,
    };
    match &intercepting.mode {
        ListenerMode::Outbound(settings) => Box::pin(outbound::serve(conn, stream, settings)).await,
        ListenerMode::Inbound(settings) => Box::pin(inbound::serve(conn, stream, settings)).await,
        // The accept loop hands only intercepting listeners here.
        ListenerMode::Http => {}
    }
    drop(held);
}

/// What the dispatches of one connection share.
struct Conn {
    server: ConnServer,
    ctx: ConnContext,
    intercepting: Arc<Intercepting>,
    shutdown: watch::Receiver<bool>,
}

impl Conn {
    /// Counts a refusal in the listener's metric and the proxy's tallies.
    fn refuse(&self, reason: Refusal) {
        self.intercepting.series.refused(reason);
        self.ctx.shared.intercepted().refused(reason);
        tracing::debug!(peer = %self.ctx.peer, listener = %self.ctx.listener, reason = reason.as_str(), "intercepted connection refused");
    }

    /// Counts a served connection.
    fn served(&self, protocol: Protocol, target: &str, identity: Option<&str>, mtls: bool) {
        let series = &self.intercepting.series;
        series.connection(protocol, target, mtls);
        self.ctx
            .shared
            .intercepted()
            .served(series.direction(), protocol, target, identity);
    }

    /// Hands the connection to the HTTP server, with `intercepted` for its requests; `stream`
    /// replays the bytes detection read.
    async fn http<S>(self, stream: S, intercepted: InterceptedConn)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ctx = ConnContext {
            intercepted: Some(Arc::new(intercepted)),
            ..self.ctx
        };
        self.server
            .serve_intercepted(stream, ctx, self.shutdown)
            .await;
    }

    /// [`Self::http`] behind a box of its own.
    ///
    /// A task's future is as large as its largest state, whichever state it is in: with the
    /// HTTP server's connection future (request slot included) inline in the dispatch, every
    /// opaque connection's task carried that size for its whole life too, idle or not
    /// (issue 27's target: 4 KiB per idle intercepted connection). So the dispatch boxes its
    /// large one-off phases (detection, the tunnel handshake, the dial, the HTTP server):
    /// one allocation per connection, where the connection's own setup makes several.
    async fn http_boxed<S>(self, stream: S, intercepted: InterceptedConn)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Box::pin(self.http(stream, intercepted)).await;
    }

    /// Copies bytes between `client` and `upstream` (already connected), then records the
    /// connection's metrics and access-log line.
    async fn opaque<A, B>(&self, client: A, upstream: B, record: &opaque::ConnRecord<'_>)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let idle = self
            .intercepting
            .mode
            .interception()
            .map_or(Duration::from_secs(3600), |i| i.opaque_idle_timeout);
        let copied = opaque::copy(client, upstream, idle).await;
        self.intercepting
            .series
            .opaque(copied.sent, copied.received, copied.lasted);
        self.log(record, &copied);
    }

    /// The connection's access-log line, when `[log] access` is on.
    fn log(&self, record: &opaque::ConnRecord<'_>, copied: &opaque::Copied) {
        if self.ctx.shared.snapshot().config().log.access {
            opaque::log(record, copied);
        }
    }

    /// Whether `addr` is one of this proxy's own listening addresses (a loop). A wildcard
    /// listener matches its port on loopback (the redirect never sends loopback here, so
    /// such a destination came from something addressing us through it).
    fn is_own(&self, addr: SocketAddr) -> bool {
        self.intercepting.own_addresses.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip() || (own.ip().is_unspecified() && addr.ip().is_loopback()))
        })
    }
}

/// The tunnel header's hint for a detected protocol.
fn hint(protocol: Protocol) -> TunnelProtocol {
    match protocol {
        Protocol::Http1 => TunnelProtocol::Http1,
        Protocol::H2 => TunnelProtocol::Http2,
        Protocol::Opaque => TunnelProtocol::Opaque,
    }
}
