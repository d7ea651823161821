//! Opening an upstream byte stream: plain TCP, or the mTLS tunnel (`tls::tunnel`) when the
//! destination's IP is a meshed workload.
//!
//! A workload IP is *meshed* when a live mesh member whose mesh address has that IP announces
//! a tunnel (`mesh::state::TunnelAd`). The mesh member task builds the table of those
//! ([`MeshedPeers`]) whenever records or liveness change and publishes it through [`Tunnels`],
//! which `state::Shared` holds (`Shared::meshed`, `Shared::publish_meshed`). Two users:
//!
//! - the pools ([`super::connect`], [`super::pool`]): a cluster without its own `tls` whose
//!   endpoint IP is meshed connects through the tunnel, header protocol by the cluster's
//!   protocol. The table is loaded once per new connection (one `ArcSwap` load). Pooled
//!   connections follow the table too, without a load per request: [`Tunnels`] counts the
//!   tables it publishes (a *generation*, bumped only when the new table differs from the
//!   old, or when our identity appears or goes), and each pooled connection carries the
//!   [`Via`] it was made with (direct, or the tunnel peer's identity and port) and the
//!   generation it was last found right under. A checkout reads the generation (one atomic
//!   load); only when it moved is the connection checked against the current table
//!   ([`Tunnels::still_right`]): the route a new connection would take now (tunnelled or
//!   not, same peer identity and port) keeps it, under the new generation; any other drops
//!   it (an HTTP/2 one leaves the pool; its streams in flight finish) and the request goes
//!   on a new connection. So an endpoint that becomes meshed gets no more plaintext from a
//!   connection pooled before (a strict peer is not bypassed by an old connection), and a
//!   tunnel is not used after its peer leaves the mesh or announces another identity or
//!   port. What is not checked: a request already written keeps its connection, and an idle
//!   connection no request asks for stays until the reaper's idle timeout closes it.
//! - the transparent listeners (`proxy::transparent`), through [`dial`], for opaque
//!   connections and passthrough.
//!
//! Why here and not in `state`: the pools (this layer) read the table, and `state` sits above
//! `upstream`; `state` re-exports the types so the rest of the proxy names them there.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::tls::tunnel::{self, TunnelHeader, TunnelProtocol, TunnelTls};
use crate::tls::unbuffered::ClientStream;

/// How to reach one meshed workload IP: the peer sidecar's inbound port and the identity its
/// certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPeer {
    /// The URI SAN the peer announced (`[identity] cert` of its sidecar).
    pub identity: Arc<str>,
    /// The peer sidecar's inbound listener port (on the same IP).
    pub port: u16,
}

/// The meshed workload IPs, as of the mesh member's last publish. Immutable; replaced whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshedPeers {
    peers: HashMap<IpAddr, TunnelPeer>,
}

impl MeshedPeers {
    /// A table of `peers`; for one IP announced twice the last wins (the mesh builds it from
    /// live members only, so two live members on one IP is a misconfiguration either way).
    pub fn new(peers: impl IntoIterator<Item = (IpAddr, TunnelPeer)>) -> Self {
        Self {
            peers: peers.into_iter().collect(),
        }
    }

    /// The tunnel to `ip`, when it is meshed.
    pub fn get(&self, ip: IpAddr) -> Option<&TunnelPeer> {
        self.peers.get(&ip)
    }

    /// How many IPs are meshed.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no IP is meshed.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Every meshed IP and its tunnel (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &TunnelPeer)> {
        self.peers.iter()
    }
}

/// What a new upstream connection consults to decide on a tunnel: the meshed table (the mesh
/// member's) and our tunnel TLS (the current snapshot's `[identity]`). One per process, held
/// by `state::Shared` and handed to each worker's [`super::Upstream`].
///
/// Two swaps rather than a part of the snapshot: the table changes with mesh liveness, not
/// with the config, and rebuilding a snapshot for every liveness change would be a reload's
/// work for a few bytes. The TLS copy is stored by `Shared` right after each snapshot, under
/// its publish lock, so it always equals the latest snapshot's `tunnel_tls`.
///
/// The generation: how pooled connections learn, at the price of one atomic load per
/// checkout, that the decision they were made under may have changed (see the module doc).
#[derive(Debug, Default)]
pub struct Tunnels {
    meshed: ArcSwap<MeshedPeers>,
    tls: ArcSwapOption<TunnelTls>,
    /// Bumped after each store that can change a route: a table different from the one it
    /// replaces, or our TLS appearing or going. Release on bump, Acquire on read: a reader
    /// that sees the new generation then loads the new table (or a newer one).
    generation: AtomicU64,
}

