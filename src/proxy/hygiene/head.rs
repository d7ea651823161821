//! The strict HTTP/1 request-head check (RFC 9112 sections 2–7, read as a proxy must).
//!
//! Lenient parsing is how smuggling happens: when two parsers disagree on where a body ends,
//! the rest of it is read as a second request by one of them. So every ambiguity RFC 9112
//! allows a server to "handle" is a 400 here — conflicting lengths, any transfer coding but a
//! single `chunked`, obs-fold, bare CR/LF, a target whose authority disagrees with `Host` —
//! and only heads that pass become requests ([`parse`] builds the request from the same pass).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Uri, Version};

use super::{Limits, Reject, MAX_HEADER_COUNT};

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, leading empty lines and the final empty line included.
    pub len: usize,
    /// Where its body ends.
    pub framing: Framing,
    /// `Upgrade` + `Connection: upgrade`: after the response, the connection may stop being
    /// HTTP.
    pub upgrade: bool,
    /// `Connection: close`, or HTTP/1.0 without `keep-alive`: nothing after this request.
    pub close: bool,
    /// `Expect: 100-continue` (the only expectation the check lets through).
    pub expect_continue: bool,
    /// The minor version: `HTTP/1.0` or `HTTP/1.1`.
    pub minor: u8,
}

/// Checks the complete head `bytes` (as [`locate`] found it) and builds the request it
/// carries, in one pass: the fields of the `http::Request` are slices of `bytes` (no copy), taken
/// from the same parse the checks ran on. `headers` is an empty map to fill (the server passes
/// its previous response's, so a request costs no new map). The downstream HTTP/1 server's
/// parser (`proxy::h1`, through `GuardedIo::poll_head`).
pub fn parse(
    bytes: &Bytes,
    limits: &Limits,
    headers: HeaderMap,
) -> Result<(Head, Request<()>), Reject> {
    let head: &[u8] = bytes;
    let end = head.len();
    let lead = leading_empty_lines(head);
    check_header_lines(&head[lead..])?;

    // Uninitialised slots: httparse writes only those it fills, so a request does not pay
    // for zeroing all `MAX_HEADER_COUNT` of them first.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_COUNT];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut fields) {
        Ok(httparse::Status::Complete(_)) => {}
        // `end` is the end of the head, so httparse cannot ask for more.
        Ok(httparse::Status::Partial) => return Err(Reject::MalformedRequestLine),
        Err(e) => return Err(request_line_error(&head[lead..]).unwrap_or(map_parse_error(e))),
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Reject::MalformedRequestLine);
    };
    // No tunnels (yet): refused before anything else is judged, whatever its target.
    if method == "CONNECT" {
        return Err(Reject::ConnectMethod);
    }
    if target.len() > limits.max_uri_bytes {
        return Err(Reject::UriTooLong);
    }
    let fields = Fields::collect(request.headers)?;
    check_target_and_host(method, target, minor, &fields)?;
    let framing = framing(minor, &fields, limits)?;
    check_expect(&fields)?;
    let upgrade = fields.upgrade && fields.connection_has("upgrade");
    let close =
        fields.connection_has("close") || (minor == 0 && !fields.connection_has("keep-alive"));
    let head = Head {
        len: end,
        framing,
        upgrade,
        close,
        expect_continue: fields.expect.is_some(),
        minor,
    };
    let built = build_request(bytes, method, target, minor, request.headers, headers)?;
    Ok((head, built))
}

/// Where the head at the start of `buf` ends (after its empty line): `Ok(None)` while it is
/// incomplete and still within the limits.
pub fn locate(buf: &[u8], limits: &Limits) -> Result<Option<usize>, Reject> {
    let lead = leading_empty_lines(buf);
    let Some(end) = scan_line_breaks(buf, lead)? else {
        if buf.len() > limits.max_header_bytes {
            return Err(oversize(&buf[lead..], limits));
        }
        if !buf[lead..].contains(&b'\n') && request_target_len(&buf[lead..]) > limits.max_uri_bytes
        {
            return Err(Reject::UriTooLong);
        }
        return Ok(None);
    };
    if end > limits.max_header_bytes {
        return Err(oversize(&buf[lead..end], limits));
    }
    Ok(Some(end))
}

