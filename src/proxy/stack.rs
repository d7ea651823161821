//! The per-route stack: every layer a request passes through between the handler and the
//! endpoint, outermost first, composed in this file so the whole order reads top to bottom.
//!
//! | # | layer | what it does | here | decisions from |
//! |---|---|---|---|---|
//! | 1 | route | first matching route, normalised and rewritten path | `serve` | `router` |
//! | 1a | rate limit | over the route's `rate_limit`: 429 from the proxy, no cluster touched | `serve` | `ratelimit` |
//! | 2 | cache | a hit answers here; a miss or a revalidation runs layers 3–7 as its fetch | `serve` | `cache::Layer` |
//! | 3 | cluster limits | the split picks the cluster; `max_pending` and `max_requests` are taken once for the request | `exchange` | `endpoint::limits` |
//! | 4 | retry | attempts, hedges, route budget, backoff, per-try timeout; `max_retries` before each retry | `exchange` → `attempt::run` | `resilience` |
//! | 5 | balancer | the zone choice (`locality`), then the first candidate not tried yet that health admits; panic routing when none is | `pick` | `balance`, `balance::locality`, `health::admit` |
//! | 6 | endpoint pool | lease a connection (or open one), send, check the response head | `send` | `upstream` |
//! | 7 | outlier | the attempt's outcome to the cluster's health task, its latency to peak EWMA | `send` | `health::record` |
//!
//! Route `mirror` (shadow traffic) starts between layers 3 and 4, once the primary cluster
//! admitted the request: a sampled request's copy is teed off its body and sent by a task of its
//! own through the shadow cluster's layers 5–7 (`mirror`); this stack never waits for it.
//!
//! Between layers 3 and 4 the handler's head rules make the request head the endpoint sees
//! (hop-by-hop, forwarding headers, `via`, upgrades); after layer 4 they make the response head
//! (`handler::upstream_head`, `handler::downstream_head`).
//!
//! **Cluster limits sit outside the retry layer**, where a per-attempt layer would put them
//! inside it. That is deliberate: `max_pending` and `max_requests` count a request once however
//! many attempts it makes (to the cluster's callers it is one request), and an over-limit
//! cluster answers a new request with 503 at once, before any endpoint is tried. Retries have
//! their own limit, `max_retries`, which the retry layer checks before each retry; over it the
//! retry is not made and the client gets the last attempt's own failure, not a 503 of ours. The
//! `max_requests` slot moves to the winning attempt's in-flight guard, so it lasts until the
//! response body ends; `max_pending` ends with the response head.
//!
//! **Plain functions that name the next layer.** The layers do not go through a `Service`
//! trait object or a boxed future: each one is a function returning a concrete future, so the
//! compiler sees the whole request path as one type and a request costs no allocation for the
//! stack itself. The two boxes on the path are deliberate and conditional: a cached route's cache
//! state and a retried or hedged request's loop state (see `serve` and `attempt::run`).
//! The functions return `async move` blocks rather than being `async fn`s: an `async fn` holds
//! each argument twice in its future (as captured, then moved into a local), and these futures
//! nest, so the request head would be copied twice per layer. To re-measure, print
//! `std::mem::size_of_val` of `handler::handle`'s future in a unit test.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::request::Parts;
use http::Response;

use super::access_log::RequestFacts;
use super::attempt::{self, Finished, Plan};
use super::body::{IdleWatch, ProxyBody};
use super::handler::{self, ConnContext};
use super::mirror;
use crate::balance::{self, PickContext};
use crate::endpoint::limits::{self, Admission};
use crate::endpoint::InFlightGuard;
use crate::router::RequestView;
use crate::state::{ListenerSnapshot, Snapshot};
use crate::wire::activity::Activity;
use crate::wire::headers::{Present, Watched};
use crate::wire::{self, ProxyError};

