//! The table of active keys: a fixed array of slots, allocated once with the limiter, so a
//! flood of distinct keys cannot grow it. Each slot is a key fingerprint and its bucket's TAT
//! (16 bytes); slots are grouped in sets of [`WAYS`] (one cache line), and a key lives in the
//! set its fingerprint picks.
//!
//! Why not an LRU (moka is a dependency): an LRU evicts the least recently used key when full,
//! and an evicted key comes back with a full bucket. An attacker can then buy a reset of any
//! bucket, its own included, by sending enough distinct keys. Here nothing active is ever
//! evicted: a slot is reused only once its bucket has refilled completely (TAT in the past),
//! which is exactly the state a new key starts in, so reuse loses nothing. When every slot of
//! a set is active, a new key *shares* the bucket of the set's fullest slot, like a counting
//! sketch: a shared bucket limits both keys together, so nobody gains rate (the worst case is
//! that a legitimate key is limited together with flood keys). A lookup is a few loads in one
//! cache line and no lock; claiming a slot is one compare-and-swap.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Slots per set: four 16-byte slots are one 64-byte cache line.
pub const WAYS: usize = 4;

/// One slot: 0 = never used.
#[derive(Debug, Default)]
#[repr(C, align(16))]
struct Slot {
    key: AtomicU64,
    tat: AtomicU64,
}

/// The fixed-size table; see the module doc.
#[derive(Debug)]
pub struct KeyTable {
    slots: Box<[Slot]>,
    /// Sets - 1 (a power of two).
    mask: usize,
    /// Requests per slot since the mesh last read them (mesh-scoped routes only): the demand
    /// each member gossips. Parallel to `slots`, so local routes pay nothing for it.
    demand: Option<Box<[AtomicU32]>>,
}

/// The bucket a key maps to, and its index (for demand counting).
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    /// The TAT to admit against.
    pub tat: &'a AtomicU64,
    index: usize,
}

impl KeyTable {
    /// At least `max_keys` slots (a power of two, at least one set); `demand`: count requests
    /// per slot for the mesh.
    pub fn new(max_keys: u64, demand: bool) -> Self {
        let slots = usize::try_from(max_keys)
            .unwrap_or(usize::MAX)
            .max(WAYS)
            .next_power_of_two();
        Self {
            slots: (0..slots).map(|_| Slot::default()).collect(),
            mask: slots / WAYS - 1,
            demand: demand.then(|| (0..slots).map(|_| AtomicU32::new(0)).collect()),
        }
    }

    /// The bucket of fingerprint `key` (non-zero) at `now`; see the module doc for when a key
    /// gets a slot of its own and when it shares one.
    pub fn bucket(&self, key: u64, now: u64) -> Bucket<'_> {
        let key = key.max(1);
        // The fingerprint's high bits pick the set; it is compared in full within it.
        let start = ((key >> 32) as usize & self.mask) * WAYS;
        let set = &self.slots[start..start + WAYS];
        let found = set
            .iter()
            .position(|s| s.key.load(Ordering::Relaxed) == key)
            .or_else(|| {
                set.iter().position(|s| {
                    let held = s.key.load(Ordering::Relaxed);
                    (held == 0 || s.tat.load(Ordering::Relaxed) <= now)
                        && s.key
                            .compare_exchange(held, key, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                })
            })
            .unwrap_or_else(|| {
                // Every slot active: share the one closest to full (smallest TAT).
                (0..WAYS)
                    .min_by_key(|&i| set[i].tat.load(Ordering::Relaxed))
                    .unwrap_or(0)
            });
        let index = start + found;
        if let Some(demand) = &self.demand {
            demand[index].fetch_add(1, Ordering::Relaxed);
        }
        Bucket {
            tat: &self.slots[index].tat,
            index,
        }
    }

    /// The fingerprint now held by `bucket`'s slot.
    pub fn key_of(&self, bucket: Bucket<'_>) -> u64 {
        self.slots[bucket.index].key.load(Ordering::Relaxed)
    }

    /// Slots in the table (the bound on keys tracked at once).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the table holds (fixed at creation).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
            + self
                .demand
                .as_ref()
                .map_or(0, |d| d.len() * std::mem::size_of::<AtomicU32>())
    }

    /// Slots whose bucket is not full at `now` (keys that are being limited or could be).
    pub fn active(&self, now: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.load(Ordering::Relaxed) != 0 && s.tat.load(Ordering::Relaxed) > now)
            .count()
    }

    /// Takes the demand counted since the last call: `(fingerprint, requests)` for every slot
    /// that saw any. Control side (the mesh), once per period; a scan of the fixed table.
    pub fn take_demand(&self) -> Vec<(u64, u32)> {
        let Some(demand) = &self.demand else {
            return Vec::new();
        };
        demand
            .iter()
            .zip(self.slots.iter())
            .filter_map(|(count, slot)| {
                let n = count.swap(0, Ordering::Relaxed);
                (n > 0).then(|| (slot.key.load(Ordering::Relaxed), n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::gcra::{admit, Rate};
    use std::time::Duration;

    #[test]
    fn a_flood_of_distinct_keys_neither_grows_the_table_nor_resets_an_active_bucket() {
        let table = KeyTable::new(1024, false);
        let bytes = table.memory_bytes();
        let rate = Rate::new(10, Duration::from_secs(60), 0);
        let now = 5_000_000_000;
        let victim = 0xdead_beef_0000_0001;
        for _ in 0..10 {
            assert!(admit(table.bucket(victim, now).tat, now, rate).is_ok());
        }
        assert!(admit(table.bucket(victim, now).tat, now, rate).is_err());
        for i in 0..100_000u64 {
            let key = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let _ = admit(table.bucket(key, now).tat, now, rate);
        }
        assert_eq!(table.memory_bytes(), bytes);
        assert!(table.active(now) <= table.capacity());
        assert!(
            admit(table.bucket(victim, now).tat, now, rate).is_err(),
            "the flood must not refill the victim's bucket"
        );
    }

    #[test]
    fn a_refilled_slot_is_reused_by_a_new_key() {
        let table = KeyTable::new(4, true);
        let rate = Rate::new(1, Duration::from_secs(1), 0);
        let now = 5_000_000_000;
        for k in 1..=4u64 {
            assert!(admit(table.bucket(k << 32, now).tat, now, rate).is_ok());
        }
        assert_eq!(table.active(now), 4);
        // Two seconds later every bucket is full again: a fifth key gets a slot of its own.
        let later = now + 2_000_000_000;
        let b = table.bucket(5 << 32, later);
        assert_eq!(table.key_of(b), 5 << 32);
        assert!(admit(b.tat, later, rate).is_ok());
        let demand: u32 = table.take_demand().iter().map(|(_, n)| n).sum();
        assert_eq!(demand, 5);
        assert!(table.take_demand().is_empty());
    }
}
