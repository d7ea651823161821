//! Storing (RFC 9111 §3), freshness lifetime (§4.2.1, §4.2.2), age (§4.2.3) and whether a
//! stored response may be reused for a request (§4, §4.2.4, RFC 5861).

use std::time::SystemTime;

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::directives::Directives;

use super::directives::delta_seconds;

/// §4.2.2: the usual heuristic is a fraction of the time since `Last-Modified`; 10 % as the
/// RFC suggests, capped at a day so a years-old file is not frozen for a month.
const HEURISTIC_CAP: u64 = 24 * 3600;

/// The directives that govern this cache: `CDN-Cache-Control` when the origin sent it (RFC 9213
/// §2.1: a cache that honours it then ignores `Cache-Control` and `Expires`), else
/// `Cache-Control`. The flag says which one it was.
pub fn response_directives(headers: &HeaderMap) -> (Directives, bool) {
    if let Some(cdn) = Directives::parse_targeted(headers.get_all(CDN_CACHE_CONTROL.clone())) {
        return (cdn, true);
    }
    let cc = Directives::parse(headers.get_all(header::CACHE_CONTROL)).unwrap_or_default();
    (cc, false)
}

/// RFC 9213's field name.
pub static CDN_CACHE_CONTROL: header::HeaderName =
    header::HeaderName::from_static("cdn-cache-control");

/// The request's directives; `Pragma: no-cache` counts as `no-cache` when there is no
/// `Cache-Control` (§5.4).
pub fn request_directives(headers: &HeaderMap) -> Directives {
    if let Some(d) = Directives::parse(headers.get_all(header::CACHE_CONTROL)) {
        return d;
    }
    let pragma_no_cache = headers
        .get_all(header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("no-cache"));
    Directives {
        no_cache: pragma_no_cache,
        ..Directives::default()
    }
}

/// Statuses a cache may give a heuristic lifetime (RFC 9110 §15.1 "heuristically cacheable";
/// 206 is left out: this cache does not combine ranges).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Why a response is not stored, for `Cache-Status: ...; detail=`.
pub type NotStored = &'static str;

/// RFC 9111 §3 for a response to a GET: whether a shared cache may store it.
pub fn storable(
    request: &Directives,
    authorized: bool,
    status: StatusCode,
    response: &Directives,
    cdn: bool,
    headers: &HeaderMap,
) -> Result<(), NotStored> {
    if request.no_store || response.no_store {
        return Err("no-store");
    }
    if response.private {
        return Err("private");
    }
    // §3.5: a response to a request with credentials is for that user, unless it says otherwise.
    if authorized && !allows_authorized(response) {
        return Err("authorization");
    }
    if vary_star(headers) {
        return Err("vary-star");
    }
    // A stored Set-Cookie would hand one client's cookie to every other client.
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    let explicit = has_explicit_expiration(response, cdn, headers);
    let status_ok =
        heuristically_cacheable(status) || (explicit && matches!(status.as_u16(), 302 | 303 | 307));
    if !status_ok {
        return Err("status");
    }
    Ok(())
}

/// §3.5: `public`, `s-maxage` or `must-revalidate` let a shared cache reuse a response to an
/// authorised request.
pub fn allows_authorized(response: &Directives) -> bool {
    response.public || response.s_maxage.is_some() || response.must_revalidate
}

/// Whether `Vary` names `*` (alone or among other names): never served from a cache (§4.1).
pub fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*")
}

fn has_explicit_expiration(d: &Directives, cdn: bool, headers: &HeaderMap) -> bool {
    d.s_maxage.is_some() || d.max_age.is_some() || (!cdn && headers.contains_key(header::EXPIRES))
}

/// §4.2.1: the freshness lifetime in seconds. `response_time` stands in for a missing `Date`.
pub fn lifetime(
    status: StatusCode,
    d: &Directives,
    cdn: bool,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> u64 {
    if let Some(s) = d.s_maxage {
        return s;
    }
    if let Some(m) = d.max_age {
        return m;
    }
    let sent = date(headers, header::DATE).unwrap_or(response_time);
    if !cdn && headers.contains_key(header::EXPIRES) {
        let mut lines = headers.get_all(header::EXPIRES).iter();
        // §5.3: an invalid Expires (e.g. "0") means already expired, as do several of them.
        return match (lines.next(), lines.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|s| httpdate::parse_http_date(s).ok())
                .and_then(|expires| expires.duration_since(sent).ok())
                .map_or(0, |d| d.as_secs()),
            _ => 0,
        };
    }
    // §4.2.2: a heuristic only without explicit expiration, and only for statuses that allow it.
    if !heuristically_cacheable(status) {
        return 0;
    }
    date(headers, header::LAST_MODIFIED)
        .and_then(|modified| sent.duration_since(modified).ok())
        .map_or(0, |since| (since.as_secs() / 10).min(HEURISTIC_CAP))
}

