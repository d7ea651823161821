//! What members share beyond liveness: each member's announced services, the endpoints it
//! ejected recently and the cache purges it ran, as one versioned record per member.
//!
//! Only the owner changes its record (bumping `version`); everyone else keeps the newest copy it
//! has seen, compared by `(generation, version)`. That makes merging trivial and order-free —
//! the state-based CRDT of chitchat and Serf's user state — and lets the anti-entropy exchange
//! compare versions and then send only the records the other side lacks.
//!
//! # Anti-entropy that scales
//!
//! Comparing every `(member, version)` pair on every exchange costs each member O(n) bytes per
//! exchange, so the mesh's total O(n²): at a thousand members that alone is tens of KB/s per
//! member. Instead the table is cut into [`BUCKETS`] buckets by a hash of the member's address,
//! and each bucket is summarised by one 64-bit fingerprint, the XOR of
//! [`member_hash`]`(member, version)` over its records, kept up to date on every merge and forget
//! (XOR removes the old hash and adds the new one in O(1)). An exchange then goes:
//!
//! 1. the opener sends its summary, [`BUCKETS`] fingerprints (a fixed size, whatever the mesh's);
//! 2. the other side compares it with its own; where they agree (the steady state: every
//!    bucket) the exchange ends there. Buckets the opener holds nothing in get their records
//!    at once; the other differing buckets are expanded into their `(member, version)` pairs
//!    ([`Table::versions_in`]), up to [`MAX_VERSIONS_PER_EXCHANGE`], rotating which buckets go
//!    first so that a large difference is worked through over a few exchanges;
//! 3. each side sends the records of those buckets the other lacks ([`Table::newer_in`]), at
//!    most [`MAX_RECORD_BYTES_PER_EXCHANGE`] per exchange, the rest on the next.
//!
//! So an exchange with nothing to repair costs the summary alone, independent of the member
//! count; one that repairs costs the summary, plus the versions of the differing buckets (about
//! n / [`BUCKETS`] each), plus the differing records themselves. What grows with the mesh is the
//! size of a bucket, paid only where something differs; a two-level summary (fingerprints of
//! groups of buckets) would make that logarithmic too, and is not needed at the sizes simulated
//! (docs/mesh.md, "Scale", has the bytes per exchange at 200, 500 and 1,000 members).
//!
//! The idea is old. Set reconciliation — two parties each holding a set, learning the
//! difference at a cost that depends on the difference rather than on the sets — was studied
//! by Minsky and Trachtenberg ("Set reconciliation with nearly optimal communication
//! complexity", 2003), with characteristic polynomials that reach the theoretical minimum, and
//! by Byers, Considine, Mitzenmacher and Rost ("Informed content delivery across adaptive
//! overlay networks", 2002), with approximate summaries for peers that cannot afford exactness.
//! Amazon's Dynamo and, after it, Cassandra's repair compare Merkle trees of hash ranges so that
//! replicas exchange only the subtrees that differ. HashiCorp's Serf (memberlist's push-pull)
//! instead sends the full state over TCP every 30 s, simple but O(n) per exchange. The buckets
//! here are a one-level Merkle tree: a fixed summary and exact repair of what differs,
//! over UDP within a datagram's budget.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

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

/// Buckets of the anti-entropy summary (see the module doc): 64 fingerprints of 8 bytes, half
/// a KiB per exchange whatever the mesh's size, and about 16 members per bucket at 1,000.
pub const BUCKETS: usize = 64;
/// `(member, version)` pairs one side expands per exchange: beyond it, the remaining differing
/// buckets wait for the next exchange (a late joiner's first exchanges; every bucket differs).
pub const MAX_VERSIONS_PER_EXCHANGE: usize = 1024;
/// Encoded record bytes one side sends per exchange (at least one record); beyond it, the next
/// exchange sends the rest. A late joiner at 1,000 members with a few services each takes a
/// few exchanges (docs/mesh.md, "Scale", measures it).
pub const MAX_RECORD_BYTES_PER_EXCHANGE: usize = 48 * 1024;

