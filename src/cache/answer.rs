//! Answers from the store (RFC 9111 §4): finding the stored response for a request, and
//! building the response to the client from it — `Age`, `Cache-Status`, the client's own 304,
//! no body for HEAD — or the 504 of `only-if-cached`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::policy::{conditional, freshness, Directives, Reuse};
use super::status::{self, Outcome};
use super::store::Stored;
use super::Cache;
use crate::config::RouteConfig;
use crate::wire::body::{self, ProxyBody};

/// What the store has for a request.
pub(super) enum Found {
    Entry(Arc<Stored>),
    /// Nothing for the URL on this request's route.
    None,
    /// Variants of the URL on this route, none for this request.
    Other,
}

/// The request facts a stored response is served against.
pub(super) struct ClientRequest {
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
}

pub(super) fn lookup(
    cache: &Cache,
    route: &RouteConfig,
    key: &str,
    headers: &HeaderMap,
    authorized: bool,
) -> Found {
    let Some(slot) = cache.store.get(key) else {
        return Found::None;
    };
    // Another route's copies of the URL are not there for this request at all.
    let mut own = slot
        .variants
        .iter()
        .filter(|v| v.variant.scope().admits(route))
        .peekable();
    if own.peek().is_none() {
        return Found::None;
    }
    own
        // §3.5 (conservatively, both ways): a request with credentials is only answered by a
        // response that allows it, even one stored for another request.
        .find(|v| (!authorized || v.authorized_ok) && v.variant.selects(headers))
        .map_or(Found::Other, |v| Found::Entry(Arc::clone(v)))
}

/// A response a request may take as is, now (after a coalesced fetch, or a lost race).
pub(super) fn fresh_hit(
    cache: &Cache,
    route: &RouteConfig,
    key: &str,
    parts: &Parts,
    request: &Directives,
    authorized: bool,
    value: &HeaderValue,
) -> Option<Response<ProxyBody>> {
    let Found::Entry(stored) = lookup(cache, route, key, &parts.headers, authorized) else {
        return None;
    };
    let age = stored.age(Instant::now());
    (freshness::reuse(age, stored.lifetime, &stored.directives, request) == Reuse::Fresh).then(
        || {
            respond(
                cache,
                &stored,
                &parts.method,
                &parts.headers,
                age,
                value.clone(),
                Outcome::Hit,
            )
        },
    )
}

/// A response from the store: its headers with `Age` (§5.1) and `Cache-Status`; 304 when the
/// client's own conditionals hold (§4.3.2); no body for HEAD. `method` and `request` are the
/// client's.
pub(super) fn respond(
    cache: &Cache,
    stored: &Stored,
    method: &Method,
    request: &HeaderMap,
    age: u64,
    value: HeaderValue,
    outcome: Outcome,
) -> Response<ProxyBody> {
    cache.counters.record(outcome);
    let conditional = request.contains_key(header::IF_NONE_MATCH)
        || request.contains_key(header::IF_MODIFIED_SINCE);
    let not_modified = conditional
        && stored.status == StatusCode::OK
        && conditional::not_modified(request, &stored.headers);
    let mut headers = stored.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(age));
    status::set(&mut headers, value);
    let (code, body) = if not_modified {
        headers.remove(header::CONTENT_LENGTH);
        (StatusCode::NOT_MODIFIED, body::full(Bytes::new()))
    } else if *method == Method::HEAD {
        (stored.status, body::full(Bytes::new()))
    } else {
        (stored.status, body::full(stored.body.clone()))
    };
    let mut response = Response::new(body);
    *response.status_mut() = code;
    *response.headers_mut() = headers;
    response
}

/// RFC 9111 §5.2.1.7: nothing usable stored and the client will not have us forward: 504.
pub(super) fn only_if_cached(cache: &Cache) -> Response<ProxyBody> {
    cache.counters.record(Outcome::Bypass);
    let mut response = Response::new(body::full("not in cache\n"));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    status::set(headers, status::ONLY_IF_CACHED.clone());
    response
}