/// Layers 1 and 2: routes the request and, on a cached route, lets the cache answer or fetch
/// through `exchange`. `facts` gets the route and cluster for metrics and the access log.
/// `refresh`: the cache's own background revalidation ([`refetch`]), which no client sent, so
/// the route's rate limit does not count it.
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc"
)]
pub(super) fn serve<'a>(
    ctx: &'a ConnContext,
    snapshot: &'a Snapshot,
    parts: Parts,
    body: wire::Body,
    facts: &'a mut RequestFacts,
    refresh: bool,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
    async move {
        // 1. Route.
        let listener = snapshot.listener(&ctx.listener).ok_or_else(|| {
            ProxyError::Internal(format!("listener {} not in snapshot", ctx.listener))
        })?;
        let host = handler::request_host(&parts);
        let host_text = host.as_ref().and_then(|h| h.to_str().ok());
        let routed = {
            let view = RequestView {
                method: &parts.method,
                host: host_text,
                path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                headers: &parts.headers,
                client_identity: ctx.client_identity.as_deref().map(|id| id.id.as_str()),
            };
            let router = snapshot.router();
            match ctx.intercepted.as_deref() {
                None => router.route(listener.index(), &view)?,
                Some(i) => router.route_intercepted(listener.index(), &view, &i.destination)?,
            }
            .ok_or(ProxyError::NoRoute)?
        };
        facts.route = Some(routed.index);
        if let Some(allow) = &routed.route.config().allow {
            let identity = ctx.client_identity.as_deref().map(|id| id.id.as_str());
            if !identity.is_some_and(|id| allow.iter().any(|a| a == id)) {
                return Err(ProxyError::Forbidden);
            }
        }

        // 1a. Rate limit: before the cache and the cluster limits, so a refused request costs
        // no cluster anything. A route without `rate_limit` pays one index and a `None` check.
        if let Some(limiter) = snapshot
            .rate_limits()
            .get(routed.index)
            .filter(|_| !refresh)
        {
            if let Err(refused) =
                limiter.check(ctx.peer.ip(), listener.trusted_hops(), &parts.headers)
            {
                limiter.count_refused();
                return Ok(too_many_requests(limiter, refused));
            }
        }

        // 2. Cache.
        let refetch = |parts| refetch(ctx.clone(), parts);
        let cache = crate::cache::Layer::new(
            snapshot.cache(),
            routed.route.config(),
            ctx.tls,
            &refetch,
            host_text,
            &parts,
        );
        if let Some(cache) = cache {
            // A hit picks no cluster; its request metrics go to the route's first (exchange
            // replaces it on a miss).
            facts.cluster = snapshot.cluster(routed.route.pick_cluster(0)).cloned();
            // Boxed: the cache layer's state would otherwise size every request's future, cached
            // route or not (it is moved and held per request).
            let served = cache.serve(parts, body, move |parts, body| {
                exchange(ctx, snapshot, listener, routed, host, parts, body, facts)
            });
            return Box::pin(served).await;
        }
        exchange(ctx, snapshot, listener, routed, host, parts, body, facts).await
    }
}

/// The 429 a route's `rate_limit` answers: `Retry-After`, `RateLimit-Policy` and `RateLimit`
/// (see `ratelimit::answer`).
fn too_many_requests(
    limiter: &crate::ratelimit::RouteLimiter,
    refused: crate::ratelimit::Refused,
) -> Response<ProxyBody> {
    let mut response = Response::new(super::body::full("rate limited\n"));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in limiter.answer().refusal(refused) {
        headers.insert(name, value);
    }
    response
}

/// Sends `parts` (no body) through the current snapshot's route to the upstream, skipping the
/// cache: the response cache's background refresh, handed to the cache as its
/// [`crate::cache::Refetch`]. Boxed, because it runs `serve` inside a task that `serve`
/// itself spawns; a refresh is a request of its own, not on a client's path.
fn refetch(
    ctx: ConnContext,
    parts: Parts,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>> {
    Box::pin(async move {
        let snapshot = ctx.shared.snapshot();
        let mut facts = RequestFacts::default();
        let body = wire::empty_body();
        serve(&ctx, &snapshot, parts, body, &mut facts, true).await
    })
}

/// Layers 3 and 4, everything after the cache: the cluster and its limits, the upstream head,
/// the retry layer (which runs layers 5–7 per attempt) and the response head. Separate from
/// `serve` because the cache calls it as its fetch. `listener` is the one `serve` looked up
/// (a search by name, done once per request).
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc"
)]
#[allow(
    clippy::too_many_arguments,
    reason = "the request's parts, each moved in once from `serve`"
)]
fn exchange<'a>(
    ctx: &'a ConnContext,
    snapshot: &'a Snapshot,
    listener: &'a ListenerSnapshot,
    routed: crate::router::Routed<'a>,
    host: Option<HeaderValue>,
    mut parts: Parts,
    body: wire::Body,
    facts: &'a mut RequestFacts,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
    async move {
        let route = routed.route;

        // 3. Cluster limits: 503 at once when over; `_pending` lasts until the response head.
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
        let Admission {
            pending: _pending,
            request: cluster_slot,
        } = limits::admit(cluster.config(), cluster.health())?;

        // The head the endpoint sees. Scanned again: the cache layer may have rewritten the head
        // since `handle` scanned it.
        let present = Present::scan(&parts.headers);
        let grpc = handler::is_grpc(&parts.headers, present);
        // A client's gRPC deadline bounds the exchange as the route `timeout` does (the shorter).
        let grpc_timeout = present
            .has(Watched::GrpcTimeout)
            .then(|| crate::resilience::grpc_timeout(&parts.headers))
            .flatten();
        let total = match (route.config().timeout, grpc_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Route `mirror`: a sampled request's copy starts here (after the cluster admitted
        // the request), with the head as it is before the head rules; the body may come back
        // teed. One draw per request on a mirrored route, nothing on others.
        let body = match snapshot
            .resilience(routed.index)
            .and_then(|state| state.mirror())
        {
            Some(mirror) if mirror.sampled(fastrand::u64(..)) => {
                let source = mirror::Source {
                    ctx,
                    snapshot,
                    listener,
                    route,
                    parts: &parts,
                    present,
                    host: host.as_ref(),
                    path_and_query: routed.upstream_path_and_query.as_ref(),
                };
                mirror::start(source, mirror, body)
            }
            _ => body,
        };
        let handler::UpstreamHead { upgrade, lines } = handler::upstream_head(
            ctx,
            listener,
            route,
            cluster.config().protocol,
            routed.upstream_path_and_query,
            host,
            &mut parts,
            present,
        )?;
        // One clock reading for the deadline, the idle clock's start and the first attempt's
        // start (its time limit and its latency for peak EWMA): each read is a vDSO call.
        let now = Instant::now();
        // One clock for both directions: the route's idle_timeout counts silence either way.
        let idle = route.config().idle_timeout.map(|limit| IdleWatch {
            activity: Activity::since(now),
            limit,
        });

        // 4. Retry: runs layers 5–7 once per attempt. An upgrade's body is the tunnel: it is
        // never repeated.
        let repeatable = upgrade.is_none();
        let plan = Plan {
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
            deadline: total.map(|t| (now + t, t)),
            started: now,
            client: facts.client_body.clone(),
            lines,
        };
        let won = attempt::run(plan, parts, body, facts, cluster_slot).await?;
        handler::downstream_head(route, won, upgrade, idle)
    }
}

