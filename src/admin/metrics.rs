//! Prometheus metrics: the recorder, every metric's name and HELP text, and the precomputed
//! label sets the request path records through.
//!
//! The `metrics` facade has one global recorder per process, so [`install`] runs once (a
//! `OnceLock`) however many proxies a process starts (tests start several): every proxy's
//! `/metrics` renders the same registry. Series are registered lazily (`OnceLock` per label
//! set) so a scrape shows only what happened, yet a request never formats a label: it indexes a
//! [`RequestSeries`] built with the snapshot and picks its status-code slot.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Label, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{Config, RouteConfig};

pub use super::endpoint_series::{
    set_max_endpoint_series, EndpointBudget, EndpointMetrics, OTHER_ENDPOINT,
};

/// `requests_total{listener,route,cluster,code}`: every request the handler answered.
pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
/// `request_duration_seconds{route,cluster,class}`: until the response body ended.
pub const REQUEST_DURATION_SECONDS: &str = "switchyard_request_duration_seconds";
/// `upstream_requests_total{cluster,endpoint,outcome}`: one per attempt at an endpoint.
pub const UPSTREAM_REQUESTS_TOTAL: &str = "switchyard_upstream_requests_total";
/// `upstream_connect_duration_seconds{cluster}`: TCP (and later TLS) connect time.
pub const UPSTREAM_CONNECT_DURATION_SECONDS: &str = "switchyard_upstream_connect_duration_seconds";
/// `upstream_connections{cluster}`: open upstream connections.
pub const UPSTREAM_CONNECTIONS: &str = "switchyard_upstream_connections";
/// `rejected_requests_total{reason}`: refused by request hygiene or limits, never forwarded.
pub const REJECTED_REQUESTS_TOTAL: &str = "switchyard_rejected_requests_total";
/// `config_reloads_total{result}`.
pub const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
/// `config_reload_duration_seconds`.
pub const CONFIG_RELOAD_DURATION_SECONDS: &str = "switchyard_config_reload_duration_seconds";
/// `config_version`: the published snapshot's version.
pub const CONFIG_VERSION: &str = "switchyard_config_version";
/// `downstream_connections`: open client connections.
pub const DOWNSTREAM_CONNECTIONS: &str = "switchyard_downstream_connections";
/// `downstream_connections_parked`: idle HTTP/1 keep-alive connections that hold no HTTP
/// session (no buffers) while they wait for the next request.
pub const DOWNSTREAM_CONNECTIONS_PARKED: &str = "switchyard_downstream_connections_parked";
/// `build_info{version}`: always 1.
pub const BUILD_INFO: &str = "switchyard_build_info";
/// `metric_series`: series in the previous `/metrics` scrape, so the scrape's own size (what
/// `max_endpoint_series` guards) is itself on a dashboard.
pub const METRIC_SERIES: &str = "switchyard_metric_series";

/// Histogram buckets in seconds: 50 µs (a pooled loopback hop) to 30 s (the default drain
/// timeout), roughly ×2–2.5 apart so each decade has three buckets.
pub const BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's recorder, or why it could not be installed (another recorder got there
/// first); `/metrics` answers 503 with that reason.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process), describes every metric and sets
/// `build_info`. Later calls return the same handle.
pub fn install() -> Result<&'static PrometheusHandle, &'static str> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Present from the first scrape on (0 until a scrape has been counted).
            metrics::gauge!(METRIC_SERIES).set(0.0);
            Ok(handle)
        })
        .as_ref()
        .map_err(String::as_str)
}

