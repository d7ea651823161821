//! The `Cache-Status` response field (RFC 9211) and the `cache_requests_total{result}` series.
//!
//! Our member is appended after any the upstream sent (§2: caches closer to the client come
//! later in the list). The common values are static; only ones with a number (`ttl`,
//! `fwd-status`) are formatted.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9211's field name.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The `result` label of `switchyard_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served fresh from the store.
    Hit,
    /// Fetched, and stored (or being stored as it streams).
    Miss,
    /// Served stale (`stale-while-revalidate`, `stale-if-error`, a client's `max-stale`).
    Stale,
    /// A stored response validated by a 304 and served.
    Revalidated,
    /// Not a cacheable request (method, `Range`, ...): passed through.
    Bypass,
    /// Fetched, and not storable.
    Uncacheable,
}

impl Outcome {
    /// Every outcome, in label order (the metric handles are built from it).
    pub const ALL: [Outcome; 6] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stale,
        Outcome::Revalidated,
        Outcome::Bypass,
        Outcome::Uncacheable,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Bypass => "bypass",
            Outcome::Uncacheable => "uncacheable",
        }
    }
}

/// One precomputed counter per outcome.
#[derive(Debug)]
pub struct Counters([metrics::Counter; 6]);

impl Counters {
    /// Registers the six series (at zero, so a scrape shows them before traffic).
    pub fn new() -> Self {
        Self(Outcome::ALL.map(|o| {
            let counter =
                metrics::counter!("switchyard_cache_requests_total", "result" => o.label());
            counter.increment(0);
            counter
        }))
    }

    /// Counts one request.
    pub fn record(&self, outcome: Outcome) {
        self.0[outcome as usize].increment(1);
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends our member to the response's `Cache-Status`.
pub fn set(headers: &mut HeaderMap, value: HeaderValue) {
    headers.append(CACHE_STATUS.clone(), value);
}

/// A fresh hit.
pub static HIT: HeaderValue = HeaderValue::from_static("switchyard; hit");
/// A hit after waiting for another request's fetch of the same URL.
pub static HIT_COLLAPSED: HeaderValue = HeaderValue::from_static("switchyard; hit; collapsed");
/// Not in the store: fetched and stored.
pub static URI_MISS_STORED: HeaderValue =
    HeaderValue::from_static("switchyard; fwd=uri-miss; stored");
/// Stored, but not for this request's `Vary` values: fetched and stored.
pub static VARY_MISS_STORED: HeaderValue =
    HeaderValue::from_static("switchyard; fwd=vary-miss; stored");
/// Not a method this cache serves.
pub static METHOD: HeaderValue = HeaderValue::from_static("switchyard; fwd=method");
/// A request this cache does not handle (`Range`, an upgrade).
pub static BYPASS: HeaderValue = HeaderValue::from_static("switchyard; fwd=bypass");
/// `only-if-cached` and nothing usable stored: 504 (RFC 9111 §5.2.1.7).
pub static ONLY_IF_CACHED: HeaderValue =
    HeaderValue::from_static("switchyard; fwd=uri-miss; detail=only-if-cached");

/// Why the request went upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored for the URL.
    UriMiss,
    /// Stored variants, none for this request.
    VaryMiss,
    /// A stored response needed validation.
    Stale,
    /// A usable stored response, but the request's directives (`no-cache`, `max-age=0`)
    /// required going upstream.
    Request,
}

impl Fwd {
    fn token(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
        }
    }
}

/// A forwarded request's member: `fwd`, the upstream status when known, whether the response
/// was stored, and a detail (why it was not stored, or that stale content was served).
pub fn forwarded(fwd: Fwd, status: Option<u16>, stored: bool, detail: Option<&str>) -> HeaderValue {
    if status.is_none() && detail.is_none() {
        match (fwd, stored) {
            (Fwd::UriMiss, true) => return URI_MISS_STORED.clone(),
            (Fwd::VaryMiss, true) => return VARY_MISS_STORED.clone(),
            _ => {}
        }
    }
    let mut out = format!("switchyard; fwd={}", fwd.token());
    if let Some(status) = status {
        out.push_str(&format!("; fwd-status={status}"));
    }
    if stored {
        out.push_str("; stored");
    }
    if let Some(detail) = detail {
        out.push_str("; detail=");
        out.push_str(detail);
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static("switchyard"))
}

/// A stale response served without forwarding (`max-stale`, `stale-while-revalidate`):
/// `ttl` is negative, the seconds past freshness (§2.5).
pub fn stale_hit(staleness: u64, detail: &str) -> HeaderValue {
    let value = format!("switchyard; hit; ttl=-{staleness}; detail={detail}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HIT.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(forwarded(Fwd::UriMiss, None, true, None), URI_MISS_STORED);
        assert_eq!(
            forwarded(Fwd::Stale, Some(304), false, None),
            "switchyard; fwd=stale; fwd-status=304"
        );
        assert_eq!(
            forwarded(Fwd::Stale, Some(502), false, Some("stale-if-error")),
            "switchyard; fwd=stale; fwd-status=502; detail=stale-if-error"
        );
        assert_eq!(
            stale_hit(3, "stale-while-revalidate"),
            "switchyard; hit; ttl=-3; detail=stale-while-revalidate"
        );
    }
}
