//! Router tests on hand-built configs (independent of the TOML parser): the builders here,
//! the cases in the submodules.
#![allow(clippy::unwrap_used)]

mod explain;
mod matching;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderMap, Method};

use super::*;
use crate::config::*;

pub(crate) fn listener(name: &str) -> ListenerConfig {
    ListenerConfig {
        name: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        trusted_hops: 0,
        mode: ListenerMode::Http,
    }
}

pub(crate) fn route(name: &str, listener: &str, matcher: RouteMatch, cluster: &str) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        listener: listener.into(),
        matcher,
        target: RouteTarget::Cluster(cluster.into()),
        timeout: Some(Duration::from_secs(15)),
        idle_timeout: Some(Duration::from_secs(60)),
        retry: None,
        hedge: None,
        cache: false,
        rewrite: None,
        headers: HeaderRules::default(),
        websocket: true,
        debug_headers: false,
        allow: None,
        mirror: None,
        rate_limit: None,
        origin: RouteOrigin::File,
    }
}

pub(crate) fn cluster(name: &str, endpoints: &[&str]) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        protocol: Protocol::Http1,
        balance: BalanceAlgorithm::RoundRobin,
        hash_on: None,
        balance_factor: None,
        slow_start: Duration::ZERO,
        endpoints: EndpointSource::Static(
            endpoints
                .iter()
                .map(|a| StaticEndpoint {
                    address: a.parse().unwrap(),
                    weight: 1,
                    zone: None,
                })
                .collect(),
        ),
        connect_timeout: Duration::from_secs(1),
        pool: PoolConfig {
            idle_timeout: Duration::from_secs(30),
            max_idle_per_endpoint: 64,
            max_connections_per_endpoint: 0,
            tcp_keepalive: Some(Duration::from_secs(60)),
        },
        health_check: None,
        outlier_detection: OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 3,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            success_rate_stdev: 1.9,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_percent: 50,
            probe_requests: 3,
        },
        circuit_breaker: CircuitBreaker {
            max_connections: 1024,
            max_pending: 256,
            max_requests: 1024,
            max_retries: 3,
        },
        panic_threshold: 0.5,
        tls: None,
        addresses: Vec::new(),
        locality: Locality::Off,
        locality_spill_ratio: 2.0,
    }
}

/// A config with the given listeners and routes, and one static cluster per name the routes use.
pub(crate) fn config(listeners: &[&str], routes: Vec<RouteConfig>) -> Config {
    let mut clusters = BTreeMap::new();
    for route in &routes {
        for name in route.target.clusters() {
            clusters.insert(
                name.to_owned(),
                cluster(name, &["127.0.0.1:9001", "127.0.0.1:9002"]),
            );
        }
    }
    Config {
        source: "test.toml".into(),
        sha256: String::new(),
        runtime: RuntimeConfig {
            workers: 1,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            zone: None,
        },
        admin: AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: None,
            token: None,
        },
        log: LogConfig {
            format: LogFormat::Text,
            access: true,
            access_sample: 1.0,
        },
        metrics: MetricsConfig {
            max_endpoint_series: 1000,
        },
        tracing: crate::config::TracingConfig {
            otlp: None,
            service_name: "switchyard".to_owned(),
            sample_ratio: 1.0,
        },
        listeners: listeners.iter().map(|name| listener(name)).collect(),
        routes: routes.into_iter().map(std::sync::Arc::new).collect(),
        clusters,
        cache: None,
        mesh: None,
        identity: None,
        limits: LimitsConfig {
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            h2_keepalive_interval: Duration::from_secs(30),
            max_connections: 10_000,
        },
    }
}

pub(crate) struct Req {
    pub method: Method,
    pub host: Option<String>,
    pub target: String,
    pub headers: HeaderMap,
    pub identity: Option<String>,
}

impl Req {
    pub fn get(host: &str, target: &str) -> Req {
        Req {
            method: Method::GET,
            host: Some(host.into()),
            target: target.into(),
            headers: HeaderMap::new(),
            identity: None,
        }
    }

    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            host: self.host.as_deref(),
            path_and_query: &self.target,
            headers: &self.headers,
            client_identity: self.identity.as_deref(),
        }
    }
}

/// The name of the route `req` takes on listener 0, or `None`.
pub(crate) fn routed(router: &Router, req: &Req) -> Option<String> {
    router
        .route(0, &req.view())
        .unwrap()
        .map(|r| r.route.config().name.clone())
}

pub(crate) fn host_exact(host: &str) -> RouteMatch {
    RouteMatch {
        host: Some(HostMatch::Exact(host.into())),
        ..RouteMatch::default()
    }
}

pub(crate) fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::Prefix(p.into())),
        ..RouteMatch::default()
    }
}
