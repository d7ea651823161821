//! Header rewriting at the proxy boundary (README "Headers"): hop-by-hop headers stripped both
//! ways, `x-forwarded-*`, `forwarded` and `x-real-ip` set (module `forwarded`), `x-request-id`
//! kept (if safe) or made, `traceparent` kept or made, `via` added both ways.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

mod forwarded;

pub use forwarded::{
    forwarding_lines, set_forwarded, set_forwarded_host, trusted_client, ConnView,
};

/// RFC 9110 §5.6.2 `tchar`, what a token is made of (methods, field names, cache directives):
/// the one definition for the parsers that read tokens byte by byte.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Headers that describe one connection, never the message (RFC 9110 7.6.1, plus the legacy
/// `keep-alive` and `proxy-connection`), in [`Watched`]'s order: `HOP_BY_HOP[i]` is the name
/// of the variant whose value is `i`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Declares [`Watched`] from one list of variants and names: the enum, `ALL`, `name` and
/// `of` cannot disagree. `of` is a `match` on the name, which compiles to a jump on its length
/// and compares of known length inlined. The earlier candidate table called `memcmp` for each
/// compare and cost more instructions per scan; re-check with
/// `benches/load/run.sh --instructions --baseline OLD_BINARY` (h2c row).
macro_rules! watched {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A header the request path reads, removes or replaces. [`Present::scan`] notes which
        /// of them a message carries in one pass, so that the path looks up only those: a
        /// lookup by name hashes the name and probes the map, far dearer than the scan's
        /// `match`, and most requests carry none of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Watched {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Watched {
            /// Every variant, in order.
            const ALL: &[Watched] = &[$(Watched::$variant,)*];

            /// The header's (lowercase) name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Watched::$variant => $name,)*
                }
            }

            /// The watched header named `name` (lowercase, as `HeaderName` keeps it).
            fn of(name: &str) -> Option<Watched> {
                match name {
                    $($name => Some(Watched::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

watched! {
    /// `connection` (hop-by-hop; the first seven variants are [`HOP_BY_HOP`]'s order).
    Connection => "connection",
    /// `keep-alive` (hop-by-hop).
    KeepAlive => "keep-alive",
    /// `proxy-connection` (hop-by-hop).
    ProxyConnection => "proxy-connection",
    /// `te` (hop-by-hop; `te: trailers` is kept for HTTP/2 backends).
    Te => "te",
    /// `trailer` (hop-by-hop).
    Trailer => "trailer",
    /// `transfer-encoding` (hop-by-hop).
    TransferEncoding => "transfer-encoding",
    /// `upgrade` (hop-by-hop, kept for an accepted upgrade).
    Upgrade => "upgrade",
    /// `expect`: the proxy answers `100-continue` itself.
    Expect => "expect",
    /// `content-type`: tells gRPC requests apart.
    ContentType => "content-type",
    /// `x-request-id`: kept when the client sent one.
    XRequestId => "x-request-id",
    /// `traceparent`: continued when the client sent a valid one.
    Traceparent => "traceparent",
    /// `tracestate`: dropped when there is no valid `traceparent`.
    Tracestate => "tracestate",
    /// `x-forwarded-for`: its trusted entries are kept.
    XForwardedFor => "x-forwarded-for",
    /// `x-forwarded-host`: replaced or removed, or kept from a trusted hop.
    XForwardedHost => "x-forwarded-host",
    /// `x-forwarded-proto`: replaced, or kept from a trusted hop.
    XForwardedProto => "x-forwarded-proto",
    /// `x-forwarded-port`: replaced, or kept from a trusted hop.
    XForwardedPort => "x-forwarded-port",
    /// `x-forwarded-prefix`: removed, or kept from a trusted hop.
    XForwardedPrefix => "x-forwarded-prefix",
    /// `forwarded` (RFC 7239): its trusted elements are kept.
    Forwarded => "forwarded",
    /// `x-real-ip`: always replaced.
    XRealIp => "x-real-ip",
    /// `x-forwarded-client-cert`: never taken from the client.
    XForwardedClientCert => "x-forwarded-client-cert",
    /// `grpc-timeout`: bounds the exchange like the route's `timeout`.
    GrpcTimeout => "grpc-timeout",
    /// `via`: ours is appended to the client's, or is the only one.
    Via => "via",
}

/// Which [`Watched`] headers a header map held when it was scanned. Taken where a stage
/// begins and used before that stage adds any of them; a stale "present" costs one lookup
/// that finds nothing, so only additions must come after the checks that rely on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u32);

impl Present {
    /// One pass over the names in `headers`, each looked up by [`Watched::of`].
    pub fn scan(headers: &HeaderMap) -> Present {
        let mut bits = 0;
        for name in headers.keys() {
            if let Some(watched) = Watched::of(name.as_str()) {
                bits |= 1 << watched as u32;
            }
        }
        Present(bits)
    }

    /// Whether the scanned map held `header`.
    pub fn has(self, header: Watched) -> bool {
        self.0 & (1 << header as u32) != 0
    }
}

/// `x-request-id`: correlates our access log, the backend's and the client's.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The name of a field as a parsed head spells it: [`HeaderName::from_bytes`], except that the
/// non-standard names the proxy itself sends on every request or response (`x-request-id`,
/// `traceparent`) and the forwarding ones it reads come as clones of statics. `from_bytes`
/// returns standard names without allocating but copies every other name into an allocation
/// of its own (freed with the map). Through a sidecar pair the inbound sidecar's request head
/// and the outbound's response head always carry the other sidecar's `x-request-id` (and
/// `traceparent` on the request). Lowercase only, as HTTP/2 requires and our HTTP/1.1 client
/// writes; a name in another case takes `from_bytes`, which lowercases it. Re-measure with
/// callgrind on a sidecar (`Bytes::copy_from_slice` under `HeaderName::from_bytes`).
pub fn field_name(name: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    // Only names starting `x` or `t` go through the match: standard names skip it at one
    // compare (their lengths would otherwise meet the match's compares).
    if let [b'x' | b't', ..] = name {
        let known = match name {
            b"x-request-id" => Some(&X_REQUEST_ID),
            b"traceparent" => Some(&TRACEPARENT),
            b"tracestate" => Some(&TRACESTATE),
            b"x-forwarded-for" => Some(&X_FORWARDED_FOR),
            b"x-forwarded-proto" => Some(&X_FORWARDED_PROTO),
            b"x-forwarded-host" => Some(&X_FORWARDED_HOST),
            b"x-forwarded-port" => Some(&X_FORWARDED_PORT),
            b"x-real-ip" => Some(&X_REAL_IP),
            _ => None,
        };
        if let Some(known) = known {
            return Ok(known.clone());
        }
    }
    HeaderName::from_bytes(name)
}

/// What we add to a response's `via` (RFC 9110 7.6.3: protocol version and a pseudonym).
/// The entries are statics: `HeaderValue::from_static` checks its bytes each time it runs
/// outside a const context, where a static's is checked once, at compile time, and a clone of
/// it is a pointer copy.
static VIA_ENTRY: HeaderValue = HeaderValue::from_static("1.1 switchyard");
/// Our `via` entry on a request the client sent with HTTP/1.0.
static VIA_ENTRY_10: HeaderValue = HeaderValue::from_static("1.0 switchyard");
/// Our `via` entry on a request the client sent with HTTP/2.
static VIA_ENTRY_2: HeaderValue = HeaderValue::from_static("2 switchyard");

/// Longest client `x-request-id` kept: room for any UUID, ULID or trace-style id, short enough
/// that a log line stays a line.
const MAX_REQUEST_ID: usize = 128;

/// Headers the proxy itself sets or relies on. A `Connection` header naming one of them must
/// not make us drop it: `Connection: x-forwarded-for` would otherwise erase the trusted part of
/// the chain, `Connection: x-request-id` the correlation id, `Connection: host` the host.
const PROTECTED: [&str; 12] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "x-request-id",
    "traceparent",
    "tracestate",
    "via",
];

/// Removes hop-by-hop headers, including every header the `Connection` header names (except
/// [`PROTECTED`] ones), and `expect`: the proxy answers `100-continue` itself (hyper sends it
/// when the body is first read, i.e. once the upstream request is on its way). `present` is
/// `headers` scanned: only the names there are hashed and removed, and most requests carry
/// none, most responses only `Connection: keep-alive`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, present: Present) {
    // `Connection`'s usual tokens (`keep-alive`, `close`, `upgrade`) name headers removed
    // below anyway; only other tokens need collecting first.
    if present.has(Watched::Connection) && connection_names_others(headers) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .filter(|name| !PROTECTED.contains(&name.as_str()))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, &watched) in HOP_BY_HOP.iter().zip(Watched::ALL) {
        if present.has(watched) {
            headers.remove(name);
        }
    }
    if present.has(Watched::Expect) {
        headers.remove(header::EXPECT);
    }
}

/// The trimmed tokens of every `Connection` header line (lines that are not text are skipped).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Whether `Connection` names a header beyond the hop-by-hop ones removed anyway.
fn connection_names_others(headers: &HeaderMap) -> bool {
    // The usual single value as nginx and most clients spell it, without splitting tokens.
    let mut values = headers.get_all(header::CONNECTION).iter();
    if let (Some(value), None) = (values.next(), values.next()) {
        if value == "keep-alive" || value == "close" {
            return false;
        }
    }
    connection_tokens(headers).any(|token| {
        !token.eq_ignore_ascii_case("close")
            && !HOP_BY_HOP
                .iter()
                .any(|h| token.eq_ignore_ascii_case(h.as_str()))
    })
}

/// Keeps the client's `x-request-id` when it is one line and [`is_acceptable_request_id`], else
/// makes a random 128-bit hex one (replacing the client's); returns it so the response can echo
/// it. `present` is `headers` scanned.
pub fn ensure_request_id(headers: &mut HeaderMap, present: Present) -> HeaderValue {
    if present.has(Watched::XRequestId) {
        // Two lines are two ids: the backend might log the one we did not check.
        let mut lines = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(id), None) = (lines.next(), lines.next()) {
            if is_acceptable_request_id(id.as_bytes()) {
                return id.clone();
            }
        }
    }
    let mut text = [0u8; 32];
    hex_into(&mut text, fastrand::u128(..));
    // An owned `Bytes`: one allocation, and the clones for the response (and the access log)
    // only count references. A copied slice would be allocated again on its first clone.
    let mut id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or(HeaderValue::from_static("0"));
    // A value seen once: HTTP/2 sends it as a never-indexed literal instead of pushing it into
    // the HPACK table, where it would evict the headers that do repeat (`via`, the backend's
    // `server` and `content-type`). HTTP/1 ignores the flag.
    id.set_sensitive(true);
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// Whether a client's `x-request-id` is kept: 1 to [`MAX_REQUEST_ID`] bytes of
/// `A-Z a-z 0-9 . _ : -`. The id lands in every log line, the backend's logs and the response;
/// spaces, quotes, `=` or control bytes there could forge fields in a log a tool parses.
fn is_acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Keeps a client `traceparent`, or starts a trace (W3C Trace Context, version 00, sampled).
/// `present` is `headers` scanned, and must be current for `traceparent`: the scan alone says
/// it is there (no lookup by name). Nothing between the upstream head's scan and this call
/// removes it: it is not hop-by-hop, and `Connection` cannot name it ([`PROTECTED`]).
pub fn ensure_traceparent(headers: &mut HeaderMap, present: Present) {
    if present.has(Watched::Traceparent) {
        return;
    }
    // All-zero trace or span ids are invalid in the spec; `| 1` avoids them.
    let trace = fastrand::u128(..) | 1;
    let span = fastrand::u64(..) | 1;
    headers.insert(TRACEPARENT.clone(), traceparent(trace, span, 1));
}

/// A version-00 `traceparent` value: "00-" trace (32 hex) "-" span (16 hex) "-" flags (2 hex),
/// written in place (no `format!` per request).
pub(crate) fn traceparent(trace_id: u128, span_id: u64, flags: u8) -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut text[3..35], trace_id);
    hex_into(&mut text[36..52], u128::from(span_id));
    hex_into(&mut text[53..55], u128::from(flags));
    // Hex digits and dashes are always a valid value; the fallback only satisfies the type.
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-00",
    ))
}