/// How long a purge stays in its owner's record.
pub const PURGE_TTL_MS: u64 = 60_000;

// Bounds on one member's record. A record travels whole in a `States` datagram, which the node
// fills up to about an MTU (`node::STATES_BYTES_PER_DATAGRAM`; a larger record goes alone), so
// MAX_RECORD_BYTES plus framing must stay under UDP's 65,507-byte payload: 8 KiB leaves room.
// Every member holds every record, so the bound is also the memory cost per member: 8 MiB at
// 1,000 members. A record from a peer outside any bound is refused whole (a correct member
// never builds one); our own is trimmed.

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
    /// A member's first record (version 1): nothing announced, reported or purged yet. Its
    /// owner fills in what it announces; tests build records from it.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            version: 1,
            services: Vec::new(),
            ejections: Vec::new(),
            purges: Vec::new(),
            tunnel: None,
            zone: None,
            rate_usage: Vec::new(),
        }
    }

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

/// Every member's newest record, keyed by mesh address, in [`BUCKETS`] buckets, each with its
/// fingerprint (see the module doc).
#[derive(Debug)]
pub struct Table {
    buckets: Vec<Bucket>,
    /// Members that left or were declared dead, with their generation and when (ms): records of
    /// that generation or older are refused, so a peer's stale copy does not bring them back.
    /// Kept [`GONE_TTL_MS`], at most [`MAX_REMEMBERED`] (see [`Table::prune`]).
    gone: HashMap<SocketAddr, (u64, u64)>,
}

/// One bucket: its records and the XOR of their [`member_hash`]es. foldhash rather than
/// SipHash: the table is looked up per member on every view and per record received, and its
/// keys come only from members holding the mesh key (randomly seeded all the same).
#[derive(Debug, Default)]
struct Bucket {
    /// Shared with the published views ([`super::view::View::records`]): republishing the view
    /// (up to five times a second while members change) copies pointers, not every record.
    states: HashMap<SocketAddr, Arc<MemberState>, foldhash::fast::RandomState>,
    fingerprint: u64,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            gone: HashMap::new(),
        }
    }
}

/// The bucket of the member at `addr`: every generation of an address shares one, and every
/// member computes the same (xxh3 has a fixed seed).
pub fn bucket_of(addr: SocketAddr) -> usize {
    let id = NodeId {
        addr,
        generation: 0,
    };
    // The modulus keeps the result below BUCKETS, which fits any usize.
    (member_hash(&id, 0) % BUCKETS as u64) as usize
}

fn record_hash(state: &MemberState) -> u64 {
    member_hash(&state.id, state.version)
}

impl Table {
    fn bucket(&self, addr: SocketAddr) -> &Bucket {
        &self.buckets[bucket_of(addr)]
    }

    /// Keeps `state` if it is newer than what we hold. Returns whether it was.
    pub fn merge(&mut self, state: MemberState) -> bool {
        if self
            .gone
            .get(&state.id.addr)
            .is_some_and(|&(g, _)| state.id.generation <= g)
        {
            return false;
        }
        let bucket = &mut self.buckets[bucket_of(state.id.addr)];
        let added = record_hash(&state);
        match bucket.states.get_mut(&state.id.addr) {
            Some(held) if held.key() >= state.key() => false,
            Some(held) => {
                bucket.fingerprint ^= record_hash(held) ^ added;
                *held = Arc::new(state);
                true
            }
            None => {
                bucket.fingerprint ^= added;
                bucket.states.insert(state.id.addr, Arc::new(state));
                true
            }
        }
    }

