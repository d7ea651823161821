//! The cache's place in the request path: look up, then serve, validate or fetch (RFC 9111 §4).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::answer::{fresh_hit, lookup, only_if_cached, respond, ClientRequest, Found};
use super::coalesce::{self, Flight, Join};
use super::key::{self, Variant};
use super::policy::{conditional, freshness, Directives, Reuse};
use super::status::{self, Fwd, Outcome};
use super::store::Stored;
use super::tee::{self, Pending};
use super::{invalidate, revalidate, Cache, Refresh};
use crate::config::RouteConfig;
use crate::wire::{ProxyBody, ProxyError};

/// How long a request waits for another's fetch of the same URL when its route has no
/// `timeout`; after it, it fetches on its own.
const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// The result of an upstream exchange.
pub type Fetched = Result<Response<ProxyBody>, ProxyError>;

/// A fetch that outlives the request: what the background revalidation awaits in its own task.
pub type BackgroundFetch = Pin<Box<dyn Future<Output = Fetched> + Send>>;

/// How the cache sends a request upstream after the request that found a stale entry has been
/// answered: a request (no body) through the route as it is configured then, skipping the
/// cache. The request path hands it in with the request, so the cache never calls back into
/// the handler that called it; a reference, so a request that needs no revalidation pays
/// nothing for it.
pub type Refetch<'a> = &'a (dyn Fn(Parts) -> BackgroundFetch + Sync);

/// The cache's view of one request on a route it applies to.
pub struct Layer<'a> {
    cache: &'a Arc<Cache>,
    refetch: Refetch<'a>,
    /// The route the request took: a stored response answers only requests of its own route.
    route: &'a RouteConfig,
    key: String,
    wait: Duration,
    /// `false` for an unsafe request on a route without `cache = true`: it still invalidates
    /// (another route may have cached the URL) but gets no `Cache-Status`.
    route_cached: bool,
}

// By hand: the refetch callable has no `Debug`.
impl std::fmt::Debug for Layer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("cache", &self.cache)
            .field("route", &self.route.name)
            .field("key", &self.key)
            .field("wait", &self.wait)
            .field("route_cached", &self.route_cached)
            .finish_non_exhaustive()
    }
}

impl<'a> Layer<'a> {
    /// The cache layer for a routed request, or `None` when the cache has nothing to do with it
    /// (no `[cache]`, a route without `cache = true` and a safe method, or the cache's own
    /// background refresh). `cache` is the snapshot's; `tls`, whether the connection is TLS
    /// (part of the key); `refetch`, for background revalidation.
    pub fn new(
        cache: Option<&'a Arc<Cache>>,
        route: &'a RouteConfig,
        tls: bool,
        refetch: Refetch<'a>,
        host: Option<&str>,
        parts: &Parts,
    ) -> Option<Self> {
        let cache = cache?;
        if !route.cache && !invalidate::is_unsafe(&parts.method) {
            return None;
        }
        if parts.extensions.get::<Refresh>().is_some() {
            return None;
        }
        Some(Self {
            cache,
            refetch,
            route,
            key: key::primary(tls, host, parts),
            wait: route.timeout.unwrap_or(DEFAULT_WAIT),
            route_cached: route.cache,
        })
    }