/// RFC 9112 2.2: empty lines before the request line are ignored (some clients send a CRLF
/// after a POST body). They still count towards the head's size.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut lead = 0;
    while buf[lead..].starts_with(b"\r\n") {
        lead += 2;
    }
    lead
}

/// The `http::Request` of a head that passed every check; names, values and the target are
/// slices of `bytes`, which holds every slice httparse returned.
fn build_request(
    bytes: &Bytes,
    method: &str,
    target: &str,
    minor: u8,
    fields: &[httparse::Header<'_>],
    mut headers: HeaderMap,
) -> Result<Request<()>, Reject> {
    let mut request = Request::new(());
    *request.method_mut() =
        Method::from_bytes(method.as_bytes()).map_err(|_| Reject::MalformedRequestLine)?;
    let target = shared(bytes, target.as_bytes()).ok_or(Reject::InvalidTarget)?;
    *request.uri_mut() = Uri::from_maybe_shared(target).map_err(|_| Reject::InvalidTarget)?;
    *request.version_mut() = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    headers.clear();
    // Room for the fields the request path adds before the request goes upstream
    // (`x-request-id`, `traceparent`, the `x-forwarded-*` set, `via`, route rules): a map that
    // grows rehashes every field, which cost more than the spare room (re-check with
    // `benches/load/breakdown.py`, "http types" row).
    headers.reserve(fields.len() + FIELDS_ADDED);
    for field in fields {
        let name = crate::wire::headers::field_name(field.name.as_bytes())
            .map_err(|_| Reject::InvalidHeaderName)?;
        let value = shared(bytes, field.value).ok_or(Reject::InvalidHeaderValue)?;
        let value =
            HeaderValue::from_maybe_shared(value).map_err(|_| Reject::InvalidHeaderValue)?;
        headers.append(name, value);
    }
    *request.headers_mut() = headers;
    Ok(request)
}

/// Header fields the request path may add to a request (see `build_request`).
const FIELDS_ADDED: usize = 12;

/// `part` (a slice of `bytes`' own memory) as a `Bytes` sharing it; `None` if it is not one
/// (it always is: httparse only returns slices of what it parsed).
fn shared(bytes: &Bytes, part: &[u8]) -> Option<Bytes> {
    let start = (part.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= bytes.len()).then(|| bytes.slice(start..end))
}

/// Finds the end of the head (after its empty line), rejecting a LF without CR or a CR
/// without LF on the way. `Ok(None)`: no end yet.
///
/// `memchr2` jumps from line break to line break (vector compares over the bytes between), where a
/// byte-by-byte loop cost several instructions per byte of every head (re-check with
/// `benches/load/run.sh --instructions --baseline OLD_BINARY`; `head_tests` keeps the byte loop as
/// the reference the fast scans must agree with).
fn scan_line_breaks(buf: &[u8], from: usize) -> Result<Option<usize>, Reject> {
    let mut line_start = from;
    let mut at = from;
    while let Some(found) = memchr::memchr2(b'\r', b'\n', &buf[at..]) {
        let mut lf = at + found;
        if buf[lf] == b'\r' {
            match buf.get(lf + 1) {
                Some(b'\n') => lf += 1,
                // A CR at the very end: its LF has not arrived yet.
                None => return Ok(None),
                Some(_) => return Err(Reject::BareLineBreak),
            }
        } else if lf == 0 || buf[lf - 1] != b'\r' {
            return Err(Reject::BareLineBreak);
        }
        if lf + 1 - line_start == 2 {
            // An empty line: the head ends after it.
            return Ok(Some(lf + 1));
        }
        line_start = lf + 1;
        at = lf + 1;
    }
    Ok(None)
}

/// 414 when the request line alone is too long, else 431.
fn oversize(head: &[u8], limits: &Limits) -> Reject {
    if request_target_len(head) > limits.max_uri_bytes {
        Reject::UriTooLong
    } else {
        Reject::HeaderTooLarge
    }
}

/// Length of the (possibly incomplete) target on the request line at the start of `head`.
fn request_target_len(head: &[u8]) -> usize {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(start) = line.iter().position(|&b| b == b' ') else {
        return 0;
    };
    let rest = &line[start + 1..];
    rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())
}

