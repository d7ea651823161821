//! Route matching: which route, and so which cluster, serves a request.
//!
//! A [`Router`] is compiled once per snapshot from the validated [`Config`]: per-listener route
//! lists, lower-cased hosts, cumulative split weights. Matching a request then allocates one
//! `String`, the normalised path that is both matched and forwarded upstream (see
//! [`normalize`]), so the backend always sees the path the router decided on.
//!
//! Semantics: routes are tried in file order and the first whose listener and conditions all
//! hold wins (as Envoy's and nginx's prefix-less route tables do). Conditions: host (exact or
//! `*.suffix`, port stripped, case-insensitive), path (exact, segment-unaware prefix, regex —
//! all on the normalised path without the query), method, headers (present with that exact
//! value), client identity. [`Router::explain`] runs the same matchers and says why each route
//! did or did not match.

mod explain;
mod headers;
mod matcher;
mod normalize;
mod rewrite;
mod split;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{Config, RouteConfig, RouteOrigin};
use matcher::CompiledMatch;
use split::Split;

pub use explain::{
    ClusterView, Explanation, MatchedRoute, RouteVerdict, SplitArm, TargetView, Verdict,
};
pub use normalize::{normalize, Normalized, PathError};

/// What the router needs from a request; the proxy builds it from `http::request::Parts`
/// without copying.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Matched against a route's `method`.
    pub method: &'a Method,
    /// `Host` header or URI authority, as received; may carry a port and userinfo.
    pub host: Option<&'a str>,
    /// The raw origin-form target (`/path?query`), before any normalisation.
    pub path_and_query: &'a str,
    /// Matched against a route's `headers` (any of a repeated header's values may match).
    pub headers: &'a HeaderMap,
    /// The verified client certificate identity (mTLS), if any.
    pub client_identity: Option<&'a str>,
}

/// The compiled route table of one snapshot; shared by every worker (`Send + Sync`).
#[derive(Debug)]
pub struct Router {
    /// One per `config.routes` entry, same order.
    routes: Vec<CompiledRoute>,
    /// Indexed like `config.listeners`: the indexes into `routes` of that listener's routes, in
    /// file order, so a request never looks at another listener's routes. File routes only:
    /// synthetic ones are reached through `synthetic`.
    by_listener: Vec<Vec<usize>>,
    /// The transparent listeners' synthetic routes by (listener index, destination).
    synthetic: foldhash::HashMap<(usize, Destination), usize>,
}

/// What selects a synthetic route when no file route of an intercepting listener matched: the
/// original destination, as the proxy resolved it for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An outbound connection to an address of this cluster (`outbound:CLUSTER`).
    Cluster(Arc<str>),
    /// An inbound connection for this declared port (`inbound:PORT`).
    Port(u16),
}

/// One route, ready for matching and forwarding.
#[derive(Debug)]
pub struct CompiledRoute {
    config: Arc<RouteConfig>,
    matcher: CompiledMatch,
    split: Split,
}

/// A matched request: the route and the target to send upstream.
#[derive(Debug)]
pub struct Routed<'r> {
    /// The winning route: its settings, cluster pick and header rules.
    pub route: &'r CompiledRoute,
    /// Index in `config.routes` (and so in metrics and `explain`).
    pub index: usize,
    /// The normalised path, after the route's rewrite, plus `?` and the query exactly as
    /// received: what goes upstream. `None` when that is the request's own target (a canonical
    /// path and no rewrite, the common case): nothing was built and the target goes as it is.
    pub upstream_path_and_query: Option<String>,
}

impl Routed<'_> {
    /// What goes upstream, spelled out: `upstream_path_and_query`, or `request_target` (the
    /// request's own `path?query`, as routed) when that is `None`.
    pub fn upstream_target<'a>(&'a self, request_target: &'a str) -> &'a str {
        self.upstream_path_and_query
            .as_deref()
            .unwrap_or(request_target)
    }
}