    /// Answers the request from the store, or through `fetch` (the upstream exchange), storing
    /// what may be stored.
    pub async fn serve<F, Fut>(self, parts: Parts, body: crate::wire::Body, fetch: F) -> Fetched
    where
        F: FnOnce(Parts, crate::wire::Body) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let cache = self.cache;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return self.other_method(parts, body, fetch).await;
        }
        if bypassed(&parts.headers) {
            cache.counters.record(Outcome::Bypass);
            let mut response = fetch(parts, body).await?;
            status::set(response.headers_mut(), status::BYPASS.clone());
            return Ok(response);
        }
        let request = freshness::request_directives(&parts.headers);
        let authorized = parts.headers.contains_key(header::AUTHORIZATION);
        let fwd = match lookup(cache, self.route, &self.key, &parts.headers, authorized) {
            Found::Entry(stored) => {
                let age = stored.age(Instant::now());
                let staleness = age.saturating_sub(stored.lifetime);
                match freshness::reuse(age, stored.lifetime, &stored.directives, &request) {
                    Reuse::Fresh => {
                        return Ok(respond(
                            cache,
                            &stored,
                            &parts.method,
                            &parts.headers,
                            age,
                            status::HIT.clone(),
                            Outcome::Hit,
                        ));
                    }
                    Reuse::StaleAllowed => {
                        let value = status::stale_hit(staleness, "max-stale");
                        return Ok(respond(
                            cache,
                            &stored,
                            &parts.method,
                            &parts.headers,
                            age,
                            value,
                            Outcome::Stale,
                        ));
                    }
                    Reuse::StaleWhileRevalidate => {
                        let value = status::stale_hit(staleness, "stale-while-revalidate");
                        let response = respond(
                            cache,
                            &stored,
                            &parts.method,
                            &parts.headers,
                            age,
                            value,
                            Outcome::Stale,
                        );
                        revalidate::refresh_in_background(
                            cache,
                            self.refetch,
                            &self.key,
                            &stored,
                            parts,
                        );
                        return Ok(response);
                    }
                    Reuse::Validate if request.only_if_cached => {
                        return Ok(only_if_cached(cache));
                    }
                    Reuse::Validate => {
                        let fwd = if stored.lifetime > age {
                            Fwd::Request
                        } else {
                            Fwd::Stale
                        };
                        return self
                            .validate(stored, age, fwd, request, parts, body, fetch)
                            .await;
                    }
                }
            }
            Found::None => Fwd::UriMiss,
            Found::Other => Fwd::VaryMiss,
        };
        if request.only_if_cached {
            return Ok(only_if_cached(cache));
        }
        self.miss(fwd, request, authorized, parts, body, fetch)
            .await
    }

    /// Not in the store (or no variant for this request): fetch, coalescing concurrent GETs.
    async fn miss<F, Fut>(
        self,
        fwd: Fwd,
        request: Directives,
        authorized: bool,
        parts: Parts,
        body: crate::wire::Body,
        fetch: F,
    ) -> Fetched
    where
        F: FnOnce(Parts, crate::wire::Body) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let cache = self.cache;
        let coalescable = parts.method == Method::GET && !request.no_store;
        let mut flight = None;
        if coalescable {
            match coalesce::join(&cache.flights, &key::flight(self.route, &self.key)) {
                Join::Leader(claim) => {
                    // A fetch may have ended between our lookup and the claim.
                    if let Some(response) = fresh_hit(
                        cache,
                        self.route,
                        &self.key,
                        &parts,
                        &request,
                        authorized,
                        &status::HIT,
                    ) {
                        return Ok(response);
                    }
                    flight = Some(claim);
                }
                Join::Follower(rx) => {
                    coalesce::wait(rx, self.wait).await;
                    if let Some(response) = fresh_hit(
                        cache,
                        self.route,
                        &self.key,
                        &parts,
                        &request,
                        authorized,
                        &status::HIT_COLLAPSED,
                    ) {
                        return Ok(response);
                    }
                    // Uncacheable, failed or too slow: go upstream on our own.
                }
            }
        }
        let request_headers = parts.headers.clone();
        let method = parts.method.clone();
        let request_time = SystemTime::now();
        let response = fetch(parts, body).await?;
        Ok(self.store_or_pass(
            Fetch {
                fwd,
                status: None,
                request_time,
                method,
                request,
                authorized,
                flight,
            },
            &request_headers,
            response,
        ))
    }

    /// A stored response that needs validation: a conditional request with its validators.
    #[allow(clippy::too_many_arguments)]
    async fn validate<F, Fut>(
        self,
        stored: Arc<Stored>,
        age: u64,
        fwd: Fwd,
        request: Directives,
        mut parts: Parts,
        body: crate::wire::Body,
        fetch: F,
    ) -> Fetched
    where
        F: FnOnce(Parts, crate::wire::Body) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let cache = self.cache;
        let client = ClientRequest {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
        };
        conditional::set_validators(&mut parts.headers, &stored.headers);
        let stale_if_error = freshness::stale_if_error(age, stored.lifetime, &stored.directives);
        let stale_status =
            |status: Option<u16>| status::forwarded(fwd, status, false, Some("stale-if-error"));
        let request_time = SystemTime::now();
        let response = match fetch(parts, body).await {
            Ok(response) => response,
            Err(error) if stale_if_error => {
                tracing::debug!(%error, key = %self.key, "upstream failed: serving stale (stale-if-error)");
                let age = stored.age(Instant::now());
                return Ok(respond(
                    cache,
                    &stored,
                    &client.method,
                    &client.headers,
                    age,
                    stale_status(None),
                    Outcome::Stale,
                ));
            }
            Err(error) => return Err(error),
        };
        let code = response.status();
        if code == StatusCode::NOT_MODIFIED {
            let fresh =
                revalidate::freshen(&stored, response.headers(), request_time, SystemTime::now());
            revalidate::keep(cache, &self.key, &stored, &fresh);
            let age = fresh.age(Instant::now());
            let value = status::forwarded(fwd, Some(304), false, None);
            return Ok(respond(
                cache,
                &fresh,
                &client.method,
                &client.headers,
                age,
                value,
                Outcome::Revalidated,
            ));
        }
        if code.is_server_error() && stale_if_error {
            let age = stored.age(Instant::now());
            let value = stale_status(Some(code.as_u16()));
            return Ok(respond(
                cache,
                &stored,
                &client.method,
                &client.headers,
                age,
                value,
                Outcome::Stale,
            ));
        }
        let authorized = client.headers.contains_key(header::AUTHORIZATION);
        let step = Fetch {
            fwd,
            status: Some(code.as_u16()),
            request_time,
            method: client.method,
            request,
            authorized,
            flight: None,
        };
        Ok(self.store_or_pass(step, &client.headers, response))
    }

    /// A fetched response: stored while it streams if §3 allows, else passed through.
    fn store_or_pass(
        &self,
        step: Fetch,
        request_headers: &HeaderMap,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let cache = self.cache;
        let (mut head, body) = response.into_parts();
        let verdict = admit(cache, &step, &head);
        match verdict {
            Ok((directives, lifetime)) => {
                let mut headers = head.headers.clone();
                headers.remove(header::AGE);
                let response_time = SystemTime::now();
                let template = Stored {
                    status: head.status,
                    initial_age: freshness::initial_age(
                        &head.headers,
                        step.request_time,
                        response_time,
                    ),
                    headers,
                    body: Bytes::new(),
                    directives,
                    lifetime,
                    received: Instant::now(),
                    variant: Variant::capture(self.route, &head.headers, request_headers),
                    authorized_ok: freshness::allows_authorized(&directives),
                };
                let expected = head
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok());
                cache.counters.record(Outcome::Miss);
                status::set(
                    &mut head.headers,
                    status::forwarded(step.fwd, step.status, true, None),
                );
                let pending = Pending {
                    cache: Arc::clone(cache),
                    key: self.key.clone(),
                    template,
                    expected,
                    flight: step.flight,
                };
                Response::from_parts(head, tee::store_while_streaming(body, pending))
            }
            Err(reason) => {
                // Waiters go upstream themselves now.
                drop(step.flight);
                let outcome = if step.method == Method::HEAD {
                    Outcome::Miss
                } else {
                    Outcome::Uncacheable
                };
                cache.counters.record(outcome);
                status::set(
                    &mut head.headers,
                    status::forwarded(step.fwd, step.status, false, Some(reason)),
                );
                Response::from_parts(head, body)
            }
        }
    }

    /// Methods other than GET and HEAD go upstream; unsafe ones invalidate on success (§4.4).
    async fn other_method<F, Fut>(self, parts: Parts, body: crate::wire::Body, fetch: F) -> Fetched
    where
        F: FnOnce(Parts, crate::wire::Body) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let unsafe_method = invalidate::is_unsafe(&parts.method);
        let mut response = fetch(parts, body).await?;
        if unsafe_method {
            invalidate::after_unsafe(self.cache, &self.key, response.status(), response.headers());
        }
        if self.route_cached {
            self.cache.counters.record(Outcome::Bypass);
            status::set(response.headers_mut(), status::METHOD.clone());
        }
        Ok(response)
    }
}