/// Line-level rules httparse would report only as a generic error: obs-fold and whitespace
/// before the colon get their own reasons. `head` is complete (it ends with its empty line).
fn check_header_lines(head: &[u8]) -> Result<(), Reject> {
    let mut breaks = memchr::memchr_iter(b'\n', head);
    // The request line is httparse's to check.
    let Some(first) = breaks.next() else {
        return Ok(());
    };
    let mut start = first + 1;
    for end in breaks {
        let line = &head[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(Reject::ObsFold);
        }
        // The first colon must come before any space or tab.
        match memchr::memchr3(b':', b' ', b'\t', line) {
            Some(i) if line[i] == b':' => {}
            Some(i) if line[i..].contains(&b':') => return Err(Reject::SpaceBeforeColon),
            _ => return Err(Reject::InvalidHeaderName),
        }
    }
    Ok(())
}

/// Why the request line at the start of `head` is refused, when its version token is the
/// reason; `None` when the version is `HTTP/1.0` or `HTTP/1.1` and the fault is elsewhere.
/// httparse reports a version followed by anything but CRLF (`HTTP/1.10`, `HTTP/1.1 `) as a
/// line-break error, and line breaks were already checked, so its error names the wrong fault.
/// Only called for a head httparse refused, so valid requests never pay for it.
fn request_line_error(head: &[u8]) -> Option<Reject> {
    let line_end = memchr::memchr(b'\r', head).unwrap_or(head.len());
    let mut parts = head[..line_end].splitn(3, |&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Some(Reject::MalformedRequestLine);
    };
    if method.is_empty() || target.is_empty() {
        return Some(Reject::MalformedRequestLine);
    }
    let Some(version) = parts.next() else {
        // `GET /` alone: an HTTP/0.9 simple request.
        return Some(Reject::UnsupportedVersion);
    };
    match version {
        b"HTTP/1.0" | b"HTTP/1.1" => None,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some(Reject::UnsupportedVersion)
        }
        _ if version.starts_with(b"HTTP/") => Some(Reject::BadVersion),
        // A space inside the target pushes part of it into the version's place.
        _ if version.contains(&b' ') => Some(Reject::MalformedRequestLine),
        _ => Some(Reject::BadVersion),
    }
}

fn map_parse_error(e: httparse::Error) -> Reject {
    match e {
        httparse::Error::HeaderName => Reject::InvalidHeaderName,
        httparse::Error::HeaderValue => Reject::InvalidHeaderValue,
        httparse::Error::NewLine => Reject::BareLineBreak,
        httparse::Error::TooManyHeaders => Reject::TooManyHeaders,
        httparse::Error::Version => Reject::UnsupportedVersion,
        httparse::Error::Token | httparse::Error::Status => Reject::MalformedRequestLine,
    }
}

/// The header fields the checks look at, gathered in one pass.
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a [u8]>,
    content_length: Option<&'a [u8]>,
    transfer_encoding: Option<&'a [u8]>,
    expect: Option<&'a [u8]>,
    connection: Vec<&'a [u8]>,
    upgrade: bool,
}

