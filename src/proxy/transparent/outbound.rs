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
        match detect::detect(&mut stream, settings.detect_timeout).await {
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
            };
            conn.http(client, intercepted).await;
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

/// Opaque bytes to an endpoint of `cluster`, chosen by its balancer among the endpoints
/// health admits (all of them when the cluster panics), the pick's in-flight guard held for
/// the connection's life so connection-counting balancers see it.
async fn to_cluster(
    conn: &Conn,
    client: Prefixed<TcpStream>,
    dst: SocketAddr,
    protocol: Protocol,
    cluster: &Arc<ClusterSnapshot>,
) {
    let Some(guard) = pick(cluster, conn.ctx.peer) else {
        tracing::debug!(
            cluster = cluster.name(),
            "no endpoint for an opaque connection"
        );
        return;
    };
    let endpoint = guard.endpoint().address();
    let record = ConnRecord {
        listener: &conn.ctx.listener,
        direction: Direction::Outbound,
        peer: conn.ctx.peer,
        original_dst: dst,
        target: cluster.name(),
        upstream: Some(endpoint),
        protocol,
        identity: None,
    };
    let timeout = cluster.config().connect_timeout;
    forward(conn, client, endpoint, protocol, timeout, record).await;
    drop(guard);
}

/// The balancer's pick for a connection from `peer`.
fn pick(cluster: &ClusterSnapshot, peer: SocketAddr) -> Option<InFlightGuard> {
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
    let balancer = cluster.balancer();
    let admitted = balance::choose(balancer, &pick, |i| crate::health::admit(cluster, i));
    let chosen = match admitted {
        Some(found) => Some(found),
        None if crate::health::panic_routes(cluster) => balance::choose(balancer, &pick, |_| true),
        None => None,
    };
    chosen.map(|(_, guard)| guard)
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
    let meshed = conn.ctx.shared.meshed();
    let tls = conn.ctx.shared.snapshot().tunnel_tls().cloned();
    let dialed =
        crate::upstream::dial::dial(&meshed, tls.as_ref(), to, hint(protocol), timeout).await;
    match dialed {
        Ok((upstream, identity)) => {
            let identity: Option<Arc<str>> = identity;
            let record = ConnRecord {
                identity: identity.as_deref(),
                ..record
            };
            conn.served(protocol, record.target, record.identity, identity.is_some());
            conn.opaque(client, upstream, &record).await;
        }
        Err(error) => {
            tracing::debug!(%error, %to, "intercepted connection: dial failed");
            let copied = Copied {
                sent: 0,
                received: 0,
                end: opaque::End::Error(error.kind()),
                lasted: Duration::ZERO,
            };
            conn.log(&record, &copied);
        }
    }
}
