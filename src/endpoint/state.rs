//! Per-endpoint state that outlives snapshots, and the registry that hands it out.
//!
//! A snapshot is rebuilt on every reload or discovery change, but what the proxy has learned about
//! an endpoint (in-flight count, latency, health, ejections, pooled connections) must not be lost
//! with it. So the state lives in an [`EndpointRegistry`] keyed by cluster name + address, and a
//! snapshot only holds `Arc`s into it. Everything here is atomics: the request path bumps
//! counters, control tasks (health, ejection) write flags, nobody takes a lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::telemetry::metrics::EndpointMetrics;

/// Circuit-breaker phase of one endpoint (closed, open, half-open; README "Health and
/// ejection"), as stored in [`EndpointState`]'s atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerPhase {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl BreakerPhase {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::HalfOpen,
            2 => Self::Open,
            _ => Self::Closed,
        }
    }

    /// The admin API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// What the proxy knows about one endpoint of one cluster; shared by every worker and every
/// snapshot that lists the endpoint.
///
/// Everything the control tasks and the request path learn about the endpoint (latency, health,
/// ejection, breaker) lives here together, so no subsystem keeps a parallel copy that could
/// disagree with it.
#[derive(Debug)]
pub struct EndpointState {
    cluster: String,
    address: SocketAddr,
    /// Configured or discovered weight; rewritten when a new snapshot lists a different one.
    weight: AtomicU32,
    /// Requests sent and not yet finished; least-request balancing and the admin API read it.
    in_flight: AtomicU64,
    /// Open upstream connections; least-connections and `circuit_breaker.max_connections`.
    connections: AtomicU64,
    /// Of `connections`, those parked idle in some worker's pool. A worker at
    /// `max_connections_per_endpoint` reads it to tell "all busy" (wait) from "some parked in
    /// another worker's pool" (ask for one to be closed).
    idle_connections: AtomicU64,
    /// Idle connections a worker at the cap asked to be closed and no pool has closed yet; the
    /// pools' reapers take from it (see `upstream::pool`).
    close_idle_wanted: AtomicU64,
    /// Latency EWMA in milliseconds, stored as `f64::to_bits` (no atomic f64 in std).
    ewma_ms_bits: AtomicU64,
    /// Active health-check verdict; `true` until a probe says otherwise.
    healthy: AtomicBool,
    /// Ejected until this many milliseconds since the Unix epoch; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Times ejected so far; the next ejection lasts `base_time × (count + 1)`.
    ejections: AtomicU32,
    /// A [`BreakerPhase`] as `u8`.
    breaker: AtomicU8,
    /// Metric label (address, or `other` past `max_endpoint_series`) and request counts, which
    /// the scrape renders while the endpoint is registered.
    metrics: EndpointMetrics,
    /// When the registry first saw the endpoint: `slow_start` ramps its weight from here, and
    /// [`Self::ewma_stamp_ns`] counts from here.
    created: Instant,
    /// When the EWMA last took a sample, in nanoseconds since `created`; peak-EWMA decays the
    /// estimate by the time elapsed since then.
    ewma_stamp_ns: AtomicU64,
    /// Health facts beyond the flags above (last probe, trigger, half-open permits, link to
    /// the cluster's limit counters); written by the cluster's health task.
    health: super::health::EndpointHealth,
}

impl EndpointState {
    /// A fresh state: healthy, nothing in flight, never ejected.
    pub fn new(cluster: &str, address: SocketAddr, weight: u32) -> Self {
        Self {
            cluster: cluster.to_owned(),
            address,
            weight: AtomicU32::new(weight),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            idle_connections: AtomicU64::new(0),
            close_idle_wanted: AtomicU64::new(0),
            ewma_ms_bits: AtomicU64::new(0f64.to_bits()),
            healthy: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            breaker: AtomicU8::new(BreakerPhase::Closed as u8),
            metrics: EndpointMetrics::new(cluster, address),
            created: Instant::now(),
            ewma_stamp_ns: AtomicU64::new(0),
            health: super::health::EndpointHealth::default(),
        }
    }

    /// Health facts: last probe, trigger that fired, half-open trial permits.
    pub fn health(&self) -> &super::health::EndpointHealth {
        &self.health
    }

    /// When the registry first saw this endpoint (what `slow_start` ramps from).
    pub fn created(&self) -> Instant {
        self.created
    }

