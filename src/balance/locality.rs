//! Zone-aware routing (`locality = "prefer_local"`): keep a cluster's traffic in the proxy's own
//! zone (`[runtime] zone`) while that zone can take it, spill part of it to the other zones when
//! it cannot, and come back when it can again. Anchors: Envoy's zone-aware routing (stay local
//! in proportion to the local zone's healthy capacity) and Linkerd's HAZL (stay local until load
//! says otherwise).
//!
//! **Per snapshot** ([`Zoned::build`]): the cluster's endpoints are split once into the local
//! set (zone equal to `[runtime] zone`) and the remote set (every other zone, and endpoints with
//! no zone), each with its own balancer of the cluster's algorithm over just that set. So a
//! pick compares no strings, every algorithm works unchanged inside a set (round-robin state,
//! P2C, slow start, bounded loads count only that set), and the hashing balancers have a table
//! per set: a key keeps its endpoint inside the zone it is sent to.
//!
//! **Per pick** ([`Zoned::choose`]): one relaxed load of the cluster's local share
//! (`ClusterHealth::local_share`), one draw, the set's balancer; when nothing in the chosen set
//! is usable (ejected, already tried, a share a moment stale), the other set. So a pick never
//! lands on an empty set, in panic mode either. The draw is the request's random number, or,
//! for a request with a hash key, a value derived from the key: a key then stays in its zone
//! while the share does not move, and when the share drops, the keys that leave are always the
//! same ones (the highest draws), as slow start moves keys consistently.
//!
//! **Off the request path** ([`Spill`]): the cluster's health task samples both sets every
//! [`TICK`] and after every health event, and publishes `min(capacity share, load share)`:
//!
//! - *capacity* (Envoy's rule): with `L` and `R` the weights of the local and remote sets and
//!   `Lh`, `Rh` those of their endpoints in service, the local zone's fair part of all traffic is
//!   `L / (L + R)` (callers are assumed spread over zones like the endpoints) and it can take
//!   `Lh / (Lh + Rh)`; the share is `min(1, (Lh / (Lh + Rh)) / (L / (L + R)))`. All healthy: 1.
//!   Two of three local endpoints out with three healthy remote: 0.5. None in service: 0. No
//!   remote endpoint in service: 1. In panic mode every endpoint is admitted, so the split is
//!   zone-blind: `L / (L + R)`.
//! - *load* (HAZL's idea, on least-request's signal): `l` and `r` are the in-flight requests
//!   per endpoint in service of each set, smoothed over ticks. While `l > ratio × (r + 1)`
//!   (`locality_spill_ratio`; the `+ 1` keeps a lightly loaded zone from spilling because the
//!   remote one is idle) the load share drops by [`STEP_DOWN`] per tick; once `l` is below half
//!   that threshold it climbs back by [`STEP_UP`] per tick; in between it holds (hysteresis).
//!   Steps, not a jump: traffic spills proportionally, and a spilled zone keeps a trickle of
//!   requests that show when it has recovered.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;

use super::{Balancer, PickContext};
use crate::config::ClusterConfig;
use crate::endpoint::health::SHARE_ONE;
use crate::endpoint::{EndpointState, InFlightGuard};
use crate::telemetry::metrics::ZONE_REQUESTS_TOTAL;

/// How often the health task re-evaluates the load half of the spill rule: the reaction time
/// to a slow or overloaded zone is a few ticks, and a tick costs one pass over the cluster's
/// endpoint atomics on the control thread.
pub const TICK: Duration = Duration::from_millis(100);

/// How much the load share drops per tick while the local zone is over the threshold.
pub const STEP_DOWN: f64 = 0.1;

/// How much the load share climbs per tick once the local zone is well under the threshold;
/// smaller than [`STEP_DOWN`] so traffic returns more carefully than it leaves.
pub const STEP_UP: f64 = 0.05;

/// Weight of a new sample in the smoothed in-flight figures (per tick).
const SMOOTHING: f64 = 0.5;

/// A cluster's endpoints split by zone, each part with its own balancer (see the module doc).
#[derive(Debug)]
pub struct Zoned {
    local: ZoneSet,
    remote: ZoneSet,
}

