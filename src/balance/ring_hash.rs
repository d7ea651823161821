//! `ring_hash`: a Ketama-style consistent hash ring (Karger et al., STOC 1997; libketama).
//!
//! Every endpoint is hashed onto a 64-bit ring at many points ("`address`-`i`" under xxh3 with
//! [`RING_SEED`], fixed so every peer builds the same ring); a key belongs to the first point at
//! or after its hash, wrapping around. Removing an endpoint only hands its own arcs to the next
//! points, so no key moves between two surviving endpoints, and about 1/N of keys move in all.
//!
//! Sizes: every endpoint gets [`POINTS_PER_WEIGHT`] points per unit of weight, whatever the
//! cluster's size or the other endpoints' weights. That independence is what makes the promise
//! hold: an endpoint's points are `0..count` and `count` never changes when another endpoint
//! comes or goes, so a membership change touches only the changed endpoint's arcs and no key
//! moves between two endpoints that stay. (A floor on the ring's total, such as Envoy's
//! `minimum_ring_size`, breaks this: shrinking the cluster raises every survivor's count, and
//! the new points take keys from other survivors.) The ring is capped at [`MAX_RING`] points
//! (Envoy's cap) by scaling every count down, which only happens for a total weight above
//! `MAX_RING / POINTS_PER_WEIGHT` and then couples the counts again. Lookup is a binary search
//! over the sorted point hashes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::candidates::Slots;
use super::hashed::Table;
use super::{Diff, GONE};

/// Seed for ring points; changing it remaps every key, on every peer.
pub const RING_SEED: u64 = 0x5357_5952_494e_4731; // "SWYRING1"

/// Points per unit of weight. With P points an endpoint's share of the ring is within about
/// 1/√P of fair (one standard deviation): 100 keeps it within ±10 %, the evenness the ring
/// already gave clusters of 11 or more weight-1 endpoints — whose rings keep exactly their
/// points, so their keys stay where they were. More points would buy evenness with memory and
/// build time (16 bytes a point, at every membership change); `maglev` is the choice for even
/// shares.
pub const POINTS_PER_WEIGHT: u64 = 100;
/// Most points on the ring (8 Mi, as Envoy's `maximum_ring_size`).
pub const MAX_RING: u64 = 8 << 20;

/// The ring: points (hash, owning endpoint) in ascending hash order. Hash and owner sit side by
/// side so the lookup's last step touches one cache line.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
    /// `index[b]` = first position whose hash has top bits ≥ `b` (`bits` of them): narrows the
    /// binary search to one bucket of about two points. A plain binary search over a large ring
    /// takes a cache miss per level; with the index a lookup is two misses. Compare the two
    /// with `cargo bench --bench balance` (`pick/ring_hash/1000`).
    index: Vec<u32>,
    /// Top bits of a hash that select its bucket; 0 for an empty ring.
    bits: u32,
    /// Points per unit of weight this ring was built with ([`POINTS_PER_WEIGHT`], or less past
    /// [`MAX_RING`]): a ring derived from this one must use the same, or its kept points would
    /// be the wrong number.
    per_unit: f64,
}

impl Ring {
    /// Builds the ring for `identities[i]` with `weights[i]` (zero counts as 1). The result does
    /// not depend on the order of the lists, only on which (identity, weight) pairs they hold.
    pub(crate) fn new(identities: &[&str], weights: &[u32]) -> Self {
        let n = identities.len().min(weights.len());
        let per_unit = per_unit(&weights[..n]);
        let mut points: Vec<(u64, u32)> = Vec::new();
        let mut key = Vec::with_capacity(64);
        for (index, (identity, &weight)) in identities.iter().zip(weights).enumerate() {
            let owner = u32::try_from(index).unwrap_or(u32::MAX);
            push_points(
                &mut points,
                &mut key,
                identity,
                count(weight, per_unit),
                owner,
            );
        }
        sort_points(&mut points, |owner| {
            identities
                .get(owner as usize)
                .copied()
                .unwrap_or_default()
                .to_owned()
        });
        Self::indexed(points, per_unit)
    }

