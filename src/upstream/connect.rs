//! Opening one upstream connection: TCP connect under `connect_timeout`, socket options, TLS
//! (the cluster's own, or the mTLS tunnel to a meshed endpoint), and for HTTP/2 the handshake
//! and the task that drives the connection until it closes.
//!
//! The tunnel: for a cluster without its own `tls`, an endpoint whose IP the mesh lists as
//! meshed (`dial::Tunnels::via`, one `ArcSwap` load per new connection, none per request)
//! is reached through its sidecar's inbound port: TCP to that port, `tls::tunnel::connect`
//! with the header `{ port: endpoint port, protocol: the cluster's }`, all within
//! `connect_timeout`; HTTP then runs inside the tunnel as on any TLS connection. A cluster
//! with its own `tls` talks to the endpoint itself and never tunnels (TLS inside TLS buys
//! nothing, and its certificate checks name the endpoint, not the sidecar). Each connection
//! records the route it took ([`Via`]), against which the pool re-checks it when the meshed
//! table changes (see the module doc of [`super::dial`]).
//! HTTP/1.1 connections have no task: they are [`h1::Conn`] values driven by whichever request
//! or response body holds them (see [`super::h1`]).
//!
//! The open-connection count is exact because it is tied to a value, not to code paths: an
//! [`OpenConn`] is created when a connection slot is reserved (before the connect, so the cap
//! counts connections being made) and dropped with the connection: the `h1::Conn` that owns it
//! (wherever it is dropped: a request, a body, a pool, a tunnel), or the HTTP/2 driver task when
//! it ends, for any reason (closed, failed, or the worker's runtime dropped).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::dial::{self, Dialed};
use super::dial::{TunnelPeer, Tunnels, Via};
use super::h1;
use super::pool::PoolLabels;
use crate::config::{ClusterConfig, Protocol};
use crate::endpoint::EndpointState;
use crate::telemetry::metrics::{UPSTREAM_CONNECTIONS, UPSTREAM_CONNECT_DURATION_SECONDS};
use crate::tls::tunnel::{self, TunnelHeader, TunnelProtocol, TunnelTls};
use crate::wire::outcome::{FailureKind, UpstreamError};
use crate::wire::Body;

/// HTTP/2 flow-control windows. hyper's 64 KiB default stream window caps one stream at
/// 64 KiB per round trip; 1 MiB per stream (4 MiB per connection) lets a large body stream at
/// memory speed while still bounding what one connection can buffer.
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONN_WINDOW: u32 = 4 << 20;

/// Ready-to-use request sender of one connection.
pub(crate) enum Sender {
    /// One request at a time; returned to the pool when its response body ends.
    H1(h1::Conn),
    /// Multiplexed; the pool keeps a clone and hands out more.
    H2(http2::SendRequest<Body>),
}

/// One counted connection slot: `connection_opened` on creation, `connection_closed`, the
/// gauge decrement and a wake-up of waiters on drop.
pub(crate) struct OpenConn {
    endpoint: Arc<EndpointState>,
    labels: Arc<PoolLabels>,
    /// `None` for a reservation given back at once (over the cap): waking a waiter then would
    /// only make it retry and give back its own, a busy loop between waiters.
    released: Option<Arc<Notify>>,
}

impl OpenConn {
    /// Counts a connection as open on `endpoint` and in `switchyard_upstream_connections`.
    pub(crate) fn open(
        endpoint: &Arc<EndpointState>,
        labels: &Arc<PoolLabels>,
        released: &Arc<Notify>,
    ) -> Self {
        endpoint.connection_opened();
        metrics::gauge!(UPSTREAM_CONNECTIONS, labels.cluster.iter()).increment(1.0);
        Self {
            endpoint: Arc::clone(endpoint),
            labels: Arc::clone(labels),
            released: Some(Arc::clone(released)),
        }
    }

    /// Gives back a reservation that was never used, without waking anyone.
    pub(crate) fn abandon(mut self) {
        self.released = None;
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.endpoint.connection_closed();
        metrics::gauge!(UPSTREAM_CONNECTIONS, self.labels.cluster.iter()).decrement(1.0);
        // A request of this worker waiting for a free slot under the cap may go now.
        if let Some(released) = &self.released {
            released.notify_one();
        }
    }
}