/// One side of the split.
#[derive(Debug)]
pub struct ZoneSet {
    endpoints: Vec<Arc<EndpointState>>,
    /// Each endpoint's index in the cluster's list (what `health::admit`, the attempt loop's
    /// tried list and the caller's `usable` speak).
    global: Vec<usize>,
    balancer: Box<dyn Balancer>,
    /// `zone_requests_total{cluster, zone}`, registered at build so a pick formats no label.
    requests: Counter,
}

impl Zoned {
    /// Splits `endpoints` (the cluster's list in canonical order): `local(i)` says whether
    /// endpoint `i` is in the proxy's zone.
    pub fn build(
        cluster: &ClusterConfig,
        endpoints: &[Arc<EndpointState>],
        local: impl Fn(usize) -> bool,
    ) -> Self {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for i in 0..endpoints.len() {
            if local(i) {
                l.push(i);
            } else {
                r.push(i);
            }
        }
        Self {
            local: ZoneSet::new(cluster, endpoints, l, "local"),
            remote: ZoneSet::new(cluster, endpoints, r, "remote"),
        }
    }

    /// The pick: the first usable candidate of the set the draw chooses (local with
    /// probability `share / SHARE_ONE`), else of the other set; the index is the cluster's.
    pub fn choose(
        &self,
        ctx: &PickContext<'_>,
        share: u32,
        mut usable: impl FnMut(usize) -> bool,
    ) -> Option<(usize, InFlightGuard)> {
        let (first, second) = if draw(ctx) < share {
            (&self.local, &self.remote)
        } else {
            (&self.remote, &self.local)
        };
        first
            .choose(ctx, &mut usable)
            .or_else(|| second.choose(ctx, &mut usable))
    }

    /// The local set.
    pub fn local(&self) -> &ZoneSet {
        &self.local
    }

    /// The remote set.
    pub fn remote(&self) -> &ZoneSet {
        &self.remote
    }
}

/// 24 bits for comparing with the share: from the request's hash key when it has one (so a
/// key's zone is stable), else from its random number; remixed either way, so the draw does not
/// correlate with the balancer's own use of the same number.
fn draw(ctx: &PickContext<'_>) -> u32 {
    let seed = ctx.hash.map_or(ctx.random, |h| h ^ 0x5A0E_5A0E_5A0E_5A0E);
    let bits = (super::remix(seed) >> 40) as u32;
    debug_assert!(bits < SHARE_ONE);
    bits
}

impl ZoneSet {
    fn new(
        cluster: &ClusterConfig,
        all: &[Arc<EndpointState>],
        global: Vec<usize>,
        zone: &'static str,
    ) -> Self {
        let endpoints: Vec<Arc<EndpointState>> =
            global.iter().filter_map(|&i| all.get(i).cloned()).collect();
        Self {
            balancer: super::build(cluster, &endpoints),
            endpoints,
            global,
            requests: metrics::counter!(ZONE_REQUESTS_TOTAL,
                "cluster" => cluster.name.clone(), "zone" => zone),
        }
    }

    fn choose(
        &self,
        ctx: &PickContext<'_>,
        usable: &mut impl FnMut(usize) -> bool,
    ) -> Option<(usize, InFlightGuard)> {
        if self.endpoints.is_empty() {
            return None;
        }
        let inner = PickContext {
            endpoints: &self.endpoints,
            client: ctx.client,
            random: ctx.random,
            hash: ctx.hash,
        };
        let global = &self.global;
        let (index, guard) = super::choose(self.balancer.as_ref(), &inner, |i| {
            global.get(i).is_some_and(|&g| usable(g))
        })?;
        self.requests.increment(1);
        Some((*global.get(index)?, guard))
    }

    /// The set's endpoints.
    pub fn endpoints(&self) -> &[Arc<EndpointState>] {
        &self.endpoints
    }

    /// What the spill rule reads of this set now; `in_service` is the health module's test
    /// (passing checks, breaker closed).
    pub fn sample(&self, in_service: impl Fn(&EndpointState) -> bool) -> ZoneLoad {
        let mut load = ZoneLoad::default();
        for e in &self.endpoints {
            let weight = u64::from(e.weight());
            load.weight += weight;
            if in_service(e) {
                load.serving_weight += weight;
                load.serving += 1;
                load.in_flight += e.in_flight();
            }
        }
        load
    }
}

