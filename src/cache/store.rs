//! Where responses live: a size-bounded [`moka`] cache of URL → [`Slot`] (the URL's variants).
//!
//! moka fits: its weigher bounds the store by bytes (`max_bytes`), and its policy (TinyLFU
//! admission in front of an LRU) is what keeps hot entries when the store is full — a burst of
//! one-off URLs cannot push out the objects that are read all the time, which a plain LRU lets
//! happen. Its `get` takes `&str` for a `Box<str>` key, so a hit allocates nothing here.
//!
//! Accounting (`cache_bytes`, `cache_entries`, `cache_evictions_total`) is ours, not moka's
//! `weighted_size()`, which is only exact after housekeeping: every insert adds its weight and
//! moka's removal listener, which sees every replaced, invalidated or evicted value exactly
//! once, takes it back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use moka::notification::RemovalCause;

use super::key::Variant;
use super::policy::Directives;

/// How many variants one URL keeps (newest first); more than this and the oldest goes. Real
/// `Vary` use (encodings, a language or two) stays well below it.
const MAX_VARIANTS: usize = 8;

/// Fixed per-object overhead counted in the weight (the structs, the key's `Arc`, moka's node),
/// so millions of empty bodies still count against `max_bytes`.
const OVERHEAD: usize = 256;

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    /// The response status.
    pub status: StatusCode,
    /// Its headers, minus hop-by-hop fields and `Age` (generated on every hit).
    pub headers: HeaderMap,
    /// The whole body in one buffer: a hit hands out a clone of this `Bytes` (no copy).
    pub body: Bytes,
    /// The directives in charge (`CDN-Cache-Control` or `Cache-Control`).
    pub directives: Directives,
    /// Freshness lifetime, seconds (§4.2.1).
    pub lifetime: u64,
    /// `corrected_initial_age` (§4.2.3), seconds.
    pub initial_age: u64,
    /// When the response arrived (the start of its resident time).
    pub received: Instant,
    /// The request header values it was selected by.
    pub variant: Variant,
    /// May answer a request with `Authorization` (§3.5).
    pub authorized_ok: bool,
}

impl Stored {
    /// `current_age` (§4.2.3), seconds.
    pub fn age(&self, now: Instant) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_duration_since(self.received).as_secs())
    }

    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + self.variant.weight() + OVERHEAD
    }
}

/// A URL's stored variants, newest first. Immutable: adding a variant stores a new slot.
#[derive(Debug)]
pub struct Slot {
    /// Newest first, at most [`MAX_VARIANTS`].
    pub variants: Vec<Arc<Stored>>,
    weight: usize,
}

/// Live figures, shared with the removal listener.
#[derive(Debug)]
struct Counters {
    bytes: AtomicI64,
    entries: AtomicI64,
    evictions: metrics::Counter,
    bytes_gauge: metrics::Gauge,
    entries_gauge: metrics::Gauge,
}

impl Counters {
    fn add(&self, bytes: i64, entries: i64) {
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let e = self.entries.fetch_add(entries, Ordering::Relaxed) + entries;
        self.bytes_gauge.set(b.max(0) as f64);
        self.entries_gauge.set(e.max(0) as f64);
    }
}

/// The bounded store.
pub struct Store {
    entries: moka::sync::Cache<Box<str>, Arc<Slot>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("bytes", &self.bytes())
            .field("entries", &self.entries())
            .finish()
    }
}

