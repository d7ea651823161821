//! The gossip mesh between sidecars: membership, announced services, ejection reports and cache
//! purges, shared with no control plane.
//!
//! - **Membership** is SWIM (Das, Gupta, Motivala 2002) as implemented by `foca`: each member
//!   probes a random peer every period, asks 5 others to probe indirectly when the direct probe
//!   fails (memberlist asks 3; see [`node::swim_config`]), marks the peer *suspect*, and declares
//!   it *dead* only if it does not refute (by raising its incarnation) within the suspicion
//!   timeout. foca does no I/O: [`node`] drives it from one task over a UDP socket and a timer
//!   heap.
//! - **Shared state** ([`state`]): one versioned record per member (services, ejection reports,
//!   purges). A change is pushed at once to 3 random members, each of which forwards a record
//!   that is new to it (rumor mongering); every 2 s each member also runs a push-pull
//!   anti-entropy exchange with a random live member (a fixed-size summary of fingerprints by
//!   address bucket, then `(member, version)` digests of the buckets that differ, then the
//!   records the other side lacks: [`state`]'s module doc), which is what makes late joiners and
//!   members returning from a partition converge — foca's own broadcasts only reach the members
//!   present when sent. A record learned for a member foca does not know yet also introduces
//!   it to foca, so a large mesh starting at once converges at the speed of the records.
//! - **Security** ([`seal`]): every datagram, foca's included, is ChaCha20-Poly1305-sealed under a
//!   per-sender key derived from `secret_file` (HKDF-SHA256), with a timestamp and counter window
//!   against replays. A node without the key cannot produce one datagram we open, so it never
//!   appears.
//! - **Lifeguard** (Dadgar et al. 2018): dynamic suspicion ([`suspicion`]: a suspicion's
//!   timeout starts long and shrinks with each independent confirmation — another member whose
//!   own probe failed, sent as a foca custom broadcast — and the node declares the member down
//!   when it passes; foca's own fixed timeout is the longest), and the local health multiplier
//!   ([`health`]: a member whose own loop runs late gives the peers it suspects up to 3× longer
//!   to refute — Lifeguard stretches the probe timeout, which foca cannot change on a running
//!   instance), with updates retransmitted twice foca's default, re-derived as the membership
//!   grows. `tests/mesh_sim/mesh_sim.rs` asserts the bounds (no false death without loss,
//!   every survivor marks a dead member within 15 s; docs/mesh.md, "Suspicion" and
//!   "Simulation", has the runs). foca's `notify_down_members` is off: it told members whose
//!   suspicion had been refuted that they were dead (see `node::Node::tell_if_dead`).
//! - **Bounds**: a record is capped in size and entries ([`state::MAX_RECORD_BYTES`] and the
//!   limits beside it; a peer's record beyond them is refused, ours is trimmed), report stamps
//!   from a peer's future are clamped to our clock on receipt, and what a member remembers about
//!   departed members is forgotten after foca's `remove_down_after` and capped
//!   ([`state::MAX_REMEMBERED`]), so memory stays bounded under churn.
//! - **Leave**: graceful shutdown sends `Leave` to every live member before the listeners close,
//!   so peers drop the member's services at once instead of after the suspicion timeout.
//!
//! The rest of the proxy sees the mesh through [`MeshHandle`]: [`discovery`] publishes service
//! endpoints into clusters with `discovery = { mesh = "NAME" }`, [`ejection`] reports local
//! ejections and applies peer quorums, [`purge`] carries cache purges, [`tunnel`] announces
//! this sidecar's mTLS tunnel and publishes the table of meshed workload IPs
//! (`state::Shared::meshed`) that upstream connections consult, [`rate_share`] gossips the
//! demand on mesh-scoped rate limits and sets this member's share of each.

pub mod check;
pub mod codec;
pub mod discovery;
pub mod ejection;
pub mod health;
pub mod node;
pub mod purge;
pub mod rate_share;
pub mod seal;
pub mod state;
pub mod suspicion;
pub mod tunnel;
pub mod view;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::config::MeshConfig;
use crate::state::Shared;
pub use codec::NodeId;
use node::{Clock, Command, Node, Setup, Transport};
use seal::Keys;
use state::{PurgeTarget, Service, TunnelAd};
pub use view::{MemberStatus, View};

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::{
    MESH_BYTES_TOTAL as BYTES_TOTAL, MESH_MEMBERS as MEMBERS,
    MESH_MESSAGES_TOTAL as MESSAGES_TOTAL, MESH_REJECTED_TOTAL as REJECTED_TOTAL,
};

/// Datagrams waiting for the node task; beyond this they are dropped, as a full socket would.
const INBOX: usize = 1024;
/// The largest datagram read (UDP's own maximum payload).
const MAX_DATAGRAM: usize = 65_507;

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// `secret_file` could not be read, holds no key, or a key shorter than
    /// [`seal::MIN_KEY_BYTES`].
    #[error("mesh.secret_file {path}: {reason}")]
    Secret {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The UDP socket could not be bound.
    #[error("mesh.listen {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The rest of the proxy's handle on the running mesh member. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    view: watch::Receiver<Arc<View>>,
    commands: mpsc::UnboundedSender<Command>,
    local: SocketAddr,
}

impl MeshHandle {
    /// The latest published view.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver that wakes on every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// The mesh socket's address (the resolved port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs `target`'s purge on every member (they apply it through [`purge::apply`]).
    pub fn broadcast_purge(&self, target: PurgeTarget) {
        let _ = self.commands.send(Command::Purge(target));
    }