    /// The ring of a changed endpoint list, derived from this one (the ring of the list before)
    /// without rehashing or re-sorting what stayed: the points of endpoints that stay with the
    /// same weight are kept in order (their owners renumbered by `diff`), the points of
    /// `diff.changed` (new endpoints and new weights) are hashed, sorted and merged in. The result
    /// equals [`Ring::new`] over the new list (a unit test compares them); `None` when it cannot
    /// be derived because points per unit of weight changed (the ring crossed [`MAX_RING`]),
    /// and the caller builds from scratch.
    ///
    /// `identity(i)` is the new endpoint `i`'s identity, asked for the changed endpoints and to
    /// order points of equal hash, as [`Ring::new`] does.
    pub(crate) fn derive(
        &self,
        weights: &[u32],
        diff: &Diff,
        identity: impl Fn(u32) -> String,
    ) -> Option<Self> {
        let per_unit = per_unit(weights);
        if per_unit != self.per_unit {
            return None;
        }
        let mut changed = vec![false; weights.len()];
        let mut fresh: Vec<(u64, u32)> = Vec::new();
        let mut key = Vec::with_capacity(64);
        for &i in &diff.changed {
            let weight = *weights.get(i as usize)?;
            *changed.get_mut(i as usize)? = true;
            push_points(
                &mut fresh,
                &mut key,
                &identity(i),
                count(weight, per_unit),
                i,
            );
        }
        sort_points(&mut fresh, &identity);
        let kept = self.points.iter().filter_map(|&(hash, owner)| {
            let new = *diff.old_to_new.get(owner as usize)?;
            (new != GONE && !changed.get(new as usize).copied().unwrap_or(true))
                .then_some((hash, new))
        });
        // The new ring's size is known from the weights (every endpoint's count depends on its
        // own weight only), so the bucket index is written during the merge: one pass over
        // the points instead of a second one to index them (the index pass over a ring of
        // 10,000 endpoints cost more than the merge; profile with `perf record` on
        // `benches/etcd/run.sh`'s test binary to re-check).
        let len: u64 = weights.iter().map(|&w| count(w, per_unit)).sum();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let bits = bucket_bits(len);
        let mut points = Vec::with_capacity(len);
        let mut index = Vec::with_capacity((1usize << bits) + 1);
        let mut fresh = fresh.into_iter().peekable();
        for old in kept {
            while let Some(&new) = fresh.peek() {
                // Equal hashes go by identity, as `sort_points` orders them.
                let first = new.0 < old.0 || (new.0 == old.0 && identity(new.1) < identity(old.1));
                if !first {
                    break;
                }
                push_indexed(&mut points, &mut index, bits, new);
                fresh.next();
            }
            push_indexed(&mut points, &mut index, bits, old);
        }
        for new in fresh {
            push_indexed(&mut points, &mut index, bits, new);
        }
        let end = u32::try_from(points.len()).unwrap_or(u32::MAX);
        index.resize((1usize << bits) + 1, end);
        Some(Self {
            points,
            index,
            bits,
            per_unit,
        })
    }

    /// The ring over `points` (sorted) with its bucket index.
    fn indexed(points: Vec<(u64, u32)>, per_unit: f64) -> Self {
        let bits = bucket_bits(points.len());
        let mut index = Vec::with_capacity((1usize << bits) + 1);
        let mut pos = 0usize;
        for bucket in 0..(1u64 << bits) {
            while pos < points.len() && bucket_of(points[pos].0, bits) < bucket {
                pos += 1;
            }
            index.push(u32::try_from(pos).unwrap_or(u32::MAX));
        }
        index.push(u32::try_from(points.len()).unwrap_or(u32::MAX));
        Self {
            points,
            index,
            bits,
            per_unit,
        }
    }

    /// Points on the ring.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}

impl Table for Ring {
    const NAME: &'static str = "ring_hash";

    fn derive(
        &self,
        weights: &[u32],
        diff: &Diff,
        identity: &dyn Fn(u32) -> String,
    ) -> Option<Self> {
        Ring::derive(self, weights, diff, identity)
    }

