//! Conditional requests against a stored response (RFC 9110 §13.1.1, §13.1.3, §13.2.2) and the
//! validators a cache sends when it revalidates (RFC 9111 §4.3.1).

use std::time::SystemTime;

use http::header::{self, HeaderMap};

/// Whether the client's own conditions hold for a stored response with `stored` headers, i.e.
/// the client should get 304. `If-None-Match` takes precedence: when it is present
/// `If-Modified-Since` is not even looked at (RFC 9110 §13.2.2 steps 3-4).
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).map(|v| v.as_bytes()) else {
            return false;
        };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .flat_map(|v| list(v.as_bytes()))
            .any(|candidate| candidate == b"*" || weak_eq(candidate, etag));
    }
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    // §13.1.3: compare with Last-Modified (or, lacking it, the Date the response was sent).
    let modified = [header::LAST_MODIFIED, header::DATE]
        .into_iter()
        .find_map(|name| stored.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok());
    modified.is_some_and(|m: SystemTime| m <= since)
}

/// Removes the client's conditional headers (they are answered here, against the stored copy)
/// and sets the stored response's validators instead (RFC 9111 §4.3.1).
pub fn set_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        request.remove(name);
    }
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Whether `stored` carries a validator a revalidation can send.
pub fn has_validator(stored: &HeaderMap) -> bool {
    stored.contains_key(header::ETAG) || stored.contains_key(header::LAST_MODIFIED)
}

/// Entity-tags of a list field: split at commas outside quotes.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || {
        let trimmed = rest.trim_ascii_start();
        if trimmed.is_empty() {
            return None;
        }
        let mut quoted = false;
        let end = trimmed
            .iter()
            .position(|&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                b == b',' && !quoted
            })
            .unwrap_or(trimmed.len());
        rest = trimmed.get(end + 1..).unwrap_or_default();
        Some(trimmed[..end].trim_ascii_end())
    })
}

/// RFC 9110 §8.8.3.2 weak comparison: the opaque tags match, `W/` ignored on either side.
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let opaque = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    opaque(a) == opaque(b.trim_ascii())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn if_none_match_weak_comparison_and_lists() {
        let stored = map(&[("etag", "W/\"v1\"")]);
        assert!(not_modified(
            &map(&[("if-none-match", "\"v0\", \"v1\"")]),
            &stored
        ));
        assert!(not_modified(&map(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&map(&[("if-none-match", "\"v2\"")]), &stored));
        assert!(not_modified(
            &map(&[("if-none-match", "\"a,b\", W/\"v1\"")]),
            &stored
        ));
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        let both = map(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT"),
        ]);
        assert!(!not_modified(&both, &stored));
        let ims = map(&[("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT")]);
        assert!(not_modified(&ims, &stored));
        let earlier = map(&[("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")]);
        assert!(!not_modified(&earlier, &stored));
    }

    #[test]
    fn validators_replace_the_clients() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        let mut req = map(&[("if-none-match", "\"mine\""), ("if-range", "\"x\"")]);
        set_validators(&mut req, &stored);
        assert_eq!(
            req.get("if-none-match").map(|v| v.as_bytes()),
            Some(&b"\"v1\""[..])
        );
        assert!(req.contains_key("if-modified-since") && !req.contains_key("if-range"));
    }
}