/// One zone set at one moment, as the spill rule sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ZoneLoad {
    /// Sum of the set's weights.
    pub weight: u64,
    /// Sum of the weights of its endpoints in service.
    pub serving_weight: u64,
    /// How many of its endpoints are in service.
    pub serving: u64,
    /// Requests in flight at its endpoints in service.
    pub in_flight: u64,
}

/// The spill rule's state for one cluster (owned by its health task): the load share and the
/// smoothed in-flight figures it is decided on. See the module doc for the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Spill {
    load_share: f64,
    local_load: f64,
    remote_load: f64,
}

impl Default for Spill {
    fn default() -> Self {
        Self::new()
    }
}

impl Spill {
    /// All local, nothing in flight.
    pub fn new() -> Self {
        Self {
            load_share: 1.0,
            local_load: 0.0,
            remote_load: 0.0,
        }
    }

    /// One tick of the load half: smooths the in-flight figures and steps the load share.
    pub fn observe(&mut self, local: &ZoneLoad, remote: &ZoneLoad, ratio: f64) {
        let per = |z: &ZoneLoad| z.in_flight as f64 / z.serving.max(1) as f64;
        self.local_load += SMOOTHING * (per(local) - self.local_load);
        self.remote_load += SMOOTHING * (per(remote) - self.remote_load);
        // With no remote endpoint in service there is nowhere to spill to.
        if remote.serving == 0 {
            self.load_share = 1.0;
            return;
        }
        let threshold = ratio * (self.remote_load + 1.0);
        if self.local_load > threshold {
            self.load_share = (self.load_share - STEP_DOWN).max(0.0);
        } else if self.local_load < threshold / 2.0 {
            self.load_share = (self.load_share + STEP_UP).min(1.0);
        }
    }

    /// The share to publish: the smaller of the capacity share and the load share.
    pub fn share(&self, local: &ZoneLoad, remote: &ZoneLoad, panic: bool) -> f64 {
        capacity_share(local, remote, panic).min(self.load_share)
    }

    /// The load half alone (for tests and the admin view).
    pub fn load_share(&self) -> f64 {
        self.load_share
    }
}

