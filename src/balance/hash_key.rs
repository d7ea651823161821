//! The request key a hashing cluster hashes (`hash_on`), reduced to one 64-bit xxh3 hash.
//!
//! Computed once per request by the handler and passed in
//! [`PickContext::hash`](super::PickContext), so a retry or the explain command hashes exactly what
//! the first pick did. `None` means the request does not carry the key (no such header, cookie or
//! query parameter): the hashing balancers then fall back to `least_request` for that request,
//! rather than sending every key-less request to the one endpoint the empty key would hash to.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;
use percent_encoding::percent_decode_str;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::HashOn;

/// Seed for request keys. Fixed (not per process) so every worker and every peer sidecar maps a
/// key to the same endpoint; distinct from the table seeds so key and endpoint hashes are
/// independent.
pub const KEY_SEED: u64 = 0x5357_4954_4348_4b59; // "SWITCHKY"

/// The hash of `hash_on`'s key in this request, or `None` when the request lacks it.
///
/// `path_and_query` is the request target as received (origin form); `client` is the
/// downstream peer's address, for `source_ip`.
pub fn request_hash(
    hash_on: &HashOn,
    headers: &HeaderMap,
    path_and_query: &str,
    client: Option<IpAddr>,
) -> Option<u64> {
    let hash = |bytes: &[u8]| xxh3_64_with_seed(bytes, KEY_SEED);
    match hash_on {
        // Several values of one header hash as the first one: proxies append, the origin's
        // value comes first.
        HashOn::Header(name) => headers.get(name).map(|v| hash(v.as_bytes())),
        HashOn::Cookie(name) => cookie(headers, name).map(|v| hash(v.as_bytes())),
        HashOn::Query(name) => query(path_and_query, name).map(|v| hash(v.as_bytes())),
        HashOn::SourceIp => client.map(|ip| match ip {
            // An IPv4-mapped IPv6 peer is the same client as its IPv4 form.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => hash(&v4.octets()),
                None => hash(&v6.octets()),
            },
            IpAddr::V4(v4) => hash(&v4.octets()),
        }),
        HashOn::Path => {
            let path = path_and_query
                .split_once('?')
                .map_or(path_and_query, |(p, _)| p);
            Some(hash(path.as_bytes()))
        }
    }
}

/// A cookie's value from every `Cookie` header (HTTP/2 may split cookies over several).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
}

/// A query parameter's value, percent-decoded so `%41` and `A` are one key; `+` stays literal
/// (it means space only in form bodies).
fn query<'q>(path_and_query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    let (_, query) = path_and_query.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(n).decode_utf8_lossy() == name)
            .then(|| percent_decode_str(v).decode_utf8_lossy())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_static(v));
        }
        map
    }

    fn h(s: &str) -> Option<u64> {
        Some(xxh3_64_with_seed(s.as_bytes(), KEY_SEED))
    }

    #[test]
    fn each_source_extracts_its_key() {
        let hdrs = headers(&[
            ("x-user-id", "42"),
            ("cookie", "a=1; session=abc"),
            ("cookie", "b=2"),
        ]);
        let user = HashOn::Header(http::HeaderName::from_static("x-user-id"));
        assert_eq!(request_hash(&user, &hdrs, "/", None), h("42"));
        let session = HashOn::Cookie("session".into());
        assert_eq!(request_hash(&session, &hdrs, "/", None), h("abc"));
        let b = HashOn::Cookie("b".into());
        assert_eq!(request_hash(&b, &hdrs, "/", None), h("2"));
        let q = HashOn::Query("id".into());
        assert_eq!(request_hash(&q, &hdrs, "/x?a=1&id=7%20x", None), h("7 x"));
        assert_eq!(
            request_hash(&HashOn::Path, &hdrs, "/p/q?z=1", None),
            h("/p/q")
        );
    }

    #[test]
    fn missing_keys_give_none() {
        let none = HeaderMap::new();
        let user = HashOn::Header(http::HeaderName::from_static("x-user-id"));
        assert_eq!(request_hash(&user, &none, "/", None), None);
        let c = HashOn::Cookie("session".into());
        assert_eq!(request_hash(&c, &none, "/", None), None);
        let q = HashOn::Query("id".into());
        assert_eq!(request_hash(&q, &none, "/x?idx=1", None), None);
        assert_eq!(request_hash(&HashOn::SourceIp, &none, "/", None), None);
    }

    #[test]
    fn source_ip_treats_mapped_v6_as_v4() {
        let none = HeaderMap::new();
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            request_hash(&HashOn::SourceIp, &none, "/", Some(v4)),
            request_hash(&HashOn::SourceIp, &none, "/", Some(mapped))
        );
    }
}
