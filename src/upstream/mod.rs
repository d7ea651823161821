//! Sending a request to one endpoint and getting its response head back.
//!
//! This is the seam between the request path and connection management: the proxy hands over a
//! request with an origin-form target and an [`EndpointState`]; how connections are opened,
//! pooled and reused stays behind [`Upstream::send`]. For now it is hyper-util's legacy `Client`
//! (one set per worker, so connections never cross threads); the next issue replaces the inside
//! with our own pool on `hyper::client::conn`, keeping this signature.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;

use crate::config::{ClusterConfig, Protocol};
use crate::runtime::EndpointState;

/// Boxed error of a body in either direction.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A request body on its way upstream: streamed, type-erased so later layers (retry buffers,
/// limits) can wrap the downstream body without changing this seam.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Why an exchange with an endpoint failed.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// No connection could be made; nothing was sent.
    #[error("connect to {address} failed: {source}")]
    Connect {
        /// The endpoint.
        address: std::net::SocketAddr,
        /// The connector's error.
        #[source]
        source: BoxError,
    },
    /// The connection failed after the request may have been sent: reset, early close, or a
    /// response that is not HTTP.
    #[error("exchange with {address} failed: {source}")]
    Exchange {
        /// The endpoint.
        address: std::net::SocketAddr,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The request could not be addressed to the endpoint (its target is not a valid URI).
    #[error("cannot address the request to the endpoint: {0}")]
    InvalidTarget(#[from] http::Error),
}

/// Settings that make two clusters need different clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    /// `Protocol` as a flag (`true` = h2 prior knowledge).
    http2: bool,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    keepalive: Option<Duration>,
}

impl ClientKey {
    fn of(cluster: &ClusterConfig) -> Self {
        Self {
            http2: cluster.protocol == Protocol::H2,
            connect_timeout: cluster.connect_timeout,
            idle_timeout: cluster.pool.idle_timeout,
            max_idle: cluster.pool.max_idle_per_endpoint,
            keepalive: cluster.pool.tcp_keepalive,
        }
    }
}

/// One worker's upstream side.
#[derive(Debug, Default)]
pub struct Upstream {
    /// Clients by settings. A std `Mutex` is fine: it is held only to clone an `Arc`-backed
    /// client, never across an `.await`, and only this worker's tasks touch it.
    clients: Mutex<HashMap<ClientKey, Client<HttpConnector, Body>>>,
}

impl Upstream {
    /// An upstream side with no connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` (origin-form target, `Host` already set) to `endpoint` and returns the
    /// response head with a streaming body.
    pub async fn send(
        &self,
        cluster: &ClusterConfig,
        endpoint: &Arc<EndpointState>,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let address = endpoint.address();
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        // The legacy client connects to the URI's authority; the endpoint address goes there and
        // the client's own Host header (set by the caller) is what the backend sees.
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(address.to_string())
            .path_and_query(path)
            .build()?;
        let client = self.client(cluster);
        client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Connect {
                        address,
                        source: Box::new(e),
                    }
                } else {
                    UpstreamError::Exchange {
                        address,
                        source: Box::new(e),
                    }
                }
            })
    }

    fn client(&self, cluster: &ClusterConfig) -> Client<HttpConnector, Body> {
        let key = ClientKey::of(cluster);
        // A poisoned lock only means another task panicked while cloning; the map is still valid.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(key)
            .or_insert_with_key(|key| build_client(key))
            .clone()
    }
}

fn build_client(key: &ClientKey) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(key.connect_timeout));
    connector.set_keepalive(key.keepalive);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(key.idle_timeout)
        .pool_max_idle_per_host(key.max_idle);
    if key.http2 {
        // h2c with prior knowledge: the cluster said the endpoints speak HTTP/2.
        builder.http2_only(true);
    }
    builder.build(connector)
}