    /// When the EWMA last took a sample (`created` until the first one).
    pub fn ewma_stamp(&self) -> Instant {
        self.created + Duration::from_nanos(self.ewma_stamp_ns.load(Ordering::Relaxed))
    }

    /// Folds a latency sample taken at `now` into the EWMA: `rule(previous_ms, since_previous)`
    /// returns the new value (`previous_ms` is 0 before the first sample). A CAS loop, so samples
    /// from several workers at once are all counted; the decay rule itself lives in
    /// `balance::peak_ewma`.
    pub fn update_ewma_ms(&self, now: Instant, mut rule: impl FnMut(f64, Duration) -> f64) {
        // One `Instant` subtraction (a call into std per request); the rest is integer
        // arithmetic on the stored nanoseconds.
        let stamp = u64::try_from(now.saturating_duration_since(self.created).as_nanos())
            .unwrap_or(u64::MAX);
        let previous = self.ewma_stamp_ns.load(Ordering::Relaxed);
        let since = Duration::from_nanos(stamp.saturating_sub(previous));
        let _ = self
            .ewma_ms_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(rule(f64::from_bits(bits), since).to_bits())
            });
        self.ewma_stamp_ns.store(stamp, Ordering::Relaxed);
    }

    /// This endpoint's metric label and request counts: record `upstream_requests_total`
    /// through [`EndpointMetrics::record_upstream`]; the scrape renders them (and the health
    /// gauges from this state) while the endpoint is registered.
    pub fn metrics(&self) -> &EndpointMetrics {
        &self.metrics
    }

    /// The cluster this endpoint belongs to (the same address in two clusters is two states).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Where to connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Current weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Set by snapshot builds when config or discovery changes the weight.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            endpoint: Arc::clone(self),
            slot: None,
        }
    }

    /// Counts a request as in flight only if the count after the increment stays `<= cap`
    /// (bounded-load hashing). A compare-and-swap, so concurrent requests cannot overshoot the
    /// cap between the check and the increment.
    pub fn try_start_request(self: &Arc<Self>, cap: u64) -> Option<InFlightGuard> {
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(InFlightGuard {
            endpoint: Arc::clone(self),
            slot: None,
        })
    }

    /// Open upstream connections.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Called by the upstream pool when a connection opens.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.health.connection_opened();
    }

    /// Called by the upstream pool when a connection closes; saturates at 0.
    pub fn connection_closed(&self) {
        let _ = self
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(1))
            });
        self.health.connection_closed();
    }

    /// Connections parked idle in the workers' pools right now.
    pub fn idle_connections(&self) -> u64 {
        self.idle_connections.load(Ordering::Relaxed)
    }

    /// Called by a pool when it parks a connection.
    pub fn connection_parked(&self) {
        self.idle_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by a pool when a parked connection leaves it (handed out or closed); saturates
    /// at 0.
    pub fn connection_unparked(&self) {
        let _ = self
            .idle_connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(1))
            });
    }

    /// A request at the connection cap asks for one idle connection to be closed. The number
    /// of outstanding asks never exceeds the idle connections there are, so repeated asks of
    /// a waiting request cannot close more than exist.
    pub fn want_idle_closed(&self) {
        let idle = self.idle_connections();
        let _ = self
            .close_idle_wanted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w + 1).min(idle))
            });
    }

    /// Whether a pool holding an idle connection should close one now: an ask is outstanding
    /// and the endpoint is still at `cap` (else whoever asked can open its own, and the ask is
    /// stale: it is dropped so it cannot close a connection later that nobody needs closed).
    pub fn take_close_idle(&self, cap: u64) -> bool {
        if cap == 0 || self.connections() < cap {
            self.close_idle_wanted.store(0, Ordering::Relaxed);
            return false;
        }
        self.close_idle_wanted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1))
            .is_ok()
    }

    /// Latency EWMA in milliseconds (0 until the first sample).
    pub fn ewma_ms(&self) -> f64 {
        f64::from_bits(self.ewma_ms_bits.load(Ordering::Relaxed))
    }

    /// Stores a new EWMA value computed by the caller (peak-EWMA owns the decay rule).
    pub fn set_ewma_ms(&self, ms: f64) {
        self.ewma_ms_bits.store(ms.to_bits(), Ordering::Relaxed);
    }

    /// Active health-check verdict.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Written by the health checker.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Ejected until (ms since the Unix epoch), 0 when not ejected.
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Whether the endpoint is ejected at `now_ms` (ms since the Unix epoch).
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms() > now_ms
    }

    /// Ejects until `until_ms` and counts the ejection.
    pub fn eject_until(&self, until_ms: u64) {
        self.ejected_until_ms.store(until_ms, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends an ejection (the ejection count stays, it sets the next ejection's length).
    pub fn clear_ejection(&self) {
        self.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    /// Times ejected so far.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Current breaker phase.
    pub fn breaker(&self) -> BreakerPhase {
        BreakerPhase::from_u8(self.breaker.load(Ordering::Relaxed))
    }

    /// Written by the ejection/breaker logic.
    pub fn set_breaker(&self, phase: BreakerPhase) {
        self.breaker.store(phase as u8, Ordering::Relaxed);
    }
}

/// Keeps an endpoint's in-flight count up while a request is outstanding.
///
/// Holds the `Arc` of the state it incremented, so the decrement lands there even if a reload
/// replaced the snapshot (or dropped the endpoint) in the meantime.
#[derive(Debug)]
#[must_use = "the request stops counting as in flight when the guard drops"]
pub struct InFlightGuard {
    endpoint: Arc<EndpointState>,
    /// The cluster's `max_requests` slot, released together with the in-flight count (the
    /// guard lives until the response body ends).
    slot: Option<super::limits::Slot>,
}

impl InFlightGuard {
    /// Keeps `slot` (a cluster-limit reservation) until this guard drops.
    pub fn hold(&mut self, slot: super::limits::Slot) {
        self.slot = Some(slot);
    }

    /// The endpoint this guard counts against.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.endpoint
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Key of the registry: cluster name and endpoint address.
pub type EndpointKey = (String, SocketAddr);

/// All live [`EndpointState`]s, keyed by cluster + address; lives as long as the process, not a
/// snapshot. Only control-side code (snapshot builds) writes it.
#[derive(Debug, Default)]
pub struct EndpointRegistry {
    states: DashMap<EndpointKey, Arc<EndpointState>>,
    /// Per-cluster health state (limit counters, panic flag, health-task sender), kept across
    /// snapshots like the endpoint states.
    clusters: DashMap<String, Arc<super::health::ClusterHealth>>,
}

impl EndpointRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state for `cluster`/`address`, created on first sight; an existing state keeps
    /// everything it learned and only takes the new weight.
    pub fn get_or_create(
        &self,
        cluster: &str,
        address: SocketAddr,
        weight: u32,
    ) -> Arc<EndpointState> {
        let state = self
            .states
            .entry((cluster.to_owned(), address))
            .or_insert_with(|| {
                let state = EndpointState::new(cluster, address, weight);
                state.health().bind(self.cluster_health(cluster));
                Arc::new(state)
            })
            .clone();
        state.set_weight(weight);
        state
    }

    /// The state for `cluster`/`address`, if registered.
    pub fn get(&self, cluster: &str, address: SocketAddr) -> Option<Arc<EndpointState>> {
        self.states
            .get(&(cluster.to_owned(), address))
            .map(|s| Arc::clone(s.value()))
    }

    /// Drops every entry for which `keep` is false (endpoints gone from the config or their
    /// discovery source) and gives their metric labels back to the budget: their series leave
    /// the scrape with the snapshot, and a later endpoint may take the label. Requests still
    /// holding an `Arc` finish against it undisturbed.
    pub fn retain(&self, mut keep: impl FnMut(&str, SocketAddr) -> bool) {
        self.states.retain(|(cluster, address), state| {
            let kept = keep(cluster, *address);
            if !kept {
                state.metrics().release();
            }
            kept
        });
        self.promote_folded();
    }

    /// Drops the entries of `cluster` at `addresses` (endpoints a discovery update removed),
    /// as [`Self::retain`] would, without visiting every other entry: a discovery update's cost
    /// follows what changed, not how many endpoints the proxy has.
    pub fn remove(&self, cluster: &str, addresses: &[SocketAddr]) {
        if addresses.is_empty() {
            return;
        }
        for &address in addresses {
            if let Some((_, state)) = self.states.remove(&(cluster.to_owned(), address)) {
                state.metrics().release();
            }
        }
        self.promote_folded();
    }

    /// Gives endpoints labelled `other` their own label while the budget has room, by cluster
    /// and address. Runs after endpoints left: a snapshot build creates the new endpoints
    /// before the registry lets the old ones go, so in an update that replaces endpoints at a
    /// full budget the new ones are first labelled `other` and get their label here.
    fn promote_folded(&self) {
        if !crate::telemetry::metrics::promotions_possible() {
            return;
        }
        let mut folded: Vec<Arc<EndpointState>> = self
            .states
            .iter()
            .filter(|e| e.value().metrics().is_folded())
            .map(|e| Arc::clone(e.value()))
            .collect();
        folded.sort_by(|a, b| (a.cluster(), a.address()).cmp(&(b.cluster(), b.address())));
        // Bounded by the list; stops at the first endpoint the budget has no room for.
        for state in folded {
            if !state.metrics().promote() {
                break;
            }
        }
    }

    /// Every registered endpoint (for the scrape, which renders the endpoint series).
    pub fn states(&self) -> Vec<Arc<EndpointState>> {
        self.states.iter().map(|e| Arc::clone(e.value())).collect()
    }

    /// The health state of `cluster`, created on first sight.
    pub fn cluster_health(&self, cluster: &str) -> Arc<super::health::ClusterHealth> {
        if let Some(found) = self.clusters.get(cluster) {
            return Arc::clone(found.value());
        }
        self.clusters
            .entry(cluster.to_owned())
            .or_insert_with(|| Arc::new(super::health::ClusterHealth::new(cluster)))
            .clone()
    }

    /// Drops the health state of clusters for which `keep` is false.
    pub fn retain_clusters(&self, mut keep: impl FnMut(&str) -> bool) {
        self.clusters.retain(|name, _| keep(name));
    }

    /// Number of registered endpoints.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn guard_decrements_the_state_it_incremented() {
        let registry = EndpointRegistry::new();
        let state = registry.get_or_create("a", addr(1), 1);
        let guard = state.start_request();
        assert_eq!(state.in_flight(), 1);
        // The endpoint leaves the config while the request runs.
        registry.retain(|_, _| false);
        assert!(registry.get("a", addr(1)).is_none());
        drop(guard);
        assert_eq!(state.in_flight(), 0);
    }

    #[test]
    fn state_survives_when_endpoint_stays() {
        let registry = EndpointRegistry::new();
        let before = registry.get_or_create("a", addr(1), 1);
        before.eject_until(5);
        let after = registry.get_or_create("a", addr(1), 3);
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.ejections(), 1);
        assert_eq!(after.weight(), 3);
        // Same address in another cluster is separate state.
        let other = registry.get_or_create("b", addr(1), 1);
        assert!(!Arc::ptr_eq(&before, &other));
        registry.retain(|cluster, _| cluster == "a");
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn close_idle_asks_are_bounded_and_dropped_below_the_cap() {
        let s = EndpointState::new("a", addr(1), 1);
        s.connection_opened();
        s.connection_parked();
        // Nothing idle to ask for beyond the one there is, however often a waiter asks.
        s.want_idle_closed();
        s.want_idle_closed();
        assert!(s.take_close_idle(1));
        assert!(!s.take_close_idle(1));
        // An ask made at the cap is dropped once the endpoint is below it.
        s.want_idle_closed();
        s.connection_closed();
        assert!(!s.take_close_idle(1));
        s.connection_opened();
        assert!(!s.take_close_idle(1), "the stale ask was dropped");
        s.connection_unparked();
        assert_eq!(s.idle_connections(), 0);
    }

    #[test]
    fn atomics_round_trip() {
        let s = EndpointState::new("a", addr(1), 1);
        s.set_ewma_ms(12.5);
        assert_eq!(s.ewma_ms(), 12.5);
        s.set_breaker(BreakerPhase::HalfOpen);
        assert_eq!(s.breaker(), BreakerPhase::HalfOpen);
        s.connection_closed();
        assert_eq!(s.connections(), 0);
        s.connection_opened();
        assert_eq!(s.connections(), 1);
        assert!(!s.is_ejected(10));
        s.eject_until(20);
        assert!(s.is_ejected(10) && !s.is_ejected(20));
    }
}
