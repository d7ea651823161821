//! Cache keys: the effective request URI (RFC 9111 §4 "primary cache key") and, under it, the
//! `Vary`-selected variants (§4.1).
//!
//! The key is `scheme://host/path?query` with the host lower-cased and the target exactly as the
//! client sent it, so `POST /cache/purge?key=URL` takes the URL a client would use. Variants of
//! one URL live in one store entry, which keeps the hit path to one lookup and makes a purge or
//! an invalidation of the URL drop them all.
//!
//! A variant is also bound to the route it was fetched through ([`Scope`]): two routes can serve
//! the same URL from different clusters (a header-matched canary, an mTLS-only route, another
//! listener), and a response fetched for one must never answer a request the other route takes.
//! The scope is part of the variant rather than of the store key so that a purge or an
//! invalidation by URL still drops every route's copy with one removal, with no scan.

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;

use crate::config::{RouteConfig, RouteTarget};

/// The primary key of a request: `scheme://host` + the request target.
pub fn primary(tls: bool, host: Option<&str>, parts: &Parts) -> String {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let host = host.unwrap_or_default();
    let scheme = if tls { "https://" } else { "http://" };
    let mut key = String::with_capacity(scheme.len() + host.len() + target.len());
    key.push_str(scheme);
    key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    key.push_str(target);
    key
}

/// The key an absolute URL (a purge, a `Location`) maps to, in the same form as [`primary`];
/// `None` when it is not an absolute http(s) URL.
pub fn of_url(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let tls = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let authority = uri.authority()?.as_str();
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let scheme = if tls { "https://" } else { "http://" };
    Some(format!("{scheme}{}{target}", host.to_ascii_lowercase()))
}

/// The key concurrent misses coalesce on: the URL within one route, so that a request never
/// waits for (and then misses on) a fetch another route makes for the same URL.
pub fn flight(route: &RouteConfig, key: &str) -> String {
    format!("{}\n{}\n{key}", route.listener, route.name)
}

/// [`flight`] for a stored response's scope (a background refresh).
pub fn flight_in(scope: &Scope, key: &str) -> String {
    format!("{}\n{}\n{key}", scope.listener, scope.route)
}

/// The path-and-query part of a key (what a prefix purge compares).
pub fn target(key: &str) -> &str {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    key[after_scheme..]
        .find('/')
        .map_or("", |i| &key[after_scheme + i..])
}

/// The route a stored response was fetched through: its listener, its name (unique per
/// configuration) and its target clusters. A stored response answers only requests routed the
/// same way; the target is part of it so that a reload that points a route (or a reused
/// default name `route-N`) at other clusters does not reuse what the old clusters sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    listener: Box<str>,
    route: Box<str>,
    target: RouteTarget,
}

impl Scope {
    /// The scope of responses fetched through `route`.
    pub fn of(route: &RouteConfig) -> Self {
        Self {
            listener: route.listener.as_str().into(),
            route: route.name.as_str().into(),
            target: route.target.clone(),
        }
    }

    /// Whether a request taking `route` may be answered by a response of this scope. Compared
    /// field by field, so a lookup builds nothing.
    pub fn admits(&self, route: &RouteConfig) -> bool {
        *self.route == *route.name
            && *self.listener == *route.listener
            && self.target == route.target
    }
}

impl Default for Scope {
    /// The scope of no configured route (route names are never empty): for stored responses
    /// built outside the request path, which must match nothing.
    fn default() -> Self {
        Self {
            listener: Box::default(),
            route: Box::default(),
            target: RouteTarget::Cluster(String::new()),
        }
    }
}

/// What a stored response was selected by: the route it came through ([`Scope`]) and the
/// request header values of its `Vary` names (§4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variant {
    scope: Scope,
    /// `(name, normalised value)`; `None` = the request did not have the field.
    fields: Vec<(HeaderName, Option<Vec<u8>>)>,
}

impl Variant {
    /// The variant of `request`, routed by `route`, under the `Vary` names of `response` (no
    /// header fields when no `Vary`).
    pub fn capture(route: &RouteConfig, response: &HeaderMap, request: &HeaderMap) -> Self {
        Self::capture_in(Scope::of(route), response, request)
    }

