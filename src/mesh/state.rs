//! What members share beyond liveness: each member's announced services, the endpoints it
//! ejected recently and the cache purges it ran, as one versioned record per member.
//!
//! Only the owner changes its record (bumping `version`); everyone else keeps the newest copy it
//! has seen, compared by `(generation, version)`. That makes merging trivial and order-free —
//! the state-based CRDT of chitchat and Serf's user state — and lets the anti-entropy exchange
//! send just `(member, version)` digests and then the records the other side lacks.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::codec::{NodeId, Version};

/// One announced service instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// The name clusters select with `discovery = { mesh = "NAME" }`.
    pub name: String,
    /// Where to send its traffic.
    pub address: SocketAddr,
}

/// "I ejected this endpoint", with when (the owner's clock, ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjectionReport {
    /// The endpoint's address (the identity every member's clusters share).
    pub endpoint: SocketAddr,
    /// When the owner ejected it.
    pub at_ms: u64,
}

/// What a cache purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PurgeTarget {
    /// Every entry whose path starts with this.
    Prefix(String),
    /// The entry of this URL.
    Key(String),
}

/// A purge a member ran and asks everyone to repeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Purge {
    /// Unique per owner (its state version when it purged), to run each purge once.
    pub id: u64,
    /// When the owner ran it (ms since the epoch); purges are forgotten after a while.
    pub at_ms: u64,
    /// What to remove.
    pub target: PurgeTarget,
}

/// "Reach the workload on my IP through my mTLS tunnel": what a member with `[identity]` and
/// an inbound listener announces. Peers then send connections for that IP to `port` on it,
/// and require the sidecar there to present `identity` (`upstream::dial`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelAd {
    /// The URI SAN of the member's `[identity] cert`.
    pub identity: String,
    /// Its inbound listener's port (on its mesh address's IP).
    pub port: u16,
}

/// One member's shared record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    /// Its owner (and the owner's generation: a restart starts over from version 1).
    pub id: NodeId,
    /// Bumped by the owner on every change.
    pub version: u64,
    /// `[mesh] advertise`.
    pub services: Vec<Service>,
    /// Endpoints the owner ejected within `eject_window`.
    pub ejections: Vec<EjectionReport>,
    /// Purges the owner ran recently (kept [`PURGE_TTL_MS`], long enough to reach everyone).
    pub purges: Vec<Purge>,
    /// The owner's tunnel, when it has one.
    pub tunnel: Option<TunnelAd>,
    /// The owner's `[runtime] zone`: endpoints discovered through its services are in it
    /// (`locality = "prefer_local"`). At most [`MAX_ZONE`] bytes, else not announced.
    pub zone: Option<String>,
    /// The owner's recent demand on its mesh-scoped rate limits (`mesh::rate_share`): per
    /// route, its busiest keys. Last in the record; a field added to a record is a new
    /// `codec::WIRE_VERSION` (postcard is not self-describing: members of one version only
    /// read each other).
    pub rate_usage: Vec<RateUsage>,
}

/// One route's demand at one member: requests per second (admitted or not) of its busiest
/// keys over the last period. Keys are fingerprints (`ratelimit`'s fixed-seed hash of the
/// client IP or header value, the same on every member), never the values themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateUsage {
    /// The route's name (routes are matched by name across members).
    pub route: String,
    /// `(key fingerprint, requests per second)`, busiest first, at most [`MAX_RATE_KEYS`].
    pub keys: Vec<(u64, f32)>,
}

/// A digest part's address range, `[start, end)`; `None` = unbounded.
pub type Range = (Option<SocketAddr>, Option<SocketAddr>);

/// How long a purge stays in its owner's record.
pub const PURGE_TTL_MS: u64 = 60_000;

// Bounds on one member's record. A record travels whole in a `States` datagram, up to
// `STATES_PER_DATAGRAM` (6) of them in one, so 6 × MAX_RECORD_BYTES plus framing must stay under
// UDP's 65,507-byte payload: 8 KiB per record leaves room. Every member holds every record, so
// the bound is also the memory cost per member: 8 MiB at 1,000 members. A record from a peer
// outside any bound is refused whole (a correct member never builds one); our own is trimmed.

