//! HELP text and unit of every metric the recorder holds, as one table: adding a metric is adding
//! a row, and the table is what `/metrics` shows as `# HELP` (tests/admin/admin_metrics.rs checks the
//! scrape with promtool).
//!
//! Not here: the per-endpoint families (`endpoint_healthy`, `endpoint_ejected`,
//! `circuit_state`, `upstream_requests_total`), which are not in the recorder: the admin server
//! renders them, with their HELP, from the live endpoints at each scrape (see
//! [`super::endpoint_series`]). Units are base units, as Prometheus naming asks: seconds, bytes,
//! plain counts.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use super::intercept::*;
use super::metrics::*;
use super::runtime_tasks::RUNTIME_TASKS;

/// Which `describe_*` a row goes through (the Prometheus `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in [`BUCKETS`].
    Histogram,
}

/// One metric's description.
#[derive(Debug, Clone, Copy)]
pub struct Description {
    /// The full metric name (`switchyard_…`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its base unit; `None` for gauges that are flags or plain numbers with no unit to name.
    pub unit: Option<Unit>,
    /// The `# HELP` text.
    pub help: &'static str,
}

/// Every metric of the README's "Metrics" table that this build records through the recorder.
pub const DESCRIPTIONS: &[Description] = &[
    Description {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests answered, by listener, route, cluster and status code (route and cluster empty when no route matched).",
    },
    Description {
        name: REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from request head received to response body ended, by route, cluster and status class.",
    },
    Description {
        name: UPSTREAM_CONNECT_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to open an upstream connection, by cluster.",
    },
    Description {
        name: UPSTREAM_CONNECTIONS,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Open upstream connections, by cluster.",
    },
    Description {
        name: REJECTED_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests refused before routing (malformed, too large, too slow), by reason.",
    },
    Description {
        name: CONFIG_RELOADS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Config reload attempts, by result (success, failure).",
    },
    Description {
        name: CONFIG_RELOAD_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to read, validate and publish a config.",
    },
    Description {
        name: CONFIG_VERSION,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Version of the published config snapshot; increases by one per publish.",
    },
    Description {
        name: DOWNSTREAM_CONNECTIONS,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Open client connections on the proxy listeners.",
    },
    Description {
        name: DOWNSTREAM_CONNECTIONS_PARKED,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Idle HTTP/1 keep-alive client connections parked without buffers.",
    },
    // TLS.
    Description {
        name: CERT_EXPIRY_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "When each loaded certificate expires (Unix time), by certificate file.",
    },
    Description {
        name: TUNNEL_CONNECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "mTLS tunnels between sidecars established, by direction (client, server) and the peer's verified identity.",
    },
    // renders them, with their HELP, from the live snapshot at each scrape.
    Description {
        name: CIRCUIT_REJECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests refused by a cluster limit (503), by cluster and reason (max_connections, max_pending, max_requests, max_retries).",
    },
    Description {
        name: PANIC_MODE,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while fewer than panic_threshold of the cluster's endpoints are in service (passing health checks, not ejected) and traffic spreads over all of them.",
    },
    Description {
        name: ZONE_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Endpoint picks of a cluster with locality = prefer_local, by zone: local (the proxy's [runtime] zone) or remote.",
    },
    Description {
        name: CLUSTER_LOCAL_SHARE,
        kind: Kind::Gauge,
        unit: None,
        help: "The share of picks (0 to 1) a prefer_local cluster keeps in the local zone: lowered by the spill rule when the local zone lacks healthy capacity or is busier than the others.",
    },
    Description {
        name: DISCOVERY_UPDATES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Changed endpoint sets published by a discovery source, by cluster and source (file, dns, srv, etcd).",
    },
    Description {
        name: DISCOVERY_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Failed discovery reads, lookups and watches (the last good endpoint set stays), by cluster and source.",
    },
    Description {
        name: DISCOVERY_ENDPOINTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Endpoints of the cluster in the live snapshot.",
    },
    Description {
        name: RETRIES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Retries started, by route and reason (connect_failure, reset, refused_stream, 5xx, gateway_error, status, per_try_timeout, grpc_unavailable).",
    },
    Description {
        name: RETRY_BUDGET_EXHAUSTED_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Retries and hedges the route's retry budget refused (the original failure was returned), by route.",
    },
    Description {
        name: HEDGES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Hedging events by route and result: sent, won (a hedge answered first), cancelled (a losing attempt dropped), denied (budget).",
    },
    Description {
        name: MIRRORED_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests copied to a route's shadow cluster (route mirror), by route, shadow cluster and outcome: 2xx, 3xx, 4xx, 5xx (the shadow's answer, discarded), error, timeout, or not sent: skipped_body (body over max_body), dropped (too many copies in flight).",
    },
    // Rate limits.
    Description {
        name: RATE_LIMITED_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests a route's rate_limit refused with 429, by route.",
    },
    Description {
        name: RATE_LIMIT_SHARE,
        kind: Kind::Gauge,
        unit: None,
        help: "This member's share (0 to 1) of a mesh-scoped rate limit, by route: its demand over the live members' demand.",
    },
    // Response cache.
    Description {
        name: "switchyard_cache_requests_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests on cached routes by result: hit, miss (fetched and stored), stale (served stale), revalidated (304 from upstream), bypass (not cacheable request), uncacheable (fetched, not storable).",
    },
    Description {
        name: "switchyard_cache_bytes",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes held by the response cache (bodies, headers, keys, per-object overhead); bounded by [cache] max_bytes.",
    },
    Description {
        name: "switchyard_cache_entries",
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "URLs held by the response cache (all Vary variants of a URL count once).",
    },
    Description {
        name: "switchyard_cache_evictions_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Responses evicted (or refused admission) to keep the cache within [cache] max_bytes.",
    },
    Description {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1; the version label names the running build.",
    },
    Description {
        name: RUNTIME_TASKS,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Tasks alive per runtime (worker-N, control), read at each scrape: flat under steady load, back to its idle value after; growth without load is a leak.",
    },
    // Observability.
    Description {
        name: METRIC_SERIES,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Series (sample lines) in the previous /metrics scrape: the scrape's cardinality, which [metrics] max_endpoint_series bounds.",
    },
    Description {
        name: SPANS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Request spans for the OTLP exporter, by result: exported, dropped (queue full), failed (collector refused or unreachable).",
    },
    // Mesh.
    Description {
        name: MESH_MEMBERS,
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Mesh members this sidecar knows, by state: alive, suspect, dead, left (itself counted alive).",
    },
    Description {
        name: MESH_MESSAGES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Mesh datagrams, by direction: in (received, before authentication), out (sent).",
    },
    Description {
        name: MESH_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes of mesh datagrams (sealed), by direction: in, out.",
    },
    Description {
        name: MESH_REJECTED_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Mesh datagrams dropped: no configured key opens them, replayed, outside the timestamp window, or malformed.",
    },
    Description {
        name: MESH_PURGES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Cache purges received from mesh peers and run here.",
    },
    Description {
        name: INTERCEPTED_CONNECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Connections a transparent listener served, by listener, direction (inbound, outbound), detected protocol (http1, h2, opaque), target (cluster, passthrough, local) and tls (mtls, plain).",
    },
    Description {
        name: INTERCEPTED_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Connections a transparent listener refused, by listener and reason (not_redirected, loop, plaintext, not_allowed, tunnel_handshake, tunnel_header).",
    },
    Description {
        name: OPAQUE_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes copied on intercepted connections carried as bytes: opaque (non-HTTP) ones and passthrough ones to a destination no cluster knows, HTTP included; by listener, direction and way (sent: to the target, received: from it).",
    },
    Description {
        name: OPAQUE_CONNECTION_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Lifetime of opaque intercepted connections, by listener and direction.",
    },
];

/// Describes every row of [`DESCRIPTIONS`] to the installed recorder (once, from `install`).
pub fn describe() {
    for row in DESCRIPTIONS {
        match (row.kind, row.unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(row.name, unit, row.help),
            (Kind::Counter, None) => describe_counter!(row.name, row.help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(row.name, unit, row.help),
            (Kind::Gauge, None) => describe_gauge!(row.name, row.help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(row.name, unit, row.help),
            (Kind::Histogram, None) => describe_histogram!(row.name, row.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_described_once() {
        let mut names: Vec<&str> = DESCRIPTIONS.iter().map(|d| d.name).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a metric is described twice");
        assert!(names.iter().all(|n| n.starts_with("switchyard_")));
    }
}
