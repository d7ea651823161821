//! The mesh side of the mTLS tunnel: what this member announces ([`tunnel_ad`]) and the table of
//! meshed workload IPs built from what live members announce ([`meshed_peers`]), published into
//! `state::Shared` on every view ([`run`]).
//!
//! A workload IP is meshed when a live member (alive or suspect, as for services) whose mesh
//! address has that IP announces a tunnel. Our own record is left out: traffic to our own IP
//! never needs a tunnel to ourselves. Dead and left members drop out with their records, so a
//! peer that goes away is dialled directly again (and refused there if it was strict, which is
//! the correct failure: we can no longer vouch for it).

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use super::state::TunnelAd;
use super::View;
use crate::config::Config;
use crate::state::{MeshedPeers, Shared, TunnelPeer};

/// What this member announces: our identity (the URI SAN of `[identity] cert`) and
/// `inbound_port`, the port of the listener with `mode = "inbound"` (peers connect to it on our
/// mesh address's IP). `None` unless `[identity]`, `[mesh]` and an inbound listener are all
/// configured and the identity loads (a start already refused files that do not load).
pub fn tunnel_ad(config: &Config, inbound_port: Option<u16>) -> Option<TunnelAd> {
    let spec = config.identity.as_ref()?;
    config.mesh.as_ref()?;
    let port = inbound_port.filter(|&p| p != 0)?;
    let tls = match crate::tls::store::tunnel(spec) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(%error, "[identity] does not load: no tunnel announced");
            return None;
        }
    };
    let ad = TunnelAd {
        identity: tls.identity().to_owned(),
        port,
    };
    if !ad.within_bounds() {
        tracing::error!(
            identity = %ad.identity,
            "tunnel identity longer than {} bytes: not announced",
            super::state::MAX_TUNNEL_IDENTITY
        );
        return None;
    }
    Some(ad)
}

/// The meshed table of `view`: every live member's tunnel but our own, by its mesh address's
/// IP. Two live members on one IP (a restart's overlap, tests on loopback) leave the one with
/// the higher address in the table, so the outcome does not depend on record order.
pub fn meshed_peers(view: &View) -> MeshedPeers {
    let mut records: Vec<_> = view
        .records
        .iter()
        .filter(|r| Some(r.id) != view.local)
        .filter_map(|r| Some((r.id, r.tunnel.as_ref().filter(|t| t.within_bounds())?)))
        .collect();
    records.sort_by_key(|(id, _)| *id);
    MeshedPeers::new(records.into_iter().map(|(id, ad)| {
        let ip: IpAddr = id.addr.ip();
        (
            ip,
            TunnelPeer {
                identity: Arc::from(ad.identity.as_str()),
                port: ad.port,
            },
        )
    }))
}

/// Publishes the meshed table into `shared` for every new view (records or liveness changed),
/// skipping unchanged tables; runs until the proxy is gone or the mesh node stops.
pub async fn run(shared: Weak<Shared>, mut views: watch::Receiver<Arc<View>>) {
    let mut last: Option<MeshedPeers> = None;
    loop {
        let table = meshed_peers(&views.borrow_and_update());
        if last.as_ref() != Some(&table) {
            let Some(proxy) = shared.upgrade() else {
                return;
            };
            tracing::debug!(meshed = table.len(), "mesh: tunnel table changed");
            proxy.publish_meshed(table.clone());
            last = Some(table);
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::mesh::state::MemberState;
    use crate::mesh::NodeId;

    fn record(addr: &str, tunnel: Option<(&str, u16)>) -> MemberState {
        MemberState {
            tunnel: tunnel.map(|(identity, port)| TunnelAd {
                identity: identity.to_owned(),
                port,
            }),
            ..MemberState::new(NodeId {
                addr: addr.parse::<SocketAddr>().expect("addr"),
                generation: 1,
            })
        }
    }

    #[test]
    fn live_members_tunnels_by_ip_without_our_own() {
        let ours = record("10.0.0.1:7946", Some(("spiffe://local/me", 15006)));
        let view = View::new(
            ours.id,
            Vec::new(),
            vec![
                ours.clone(),
                record("10.0.0.2:7946", Some(("spiffe://local/orders", 15006))),
                record("10.0.0.3:7946", None),
                record("[fd00::4]:7946", Some(("spiffe://local/web", 16000))),
                // Out of bounds (port 0): a peer's record like it is never acted on.
                record("10.0.0.5:7946", Some(("spiffe://local/bad", 0))),
            ],
            0,
        );
        let table = meshed_peers(&view);
        assert_eq!(table.len(), 2, "{table:?}");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(table.get(ip("10.0.0.1")), None, "not ourselves");
        assert_eq!(
            table.get(ip("10.0.0.2")),
            Some(&TunnelPeer {
                identity: Arc::from("spiffe://local/orders"),
                port: 15006
            })
        );
        assert_eq!(table.get(ip("10.0.0.3")), None, "no tunnel announced");
        assert_eq!(table.get(ip("fd00::4")).map(|p| p.port), Some(16000));
        assert_eq!(table.get(ip("10.0.0.5")), None);
        assert_eq!(table.get(ip("10.0.0.9")), None, "unknown IP");
    }

    #[test]
    fn two_members_on_one_ip_resolve_the_same_whatever_the_order() {
        let a = record("127.0.0.1:7001", Some(("spiffe://local/a", 15001)));
        let b = record("127.0.0.1:7002", Some(("spiffe://local/b", 15002)));
        let local = record("127.0.0.1:7000", None).id;
        let one = meshed_peers(&View::new(local, Vec::new(), vec![a.clone(), b.clone()], 0));
        let other = meshed_peers(&View::new(local, Vec::new(), vec![b, a], 0));
        assert_eq!(one, other);
        let ip = "127.0.0.1".parse().expect("ip");
        assert_eq!(one.get(ip).map(|p| p.port), Some(15002));
    }

    #[test]
    fn no_announcement_without_identity_mesh_and_inbound_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::tls::fixtures::ca(dir.path(), "ca");
        crate::tls::fixtures::identity(&ca, "a", Some("spiffe://local/a"), &ca);
        std::fs::write(
            dir.path().join("mesh.key"),
            "a mesh key of at least thirty-two bytes\n",
        )
        .expect("key");
        let base = "[[listeners]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\n\
                    [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n";
        let identity = "[identity]\ncert = \"ca/a.pem\"\nkey = \"ca/a.key\"\nca = \"ca/ca.pem\"\n";
        let mesh = "[mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"mesh.key\"\n";
        let parse = |text: String| {
            crate::config::parse(&text, &dir.path().join("sy.toml")).expect("config")
        };
        let full = parse(format!("{base}{identity}{mesh}"));
        assert_eq!(
            tunnel_ad(&full, Some(15006)),
            Some(TunnelAd {
                identity: "spiffe://local/a".to_owned(),
                port: 15006
            })
        );
        assert_eq!(tunnel_ad(&full, None), None, "no inbound listener");
        assert_eq!(
            tunnel_ad(&parse(format!("{base}{mesh}")), Some(15006)),
            None
        );
        assert_eq!(
            tunnel_ad(&parse(format!("{base}{identity}")), Some(15006)),
            None
        );
    }
}
