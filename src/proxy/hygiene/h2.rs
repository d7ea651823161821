//! Checks on HTTP/2 requests beyond what our HTTP/2 server (`proxy::h2`) enforces.
//!
//! The server already resets streams with connection-specific headers, a `te` other than
//! `trailers`, uppercase names, or missing/misplaced pseudo-headers (RFC 9113 8.2–8.3), and
//! it bounds the header list. What it leaves to the application: a `host` header that
//! disagrees with `:authority` (RFC 9113 8.3.1 makes `:authority` win, so a backend reading
//! `host` would see another host than our router), the URI and body limits, and `Expect`.
//! The connection-specific checks are repeated here so a change to the server that relaxes
//! them cannot open a hole.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Version};

use super::{Limits, Reject};

/// Headers that only make sense on an HTTP/1 connection (RFC 9113 8.2.2).
const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Checks one request that arrived over HTTP/2; HTTP/1 requests were checked when their heads
/// were parsed ([`super::head::parse`]) and pass here untouched.
pub fn check<B>(req: &Request<B>, limits: &Limits) -> Result<(), Reject> {
    if req.version() != Version::HTTP_2 {
        return Ok(());
    }
    let headers = req.headers();
    // One pass over the few names present (standard ones compare as enum tags) finds what the
    // rules below look at, so a request pays a hashed lookup only for headers it has.
    let (mut te, mut host, mut length, mut expect) = (false, false, false, false);
    for name in headers.keys() {
        if CONNECTION_SPECIFIC.contains(name) {
            return Err(Reject::ConnectionHeader);
        }
        te |= name == header::TE;
        host |= name == header::HOST;
        length |= name == header::CONTENT_LENGTH;
        expect |= name == header::EXPECT;
    }
    if te && headers.get_all(header::TE).iter().any(|v| v != "trailers") {
        return Err(Reject::BadTe);
    }
    // No tunnels, as on HTTP/1. Extended CONNECT (RFC 8441, websockets over HTTP/2) cannot
    // arrive: the server never announces SETTINGS_ENABLE_CONNECT_PROTOCOL.
    if req.method() == Method::CONNECT {
        return Err(Reject::ConnectMethod);
    }
    // Every other request carries :scheme and :path; the server folds them into the URI,
    // so a URI without a path-and-query means they were missing.
    if req.uri().path_and_query().is_none() {
        return Err(Reject::BadPseudoHeader);
    }
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_bytes {
        return Err(Reject::UriTooLong);
    }
    if host {
        check_host(req, headers)?;
    }
    if length || expect {
        check_length_and_expect(headers, limits)?;
    }
    Ok(())
}

fn check_host<B>(req: &Request<B>, headers: &HeaderMap) -> Result<(), Reject> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err(Reject::DuplicateHost);
    }
    match req.uri().authority() {
        Some(authority)
            if authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes()) =>
        {
            Ok(())
        }
        Some(_) => Err(Reject::HostMismatch),
        // No :authority: `host` is the only one, as in HTTP/1.1.
        None => Ok(()),
    }
}

fn check_length_and_expect(headers: &HeaderMap, limits: &Limits) -> Result<(), Reject> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(length) = lengths.next() {
        let bytes = length.as_bytes();
        if lengths.next().is_some()
            || bytes.is_empty()
            || bytes.len() > 18
            || !bytes.iter().all(u8::is_ascii_digit)
        {
            return Err(Reject::BadContentLength);
        }
        let n = bytes
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if limits.max_body_bytes.is_some_and(|max| n > max) {
            return Err(Reject::BodyTooLarge);
        }
    }
    let mut expects = headers.get_all(header::EXPECT).iter();
    if let Some(expect) = expects.next() {
        if expects.next().is_some() || !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(Reject::UnknownExpectation);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 1024,
            max_uri_bytes: 32,
            max_body_bytes: Some(10),
            first_byte_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
        }
    }

    fn h2(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(uri).version(Version::HTTP_2);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn host_must_match_authority() {
        let l = limits();
        assert_eq!(check(&h2("http://a/x", &[("host", "a")]), &l), Ok(()));
        assert_eq!(check(&h2("http://a/x", &[("host", "A")]), &l), Ok(()));
        assert_eq!(
            check(&h2("http://a/x", &[("host", "b")]), &l),
            Err(Reject::HostMismatch)
        );
        assert_eq!(
            check(&h2("http://a/x", &[("host", "a"), ("host", "a")]), &l),
            Err(Reject::DuplicateHost)
        );
    }

    #[test]
    fn connection_headers_te_limits_and_expect() {
        let l = limits();
        let cases = [
            (
                h2("http://a/", &[("connection", "close")]),
                Reject::ConnectionHeader,
            ),
            (h2("http://a/", &[("te", "gzip")]), Reject::BadTe),
            (
                h2(&format!("http://a/{}", "x".repeat(40)), &[]),
                Reject::UriTooLong,
            ),
            (
                h2("http://a/", &[("content-length", "11")]),
                Reject::BodyTooLarge,
            ),
            (
                h2("http://a/", &[("content-length", "1x")]),
                Reject::BadContentLength,
            ),
            (
                h2("http://a/", &[("expect", "magic")]),
                Reject::UnknownExpectation,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(check(&req, &l), Err(want), "{req:?}");
        }
        assert_eq!(check(&h2("http://a/", &[("te", "trailers")]), &l), Ok(()));
        let h1 = Request::get("/")
            .header("connection", "close")
            .body(())
            .expect("req");
        assert_eq!(check(&h1, &l), Ok(()), "HTTP/1 was checked elsewhere");
    }
}