impl Tunnels {
    /// The current meshed table. Lock-free.
    pub fn meshed(&self) -> Arc<MeshedPeers> {
        self.meshed.load_full()
    }

    /// Replaces the meshed table (the mesh member task). The same table again changes no
    /// generation, so pooled connections are not re-checked for nothing.
    pub fn publish_meshed(&self, peers: MeshedPeers) {
        let peers = Arc::new(peers);
        let old = self.meshed.swap(Arc::clone(&peers));
        if *old != *peers {
            self.bump();
        }
    }

    /// Our tunnel TLS, when `[identity]` is configured and loads.
    pub fn tls(&self) -> Option<Arc<TunnelTls>> {
        self.tls.load_full()
    }

    /// Sets our tunnel TLS (`Shared`, with each published snapshot). Only its presence
    /// decides routes (no identity, no tunnel), so only a change of presence is a new
    /// generation: a reloaded certificate keeps the tunnels open.
    pub fn set_tls(&self, tls: Option<Arc<TunnelTls>>) {
        let present = tls.is_some();
        let old = self.tls.swap(tls);
        if old.is_some() != present {
            self.bump();
        }
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The number of route-changing publishes so far (see the type's doc). One atomic load:
    /// the pools read it on every checkout.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How a new connection to `ip` goes, recorded for its life in the pool, with our TLS
    /// when it is tunnelled. The generation is read before the table: a table published in
    /// between leaves the connection one generation behind, so it is re-checked once; never
    /// the other way round (a new generation over an old table's decision).
    pub(crate) fn via(&self, ip: IpAddr) -> (Via, Option<Arc<TunnelTls>>) {
        let generation = self.generation();
        match self.route(ip) {
            Some((peer, tls)) => (
                Via {
                    generation,
                    peer: Some(peer),
                },
                Some(tls),
            ),
            None => (
                Via {
                    generation,
                    peer: None,
                },
                None,
            ),
        }
    }

    /// Whether a pooled connection to `ip` made as `via` may carry a request under
    /// `generation` (read once per checkout, [`Tunnels::generation`]): yes at once when
    /// nothing changed since it was last found right; else when a new connection to `ip` would
    /// now take the same route (both direct, or both through the same peer identity and
    /// port), which then records `generation`. One table load, only when the generation moved.
    pub(crate) fn still_right(&self, via: &mut Via, ip: IpAddr, generation: u64) -> bool {
        if via.generation == generation {
            return true;
        }
        let table = self.meshed.load();
        let wanted = table.get(ip).filter(|_| self.tls.load().is_some());
        let same = match (wanted, &via.peer) {
            (None, None) => true,
            (Some(wanted), Some(made)) => wanted == made,
            _ => false,
        };
        if same {
            via.generation = generation;
        }
        same
    }

    /// The tunnel for a new connection to `ip`: its peer entry and our TLS, when `ip` is
    /// meshed and we have an identity to present. One table load; the TLS is loaded only for a
    /// meshed IP.
    pub fn route(&self, ip: IpAddr) -> Option<(TunnelPeer, Arc<TunnelTls>)> {
        let peer = self.meshed.load().get(ip)?.clone();
        Some((peer, self.tls()?))
    }
}

/// How a pooled connection reaches its endpoint as far as the meshed table decides it, and
/// the table generation it was last found right under ([`Tunnels::still_right`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Via {
    generation: u64,
    /// The tunnel's peer; `None`: straight to the endpoint.
    peer: Option<TunnelPeer>,
}

impl Via {
    /// A connection the table does not decide: no tunnels at all (an embedder's
    /// [`super::Upstream::new`]) or a cluster with its own `tls`. The pools never check it.
    pub(crate) fn direct() -> Self {
        Self {
            generation: 0,
            peer: None,
        }
    }

