//! The mesh wire format inside a sealed datagram: `[WIRE_VERSION][postcard(Wire)]`.
//!
//! `Wire::Swim` carries foca's own bytes (probes, acks, membership updates); the rest is ours:
//! the anti-entropy exchange of member state (summary → digests of the differing buckets →
//! deltas; `state`'s module doc), rumors (a changed state pushed at once), and the graceful
//! `Leave`. postcard because foca already speaks it (compact varints,
//! serde derive), so one encoding covers both layers.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::state::MemberState;

/// Second byte of every datagram (after the seal); a node drops versions it does not know.
/// 2: member records carry `tunnel` (issue 27). 3: records carry `zone` and `rate_usage`
/// (issue 28). 4: anti-entropy opens with a bucketed `Summary` and `Digest` lists one bucket's
/// versions; foca packets carry accusations as custom broadcasts (`mesh::suspicion`) (issue 29).
/// Members of different versions do not read each other's datagrams, so a rolling
/// upgrade splits the mesh until every member runs the new version (postcard is not
/// self-describing: an older member would misread a newer record).
pub const WIRE_VERSION: u8 = 5;

/// A member's identity: its mesh address and a generation that grows on every start and every
/// rejoin, so a restarted or renewed member wins over its old self (foca's address conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// Where the member's mesh socket listens (what it advertises as `listen`).
    pub addr: SocketAddr,
    /// Start time in ms since the epoch, then +1 per rejoin.
    pub generation: u64,
}

#[cfg(test)]
impl NodeId {
    /// The `i`-th member of a test mesh (generation 1): `10.a.b.c:7946` for `i`'s low three
    /// bytes, so the mesh unit tests name members by number.
    pub(crate) fn test_member(i: u32) -> Self {
        let [_, a, b, c] = i.to_be_bytes();
        Self {
            addr: SocketAddr::from(([10, a, b, c], 7946)),
            generation: 1,
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// Declared down (a partition, a pause): come back as the next generation at once instead of
    /// staying defunct (foca's auto-rejoin).
    fn renew(&self) -> Option<Self> {
        Some(Self {
            addr: self.addr,
            generation: self.generation + 1,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// One (member, version) pair of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The member whose state this is.
    pub id: NodeId,
    /// Its state's version.
    pub version: u64,
}

/// Every message the mesh sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Wire {
    /// foca's datagram, passed through.
    Swim(Vec<u8>),
    /// Anti-entropy, step 1: the opener's summary, one fingerprint per bucket
    /// (`state::Table::summary`, little-endian: 8 bytes each on the wire, where a varint
    /// would take 10 for a hash).
    Summary(Vec<[u8; 8]>),
    /// Anti-entropy, step 2: the sender's versions of every member in `buckets` (the buckets the
    /// summaries disagree on). `reply` = answer with your own digest of the same buckets too
    /// (set by the side that received the summary, so the exchange ends with the records each
    /// side lacks).
    Digest {
        /// The sender's versions for members in `buckets`.
        versions: Vec<Version>,
        /// The buckets this digest covers, whole: a member of them missing from `versions` is
        /// one the sender lacks (a digest split over several datagrams covers its own buckets).
        buckets: Vec<u16>,
        /// Whether the receiver should send its digest back (push-pull).
        reply: bool,
    },
    /// States the receiver lacked (newer than its digest said); also used for rumors.
    States(Vec<MemberState>),
    /// The sender is leaving for good (graceful shutdown): drop it at once.
    Leave(NodeId),
    /// Members the sender holds as dead, with their incarnation: sent with each anti-entropy
    /// digest, so a member that missed a death's few gossip transmissions learns it within a
    /// couple of exchanges instead of probing the dead member itself.
    Down(Vec<(NodeId, u16)>),
    /// A suspicion check's ping ([`super::check`]): answer with [`Wire::CheckAck`] carrying
    /// the same nonce.
    Check(u64),
    /// The answer to a [`Wire::Check`]: the sender is alive.
    CheckAck(u64),
}

/// Encodes `wire` with the version byte.
pub fn encode(wire: &Wire) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Serialising our own types into a Vec cannot fail.
    out.extend(postcard::to_stdvec(wire).unwrap_or_default());
    out
}

/// Decodes a payload; `None` for an unknown version or bytes that do not parse.
pub fn decode(bytes: &[u8]) -> Option<Wire> {
    match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::state::{Service, TunnelAd};

    #[test]
    fn wire_round_trips_and_rejects_other_versions() {
        let id = NodeId {
            addr: "127.0.0.1:7946".parse().expect("addr"),
            generation: 5,
        };
        let state = MemberState {
            id,
            version: 3,
            services: vec![Service {
                name: "orders".into(),
                address: "127.0.0.1:8080".parse().expect("addr"),
            }],
            ejections: Vec::new(),
            purges: Vec::new(),
            tunnel: Some(TunnelAd {
                identity: "spiffe://local/orders".into(),
                port: 15006,
            }),
            zone: Some("eu-west-1a".into()),
            rate_usage: vec![super::super::state::RateUsage {
                route: "api".into(),
                keys: vec![(1, 60.0), (0xfeed, 2.5)],
            }],
        };
        for wire in [
            Wire::Swim(vec![1, 2, 3]),
            Wire::Summary(vec![[1, 2, 3, 4, 5, 6, 7, 8]; 64]),
            Wire::Digest {
                versions: vec![Version { id, version: 3 }],
                buckets: vec![0, 63],
                reply: true,
            },
            Wire::States(vec![state]),
            Wire::Leave(id),
            Wire::Down(vec![(id, 2)]),
        ] {
            let bytes = encode(&wire);
            assert_eq!(decode(&bytes), Some(wire));
            let mut other = bytes.clone();
            other[0] = WIRE_VERSION + 1;
            assert_eq!(decode(&other), None);
        }
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[WIRE_VERSION, 0xff, 0xff]), None);
    }

    #[test]
    fn renewed_identity_wins() {
        use foca::Identity;
        let id = NodeId {
            addr: "127.0.0.1:1".parse().expect("addr"),
            generation: 1,
        };
        let next = id.renew().expect("renews");
        assert!(next.win_addr_conflict(&id));
        assert!(!id.win_addr_conflict(&next));
    }
}
