//! `maglev`: the Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4).
//!
//! Each endpoint gets a permutation of the table's `M` slots from two hashes of its identity
//! (`offset = h1 % M`, `skip = h2 % (M − 1) + 1`, xxh3 under [`OFFSET_SEED`] and [`SKIP_SEED`]);
//! endpoints take turns claiming their next free preferred slot until the table is full. A key
//! is then one multiply-shift and one table read: O(1), unlike the ring's binary search. Equal
//! endpoints end up with ⌊M/N⌋ or ⌈M/N⌉ slots each, and removing one moves little more than 1/N
//! of keys.
//!
//! `M` is prime, ≥ 65537 and ≥ 100 × endpoints (the paper's advice: prime, and much larger
//! than N, so shares stay within 1 % — 100 slots each differ by at most one), taken from a
//! ladder of doublings rather than as the smallest such prime, so that adding or removing an
//! endpoint does not change `M` and remap every key (see [`table_size`]). Weights use turn
//! credits: an endpoint of weight w claims on average w / w_max slots per round (as Envoy's
//! Maglev does).
//!
//! Disruption (the share of keys that move when one of N endpoints is removed) is close to 1/N
//! in small clusters and grows with N, to several times 1/N at 1000 endpoints: Maglev trades
//! some stability for its even shares and O(1) lookup; `ring_hash` stays at 1/N.
//! `tests/balance/balance_hashing.rs` bounds it (2/N up to 100 endpoints); its
//! `small_clusters_move_few_keys` prints the share for 3 to 12 endpoints with `--nocapture`.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::below;
use super::candidates::Slots;
use super::hashed::Table;
use super::{Diff, GONE};

/// Seed of the permutation offset hash.
pub const OFFSET_SEED: u64 = 0x5357_594d_4147_4f46; // "SWYMAGOF"
/// Seed of the permutation skip hash.
pub const SKIP_SEED: u64 = 0x5357_594d_4147_534b; // "SWYMAGSK"

/// Smallest table size.
pub const MIN_TABLE: u64 = 65_537;
/// Slots per endpoint at least.
pub const SLOTS_PER_ENDPOINT: u64 = 100;

/// The lookup table: slot → endpoint index.
#[derive(Debug)]
pub(crate) struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table for `identities[i]` with `weights[i]` (zero counts as 1). Independent of
    /// the lists' order: endpoints take turns in identity order.
    pub(crate) fn new(identities: &[&str], weights: &[u32]) -> Self {
        let n = identities.len().min(weights.len());
        if n == 0 {
            return Self { table: Vec::new() };
        }
        let size = table_size(n);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by(|&a, &b| identities[a].cmp(identities[b]));
        let max_weight = weights[..n]
            .iter()
            .map(|&w| u64::from(w.max(1)))
            .max()
            .unwrap_or(1);
        struct Turn {
            index: u32,
            weight: u64,
            /// Credit needed before the next claim (Envoy's "target weight").
            target: u64,
            /// Current slot of the permutation and its step.
            slot: u64,
            skip: u64,
        }
        let mut turns: Vec<Turn> = order
            .iter()
            .map(|&i| {
                let id = identities[i].as_bytes();
                Turn {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    weight: u64::from(weights[i].max(1)),
                    target: 0,
                    slot: xxh3_64_with_seed(id, OFFSET_SEED) % size,
                    skip: xxh3_64_with_seed(id, SKIP_SEED) % (size - 1) + 1,
                }
            })
            .collect();
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        let mut table = vec![u32::MAX; size_usize];
        // The walks below probe taken slots many times over (about `size × ln size` probes in
        // all, at random places): they read this bitmap, one bit per slot where the table has
        // 32, so at 10,000 endpoints the probes stay in cache where the table does not
        // (re-measure with `benches/etcd/run.sh`, column "one full balancer build").
        let mut taken = vec![0u64; size_usize.div_ceil(64)];
        let is_taken =
            |taken: &[u64], slot: u64| taken[(slot / 64) as usize] & (1 << (slot % 64)) != 0;
        let mut filled = 0usize;
        let mut round = 1u64;
        while filled < size_usize {
            for turn in &mut turns {
                if filled == size_usize {
                    break;
                }
                if round * turn.weight < turn.target {
                    continue;
                }
                turn.target += max_weight;
                // Walk this endpoint's permutation to its next free slot; terminates because
                // `skip` and the prime `size` are coprime, so the walk visits every slot.
                while is_taken(&taken, turn.slot) {
                    turn.slot = step(turn.slot, turn.skip, size);
                }
                taken[(turn.slot / 64) as usize] |= 1 << (turn.slot % 64);
                table[turn.slot as usize] = turn.index;
                turn.slot = step(turn.slot, turn.skip, size);
                filled += 1;
            }
            round += 1;
        }
        Self { table }
    }

    /// An interim table for the endpoint list after `diff`, made from this one in one pass
    /// over its slots, for a discovery update that should not wait for [`Self::new`]: a
    /// surviving endpoint keeps its slots (renumbered), and each slot of an endpoint that left
    /// goes to the owner of the next slot, walking forward, that survives: the endpoint the
    /// candidate walk falls back to when a key's endpoint is ejected, so a removed endpoint is
    /// never named and the keys it held move as they would on its ejection. Endpoints that
    /// joined get no slots (keyless requests and the walk's tail still reach them). `None`
    /// when no endpoint survives (nothing to hand slots to). Unlike [`Self::new`] the result
    /// depends on the table it came from, not on the endpoint set alone: it is only published
    /// until the full table for the same set replaces it (`state::Shared::complete_cluster`).
    pub(crate) fn interim(&self, diff: &Diff) -> Option<Self> {
        let renumber = |owner: u32| {
            diff.old_to_new
                .get(owner as usize)
                .copied()
                .filter(|&new| new != GONE)
        };
        // Start right after a surviving slot, walking backwards, so the "next survivor" is
        // known for every slot when it is reached.
        let last = self.table.iter().rposition(|&o| renumber(o).is_some())?;
        let mut next = renumber(self.table[last])?;
        let mut table = vec![0u32; self.table.len()];
        // Slots `last` down to 0, then from the end down to just after `last` (the wrap).
        let order = (0..=last).rev().chain((last + 1..self.table.len()).rev());
        for slot in order {
            if let Some(new) = renumber(self.table[slot]) {
                next = new;
            }
            table[slot] = next;
        }
        Some(Self { table })
    }

    /// The endpoint index of every slot, for tests comparing tables.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> &[u32] {
        &self.table
    }

    /// Slot counts per endpoint index.
    #[cfg(test)]
    pub(crate) fn slot_counts(&self, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &i in &self.table {
            if let Some(c) = counts.get_mut(i as usize) {
                *c += 1;
            }
        }
        counts
    }
}

