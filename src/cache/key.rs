//! Cache keys: the effective request URI (RFC 9111 §4 "primary cache key") and, under it, the
//! `Vary`-selected variants (§4.1).
//!
//! The key is `scheme://host/path?query` with the host lower-cased and the target exactly as the
//! client sent it, so `POST /cache/purge?key=URL` takes the URL a client would use. Variants of
//! one URL live in one store entry, which keeps the hit path to one lookup and makes a purge or
//! an invalidation of the URL drop them all.

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;

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

/// The path-and-query part of a key (what a prefix purge compares).
pub fn target(key: &str) -> &str {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    key[after_scheme..]
        .find('/')
        .map_or("", |i| &key[after_scheme + i..])
}

/// The request header values a stored response was selected by (its `Vary` names, §4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variant {
    /// `(name, normalised value)`; `None` = the request did not have the field.
    fields: Vec<(HeaderName, Option<Vec<u8>>)>,
}

impl Variant {
    /// The variant of `request` under the `Vary` names of `response` (empty when no `Vary`).
    pub fn capture(response: &HeaderMap, request: &HeaderMap) -> Self {
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
        Self { fields }
    }

    /// §4.1: the request has the same values (after combining lines and trimming whitespace)
    /// for every field the stored response varies on.
    pub fn matches(&self, request: &HeaderMap) -> bool {
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
        self.fields
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Vec::len))
            .sum()
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
        let mut response = HeaderMap::new();
        response.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, x-absent"),
        );
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(" gzip "));
        let v = Variant::capture(&response, &request);
        let mut same = HeaderMap::new();
        same.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(v.matches(&same));
        same.insert("x-absent", HeaderValue::from_static("1"));
        assert!(!v.matches(&same));
        let mut two = HeaderMap::new();
        two.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        two.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert!(!v.matches(&two));
        let v2 = Variant::capture(&response, &two);
        assert!(v2.matches(&two));
    }
}