/// Largest encoded record, in bytes.
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
// `[mesh] advertise` bounds: defined with the config check that refuses more.
pub use crate::config::mesh_rules::{MAX_SERVICES, MAX_SERVICE_NAME};
/// Ejection reports per record: the newest are kept. A member that ejected more distinct
/// endpoints within `eject_window` is failing broadly; peers need a quorum per endpoint anyway.
pub const MAX_EJECTIONS: usize = 64;
/// Purges per record (within [`PURGE_TTL_MS`]): the newest are kept.
pub const MAX_PURGES: usize = 16;
/// Bytes of one purge's key or prefix; a longer purge runs on this member only.
pub const MAX_PURGE_TARGET: usize = 1024;
/// Routes with a mesh-scoped rate limit per record; more are limited on each member alone.
pub const MAX_RATE_ROUTES: usize = 16;
/// Keys per route in a record (the busiest); demand on the others is not gossiped, see
/// `mesh::rate_share` for what that costs.
pub const MAX_RATE_KEYS: usize = 16;
/// Bytes of a route name in a record (16 routes x (128 + 16 x 13) bytes stay under 6 KiB).
pub const MAX_RATE_ROUTE_NAME: usize = 128;
/// Bytes of a tunnel identity (a SPIFFE ID is at most 2048 by its spec; ours are short, and
/// half a KiB keeps a record well within [`MAX_RECORD_BYTES`]). A longer one is not announced.
pub const MAX_TUNNEL_IDENTITY: usize = 512;
/// Bytes of a zone name (cloud zone names are a few dozen); a longer one is not announced.
pub const MAX_ZONE: usize = 128;

impl PurgeTarget {
    /// Bytes of its key or prefix.
    pub fn len(&self) -> usize {
        match self {
            Self::Prefix(s) | Self::Key(s) => s.len(),
        }
    }

    /// Whether the key or prefix is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TunnelAd {
    /// Whether the announcement is one a peer may act on: a non-empty identity within
    /// [`MAX_TUNNEL_IDENTITY`] and a real port.
    pub fn within_bounds(&self) -> bool {
        !self.identity.is_empty() && self.identity.len() <= MAX_TUNNEL_IDENTITY && self.port != 0
    }
}

impl MemberState {
    fn key(&self) -> (u64, u64) {
        (self.id.generation, self.version)
    }

    /// Its size on the wire (postcard), the unit of [`MAX_RECORD_BYTES`].
    pub fn encoded_len(&self) -> usize {
        // Serialising our own types cannot fail; usize::MAX makes a failure read as too large.
        postcard::to_stdvec(self).map_or(usize::MAX, |v| v.len())
    }

    /// Whether a record received from a peer is within every bound above.
    pub fn within_bounds(&self) -> bool {
        self.services.len() <= MAX_SERVICES
            && self
                .services
                .iter()
                .all(|s| s.name.len() <= MAX_SERVICE_NAME)
            && self.ejections.len() <= MAX_EJECTIONS
            && self.purges.len() <= MAX_PURGES
            && self
                .purges
                .iter()
                .all(|p| p.target.len() <= MAX_PURGE_TARGET)
            && self.tunnel.as_ref().is_none_or(TunnelAd::within_bounds)
            && self.zone.as_ref().is_none_or(|z| z.len() <= MAX_ZONE)
            && self.rate_usage.len() <= MAX_RATE_ROUTES
            && self
                .rate_usage
                .iter()
                .all(|u| u.route.len() <= MAX_RATE_ROUTE_NAME && u.keys.len() <= MAX_RATE_KEYS)
            && self.encoded_len() <= MAX_RECORD_BYTES
    }