impl Store {
    /// An empty store holding at most `max_bytes` (keys, headers and bodies counted).
    pub fn new(max_bytes: u64) -> Self {
        let counters = Arc::new(Counters {
            bytes: AtomicI64::new(0),
            entries: AtomicI64::new(0),
            evictions: metrics::counter!("switchyard_cache_evictions_total"),
            bytes_gauge: metrics::gauge!("switchyard_cache_bytes"),
            entries_gauge: metrics::gauge!("switchyard_cache_entries"),
        });
        counters.add(0, 0);
        let listener = Arc::clone(&counters);
        // moka hands the weigher `&K` for a `Box<str>` key.
        #[allow(clippy::borrowed_box)]
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Box<str>, slot: &Arc<Slot>| -> u32 {
                u32::try_from(key.len() + slot.weight).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |key: Arc<Box<str>>, slot: Arc<Slot>, cause| {
                let weight = i64::try_from(key.len() + slot.weight).unwrap_or(i64::MAX);
                listener.add(-weight, -1);
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    listener.evictions.increment(1);
                }
            })
            .build();
        Self { entries, counters }
    }

    /// The variants stored for `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Slot>> {
        self.entries.get(key)
    }

    /// Stores `stored` as the newest variant of `key`, replacing an older one with the same
    /// request values. Two concurrent puts of one URL may lose one variant: a later request
    /// stores it again, which is cheaper than a lock on the store.
    pub fn put(&self, key: &str, stored: Arc<Stored>) {
        let mut variants = Vec::with_capacity(MAX_VARIANTS);
        variants.push(Arc::clone(&stored));
        if let Some(old) = self.entries.get(key) {
            variants.extend(
                old.variants
                    .iter()
                    .filter(|v| v.variant != stored.variant)
                    .take(MAX_VARIANTS - 1)
                    .cloned(),
            );
        }
        self.replace(key, variants);
    }

    /// Drops the variant `stale` of `key` if it is still stored.
    pub fn remove_variant(&self, key: &str, stale: &Arc<Stored>) {
        let Some(old) = self.entries.get(key) else {
            return;
        };
        let variants: Vec<_> = old
            .variants
            .iter()
            .filter(|v| !Arc::ptr_eq(v, stale))
            .cloned()
            .collect();
        if variants.is_empty() {
            self.entries.invalidate(key);
        } else {
            self.replace(key, variants);
        }
    }

    fn replace(&self, key: &str, variants: Vec<Arc<Stored>>) {
        let weight = variants.iter().map(|v| v.weight()).sum();
        let slot = Arc::new(Slot { variants, weight });
        let added = i64::try_from(key.len() + weight).unwrap_or(i64::MAX);
        self.counters.add(added, 1);
        self.entries.insert(Box::from(key), slot);
    }

    /// Removes `key` with every variant; whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Removes every key `doomed` selects; how many.
    pub fn remove_where(&self, doomed: impl Fn(&str) -> bool) -> usize {
        // Collected first: moka's iterator must not see its own removals.
        let keys: Vec<Arc<Box<str>>> = self
            .entries
            .iter()
            .filter(|(key, _)| doomed(key))
            .map(|(key, _)| key)
            .collect();
        keys.iter().filter(|key| self.remove(key)).count()
    }

    /// Bytes stored now (keys, headers, bodies, overhead).
    pub fn bytes(&self) -> u64 {
        u64::try_from(self.counters.bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// URLs stored now.
    pub fn entries(&self) -> u64 {
        u64::try_from(self.counters.entries.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Runs moka's pending evictions and removal notifications now (tests, purges).
    pub fn settle(&self) {
        self.entries.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: usize) -> Arc<Stored> {
        Arc::new(Stored {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            directives: Directives::default(),
            lifetime: 60,
            initial_age: 0,
            received: Instant::now(),
            variant: Variant::default(),
            authorized_ok: false,
        })
    }

    #[test]
    fn accounting_follows_puts_replacements_and_removals() {
        let store = Store::new(1 << 20);
        store.put("http://h/a", stored(1000));
        store.put("http://h/a", stored(2000));
        store.settle();
        assert_eq!(store.entries(), 1);
        let one = store.bytes();
        assert!((2000..3000).contains(&one), "{one}");
        assert!(store.remove("http://h/a"));
        store.settle();
        assert_eq!((store.entries(), store.bytes()), (0, 0));
    }

    #[test]
    fn bounded_by_max_bytes() {
        let store = Store::new(64 * 1024);
        for i in 0..200 {
            store.put(&format!("http://h/{i}"), stored(1024));
            store.settle();
        }
        assert!(store.bytes() <= 64 * 1024, "{}", store.bytes());
        assert!(store.entries() > 10);
    }

    #[test]
    fn prefix_removal() {
        let store = Store::new(1 << 20);
        for path in ["/a/1", "/a/2", "/b/1"] {
            store.put(&format!("http://h{path}"), stored(10));
        }
        assert_eq!(
            store.remove_where(|k| super::super::key::target(k).starts_with("/a/")),
            2
        );
        assert!(store.get("http://h/b/1").is_some());
    }
}
