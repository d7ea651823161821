//! Prometheus metrics: the recorder, every metric's name (grouped by the subsystem that records
//! it; the subsystems re-export theirs), and the precomputed label sets the request path records
//! through. HELP text and units are in [`super::describe`].
//!
//! The `metrics` facade has one global recorder per process, so [`install`] runs once (a
//! `OnceLock`) however many proxies a process starts (tests start several): every proxy's
//! `/metrics` renders the same registry. Series are registered lazily (`OnceLock` per label
//! set) so a scrape shows only what happened, yet a request never formats a label: it indexes a
//! [`RequestSeries`] built with the snapshot and picks its status-code slot.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Label, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{Config, RouteConfig};

pub use super::endpoint_series::{
    promotions_possible, set_max_endpoint_series, EndpointBudget, EndpointMetrics, OTHER_ENDPOINT,
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

// Health and cluster limits.
/// `switchyard_endpoint_healthy{cluster,endpoint}`: 1 when active checks pass.
pub const ENDPOINT_HEALTHY: &str = "switchyard_endpoint_healthy";
/// `switchyard_endpoint_ejected{cluster,endpoint}`: 1 while ejected (breaker open).
pub const ENDPOINT_EJECTED: &str = "switchyard_endpoint_ejected";
/// `switchyard_circuit_state{cluster,endpoint}`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "switchyard_circuit_state";
/// `switchyard_circuit_rejections_total{cluster,reason}`: requests refused by cluster limits.
pub const CIRCUIT_REJECTIONS_TOTAL: &str = "switchyard_circuit_rejections_total";
/// `switchyard_panic_mode{cluster}`: 1 while the cluster is in panic mode.
pub const PANIC_MODE: &str = "switchyard_panic_mode";

// Zone-aware routing (`locality = "prefer_local"`).
/// `switchyard_zone_requests_total{cluster,zone}`: picks in the local zone or a remote one
/// (`zone` is `local` or `remote`: a bounded label whatever the zone names are).
pub const ZONE_REQUESTS_TOTAL: &str = "switchyard_zone_requests_total";
/// `switchyard_cluster_local_share{cluster}`: the share of picks the spill rule keeps local.
pub const CLUSTER_LOCAL_SHARE: &str = "switchyard_cluster_local_share";

// Discovery.
/// Metric: changed endpoint sets a source published, `{cluster, source}`.
pub const DISCOVERY_UPDATES_TOTAL: &str = "switchyard_discovery_updates_total";
/// Metric: failed reads, lookups and watches, `{cluster, source}`.
pub const DISCOVERY_ERRORS_TOTAL: &str = "switchyard_discovery_errors_total";
/// Metric: endpoints in the live snapshot, `{cluster}`.
pub const DISCOVERY_ENDPOINTS: &str = "switchyard_endpoints";

// Retries and hedging.
/// `switchyard_retries_total{route,reason}`.
pub const RETRIES_TOTAL: &str = "switchyard_retries_total";
/// `switchyard_retry_budget_exhausted_total{route}`.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "switchyard_retry_budget_exhausted_total";
/// `switchyard_hedges_total{route,result}`.
pub const HEDGES_TOTAL: &str = "switchyard_hedges_total";
/// `switchyard_mirrored_requests_total{route,cluster,outcome}`: copies of route `mirror`, by
/// the shadow's answer class or why none was sent.
pub const MIRRORED_REQUESTS_TOTAL: &str = "switchyard_mirrored_requests_total";

// Rate limits.
/// `switchyard_rate_limited_requests_total{route}`: requests answered 429 by a route's
/// `rate_limit`.
pub const RATE_LIMITED_TOTAL: &str = "switchyard_rate_limited_requests_total";
/// Gauge `switchyard_rate_limit_share{route}`: this member's share (0..1) of a mesh-scoped
/// limit, from its demand over the live members' demand.
pub const RATE_LIMIT_SHARE: &str = "switchyard_rate_limit_share";

// TLS.
/// Gauge `switchyard_cert_expiry_timestamp_seconds{name}`: when each loaded certificate
/// expires (Unix seconds), so an alert can fire before it does. `name` is the file path.
pub const CERT_EXPIRY_TIMESTAMP_SECONDS: &str = "switchyard_cert_expiry_timestamp_seconds";
/// Counter `switchyard_tunnel_connections_total{direction, peer_identity}`: mTLS tunnels between
/// sidecars established, `direction` = `client` (we dialled a meshed peer) or `server` (a peer
/// dialled our inbound listener), by the peer's verified identity (bounded by the mesh's size).
pub const TUNNEL_CONNECTIONS_TOTAL: &str = "switchyard_tunnel_connections_total";

// Tracing.
/// `trace_spans_total{result}`: spans exported, dropped (queue full) or failed (post refused).
pub const SPANS_TOTAL: &str = "switchyard_trace_spans_total";

// Mesh.
/// Metric: members by state, `{state}` (alive, suspect, dead, left).
pub const MESH_MEMBERS: &str = "switchyard_mesh_members";
/// Metric: datagrams sent and received, `{direction}` (in, out).
pub const MESH_MESSAGES_TOTAL: &str = "switchyard_mesh_messages_total";
/// Metric: bytes of those datagrams, `{direction}`.
pub const MESH_BYTES_TOTAL: &str = "switchyard_mesh_bytes_total";
/// Metric: datagrams dropped: no key opens them, replayed, stale, or malformed.
pub const MESH_REJECTED_TOTAL: &str = "switchyard_mesh_rejected_packets_total";
/// Metric: purges received from peers and applied here.
pub const MESH_PURGES_TOTAL: &str = "switchyard_mesh_purges_total";

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
            super::describe::describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Present from the first scrape on (0 until a scrape has been counted).
            metrics::gauge!(METRIC_SERIES).set(0.0);
            Ok(handle)
        })
        .as_ref()
        .map_err(String::as_str)
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

/// Sets `switchyard_endpoints{cluster}`: how many endpoints the live snapshot lists. Called by
/// every publish (control side).
pub fn record_endpoint_count(cluster: &str, count: usize) {
    // Counts are small; the cast to f64 is exact.
    metrics::gauge!(DISCOVERY_ENDPOINTS, "cluster" => cluster.to_owned()).set(count as f64);
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

    /// The `downstream_connections` gauge, for a caller that opens many connections (an accept
    /// loop) to look it up once rather than in the registry per connection.
    pub fn open_gauge() -> Gauge {
        metrics::gauge!(DOWNSTREAM_CONNECTIONS)
    }

    /// Counts a connection as open in `gauge` (from [`DownstreamConnection::open_gauge`]).
    pub fn opened_on(gauge: &Gauge) -> Self {
        Self::counted(gauge.clone())
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
    /// (three label strings and two dozen slots each, a large share of the snapshot build when
    /// built eagerly; `cargo bench --bench reload` times such a reload).
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