/// Appends our entry to a response's `via`.
pub fn add_via(headers: &mut HeaderMap) {
    append_via(headers, &VIA_ENTRY);
}

/// Appends our entry to the `via` of a request we forward (RFC 9110 7.6.3: a proxy MUST, so
/// that a chain of proxies can tell a loop), with the protocol the client used: `1.0`, `1.1`
/// or `2`, and the pseudonym the responses carry.
pub fn add_request_via(headers: &mut HeaderMap, version: http::Version) {
    let entry = match version {
        http::Version::HTTP_10 => &VIA_ENTRY_10,
        http::Version::HTTP_2 => &VIA_ENTRY_2,
        _ => &VIA_ENTRY,
    };
    append_via(headers, entry);
}

/// Our `via` entry for a request the client sent with `version`, as a line of an HTTP/1.1
/// head: what [`add_request_via`] sets when the request has no `via`.
pub fn request_via_line(version: http::Version) -> &'static [u8] {
    match version {
        http::Version::HTTP_10 => b"via: 1.0 switchyard\r\n",
        http::Version::HTTP_2 => b"via: 2 switchyard\r\n",
        _ => b"via: 1.1 switchyard\r\n",
    }
}

/// Appends `entry` to `via`. The entry API looks the name up once where a `get` and an
/// `insert` looked it up twice (no measurable difference: `via` is a standard name, cheap to
/// hash).
fn append_via(headers: &mut HeaderMap, entry: &HeaderValue) {
    match headers.entry(header::VIA) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(entry.clone());
        }
        header::Entry::Occupied(mut occupied) => {
            // Every line, in order (a list may arrive split over several), then ours; `insert`
            // replaces them all with the one joined value. Lines that are not text are dropped.
            // Built in one allocation of the exact size and handed to the value without a
            // copy: through a sidecar pair every request and response arrives with the other
            // sidecar's `via`, so this runs per message there (it was a growing `String`, then
            // `from_str`'s copy, ~1k instructions per request on the inbound sidecar).
            let ours = entry.as_bytes();
            let lines = || {
                occupied
                    .iter()
                    .filter(|v| v.to_str().is_ok() && !v.is_empty())
            };
            let len = lines().map(|v| v.len() + 2).sum::<usize>() + ours.len();
            let mut joined = Vec::with_capacity(len);
            for existing in lines() {
                joined.extend_from_slice(existing.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ours);
            // Text lines joined with our text entry are a valid value; the fallback only
            // satisfies the type.
            let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
                .unwrap_or_else(|_| entry.clone());
            occupied.insert(value);
        }
    }
}