    /// Forgets `id`'s record (it left or is dead, noted at `now_ms`) and refuses copies of it
    /// for [`GONE_TTL_MS`].
    pub fn forget(&mut self, id: NodeId, now_ms: u64) {
        let bucket = &mut self.buckets[bucket_of(id.addr)];
        if bucket
            .states
            .get(&id.addr)
            .is_some_and(|s| s.id.generation <= id.generation)
        {
            if let Some(removed) = bucket.states.remove(&id.addr) {
                bucket.fingerprint ^= record_hash(&removed);
            }
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
        self.get_shared(addr).map(|s| &**s)
    }

    /// The record of the member at `addr`, shared: what a view holds.
    pub fn get_shared(&self, addr: SocketAddr) -> Option<&Arc<MemberState>> {
        self.bucket(addr).states.get(&addr)
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = &MemberState> {
        self.buckets
            .iter()
            .flat_map(|b| b.states.values().map(|s| &**s))
    }

    /// How many records we hold.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.states.len()).sum()
    }

    /// Whether we hold no record.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.states.is_empty())
    }

    /// Step 1 of an exchange: one fingerprint per bucket (0 for an empty bucket).
    pub fn summary(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.fingerprint).collect()
    }

    /// The buckets whose fingerprint differs from `theirs`; `None` if `theirs` is not a summary
    /// of [`BUCKETS`] buckets.
    pub fn differing(&self, theirs: &[u64]) -> Option<Vec<usize>> {
        (theirs.len() == BUCKETS).then(|| {
            self.buckets
                .iter()
                .zip(theirs)
                .enumerate()
                .filter(|(_, (ours, &theirs))| ours.fingerprint != theirs)
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// Of `buckets`, those to expand this exchange: from the `start`-th on (wrapping), while
    /// their versions add up to at most `max_versions` (always at least one bucket).
    pub fn within_budget(
        &self,
        buckets: &[usize],
        start: usize,
        max_versions: usize,
    ) -> Vec<usize> {
        let mut chosen = Vec::new();
        let mut versions = 0;
        for k in 0..buckets.len() {
            let b = buckets[(start + k) % buckets.len()];
            let len = self.buckets.get(b).map_or(0, |b| b.states.len());
            if !chosen.is_empty() && versions + len > max_versions {
                break;
            }
            versions += len;
            chosen.push(b);
        }
        chosen
    }

    /// Step 2, at the side that received `theirs` (a summary): the records to send at once (of
    /// the differing buckets the opener holds nothing in, within
    /// [`MAX_RECORD_BYTES_PER_EXCHANGE`]) and the other differing buckets to expand this exchange
    /// (within [`MAX_VERSIONS_PER_EXCHANGE`], from the `start`-th differing one). `None` if
    /// `theirs` is not a summary of [`BUCKETS`] buckets. Both empty: nothing to repair.
    pub fn answer(&self, theirs: &[u64], start: usize) -> Option<(Vec<MemberState>, Vec<usize>)> {
        let differing = self.differing(theirs)?;
        let (empty, other): (Vec<usize>, Vec<usize>) =
            differing.into_iter().partition(|&b| theirs[b] == 0);
        let direct = if empty.is_empty() {
            Vec::new()
        } else {
            within_bytes(self.newer_in(&[], &empty), MAX_RECORD_BYTES_PER_EXCHANGE)
        };
        let expand = if other.is_empty() {
            Vec::new()
        } else {
            self.within_budget(&other, start % other.len(), MAX_VERSIONS_PER_EXCHANGE)
        };
        Some((direct, expand))
    }

    /// Step 2: our `(member, version)` pairs in `buckets` (indices past [`BUCKETS`] are
    /// ignored).
    pub fn versions_in(&self, buckets: &[usize]) -> Vec<Version> {
        buckets
            .iter()
            .filter_map(|&b| self.buckets.get(b))
            .flat_map(|b| b.states.values())
            .map(|s| Version {
                id: s.id,
                version: s.version,
            })
            .collect()
    }

    /// Step 3: the records we hold in `buckets` that are newer than (or missing from) `theirs`,
    /// the other side's versions for those buckets.
    pub fn newer_in(&self, theirs: &[Version], buckets: &[usize]) -> Vec<MemberState> {
        let known: HashMap<SocketAddr, (u64, u64)> = theirs
            .iter()
            .map(|v| (v.id.addr, (v.id.generation, v.version)))
            .collect();
        buckets
            .iter()
            .filter_map(|&b| self.buckets.get(b))
            .flat_map(|b| b.states.values())
            .filter(|s| known.get(&s.id.addr).is_none_or(|&k| s.key() > k))
            .map(|s| MemberState::clone(s))
            .collect()
    }
}

/// The first records of `records` whose encoded sizes add up to at most `max_bytes` (always at
/// least one): what one side sends in one exchange.
pub fn within_bytes(mut records: Vec<MemberState>, max_bytes: usize) -> Vec<MemberState> {
    let mut total = 0;
    let mut keep = 0;
    for record in &records {
        let len = record.encoded_len();
        if keep > 0 && total + len > max_bytes {
            break;
        }
        total += len;
        keep += 1;
    }
    records.truncate(keep);
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(port: u16, generation: u64, version: u64) -> MemberState {
        MemberState {
            version,
            ..MemberState::new(NodeId {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                generation,
            })
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

    /// A member at 10.0.x.y:7946 (many more than ports on one IP allow for).
    fn member(i: usize, generation: u64, version: u64) -> MemberState {
        let mut s = state(7946, generation, version);
        let [_, _, a, b] = u32::try_from(i).expect("index").to_be_bytes();
        s.id.addr = SocketAddr::from(([10, 0, a, b], 7946));
        s.services = vec![Service {
            name: format!("svc{}", i % 7),
            address: SocketAddr::from(([10, 1, a, b], 8080)),
        }];
        s
    }

    /// A table's summary recomputed from scratch: what the incremental one must equal.
    fn summary_from_scratch(t: &Table) -> Vec<u64> {
        let mut fresh = Table::default();
        for s in t.iter() {
            fresh.merge(s.clone());
        }
        fresh.summary()
    }

    /// What one exchange sent, in encoded bytes (postcard, before framing and sealing).
    #[derive(Debug, Default)]
    struct Cost {
        summary: usize,
        versions: usize,
        records: usize,
    }

    /// One exchange that `a` opens with `b`, as `node` runs it (summary; records of buckets `a`
    /// holds nothing in and `b`'s versions of the other differing buckets; records each lacks).
    fn exchange(a: &mut Table, b: &mut Table, start: usize) -> Cost {
        let bytes = |v: &[Version]| postcard::to_stdvec(v).expect("encode").len();
        let summary = a.summary();
        let mut cost = Cost {
            // As the wire carries it: 8 bytes per fingerprint and the length.
            summary: summary.len() * 8 + 1,
            ..Cost::default()
        };
        let (direct, expand) = b.answer(&summary, start).expect("a summary");
        let b_versions = b.versions_in(&expand);
        cost.records += direct.iter().map(MemberState::encoded_len).sum::<usize>();
        for s in direct {
            a.merge(s);
        }
        if expand.is_empty() {
            return cost;
        }
        let to_b = within_bytes(
            a.newer_in(&b_versions, &expand),
            MAX_RECORD_BYTES_PER_EXCHANGE,
        );
        let a_versions = a.versions_in(&expand);
        cost.versions += bytes(&b_versions) + bytes(&a_versions);
        let to_a = within_bytes(
            b.newer_in(&a_versions, &expand),
            MAX_RECORD_BYTES_PER_EXCHANGE,
        );
        cost.records += to_b
            .iter()
            .chain(&to_a)
            .map(MemberState::encoded_len)
            .sum::<usize>();
        for s in to_b {
            b.merge(s);
        }
        for s in to_a {
            a.merge(s);
        }
        cost
    }

    #[test]
    fn fingerprints_follow_merges_and_forgets() {
        let mut t = Table::default();
        assert!(t.summary().iter().all(|&f| f == 0), "empty buckets are 0");
        let mut rng = fastrand::Rng::with_seed(29);
        for step in 0..3000u64 {
            let i = rng.usize(0..300);
            match rng.u8(0..10) {
                // New versions, older versions (refused), new generations.
                0..=5 => {
                    t.merge(member(i, 1, rng.u64(1..20)));
                }
                6 | 7 => {
                    t.merge(member(i, rng.u64(1..4), rng.u64(1..5)));
                }
                _ => t.forget(member(i, rng.u64(1..4), 1).id, step),
            }
            if step % 100 == 0 {
                assert_eq!(t.summary(), summary_from_scratch(&t), "step {step}");
            }
        }
        assert_eq!(t.summary(), summary_from_scratch(&t));
        let held: Vec<NodeId> = t.iter().map(|s| s.id).collect();
        for id in held {
            t.forget(id, 10_000);
        }
        assert!(t.is_empty());
        assert!(
            t.summary().iter().all(|&f| f == 0),
            "forgetting all empties the summary"
        );
    }

    #[test]
    fn two_tables_converge_by_summaries() {
        let mut a = Table::default();
        let mut b = Table::default();
        for i in 0..500 {
            // Shared, newer on one side or the other, or held by one side only.
            match i % 5 {
                0 => {
                    a.merge(member(i, 1, 2));
                    b.merge(member(i, 1, 1));
                }
                1 => {
                    a.merge(member(i, 1, 1));
                    b.merge(member(i, 2, 1));
                }
                2 => {
                    a.merge(member(i, 1, 1));
                }
                3 => {
                    b.merge(member(i, 1, 3));
                }
                _ => {
                    a.merge(member(i, 1, 1));
                    b.merge(member(i, 1, 1));
                }
            }
        }
        let mut exchanges = 0;
        while a.summary() != b.summary() {
            exchanges += 1;
            assert!(exchanges <= 10, "no convergence in 10 exchanges");
            exchange(&mut a, &mut b, exchanges);
        }
        assert_eq!(a.len(), 500, "{} records", a.len());
        for s in a.iter() {
            assert_eq!(b.get(s.id.addr), Some(s));
        }
        let expect = |i: usize| match i % 5 {
            0 => (1, 2),
            1 => (2, 1),
            3 => (1, 3),
            _ => (1, 1),
        };
        for i in 0..500 {
            let held = a
                .get(member(i, 1, 1).id.addr)
                .map(|s| (s.id.generation, s.version));
            assert_eq!(held, Some(expect(i)), "member {i}");
        }

        // A late joiner (only its own record) against 1,000 members: bounded per exchange.
        let mut full = Table::default();
        for i in 0..1000 {
            full.merge(member(i, 1, 1));
        }
        let mut late = Table::default();
        late.merge(member(1000, 1, 1));
        let mut exchanges = 0;
        while late.summary() != full.summary() {
            exchanges += 1;
            assert!(
                exchanges <= 10,
                "the late joiner did not converge in 10 exchanges"
            );
            let cost = exchange(&mut late, &mut full, exchanges);
            assert!(
                cost.records <= 2 * MAX_RECORD_BYTES_PER_EXCHANGE,
                "{cost:?}"
            );
        }
        assert_eq!(late.len(), 1001);
    }

    #[test]
    fn an_exchange_with_no_change_costs_the_summary_only() {
        let mut costs = Vec::new();
        for n in [10, 100, 1000] {
            let mut a = Table::default();
            let mut b = Table::default();
            for i in 0..n {
                a.merge(member(i, 1, 3));
                b.merge(member(i, 1, 3));
            }
            let cost = exchange(&mut a, &mut b, 0);
            assert_eq!(
                (cost.versions, cost.records),
                (0, 0),
                "{n} members: {cost:?}"
            );
            costs.push(cost.summary);
            // One member's change: one bucket's versions and one record, not n.
            a.merge(member(7, 1, 4));
            let cost = exchange(&mut b, &mut a, 0);
            assert_eq!(b.get(member(7, 1, 1).id.addr).map(|s| s.version), Some(4));
            assert!(
                cost.records == member(7, 1, 4).encoded_len(),
                "{n} members: {cost:?}"
            );
            let per_bucket = n.div_ceil(BUCKETS) * 3;
            assert!(
                cost.versions <= 2 * 25 * per_bucket,
                "{n} members: {cost:?} for one change"
            );
        }
        assert!(
            costs.iter().all(|&c| c == costs[0]),
            "the summary's size does not depend on the members: {costs:?}"
        );
        assert_eq!(costs[0], BUCKETS * 8 + 1);
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
