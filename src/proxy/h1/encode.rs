//! The response head as our HTTP/1 server writes it, with hyper's server framing rules
//! (`proto/h1/role.rs`, `Server::encode`; `conn.rs`, `enforce_version`), so clients see the
//! same bytes as before: the status line in the request's version, header names as stored
//! (lower case), `content-length` from the body's exact size or the header, else
//! `transfer-encoding: chunked` (HTTP/1.1) or a close-delimited body (HTTP/1.0), no body for
//! HEAD, 1xx, 204 and 304, `date` when the response has none, and `connection: close` on the
//! last response of an HTTP/1.1 connection.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header;
use http::{response, Method, StatusCode};
use http_body::SizeHint;

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0: no body at all, whatever the body holds).
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the connection closes (HTTP/1.0 without a known length).
    Close,
}

/// What the response head depends on from its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    /// The request was `HEAD`.
    pub head_request: bool,
    /// The request's minor version (0: HTTP/1.0).
    pub minor: u8,
}

impl Exchange {
    pub(crate) fn new(method: &Method, minor: u8) -> Self {
        Self {
            head_request: method == Method::HEAD,
            minor,
        }
    }
}

/// Appends the head of the response (`parts`, whose body is described by `body`: `None` when
/// it has already ended) to `dst`; returns the body's framing. `keep_alive` comes in as what
/// the request and the server allow and goes out as what the response allows too.
pub(crate) fn head(
    dst: &mut Vec<u8>,
    parts: &mut response::Parts,
    body: Option<SizeHint>,
    exchange: Exchange,
    keep_alive: &mut bool,
) -> Framing {
    let status = parts.status;
    let http10 = exchange.minor == 0;
    if http10 {
        dst.extend_from_slice(b"HTTP/1.0 ");
        status_line_rest(dst, status);
    } else if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        status_line_rest(dst, status);
    }

    // One pass over the fields: written as they are, except the framing fields, which the
    // body decides (a declared length is kept for when the body's size is not known).
    let mut declared = None;
    let mut says_close = false;
    let mut says_keep_alive = false;
    let mut has_date = false;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            declared = Some(value);
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONNECTION {
            says_close |= lists(value, b"close");
            says_keep_alive |= lists(value, b"keep-alive");
        } else if name == header::DATE {
            has_date = true;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    // hyper's `fix_keep_alive`: an HTTP/1.0 connection stays open only if the response says
    // `keep-alive`, and ours never do (the handler strips hop-by-hop fields).
    if says_close || (http10 && !says_keep_alive) {
        *keep_alive = false;
    }

    let can_have_length = !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED;
    let can_have_body = can_have_length && !exchange.head_request;
    let can_chunk = can_have_body && !http10;
    let mut framing = match body.as_ref().map(SizeHint::exact) {
        Some(Some(n)) => {
            if can_have_length {
                length_line(dst, n);
            }
            Framing::Length(n)
        }
        Some(None) => match declared.and_then(parse_length) {
            Some(n) => {
                length_line(dst, n);
                Framing::Length(n)
            }
            None if can_chunk => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None => Framing::Close,
        },
        None => {
            if exchange.head_request && can_have_length {
                // A HEAD response keeps the length a GET would have had.
                if let Some(value) = declared {
                    dst.extend_from_slice(b"content-length: ");
                    dst.extend_from_slice(value.as_bytes());
                    dst.extend_from_slice(b"\r\n");
                }
            } else if can_have_body {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
    };
    if !can_have_body {
        framing = Framing::Length(0);
    }
    if framing == Framing::Close {
        *keep_alive = false;
    }
    // A 101's connection goes on as the tunnel: it says `upgrade`, never `close`.
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if !*keep_alive && !http10 && !switching && !says_close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        dst.extend_from_slice(b"date: ");
        date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    framing
}

/// `CODE REASON\r\n` (a reason is always written: many parsers expect one).
fn status_line_rest(dst: &mut Vec<u8>, status: StatusCode) {
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

fn length_line(dst: &mut Vec<u8>, n: u64) {
    dst.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[at..]);
    dst.extend_from_slice(b"\r\n");
}

fn parse_length(value: &http::HeaderValue) -> Option<u64> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Whether a `connection` field value lists `token`.
fn lists(value: &http::HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The chunk-size line of a chunk of `len` bytes (`len` in hex, CRLF) into `dst`.
pub(crate) fn chunk_size(dst: &mut Vec<u8>, len: usize) {
    dst.extend_from_slice(format_args_hex(len).as_slice());
    dst.extend_from_slice(b"\r\n");
}

/// `n` in lower-case hex, without allocating.
fn format_args_hex(mut n: usize) -> HexBuf {
    let mut buf = [0u8; 16];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    HexBuf { buf, at }
}

struct HexBuf {
    buf: [u8; 16],
    at: usize,
}

impl HexBuf {
    fn as_slice(&self) -> &[u8] {
        &self.buf[self.at..]
    }
}

/// The current time as an IMF-fixdate, formatted at most once a second per thread (hyper's
/// `CachedDate` does the same).
fn date(dst: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                dst.extend_from_slice(text.as_bytes());
                return;
            }
        }
        dst.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    fn encode(
        response: Response<()>,
        body: Option<SizeHint>,
        method: Method,
        minor: u8,
    ) -> (String, Framing, bool) {
        let (mut parts, ()) = response.into_parts();
        let mut dst = Vec::new();
        let mut keep_alive = true;
        let framing = head(
            &mut dst,
            &mut parts,
            body,
            Exchange::new(&method, minor),
            &mut keep_alive,
        );
        (String::from_utf8(dst).expect("ascii"), framing, keep_alive)
    }

    #[test]
    fn framing_follows_the_body_and_the_request() {
        let (text, framing, ka) = encode(
            Response::new(()),
            Some(SizeHint::with_exact(5)),
            Method::GET,
            1,
        );
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\ndate: ") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        assert_eq!((framing, ka), (Framing::Length(5), true));

        let (text, framing, _) = encode(Response::new(()), Some(SizeHint::new()), Method::GET, 1);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(framing, Framing::Chunked);

        let (text, framing, ka) = encode(Response::new(()), Some(SizeHint::new()), Method::GET, 0);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(!text.contains("chunked"), "{text}");
        assert_eq!((framing, ka), (Framing::Close, false));

        let (text, framing, _) = encode(Response::new(()), None, Method::GET, 1);
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        assert_eq!(framing, Framing::Length(0));

        let mut head_response = Response::new(());
        head_response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        let (text, framing, _) = encode(head_response, None, Method::HEAD, 1);
        assert!(text.contains("content-length: 42\r\n"), "{text}");
        assert_eq!(framing, Framing::Length(0));

        let mut not_modified = Response::new(());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        let (text, framing, _) = encode(not_modified, None, Method::GET, 1);
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Framing::Length(0));

        let mut declared = Response::new(());
        declared
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        let (text, framing, _) = encode(declared, Some(SizeHint::new()), Method::GET, 1);
        assert!(text.contains("content-length: 7\r\n"), "{text}");
        assert_eq!(framing, Framing::Length(7));
    }

    #[test]
    fn the_last_response_says_close() {
        let (mut parts, ()) = Response::new(()).into_parts();
        let mut dst = Vec::new();
        let mut keep_alive = false;
        head(
            &mut dst,
            &mut parts,
            None,
            Exchange::new(&Method::GET, 1),
            &mut keep_alive,
        );
        let text = String::from_utf8(dst).expect("ascii");
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    }

    #[test]
    fn a_101_says_upgrade_only() {
        let mut switching = Response::new(());
        *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        switching
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let (text, framing, _) = encode(switching, None, Method::GET, 1);
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("close") && !text.contains("content-length"),
            "{text}"
        );
        assert_eq!(framing, Framing::Length(0));
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        for (n, want) in [(0, "0"), (10, "a"), (255, "ff"), (4096, "1000")] {
            let mut dst = Vec::new();
            chunk_size(&mut dst, n);
            assert_eq!(dst, format!("{want}\r\n").as_bytes());
        }
    }
}