/// Layer 5, the balancer: the first usable candidate not tried yet; when every usable one was
/// tried, a retry may go back to one of them (a one-endpoint cluster still gets its retries), a
/// hedge may not (a hedge at the slow endpoint itself would not help). When no endpoint is
/// usable at all, panic routing takes any (see `health::panic_routes`); never for a hedge,
/// which only helps at an endpoint in service.
pub(super) fn pick(
    plan: &Plan<'_>,
    tried: &[usize],
    hedge: bool,
) -> Option<(usize, InFlightGuard)> {
    let cluster = plan.cluster;
    let found = pick_among(plan, tried, hedge, |i| crate::health::admit(cluster, i));
    if found.is_some() || hedge || !crate::health::panic_routes(cluster) {
        return found;
    }
    pick_among(plan, tried, hedge, |_| true)
}

/// `pick`'s order over the endpoints `usable` accepts.
fn pick_among(
    plan: &Plan<'_>,
    tried: &[usize],
    hedge: bool,
    usable: impl Fn(usize) -> bool,
) -> Option<(usize, InFlightGuard)> {
    let cluster = plan.cluster;
    let fresh = cluster.choose(&plan.pick, |i| !tried.contains(&i) && usable(i));
    if fresh.is_some() || hedge || tried.is_empty() {
        return fresh;
    }
    cluster.choose(&plan.pick, usable)
}

/// Layers 6 and 7 for one attempt at the endpoint `guard` counts (`started`: a clock reading
/// taken just before, if the caller has one): the endpoint pool sends
/// (within the attempt's time limit, `attempt::limit`), then the outcome goes to health
/// (outlier detection) and a success's time to headers to the balancer (peak EWMA). A failure
/// the client caused reaches neither: `Upstream::send` has already re-attributed it, and health
/// ignores `FailureKind::Client`.
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc"
)]
pub(super) fn send<'a>(
    plan: &'a Plan<'a>,
    guard: InFlightGuard,
    request: http::Request<wire::Body>,
    hedge: bool,
    started: Option<Instant>,
) -> impl Future<Output = Finished> + 'a {
    async move {
        let endpoint = Arc::clone(guard.endpoint());
        // One clock read for the limit and the latency's start (`started`: the exchange's
        // reading, for the first attempt of a request that is not retried), one for its end and
        // the EWMA's stamp: each read is a vDSO call.
        let sent_at = started.unwrap_or_else(Instant::now);
        let (result, unsent) = plan
            .upstream
            .send(
                plan.cluster.config(),
                &endpoint,
                request,
                attempt::limit(plan, sent_at),
                plan.client.as_ref(),
                &plan.lines,
            )
            .await;
        crate::health::record(plan.cluster, &endpoint, &result);
        if result.is_ok() {
            let now = Instant::now();
            balance::peak_ewma::observe(&endpoint, now - sent_at, now);
        }
        Finished {
            endpoint,
            guard,
            result,
            hedge,
            unsent,
        }
    }
}