/// The capacity half of the rule (Envoy's): see the module doc.
pub fn capacity_share(local: &ZoneLoad, remote: &ZoneLoad, panic: bool) -> f64 {
    if local.weight == 0 {
        return 0.0;
    }
    if remote.weight == 0 {
        return 1.0;
    }
    let fair = local.weight as f64 / (local.weight + remote.weight) as f64;
    if panic || local.serving_weight + remote.serving_weight == 0 {
        // Every endpoint is admitted (panic routing), or none is: zone-blind.
        return fair;
    }
    if remote.serving_weight == 0 {
        return 1.0;
    }
    let able = local.serving_weight as f64 / (local.serving_weight + remote.serving_weight) as f64;
    (able / fair).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(endpoints: u64, serving: u64, in_flight: u64) -> ZoneLoad {
        ZoneLoad {
            weight: endpoints,
            serving_weight: serving,
            serving,
            in_flight,
        }
    }

    #[test]
    fn capacity_follows_the_local_zones_healthy_part() {
        let all = zone(3, 3, 0);
        assert_eq!(capacity_share(&all, &all, false), 1.0);
        // Two of three local endpoints out, three remote healthy: (1/4) / (1/2).
        assert!((capacity_share(&zone(3, 1, 0), &all, false) - 0.5).abs() < 1e-9);
        // One of three out: (2/5) / (1/2).
        assert!((capacity_share(&zone(3, 2, 0), &all, false) - 0.8).abs() < 1e-9);
        assert_eq!(capacity_share(&zone(3, 0, 0), &all, false), 0.0);
        // The remote zone is worse off: stay local.
        assert_eq!(capacity_share(&zone(3, 2, 0), &zone(3, 1, 0), false), 1.0);
        assert_eq!(capacity_share(&zone(3, 1, 0), &zone(3, 0, 0), false), 1.0);
        // Panic: zone-blind.
        assert!((capacity_share(&zone(3, 0, 0), &zone(1, 0, 0), true) - 0.75).abs() < 1e-9);
        // A missing side.
        assert_eq!(capacity_share(&zone(0, 0, 0), &all, false), 0.0);
        assert_eq!(capacity_share(&all, &zone(0, 0, 0), true), 1.0);
    }

    #[test]
    fn light_load_stays_local() {
        let mut spill = Spill::new();
        for _ in 0..100 {
            spill.observe(&zone(3, 3, 2), &zone(3, 3, 0), 2.0);
        }
        assert_eq!(spill.share(&zone(3, 3, 2), &zone(3, 3, 0), false), 1.0);
    }

    #[test]
    fn load_spills_stepwise_and_returns_with_hysteresis() {
        let mut spill = Spill::new();
        let (busy, idle) = (zone(3, 3, 30), zone(3, 3, 0));
        spill.observe(&busy, &idle, 2.0);
        // Smoothed: 10 in flight per endpoint seen as 5 after one tick, over 2 × (0 + 1).
        assert!(
            (spill.load_share() - 0.9).abs() < 1e-9,
            "one step, not a jump"
        );
        for _ in 0..5 {
            spill.observe(&busy, &idle, 2.0);
        }
        assert!((spill.load_share() - 0.4).abs() < 1e-9);
        for _ in 0..20 {
            spill.observe(&busy, &idle, 2.0);
        }
        assert_eq!(spill.load_share(), 0.0, "floored at 0");
        // Between half the threshold and the threshold: hold.
        let mut held = spill.clone();
        for _ in 0..20 {
            held.observe(&zone(3, 3, 5), &idle, 2.0);
        }
        assert_eq!(
            held.load_share(),
            0.0,
            "1.67 per endpoint: between 1 and 2, held"
        );
        // Clear: climbs back in STEP_UP steps.
        for _ in 0..10 {
            spill.observe(&zone(3, 3, 0), &idle, 2.0);
        }
        assert!(spill.load_share() > 0.0 && spill.load_share() < 1.0);
        for _ in 0..20 {
            spill.observe(&zone(3, 3, 0), &idle, 2.0);
        }
        assert_eq!(spill.load_share(), 1.0);
    }

    #[test]
    fn the_threshold_is_relative_to_the_remote_zones_load() {
        let mut spill = Spill::new();
        // 4 per endpoint locally against 3 remotely: under 2 × (3 + 1).
        for _ in 0..20 {
            spill.observe(&zone(3, 3, 12), &zone(3, 3, 9), 2.0);
        }
        assert_eq!(spill.load_share(), 1.0);
        // Nowhere to spill to.
        for _ in 0..20 {
            spill.observe(&zone(3, 3, 300), &zone(3, 0, 0), 2.0);
        }
        assert_eq!(spill.load_share(), 1.0);
    }

    #[test]
    fn the_published_share_is_the_smaller_half() {
        let mut spill = Spill::new();
        for _ in 0..3 {
            spill.observe(&zone(3, 3, 60), &zone(3, 3, 0), 2.0);
        }
        let share = spill.share(&zone(3, 3, 60), &zone(3, 3, 0), false);
        assert!((share - 0.7).abs() < 1e-9);
        let share = spill.share(&zone(3, 1, 60), &zone(3, 3, 0), false);
        assert!((share - 0.5).abs() < 1e-9);
    }

    fn states(n: u16) -> Vec<Arc<EndpointState>> {
        (1..=n)
            .map(|p| {
                Arc::new(EndpointState::new(
                    "z",
                    std::net::SocketAddr::from(([127, 0, 0, 1], p)),
                    1,
                ))
            })
            .collect()
    }

    fn cluster(balance: &str) -> ClusterConfig {
        let hash = if balance == "ring_hash" || balance == "maglev" {
            "hash_on = \"header:x-user\"\n"
        } else {
            ""
        };
        let text = format!(
            "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\n[[routes]]\nlistener = \"p\"\ncluster = \"z\"\n[clusters.z]\nendpoints = [\"127.0.0.1:1\"]\nbalance = \"{balance}\"\n{hash}"
        );
        let config = crate::config::parse(&text, std::path::Path::new("t.toml")).expect("config");
        config.clusters["z"].clone()
    }

    fn ctx<'a>(
        endpoints: &'a [Arc<EndpointState>],
        random: u64,
        hash: Option<u64>,
    ) -> PickContext<'a> {
        PickContext {
            endpoints,
            client: None,
            random,
            hash,
        }
    }

    #[test]
    fn picks_follow_the_share_for_every_algorithm() {
        let endpoints = states(6);
        for balance in [
            "round_robin",
            "random",
            "least_request",
            "least_connections",
            "peak_ewma",
            "ring_hash",
            "maglev",
        ] {
            let zoned = Zoned::build(&cluster(balance), &endpoints, |i| i < 3);
            let hashing = matches!(balance, "ring_hash" | "maglev");
            let mut local = 0;
            for n in 0..1000u64 {
                let random = super::super::remix(n);
                let hash = hashing.then_some(n.wrapping_mul(31));
                let (i, _guard) = zoned
                    .choose(&ctx(&endpoints, random, hash), SHARE_ONE, |_| true)
                    .expect("a pick");
                if i < 3 {
                    local += 1;
                }
            }
            assert_eq!(local, 1000, "{balance}: share 1 keeps every pick local");
            let mut local = 0;
            for n in 0..4000u64 {
                let hash = hashing.then_some(n);
                let (i, _guard) = zoned
                    .choose(
                        &ctx(&endpoints, super::super::remix(n), hash),
                        SHARE_ONE / 4,
                        |_| true,
                    )
                    .expect("a pick");
                if i < 3 {
                    local += 1;
                }
            }
            assert!(
                (800..1200).contains(&local),
                "{balance}: a quarter local, got {local}"
            );
        }
    }

    #[test]
    fn an_unusable_set_falls_to_the_other_and_never_to_nothing() {
        let endpoints = states(4);
        let zoned = Zoned::build(&cluster("round_robin"), &endpoints, |i| i < 2);
        for n in 0..100u64 {
            let (i, _g) = zoned
                .choose(&ctx(&endpoints, n, None), SHARE_ONE, |i| i >= 2)
                .expect("the remote set");
            assert!(i >= 2);
            let (i, _g) = zoned
                .choose(&ctx(&endpoints, n, None), 0, |i| i < 2)
                .expect("the local set");
            assert!(i < 2);
        }
        assert!(zoned
            .choose(&ctx(&endpoints, 1, None), SHARE_ONE, |_| false)
            .is_none());
        // An empty local set (no endpoint in the proxy's zone): always remote.
        let zoned = Zoned::build(&cluster("least_request"), &endpoints, |_| false);
        let (i, _g) = zoned
            .choose(&ctx(&endpoints, 7, None), SHARE_ONE, |_| true)
            .expect("remote");
        assert!(i < 4);
    }

    #[test]
    fn a_hash_key_keeps_its_endpoint_and_its_zone() {
        let endpoints = states(6);
        for balance in ["ring_hash", "maglev"] {
            let zoned = Zoned::build(&cluster(balance), &endpoints, |i| i < 3);
            for key in 0..200u64 {
                let first = zoned
                    .choose(&ctx(&endpoints, 1, Some(key)), SHARE_ONE, |_| true)
                    .map(|p| p.0);
                assert!(first.is_some_and(|i| i < 3));
                for random in 2..6 {
                    let again = zoned
                        .choose(&ctx(&endpoints, random, Some(key)), SHARE_ONE, |_| true)
                        .map(|p| p.0);
                    assert_eq!(again, first, "{balance}: key {key} moved");
                }
                // At half share, a key's zone does not depend on the request's random number.
                let half: Vec<bool> = (0..4)
                    .filter_map(|r| {
                        zoned.choose(&ctx(&endpoints, r, Some(key)), SHARE_ONE / 2, |_| true)
                    })
                    .map(|p| p.0 < 3)
                    .collect();
                assert!(half.iter().all(|&l| l == half[0]), "{balance}: key {key}");
            }
        }
    }
}