/// Writes the low `out.len() * 4` bits of `n` as lowercase hex, zero-padded, into `out` (the
/// request path's ids without a `format!` allocation each). `out.len()` is even, at most 32.
fn hex_into(out: &mut [u8], n: u128) {
    // Two digits per byte from a table: half the steps of a loop per digit, and no 128-bit
    // shift per step. It runs for 41 bytes per request (x-request-id and traceparent).
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        pairs
    };
    let bytes = n.to_be_bytes();
    // The low `out.len() / 2` bytes, as the callers' even widths (2, 16, 32 digits) ask.
    let low = &bytes[bytes.len().saturating_sub(out.len() / 2)..];
    for (pair, &byte) in out.chunks_exact_mut(2).zip(low) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn scan_notes_exactly_the_watched_names_present() {
        // Every watched name, however the client spelled it, and nothing else.
        for &watched in Watched::ALL {
            let upper = watched.name().to_ascii_uppercase();
            let h = map(&[(upper.as_str(), "1"), ("x-other", "2"), ("accept", "*/*")]);
            let present = Present::scan(&h);
            for &other in Watched::ALL {
                assert_eq!(
                    present.has(other),
                    other == watched,
                    "{watched:?} / {other:?}"
                );
            }
        }
        assert_eq!(Present::scan(&map(&[("host", "a")])), Present::default());
        // The lookup finds every variant, and only by its own name.
        for &watched in Watched::ALL {
            assert_eq!(Watched::of(watched.name()), Some(watched));
        }
        for other in ["x-request-ie", "keep-alivf", "te-", "vib", "content-length"] {
            assert_eq!(Watched::of(other), None, "{other}");
        }
        // The hop-by-hop names are the first variants, in the same order.
        for (name, watched) in HOP_BY_HOP.iter().zip(Watched::ALL) {
            assert_eq!(name.as_str(), watched.name());
        }
    }

    #[test]
    fn field_names_are_from_bytes_names() {
        for name in [
            "x-request-id",
            "traceparent",
            "tracestate",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-real-ip",
            "X-Request-Id",
            "x-request-ie",
            "x-other",
            "te",
            "host",
            "content-type",
            "via",
        ] {
            let ours = field_name(name.as_bytes()).expect(name);
            assert_eq!(ours, HeaderName::from_bytes(name.as_bytes()).expect(name));
            assert_eq!(ours.as_str(), name.to_ascii_lowercase());
        }
        assert!(field_name(b"x bad").is_err());
        assert!(field_name(b"").is_err());
    }

    #[test]
    fn hex_ids_are_zero_padded_lowercase() {
        let mut out = [0u8; 8];
        hex_into(&mut out, 0xab1);
        assert_eq!(&out, b"00000ab1");
        let mut out = [0u8; 32];
        hex_into(&mut out, u128::MAX);
        assert_eq!(&out, &[b'f'; 32]);
        // Every width the callers use, against the standard formatter.
        for _ in 0..1000 {
            let n = fastrand::u128(..);
            let mut out = [0u8; 32];
            hex_into(&mut out, n);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{n:032x}"));
            let mut out = [0u8; 16];
            hex_into(&mut out, n);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                format!("{:016x}", n as u64)
            );
            let mut out = [0u8; 2];
            hex_into(&mut out, n);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                format!("{:02x}", n as u8)
            );
        }
        let mut h = HeaderMap::new();
        {
            let present = Present::scan(&h);
            ensure_traceparent(&mut h, present)
        };
        let parts: Vec<&str> = h["traceparent"]
            .to_str()
            .expect("ascii")
            .split('-')
            .collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_eq!(
            {
                let present = Present::scan(&h);
                ensure_request_id(&mut h, present)
            }
            .len(),
            32
        );
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-sum"),
            ("x-kept", "yes"),
        ]);
        {
            let present = Present::scan(&h);
            strip_hop_by_hop(&mut h, present)
        };
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn usual_connection_tokens_strip_only_what_is_there() {
        let mut h = map(&[
            ("connection", "Keep-Alive, Upgrade"),
            ("upgrade", "websocket"),
            ("content-length", "2"),
            ("server", "nginx"),
        ]);
        assert!(!connection_names_others(&h));
        {
            let present = Present::scan(&h);
            strip_hop_by_hop(&mut h, present)
        };
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("content-length") && h.contains_key("server"));
        let h = map(&[("connection", "keep-alive, x-secret")]);
        assert!(connection_names_others(&h));
        // The single usual value takes the fast path; a second line is still read.
        assert!(!connection_names_others(&map(&[(
            "connection",
            "keep-alive"
        )])));
        assert!(!connection_names_others(&map(&[("connection", "close")])));
        let two = map(&[("connection", "keep-alive"), ("connection", "x-secret")]);
        assert!(connection_names_others(&two));
    }

    #[test]
    fn connection_cannot_name_the_proxys_own_headers_away() {
        let mut h = map(&[
            (
                "connection",
                "x-forwarded-for, x-request-id, traceparent, host, x-gone",
            ),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-request-id", "id"),
            ("traceparent", "00-a-b-01"),
            ("host", "a"),
            ("x-gone", "1"),
            ("expect", "100-continue"),
        ]);
        {
            let present = Present::scan(&h);
            strip_hop_by_hop(&mut h, present)
        };
        for kept in ["x-forwarded-for", "x-request-id", "traceparent", "host"] {
            assert!(h.contains_key(kept), "{kept} dropped: {h:?}");
        }
        assert!(
            !h.contains_key("x-gone") && !h.contains_key("expect"),
            "{h:?}"
        );
        let present = Present::scan(&h);
        set_forwarded(
            &mut h,
            present,
            &ConnView::new("10.0.0.1".parse().expect("ip"), 80, false),
            1,
            Some(&HeaderValue::from_static("a")),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.1");
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(
            {
                let present = Present::scan(&h);
                ensure_request_id(&mut h, present)
            },
            "abc"
        );
        let mut h = HeaderMap::new();
        let id = {
            let present = Present::scan(&h);
            ensure_request_id(&mut h, present)
        };
        assert_eq!(id.len(), 32);
        assert!(id
            .to_str()
            .expect("ascii")
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
        assert_eq!(h["x-request-id"], id);
        assert_ne!(
            ensure_request_id(&mut HeaderMap::new(), Present::default()),
            id
        );
    }

    #[test]
    fn only_a_short_id_of_safe_characters_is_kept() {
        for ok in [
            "req-7",
            "a",
            "0af7651916cd43dd8448eb211c80319c",
            "svc:01HZX.a_b",
        ] {
            assert!(is_acceptable_request_id(ok.as_bytes()), "{ok}");
        }
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        for bad in [
            "",
            "abc status=200 x",
            "a\"b",
            "a b",
            "a=b",
            "a\tb",
            long.as_str(),
        ] {
            assert!(!is_acceptable_request_id(bad.as_bytes()), "{bad:?}");
        }
        assert!(is_acceptable_request_id(
            "a".repeat(MAX_REQUEST_ID).as_bytes()
        ));
        for lines in [
            &[("x-request-id", "abc status=200 x")][..],
            &[("x-request-id", "ok-1"), ("x-request-id", "ok-2")],
        ] {
            let mut h = map(lines);
            let present = Present::scan(&h);
            let id = ensure_request_id(&mut h, present);
            assert_eq!(id.len(), 32, "{lines:?}");
            assert_eq!(h.get_all("x-request-id").iter().collect::<Vec<_>>(), [id]);
        }
    }

    #[test]
    fn via_is_appended() {
        let mut h = map(&[("via", "1.1 outer")]);
        add_request_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h["via"], "1.1 outer, 2 switchyard");
        let mut h = HeaderMap::new();
        add_via(&mut h);
        assert_eq!(h["via"], "1.1 switchyard");
        let mut h = map(&[("via", "1.0 fred")]);
        add_via(&mut h);
        assert_eq!(h["via"], "1.0 fred, 1.1 switchyard");
        // A list split over two lines keeps both, in order, on one line.
        let mut h = map(&[("via", "1.0 fred"), ("via", "1.1 nowhere")]);
        add_via(&mut h);
        let lines: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(lines, ["1.0 fred, 1.1 nowhere, 1.1 switchyard"]);
        // Empty and non-text lines are dropped from the joined value.
        let mut h = map(&[("via", "1.0 fred"), ("via", "")]);
        h.append(
            header::VIA,
            HeaderValue::from_bytes(b"1.1 caf\xe9").expect("obs-text"),
        );
        add_via(&mut h);
        let lines: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(lines, ["1.0 fred, 1.1 switchyard"]);
    }

    #[test]
    fn the_via_line_is_what_add_request_via_sets() {
        for version in [
            http::Version::HTTP_09,
            http::Version::HTTP_10,
            http::Version::HTTP_11,
            http::Version::HTTP_2,
        ] {
            let mut h = HeaderMap::new();
            add_request_via(&mut h, version);
            let line = format!("via: {}\r\n", h["via"].to_str().expect("text"));
            assert_eq!(request_via_line(version), line.as_bytes(), "{version:?}");
        }
    }

    #[test]
    fn traceparent_is_generated_in_w3c_form() {
        let mut h = HeaderMap::new();
        {
            let present = Present::scan(&h);
            ensure_traceparent(&mut h, present)
        };
        let tp = h["traceparent"].to_str().expect("ascii").to_owned();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [2, 32, 16, 2]
        );
        let mut kept = map(&[("traceparent", "00-abc-def-01")]);
        {
            let present = Present::scan(&kept);
            ensure_traceparent(&mut kept, present)
        };
        assert_eq!(kept["traceparent"], "00-abc-def-01");
    }
}
