//! What the server adds to or takes from a response head before it is encoded: a `date` when
//! the response has none, a `content-length` from a body's exact size when it has none (as
//! hyper did), the connection-specific headers HTTP/2 forbids removed; and the reset reason
//! of a response body that failed.

use std::cell::RefCell;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;
use http_body::Body;

use super::frame::Reason;
use crate::wire::ProxyBody;

/// Completes a response head for HTTP/2 (see the module doc).
pub fn prepare(head: &mut Parts, body: &ProxyBody) {
    let seen = scan(&head.headers);
    if seen.forbidden {
        strip_connection_headers(&mut head.headers);
    }
    if !seen.date {
        head.headers.insert(header::DATE, date());
    }
    if !seen.length && !body.is_end_stream() {
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
}

/// The reset reason for a body that failed with `error`: an HTTP/2 reason in its chain (an
/// upstream stream's reset passes on), else INTERNAL_ERROR, as hyper chose.
pub fn reason_of(error: &(dyn std::error::Error + 'static)) -> Reason {
    let mut current = Some(error);
    // Bounded: error chains are short.
    for _ in 0..8 {
        let Some(error) = current else {
            break;
        };
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            return Reason(u32::from(reason));
        }
        current = error.source();
    }
    Reason::INTERNAL_ERROR
}

/// Headers HTTP/2 forbids in a response (RFC 9113 8.2.2); `h2` would refuse the whole head.
const FORBIDDEN: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// What a response head holds that the server acts on.
#[derive(Debug, Default)]
struct Seen {
    forbidden: bool,
    date: bool,
    length: bool,
}

/// One pass over the few names of a response head (standard names compare as enum tags), so
/// a head pays a hashed lookup only for what it has: the response rules strip the forbidden
/// headers already, and a proxied response brings its own `date` and `content-length`.
fn scan(headers: &HeaderMap) -> Seen {
    let mut seen = Seen::default();
    for name in headers.keys() {
        seen.forbidden |= FORBIDDEN.contains(name);
        seen.date |= name == header::DATE;
        seen.length |= name == header::CONTENT_LENGTH;
    }
    seen
}

/// Removes the headers HTTP/2 forbids in a response.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in &FORBIDDEN {
        headers.remove(name);
    }
}

thread_local! {
    /// The `date` value of the current second, rendered once per second per worker.
    static DATE: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((0, None)) };
}

/// The current `date` header value (RFC 9110 6.6.1), as hyper added it to every response.
fn date() -> HeaderValue {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        match &cached.1 {
            Some(value) if cached.0 == second => value.clone(),
            _ => {
                let text = httpdate::fmt_http_date(now);
                let value = HeaderValue::from_str(&text)
                    .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
                *cached = (second, Some(value.clone()));
                value
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_are_stripped_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::DATE, HeaderValue::from_static("x"));
        let seen = scan(&headers);
        assert!(!seen.forbidden && seen.date && !seen.length, "{seen:?}");
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        assert!(scan(&headers).forbidden);
        strip_connection_headers(&mut headers);
        assert_eq!(headers.len(), 2);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn date_is_an_http_date() {
        let value = date();
        let text = value.to_str().expect("ascii");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }

    #[test]
    fn a_reset_reason_in_the_chain_is_kept() {
        let error = h2::Error::from(h2::Reason::CANCEL);
        assert_eq!(reason_of(&error), Reason::CANCEL);
        let other = std::io::Error::other("x");
        assert_eq!(reason_of(&other), Reason::INTERNAL_ERROR);
    }
}