/// HELP text and unit for every metric DESIGN.md names that this build can produce (and the
/// reload ones, whose help is ready before reload lands). Units are base units, as Prometheus
/// naming asks: seconds, bytes, plain counts.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests answered, by listener, route, cluster and status code (route and cluster empty when no route matched)."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request head received to response body ended, by route, cluster and status class."
    );
    describe_counter!(
        UPSTREAM_REQUESTS_TOTAL,
        Unit::Count,
        "Attempts at an endpoint, by cluster, endpoint and outcome (success, error_5xx, connect_failure, reset, timeout)."
    );
    describe_histogram!(
        UPSTREAM_CONNECT_DURATION_SECONDS,
        Unit::Seconds,
        "Time to open an upstream connection, by cluster."
    );
    describe_gauge!(
        UPSTREAM_CONNECTIONS,
        Unit::Count,
        "Open upstream connections, by cluster."
    );
    describe_counter!(
        REJECTED_REQUESTS_TOTAL,
        Unit::Count,
        "Requests refused before routing (malformed, too large, too slow), by reason."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        Unit::Count,
        "Config reload attempts, by result (success, failure)."
    );
    describe_histogram!(
        CONFIG_RELOAD_DURATION_SECONDS,
        Unit::Seconds,
        "Time to read, validate and publish a config."
    );
    describe_gauge!(
        CONFIG_VERSION,
        Unit::Count,
        "Version of the published config snapshot; increases by one per publish."
    );
    describe_gauge!(
        DOWNSTREAM_CONNECTIONS,
        Unit::Count,
        "Open client connections on the proxy listeners."
    );
    describe_gauge!(
        DOWNSTREAM_CONNECTIONS_PARKED,
        Unit::Count,
        "Idle HTTP/1 keep-alive client connections parked without buffers."
    );
    // TLS (issue 13).
    describe_gauge!(
        crate::tls::CERT_EXPIRY_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When each loaded certificate expires (Unix time), by certificate file."
    );
    // Health (issue 7).
    describe_gauge!(
        crate::health::ENDPOINT_HEALTHY,
        "1 while the endpoint passes active health checks (always 1 without checks), by cluster and endpoint."
    );
    describe_gauge!(
        crate::health::ENDPOINT_EJECTED,
        "1 while the endpoint is ejected by outlier detection (breaker open), by cluster and endpoint."
    );
    describe_gauge!(
        crate::health::CIRCUIT_STATE,
        "Breaker phase of the endpoint: 0 closed, 1 half-open, 2 open; by cluster and endpoint."
    );
    describe_counter!(
        crate::health::CIRCUIT_REJECTIONS_TOTAL,
        Unit::Count,
        "Requests refused by a cluster limit (503), by cluster and reason (max_connections, max_pending, max_requests, max_retries)."
    );
    describe_gauge!(
        crate::health::PANIC_MODE,
        "1 while fewer than panic_threshold of the cluster's endpoints pass health checks and traffic spreads over all of them."
    );
    describe_counter!(
        crate::discovery::UPDATES_TOTAL,
        Unit::Count,
        "Changed endpoint sets published by a discovery source, by cluster and source (file, dns, srv, etcd)."
    );
    describe_counter!(
        crate::discovery::ERRORS_TOTAL,
        Unit::Count,
        "Failed discovery reads, lookups and watches (the last good endpoint set stays), by cluster and source."
    );
    describe_gauge!(
        crate::discovery::ENDPOINTS,
        "Endpoints of the cluster in the live snapshot."
    );
    describe_counter!(
        crate::resilience::RETRIES_TOTAL,
        Unit::Count,
        "Retries started, by route and reason (connect_failure, reset, refused_stream, 5xx, gateway_error, status, per_try_timeout, grpc_unavailable)."
    );
    describe_counter!(
        crate::resilience::RETRY_BUDGET_EXHAUSTED_TOTAL,
        Unit::Count,
        "Retries and hedges the route's retry budget refused (the original failure was returned), by route."
    );
    describe_counter!(
        crate::resilience::HEDGES_TOTAL,
        Unit::Count,
        "Hedging events by route and result: sent, won (a hedge answered first), cancelled (a losing attempt dropped), denied (budget)."
    );
    // Response cache (issue 11).
    describe_counter!(
        "switchyard_cache_requests_total",
        Unit::Count,
        "Requests on cached routes by result: hit, miss (fetched and stored), stale (served stale), revalidated (304 from upstream), bypass (not cacheable request), uncacheable (fetched, not storable)."
    );
    describe_gauge!(
        "switchyard_cache_bytes",
        Unit::Bytes,
        "Bytes held by the response cache (bodies, headers, keys, per-object overhead); bounded by [cache] max_bytes."
    );
    describe_gauge!(
        "switchyard_cache_entries",
        Unit::Count,
        "URLs held by the response cache (all Vary variants of a URL count once)."
    );
    describe_counter!(
        "switchyard_cache_evictions_total",
        Unit::Count,
        "Responses evicted (or refused admission) to keep the cache within [cache] max_bytes."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running build."
    );
    describe_gauge!(
        super::runtime_tasks::RUNTIME_TASKS,
        Unit::Count,
        "Tasks alive per runtime (worker-N, control), read at each scrape: flat under steady load, back to its idle value after; growth without load is a leak."
    );
    // Observability (issue 15).
    describe_gauge!(
        METRIC_SERIES,
        Unit::Count,
        "Series (sample lines) in the previous /metrics scrape: the scrape's cardinality, which [metrics] max_endpoint_series bounds."
    );
    describe_counter!(
        crate::trace::SPANS_TOTAL,
        Unit::Count,
        "Request spans for the OTLP exporter, by result: exported, dropped (queue full), failed (collector refused or unreachable)."
    );
    // Mesh (issue 12).
    describe_gauge!(
        crate::mesh::MEMBERS,
        Unit::Count,
        "Mesh members this sidecar knows, by state: alive, suspect, dead, left (itself counted alive)."
    );
    describe_counter!(
        crate::mesh::MESSAGES_TOTAL,
        Unit::Count,
        "Mesh datagrams, by direction: in (received, before authentication), out (sent)."
    );
    describe_counter!(
        crate::mesh::BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of mesh datagrams (sealed), by direction: in, out."
    );
    describe_counter!(
        crate::mesh::REJECTED_TOTAL,
        Unit::Count,
        "Mesh datagrams dropped: no configured key opens them, replayed, outside the timestamp window, or malformed."
    );
    describe_counter!(
        crate::mesh::purge::PURGES_TOTAL,
        Unit::Count,
        "Cache purges received from mesh peers and run here."
    );
}

