//! The mesh scope of route rate limits (`rate_limit = { ..., scope = "mesh" }`): every member
//! measures its demand per key, gossips its busiest keys in its record (`rate_usage`), and
//! takes a share of the limit proportional to its own demand (`ratelimit::share`), which it
//! publishes into the route's limiter for the request path to read (one `ArcSwap` load per
//! request on such routes). No rate-limit service, no shared counter: each member enforces
//! its share locally.
//!
//! Once per [`PERIOD`]: take the demand each mesh-scoped limiter counted (requests per key,
//! admitted or not), keep the [`MAX_RATE_KEYS`] busiest per route, and send them to the node
//! when they changed by more than [`CHANGE`] (a record change is pushed to peers at once, so
//! gossip follows demand, not the clock). Then compute our shares from the same numbers peers
//! see from us (what we last published, so every member works from identical inputs and the
//! shares add up to one) and the records of live members that enforce the route.
//!
//! Convergence: a change of demand is measured within one period, reaches peers as a rumor
//! within milliseconds (the 2 s anti-entropy exchange when a rumor is lost) and is applied at
//! each peer's next period: two periods plus gossip, about 2 s. A member that dies or leaves
//! drops out of the view, so its share returns to the others at their next period (after
//! SWIM's suspicion timeout for a crash, at once for a graceful leave). In a partition each
//! side shares the limit among the members it sees: at most one whole limit per side, never
//! more than N x limit for N members.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::state::{MemberState, RateUsage, MAX_RATE_KEYS, MAX_RATE_ROUTES, MAX_RATE_ROUTE_NAME};
use super::MeshHandle;
use crate::ratelimit::share::{self, Demand};
use crate::ratelimit::RouteLimiter;
use crate::state::Shared;
use crate::telemetry::metrics::RATE_LIMIT_SHARE;

/// How often demand is measured and shares recomputed.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Relative change of a key's rate (or 1 request/s, whichever is more) that is worth a record
/// update; smaller changes keep the published numbers.
pub const CHANGE: f32 = 0.1;

/// Runs until the proxy is gone: see the module doc.
pub async fn run(shared: Weak<Shared>, mesh: MeshHandle) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: Vec<RateUsage> = Vec::new();
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let Some(proxy) = shared.upgrade() else {
            return;
        };
        let snapshot = proxy.snapshot();
        drop(proxy);
        let now = Instant::now();
        let seconds = now.duration_since(last).as_secs_f64().max(0.001);
        last = now;
        let limiters: Vec<_> = snapshot
            .rate_limits()
            .mesh_scoped()
            .filter(|l| l.route().len() <= MAX_RATE_ROUTE_NAME)
            .take(MAX_RATE_ROUTES)
            .collect();
        let measured: Vec<RateUsage> = limiters.iter().map(|l| measure(l, seconds)).collect();
        if changed(&published, &measured) {
            mesh.report_rate_usage(measured.clone());
            published = measured;
        }
        let view = mesh.view();
        let peers: Vec<&MemberState> = view
            .records
            .iter()
            .filter(|r| Some(r.id) != view.local)
            .map(|r| &**r)
            .collect();
        for limiter in limiters {
            let own = published
                .iter()
                .find(|u| u.route == limiter.route())
                .map(demand)
                .unwrap_or_default();
            // Members that enforce the route list it (with no keys when idle); the others do
            // not count.
            let others: Vec<Demand> = peers
                .iter()
                .filter_map(|r| r.rate_usage.iter().find(|u| u.route == limiter.route()))
                .map(demand)
                .collect();
            let refs: Vec<&Demand> = others.iter().collect();
            let shares = share::compute(&own, &refs, limiter.per_second());
            metrics::gauge!(RATE_LIMIT_SHARE, "route" => limiter.route().to_owned())
                .set(total_share(&own, &refs));
            limiter.publish_shares(shares);
        }
    }
}

/// The limiter's demand since the last period, busiest keys first (requests per second).
fn measure(limiter: &RouteLimiter, seconds: f64) -> RateUsage {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for (key, n) in limiter.take_demand() {
        *counts.entry(key.max(1)).or_default() += u64::from(n);
    }
    let mut keys: Vec<(u64, f32)> = counts
        .into_iter()
        .map(|(key, n)| (key, (n as f64 / seconds) as f32))
        .collect();
    keys.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    keys.truncate(MAX_RATE_KEYS);
    RateUsage {
        route: limiter.route().to_owned(),
        keys,
    }
}

/// Whether `new` differs from what peers hold enough to publish: other routes or keys, or a
/// rate that moved by more than [`CHANGE`].
fn changed(old: &[RateUsage], new: &[RateUsage]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|(a, b)| {
            a.route != b.route
                || a.keys.len() != b.keys.len()
                || a.keys
                    .iter()
                    .zip(&b.keys)
                    .any(|(x, y)| x.0 != y.0 || (x.1 - y.1).abs() > (x.1 * CHANGE).max(1.0))
        })
}

fn demand(usage: &RateUsage) -> Demand {
    usage
        .keys
        .iter()
        .map(|&(key, rate)| (key, f64::from(rate)))
        .collect()
}

/// Our part of the route's whole gossiped demand (the gauge).
fn total_share(own: &Demand, peers: &[&Demand]) -> f64 {
    let mine: f64 = own.values().sum();
    let all: f64 = mine + peers.iter().flat_map(|p| p.values()).sum::<f64>();
    if all <= 0.0 {
        1.0 / (peers.len() + 1) as f64
    } else {
        mine / all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(route: &str, keys: &[(u64, f32)]) -> RateUsage {
        RateUsage {
            route: route.to_owned(),
            keys: keys.to_vec(),
        }
    }

    #[test]
    fn small_changes_are_not_published() {
        let old = vec![usage("r", &[(1, 100.0)])];
        assert!(!changed(&old, &[usage("r", &[(1, 105.0)])]));
        assert!(changed(&old, &[usage("r", &[(1, 120.0)])]));
        assert!(changed(&old, &[usage("r", &[(2, 100.0)])]));
        assert!(changed(&old, &[usage("r", &[])]));
        assert!(changed(&[], &old));
        // Low rates: within 1 request/s is no change.
        let low = vec![usage("r", &[(1, 2.0)])];
        assert!(!changed(&low, &[usage("r", &[(1, 2.9)])]));
    }
}
