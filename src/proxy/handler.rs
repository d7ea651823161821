//! The request path, in order: snapshot → route → cluster → endpoint → forward → response.
//!
//! Everything a request needs is loaded once at the start (one `ArcSwap` load) and kept to the
//! end, so a reload mid-request changes nothing for it. Failures before the response head
//! becomes a [`ProxyError`] answered here; failures after it abort the stream (hyper does that
//! when the body errors).
//!
//! The layers of the request path (here, `server::serve_request`, `resilience::run` and
//! `attempt`, `Upstream::send`, `upstream::exchange`) are `fn`s returning an `async move`
//! block, not `async fn`s: an `async fn` holds each argument twice in its future (as captured,
//! then moved into a local), and these futures nest, so the request head was copied twice per
//! layer and each layer's future grew by it. This way the request future is 5.3 KiB, not 7.4.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::access_log::{AccessLog, RequestFacts, Tracked};
use super::body::{self, IdleWatch, ProxyBody};
use super::error::ProxyError;
use super::headers::{self, Present, Watched};
use crate::balance::{self, PickContext};
use crate::config::Protocol;
use crate::router::RequestView;
use crate::runtime::{Shared, Snapshot};
use crate::upstream::activity::Activity;
use crate::upstream::{upgrade, FailureKind, Upstream, UpstreamError};

/// What every request on one downstream connection shares.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// Current snapshot and endpoint registry.
    pub shared: Arc<Shared>,
    /// This worker's upstream side.
    pub upstream: Arc<Upstream>,
    /// The listener the connection came in on (by name: a reload may renumber listeners).
    pub listener: Arc<str>,
    /// The downstream peer.
    pub peer: SocketAddr,
    /// The peer's address as `x-forwarded-for` writes it, rendered once per connection.
    pub forwarded_for: HeaderValue,
    /// The connection is TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    /// The verified client certificate's identity (mTLS listeners only).
    pub client_identity: Option<Arc<crate::tls::identity::PeerIdentity>>,
}

/// Serves one request; never fails (errors become responses).
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc"
)]
pub fn handle<'a>(
    ctx: &'a ConnContext,
    req: Request<Incoming>,
) -> impl Future<Output = Response<Tracked>> + 'a {
    async move {
        let version = req.version();
        let (mut parts, body) = req.into_parts();
        let present = Present::scan(&parts.headers);
        let request_id = headers::ensure_request_id(&mut parts.headers, present);
        let grpc = is_grpc(&parts.headers, present);
        let snapshot = ctx.shared.snapshot();
        // Settled here rather than in `forward` so the access log knows the trace id; the proxy's
        // span becomes the upstream request's parent (crate::trace).
        let span = crate::trace::start(&mut parts, present, &snapshot.config().tracing);
        let mut access = AccessLog::start(&ctx.listener, &snapshot, &parts, &request_id, span);
        let body = access.count_request_body(body);
        // HTTP/2 bodies without a declared length are held to max_body_bytes (hygiene::limit).
        let body = super::hygiene::limit::apply(body, &parts.extensions);
        let mut response = match forward(ctx, &snapshot, parts, body, &mut access.facts).await {
            Ok(response) => response,
            Err(error) => {
                access.proxy_error();
                let side = error.side();
                tracing::debug!(%error, ?side, ?request_id, "request failed");
                error_response(&error, grpc)
            }
        };
        // hyper writes the connection's own protocol; matching the request's version keeps an
        // HTTP/2 upstream answer from being labelled HTTP/2 on an HTTP/1.1 connection.
        *response.version_mut() = version;
        let response_headers = response.headers_mut();
        response_headers.insert(headers::X_REQUEST_ID.clone(), request_id);
        headers::add_via(response_headers);
        let debug = access
            .facts
            .route
            .and_then(|i| snapshot.router().routes().get(i));
        if debug.is_some_and(|route| route.config().debug_headers) {
            debug_headers(response_headers, &access.facts);
        }
        // Metrics and the access-log line are written when the body ends (bytes out known).
        access.finish(response)
    }
}

#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc"
)]
fn forward<'a>(
    ctx: &'a ConnContext,
    snapshot: &'a Snapshot,
    parts: Parts,
    body: crate::upstream::Body,
    facts: &'a mut RequestFacts,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
    async move {
        let listener = snapshot.listener(&ctx.listener).ok_or_else(|| {
            ProxyError::Internal(format!("listener {} not in snapshot", ctx.listener))
        })?;
        let host = request_host(&parts);
        let host_text = host.as_ref().and_then(|h| h.to_str().ok());
        let routed = {
            let view = RequestView {
                method: &parts.method,
                host: host_text,
                path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                headers: &parts.headers,
                client_identity: ctx.client_identity.as_deref().map(|id| id.id.as_str()),
            };
            snapshot
                .router()
                .route(listener.index(), &view)?
                .ok_or(ProxyError::NoRoute)?
        };
        facts.route = Some(routed.index);
        let cache =
            crate::cache::Layer::new(snapshot, routed.route.config(), ctx, host_text, &parts);
        if let Some(cache) = cache {
            // A hit picks no cluster; its request metrics go to the route's first (exchange
            // replaces it on a miss).
            facts.cluster = snapshot.cluster(routed.route.pick_cluster(0)).cloned();
            // Boxed: the cache layer's state would otherwise size every request's future, cached
            // route or not (it is moved and held per request).
            let served = cache.serve(parts, body, move |parts, body| {
                exchange(ctx, snapshot, routed, host, parts, body, facts)
            });
            return Box::pin(served).await;
        }
        exchange(ctx, snapshot, routed, host, parts, body, facts).await
    }
}