/// Sets `metric_series` to the number of sample lines in `rendered` (a `/metrics` body); the
/// next scrape shows it.
pub fn count_series(rendered: &str) {
    let series = rendered
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    // A scrape never approaches 2^53 lines, so the f64 is exact.
    metrics::gauge!(METRIC_SERIES).set(series as f64);
}

/// Records that snapshot `version` is now the published one.
pub fn set_config_version(version: u64) {
    // f64 holds every integer up to 2^53 exactly; a config version never gets near that.
    metrics::gauge!(CONFIG_VERSION).set(version as f64);
}

/// One downstream connection counted in a gauge (`downstream_connections`, or
/// `downstream_connections_parked` while parked) until the guard drops.
#[derive(Debug)]
#[must_use = "the connection stops counting when the guard drops"]
pub struct DownstreamConnection {
    gauge: Gauge,
}

impl DownstreamConnection {
    /// Counts a connection as open.
    pub fn opened() -> Self {
        Self::counted(metrics::gauge!(DOWNSTREAM_CONNECTIONS))
    }

    /// Counts a connection as parked (idle, its HTTP session freed).
    pub fn parked() -> Self {
        Self::counted(metrics::gauge!(DOWNSTREAM_CONNECTIONS_PARKED))
    }

    fn counted(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self { gauge }
    }
}

impl Drop for DownstreamConnection {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// Status codes with a preregistered slot: what proxies and typical backends answer. Sorted,
/// for the binary search; any other code takes the slower path that builds its label.
const COMMON_CODES: [u16; 27] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413, 414,
    417, 429, 431, 500, 501, 502, 503, 504,
];

/// Status classes for the `class` label, indexed by `code / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `requests_total` and `request_duration_seconds` series of one listener + route + cluster,
/// built once per snapshot. Recording costs an index and an atomic add.
#[derive(Debug)]
pub struct RequestSeries {
    /// listener, route, cluster: the `requests_total` labels but `code`.
    labels: [Label; 3],
    by_code: [OnceLock<Counter>; COMMON_CODES.len()],
    by_class: [OnceLock<Histogram>; CLASSES.len()],
}

