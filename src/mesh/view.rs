//! What the mesh publishes to the rest of the proxy: the member list (for `/mesh/members` and
//! `switchyard_mesh_members{state}`) and the live members' records (services for discovery,
//! ejection reports for the quorum, purges for the cache).

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::codec::NodeId;
use super::state::{MemberState, Service, TunnelAd};

/// A member's liveness as `/mesh/members` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Someone's probe failed; it has until the suspicion timeout to refute.
    Suspect,
    /// Declared down by the cluster.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberStatus {
    /// Every status, for the gauge's label values.
    pub const ALL: [Self; 4] = [Self::Alive, Self::Suspect, Self::Dead, Self::Left];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }

    /// Whether its services count (SWIM treats a suspect as alive until declared down).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// One member as seen from here.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Its identity.
    pub id: NodeId,
    /// Its liveness.
    pub state: MemberStatus,
    /// foca's incarnation number (bumped when it refutes a suspicion).
    pub incarnation: u16,
    /// Its record (services, tunnel), none until it arrives; shared with the node's table, so
    /// a republished view copies a pointer per member.
    pub record: Option<Arc<MemberState>>,
    /// When we last opened a datagram from it (ms since the epoch; 0 = never).
    pub last_seen_ms: u64,
}

impl MemberView {
    /// What it announces (empty until its record arrives).
    pub fn services(&self) -> &[Service] {
        self.record.as_ref().map_or(&[], |r| &r.services)
    }

    /// Its tunnel announcement (none until its record arrives).
    pub fn tunnel(&self) -> Option<&TunnelAd> {
        self.record.as_ref().and_then(|r| r.tunnel.as_ref())
    }
}

/// The published state of one node.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Our own identity.
    pub local: Option<NodeId>,
    /// Every member we know, ourselves first among equals, sorted by address.
    pub members: Vec<MemberView>,
    /// The records of live members (ourselves included), shared with the node's table.
    pub records: Vec<Arc<MemberState>>,
    /// Datagrams rejected so far (bad key, replay, malformed).
    pub rejected: u64,
}

impl View {
    /// A view of `members` seen from `local` (records shared or owned: the node passes the
    /// table's shared ones, tests plain ones).
    pub fn new(
        local: NodeId,
        members: Vec<MemberView>,
        records: impl IntoIterator<Item = impl Into<Arc<MemberState>>>,
        rejected: u64,
    ) -> Self {
        Self {
            local: Some(local),
            members,
            records: records.into_iter().map(Into::into).collect(),
            rejected,
        }
    }

    /// The addresses live members announce for `service`, sorted, unique.
    pub fn service_endpoints(&self, service: &str) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .records
            .iter()
            .flat_map(|r| r.services.iter())
            .filter(|s| s.name == service)
            .map(|s| s.address)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// [`Self::service_endpoints`] with the zone of the member announcing each (its record's
    /// `zone`), for `locality = "prefer_local"`. An address two members announce takes the
    /// first record's zone in the view's order.
    pub fn service_endpoints_zoned(&self, service: &str) -> Vec<(SocketAddr, Option<String>)> {
        let mut out: Vec<(SocketAddr, Option<String>)> = self
            .records
            .iter()
            .flat_map(|r| r.services.iter().map(move |s| (s, &r.zone)))
            .filter(|(s, _)| s.name == service)
            .map(|(s, zone)| (s.address, zone.clone()))
            .collect();
        // Stable: the first announcer of an address stays first, and dedup keeps it.
        out.sort_by_key(|(address, _)| *address);
        out.dedup_by_key(|(address, _)| *address);
        out
    }

    /// The state of the member at `addr`, if known (a binary search: `members` is sorted by
    /// address; the first of a repeated address, as a scan would find).
    pub fn status(&self, addr: SocketAddr) -> Option<MemberStatus> {
        let first = self.members.partition_point(|m| m.id.addr < addr);
        self.members
            .get(first)
            .filter(|m| m.id.addr == addr)
            .map(|m| m.state)
    }

    /// Sets `switchyard_mesh_members{state}`.
    pub fn record_metrics(&self) {
        for status in MemberStatus::ALL {
            let n = self.members.iter().filter(|m| m.state == status).count();
            // Member counts are small: exact in f64.
            metrics::gauge!(super::MEMBERS, "state" => status.as_str()).set(n as f64);
        }
    }
}

impl View {
    /// `GET /mesh/members`: `{ "members": [ { id, address, state, incarnation, services,
    /// tunnel, last_seen } ] }`. `id` is `address#generation`; `tunnel` is `{ identity, port }`
    /// or null; `last_seen` is RFC 3339 (null = never).
    pub fn members_json(&self) -> serde_json::Value {
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| {
                let services: Vec<serde_json::Value> = m
                    .services()
                    .iter()
                    .map(|s| serde_json::json!({ "service": s.name, "address": s.address.to_string() }))
                    .collect();
                let last_seen = (m.last_seen_ms > 0).then(|| {
                    crate::wire::time::rfc3339(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.last_seen_ms),
                    )
                });
                serde_json::json!({
                    "id": format!("{}#{}", m.id.addr, m.id.generation),
                    "address": m.id.addr.to_string(),
                    "state": m.state.as_str(),
                    "incarnation": m.incarnation,
                    "services": services,
                    "tunnel": m.tunnel().map(|t| serde_json::json!({
                        "identity": t.identity,
                        "port": t.port,
                    })),
                    "last_seen": last_seen,
                    "local": Some(m.id) == self.local,
                })
            })
            .collect();
        serde_json::json!({ "members": members })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(port: u16, zone: Option<&str>, services: &[(&str, u16)]) -> MemberState {
        MemberState {
            services: services
                .iter()
                .map(|&(name, p)| Service {
                    name: name.into(),
                    address: SocketAddr::from(([10, 0, 0, 1], p)),
                })
                .collect(),
            zone: zone.map(str::to_owned),
            ..MemberState::new(NodeId {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                generation: 1,
            })
        }
    }

    #[test]
    fn service_endpoints_carry_the_announcing_members_zone() {
        let local = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            generation: 1,
        };
        let records = vec![
            record(1, Some("a"), &[("orders", 81), ("users", 90)]),
            record(2, Some("b"), &[("orders", 80)]),
            record(3, None, &[("orders", 82), ("orders", 81)]),
        ];
        let view = View::new(local, Vec::new(), records, 0);
        let at = |p| SocketAddr::from(([10, 0, 0, 1], p));
        assert_eq!(
            view.service_endpoints_zoned("orders"),
            vec![
                (at(80), Some("b".to_owned())),
                (at(81), Some("a".to_owned())),
                (at(82), None),
            ]
        );
        assert_eq!(
            view.service_endpoints("orders"),
            vec![at(80), at(81), at(82)]
        );
    }
}