/// §4.2.3: the age of a response when it arrived (`corrected_initial_age`).
pub fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> u64 {
    let age_value = age_field(headers).unwrap_or(0);
    let apparent_age = date(headers, header::DATE)
        .and_then(|d| response_time.duration_since(d).ok())
        .map_or(0, |d| d.as_secs());
    let response_delay = response_time
        .duration_since(request_time)
        .map_or(0, |d| d.as_secs());
    apparent_age.max(age_value.saturating_add(response_delay))
}

/// §5.1: `Age` is a singleton, but a cache that meets a list (`Age: 7200, 0`, or repeated
/// lines) uses the first member and discards the rest; a first member that is not a
/// delta-seconds makes the cache ignore the field (`None`).
fn age_field(headers: &HeaderMap) -> Option<u64> {
    let first_line = headers.get(header::AGE)?.as_bytes();
    let first = first_line
        .split(|&b| b == b',')
        .next()
        .unwrap_or(first_line);
    delta_seconds(first.trim_ascii())
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

/// What a stored response may be used for, for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh enough for the request: serve it.
    Fresh,
    /// Stale, but a client's `max-stale` accepts it (§4.2.4): serve it.
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Must be validated with the origin first.
    Validate,
}

/// The request/response freshness rules of §4 and §5.2.1 for a response of `age` seconds with
/// `lifetime` seconds of freshness.
pub fn reuse(age: u64, lifetime: u64, response: &Directives, request: &Directives) -> Reuse {
    // `no-cache` in either message: validate every time (§5.2.1.4, §5.2.2.4).
    if response.no_cache || request.no_cache {
        return Reuse::Validate;
    }
    let fresh = lifetime > age;
    let within_max_age = request.max_age.is_none_or(|max| age <= max);
    let min_fresh_ok = request
        .min_fresh
        .is_none_or(|min| lifetime.saturating_sub(age) >= min);
    if fresh && within_max_age && min_fresh_ok {
        return Reuse::Fresh;
    }
    if !within_max_age || !min_fresh_ok || response.forbids_stale() {
        // The client asked for something fresher, or the origin forbade stale reuse.
        return Reuse::Validate;
    }
    let staleness = age.saturating_sub(lifetime);
    if request.max_stale.is_some_and(|max| staleness <= max) {
        return Reuse::StaleAllowed;
    }
    if response
        .stale_while_revalidate
        .is_some_and(|window| staleness <= window)
    {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Validate
}

/// RFC 5861 §4: whether a stale response may answer for an upstream error.
pub fn stale_if_error(age: u64, lifetime: u64, response: &Directives) -> bool {
    !response.forbids_stale()
        && response
            .stale_if_error
            .is_some_and(|window| age.saturating_sub(lifetime) <= window)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn http_date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    #[test]
    fn s_maxage_over_max_age_over_expires() {
        let ok = StatusCode::OK;
        let h = headers(&[
            ("expires", &http_date(1_000_100)),
            ("date", &http_date(1_000_000)),
        ]);
        let d = Directives {
            max_age: Some(50),
            s_maxage: Some(20),
            ..Directives::default()
        };
        assert_eq!(lifetime(ok, &d, false, &h, at(1_000_000)), 20);
        let d = Directives {
            max_age: Some(50),
            ..Directives::default()
        };
        assert_eq!(lifetime(ok, &d, false, &h, at(1_000_000)), 50);
        assert_eq!(
            lifetime(ok, &Directives::default(), false, &h, at(1_000_000)),
            100
        );
        // RFC 9213: with CDN-Cache-Control in charge, Expires does not count.
        assert_eq!(
            lifetime(ok, &Directives::default(), true, &h, at(1_000_000)),
            0
        );
    }

    #[test]
    fn invalid_expires_is_already_expired() {
        let h = headers(&[("expires", "0"), ("last-modified", &http_date(0))]);
        assert_eq!(
            lifetime(
                StatusCode::OK,
                &Directives::default(),
                false,
                &h,
                at(1_000_000)
            ),
            0
        );
    }

    #[test]
    fn heuristic_is_a_tenth_of_last_modified_age_for_allowed_statuses_only() {
        let h = headers(&[
            ("date", &http_date(1_000)),
            ("last-modified", &http_date(0)),
        ]);
        let none = Directives::default();
        assert_eq!(lifetime(StatusCode::OK, &none, false, &h, at(1_000)), 100);
        assert_eq!(lifetime(StatusCode::FOUND, &none, false, &h, at(1_000)), 0);
        let no_lm = headers(&[("date", &http_date(1_000))]);
        assert_eq!(lifetime(StatusCode::OK, &none, false, &no_lm, at(1_000)), 0);
    }

    #[test]
    fn initial_age_takes_the_larger_of_age_and_apparent_age() {
        let h = headers(&[("age", "30"), ("date", &http_date(990))]);
        assert_eq!(initial_age(&h, at(998), at(1_000)), 32);
        let h = headers(&[("age", "1"), ("date", &http_date(900))]);
        assert_eq!(initial_age(&h, at(1_000), at(1_000)), 100);
    }

    #[test]
    fn a_list_valued_age_uses_its_first_member() {
        // §5.1: `Age: 7200, 0` (one line, or two lines) is 7200; an invalid first member
        // means no Age at all.
        let now = at(1_000);
        assert_eq!(initial_age(&headers(&[("age", "7200, 0")]), now, now), 7200);
        let mut two = HeaderMap::new();
        two.append(header::AGE, header::HeaderValue::from_static("7200"));
        two.append(header::AGE, header::HeaderValue::from_static("0"));
        assert_eq!(initial_age(&two, now, now), 7200);
        for ignored in ["abc, 7200", "+5", "-5", "1.5", ""] {
            assert_eq!(
                initial_age(&headers(&[("age", ignored)]), now, now),
                0,
                "{ignored:?}"
            );
        }
        assert_eq!(
            initial_age(&headers(&[("age", "99999999999999999999999")]), now, now),
            1 << 31
        );
    }

    #[test]
    fn reuse_rules() {
        let none = Directives::default();
        assert_eq!(reuse(5, 10, &none, &none), Reuse::Fresh);
        assert_eq!(reuse(10, 10, &none, &none), Reuse::Validate);
        let max_age0 = Directives {
            max_age: Some(0),
            ..none
        };
        assert_eq!(reuse(1, 10, &none, &max_age0), Reuse::Validate);
        let min_fresh = Directives {
            min_fresh: Some(8),
            ..none
        };
        assert_eq!(reuse(5, 10, &none, &min_fresh), Reuse::Validate);
        let swr = Directives {
            stale_while_revalidate: Some(5),
            ..none
        };
        assert_eq!(reuse(12, 10, &swr, &none), Reuse::StaleWhileRevalidate);
        assert_eq!(reuse(16, 10, &swr, &none), Reuse::Validate);
        let must = Directives {
            must_revalidate: true,
            ..swr
        };
        assert_eq!(reuse(12, 10, &must, &none), Reuse::Validate);
        let max_stale = Directives {
            max_stale: Some(u64::MAX),
            ..none
        };
        assert_eq!(reuse(100, 10, &none, &max_stale), Reuse::StaleAllowed);
        assert_eq!(reuse(100, 10, &must, &max_stale), Reuse::Validate);
        let sie = Directives {
            stale_if_error: Some(60),
            ..none
        };
        assert!(stale_if_error(30, 10, &sie));
        assert!(!stale_if_error(
            30,
            10,
            &Directives {
                must_revalidate: true,
                ..sie
            }
        ));
    }

    #[test]
    fn storable_rules() {
        let none = Directives::default();
        let ok = StatusCode::OK;
        let plain = HeaderMap::new();
        assert!(storable(&none, false, ok, &none, false, &plain).is_ok());
        let private = Directives {
            private: true,
            ..none
        };
        assert_eq!(
            storable(&none, false, ok, &private, false, &plain),
            Err("private")
        );
        assert_eq!(
            storable(&none, true, ok, &none, false, &plain),
            Err("authorization")
        );
        let public = Directives {
            public: true,
            ..none
        };
        assert!(storable(&none, true, ok, &public, false, &plain).is_ok());
        let vary = headers(&[("vary", "accept, *")]);
        assert_eq!(
            storable(&none, false, ok, &none, false, &vary),
            Err("vary-star")
        );
        let found = StatusCode::FOUND;
        assert_eq!(
            storable(&none, false, found, &none, false, &plain),
            Err("status")
        );
        let max_age = Directives {
            max_age: Some(5),
            ..none
        };
        assert!(storable(&none, false, found, &max_age, false, &plain).is_ok());
    }
}
