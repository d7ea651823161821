//! The strict HTTP/1 request-head check (RFC 9112 sections 2–7, read as a proxy must).
//!
//! Lenient parsing is how smuggling happens: when two parsers disagree on where a body ends,
//! the rest of it is read as a second request by one of them. So every ambiguity RFC 9112
//! allows a server to "handle" is a 400 here — conflicting lengths, any transfer coding but a
//! single `chunked`, obs-fold, bare CR/LF, a target whose authority disagrees with `Host` —
//! and only heads that pass reach hyper.

use std::mem::MaybeUninit;

use http::uri::Authority;
use http::Uri;

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
    /// `Upgrade` + `Connection: upgrade`, or `CONNECT`: after the response, the connection
    /// may stop being HTTP.
    pub upgrade: bool,
    /// `Connection: close`, or HTTP/1.0 without `keep-alive`: nothing after this request.
    pub close: bool,
}

/// Checks the head at the start of `buf`: `Ok(None)` while it is incomplete (and still within
/// the limits), the parsed [`Head`] once complete, or why it is refused.
pub fn check(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Reject> {
    // RFC 9112 2.2: empty lines before the request line are ignored (some clients send a CRLF
    // after a POST body). They still count towards the head's size.
    let mut lead = 0;
    while buf[lead..].starts_with(b"\r\n") {
        lead += 2;
    }
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
    let head = &buf[..end];
    if head.len() > limits.max_header_bytes {
        return Err(oversize(&head[lead..], limits));
    }
    check_header_lines(&head[lead..])?;

    // Uninitialised slots: httparse writes only those it fills, so a request does not pay
    // for zeroing 100 of them (3.2 KiB) first.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_COUNT];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut fields) {
        Ok(httparse::Status::Complete(_)) => {}
        // `end` is the end of the head, so httparse cannot ask for more.
        Ok(httparse::Status::Partial) => return Err(Reject::MalformedRequestLine),
        Err(e) => return Err(map_parse_error(e)),
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Reject::MalformedRequestLine);
    };
    if target.len() > limits.max_uri_bytes {
        return Err(Reject::UriTooLong);
    }
    let fields = Fields::collect(request.headers)?;
    check_target_and_host(method, target, minor, &fields)?;
    let framing = framing(minor, &fields, limits)?;
    check_expect(&fields)?;
    let upgrade = method == "CONNECT" || (fields.upgrade && fields.connection_has("upgrade"));
    let close =
        fields.connection_has("close") || (minor == 0 && !fields.connection_has("keep-alive"));
    Ok(Some(Head {
        len: end,
        framing,
        upgrade,
        close,
    }))
}

/// Finds the end of the head (after its empty line), rejecting a LF without CR or a CR
/// without LF on the way. `Ok(None)`: no end yet.
///
/// `memchr2` jumps from line break to line break (vector compares over the bytes between),
/// where a byte-by-byte loop cost several instructions per byte of every head.
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
    let authority = if method == "CONNECT" {
        target
            .parse::<Authority>()
            .map_err(|_| Reject::InvalidTarget)?
    } else {
        // Absolute form (RFC 9112 3.2.2): the target's authority wins over Host downstream of
        // us, so the two must agree or the backend and our router would see different hosts.
        let uri: Uri = target.parse().map_err(|_| Reject::InvalidTarget)?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        match uri.authority() {
            Some(a) if scheme_ok => a.clone(),
            _ => return Err(Reject::InvalidTarget),
        }
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
#[path = "head_tests.rs"]
mod tests;
