//! The backend's response head: httparse into an `http::response::Parts`, interim (1xx)
//! responses skipped, and the framing rules of RFC 9112 6.3 with the ones we add (both
//! Transfer-Encoding and Content-Length, a 204 announcing a body: refused).
//!
//! Header values are slices of the head's own buffer (no copy per field); names go through
//! `wire::headers::field_name`, which returns the standard names and the proxy's own
//! (`x-request-id` from a peer sidecar) without allocating.

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use std::mem::MaybeUninit;

use super::decode::Framing;

/// Header fields per response head (hyper's default too); more is a malformed response.
pub(crate) const MAX_HEADERS: usize = 100;
/// Bytes per response head (hyper's default read buffer limit, which bounded heads before).
pub(crate) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// A complete final response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `keep-alive`.
    pub keep_alive: bool,
    /// 101 (or a 2xx to CONNECT): the connection now belongs to the upgrade.
    pub upgrade: bool,
    /// No body may follow (HEAD, 204, 304): bytes that do are a framing error.
    pub bodiless: bool,
}

/// Why a response head was refused; every one is a 502 and a dropped connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ParseError {
    #[error("malformed response head: {0}")]
    Syntax(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid status code")]
    Status,
    #[error("invalid header field")]
    Field,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncoding10,
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingAndLength,
    #[error("204 announcing a body")]
    NoContentWithBody,
}

