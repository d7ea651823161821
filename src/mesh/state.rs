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
}

/// A digest part's address range, `[start, end)`; `None` = unbounded.
pub type Range = (Option<SocketAddr>, Option<SocketAddr>);

/// How long a purge stays in its owner's record.
pub const PURGE_TTL_MS: u64 = 60_000;

impl MemberState {
    fn key(&self) -> (u64, u64) {
        (self.id.generation, self.version)
    }
}

/// Every member's newest record, keyed by mesh address.
#[derive(Debug, Default)]
pub struct Table {
    states: HashMap<SocketAddr, MemberState>,
    /// Members that left or were declared dead, with their generation: records of that
    /// generation or older are refused, so a peer's stale copy does not bring them back.
    gone: HashMap<SocketAddr, u64>,
}

impl Table {
    /// Keeps `state` if it is newer than what we hold. Returns whether it was.
    pub fn merge(&mut self, state: MemberState) -> bool {
        if self
            .gone
            .get(&state.id.addr)
            .is_some_and(|&g| state.id.generation <= g)
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

    /// Forgets `id`'s record (it left or is dead) and refuses copies of it from then on.
    pub fn forget(&mut self, id: NodeId) {
        if self
            .states
            .get(&id.addr)
            .is_some_and(|s| s.id.generation <= id.generation)
        {
            self.states.remove(&id.addr);
        }
        let gone = self.gone.entry(id.addr).or_insert(id.generation);
        *gone = (*gone).max(id.generation);
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
        t.forget(state(1, 4, 1).id);
        assert!(t.get(state(1, 4, 1).id.addr).is_none());
        assert!(
            !t.merge(state(1, 4, 2)),
            "a stale copy does not resurrect it"
        );
        assert!(t.merge(state(1, 5, 1)), "a rejoin does");
    }
}