/// What a fetch was, for deciding what to do with its response.
struct Fetch {
    fwd: Fwd,
    /// The upstream status for `fwd-status` (validations only; a plain miss leaves it out).
    status: Option<u16>,
    request_time: SystemTime,
    method: Method,
    request: Directives,
    authorized: bool,
    flight: Option<Flight>,
}

/// §3 plus our limits: the directives and lifetime to store with, or why not.
fn admit(
    cache: &Cache,
    step: &Fetch,
    head: &http::response::Parts,
) -> Result<(Directives, u64), &'static str> {
    if step.method != Method::GET {
        return Err("head");
    }
    let (directives, cdn) = freshness::response_directives(&head.headers);
    freshness::storable(
        &step.request,
        step.authorized,
        head.status,
        &directives,
        cdn,
        &head.headers,
    )?;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cache.config.max_object) {
        return Err("too-large");
    }
    let lifetime = freshness::lifetime(
        head.status,
        &directives,
        cdn,
        &head.headers,
        SystemTime::now(),
    );
    // Never reusable without validation, and nothing to validate with: storing it is useless.
    let reusable = lifetime > 0
        || conditional::has_validator(&head.headers)
        || directives.stale_if_error.is_some()
        || directives.stale_while_revalidate.is_some();
    if !reusable {
        return Err("no-freshness");
    }
    Ok((directives, lifetime))
}

/// Requests this cache passes through untouched: ranges (it does not slice stored bodies) and
/// protocol upgrades.
fn bypassed(headers: &HeaderMap) -> bool {
    headers.contains_key(header::RANGE) || headers.contains_key(header::UPGRADE)
}
