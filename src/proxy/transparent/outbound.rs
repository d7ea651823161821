//! Outbound dispatch: a connection the workload made, redirected to the outbound listener.
//! See the module doc of [`super`] for the steps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::detect::{self, Prefixed};
use super::opaque::{self, ConnRecord, Copied};
use super::{hint, original_dst, Conn};
use crate::balance::{self, PickContext};
use crate::config::Interception;
use crate::endpoint::InFlightGuard;
use crate::proxy::handler::InterceptedConn;
use crate::router::Destination;
use crate::state::ClusterSnapshot;
use crate::telemetry::intercept::{Direction, Protocol, Refusal};
use crate::wire::{FailureKind, UpstreamError};

/// Connect timeout to a destination no cluster knows (passthrough): longer than a cluster's
/// 1 s default, since it may be anywhere on the internet.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The target label of destinations no cluster knows.
const PASSTHROUGH: &str = "passthrough";

pub(super) async fn serve(conn: Conn, mut stream: TcpStream, settings: &Interception) {
    let Some(dst) = original_dst::redirected(&stream) else {
        // Addressed to the listener itself: nothing to forward to.
        return conn.refuse(Refusal::NotRedirected);
    };
    if conn.is_own(dst) {
        return conn.refuse(Refusal::Loop);
    }
    let (protocol, prefix) = if settings.is_opaque_port(dst.port()) {
        (Protocol::Opaque, Vec::new())
    } else {
        match Box::pin(detect::detect(&mut stream, settings.detect_timeout)).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, peer = %conn.ctx.peer, "detection failed");
                return;
            }
        }
    };
    let client = Prefixed::new(prefix, stream);
    let snapshot = conn.ctx.shared.snapshot();
    let cluster = snapshot.targets().get(dst).cloned();
    match (protocol, cluster) {
        (Protocol::Http1 | Protocol::H2, Some(cluster)) => {
            conn.served(protocol, &cluster, None, meshed(&conn, dst));
            drop(snapshot);
            let mut conn = conn;
            // `x-forwarded-port`: the port the app called.
            conn.ctx.port = dst.port();
            let intercepted = InterceptedConn {
                destination: Destination::Cluster(cluster),
                identity_header: None,
                // The app's own head goes on: see `ConnContext::adds_forwarding`.
                adds_forwarding: false,
            };
            // Boxed: see `super::Conn::http_boxed`.
            conn.http_boxed(client, intercepted).await;
        }
        (protocol, Some(name)) => {
            let Some(cluster) = snapshot.cluster(&name).cloned() else {
                return;
            };
            drop(snapshot);
            to_cluster(&conn, client, dst, protocol, &cluster).await;
        }
        (protocol, None) => {
            drop(snapshot);
            let record = ConnRecord {
                listener: &conn.ctx.listener,
                direction: Direction::Outbound,
                peer: conn.ctx.peer,
                original_dst: dst,
                target: PASSTHROUGH,
                upstream: Some(dst),
                protocol,
                identity: None,
            };
            forward(
                &conn,
                client,
                dst,
                protocol,
                PASSTHROUGH_CONNECT_TIMEOUT,
                record,
            )
            .await;
        }
    }
}

/// Whether `dst`'s IP is a meshed workload and we have an identity: the pool's connections
/// for it go through the tunnel (`upstream::dial`'s rule).
fn meshed(conn: &Conn, dst: SocketAddr) -> bool {
    let tunnels = conn.ctx.shared.tunnels();
    tunnels.route(dst.ip()).is_some()
}

/// Connect attempts an opaque connection makes at most, each at an endpoint not tried yet.
const CONNECT_ATTEMPTS: usize = 3;

