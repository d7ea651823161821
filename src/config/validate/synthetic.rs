//! The routes and clusters a transparent sidecar needs that the file does not spell out.
//!
//! - An outbound listener gets one route `outbound:CLUSTER` per cluster: intercepted HTTP for
//!   an address of that cluster that none of the listener's own routes matched goes there.
//! - An inbound listener gets, per declared port P (`ports`), a cluster `inbound:P` with the
//!   one endpoint `127.0.0.1:P` (the app) and a route `inbound:P` to it.
//!
//! They are added to the validated config itself rather than kept beside it, so everything
//! made per route or per cluster (metric series, retry budgets, status rings, health and
//! outlier state, `/routes`, `explain`) covers them without a special case, under their own
//! names. The router never matches them by request content (their `origin` is not `File`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::config::defaults;
use crate::config::model::*;

/// Prefix of the inbound listener's synthetic cluster and route names.
pub(crate) const INBOUND_PREFIX: &str = "inbound:";
/// Prefix of the outbound listener's synthetic route names.
pub(crate) const OUTBOUND_PREFIX: &str = "outbound:";

/// Whether a route name is one the synthetic routes use (refused in the file).
pub(super) fn is_reserved(name: &str) -> bool {
    name.starts_with(INBOUND_PREFIX) || name.starts_with(OUTBOUND_PREFIX)
}

/// The names of the clusters [`add`] will make for `listeners`' declared inbound ports.
pub(super) fn inbound_clusters(listeners: &[ListenerConfig]) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|l| match &l.mode {
            ListenerMode::Inbound(inbound) => Some(inbound.ports.keys()),
            _ => None,
        })
        .flatten()
        .map(|port| format!("{INBOUND_PREFIX}{port}"))
        .collect()
}

/// Appends the synthetic routes (after every file route) and clusters of `listeners`' modes.
pub(super) fn add(
    listeners: &[ListenerConfig],
    routes: &mut Vec<Arc<RouteConfig>>,
    clusters: &mut BTreeMap<String, ClusterConfig>,
) {
    for listener in listeners {
        if let ListenerMode::Inbound(inbound) = &listener.mode {
            for &port in inbound.ports.keys() {
                let name = format!("{INBOUND_PREFIX}{port}");
                clusters.insert(name.clone(), local_cluster(&name, port));
                routes.push(Arc::new(route(
                    name.clone(),
                    &listener.name,
                    &name,
                    RouteOrigin::Inbound(port),
                )));
            }
        }
    }
    for listener in listeners {
        if let ListenerMode::Outbound(_) = &listener.mode {
            let targets = clusters
                .keys()
                .filter(|name| !name.starts_with(INBOUND_PREFIX));
            for cluster in targets {
                routes.push(Arc::new(route(
                    format!("{OUTBOUND_PREFIX}{cluster}"),
                    &listener.name,
                    cluster,
                    RouteOrigin::Outbound(cluster.clone()),
                )));
            }
        }
    }
}

/// A synthetic route: every setting a file route without those keys would have, except retry:
/// connection failures and refused streams only (nothing reached the app, so a retry cannot
/// repeat a request, whatever its method), as a sidecar that reconnects for its app does.
fn route(name: String, listener: &str, cluster: &str, origin: RouteOrigin) -> RouteConfig {
    let mut retry = defaults::retry();
    retry.on = vec![RetryOn::ConnectFailure, RetryOn::RefusedStream];
    RouteConfig {
        name,
        listener: listener.to_owned(),
        matcher: RouteMatch::default(),
        target: RouteTarget::Cluster(cluster.to_owned()),
        timeout: Some(defaults::ROUTE_TIMEOUT),
        idle_timeout: Some(defaults::ROUTE_IDLE_TIMEOUT),
        retry: Some(retry),
        hedge: None,
        cache: false,
        rewrite: None,
        headers: HeaderRules::default(),
        websocket: defaults::WEBSOCKET,
        debug_headers: false,
        allow: None,
        mirror: None,
        rate_limit: None,
        origin,
    }
}

/// The app behind an inbound port: `127.0.0.1:PORT`, HTTP/1.1, defaults otherwise.
fn local_cluster(name: &str, port: u16) -> ClusterConfig {
    ClusterConfig {
        name: name.to_owned(),
        protocol: Protocol::Http1,
        balance: BalanceAlgorithm::RoundRobin,
        hash_on: None,
        balance_factor: None,
        slow_start: std::time::Duration::ZERO,
        endpoints: EndpointSource::Static(vec![StaticEndpoint {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            weight: 1,
            zone: None,
        }]),
        connect_timeout: defaults::CONNECT_TIMEOUT,
        pool: defaults::pool(),
        health_check: None,
        outlier_detection: defaults::outlier_detection(),
        circuit_breaker: defaults::circuit_breaker(),
        panic_threshold: defaults::PANIC_THRESHOLD,
        tls: None,
        addresses: Vec::new(),
        locality: Locality::Off,
        locality_spill_ratio: defaults::LOCALITY_SPILL_RATIO,
    }
}
