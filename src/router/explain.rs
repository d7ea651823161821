//! `explain`: which route a request takes and why the earlier ones did not match.
//!
//! Built by the same matchers as [`Router::route`], so the answer cannot drift from what the
//! proxy does. The result is plain data: `Display` renders the CLI text, `Serialize` the admin
//! API's JSON.

use std::fmt::{self, Write as _};

use serde::Serialize;

use super::{normalize, rewrite, Normalized, RequestView, Router};
use crate::config::{ClusterConfig, Config, EndpointSource, HashOn, RouteConfig, RouteTarget};

/// The full answer for one request.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The request method.
    pub method: String,
    /// The host as received (port included), if any.
    pub host: Option<String>,
    /// As received.
    pub path_and_query: String,
    /// The listener the request is explained on: the one asked for, else the first configured
    /// one (a real request always arrives on exactly one); `None` only for a config without
    /// listeners, where every route is considered.
    pub listener: Option<String>,
    /// `None` when the path was rejected (see `path_error`).
    pub normalized_path: Option<String>,
    /// Why the path was rejected: the proxy answers 400 and no route is consulted.
    pub path_error: Option<String>,
    /// Every route, in file order.
    pub routes: Vec<RouteVerdict>,
    /// The winning route; `None` means 404 (or 400 with `path_error`).
    pub matched: Option<MatchedRoute>,
}

/// One route's outcome for the request.
#[derive(Debug, Clone, Serialize)]
pub struct RouteVerdict {
    /// Index in `config.routes`.
    pub index: usize,
    /// The route's name (its metric label).
    pub name: String,
    /// The listener the route belongs to.
    pub listener: String,
    /// Matched, not matched, or never tried.
    pub verdict: Verdict,
    /// For [`Verdict::NoMatch`]: every failing condition, e.g. `method POST != GET`.
    pub reasons: Vec<String>,
}

/// Whether a route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every condition held: this route serves the request.
    Matched,
    /// At least one condition failed; the reasons say which.
    NoMatch,
    /// An earlier route matched (or the path was rejected), so this one was never tried.
    NotReached,
}

/// Where the matching route sends the request.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedRoute {
    /// Index in `config.routes`.
    pub index: usize,
    /// The route's name.
    pub name: String,
    /// Its cluster or split.
    pub target: TargetView,
    /// After normalisation and the route's rewrite, with the original query.
    pub upstream_path_and_query: String,
    /// Each cluster the target can pick, in target order.
    pub clusters: Vec<ClusterView>,
}

/// A route's target as configured.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetView {
    /// All traffic to one cluster.
    Cluster {
        /// The cluster's name.
        cluster: String,
    },
    /// Weighted between clusters, per request.
    Split {
        /// In config order.
        arms: Vec<SplitArm>,
    },
}

/// One arm of a split, with its share of traffic.
#[derive(Debug, Clone, Serialize)]
pub struct SplitArm {
    /// The cluster's name.
    pub cluster: String,
    /// As configured.
    pub weight: u32,
    /// `weight / total * 100`.
    pub percent: f64,
}

/// What `explain` shows of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// The config spelling, e.g. `least_request`.
    pub balance: String,
    /// E.g. `header:x-user-id`, for hashing algorithms.
    pub hash_on: Option<String>,
    /// Static endpoints (`address`, with weight and zone when set); empty with discovery.
    pub endpoints: Vec<String>,
    /// The discovery source, e.g. `dns orders.internal:8080 every 10s`.
    pub discovery: Option<String>,
    /// The endpoint this request's hash key maps to. The router has no balancer tables, so it
    /// leaves this `None`; the caller that holds the snapshot's ring/Maglev tables fills it in.
    pub hashed_endpoint: Option<String>,
}

