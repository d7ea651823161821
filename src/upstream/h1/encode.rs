//! The request head and the request body's framing, with the rules hyper's HTTP/1.1 client
//! applied (`proto/h1/role.rs`, `Client::set_length`), so backends see the same bytes:
//!
//! - a body that is already at its end: no body, no Transfer-Encoding (a given Content-Length
//!   stays);
//! - a Transfer-Encoding given: chunked (appended when it is not the last coding), no
//!   Content-Length;
//! - else a valid Content-Length given: that many bytes;
//! - else a body of unknown length: chunked, except for GET, HEAD and CONNECT, which send none;
//! - else the body's exact size: `Content-Length` set to it.

use std::io::Write as _;

use http::header::{CONNECTION, CONTENT_LENGTH, TRAILER, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use super::parse::{content_length, has_token};
use crate::upstream::HeadLines;

/// How the request body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// Exactly this many bytes; 0: the body is not polled at all.
    Length(u64),
    /// Chunked; trailers named in the request's `Trailer` header are sent.
    Chunked { trailers: Vec<HeaderName> },
}

/// Sets the framing headers of `parts` for a body of `body_len` (`None`: already at its end;
/// `Some(None)`: unknown length), then writes the request head to `out`, with `lines` (the
/// fields the request path left out of the map, see `HeadLines`) after the map's fields. Returns the body's framing and whether the request asks to close the
/// connection after it.
///
/// The head's size is summed first and `out` grown once; the pieces are then copied into that
/// room with [`Room::put`], which copies the short ones (most names and values) inline instead
/// of calling `memcpy` per piece. Measured against appending piece by piece: a few dozen
/// instructions less per request, no more (a stack buffer gathering the pieces, tried
/// instead, cost more than it saved). Re-measure with `benches/load/breakdown.py`
/// (`upstream::exchange` and the `memcpy` it calls).
pub(crate) fn encode_head(
    parts: &mut Parts,
    body_len: Option<Option<u64>>,
    lines: &HeadLines<'_>,
    out: &mut Vec<u8>,
) -> (BodyFraming, bool) {
    let framing = set_length(parts, body_len);
    let absolute;
    let target: &[u8] = match parts.uri.path_and_query() {
        Some(target) if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => {
            target.as_str().as_bytes()
        }
        // Absolute or authority form (never made by the proxy for HTTP/1.1, kept for
        // completeness): the URI as it displays.
        _ => {
            absolute = parts.uri.to_string();
            absolute.as_bytes()
        }
    };
    let version: &[u8] = if parts.version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    };
    let method = parts.method.as_str().as_bytes();
    let mut close = parts.version == Version::HTTP_10;
    let mut size = method.len() + 1 + target.len() + version.len() + 2;
    size += lines.conn.len() + lines.via.len();
    if let Some(host) = &lines.forwarded_host {
        size += FORWARDED_HOST.len() + host.len() + 2;
    }
    for (name, value) in &parts.headers {
        if name == CONNECTION {
            close |= has_token(value, "close");
            if parts.version == Version::HTTP_10 && has_token(value, "keep-alive") {
                close = false;
            }
        }
        size += name.as_str().len() + value.len() + 4;
    }
    let start = out.len();
    out.resize(start + size, 0);
    let mut room = Room(&mut out[start..]);
    room.put(method);
    room.put(b" ");
    room.put(target);
    room.put(version);
    for (name, value) in &parts.headers {
        room.put(name.as_str().as_bytes());
        room.put(b": ");
        room.put(value.as_bytes());
        room.put(b"\r\n");
    }
    room.put(lines.conn);
    room.put(lines.via);
    if let Some(host) = &lines.forwarded_host {
        room.put(FORWARDED_HOST);
        room.put(host.as_bytes());
        room.put(b"\r\n");
    }
    room.put(b"\r\n");
    debug_assert!(
        room.0.is_empty(),
        "the head's size was summed from the same pieces"
    );
    (framing, close)
}

/// The start of an `x-forwarded-host` line.
const FORWARDED_HOST: &[u8] = b"x-forwarded-host: ";

/// The part of the output not written yet.
struct Room<'a>(&'a mut [u8]);

impl Room<'_> {
    /// Copies `src` to the front of the room. Pieces under 32 bytes are copied with two
    /// overlapping fixed-size moves, which the compiler turns into a few loads and stores.
    #[inline(always)]
    fn put(&mut self, src: &[u8]) {
        let (dst, rest) = std::mem::take(&mut self.0).split_at_mut(src.len());
        let n = src.len();
        if n >= 32 {
            dst.copy_from_slice(src);
        } else if n >= 16 {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        } else if n >= 8 {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        } else if n >= 4 {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        } else {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        self.0 = rest;
    }
}

fn set_length(parts: &mut Parts, body_len: Option<Option<u64>>) -> BodyFraming {
    let headers = &mut parts.headers;
    let Some(known) = body_len else {
        headers.remove(TRANSFER_ENCODING);
        return BodyFraming::Length(0);
    };
    let existing = if headers.contains_key(CONTENT_LENGTH) {
        content_length(headers).ok()
    } else {
        None
    };
    if parts.version == Version::HTTP_10 {
        // HTTP/1.0 has no chunked coding: without a length there is no body.
        headers.remove(TRANSFER_ENCODING);
        return match (existing, known) {
            (Some(len), _) => BodyFraming::Length(len),
            (None, Some(len)) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
                BodyFraming::Length(len)
            }
            (None, None) => BodyFraming::Length(0),
        };
    }
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked = last
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked {
            let mut value = last.as_bytes().to_vec();
            value.extend_from_slice(b", chunked");
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.remove(TRANSFER_ENCODING);
                headers.insert(TRANSFER_ENCODING, value);
            }
        }
        headers.remove(CONTENT_LENGTH);
        return chunked_with_trailers(headers);
    }
    if let Some(len) = existing {
        return BodyFraming::Length(len);
    }
    match known {
        Some(len) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            BodyFraming::Length(len)
        }
        None if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) => {
            BodyFraming::Length(0)
        }
        None => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            headers.remove(CONTENT_LENGTH);
            chunked_with_trailers(headers)
        }
    }
}

