//! The per-route and per-cluster [`Ring`](super::ring::Ring)s of one proxy, and the `GET /stats`
//! document.
//!
//! The table lives in the snapshot (built with it, so the request path finds a route's ring by
//! index, and its cluster's ring among the one or few clusters that route targets, without a
//! map lookup) and hands its rings on to the next snapshot by name: a reload keeps the last
//! five minutes of every route and cluster it keeps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use serde_json::{json, Value};

use super::ring::{epoch_at, LazyRing, Summary, BUCKET_SECS, SLOTS};
use crate::config::{Config, RouteConfig};

/// Window of the headline figures (`rate`, `p50_ms`, `p99_ms`, `error_ratio`): the last
/// minute, six buckets.
const HEADLINE_BUCKETS: usize = 6;

/// The rings of every route (by config index) and cluster (by name).
#[derive(Debug, Default)]
pub struct StatsTable {
    /// In config order.
    routes: Vec<RouteRings>,
    clusters: BTreeMap<String, Arc<LazyRing>>,
}

/// One route's ring, and the rings of the clusters it can pick (shared with `clusters`).
#[derive(Debug)]
struct RouteRings {
    /// The route as configured (name, listener), shared with the snapshot's config.
    config: Arc<RouteConfig>,
    ring: Arc<LazyRing>,
    /// The rings of the clusters the route can pick, by cluster name.
    targets: Vec<(String, Arc<LazyRing>)>,
}

impl StatsTable {
    /// Rings for `config`'s routes and clusters, taking over `previous`'s ring for every name
    /// that stays.
    pub fn build(config: &Config, previous: Option<&StatsTable>) -> Self {
        let clusters: BTreeMap<String, Arc<LazyRing>> = config
            .clusters
            .keys()
            .map(|name| {
                let ring = previous
                    .and_then(|p| p.clusters.get(name))
                    .map_or_else(Arc::default, Arc::clone);
                (name.clone(), ring)
            })
            .collect();
        // By name, so a reload of a 10k-route config stays linear.
        let kept: HashMap<&str, &Arc<LazyRing>> = previous
            .map(|p| {
                p.routes
                    .iter()
                    .map(|r| (r.config.name.as_str(), &r.ring))
                    .collect()
            })
            .unwrap_or_default();
        let route_ring = |name: &str| kept.get(name).map_or_else(Arc::default, |r| Arc::clone(r));
        let routes = config
            .routes
            .iter()
            .map(|r| RouteRings {
                config: Arc::clone(r),
                ring: route_ring(&r.name),
                targets: r
                    .target
                    .clusters()
                    .into_iter()
                    .filter_map(|c| Some((c.to_owned(), Arc::clone(clusters.get(c)?))))
                    .collect(),
            })
            .collect();
        Self { routes, clusters }
    }

    /// Counts one answered request, ended at `now` (a reading the caller has), under its route
    /// (index) and cluster (name), when known.
    pub fn record(
        &self,
        route: Option<usize>,
        cluster: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
        now: Instant,
    ) {
        // Requests that matched no route (404) belong to no route or cluster.
        let Some(route) = route.and_then(|i| self.routes.get(i)) else {
            return;
        };
        let epoch = epoch_at(now);
        let error = status.is_server_error();
        route.ring.record_in(epoch, error, elapsed);
        let target = cluster.and_then(|c| route.targets.iter().find(|(name, _)| name == c));
        if let Some((_, ring)) = target {
            ring.record_in(epoch, error, elapsed);
        }
    }

    /// `GET /stats` without the cache part: every route and cluster with its last-minute
    /// figures and its five-minute series (oldest first), for the status page's sparklines.
    pub fn view(&self, now: SystemTime) -> Value {
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = ring_view(&r.ring, now);
                v["name"] = json!(r.config.name);
                v["listener"] = json!(r.config.listener);
                v
            })
            .collect();
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, ring)| {
                let mut v = ring_view(ring, now);
                v["name"] = json!(name);
                v
            })
            .collect();
        json!({
            "bucket_seconds": BUCKET_SECS,
            "window_seconds": BUCKET_SECS * HEADLINE_BUCKETS as u64,
            "routes": routes,
            "clusters": clusters,
        })
    }
}

fn ring_view(ring: &LazyRing, now: SystemTime) -> Value {
    let buckets = ring.buckets(now);
    let mut minute = Summary::default();
    for bucket in &buckets[SLOTS - HEADLINE_BUCKETS..] {
        minute.merge(bucket);
    }
    // The newest bucket is still filling: the rate counts the seconds it has run so far.
    let into_current = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % BUCKET_SECS);
    let seconds = (BUCKET_SECS * (HEADLINE_BUCKETS as u64 - 1) + into_current + 1) as f64;
    let series: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "requests": b.requests,
                "errors": b.errors,
                "p50_ms": b.quantile_ms(0.5).map(round),
                "p99_ms": b.quantile_ms(0.99).map(round),
            })
        })
        .collect();
    json!({
        "requests": minute.requests,
        "rate": round(minute.requests as f64 / seconds),
        "error_ratio": (minute.requests > 0)
            .then(|| round(minute.errors as f64 / minute.requests as f64)),
        "p50_ms": minute.quantile_ms(0.5).map(round),
        "p99_ms": minute.quantile_ms(0.99).map(round),
        "series": series,
    })
}

/// Three decimals: the page shows two at most, and the JSON stays short.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(routes: &[&str]) -> Config {
        let mut text = String::from("[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n");
        for r in routes {
            text.push_str(&format!("[[routes]]\nname = \"{r}\"\ncluster = \"c\"\n"));
        }
        text.push_str("[clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n");
        crate::config::parse(&text, std::path::Path::new("t.toml")).expect("valid config")
    }

    #[test]
    fn rings_survive_a_rebuild_by_name() {
        let first = StatsTable::build(&config(&["a", "b"]), None);
        let now = Instant::now();
        first.record(
            Some(1),
            Some("c"),
            StatusCode::BAD_GATEWAY,
            Duration::from_millis(1),
            now,
        );
        first.record(
            None,
            None,
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
            now,
        );
        let second = StatsTable::build(&config(&["b"]), Some(&first));
        let view = second.view(SystemTime::now());
        assert_eq!(view["routes"][0]["name"], "b");
        assert_eq!(view["routes"][0]["requests"], 1);
        assert_eq!(view["routes"][0]["error_ratio"], 1.0);
        assert_eq!(view["clusters"][0]["requests"], 1);
        assert_eq!(
            view["routes"][0]["series"].as_array().map(Vec::len),
            Some(SLOTS)
        );
        assert!(view["routes"][0]["p99_ms"].as_f64().is_some());
    }
}