    /// The tunnel's peer, when the connection is tunnelled.
    pub(crate) fn peer(&self) -> Option<&TunnelPeer> {
        self.peer.as_ref()
    }
}

/// A connected upstream byte stream: plain TCP or TLS. The one socket type of the upstream
/// side: HTTP/1.1 connections in the pools hold it too (`h1::Conn`), whether their TLS is a
/// cluster's own `tls` or our tunnel.
#[derive(Debug)]
pub enum Dialed {
    /// Straight to the destination.
    Plain(TcpStream),
    /// A cluster's upstream TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Our mTLS tunnel through the peer sidecar's inbound listener (its header already sent),
    /// on the idle-freeing record layer of `tls::unbuffered`.
    Tunnel(Box<ClientStream>),
}

/// Connects to `dst`: through the tunnel when `dst`'s IP is meshed and `tls` is present (TCP
/// to the peer's inbound port, handshake, header `{ port: dst.port, protocol }`), else plain
/// TCP; the whole within `timeout`. Returns the stream and, when tunnelled, the peer's
/// identity. `meshed` and `tls` come from `Shared::meshed()` and `Snapshot::tunnel_tls()`.
pub async fn dial(
    meshed: &MeshedPeers,
    tls: Option<&Arc<TunnelTls>>,
    dst: SocketAddr,
    protocol: TunnelProtocol,
    timeout: Duration,
) -> io::Result<(Dialed, Option<Arc<str>>)> {
    match (meshed.get(dst.ip()), tls) {
        (Some(peer), Some(tls)) => {
            let stream = through(tls, peer, dst, protocol, timeout).await?;
            Ok((Dialed::Tunnel(stream), Some(Arc::clone(&peer.identity))))
        }
        _ => {
            let stream = tokio::time::timeout(timeout, tcp_connect(dst))
                .await
                .map_err(|_| timed_out(dst, timeout))??;
            Ok((Dialed::Plain(stream), None))
        }
    }
}

/// The tunnel to `dst`'s workload through `peer`: TCP to `(dst.ip, peer.port)`, then
/// `tls::tunnel::connect` with what is left of `timeout`.
pub(crate) async fn through(
    tls: &TunnelTls,
    peer: &TunnelPeer,
    dst: SocketAddr,
    protocol: TunnelProtocol,
    timeout: Duration,
) -> io::Result<Box<ClientStream>> {
    let started = Instant::now();
    let inbound = SocketAddr::new(dst.ip(), peer.port);
    let stream = tokio::time::timeout(timeout, tcp_connect(inbound))
        .await
        .map_err(|_| timed_out(inbound, timeout))??;
    let header = TunnelHeader {
        port: dst.port(),
        protocol,
    };
    let left = timeout.saturating_sub(started.elapsed());
    tunnel::connect(tls, stream, &peer.identity, header, left).await
}

fn timed_out(to: SocketAddr, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect to {to} timed out after {timeout:?}"),
    )
}

/// TCP connect with `TCP_NODELAY`: tunnels and opaque streams carry whole writes, Nagle only
/// adds latency.
pub(super) async fn tcp_connect(address: SocketAddr) -> io::Result<TcpStream> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    socket.connect(address).await
}