fn step(slot: u64, skip: u64, size: u64) -> u64 {
    let next = slot + skip;
    if next >= size {
        next - size
    } else {
        next
    }
}

/// The table size for `n` endpoints: the first prime ≥ 65536 × 2^k, for the smallest k that
/// gives ≥ [`SLOTS_PER_ENDPOINT`] × n slots.
///
/// Why a ladder and not "the smallest prime ≥ 100 × n": a key's slot is `hash mod M`, so a
/// different M remaps every key. With the smallest prime, adding or removing one endpoint of a
/// cluster over 655 changes M and moves nearly every key; on the ladder M only changes
/// when the cluster crosses a doubling.
pub(crate) fn table_size(n: usize) -> u64 {
    let wanted = (n as u64).saturating_mul(SLOTS_PER_ENDPOINT);
    let mut rung = MIN_TABLE - 1;
    while rung < wanted && rung < (1 << 40) {
        rung *= 2;
    }
    let mut candidate = rung + 1;
    while !is_prime(candidate) {
        candidate += 1;
    }
    candidate
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

impl Table for Maglev {
    const NAME: &'static str = "maglev";

    fn locate(&self, hash: u64) -> (Slots<'_>, usize) {
        (Slots::Owners(&self.table), below(hash, self.table.len()))
    }

    /// Only above the smallest table: at that size (up to 655 endpoints) a full build is
    /// cheap enough to make on the publishing path, and the update stays one publish
    /// (compare the two with `benches/etcd/run.sh` at `SHAPES=100x100`).
    fn interim(&self, diff: &Diff) -> Option<Self> {
        if self.table.len() as u64 <= MIN_TABLE {
            return None;
        }
        Maglev::interim(self, diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_are_the_smallest_fitting_primes() {
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(655), 65_537);
        let big = table_size(1000);
        assert!(is_prime(big) && (100_000..131_172).contains(&big), "{big}");
        // One rung covers 656..=1310 endpoints: membership changes there keep the size.
        assert_eq!(table_size(656), big);
        assert_eq!(table_size(1310), big);
        assert!(table_size(1311) > big);
        assert!(is_prime(100_003) && !is_prime(100_001));
    }

    #[test]
    fn equal_endpoints_get_shares_within_one_percent() {
        for n in [2usize, 3, 10, 99, 1000] {
            let names: Vec<String> = (0..n)
                .map(|i| format!("10.1.{}.{}:80", i / 200, i % 200))
                .collect();
            let ids: Vec<&str> = names.iter().map(String::as_str).collect();
            let maglev = Maglev::new(&ids, &vec![1; n]);
            let counts = maglev.slot_counts(n);
            let mean = maglev.table.len() as f64 / n as f64;
            for c in counts {
                assert!(
                    (c as f64 - mean).abs() <= mean * 0.01,
                    "n={n}: {c} vs {mean}"
                );
            }
        }
    }

    /// The diff from `old` to `new` (both sorted identity lists), as `ClusterSnapshot` makes it.
    fn diff(old: &[String], new: &[String]) -> Diff {
        Diff {
            old_to_new: old
                .iter()
                .map(|o| match new.binary_search(o) {
                    Ok(i) => u32::try_from(i).unwrap_or(GONE),
                    Err(_) => GONE,
                })
                .collect(),
            changed: (0..new.len())
                .filter(|&i| old.binary_search(&new[i]).is_err())
                .map(|i| u32::try_from(i).unwrap_or(GONE))
                .collect(),
        }
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        let mut v: Vec<String> = range
            .map(|i| format!("10.2.{}.{}:80", i / 200, i % 200))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_interim_table_keeps_survivors_and_hands_removed_slots_to_the_next_survivor() {
        // 700 endpoints: the second rung, where interim tables are made.
        let old = names(0..700);
        let ids: Vec<&str> = old.iter().map(String::as_str).collect();
        let before = Maglev::new(&ids, &[1; 700]);
        // Every 7th leaves, and 20 join.
        let mut new: Vec<String> = old
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 0)
            .map(|(_, n)| n.clone())
            .chain(names(1000..1020))
            .collect();
        new.sort();
        let d = diff(&old, &new);
        let interim = Table::interim(&before, &d).expect("an interim table at this size");
        let (old_t, new_t) = (before.slots(), interim.slots());
        assert_eq!(old_t.len(), new_t.len(), "same size: keys keep their slots");
        let joined: Vec<u32> = d.changed.clone();
        for (slot, (&o, &n)) in old_t.iter().zip(new_t).enumerate() {
            let name = &new[n as usize];
            assert!(
                old.binary_search(name).is_ok() && !joined.contains(&n),
                "slot {slot}: {name} did not survive"
            );
            if d.old_to_new[o as usize] != GONE {
                assert_eq!(
                    *name, old[o as usize],
                    "slot {slot}: a survivor keeps its slot"
                );
            } else {
                // The owner of the first surviving slot after it, wrapping.
                let next = (1..old_t.len())
                    .map(|k| old_t[(slot + k) % old_t.len()])
                    .find(|&o| d.old_to_new[o as usize] != GONE)
                    .expect("a survivor");
                assert_eq!(*name, old[next as usize], "slot {slot}");
            }
        }
        // The full table over the new set does not depend on where it came from.
        let new_ids: Vec<&str> = new.iter().map(String::as_str).collect();
        let full = Maglev::new(&new_ids, &vec![1; new.len()]);
        let mut reversed = new_ids.clone();
        reversed.reverse();
        let again = Maglev::new(&reversed, &vec![1; new.len()]);
        let by_name = |m: &Maglev, ids: &[&str]| -> Vec<String> {
            m.slots()
                .iter()
                .map(|&i| ids[i as usize].to_owned())
                .collect()
        };
        assert_eq!(by_name(&full, &new_ids), by_name(&again, &reversed));
    }

    #[test]
    fn no_interim_at_the_smallest_size_or_without_survivors() {
        let old = names(0..10);
        let ids: Vec<&str> = old.iter().map(String::as_str).collect();
        let small = Maglev::new(&ids, &[1; 10]);
        let d = diff(&old, &old[1..]);
        assert!(
            Table::interim(&small, &d).is_none(),
            "a full build is cheap here"
        );
        // The inherent pass itself works at any size; with no survivor it has none to give.
        assert!(small.interim(&d).is_some());
        assert!(small.interim(&diff(&old, &names(20..25))).is_none());
    }

    #[test]
    fn weights_scale_slots() {
        let ids = ["a:1", "b:1", "c:1"];
        let maglev = Maglev::new(&ids, &[1, 3, 2]);
        let counts = maglev.slot_counts(3);
        let unit = maglev.table.len() as f64 / 6.0;
        for (c, w) in counts.iter().zip([1.0, 3.0, 2.0]) {
            assert!((*c as f64 / (unit * w) - 1.0).abs() < 0.01, "{counts:?}");
        }
    }
}