/// The tunnels that decide `cluster`'s connections: none for a cluster with its own `tls`
/// (it never tunnels, see the module doc), so neither its new connections nor its pooled ones
/// consult the meshed table.
pub(crate) fn deciding<'a>(
    cluster: &ClusterConfig,
    tunnels: Option<&'a Tunnels>,
) -> Option<&'a Tunnels> {
    tunnels.filter(|_| cluster.tls.is_none())
}

/// Connects to `endpoint` (through the tunnel when `tunnels` says it is meshed; see the module
/// doc) and completes the handshake; `slot` moves into the connection (or its HTTP/2 driver
/// task). Also returns the route taken ([`Via`]), which an HTTP/1.1 connection carries itself
/// and the pool keeps beside an HTTP/2 one, so that reuse follows the meshed table.
pub(crate) async fn connect(
    cluster: &ClusterConfig,
    endpoint: &EndpointState,
    labels: &PoolLabels,
    slot: OpenConn,
    tunnels: Option<&Tunnels>,
) -> Result<(Sender, Via), UpstreamError> {
    let address = endpoint.address();
    let started = Instant::now();
    let (via, tunnel_tls) = match deciding(cluster, tunnels) {
        Some(tunnels) => tunnels.via(address.ip()),
        None => (Via::direct(), None),
    };
    if let (Some(peer), Some(tls)) = (via.peer(), tunnel_tls) {
        let stream = tunnel_connect(cluster, address, peer, &tls, started).await?;
        metrics::histogram!(UPSTREAM_CONNECT_DURATION_SECONDS, labels.cluster.iter())
            .record(started.elapsed().as_secs_f64());
        if cluster.protocol == Protocol::Http1 {
            let conn = h1::Conn::new(Dialed::Tunnel(stream), slot, via.clone());
            return Ok((Sender::H1(conn), via));
        }
        let sender = start_h2(address, TokioIo::new(stream), slot).await?;
        return Ok((sender, via));
    }
    let stream = tokio::time::timeout(cluster.connect_timeout, tcp_connect(cluster, address))
        .await
        .map_err(|_| {
            UpstreamError::unsent(
                FailureKind::ConnectTimeout,
                address,
                format!("connect timed out after {:?}", cluster.connect_timeout),
            )
        })?
        .map_err(|e| UpstreamError::unsent(FailureKind::Connect, address, e))?;
    let Some(spec) = &cluster.tls else {
        metrics::histogram!(UPSTREAM_CONNECT_DURATION_SECONDS, labels.cluster.iter())
            .record(started.elapsed().as_secs_f64());
        if cluster.protocol == Protocol::Http1 {
            let conn = h1::Conn::new(Dialed::Plain(stream), slot, via.clone());
            return Ok((Sender::H1(conn), via));
        }
        let sender = start_h2(address, TokioIo::new(stream), slot).await?;
        return Ok((sender, via));
    };
    let stream = tls_connect(cluster, spec, address, stream, started).await?;
    metrics::histogram!(UPSTREAM_CONNECT_DURATION_SECONDS, labels.cluster.iter())
        .record(started.elapsed().as_secs_f64());
    if cluster.protocol == Protocol::Http1 {
        let conn = h1::Conn::new(Dialed::Tls(Box::new(stream)), slot, via.clone());
        return Ok((Sender::H1(conn), via));
    }
    let sender = start_h2(address, TokioIo::new(stream), slot).await?;
    Ok((sender, via))
}