    /// Replaces this member's ejection reports ([`ejection`] calls it).
    pub(crate) fn report_ejections(&self, reports: Vec<state::EjectionReport>) {
        let _ = self.commands.send(Command::Ejections(reports));
    }

    /// Replaces this member's rate-limit demand ([`rate_share`] calls it).
    pub(crate) fn report_rate_usage(&self, usage: Vec<state::RateUsage>) {
        let _ = self.commands.send(Command::RateUsage(usage));
    }

    /// Replaces the tunnel this member announces (`None`: none any more) and spreads the
    /// record: a reload that moves, adds or removes the inbound listener calls it, so peers
    /// dial the port that listens now instead of the one bound at start.
    pub fn announce_tunnel(&self, tunnel: Option<TunnelAd>) {
        let _ = self.commands.send(Command::Tunnel(tunnel));
    }

    /// Sends `Leave` to every live member and stops the node; waits at most `timeout` for the
    /// datagrams to be out. Blocks the calling thread (the node runs on the control runtime).
    pub fn leave(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.commands.send(Command::Leave(done)).is_ok() {
            // Err: the node had already stopped, or is slow; shutdown goes on either way.
            let _ = wait.recv_timeout(timeout);
        }
    }
}

/// Sends over a tokio UDP socket without waiting: a full send buffer drops the datagram, as the
/// network could have.
struct Udp(Arc<UdpSocket>);

impl Transport for Udp {
    fn send(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        if let Err(error) = self.0.try_send_to(&datagram, to) {
            tracing::debug!(%to, %error, "mesh datagram not sent");
        }
    }
}

/// Starts this sidecar's mesh member on `control`: binds the UDP socket, joins through the
/// seeds, and starts the discovery, ejection, purge and tunnel bridges into `shared`. `tunnel`
/// is this member's announcement ([`tunnel::tunnel_ad`]), carried in its record until
/// [`MeshHandle::announce_tunnel`] replaces it.
pub fn start(
    config: &MeshConfig,
    tunnel: Option<TunnelAd>,
    shared: &Arc<Shared>,
    control: &tokio::runtime::Handle,
) -> Result<MeshHandle, MeshError> {
    let secret = |reason: String| MeshError::Secret {
        path: config.secret_file.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&config.secret_file).map_err(|e| secret(e.to_string()))?;
    // Validated with the config already; checked again because the file may have changed since.
    Keys::check_text(&text).map_err(secret)?;
    let keys = Keys::from_text(&text).ok_or_else(|| secret("holds no key".to_owned()))?;
    warn_if_readable_by_others(&config.secret_file);
    let bind = |source| MeshError::Bind {
        address: config.listen,
        source,
    };
    let std_socket = std::net::UdpSocket::bind(config.listen).map_err(bind)?;
    std_socket.set_nonblocking(true).map_err(bind)?;
    let local = std_socket.local_addr().map_err(bind)?;
    let socket = {
        let _context = control.enter();
        Arc::new(UdpSocket::from_std(std_socket).map_err(bind)?)
    };
    let clock = Clock::system();
    let instance: u64 = rand::rngs::SmallRng::from_os_rng().random();
    let setup = Setup {
        id: NodeId {
            addr: local,
            generation: clock.now_ms(),
        },
        seeds: config.seeds.clone(),
        keys,
        services: config
            .advertise
            .iter()
            .map(|a| Service {
                name: a.service.clone(),
                address: a.address,
            })
            .collect(),
        tunnel,
        // Read once: the record keeps the zone for the process's life.
        zone: shared.snapshot().config().runtime.zone.clone(),
        instance,
        clock,
    };
    let (inbox_tx, inbox) = mpsc::channel(INBOX);
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (node, view) = {
        let _context = control.enter();
        Node::new(setup, Udp(Arc::clone(&socket)))
    };
    let receiver = control.spawn(receive(socket, inbox_tx));
    control.spawn(async move {
        node.run(inbox, commands_rx).await;
        receiver.abort();
    });
    let handle = MeshHandle {
        view,
        commands,
        local,
    };
    control.spawn(discovery::run(Arc::downgrade(shared), handle.subscribe()));
    control.spawn(ejection::run(
        Arc::downgrade(shared),
        handle.clone(),
        config.eject_quorum,
        config.eject_window,
    ));
    control.spawn(purge::run(Arc::downgrade(shared), handle.subscribe()));
    control.spawn(tunnel::run(Arc::downgrade(shared), handle.subscribe()));
    control.spawn(rate_share::run(Arc::downgrade(shared), handle.clone()));
    // Tests and scripts read the real port (port 0) from this line.
    tracing::info!(seeds = config.seeds.len(), "mesh listening on {local}");
    Ok(handle)
}

/// Logs a warning when the key file is readable or writable by its group or by others: anyone
/// who can read it can join the mesh, announce services and spread purges. A warning and not an
/// error, because some deployments (a mounted secret with group access) choose it on purpose.
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => tracing::warn!(
            "mesh.secret_file {} is accessible to group or others (mode {:o}); \
             `chmod 600` it: whoever reads the key can join the mesh",
            path.display(),
            meta.permissions().mode() & 0o777
        ),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "mesh.secret_file: no metadata"),
    }
}

async fn receive(socket: Arc<UdpSocket>, inbox: mpsc::Sender<(SocketAddr, Vec<u8>)>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((n, from)) => {
                if inbox.is_closed() {
                    break;
                }
                let _ = inbox.try_send((from, buffer[..n].to_vec()));
            }
            // ICMP port-unreachable from a dead peer surfaces here on some systems: not fatal.
            Err(error) => tracing::debug!(%error, "mesh receive error"),
        }
    }
}
