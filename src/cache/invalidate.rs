//! RFC 9111 §4.4: a successful response to an unsafe method invalidates the target URI and the
//! URIs in its `Location` and `Content-Location` — when they have the same origin (a response
//! must not be able to purge another site's entries).

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::{key, Cache};

/// Whether a request with this method changes state on the origin (RFC 9110 §9.2.1).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Invalidates after an unsafe request to `target_key` answered `status` with `headers`.
pub fn after_unsafe(cache: &Cache, target_key: &str, status: StatusCode, headers: &HeaderMap) {
    // §4.4: only a non-error status (2xx, 3xx) means the state may have changed.
    if !(status.is_success() || status.is_redirection()) {
        return;
    }
    cache.store().remove(target_key);
    let origin = origin(target_key);
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let other = if value.starts_with('/') {
            Some(format!("{origin}{value}"))
        } else {
            key::of_url(value).filter(|k| self::origin(k) == origin)
        };
        if let Some(other) = other {
            cache.store().remove(&other);
        }
    }
}

/// `scheme://host` of a key.
fn origin(key: &str) -> &str {
    let path = key::target(key);
    &key[..key.len() - path.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_of_a_key() {
        assert_eq!(super::origin("http://h:1/a?b"), "http://h:1");
        assert!(super::is_unsafe(&http::Method::POST));
        assert!(!super::is_unsafe(&http::Method::OPTIONS));
    }
}