    /// [`capture`](Self::capture) for a known scope: a background refresh, which runs after
    /// the request (and its borrowed route) is gone, keeps the scope of what it refreshes.
    pub fn capture_in(scope: Scope, response: &HeaderMap, request: &HeaderMap) -> Self {
        let fields = response
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .map(|name| {
                let value = normalised(request, &name);
                (name, value)
            })
            .collect();
        Self { scope, fields }
    }

    /// The route this was fetched through.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// §4.1: the request has the same values (after combining lines and trimming whitespace)
    /// for every field the stored response varies on. The route is checked apart
    /// ([`Scope::admits`]), so that a lookup can tell "nothing for this route" (a URI miss)
    /// from "nothing for these header values" (a Vary miss).
    pub fn selects(&self, request: &HeaderMap) -> bool {
        self.fields.iter().all(|(name, stored)| {
            let mut lines = request.get_all(name).iter();
            match (lines.next(), lines.next(), stored) {
                (None, _, None) => true,
                // One line, the usual case: compared in place, without building a value.
                (Some(one), None, Some(stored)) => one.as_bytes().trim_ascii() == stored.as_slice(),
                (Some(_), _, Some(stored)) => normalised(request, name).as_ref() == Some(stored),
                _ => false,
            }
        })
    }

    /// Approximate bytes held, for the store's weight.
    pub fn weight(&self) -> usize {
        let scope = self.scope.listener.len() + self.scope.route.len();
        scope
            + self
                .fields
                .iter()
                .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

fn normalised(request: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for line in request.get_all(name) {
        let value = line.as_bytes().trim_ascii();
        match &mut out {
            None => out = Some(value.to_vec()),
            Some(joined) => {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Request};

    use super::*;

    /// What a lookup asks of a variant.
    fn matches(v: &Variant, route: &RouteConfig, request: &HeaderMap) -> bool {
        v.scope().admits(route) && v.selects(request)
    }

    fn parts(uri: &str) -> Parts {
        Request::get(uri).body(()).expect("request").into_parts().0
    }

    #[test]
    fn primary_key_is_the_effective_uri() {
        let p = parts("/a/b?x=1");
        assert_eq!(
            primary(false, Some("Example.COM:8080"), &p),
            "http://example.com:8080/a/b?x=1"
        );
        assert_eq!(primary(true, None, &p), "https:///a/b?x=1");
        assert_eq!(
            of_url("http://Example.com:8080/a/b?x=1").as_deref(),
            Some("http://example.com:8080/a/b?x=1")
        );
        assert_eq!(of_url("/relative"), None);
        assert_eq!(target("http://h:1/a/b?x"), "/a/b?x");
    }

    #[test]
    fn variants_compare_normalised_values() {
        let route = crate::router::tests::route("r", "l", Default::default(), "a");
        let mut response = HeaderMap::new();
        response.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, x-absent"),
        );
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(" gzip "));
        let v = Variant::capture(&route, &response, &request);
        let mut same = HeaderMap::new();
        same.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(matches(&v, &route, &same));
        same.insert("x-absent", HeaderValue::from_static("1"));
        assert!(!matches(&v, &route, &same));
        let mut two = HeaderMap::new();
        two.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        two.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert!(!matches(&v, &route, &two));
        let v2 = Variant::capture(&route, &response, &two);
        assert!(matches(&v2, &route, &two));
    }

    #[test]
    fn variants_belong_to_their_route() {
        let route = crate::router::tests::route("stable", "main", Default::default(), "a");
        let request = HeaderMap::new();
        let v = Variant::capture(&route, &HeaderMap::new(), &request);
        assert!(matches(&v, &route, &request));
        let canary = crate::router::tests::route("canary", "main", Default::default(), "a");
        assert!(!matches(&v, &canary, &request), "another route");
        let other_listener =
            crate::router::tests::route("stable", "admin", Default::default(), "a");
        assert!(!matches(&v, &other_listener, &request), "another listener");
        let retargeted = crate::router::tests::route("stable", "main", Default::default(), "b");
        assert!(
            !matches(&v, &retargeted, &request),
            "the route now targets another cluster"
        );
        assert!(!matches(&Variant::default(), &route, &request));
    }
}