impl AsyncRead for Dialed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Dialed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::Tunnel(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::fixtures;

    fn our_tls(dir: &std::path::Path) -> Arc<TunnelTls> {
        Arc::new(TunnelTls::load(&fixtures::me(dir)).expect("identity"))
    }

    #[test]
    fn a_route_needs_a_meshed_ip_and_our_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meshed: IpAddr = "10.0.0.2".parse().expect("ip");
        let other: IpAddr = "10.0.0.3".parse().expect("ip");
        let peer = TunnelPeer {
            identity: Arc::from("spiffe://local/orders"),
            port: 15006,
        };
        let tunnels = Tunnels::default();
        assert!(tunnels.route(meshed).is_none(), "empty table");
        tunnels.publish_meshed(MeshedPeers::new([(meshed, peer.clone())]));
        assert!(tunnels.route(meshed).is_none(), "no identity of ours");
        tunnels.set_tls(Some(our_tls(dir.path())));
        let (found, tls) = tunnels.route(meshed).expect("route");
        assert_eq!(found, peer);
        assert_eq!(tls.identity(), "spiffe://local/me");
        assert!(tunnels.route(other).is_none(), "not meshed");
        tunnels.publish_meshed(MeshedPeers::default());
        assert!(tunnels.route(meshed).is_none(), "left the mesh");
    }

    #[test]
    fn only_a_route_changing_publish_is_a_new_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        let peer = |identity: &str, port| TunnelPeer {
            identity: Arc::from(identity),
            port,
        };
        let table = MeshedPeers::new([(ip, peer("spiffe://local/orders", 15006))]);
        let tunnels = Tunnels::default();
        let start = tunnels.generation();
        tunnels.publish_meshed(MeshedPeers::default());
        assert_eq!(tunnels.generation(), start, "the same empty table");
        tunnels.publish_meshed(table.clone());
        assert_eq!(tunnels.generation(), start + 1, "a peer joined");
        tunnels.publish_meshed(table.clone());
        assert_eq!(tunnels.generation(), start + 1, "the same table again");
        let tls = our_tls(dir.path());
        tunnels.set_tls(Some(Arc::clone(&tls)));
        assert_eq!(tunnels.generation(), start + 2, "our identity appeared");
        tunnels.set_tls(Some(tls));
        assert_eq!(tunnels.generation(), start + 2, "still an identity");
        tunnels.set_tls(None);
        assert_eq!(tunnels.generation(), start + 3, "our identity went");
    }

    #[test]
    fn a_pooled_route_is_right_while_a_new_connection_would_take_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        let orders = TunnelPeer {
            identity: Arc::from("spiffe://local/orders"),
            port: 15006,
        };
        let tunnels = Tunnels::default();
        tunnels.set_tls(Some(our_tls(dir.path())));
        let (mut direct, tls) = tunnels.via(ip);
        assert_eq!(direct.peer(), None);
        assert!(tls.is_none());

        // Unchanged generation: right without looking at the table.
        let now = tunnels.generation();
        assert!(tunnels.still_right(&mut direct, ip, now));

        // Meshed: a direct connection is wrong, a tunnel to that peer is right.
        tunnels.publish_meshed(MeshedPeers::new([(ip, orders.clone())]));
        let now = tunnels.generation();
        assert!(!tunnels.still_right(&mut direct.clone(), ip, now));
        let (mut tunnelled, tls) = tunnels.via(ip);
        assert_eq!(tunnelled.peer(), Some(&orders));
        assert!(tls.is_some());

        // A table change that leaves this peer alone: still right, under the new generation.
        let other: IpAddr = "10.0.0.3".parse().expect("ip");
        tunnels.publish_meshed(MeshedPeers::new([
            (ip, orders.clone()),
            (other, orders.clone()),
        ]));
        let now = tunnels.generation();
        assert!(tunnels.still_right(&mut tunnelled, ip, now));
        assert_eq!(tunnelled.generation, now);

        // The peer announces another port, or another identity: the tunnel is wrong.
        for moved in [
            TunnelPeer {
                port: 15007,
                ..orders.clone()
            },
            TunnelPeer {
                identity: Arc::from("spiffe://local/impostor"),
                ..orders.clone()
            },
        ] {
            tunnels.publish_meshed(MeshedPeers::new([(ip, moved)]));
            let now = tunnels.generation();
            assert!(!tunnels.still_right(&mut tunnelled.clone(), ip, now));
        }

        // The peer leaves, or we lose our identity: tunnels are wrong, direct is right again.
        tunnels.publish_meshed(MeshedPeers::default());
        let now = tunnels.generation();
        assert!(!tunnels.still_right(&mut tunnelled.clone(), ip, now));
        assert!(tunnels.still_right(&mut direct.clone(), ip, now));
        tunnels.publish_meshed(MeshedPeers::new([(ip, orders.clone())]));
        tunnels.set_tls(None);
        let now = tunnels.generation();
        assert!(!tunnels.still_right(&mut tunnelled, ip, now));
        assert!(tunnels.still_right(&mut direct, ip, now));
    }
}
