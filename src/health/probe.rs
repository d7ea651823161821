//! Active probes: an HTTP request whose status must fall in the configured ranges, or a bare
//! TCP connect. Each probe opens its own connection (never the request pool's), so a probe
//! tests exactly "can a new client reach this endpoint now", and a poisoned pooled connection
//! cannot make a dead endpoint look alive.
//!
//! On a `tls` cluster an HTTP probe speaks TLS with the very client config requests use (the
//! shared store's: CA, SNI or the endpoint's IP, client certificate, ALPN of the cluster's
//! protocol): a probe in plaintext would fail on every endpoint, and one with laxer
//! verification could pass an endpoint that requests then fail to reach. A TCP probe stays a
//! bare connect: it tests reachability only, by definition.
//!
//! A meshed endpoint of a cluster without `tls` is probed through the mTLS tunnel, as requests
//! reach it (`upstream::dial`): its sidecar may refuse plaintext (strict mTLS), and a direct
//! probe would then fail an endpoint that requests reach fine. Through the tunnel an HTTP probe
//! is the same GET inside it; a TCP probe passes when the peer's sidecar accepts a tunnel for
//! the endpoint's port (the sidecar connects to its workload after that, out of our sight).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::{ClusterTls, HealthCheckConfig, HealthCheckKind, Protocol};
use crate::state::Tunnels;
use crate::tls::tunnel::TunnelProtocol;
use crate::upstream::dial;

/// Runs one probe against `address` of a cluster speaking `protocol`, over TLS when `tls` is
/// the cluster's `tls` table, through the tunnel when `tunnels` lists the endpoint as meshed
/// (module doc); `true` = passed. Everything (connect and handshakes included) must finish
/// within `config.timeout`.
pub async fn probe(
    address: SocketAddr,
    config: &HealthCheckConfig,
    protocol: Protocol,
    tls: Option<&ClusterTls>,
    tunnels: Option<&Tunnels>,
) -> bool {
    let route = match (tls, tunnels) {
        (None, Some(tunnels)) => tunnels.route(address.ip()),
        _ => None,
    };
    if let Some((peer, tunnel_tls)) = route {
        let hint = match (config.kind, protocol) {
            (HealthCheckKind::Tcp, _) => TunnelProtocol::Opaque,
            (HealthCheckKind::Http, Protocol::Http1) => TunnelProtocol::Http1,
            (HealthCheckKind::Http, Protocol::H2) => TunnelProtocol::Http2,
        };
        let attempt = async {
            let stream = dial::through(&tunnel_tls, &peer, address, hint, config.timeout).await?;
            match config.kind {
                HealthCheckKind::Tcp => Ok(None),
                HealthCheckKind::Http => {
                    get(TokioIo::new(stream), address, config, protocol, "http")
                        .await
                        .map(Some)
                }
            }
        };
        let result: Result<Option<u16>, ProbeError> = tokio::time::timeout(config.timeout, attempt)
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        return match result {
            Ok(None) => true,
            Ok(Some(status)) => passes(config, status),
            Err(error) => {
                tracing::debug!(%address, %error, "health probe through the tunnel failed");
                false
            }
        };
    }
    let attempt = async {
        match config.kind {
            HealthCheckKind::Tcp => TcpStream::connect(address).await.is_ok(),
            HealthCheckKind::Http => match http(address, config, protocol, tls).await {
                Ok(status) => passes(config, status),
                Err(error) => {
                    tracing::debug!(%address, %error, "health probe failed");
                    false
                }
            },
        }
    };
    tokio::time::timeout(config.timeout, attempt)
        .await
        .unwrap_or(false)
}

/// Whether `status` is in one of the configured ranges.
fn passes(config: &HealthCheckConfig, status: u16) -> bool {
    config
        .statuses
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&status))
}

type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// GET `path` with the configured Host (the address when empty); returns the status.
async fn http(
    address: SocketAddr,
    config: &HealthCheckConfig,
    protocol: Protocol,
    tls: Option<&ClusterTls>,
) -> Result<u16, ProbeError> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let Some(spec) = tls else {
        return get(TokioIo::new(stream), address, config, protocol, "http").await;
    };
    let client = crate::tls::store::client_for_connect(spec, protocol)?;
    let connector = tokio_rustls::TlsConnector::from(client.config());
    let stream = connector
        .connect(client.server_name(address.ip()), stream)
        .await?;
    get(TokioIo::new(stream), address, config, protocol, "https").await
}

/// The probe's request and response on a connected (plain or TLS) stream; `scheme` goes into
/// the HTTP/2 `:scheme`.
async fn get<I>(
    io: TokioIo<I>,
    address: SocketAddr,
    config: &HealthCheckConfig,
    protocol: Protocol,
    scheme: &str,
) -> Result<u16, ProbeError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let host = if config.host.is_empty() {
        address.to_string()
    } else {
        config.host.clone()
    };
    let builder = Request::builder()
        .method(Method::GET)
        .header(header::USER_AGENT, "switchyard-health-check");
    let response = match protocol {
        Protocol::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let req = builder
                .uri(config.path.as_str())
                .header(header::HOST, host)
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())?;
            sender.send_request(req).await?
        }
        Protocol::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            let uri = format!("{scheme}://{host}{}", config.path);
            let req = builder.uri(uri).body(Empty::<Bytes>::new())?;
            sender.send_request(req).await?
        }
    };
    Ok(response.status().as_u16())
}