impl RequestSeries {
    /// The series for requests on `listener` routed by `route` to `cluster` (empty strings for
    /// requests that matched no route).
    pub fn new(listener: &str, route: &str, cluster: &str) -> Self {
        Self {
            labels: [
                Label::new("listener", listener.to_owned()),
                Label::new("route", route.to_owned()),
                Label::new("cluster", cluster.to_owned()),
            ],
            by_code: std::array::from_fn(|_| OnceLock::new()),
            by_class: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one answered request and its duration.
    pub fn record(&self, status: StatusCode, elapsed: Duration) {
        let code = status.as_u16();
        match COMMON_CODES.binary_search(&code) {
            Ok(slot) => self.by_code[slot]
                .get_or_init(|| self.counter(SharedString::from(code.to_string())))
                .increment(1),
            // Rare codes pay for their label each time rather than a slot per possible code.
            Err(_) => self
                .counter(SharedString::from(code.to_string()))
                .increment(1),
        }
        // StatusCode guarantees 100..=999; codes over 599 are counted as 5xx.
        let class = usize::from(code / 100).clamp(1, CLASSES.len()) - 1;
        self.by_class[class]
            .get_or_init(|| {
                let labels = vec![
                    self.labels[1].clone(),
                    self.labels[2].clone(),
                    Label::new("class", CLASSES[class]),
                ];
                metrics::histogram!(REQUEST_DURATION_SECONDS, labels)
            })
            .record(elapsed.as_secs_f64());
    }

    fn counter(&self, code: SharedString) -> Counter {
        let mut labels = self.labels.to_vec();
        labels.push(Label::new("code", code));
        metrics::counter!(REQUESTS_TOTAL, labels)
    }
}

/// Every [`RequestSeries`] of one snapshot, indexed the way the request path knows them.
#[derive(Debug)]
pub struct SnapshotMetrics {
    /// The snapshot's config: the routes' labels.
    config: Arc<Config>,
    /// By route index: the series of each cluster the route can pick, built on the route's
    /// first request. A reload of 10,000 routes, most of them idle, then builds none of them
    /// (three label strings and two dozen slots each: a quarter of the snapshot build in a
    /// profile of such a reload).
    routes: Vec<OnceLock<RouteSeries>>,
    /// By listener index: requests that matched no route there (404, 400).
    unrouted: Vec<Arc<RequestSeries>>,
}

impl SnapshotMetrics {
    /// Prepares the series of every route × target cluster and every listener.
    pub fn build(config: &Arc<Config>) -> Self {
        let unrouted = config
            .listeners
            .iter()
            .map(|l| Arc::new(RequestSeries::new(&l.name, "", "")))
            .collect();
        Self {
            config: Arc::clone(config),
            routes: config.routes.iter().map(|_| OnceLock::new()).collect(),
            unrouted,
        }
    }

    /// The series for a request on listener `listener` (index), routed by `route` (index) to
    /// `cluster`; the listener's unrouted series when no route (or no cluster) was chosen.
    pub fn series(
        &self,
        listener: usize,
        route: Option<usize>,
        cluster: Option<&str>,
    ) -> Option<&Arc<RequestSeries>> {
        let routed = route
            .zip(cluster)
            .and_then(|(route, cluster)| {
                let built = self.routes.get(route)?;
                let config = self.config.routes.get(route)?;
                built
                    .get_or_init(|| route_series(config))
                    .iter()
                    .find(|(c, _)| c == cluster)
            })
            .map(|(_, series)| series);
        routed.or_else(|| self.unrouted.get(listener))
    }
}

/// One route's series: one per cluster it can pick, by cluster name.
type RouteSeries = Vec<(String, Arc<RequestSeries>)>;

/// The series of each cluster `route` can pick.
fn route_series(route: &RouteConfig) -> RouteSeries {
    route
        .target
        .clusters()
        .into_iter()
        .map(|cluster| {
            let series = RequestSeries::new(&route.listener, &route.name, cluster);
            (cluster.to_owned(), Arc::new(series))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_codes_are_sorted_for_binary_search() {
        assert!(COMMON_CODES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn series_lookup_falls_back_to_the_listener() {
        let text = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "web"
split = [ { cluster = "a", weight = 1 }, { cluster = "b", weight = 1 } ]

[clusters.a]
endpoints = ["127.0.0.1:1"]

[clusters.b]
endpoints = ["127.0.0.1:2"]
"#;
        let config =
            crate::config::parse(text, std::path::Path::new("t.toml")).expect("valid config");
        let metrics = SnapshotMetrics::build(&Arc::new(config));
        let b = metrics.series(0, Some(0), Some("b")).expect("route series");
        assert_eq!(b.labels[1].value(), "web");
        assert_eq!(b.labels[2].value(), "b");
        let none = metrics.series(0, None, None).expect("unrouted series");
        assert_eq!(none.labels[0].value(), "public");
        assert_eq!(none.labels[1].value(), "");
        assert!(metrics.series(0, Some(0), Some("zzz")).is_some());
        assert!(metrics.series(5, None, None).is_none());
        // Recording without a recorder installed is a no-op, never a panic.
        b.record(StatusCode::IM_A_TEAPOT, Duration::from_millis(3));
        b.record(StatusCode::OK, Duration::from_millis(3));
    }
}