impl Router {
    /// Explains how `req` is routed on `listener` (a listener name; `None` = the first
    /// configured listener, as `switchyard explain` without `--listener`).
    pub fn explain(
        &self,
        config: &Config,
        listener: Option<&str>,
        req: &RequestView<'_>,
    ) -> Explanation {
        let mut explanation = Explanation {
            method: req.method.to_string(),
            host: req.host.map(str::to_owned),
            path_and_query: req.path_and_query.to_owned(),
            listener: listener
                .or_else(|| config.listeners.first().map(|l| l.name.as_str()))
                .map(str::to_owned),
            normalized_path: None,
            path_error: None,
            routes: Vec::with_capacity(self.routes.len()),
            matched: None,
        };
        let normalized = match normalize(req.path_and_query) {
            Ok(normalized) => Some(normalized),
            Err(error) => {
                explanation.path_error = Some(error.to_string());
                None
            }
        };
        explanation.normalized_path = normalized.as_ref().map(|n| n.path.to_string());
        for (index, route) in self.routes.iter().enumerate() {
            let mut verdict = RouteVerdict {
                index,
                name: route.config.name.clone(),
                listener: route.config.listener.clone(),
                verdict: Verdict::NotReached,
                reasons: Vec::new(),
            };
            if let (Some(normalized), None) = (&normalized, &explanation.matched) {
                let requested = explanation.listener.as_deref();
                if let Some(requested) = requested.filter(|l| *l != route.config.listener) {
                    verdict.reasons.push(format!(
                        "route is on listener {}, not {requested}",
                        route.config.listener
                    ));
                }
                let mismatches = route.matcher.mismatches(req, &normalized.path);
                verdict
                    .reasons
                    .extend(mismatches.iter().map(ToString::to_string));
                if verdict.reasons.is_empty() {
                    verdict.verdict = Verdict::Matched;
                    explanation.matched =
                        Some(matched_route(config, &route.config, index, normalized));
                } else {
                    verdict.verdict = Verdict::NoMatch;
                }
            }
            explanation.routes.push(verdict);
        }
        explanation
    }
}

fn matched_route(
    config: &Config,
    route: &RouteConfig,
    index: usize,
    normalized: &Normalized<'_>,
) -> MatchedRoute {
    let upstream_path_and_query = rewrite::upstream_target_text(
        normalized.clone(),
        route.matcher.path.as_ref(),
        route.rewrite.as_ref().map(|r| r.path_prefix.as_str()),
    )
    .unwrap_or_else(|error| format!("(rewrite failed: {error})"));
    let target = match &route.target {
        RouteTarget::Cluster(cluster) => TargetView::Cluster {
            cluster: cluster.clone(),
        },
        RouteTarget::Split(arms) => {
            let total: f64 = arms.iter().map(|arm| f64::from(arm.weight)).sum();
            let views = arms
                .iter()
                .map(|arm| SplitArm {
                    cluster: arm.cluster.clone(),
                    weight: arm.weight,
                    percent: if total > 0.0 {
                        f64::from(arm.weight) * 100.0 / total
                    } else {
                        0.0
                    },
                })
                .collect();
            TargetView::Split { arms: views }
        }
    };
    let mut clusters: Vec<ClusterView> = Vec::new();
    for name in route.target.clusters() {
        if clusters.iter().any(|c| c.name == name) {
            continue;
        }
        clusters.push(match config.clusters.get(name) {
            Some(cluster) => cluster_view(cluster),
            None => ClusterView {
                name: name.to_owned(),
                balance: "(cluster not configured)".to_owned(),
                hash_on: None,
                endpoints: Vec::new(),
                discovery: None,
                hashed_endpoint: None,
            },
        });
    }
    MatchedRoute {
        index,
        name: route.name.clone(),
        target,
        upstream_path_and_query,
        clusters,
    }
}