    fn locate(&self, hash: u64) -> (Slots<'_>, usize) {
        let bucket = bucket_of(hash, self.bits) as usize;
        let (lo, hi) = match (self.index.get(bucket), self.index.get(bucket + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.points.len()),
        };
        let within = self.points.get(lo..hi).unwrap_or_default();
        let pos = lo + within.partition_point(|p| p.0 < hash);
        let pos = if pos == self.points.len() { 0 } else { pos };
        (Slots::Points(&self.points), pos)
    }
}

/// Points per unit of weight for a cluster of `weights`: a constant, so an endpoint's count
/// depends on its own weight only (see the module doc); scaled down only past the ring's cap.
fn per_unit(weights: &[u32]) -> f64 {
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    if total.saturating_mul(POINTS_PER_WEIGHT) > MAX_RING {
        MAX_RING as f64 / total as f64
    } else {
        POINTS_PER_WEIGHT as f64
    }
}

/// Points of an endpoint of `weight` (zero counts as 1): at least one.
fn count(weight: u32, per_unit: f64) -> u64 {
    ((f64::from(weight.max(1)) * per_unit).floor() as u64).max(1)
}

/// Appends `identity`'s `count` points ("`identity`-`i`" hashed), owned by `owner`.
fn push_points(
    points: &mut Vec<(u64, u32)>,
    key: &mut Vec<u8>,
    identity: &str,
    count: u64,
    owner: u32,
) {
    key.clear();
    key.extend_from_slice(identity.as_bytes());
    key.push(b'-');
    let prefix = key.len();
    for i in 0..count {
        key.truncate(prefix);
        key.extend_from_slice(&i.to_le_bytes());
        points.push((xxh3_64_with_seed(key, RING_SEED), owner));
    }
}

/// Sorts points by hash; equal hashes (a 2^-64 event per pair) by their owner's identity, not
/// list position, so the ring stays independent of the list's order.
fn sort_points(points: &mut [(u64, u32)], identity: impl Fn(u32) -> String) {
    // Plain tuple order sorts fastest; then runs of equal hashes are reordered.
    points.sort_unstable();
    let mut start = 0;
    while start < points.len() {
        let mut end = start + 1;
        while end < points.len() && points[end].0 == points[start].0 {
            end += 1;
        }
        if end - start > 1 {
            points[start..end].sort_by_key(|p| identity(p.1));
        }
        start = end;
    }
}

/// Bits of the bucket index for a ring of `len` points: about one bucket per two points (a
/// bucket's points share a cache line or two), between 2^8 and 2^20 buckets; 0 when empty.
fn bucket_bits(len: usize) -> u32 {
    if len == 0 {
        0
    } else {
        let log2 = len.next_power_of_two().trailing_zeros();
        log2.saturating_sub(1).clamp(8, 20)
    }
}

/// Appends `point` (the largest hash so far) to a ring being built, and to `index` the first
/// position of every bucket up to the point's own: `index[b]` = the first position whose
/// bucket is at least `b`, as [`Ring::indexed`] computes it.
fn push_indexed(points: &mut Vec<(u64, u32)>, index: &mut Vec<u32>, bits: u32, point: (u64, u32)) {
    let bucket = usize::try_from(bucket_of(point.0, bits)).unwrap_or(usize::MAX);
    let position = u32::try_from(points.len()).unwrap_or(u32::MAX);
    while index.len() <= bucket {
        index.push(position);
    }
    points.push(point);
}

/// The bucket of `hash`: its top `bits` bits.
fn bucket_of(hash: u64, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        hash >> (64 - bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
            .collect()
    }

    #[test]
    fn sizes_are_points_per_weight_whatever_the_cluster() {
        let n = names(3);
        let ids: Vec<&str> = n.iter().map(String::as_str).collect();
        let ring = Ring::new(&ids, &[1, 1, 1]);
        assert_eq!(ring.len(), 300);
        let ring = Ring::new(&ids, &[1, 2, 1]);
        let heavy = ring.points.iter().filter(|p| p.1 == 1).count();
        let light = ring.points.iter().filter(|p| p.1 == 0).count();
        assert_eq!((light, heavy), (100, 200));
        // The other endpoints' weights do not change an endpoint's count.
        let ring = Ring::new(&ids, &[3, 3, 3]);
        assert_eq!(ring.len(), 900);
        let many = names(1000);
        let ids: Vec<&str> = many.iter().map(String::as_str).collect();
        let ring = Ring::new(&ids, &vec![1; 1000]);
        assert_eq!(ring.len(), 100_000);
        assert!(ring.points.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    /// The diff from `old` to `new` (identity, weight) lists, as a snapshot build makes it.
    fn diff(old: &[(String, u32)], new: &[(String, u32)]) -> Diff {
        let position = |id: &str| new.iter().position(|(n, _)| n == id);
        Diff {
            old_to_new: old
                .iter()
                .map(|(id, _)| position(id).map_or(GONE, |i| i as u32))
                .collect(),
            changed: (0..new.len() as u32)
                .filter(|&i| !old.contains(&new[i as usize]))
                .collect(),
        }
    }

    fn ring(list: &[(String, u32)]) -> Ring {
        let ids: Vec<&str> = list.iter().map(|(a, _)| a.as_str()).collect();
        let weights: Vec<u32> = list.iter().map(|(_, w)| *w).collect();
        Ring::new(&ids, &weights)
    }

    #[test]
    fn a_derived_ring_equals_one_built_from_scratch() {
        let mut x = 0x5eed_u64;
        let mut next = move || {
            x = super::super::remix(x);
            x
        };
        let mut list: Vec<(String, u32)> = names(200).into_iter().map(|a| (a, 1)).collect();
        let mut current = ring(&list);
        for round in 0..40 {
            let mut new = list.clone();
            // Some leave, some join, some change weight; the list order is shuffled too, so
            // the renumbering is exercised, not just appends.
            for _ in 0..(next() % 5) {
                if !new.is_empty() {
                    let at = (next() % new.len() as u64) as usize;
                    new.remove(at);
                }
            }
            for k in 0..(next() % 5) {
                new.push((format!("10.9.{round}.{k}:80"), 1 + (next() % 3) as u32));
            }
            if let Some(entry) = new.first_mut() {
                entry.1 = 1 + (next() % 4) as u32;
            }
            let mut keyed: Vec<(u64, (String, u32))> =
                new.into_iter().map(|e| (next(), e)).collect();
            keyed.sort_by_key(|(k, _)| *k);
            let new: Vec<(String, u32)> = keyed.into_iter().map(|(_, e)| e).collect();
            let d = diff(&list, &new);
            let weights: Vec<u32> = new.iter().map(|(_, w)| *w).collect();
            let derived = current
                .derive(&weights, &d, |i| new[i as usize].0.clone())
                .expect("same points per unit");
            let scratch = ring(&new);
            assert_eq!(derived.points, scratch.points, "round {round}");
            assert_eq!(derived.index, scratch.index, "round {round}");
            assert_eq!(derived.bits, scratch.bits);
            current = derived;
            list = new;
        }
        // Past the cap the counts are coupled again: no derivation (checked before any point
        // is made), the caller rebuilds.
        let heavy = vec![list[0].clone(), ("x:1".to_owned(), u32::MAX / 2)];
        let d = diff(&list, &heavy);
        assert!(current
            .derive(&[list[0].1, u32::MAX / 2], &d, |i| heavy[i as usize]
                .0
                .clone())
            .is_none());
    }

    #[test]
    fn lookup_wraps_around() {
        let n = names(2);
        let ids: Vec<&str> = n.iter().map(String::as_str).collect();
        let ring = Ring::new(&ids, &[1, 1]);
        let last = ring.points.last().expect("points").0;
        assert_eq!(ring.locate(last.saturating_add(1)).1, 0);
        assert_eq!(ring.locate(0).1, 0);
        assert_eq!(ring.locate(last).1, ring.len() - 1);
    }

    #[test]
    fn bucketed_lookup_equals_a_plain_binary_search() {
        for n in [1usize, 7, 300] {
            let names = names(n);
            let ids: Vec<&str> = names.iter().map(String::as_str).collect();
            let ring = Ring::new(&ids, &vec![1; n]);
            let mut h = 0x1234_5678_9abc_def0u64;
            for _ in 0..20_000 {
                h = super::super::remix(h);
                let plain = ring.points.partition_point(|p| p.0 < h) % ring.len();
                assert_eq!(ring.locate(h).1, plain);
            }
            for &(p, _) in ring.points.iter().take(50) {
                assert_eq!(ring.points[ring.locate(p).1].0, p);
            }
        }
        let empty = Ring::new(&[], &[]);
        assert_eq!(empty.locate(42).1, 0);
    }
}