    /// Brings our own record within the bounds before it is sent: the newest ejection reports
    /// and purges are kept (purges are in the order they ran), then the oldest purges and
    /// reports go until it fits in [`MAX_RECORD_BYTES`]. Services are within their bounds by
    /// the config check, so they are cut only as a last resort.
    pub fn trim(&mut self) {
        self.services.truncate(MAX_SERVICES);
        self.services.retain(|s| s.name.len() <= MAX_SERVICE_NAME);
        if self.tunnel.as_ref().is_some_and(|t| !t.within_bounds()) {
            self.tunnel = None;
        }
        if self.zone.as_ref().is_some_and(|z| z.len() > MAX_ZONE) {
            self.zone = None;
        }
        self.rate_usage
            .retain(|u| u.route.len() <= MAX_RATE_ROUTE_NAME);
        self.rate_usage.truncate(MAX_RATE_ROUTES);
        for usage in &mut self.rate_usage {
            usage.keys.truncate(MAX_RATE_KEYS);
        }
        self.purges.retain(|p| p.target.len() <= MAX_PURGE_TARGET);
        let extra = self.purges.len().saturating_sub(MAX_PURGES);
        self.purges.drain(..extra);
        trim_ejections(&mut self.ejections);
        while self.encoded_len() > MAX_RECORD_BYTES {
            // Demand goes first: without it those routes are limited per member (1/N each).
            if self.rate_usage.pop().is_some() {
            } else if !self.purges.is_empty() {
                self.purges.remove(0);
            } else if let Some(oldest) =
                (0..self.ejections.len()).min_by_key(|&i| self.ejections[i].at_ms)
            {
                self.ejections.remove(oldest);
            } else if self.services.pop().is_none() {
                break;
            }
        }
    }

    /// Clamps the report and purge stamps of a record received from a peer to our clock's
    /// `now_ms`: a stamp in the future (a peer's clock ahead, or a bad one) would otherwise stay
    /// "within the window" until that future arrives. Clamped on receipt, it expires on the
    /// usual schedule counted from when we received it.
    pub fn clamp_stamps(&mut self, now_ms: u64) {
        for report in &mut self.ejections {
            report.at_ms = report.at_ms.min(now_ms);
        }
        for purge in &mut self.purges {
            purge.at_ms = purge.at_ms.min(now_ms);
        }
    }
}

/// Keeps the newest [`MAX_EJECTIONS`] of `reports`, sorted by endpoint as the ejection bridge
/// sends them (a list within the bound is left as it is).
pub fn trim_ejections(reports: &mut Vec<EjectionReport>) {
    if reports.len() > MAX_EJECTIONS {
        reports.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        reports.truncate(MAX_EJECTIONS);
        reports.sort_by_key(|e| e.endpoint);
    }
}

/// How long a member that left or died is remembered as gone (stale copies of its record are
/// refused meanwhile): foca's own `remove_down_after`, after which foca forgets it too.
pub const GONE_TTL_MS: u64 = 600_000;
/// Members remembered as gone at most, and the cap the node puts on its per-address maps: eight
/// times a 1,000-member mesh, so only churn far beyond a whole fleet's turnover within
/// [`GONE_TTL_MS`] reaches it; the oldest entries go first.
pub const MAX_REMEMBERED: usize = 8192;