impl<'a> Fields<'a> {
    fn collect(headers: &[httparse::Header<'a>]) -> Result<Self, Reject> {
        let mut f = Fields::default();
        for h in headers {
            let value = trim(h.value);
            let name = h.name;
            // A second Host, Content-Length, Transfer-Encoding or Expect line is refused
            // outright: even identical repeats are how parsers start to disagree.
            let slot = if name.eq_ignore_ascii_case("host") {
                (&mut f.host, Reject::DuplicateHost)
            } else if name.eq_ignore_ascii_case("content-length") {
                (&mut f.content_length, Reject::BadContentLength)
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                (&mut f.transfer_encoding, Reject::BadTransferEncoding)
            } else if name.eq_ignore_ascii_case("expect") {
                (&mut f.expect, Reject::UnknownExpectation)
            } else {
                if name.eq_ignore_ascii_case("connection") {
                    f.connection.push(value);
                } else if name.eq_ignore_ascii_case("upgrade") {
                    f.upgrade = true;
                }
                continue;
            };
            if slot.0.replace(value).is_some() {
                return Err(slot.1);
            }
        }
        Ok(f)
    }

    fn connection_has(&self, token: &str) -> bool {
        self.connection.iter().any(|v| {
            v.split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

fn check_target_and_host(
    method: &str,
    target: &str,
    minor: u8,
    fields: &Fields<'_>,
) -> Result<(), Reject> {
    if target.is_empty()
        || target
            .bytes()
            .any(|b| !(0x21..0x7f).contains(&b) || b == b'#')
    {
        return Err(Reject::InvalidTarget);
    }
    if target.starts_with('/') {
        // Origin form: the Host is only validated, never compared, so the usual name[:port]
        // needs no parsed (allocated) `Authority`.
        return match fields.host {
            Some(raw) if plain_host(raw) => Ok(()),
            Some(raw) => parse_host(raw).map(drop),
            None if minor == 1 => Err(Reject::MissingHost),
            None => Ok(()),
        };
    }
    let host = match fields.host {
        Some(raw) => Some(parse_host(raw)?),
        None if minor == 1 => return Err(Reject::MissingHost),
        None => None,
    };
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err(Reject::InvalidTarget)
        };
    }
    // Absolute form (RFC 9112 3.2.2): the target's authority wins over Host downstream of us,
    // so the two must agree or the backend and our router would see different hosts.
    let uri: Uri = target.parse().map_err(|_| Reject::InvalidTarget)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority = match uri.authority() {
        Some(a) if scheme_ok => a.clone(),
        _ => return Err(Reject::InvalidTarget),
    };
    if authority.as_str().contains('@') {
        return Err(Reject::InvalidTarget);
    }
    match host {
        Some(Some(host)) if same_authority(&host, &authority) => Ok(()),
        // HTTP/1.0 may leave Host out; the target's authority is then the only one.
        None => Ok(()),
        _ => Err(Reject::HostMismatch),
    }
}

/// `Some(authority)`, or `None` for the empty Host RFC 9112 3.2 allows.
fn parse_host(raw: &[u8]) -> Result<Option<Authority>, Reject> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.contains(&b'@') {
        return Err(Reject::InvalidHost);
    }
    Authority::try_from(raw)
        .map(Some)
        .map_err(|_| Reject::InvalidHost)
}

/// A Host of the plainest shape, `name` or `name:port` with letters, digits, `.`, `-` and a
/// port of 1–5 digits: a strict subset of what [`parse_host`] accepts, checked without
/// building an `Authority`. Anything else takes the full parse.
fn plain_host(raw: &[u8]) -> bool {
    let (name, port) = match raw.iter().position(|&b| b == b':') {
        Some(colon) => (&raw[..colon], Some(&raw[colon + 1..])),
        None => (raw, None),
    };
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

/// Host names compare case-insensitively; ports must be equal (a missing port is not
/// assumed to be 80: both sides must spell it the same).
fn same_authority(a: &Authority, b: &Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host()) && a.port_u16() == b.port_u16()
}

fn framing(minor: u8, fields: &Fields<'_>, limits: &Limits) -> Result<Framing, Reject> {
    let framing = match (fields.transfer_encoding, fields.content_length) {
        (Some(_), Some(_)) => return Err(Reject::TeWithContentLength),
        (Some(_), None) if minor == 0 => return Err(Reject::TeOnHttp10),
        (Some(te), None) if te.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        (Some(_), None) => return Err(Reject::BadTransferEncoding),
        (None, Some(cl)) => Framing::Length(parse_content_length(cl)?),
        (None, None) => Framing::None,
    };
    if let (Framing::Length(n), Some(max)) = (framing, limits.max_body_bytes) {
        if n > max {
            return Err(Reject::BodyTooLarge);
        }
    }
    Ok(framing)
}

/// One run of 1–18 ASCII digits (18 keeps the value below `u64::MAX` without overflow checks
/// and is still an exabyte).
fn parse_content_length(v: &[u8]) -> Result<u64, Reject> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Reject::BadContentLength);
    }
    Ok(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn check_expect(fields: &Fields<'_>) -> Result<(), Reject> {
    match fields.expect {
        Some(v) if !v.eq_ignore_ascii_case(b"100-continue") => Err(Reject::UnknownExpectation),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 1024,
            max_uri_bytes: 64,
            max_body_bytes: Some(100),
            first_byte_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
        }
    }

    /// What the server does with `buf` as its buffered input: `Ok(None)` while the head is
    /// incomplete (and still within the limits), the [`Head`] once complete, or why it is
    /// refused ([`locate`], then [`parse`] on the complete head, as `GuardedIo::poll_head`).
    fn check(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Reject> {
        let Some(end) = locate(buf, limits)? else {
            return Ok(None);
        };
        let bytes = Bytes::copy_from_slice(&buf[..end]);
        parse(&bytes, limits, HeaderMap::new()).map(|(head, _)| Some(head))
    }

    fn run(head: &str) -> Result<Option<Head>, Reject> {
        check(head.as_bytes(), &limits())
    }

    fn reject(head: &str) -> Reject {
        match run(head) {
            Err(r) => r,
            other => panic!("{head:?} was accepted: {other:?}"),
        }
    }

    fn framing_of(head: &str) -> Framing {
        match run(head) {
            Ok(Some(h)) => h.framing,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn plain_requests_pass_with_their_framing() {
        assert_eq!(
            framing_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Framing::None
        );
        assert_eq!(
            framing_of("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing_of("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(framing_of("GET / HTTP/1.0\r\n\r\n"), Framing::None);
        assert_eq!(
            framing_of("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Framing::None
        );
        let head = run("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next")
            .expect("ok")
            .expect("complete");
        assert_eq!(head.len, "GET / HTTP/1.1\r\nHost: a\r\n\r\n".len());
        assert!(!head.close && !head.upgrade);
        assert_eq!(
            framing_of("GET http://a:8080/x HTTP/1.1\r\nHost: A:8080\r\n\r\n"),
            Framing::None
        );
        assert_eq!(
            framing_of(
                "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
            ),
            Framing::Length(1)
        );
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(run("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(run("GET / HTTP/1.1\r"), Ok(None));
        assert_eq!(run(""), Ok(None));
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", Reject::TeWithContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", Reject::BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Reject::BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Reject::BadTransferEncoding),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Reject::BadTransferEncoding),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Reject::TeOnHttp10),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", Reject::BadContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", Reject::BadContentLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", Reject::BadContentLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", Reject::ObsFold),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Reject::SpaceBeforeColon),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", Reject::InvalidHeaderValue),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", Reject::BareLineBreak),
            ("GET / HTTP/1.1\nHost: a\n\n", Reject::BareLineBreak),
            ("GET / HTTP/1.1\r\nX(A): 1\r\nHost: a\r\n\r\n", Reject::InvalidHeaderName),
            ("GET / HTTP/1.1\r\n\r\n", Reject::MissingHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Reject::DuplicateHost),
            ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Reject::InvalidHost),
            ("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", Reject::HostMismatch),
            ("GET http://a:81/ HTTP/1.1\r\nHost: a\r\n\r\n", Reject::HostMismatch),
            ("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", Reject::InvalidTarget),
            ("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", Reject::MalformedRequestLine),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Reject::InvalidTarget),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Reject::UnsupportedVersion),
            ("GET / HTTP/3.0\r\nHost: a\r\n\r\n", Reject::UnsupportedVersion),
            ("GET /\r\nHost: a\r\n\r\n", Reject::UnsupportedVersion),
            ("GET / HTTP/1.10\r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("GET / HTTP/1\r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("GET / http/1.1\r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("GET / FOO\r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Reject::MalformedRequestLine),
            ("\r\nGET / HTTP/1.10\r\nHost: a\r\n\r\n", Reject::BadVersion),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Reject::ConnectMethod),
            ("CONNECT / HTTP/1.0\r\n\r\n", Reject::ConnectMethod),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Reject::MalformedRequestLine),
            ("POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", Reject::UnknownExpectation),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", Reject::BodyTooLarge),
        ];
        for (head, want) in cases {
            assert_eq!(run(head), Err(want), "{head:?}");
        }
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
        assert_eq!(reject(&long_target), Reject::UriTooLong);
        // Detected before the line is even complete.
        assert_eq!(
            reject(&format!("GET /{}", "a".repeat(100))),
            Reject::UriTooLong
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(2000)
        );
        assert_eq!(reject(&big), Reject::HeaderTooLarge);
        assert_eq!(reject(&big[..1500]), Reject::HeaderTooLarge);
        let many: String = (0..=MAX_HEADER_COUNT)
            .map(|i| format!("x{i}: 1\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let mut roomy = limits();
        roomy.max_header_bytes = 64 * 1024;
        assert_eq!(check(many.as_bytes(), &roomy), Err(Reject::TooManyHeaders));
    }

    #[test]
    fn upgrade_and_close_are_noticed() {
        let ws = run("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(ws.upgrade);
        let close = run("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(close.close);
        let ten = run("GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(ten.close);
    }

    #[test]
    fn plain_host_fast_path_accepts_only_what_the_full_parse_accepts() {
        let plain = [
            "a",
            "example.com",
            "127.0.0.1:18280",
            "my-svc.ns.local:8080",
            "A:1",
        ];
        for host in plain {
            assert!(
                plain_host(host.as_bytes()),
                "{host} should take the fast path"
            );
            assert!(matches!(parse_host(host.as_bytes()), Ok(Some(_))), "{host}");
        }
        // Not plain: these go to the full parse, which decides (some pass, some are refused).
        let other = [
            "", "[::1]:80", "a:", "a:123456", "a:b", ":80", "u@a", "a b", "a_b", "a%20",
        ];
        for host in other {
            assert!(
                !plain_host(host.as_bytes()),
                "{host:?} must take the full parse"
            );
        }
        // The whole check still refuses a bad Host on an origin-form target, fast path or not.
        assert_eq!(
            reject("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Reject::InvalidHost
        );
        assert_eq!(
            reject("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
            Reject::InvalidHost
        );
        assert!(run("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").is_ok());
    }

    #[test]
    fn parse_builds_the_request_it_checked() {
        let bytes = Bytes::from_static(
            b"\r\nPOST http://a:8080/p?q=1 HTTP/1.1\r\nHost: a:8080\r\nX-A:  v \r\nx-a: w\r\nContent-Length: 3\r\n\r\n",
        );
        let (head, request) = parse(&bytes, &limits(), HeaderMap::new()).expect("accepted");
        assert_eq!(head.len, bytes.len());
        assert_eq!(head.framing, Framing::Length(3));
        assert_eq!(head.minor, 1);
        assert!(!head.expect_continue);
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://a:8080/p?q=1");
        assert_eq!(request.version(), Version::HTTP_11);
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["v", "w"]);
        assert_eq!(request.headers()["host"], "a:8080");
        let ten = Bytes::from_static(b"OPTIONS * HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        let (head, request) = parse(&ten, &limits(), HeaderMap::new()).expect("accepted");
        assert!(head.close && head.expect_continue);
        assert_eq!(request.version(), Version::HTTP_10);
        assert_eq!(request.uri(), "*");
        assert_eq!(
            parse(
                &Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
                &limits(),
                HeaderMap::new()
            )
            .map(|_| ()),
            Err(Reject::MissingHost)
        );
    }

    /// The byte-by-byte scans `memchr` replaced, kept as the reference the fast ones must agree
    /// with on any input.
    mod reference {
        use super::Reject;

        pub fn scan_line_breaks(buf: &[u8], from: usize) -> Result<Option<usize>, Reject> {
            let mut line_start = from;
            for i in from..buf.len() {
                match buf[i] {
                    b'\r' => match buf.get(i + 1) {
                        Some(b'\n') | None => {}
                        Some(_) => return Err(Reject::BareLineBreak),
                    },
                    b'\n' => {
                        if i == 0 || buf[i - 1] != b'\r' {
                            return Err(Reject::BareLineBreak);
                        }
                        if i + 1 - line_start == 2 {
                            return Ok(Some(i + 1));
                        }
                        line_start = i + 1;
                    }
                    _ => {}
                }
            }
            Ok(None)
        }

        pub fn check_header_lines(head: &[u8]) -> Result<(), Reject> {
            for line in head.split(|&b| b == b'\n').skip(1) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    break;
                }
                if matches!(line[0], b' ' | b'\t') {
                    return Err(Reject::ObsFold);
                }
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    return Err(Reject::InvalidHeaderName);
                };
                if line[..colon].iter().any(|&b| matches!(b, b' ' | b'\t')) {
                    return Err(Reject::SpaceBeforeColon);
                }
            }
            Ok(())
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// On any input, the head `locate` finds and `parse` accepts is exactly the bytes
        /// `locate` found, and its request carries no more fields than the head has lines.
        #[test]
        fn an_accepted_head_is_what_locate_found(
            buf in proptest::collection::vec(
                proptest::sample::select(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1Transfer-Encoding: chunked:\t*?#".to_vec()),
                0..120,
            ),
        ) {
            let limits = limits();
            if let Ok(Some(end)) = locate(&buf, &limits) {
                let bytes = Bytes::copy_from_slice(&buf[..end]);
                if let Ok((head, request)) = parse(&bytes, &limits, HeaderMap::new()) {
                    proptest::prop_assert_eq!(head.len, end);
                    let lines = buf[..end].windows(2).filter(|w| w == b"\r\n").count();
                    proptest::prop_assert!(request.headers().len() < lines);
                }
            }
        }

        /// Bytes drawn mostly from the ones the scans act on, so line breaks, folds and colons
        /// land everywhere, including at the edges of the buffer.
        #[test]
        fn memchr_scans_agree_with_the_byte_loops(
            buf in proptest::collection::vec(
                proptest::sample::select(b"\r\n\r\n: \tab".to_vec()),
                0..64,
            ),
            from in 0usize..4,
        ) {
            let from = from.min(buf.len());
            proptest::prop_assert_eq!(
                scan_line_breaks(&buf, from),
                reference::scan_line_breaks(&buf, from)
            );
            // check_header_lines runs on complete heads: whatever ends in an empty line.
            let mut head = buf.clone();
            head.extend_from_slice(b"\r\n\r\n");
            proptest::prop_assert_eq!(
                check_header_lines(&head),
                reference::check_header_lines(&head)
            );
        }
    }
}