/// Opaque bytes to an endpoint of `cluster`, chosen by its balancer among the endpoints
/// health admits (all of them when the cluster panics); a failed connect counts against the
/// endpoint (outlier detection, as a request's would) and the next pick is tried, up to
/// [`CONNECT_ATTEMPTS`]. The pick's in-flight guard is held for the connection's life, so
/// connection-counting balancers see it.
async fn to_cluster(
    conn: &Conn,
    client: Prefixed<TcpStream>,
    dst: SocketAddr,
    protocol: Protocol,
    cluster: &Arc<ClusterSnapshot>,
) {
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure = None;
    let timeout = cluster.config().connect_timeout;
    while tried.len() < CONNECT_ATTEMPTS {
        let Some((index, guard)) = pick(cluster, conn.ctx.peer, &tried) else {
            break;
        };
        tried.push(index);
        let endpoint = Arc::clone(guard.endpoint());
        let address = endpoint.address();
        let record = ConnRecord {
            listener: &conn.ctx.listener,
            direction: Direction::Outbound,
            peer: conn.ctx.peer,
            original_dst: dst,
            target: cluster.name(),
            upstream: Some(address),
            protocol,
            identity: None,
        };
        // Boxed (the handshake's state goes when it is done): see `super::Conn::http_boxed`.
        match Box::pin(dial(conn, address, protocol, timeout)).await {
            Ok((upstream, identity)) => {
                let ok: Result<_, UpstreamError> = Ok(http::Response::new(()));
                crate::health::record(cluster, &endpoint, &ok);
                let record = ConnRecord {
                    identity: identity.as_deref(),
                    ..record
                };
                conn.served(protocol, record.target, record.identity, identity.is_some());
                conn.opaque(client, upstream, &record).await;
                drop(guard);
                return;
            }
            Err(error) => {
                tracing::debug!(%error, %address, cluster = cluster.name(), "opaque connect failed");
                let kind = match error.kind() {
                    std::io::ErrorKind::TimedOut => FailureKind::ConnectTimeout,
                    _ => FailureKind::Connect,
                };
                let failed: Result<http::Response<()>, _> =
                    Err(UpstreamError::unsent(kind, address, &error));
                crate::health::record(cluster, &endpoint, &failed);
                last_failure = Some((record.upstream, error.kind()));
            }
        }
    }
    // Nothing to connect to: the client's connection closes, logged like any.
    let (upstream, kind) = last_failure.unwrap_or((None, std::io::ErrorKind::NotConnected));
    let record = ConnRecord {
        listener: &conn.ctx.listener,
        direction: Direction::Outbound,
        peer: conn.ctx.peer,
        original_dst: dst,
        target: cluster.name(),
        upstream,
        protocol,
        identity: None,
    };
    conn.log(&record, &failed_copy(kind));
}

/// The balancer's pick for a connection from `peer`, among endpoints not in `tried`.
fn pick(
    cluster: &ClusterSnapshot,
    peer: SocketAddr,
    tried: &[usize],
) -> Option<(usize, InFlightGuard)> {
    let empty = http::HeaderMap::new();
    let pick = PickContext {
        endpoints: cluster.endpoints(),
        client: Some(peer),
        random: fastrand::u64(..),
        // A connection has no headers or path: only `source_ip` hashing has a key.
        hash: cluster
            .config()
            .hash_on
            .as_ref()
            .and_then(|hash_on| balance::request_hash(hash_on, &empty, "/", Some(peer.ip()))),
    };
    let fresh = |i: usize| !tried.contains(&i);
    let admitted = cluster.choose(&pick, |i| fresh(i) && crate::health::admit(cluster, i));
    match admitted {
        Some(found) => Some(found),
        None if crate::health::panic_routes(cluster) => cluster.choose(&pick, fresh),
        None => None,
    }
}

/// What a connection that never reached its target logs: no bytes, the dial's error.
fn failed_copy(kind: std::io::ErrorKind) -> Copied {
    Copied {
        sent: 0,
        received: 0,
        end: opaque::End::Error(kind),
        lasted: Duration::ZERO,
    }
}

/// [`crate::upstream::dial::dial`] with the current meshed table and our tunnel TLS.
async fn dial(
    conn: &Conn,
    to: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> std::io::Result<(crate::upstream::dial::Dialed, Option<Arc<str>>)> {
    let meshed = conn.ctx.shared.meshed();
    let tls = conn.ctx.shared.snapshot().tunnel_tls().cloned();
    crate::upstream::dial::dial(&meshed, tls.as_ref(), to, hint(protocol), timeout).await
}

/// Dials `to` (tunnelled when it is a meshed workload) and copies; a failed dial closes the
/// client and is logged like any connection (no bytes, `end=error:…`).
async fn forward(
    conn: &Conn,
    client: Prefixed<TcpStream>,
    to: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
    record: ConnRecord<'_>,
) {
    // Boxed (the handshake's state goes when it is done): see `super::Conn::http_boxed`.
    match Box::pin(dial(conn, to, protocol, timeout)).await {
        Ok((upstream, identity)) => {
            let record = ConnRecord {
                identity: identity.as_deref(),
                ..record
            };
            conn.served(protocol, record.target, record.identity, identity.is_some());
            conn.opaque(client, upstream, &record).await;
        }
        Err(error) => {
            tracing::debug!(%error, %to, "intercepted connection: dial failed");
            conn.log(&record, &failed_copy(error.kind()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_attempts_pick_each_endpoint_at_most_once() {
        let text = r#"
[[listeners]]
name = "outbound"
listen = "127.0.0.1:0"
mode = "outbound"

[clusters.db]
balance = "round_robin"
endpoints = ["10.0.0.1:5432", "10.0.0.2:5432"]
"#;
        let config = crate::config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        let registry = crate::endpoint::EndpointRegistry::new();
        let snapshot = crate::state::Snapshot::build(Arc::new(config), &registry, 1);
        let cluster = snapshot.cluster("db").expect("cluster");
        let peer: SocketAddr = "10.1.0.1:40000".parse().expect("address");
        let mut tried = Vec::new();
        while let Some((index, _guard)) = pick(cluster, peer, &tried) {
            assert!(!tried.contains(&index), "picked {index} twice");
            tried.push(index);
            assert!(tried.len() <= 2, "more picks than endpoints");
        }
        tried.sort_unstable();
        assert_eq!(tried, vec![0, 1]);
    }
}