impl Router {
    /// Compiles the route table. The config is validated, so every route's listener exists; a
    /// route naming an unknown listener would simply never match.
    pub fn new(config: &Config) -> Router {
        let routes: Vec<CompiledRoute> = config.routes.iter().map(CompiledRoute::new).collect();
        let by_listener = config
            .listeners
            .iter()
            .map(|listener| {
                routes
                    .iter()
                    .enumerate()
                    .filter(|(_, route)| route.config.listener == listener.name)
                    .filter(|(_, route)| route.config.origin == RouteOrigin::File)
                    .map(|(index, _)| index)
                    .collect()
            })
            .collect();
        let mut synthetic = foldhash::HashMap::default();
        for (index, route) in routes.iter().enumerate() {
            let destination = match &route.config.origin {
                RouteOrigin::File => continue,
                RouteOrigin::Outbound(cluster) => Destination::Cluster(Arc::from(cluster.as_str())),
                RouteOrigin::Inbound(port) => Destination::Port(*port),
            };
            let listener = config
                .listeners
                .iter()
                .position(|l| l.name == route.config.listener);
            if let Some(listener) = listener {
                synthetic.insert((listener, destination), index);
            }
        }
        Router {
            routes,
            by_listener,
            synthetic,
        }
    }

    /// [`Router::route`] for an intercepted connection: the listener's file routes first, then
    /// the synthetic route of `destination`, if there is one (no rewrite: the target goes
    /// upstream as normalised).
    pub fn route_intercepted<'r>(
        &'r self,
        listener: usize,
        req: &RequestView<'_>,
        destination: &Destination,
    ) -> Result<Option<Routed<'r>>, PathError> {
        if let Some(routed) = self.route(listener, req)? {
            return Ok(Some(routed));
        }
        let key = (listener, destination.clone());
        let Some((&index, route)) = self
            .synthetic
            .get(&key)
            .and_then(|index| Some((index, self.routes.get(*index)?)))
        else {
            return Ok(None);
        };
        let normalized = normalize(req.path_and_query)?;
        let upstream_path_and_query = rewrite::upstream_target(normalized, None, None)?;
        Ok(Some(Routed {
            route,
            index,
            upstream_path_and_query,
        }))
    }

    /// The first route of listener `listener` (an index into `config.listeners`) that matches.
    ///
    /// `Ok(None)` means no route (404); `Err` means the path is malformed beyond normalisation
    /// (400). The path is checked first, so a malformed one is a 400 whatever the routes are.
    pub fn route<'r>(
        &'r self,
        listener: usize,
        req: &RequestView<'_>,
    ) -> Result<Option<Routed<'r>>, PathError> {
        let normalized = normalize(req.path_and_query)?;
        let Some(candidates) = self.by_listener.get(listener) else {
            return Ok(None);
        };
        for &index in candidates {
            let Some(route) = self.routes.get(index) else {
                continue;
            };
            if route.matcher.matches(req, &normalized.path) {
                let upstream_path_and_query = rewrite::upstream_target(
                    normalized,
                    route.config.matcher.path.as_ref(),
                    route
                        .config
                        .rewrite
                        .as_ref()
                        .map(|r| r.path_prefix.as_str()),
                )?;
                return Ok(Some(Routed {
                    route,
                    index,
                    upstream_path_and_query,
                }));
            }
        }
        Ok(None)
    }

    /// The compiled routes, in file order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }
}

impl CompiledRoute {
    fn new(config: &Arc<RouteConfig>) -> CompiledRoute {
        CompiledRoute {
            config: Arc::clone(config),
            matcher: CompiledMatch::new(&config.matcher),
            split: Split::new(&config.target),
        }
    }

    /// The route as configured: timeouts, retry, cache and the other per-route settings.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// The cluster for one request: weighted by the split (`random % total weight` over the
    /// cumulative weights), or the route's only cluster.
    pub fn pick_cluster(&self, random: u64) -> &str {
        self.split.pick(random)
    }

    /// Applies the route's `request_remove` then `request_add` (overwriting).
    pub fn apply_request_headers(&self, headers: &mut HeaderMap) {
        let rules = &self.config.headers;
        headers::apply(headers, &rules.request_remove, &rules.request_add);
    }

    /// Applies the route's `response_remove` then `response_add` (overwriting).
    pub fn apply_response_headers(&self, headers: &mut HeaderMap) {
        let rules = &self.config.headers;
        headers::apply(headers, &rules.response_remove, &rules.response_add);
    }
}