/// Sends `parts` (no body) through the current snapshot's route to the upstream, skipping the
/// cache: the response cache's background refresh. Boxed, because it runs `forward` inside a
/// task that `forward` itself spawns.
pub(crate) fn refetch(
    ctx: ConnContext,
    parts: Parts,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>,
> {
    Box::pin(async move {
        let snapshot = ctx.shared.snapshot();
        let mut facts = RequestFacts::default();
        let body = crate::upstream::empty_body();
        forward(&ctx, &snapshot, parts, body, &mut facts).await
    })
}

/// Everything after routing: cluster, limits, the upstream head, the attempt loop and the
/// response head. Split from [`forward`] so a layer between routing and the upstream (the
/// response cache) can call it as its fetch.
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc"
)]
fn exchange<'a>(
    ctx: &'a ConnContext,
    snapshot: &'a Snapshot,
    routed: crate::router::Routed<'a>,
    host: Option<HeaderValue>,
    mut parts: Parts,
    body: crate::upstream::Body,
    facts: &'a mut RequestFacts,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
    async move {
        let listener = snapshot.listener(&ctx.listener).ok_or_else(|| {
            ProxyError::Internal(format!("listener {} not in snapshot", ctx.listener))
        })?;
        let route = routed.route;
        let cluster_name = route.pick_cluster(fastrand::u64(..));
        let cluster = snapshot.cluster(cluster_name).ok_or_else(|| {
            ProxyError::Internal(format!("cluster {cluster_name} not in snapshot"))
        })?;
        facts.cluster = Some(Arc::clone(cluster));

        let pick = PickContext {
            endpoints: cluster.endpoints(),
            client: Some(ctx.peer),
            random: fastrand::u64(..),
            // The `hash_on` key, hashed once per request (None: no key, least_request fallback).
            hash: cluster.config().hash_on.as_ref().and_then(|hash_on| {
                let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                balance::request_hash(hash_on, &parts.headers, target, Some(ctx.peer.ip()))
            }),
        };
        // Cluster limits first (503 at once when over); `_pending` lasts until the response head.
        let crate::health::limits::Admission {
            pending: _pending,
            request: cluster_slot,
        } = crate::health::limits::admit(cluster)?;
        // Endpoints are picked per attempt in `resilience::run` (`health::admit` + the balancer's
        // admission), which also hands the winner's guard the cluster's `max_requests` slot.
        // Scanned again: the cache layer may have rewritten the head since `handle` scanned it.
        let present = Present::scan(&parts.headers);
        let grpc = is_grpc(&parts.headers, present);
        // A client's gRPC deadline bounds the exchange as the route `timeout` does (the shorter).
        let grpc_timeout = present
            .has(Watched::GrpcTimeout)
            .then(|| crate::resilience::grpc_timeout(&parts.headers))
            .flatten();
        let total = match (route.config().timeout, grpc_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        // Request head as the endpoint will see it. Two hop-by-hop headers survive on purpose
        // (DESIGN.md): an accepted Upgrade, and `te: trailers` to HTTP/2 (gRPC) backends.
        let protocol = cluster.config().protocol;
        let upgrade = (route.config().websocket
            && protocol == Protocol::Http1
            && present.has(Watched::Connection)
            && present.has(Watched::Upgrade))
        .then(|| upgrade_token(&parts.headers))
        .flatten();
        let te_trailers = protocol == Protocol::H2
            && present.has(Watched::Te)
            && asks_for_trailers(&parts.headers);
        headers::strip_hop_by_hop(&mut parts.headers, present);
        if let Some(token) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, token.clone());
        }
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        headers::ensure_traceparent(&mut parts.headers, present);
        headers::set_forwarded(
            &mut parts.headers,
            present,
            &ctx.forwarded_for,
            listener.trusted_hops(),
            host.as_ref(),
        );
        crate::tls::identity::set_forwarded_tls(
            &mut parts.headers,
            present,
            ctx.tls,
            ctx.client_identity.as_deref(),
        );
        if let Some(host) = host {
            // The client's Host (or the authority of an absolute-form / HTTP/2 target, which
            // RFC 9112 3.2.2 and RFC 9113 8.3.1 say take precedence) goes upstream unchanged.
            parts.headers.insert(header::HOST, host);
        }
        route.apply_request_headers(&mut parts.headers);
        parts.uri = Uri::try_from(routed.upstream_path_and_query)
            .map_err(|e| ProxyError::Internal(format!("rewritten target is not a URI: {e}")))?;
        parts.version = match protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::H2 => Version::HTTP_2,
        };
        // Taken before the request moves on: hyper resolves it once the 101 is written downstream.
        let downstream_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<OnUpgrade>());
        // One clock for both directions: the route's idle_timeout counts silence either way.
        let idle = route.config().idle_timeout.map(|limit| IdleWatch {
            activity: Activity::new(),
            limit,
        });
        // An upgrade's body is the tunnel: it is never repeated. Each attempt records its outcome
        // for outlier detection (`health::record`) and its time to headers for peak EWMA.
        let repeatable = upgrade.is_none();
        let plan = crate::resilience::Plan {
            upstream: &ctx.upstream,
            cluster,
            pick,
            idle: idle.as_ref(),
            retry: route.config().retry.as_ref().filter(|_| repeatable),
            hedge: route.config().hedge.as_ref().filter(|_| repeatable),
            state: snapshot.resilience(routed.index),
            grpc,
            per_try: route
                .config()
                .retry
                .as_ref()
                .and_then(|r| r.per_try_timeout),
            deadline: total.map(|t| (std::time::Instant::now() + t, t)),
        };
        let won = crate::resilience::run(plan, parts, body, facts, cluster_slot).await?;
        let (response, guard, endpoint) = (won.response, won.guard, won.endpoint);

        let (mut head, upstream_body) = response.into_parts();
        let present = Present::scan(&head.headers);
        headers::strip_hop_by_hop(&mut head.headers, present);
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(token), Some(downstream)) = (upgrade, downstream_upgrade) else {
                // A 101 we did not ask for cannot be relayed: the client would not expect it.
                return Err(ProxyError::Upstream(UpstreamError::sent(
                    FailureKind::BadResponse,
                    endpoint.address(),
                    "101 without an accepted Upgrade",
                )));
            };
            let upstream = head.extensions.remove::<OnUpgrade>().ok_or_else(|| {
                ProxyError::Internal("upstream 101 without an upgradable connection".into())
            })?;
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            head.headers.insert(header::UPGRADE, token);
            let idle_timeout = route.config().idle_timeout;
            upgrade::spawn_tunnel(downstream, upstream, endpoint, idle_timeout);
        }
        route.apply_response_headers(&mut head.headers);
        Ok(Response::from_parts(
            head,
            body::upstream(upstream_body, guard, idle),
        ))
    }
}

