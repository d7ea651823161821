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
}

impl Ring {
    /// Builds the ring for `identities[i]` with `weights[i]` (zero counts as 1). The result does
    /// not depend on the order of the lists, only on which (identity, weight) pairs they hold.
    pub(crate) fn new(identities: &[&str], weights: &[u32]) -> Self {
        let n = identities.len().min(weights.len());
        let weights: Vec<u64> = weights[..n].iter().map(|&w| u64::from(w.max(1))).collect();
        let total: u64 = weights.iter().sum();
        // Points per unit of weight: a constant, so an endpoint's count depends on its own
        // weight only (see the module doc); scaled down only past the ring's cap.
        let per_unit = if total.saturating_mul(POINTS_PER_WEIGHT) > MAX_RING {
            MAX_RING as f64 / total as f64
        } else {
            POINTS_PER_WEIGHT as f64
        };
        let counts: Vec<u64> = weights
            .iter()
            .map(|&w| ((w as f64 * per_unit).floor() as u64).max(1))
            .collect();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
        let mut key = Vec::with_capacity(64);
        for (index, (identity, &count)) in identities.iter().zip(&counts).enumerate() {
            let owner = u32::try_from(index).unwrap_or(u32::MAX);
            key.clear();
            key.extend_from_slice(identity.as_bytes());
            key.push(b'-');
            let prefix = key.len();
            for i in 0..count {
                key.truncate(prefix);
                key.extend_from_slice(&i.to_le_bytes());
                points.push((xxh3_64_with_seed(&key, RING_SEED), owner));
            }
        }
        // Plain tuple order sorts fastest; then equal hashes (a 2^-64 event per pair) are
        // reordered by identity, not list position, so the ring stays independent of the list's
        // order.
        points.sort_unstable();
        let mut start = 0;
        while start < points.len() {
            let mut end = start + 1;
            while end < points.len() && points[end].0 == points[start].0 {
                end += 1;
            }
            if end - start > 1 {
                points[start..end]
                    .sort_by(|a, b| identities[a.1 as usize].cmp(identities[b.1 as usize]));
            }
            start = end;
        }
        // About one bucket per two points (a bucket's points share a cache line or two), between
        // 2^8 and 2^20 buckets.
        let bits = if points.is_empty() {
            0
        } else {
            let log2 = points.len().next_power_of_two().trailing_zeros();
            log2.saturating_sub(1).clamp(8, 20)
        };
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