/// The final response head at the start of `buf`, consumed from it (interim 1xx heads before
/// it too); `None` while the head is incomplete. `method` is the request's. `spare`: a map
/// whose allocation the response's headers take over (the request's, as hyper's client did:
/// it is written by then), cleared first.
pub(crate) fn parse(
    buf: &mut BytesMut,
    method: &Method,
    spare: &mut HeaderMap,
) -> Result<Option<Head>, ParseError> {
    // Bounded: every pass consumes one interim head from the buffer, or returns.
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Offsets into the head of each field's name and value: the head is split off the
        // buffer (and frozen, to share it with the values) only after httparse's borrow ends.
        let mut spans = [[0u32; 4]; MAX_HEADERS];
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ParseError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ParseError::Syntax(e)),
        };
        if len > MAX_HEAD_BYTES {
            return Err(ParseError::TooLarge);
        }
        let code = response.code.ok_or(ParseError::Status)?;
        let status = StatusCode::from_u16(code).map_err(|_| ParseError::Status)?;
        let version = match response.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let reason = response
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| r.as_bytes().to_vec());
        let base = buf.as_ptr() as usize;
        let count = response.headers.len();
        for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            // Offsets below MAX_HEAD_BYTES, checked above: they fit in u32.
            *span = [
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            ];
        }
        let head = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            // 100 Continue, 103 Early Hints, ...: hyper's server cannot relay them, so they are
            // dropped (RFC 8297 2 allows it); the final response follows.
            continue;
        }
        let mut headers = std::mem::take(spare);
        headers.clear();
        headers.reserve(count);
        let (mut te, mut close, mut keep_alive_token) = (false, false, false);
        // The Content-Length fields folded as they are read (`None`: there were none), so the
        // framing needs no second lookup; an invalid one is an error only if the framing uses it.
        let mut length: Option<Result<u64, ParseError>> = None;
        for span in &spans[..count] {
            let [ns, ne, vs, ve] = span.map(|offset| offset as usize);
            let name =
                crate::wire::headers::field_name(&head[ns..ne]).map_err(|_| ParseError::Field)?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| ParseError::Field)?;
            if name == TRANSFER_ENCODING {
                te = true;
            } else if name == CONTENT_LENGTH {
                length = Some(fold_length(length, &value));
            } else if name == CONNECTION {
                let line = value.as_bytes();
                // The usual lines, as nginx and most servers send them: one token that names
                // no header but hop-by-hop ones. The line is hop-by-hop itself and every proxy
                // response loses it (`handler::downstream_head` strips it), so it is not stored:
                // storing it cost an insert here and a lookup and a removal there. Any other
                // line is kept, so that the headers it names are stripped too.
                if line.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                    continue;
                }
                if line.eq_ignore_ascii_case(b"close") {
                    close = true;
                    continue;
                }
                close |= has_token_in(line, "close");
                keep_alive_token |= has_token_in(line, "keep-alive");
            }
            headers.append(name, value);
        }
        let cl = length.is_some();
        let mut keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
        // RFC 9112 6.3: a response with both is a smuggling vector; hyper would silently
        // prefer chunked.
        if te && cl {
            return Err(ParseError::TransferEncodingAndLength);
        }
        if status == StatusCode::NO_CONTENT
            && (te
                || headers
                    .get_all(CONTENT_LENGTH)
                    .iter()
                    .any(|v| v.as_bytes() != b"0"))
        {
            return Err(ParseError::NoContentWithBody);
        }
        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS
            || (method == Method::CONNECT && status.is_success());
        let bodiless = method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if upgrade || bodiless {
            Framing::Length(0)
        } else if te {
            if version == Version::HTTP_10 {
                return Err(ParseError::TransferEncoding10);
            }
            if is_chunked(&headers) {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if cl {
            Framing::Length(length.unwrap_or(Err(ParseError::ContentLength))?)
        } else {
            Framing::Close
        };
        if upgrade || framing == Framing::Close {
            keep_alive = false;
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if let Some(reason) = reason {
            // A reason phrase other than the standard one is relayed as hyper did.
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                response.extensions_mut().insert(reason);
            }
        }
        let (parts, ()) = response.into_parts();
        return Ok(Some(Head {
            parts,
            framing,
            keep_alive,
            upgrade,
            bodiless,
        }));
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub(crate) fn has_token(value: &HeaderValue, token: &str) -> bool {
    has_token_in(value.as_bytes(), token)
}

/// [`has_token`] on a value's bytes.
fn has_token_in(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the last transfer coding is `chunked` (RFC 9112 6.3: otherwise the body runs until
/// the connection closes).
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The Content-Length every field (and every list element) agrees on.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<u64, ParseError> {
    headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .fold(None, |length, value| Some(fold_length(length, value)))
        .unwrap_or(Err(ParseError::ContentLength))
}

/// The Content-Length that the fields before (`length`: `None` for none) and `value` agree on.
/// An error stays an error.
fn fold_length(
    length: Option<Result<u64, ParseError>>,
    value: &HeaderValue,
) -> Result<u64, ParseError> {
    let mut length = match length {
        Some(Err(error)) => return Err(error),
        Some(Ok(n)) => Some(n),
        None => None,
    };
    for part in value.as_bytes().split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            return Err(ParseError::ContentLength);
        }
        // Digits only, and a value that fits in a u64 (as `str::parse::<u64>` of a run of
        // digits, without its UTF-8 check and sign handling).
        let n = part
            .iter()
            .try_fold(0u64, |n, &b| {
                let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
                n.checked_mul(10)?.checked_add(u64::from(digit))
            })
            .ok_or(ParseError::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(ParseError::ContentLength);
        }
        length = Some(n);
    }
    length.ok_or(ParseError::ContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8], method: &Method) -> Result<Option<Head>, ParseError> {
        let mut buf = BytesMut::from(input);
        parse(&mut buf, method, &mut HeaderMap::new())
    }

    #[test]
    fn a_plain_response() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Custom: a b\r\nSet-Cookie: 1\r\nset-cookie: 2\r\n\r\nhello"[..],
        );
        let head = parse(&mut buf, &Method::GET, &mut HeaderMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.parts.status, 200);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive && !head.upgrade && !head.bodiless);
        assert_eq!(head.parts.headers["x-custom"], "a b");
        assert_eq!(head.parts.headers.get_all("set-cookie").iter().count(), 2);
        assert!(head
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..],
        );
        let head = parse(&mut buf, &Method::POST, &mut HeaderMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.parts.status, 204);
        assert!(head.parts.headers.is_empty());
        assert!(head.bodiless);
        assert!(buf.is_empty());
        let mut partial = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        assert!(parse(&mut partial, &Method::GET, &mut HeaderMap::new())
            .unwrap()
            .is_none());
        assert_eq!(&partial[..], b"HTTP/1.1 2");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases: &[(&[u8], Method, Framing, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Method::GET,
                Framing::Close,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Framing::Close,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
                Method::HEAD,
                Framing::Length(0),
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
                Method::GET,
                Framing::Length(0),
                true,
            ),
            (
                b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\nConnection: Close\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                false,
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
                Method::GET,
                Framing::Length(0),
                false,
            ),
        ];
        for (input, method, framing, keep_alive) in cases {
            let head = parse_all(input, method).unwrap().unwrap();
            assert_eq!(head.framing, *framing, "{}", String::from_utf8_lossy(input));
            assert_eq!(
                head.keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
                ParseError::TransferEncodingAndLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                ParseError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                ParseError::ContentLength,
            ),
            (
                b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
                ParseError::NoContentWithBody,
            ),
            (
                b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                ParseError::TransferEncoding10,
            ),
            (b"HTTP/1.1 099 Low\r\n\r\n", ParseError::Status),
        ];
        for (input, error) in cases {
            assert_eq!(
                parse_all(input, &Method::GET).unwrap_err(),
                *error,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(matches!(
            parse_all(b"HTTP/1.1 2x0 OK\r\n\r\n", &Method::GET),
            Err(ParseError::Syntax(_))
        ));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_all(&many, &Method::GET),
            Err(ParseError::Syntax(_))
        ));
        let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(
            parse_all(&huge, &Method::GET).unwrap_err(),
            ParseError::TooLarge
        );
    }

    #[test]
    fn a_custom_reason_is_kept() {
        let head = parse_all(
            b"HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        let reason = head
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), b"Fine");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_all(&input, &Method::GET);
            let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
            prefixed.extend_from_slice(&input);
            let _ = parse_all(&prefixed, &Method::HEAD);
        }

        #[test]
        fn every_prefix_is_incomplete_or_the_same_head(
            extra in proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,20}"), 0..6),
        ) {
            let mut input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
            for (name, value) in &extra {
                input.extend_from_slice(format!("x-{name}: {}\r\n", value.trim()).as_bytes());
            }
            input.extend_from_slice(b"\r\nok");
            let whole = parse_all(&input, &Method::GET).unwrap().unwrap();
            for cut in 0..input.len() - 2 {
                let mut buf = BytesMut::from(&input[..cut]);
                let first = parse(&mut buf, &Method::GET, &mut HeaderMap::new()).unwrap();
                prop_assert!(first.is_none(), "complete at {}", cut);
                buf.extend_from_slice(&input[cut..]);
                let head = parse(&mut buf, &Method::GET, &mut HeaderMap::new()).unwrap().unwrap();
                prop_assert_eq!(&head.parts.headers, &whole.parts.headers);
                prop_assert_eq!(&buf[..], b"ok");
            }
        }
    }
}