/// `x-switchyard-attempts` and `x-switchyard-endpoint`, for routes with `debug_headers = true`
/// only: they reveal backend addresses, which a public route should not.
fn debug_headers(headers: &mut HeaderMap, facts: &super::access_log::RequestFacts) {
    static ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
    static ENDPOINT: HeaderName = HeaderName::from_static("x-switchyard-endpoint");
    headers.insert(ATTEMPTS.clone(), HeaderValue::from(facts.attempts));
    if let Some(endpoint) = &facts.endpoint {
        if let Ok(value) = HeaderValue::from_str(&endpoint.address().to_string()) {
            headers.insert(ENDPOINT.clone(), value);
        }
    }
}

/// gRPC requests (RFC-less but universal: `application/grpc`, `application/grpc+proto`, …) get
/// proxy failures as `grpc-status` instead of an HTTP error status.
fn is_grpc(headers: &HeaderMap, present: Present) -> bool {
    present.has(Watched::ContentType)
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `Upgrade` token of an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`).
fn upgrade_token(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Whether the client said it accepts trailers (`te: trailers`), which gRPC requires.
fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The request's host: the URI authority when there is one (absolute-form HTTP/1 targets and
/// HTTP/2's `:authority`), else the `Host` header. A header value, so the usual case (HTTP/1
/// with `Host`) shares hyper's bytes instead of copying them for routing, `x-forwarded-host`
/// and the upstream `Host`.
fn request_host(parts: &Parts) -> Option<HeaderValue> {
    if let Some(authority) = parts.uri.authority() {
        // Userinfo (`user@host`) is not part of the host and must not reach the backend.
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        return HeaderValue::from_str(host).ok();
    }
    parts
        .headers
        .get(header::HOST)
        .filter(|h| h.to_str().is_ok())
        .cloned()
}

fn error_response(error: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_error_response(error);
    }
    let mut response = Response::new(body::full(error.body_text()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if error.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A gRPC "trailers-only" response: 200 with `grpc-status` and `grpc-message` in the only
/// header block and no body, which every gRPC client reads as the call's status.
fn grpc_error_response(error: &ProxyError) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(error.grpc_status())),
    );
    // Our texts are plain ASCII, so they need no grpc-message percent-encoding.
    headers.insert(
        GRPC_MESSAGE.clone(),
        HeaderValue::from_static(error.body_text().trim_end()),
    );
    response
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