/// The TLS handshake with a backend, within what is left of `connect_timeout`. Verification
/// failures (unknown CA, wrong name, expired) are logged at warn with the cluster and address:
/// they are configuration errors, and the request gets a 502, never a plaintext retry.
async fn tls_connect(
    cluster: &ClusterConfig,
    spec: &crate::config::ClusterTls,
    address: std::net::SocketAddr,
    stream: TcpStream,
    started: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let tls = crate::tls::store::client_for_connect(spec, cluster.protocol).map_err(|e| {
        tracing::warn!(cluster = %cluster.name, error = %e, "upstream TLS config does not load");
        UpstreamError::unsent(FailureKind::Connect, address, e)
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls.config());
    let left = cluster.connect_timeout.saturating_sub(started.elapsed());
    let handshake = connector.connect(tls.server_name(address.ip()), stream);
    match tokio::time::timeout(left, handshake).await {
        Err(_) => Err(UpstreamError::unsent(
            FailureKind::ConnectTimeout,
            address,
            format!(
                "TLS handshake not done within connect_timeout {:?}",
                cluster.connect_timeout
            ),
        )),
        Ok(Err(error)) => {
            tracing::warn!(cluster = %cluster.name, %address, %error, "upstream TLS handshake failed");
            Err(UpstreamError::unsent(
                FailureKind::Connect,
                address,
                format!("TLS: {error}"),
            ))
        }
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// The tunnel to a meshed endpoint: TCP to its sidecar's inbound port (our socket options),
/// then the tunnel handshake and header, all within `connect_timeout`. A refusal (the peer's
/// identity is not the announced one, its chain does not verify) is logged at warn like a
/// cluster TLS failure: it is a configuration or security problem, never retried in clear.
async fn tunnel_connect(
    cluster: &ClusterConfig,
    address: std::net::SocketAddr,
    peer: &TunnelPeer,
    tls: &TunnelTls,
    started: Instant,
) -> Result<Box<crate::tls::unbuffered::ClientStream>, UpstreamError> {
    let inbound = std::net::SocketAddr::new(address.ip(), peer.port);
    let timed_out = || {
        UpstreamError::unsent(
            FailureKind::ConnectTimeout,
            address,
            format!(
                "tunnel via {inbound} not open within connect_timeout {:?}",
                cluster.connect_timeout
            ),
        )
    };
    let stream = tokio::time::timeout(cluster.connect_timeout, tcp_connect(cluster, inbound))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| UpstreamError::unsent(FailureKind::Connect, address, e))?;
    let header = TunnelHeader {
        port: address.port(),
        protocol: match cluster.protocol {
            Protocol::Http1 => TunnelProtocol::Http1,
            Protocol::H2 => TunnelProtocol::Http2,
        },
    };
    let left = cluster.connect_timeout.saturating_sub(started.elapsed());
    match tunnel::connect(tls, stream, &peer.identity, header, left).await {
        Ok(stream) => Ok(stream),
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => Err(timed_out()),
        Err(error) => {
            tracing::warn!(cluster = %cluster.name, %address, %inbound, %error, "tunnel to meshed endpoint failed");
            Err(UpstreamError::unsent(
                FailureKind::Connect,
                address,
                format!("tunnel: {error}"),
            ))
        }
    }
}

/// The HTTP/2 handshake on a connected (plain or TLS) stream, and its driver task.
async fn start_h2<I>(
    address: std::net::SocketAddr,
    io: TokioIo<I>,
    slot: OpenConn,
) -> Result<Sender, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::unsent(FailureKind::Connect, address, e))?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, %address, "upstream h2 connection ended with an error");
        }
        drop(slot);
    });
    Ok(Sender::H2(sender))
}

/// TCP connect with `TCP_NODELAY` ([`dial::tcp_connect`]) and the cluster's TCP keepalive
/// (finds dead peers on idle pooled connections).
async fn tcp_connect(
    cluster: &ClusterConfig,
    address: std::net::SocketAddr,
) -> std::io::Result<TcpStream> {
    let stream = dial::tcp_connect(address).await?;
    if let Some(idle) = cluster.pool.tcp_keepalive {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(keepalive_interval(idle));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    }
    Ok(stream)
}

/// Probe interval once keepalive probing starts: a tenth of the idle time, at least 1 s, so a
/// dead peer is found within about twice the idle time with the kernel's default probe count.
fn keepalive_interval(idle: Duration) -> Duration {
    (idle / 10).max(Duration::from_secs(1))
}