fn chunked_with_trailers(headers: &HeaderMap) -> BodyFraming {
    let trailers = headers
        .get_all(TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    BodyFraming::Chunked { trailers }
}

/// The size line of one chunk of `len` bytes.
pub(crate) fn chunk_head(len: usize, out: &mut Vec<u8>) {
    let _ = write!(out, "{len:X}\r\n");
}

/// The last chunk and the trailer fields the request announced.
pub(crate) fn last_chunk(trailers: Option<&HeaderMap>, allowed: &[HeaderName], out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        for (name, value) in trailers {
            if allowed.contains(name) {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn encode(req: Request<()>, body_len: Option<Option<u64>>) -> (String, BodyFraming, bool) {
        let (mut parts, ()) = req.into_parts();
        let mut out = Vec::new();
        let (framing, close) = encode_head(&mut parts, body_len, &HeadLines::default(), &mut out);
        (String::from_utf8(out).unwrap(), framing, close)
    }

    #[test]
    fn a_get_without_body() {
        let req = Request::get("/a?b=c")
            .header("host", "example")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let (head, framing, close) = encode(req, None);
        assert_eq!(head, "GET /a?b=c HTTP/1.1\r\nhost: example\r\n\r\n");
        assert_eq!((framing, close), (BodyFraming::Length(0), false));
    }

    #[test]
    fn body_framing_follows_hyper() {
        let post = || Request::post("/").header("host", "h");
        let (head, framing, _) = encode(post().body(()).unwrap(), Some(Some(5)));
        assert!(head.contains("content-length: 5\r\n"), "{head}");
        assert_eq!(framing, BodyFraming::Length(5));
        let (head, framing, _) = encode(post().body(()).unwrap(), Some(None));
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert_eq!(framing, BodyFraming::Chunked { trailers: vec![] });
        let (head, framing, _) = encode(
            post().header("content-length", "3").body(()).unwrap(),
            Some(None),
        );
        assert!(head.contains("content-length: 3\r\n"), "{head}");
        assert_eq!(framing, BodyFraming::Length(3));
        let (head, framing, _) = encode(
            post()
                .header("transfer-encoding", "gzip")
                .header("content-length", "3")
                .header("trailer", "x-sum")
                .body(())
                .unwrap(),
            Some(Some(3)),
        );
        assert!(
            head.contains("transfer-encoding: gzip, chunked\r\n"),
            "{head}"
        );
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(
            framing,
            BodyFraming::Chunked {
                trailers: vec![HeaderName::from_static("x-sum")]
            }
        );
        let (_, framing, _) = encode(Request::get("/").body(()).unwrap(), Some(None));
        assert_eq!(framing, BodyFraming::Length(0));
        let (_, _, close) = encode(post().header("connection", "Close").body(()).unwrap(), None);
        assert!(close);
    }

    /// What `encode_head` wrote before it summed sizes and copied short pieces inline (and
    /// before it took `lines`, which follow the map's fields).
    fn reference(parts: &Parts, lines: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(lines);
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any lengths of names, values and targets (each size class of `Room::put`), after
        /// bytes already in the buffer: the head is the plain concatenation.
        #[test]
        fn the_head_is_its_pieces_in_order(
            path in "/[a-z0-9/?=&%.-]{0,80}",
            fields in proptest::collection::vec(("[a-z][a-z0-9-]{0,40}", "[ -~]{0,70}"), 0..12),
            long in proptest::option::of("[a-z]{900,2100}"),
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            lines in "([a-z][a-z0-9-]{0,20}: [!-~]{0,40}\r\n){0,5}",
            via in proptest::prelude::any::<bool>(),
            host in proptest::option::of("[a-z0-9.:-]{1,40}"),
        ) {
            let mut req = Request::get(path.as_str());
            for (name, value) in &fields {
                req = req.header(name.as_str(), value.trim());
            }
            // A long value among short ones: the pieces before, it and after still line up.
            if let Some(long) = &long {
                req = req.header("x-long", long.as_str());
            }
            let (mut parts, ()) = req.body(()).expect("valid request").into_parts();
            let mut out = before.clone();
            let via: &'static [u8] = if via { b"via: 1.1 switchyard\r\n" } else { b"" };
            let head_lines = HeadLines {
                conn: lines.as_bytes(),
                via,
                forwarded_host: host.as_deref().map(|h| HeaderValue::from_str(h).expect("value")),
            };
            encode_head(&mut parts, None, &head_lines, &mut out);
            let mut expected = lines.as_bytes().to_vec();
            expected.extend_from_slice(via);
            if let Some(host) = &host {
                expected.extend_from_slice(format!("x-forwarded-host: {host}\r\n").as_bytes());
            }
            proptest::prop_assert_eq!(&out[..before.len()], &before[..]);
            proptest::prop_assert_eq!(&out[before.len()..], &reference(&parts, &expected)[..]);
        }
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        chunk_head(255, &mut out);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("1"));
        trailers.insert("x-secret", HeaderValue::from_static("2"));
        last_chunk(
            Some(&trailers),
            &[HeaderName::from_static("x-sum")],
            &mut out,
        );
        assert_eq!(out, b"FF\r\n0\r\nx-sum: 1\r\n\r\n");
    }
}
