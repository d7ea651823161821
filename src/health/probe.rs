//! Active probes: an HTTP request whose status must fall in the configured ranges, or a bare
//! TCP connect. Each probe opens its own connection (never the request pool's), so a probe
//! tests exactly "can a new client reach this endpoint now", and a poisoned pooled connection
//! cannot make a dead endpoint look alive.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::{HealthCheckConfig, HealthCheckKind, Protocol};

/// Runs one probe against `address`; `true` = passed. Everything (connect included) must
/// finish within `config.timeout`.
pub async fn probe(address: SocketAddr, config: &HealthCheckConfig, protocol: Protocol) -> bool {
    let attempt = async {
        match config.kind {
            HealthCheckKind::Tcp => TcpStream::connect(address).await.is_ok(),
            HealthCheckKind::Http => match http(address, config, protocol).await {
                Ok(status) => config
                    .statuses
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&status)),
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

type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// GET `path` with the configured Host (the address when empty); returns the status.
async fn http(
    address: SocketAddr,
    config: &HealthCheckConfig,
    protocol: Protocol,
) -> Result<u16, ProbeError> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
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
            let uri = format!("http://{host}{}", config.path);
            let req = builder.uri(uri).body(Empty::<Bytes>::new())?;
            sender.send_request(req).await?
        }
    };
    Ok(response.status().as_u16())
}
