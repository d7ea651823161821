//! `ring_hash`: a Ketama-style consistent hash ring (Karger et al., STOC 1997; libketama).
//!
//! Every endpoint is hashed onto a 64-bit ring at many points ("`address`-`i`" under xxh3 with
//! [`RING_SEED`], fixed so every peer builds the same ring); a key belongs to the first point at
//! or after its hash, wrapping around. Removing an endpoint only hands its own arcs to the next
//! points, so no key moves between two surviving endpoints, and about 1/N of keys move in all.
//!
//! Sizes: at least [`MIN_PER_ENDPOINT`] points for the lightest endpoint (100 points keep an
//! endpoint's share within about ±10 % of fair, one standard deviation) and at least
//! [`MIN_RING`] points in total; weights scale the point count. The ring is capped at
//! [`MAX_RING`] points (Envoy's cap) by scaling down, which only matters for extreme weight
//! ratios. Lookup is a binary search over the sorted point hashes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::hashed::Table;

/// Seed for ring points; changing it remaps every key, on every peer.
pub const RING_SEED: u64 = 0x5357_5952_494e_4731; // "SWYRING1"

/// Fewest points on the ring.
pub const MIN_RING: u64 = 1024;
/// Fewest points for the lightest endpoint.
pub const MIN_PER_ENDPOINT: u64 = 100;
/// Most points on the ring (8 Mi, as Envoy's `maximum_ring_size`).
pub const MAX_RING: u64 = 8 << 20;

/// The ring: point hashes in ascending order and, at the same position, the owning endpoint.
#[derive(Debug)]
pub(crate) struct Ring {
    hashes: Vec<u64>,
    owners: Vec<u32>,
}

impl Ring {
    /// Builds the ring for `identities[i]` with `weights[i]` (zero counts as 1). The result does
    /// not depend on the order of the lists, only on which (identity, weight) pairs they hold.
    pub(crate) fn new(identities: &[&str], weights: &[u32]) -> Self {
        let n = identities.len().min(weights.len());
        let weights: Vec<u64> = weights[..n].iter().map(|&w| u64::from(w.max(1))).collect();
        let total: u64 = weights.iter().sum();
        let lightest = weights.iter().copied().min().unwrap_or(1);
        // Points per unit of weight: enough for the lightest endpoint and for the ring.
        let mut per_unit =
            (MIN_PER_ENDPOINT as f64 / lightest as f64).max(MIN_RING as f64 / total.max(1) as f64);
        if per_unit * total as f64 > MAX_RING as f64 {
            per_unit = MAX_RING as f64 / total as f64;
        }
        let counts: Vec<u64> = weights
            .iter()
            .map(|&w| ((w as f64 * per_unit).ceil() as u64).max(1))
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
        // Equal hashes (a 2^-64 event per pair) are ordered by identity, not list position, so
        // the ring stays independent of the list's order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| identities[a.1 as usize].cmp(identities[b.1 as usize]))
        });
        let (hashes, owners) = points.into_iter().unzip();
        Self { hashes, owners }
    }

    /// Points on the ring.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }
}

impl Table for Ring {
    const NAME: &'static str = "ring_hash";

    fn locate(&self, hash: u64) -> (&[u32], usize) {
        let pos = self.hashes.partition_point(|&p| p < hash);
        let pos = if pos == self.hashes.len() { 0 } else { pos };
        (&self.owners, pos)
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
    fn sizes_follow_the_minimums_and_weights() {
        let n = names(3);
        let ids: Vec<&str> = n.iter().map(String::as_str).collect();
        let ring = Ring::new(&ids, &[1, 1, 1]);
        assert!(ring.len() >= 1024);
        let ring = Ring::new(&ids, &[1, 2, 1]);
        let heavy = ring.owners.iter().filter(|&&o| o == 1).count();
        let light = ring.owners.iter().filter(|&&o| o == 0).count();
        assert_eq!(heavy, 2 * light);
        let many = names(1000);
        let ids: Vec<&str> = many.iter().map(String::as_str).collect();
        let ring = Ring::new(&ids, &vec![1; 1000]);
        assert_eq!(ring.len(), 100_000);
        assert!(ring.hashes.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn lookup_wraps_around() {
        let n = names(2);
        let ids: Vec<&str> = n.iter().map(String::as_str).collect();
        let ring = Ring::new(&ids, &[1, 1]);
        let last = *ring.hashes.last().expect("points");
        assert_eq!(ring.locate(last.saturating_add(1)).1, 0);
        assert_eq!(ring.locate(0).1, 0);
        assert_eq!(ring.locate(last).1, ring.len() - 1);
    }
}