fn cluster_view(cluster: &ClusterConfig) -> ClusterView {
    let hash_on = cluster.hash_on.as_ref().map(|hash_on| match hash_on {
        HashOn::Header(name) => format!("header:{name}"),
        HashOn::Cookie(name) => format!("cookie:{name}"),
        HashOn::Query(name) => format!("query:{name}"),
        HashOn::SourceIp => "source_ip".to_owned(),
        HashOn::Path => "path".to_owned(),
    });
    let (endpoints, discovery) = match &cluster.endpoints {
        EndpointSource::Static(endpoints) => {
            let listed = endpoints
                .iter()
                .map(|e| {
                    let mut text = e.address.to_string();
                    // Writing into a `String` cannot fail.
                    if e.weight != 1 {
                        let _ = write!(text, " weight {}", e.weight);
                    }
                    if let Some(zone) = &e.zone {
                        let _ = write!(text, " zone {zone}");
                    }
                    text
                })
                .collect();
            (listed, None)
        }
        EndpointSource::Dns {
            name,
            port,
            refresh,
        } => (
            Vec::new(),
            Some(format!("dns {name}:{port} every {refresh:?}")),
        ),
        EndpointSource::Srv { name, refresh } => {
            (Vec::new(), Some(format!("srv {name} every {refresh:?}")))
        }
        EndpointSource::File(path) => (Vec::new(), Some(format!("file {}", path.display()))),
        EndpointSource::Etcd {
            endpoints, prefix, ..
        } => (
            Vec::new(),
            Some(format!("etcd {prefix} at {}", endpoints.join(", "))),
        ),
        EndpointSource::Mesh(service) => (Vec::new(), Some(format!("mesh service {service}"))),
    };
    ClusterView {
        name: cluster.name.clone(),
        balance: cluster.balance.as_str().to_owned(),
        hash_on,
        endpoints,
        discovery,
        hashed_endpoint: None,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.as_deref().unwrap_or("(no host)");
        writeln!(
            f,
            "request:         {} {} {}",
            self.method, host, self.path_and_query
        )?;
        writeln!(
            f,
            "listener:        {}",
            self.listener.as_deref().unwrap_or("(any)")
        )?;
        if let Some(error) = &self.path_error {
            writeln!(f, "path rejected:   {error} -> 400 Bad Request")?;
            return Ok(());
        }
        if let Some(path) = &self.normalized_path {
            writeln!(f, "normalised path: {path}")?;
        }
        writeln!(f, "routes:")?;
        for route in &self.routes {
            let verdict = match route.verdict {
                Verdict::Matched => "MATCH",
                Verdict::NoMatch => "no match",
                Verdict::NotReached => "not reached",
            };
            writeln!(
                f,
                "  #{} {} (listener {}): {verdict}",
                route.index + 1,
                route.name,
                route.listener
            )?;
            for reason in &route.reasons {
                writeln!(f, "      - {reason}")?;
            }
        }
        let Some(matched) = &self.matched else {
            return writeln!(f, "result: no route matches -> 404 Not Found");
        };
        writeln!(f, "result: route #{} {}", matched.index + 1, matched.name)?;
        match &matched.target {
            TargetView::Cluster { cluster } => writeln!(f, "  target:        cluster {cluster}")?,
            TargetView::Split { arms } => {
                write!(f, "  target:        split")?;
                for (i, arm) in arms.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(
                        f,
                        "{sep}{} weight {} ({:.1}%)",
                        arm.cluster, arm.weight, arm.percent
                    )?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f, "  upstream path: {}", matched.upstream_path_and_query)?;
        for cluster in &matched.clusters {
            write!(f, "  cluster {}: balance {}", cluster.name, cluster.balance)?;
            if let Some(hash_on) = &cluster.hash_on {
                write!(f, ", hash_on {hash_on}")?;
            }
            writeln!(f)?;
            if let Some(discovery) = &cluster.discovery {
                writeln!(f, "    discovery: {discovery}")?;
            }
            if !cluster.endpoints.is_empty() {
                writeln!(f, "    endpoints: {}", cluster.endpoints.join(", "))?;
            }
            if let Some(endpoint) = &cluster.hashed_endpoint {
                writeln!(f, "    hash maps to: {endpoint}")?;
            }
        }
        Ok(())
    }
}