/// A 64-bit hash of a member's identity and `value` (a record's version, or foca's incarnation
/// and state): the unit of the bucket fingerprints ([`Table::summary`]) and of the node's check
/// for membership changes. xxh3, whose output bits are independent enough for sums and XORs of
/// many of them to stay collision-free in practice.
pub fn member_hash(id: &NodeId, value: u64) -> u64 {
    let mut bytes = [0u8; 42];
    let len = match id.addr.ip() {
        std::net::IpAddr::V4(ip) => {
            bytes[..4].copy_from_slice(&ip.octets());
            4
        }
        std::net::IpAddr::V6(ip) => {
            bytes[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    bytes[len..len + 2].copy_from_slice(&id.addr.port().to_le_bytes());
    bytes[len + 2..len + 10].copy_from_slice(&id.generation.to_le_bytes());
    bytes[len + 10..len + 18].copy_from_slice(&value.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes[..len + 18])
}

/// Drops the entries of `map` beyond `cap`, oldest (smallest `stamp`) first.
pub fn keep_newest<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    stamp: impl Fn(&V) -> u64,
) {
    let extra = map.len().saturating_sub(cap);
    if extra == 0 {
        return;
    }
    let mut by_age: Vec<(u64, K)> = map.iter().map(|(k, v)| (stamp(v), *k)).collect();
    by_age.select_nth_unstable_by_key(extra - 1, |&(at, _)| at);
    for (_, key) in &by_age[..extra] {
        map.remove(key);
    }
}

/// Every member's newest record, keyed by mesh address.
#[derive(Debug, Default)]
pub struct Table {
    states: HashMap<SocketAddr, MemberState>,
    /// Members that left or were declared dead, with their generation and when (ms): records of
    /// that generation or older are refused, so a peer's stale copy does not bring them back.
    /// Kept [`GONE_TTL_MS`], at most [`MAX_REMEMBERED`] (see [`Table::prune`]).
    gone: HashMap<SocketAddr, (u64, u64)>,
}

impl Table {
    /// Keeps `state` if it is newer than what we hold. Returns whether it was.
    pub fn merge(&mut self, state: MemberState) -> bool {
        if self
            .gone
            .get(&state.id.addr)
            .is_some_and(|&(g, _)| state.id.generation <= g)
        {
            return false;
        }
        match self.states.get(&state.id.addr) {
            Some(held) if held.key() >= state.key() => false,
            _ => {
                self.states.insert(state.id.addr, state);
                true
            }
        }
    }

    /// Forgets `id`'s record (it left or is dead, noted at `now_ms`) and refuses copies of it
    /// for [`GONE_TTL_MS`].
    pub fn forget(&mut self, id: NodeId, now_ms: u64) {
        if self
            .states
            .get(&id.addr)
            .is_some_and(|s| s.id.generation <= id.generation)
        {
            self.states.remove(&id.addr);
        }
        let gone = self.gone.entry(id.addr).or_insert((id.generation, now_ms));
        *gone = (gone.0.max(id.generation), now_ms);
        keep_newest(&mut self.gone, MAX_REMEMBERED, |&(_, at)| at);
    }

    /// Forgets members gone for longer than [`GONE_TTL_MS`] (the node calls it periodically).
    pub fn prune(&mut self, now_ms: u64) {
        self.gone
            .retain(|_, &mut (_, at)| now_ms.saturating_sub(at) < GONE_TTL_MS);
    }

    /// How many members are remembered as gone.
    pub fn gone_len(&self) -> usize {
        self.gone.len()
    }

    /// The record of the member at `addr`.
    pub fn get(&self, addr: SocketAddr) -> Option<&MemberState> {
        self.states.get(&addr)
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = &MemberState> {
        self.states.values()
    }

    /// What we hold, as `(member, version)` pairs.
    pub fn digest(&self) -> Vec<Version> {
        self.states
            .values()
            .map(|s| Version {
                id: s.id,
                version: s.version,
            })
            .collect()
    }

    /// What we hold, sorted by address, split into parts of at most `per_part` versions, each
    /// with the address range it covers (`[start, end)`, `None` = unbounded); together the
    /// ranges cover every address.
    pub fn digest_parts(&self, per_part: usize) -> Vec<(Vec<Version>, Range)> {
        let mut all = self.digest();
        all.sort_by_key(|v| v.id.addr);
        let chunks: Vec<Vec<Version>> = all
            .chunks(per_part.max(1))
            .map(<[Version]>::to_vec)
            .collect();
        if chunks.is_empty() {
            return vec![(Vec::new(), (None, None))];
        }
        let starts: Vec<Option<SocketAddr>> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    None
                } else {
                    c.first().map(|v| v.id.addr)
                }
            })
            .collect();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let end = starts.get(i + 1).copied().flatten();
                (c, (starts[i], end))
            })
            .collect()
    }

    /// The records we hold in `range` that are newer than (or missing from) `theirs`.
    pub fn newer_in(&self, theirs: &[Version], range: Range) -> Vec<MemberState> {
        let (start, end) = range;
        self.newer_than(theirs)
            .into_iter()
            .filter(|s| start.is_none_or(|a| s.id.addr >= a) && end.is_none_or(|b| s.id.addr < b))
            .collect()
    }

    /// The records we hold that are newer than (or missing from) `theirs`.
    pub fn newer_than(&self, theirs: &[Version]) -> Vec<MemberState> {
        let known: HashMap<SocketAddr, (u64, u64)> = theirs
            .iter()
            .map(|v| (v.id.addr, (v.id.generation, v.version)))
            .collect();
        self.states
            .values()
            .filter(|s| known.get(&s.id.addr).is_none_or(|&k| s.key() > k))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(port: u16, generation: u64, version: u64) -> MemberState {
        MemberState {
            id: NodeId {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                generation,
            },
            version,
            services: Vec::new(),
            ejections: Vec::new(),
            purges: Vec::new(),
            tunnel: None,
            zone: None,
            rate_usage: Vec::new(),
        }
    }

    #[test]
    fn newest_wins_in_any_order() {
        let mut a = Table::default();
        let mut b = Table::default();
        let updates = [
            state(1, 1, 1),
            state(1, 1, 3),
            state(1, 1, 2),
            state(2, 1, 1),
        ];
        for s in updates.iter().cloned() {
            a.merge(s);
        }
        for s in updates.iter().rev().cloned() {
            b.merge(s);
        }
        assert_eq!(a.get(state(1, 1, 1).id.addr).map(|s| s.version), Some(3));
        assert_eq!(b.get(state(1, 1, 1).id.addr).map(|s| s.version), Some(3));
        // A new generation beats any version of the old one.
        assert!(a.merge(state(1, 2, 1)));
        assert!(!a.merge(state(1, 1, 9)));
    }

    #[test]
    fn digests_select_what_the_other_side_lacks() {
        let mut a = Table::default();
        let mut b = Table::default();
        a.merge(state(1, 1, 2));
        a.merge(state(2, 1, 1));
        b.merge(state(1, 1, 1));
        b.merge(state(3, 1, 1));
        let for_b: Vec<u16> = a
            .newer_than(&b.digest())
            .iter()
            .map(|s| s.id.addr.port())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(for_b, [1, 2]);
        for s in a.newer_than(&b.digest()) {
            b.merge(s);
        }
        for s in b.newer_than(&a.digest()) {
            a.merge(s);
        }
        assert!(a.newer_than(&b.digest()).is_empty());
        assert!(b.newer_than(&a.digest()).is_empty());
        assert_eq!(a.iter().count(), 3);
    }

    #[test]
    fn a_digest_in_parts_asks_only_for_what_each_part_covers() {
        let mut a = Table::default();
        let mut b = Table::default();
        for port in 1..=10 {
            a.merge(state(port, 1, 1));
            b.merge(state(port, 1, if port == 7 { 2 } else { 1 }));
        }
        let parts = a.digest_parts(3);
        assert_eq!(parts.len(), 4);
        let mut sent = Vec::new();
        for (versions, range) in parts {
            sent.extend(b.newer_in(&versions, range));
        }
        assert_eq!(sent.len(), 1, "only the one newer record: {sent:?}");
        assert_eq!(sent[0].id.addr.port(), 7);
    }

    #[test]
    fn forgotten_members_stay_gone_until_a_new_generation() {
        let mut t = Table::default();
        t.merge(state(1, 4, 1));
        t.forget(state(1, 4, 1).id, 1_000);
        assert!(t.get(state(1, 4, 1).id.addr).is_none());
        assert!(
            !t.merge(state(1, 4, 2)),
            "a stale copy does not resurrect it"
        );
        assert!(t.merge(state(1, 5, 1)), "a rejoin does");
    }

    #[test]
    fn gone_members_are_forgotten_after_the_ttl_and_beyond_the_cap() {
        let mut t = Table::default();
        t.forget(state(1, 4, 1).id, 1_000);
        t.prune(1_000 + GONE_TTL_MS - 1);
        assert_eq!(t.gone_len(), 1, "still within the TTL");
        t.prune(1_000 + GONE_TTL_MS);
        assert_eq!(t.gone_len(), 0, "forgotten after the TTL");

        // Churn past the cap: the oldest go first, the newest stay refused.
        let churn = MAX_REMEMBERED + 500;
        for i in 0..churn {
            let port = u16::try_from(i % 60_000).expect("port") + 1;
            let ip = [10, 1, u8::try_from(i / 60_000).expect("ip"), 1];
            let id = NodeId {
                addr: SocketAddr::from((ip, port)),
                generation: 1,
            };
            t.forget(id, 2_000 + i as u64);
        }
        assert_eq!(t.gone_len(), MAX_REMEMBERED);
        let newest = NodeId {
            addr: SocketAddr::from(([10, 1, 0, 1], u16::try_from(churn).expect("port"))),
            generation: 1,
        };
        let mut stale = state(0, 1, 9);
        stale.id = newest;
        assert!(!t.merge(stale), "the newest departure is still refused");
    }

    fn report(port: u16, at_ms: u64) -> EjectionReport {
        EjectionReport {
            endpoint: SocketAddr::from(([127, 0, 0, 2], port)),
            at_ms,
        }
    }

    #[test]
    fn an_oversized_record_is_refused_and_our_own_is_trimmed_to_fit() {
        let mut big = state(1, 1, 1);
        big.ejections = (0..200u16).map(|i| report(i + 1, u64::from(i))).collect();
        assert!(!big.within_bounds(), "too many reports");
        big.trim();
        assert!(big.within_bounds());
        assert_eq!(big.ejections.len(), MAX_EJECTIONS);
        assert!(
            big.ejections
                .iter()
                .all(|e| e.at_ms >= 200 - MAX_EJECTIONS as u64),
            "the newest reports are kept"
        );

        let mut purges = state(2, 1, 1);
        purges.purges = (0..40u64)
            .map(|i| Purge {
                id: i,
                at_ms: i,
                target: PurgeTarget::Prefix(format!("/{i}/{}", "x".repeat(900))),
            })
            .collect();
        assert!(!purges.within_bounds());
        purges.trim();
        assert!(purges.within_bounds());
        assert!(purges.encoded_len() <= MAX_RECORD_BYTES);
        assert_eq!(purges.purges.last().map(|p| p.id), Some(39), "newest kept");

        let mut long_name = state(3, 1, 1);
        long_name.services = vec![Service {
            name: "s".repeat(MAX_SERVICE_NAME + 1),
            address: SocketAddr::from(([127, 0, 0, 1], 80)),
        }];
        assert!(!long_name.within_bounds());

        let mut many = state(4, 1, 1);
        many.services = (0..=MAX_SERVICES as u16)
            .map(|i| Service {
                name: format!("svc{i}"),
                address: SocketAddr::from(([127, 0, 0, 1], i + 1)),
            })
            .collect();
        assert!(!many.within_bounds());
        many.trim();
        assert_eq!(many.services.len(), MAX_SERVICES);
        assert!(many.within_bounds());

        let mut zoned = state(6, 1, 1);
        zoned.zone = Some("a".repeat(MAX_ZONE));
        assert!(zoned.within_bounds());
        zoned.zone = Some("a".repeat(MAX_ZONE + 1));
        assert!(!zoned.within_bounds(), "zone too long");
        zoned.trim();
        assert_eq!(zoned.zone, None, "not announced rather than cut");

        let mut tunnel = state(5, 1, 1);
        tunnel.tunnel = Some(TunnelAd {
            identity: "spiffe://local/".to_owned() + &"x".repeat(MAX_TUNNEL_IDENTITY),
            port: 15006,
        });
        assert!(!tunnel.within_bounds(), "identity too long");
        tunnel.trim();
        assert_eq!(tunnel.tunnel, None, "not announced rather than cut");
        tunnel.tunnel = Some(TunnelAd {
            identity: "spiffe://local/a".to_owned(),
            port: 0,
        });
        assert!(!tunnel.within_bounds(), "port 0");
        tunnel.tunnel = Some(TunnelAd {
            identity: "spiffe://local/a".to_owned(),
            port: 15006,
        });
        assert!(tunnel.within_bounds());
    }

    #[test]
    fn future_stamps_are_clamped_to_now() {
        let mut s = state(1, 1, 1);
        s.ejections = vec![report(1, u64::MAX), report(2, 500)];
        s.purges = vec![Purge {
            id: 1,
            at_ms: 10_000_000,
            target: PurgeTarget::Key("http://a/".into()),
        }];
        s.clamp_stamps(1_000);
        assert_eq!(s.ejections[0].at_ms, 1_000);
        assert_eq!(s.ejections[1].at_ms, 500, "a past stamp is kept");
        assert_eq!(s.purges[0].at_ms, 1_000);
    }
}
