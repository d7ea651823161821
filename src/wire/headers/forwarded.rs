//! The forwarding headers (`x-forwarded-*`, `forwarded`, `x-real-ip`) under one
//! `trusted_hops` rule: with no trusted hop nothing the client says about the chain reaches a
//! backend; with N, what the N proxies in front wrote is kept (README "Headers").

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{
    Present, Watched, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PREFIX,
    X_FORWARDED_PROTO, X_REAL_IP,
};

/// What the forwarding headers say about one downstream connection, rendered once when it is
/// accepted so that a request only clones them.
#[derive(Debug, Clone)]
pub struct ConnView {
    /// The peer's address: our `x-forwarded-for` entry and, without trusted hops, `x-real-ip`.
    peer: HeaderValue,
    /// Our `forwarded` element (RFC 7239): `for=<peer>;proto=<http|https>`.
    forwarded: HeaderValue,
    /// The listener's port the client connected to (`x-forwarded-port`).
    port: HeaderValue,
    /// `http` or `https` (`x-forwarded-proto`).
    proto: HeaderValue,
    /// The five fields that depend on the connection alone, as the lines of an HTTP/1.1 head
    /// (see [`forwarding_lines`]).
    lines: bytes::Bytes,
}

/// The names of [`ConnView::lines`], in their order.
const LINE_NAMES: [&str; 5] = [
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-port",
];

impl ConnView {
    /// The view of a client at `peer` connected to our `port`, over TLS or not.
    ///
    /// Rendered per connection (per session), so without the formatting machinery: the lines
    /// `x-forwarded-for: <peer>`, `x-real-ip: <peer>`, `forwarded: for=<peer>;proto=<proto>`,
    /// `x-forwarded-proto: <proto>` and `x-forwarded-port: <port>` are written into one
    /// buffer, and the values are views of it (one allocation, and each request's clones of
    /// them only count a reference). Re-measure with `benches/load/breakdown.py --tests close`
    /// (`ConnView::new` under header policy).
    pub fn new(peer: IpAddr, port: u16, tls: bool) -> Self {
        let proto = if tls { "https" } else { "http" };
        // Room for the longest: 45 bytes of IPv6 three times, the names, quotes and brackets.
        let mut text = Vec::with_capacity(256);
        let line = |text: &mut Vec<u8>, name: &str| {
            text.extend_from_slice(name.as_bytes());
            text.extend_from_slice(b": ");
        };
        let peer_text = match peer {
            IpAddr::V4(ip) => {
                let mut out = Vec::with_capacity(15);
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    push_decimal(&mut out, octet.into());
                }
                out
            }
            IpAddr::V6(ip) => {
                let mut out = Vec::with_capacity(45);
                let _ = std::io::Write::write_fmt(&mut out, format_args!("{ip}"));
                out
            }
        };
        let value = |text: &mut Vec<u8>, name: &str, write: &dyn Fn(&mut Vec<u8>)| {
            line(text, name);
            let start = text.len();
            write(text);
            let end = text.len();
            text.extend_from_slice(b"\r\n");
            start..end
        };
        let peer_at = value(&mut text, LINE_NAMES[0], &|t| {
            t.extend_from_slice(&peer_text)
        });
        value(&mut text, LINE_NAMES[1], &|t| {
            t.extend_from_slice(&peer_text)
        });
        let forwarded_at = value(&mut text, LINE_NAMES[2], &|t| {
            t.extend_from_slice(b"for=");
            match peer {
                IpAddr::V4(_) => t.extend_from_slice(&peer_text),
                // RFC 7239 6: an IPv6 address is bracketed, and then quoted (`:` is not a
                // token char).
                IpAddr::V6(_) => {
                    t.extend_from_slice(b"\"[");
                    t.extend_from_slice(&peer_text);
                    t.extend_from_slice(b"]\"");
                }
            }
            t.extend_from_slice(b";proto=");
            t.extend_from_slice(proto.as_bytes());
        });
        value(&mut text, LINE_NAMES[3], &|t| {
            t.extend_from_slice(proto.as_bytes());
        });
        let port_at = value(&mut text, LINE_NAMES[4], &|t| push_decimal(t, port));
        let text = bytes::Bytes::from(text);
        let slice = |range: std::ops::Range<usize>, fallback: &'static str| {
            HeaderValue::from_maybe_shared(text.slice(range))
                .unwrap_or(HeaderValue::from_static(fallback))
        };
        Self {
            peer: slice(peer_at, "unknown"),
            forwarded: slice(forwarded_at, "for=unknown"),
            port: slice(port_at, "0"),
            proto: HeaderValue::from_static(proto),
            lines: text,
        }
    }
}

/// The connection's own `x-forwarded-for`, `x-real-ip`, `forwarded`, `x-forwarded-proto` and
/// `x-forwarded-port`, as the lines of an HTTP/1.1 head, when they are exactly what
/// [`set_forwarded`] would set: the head (`present`, its scan) carries none of the five, so
/// there is no client entry to keep or replace, whatever `trusted_hops` says. An HTTP/1.1
/// upstream head then gets these lines written after its fields instead of five inserts into
/// the header map (each hashes its name and probes the map, the largest part of the
/// request head's cost); [`set_forwarded_host`] does the rest. Re-measure with
/// `benches/load/breakdown.py` (`HeaderMap::try_insert2` under "http types").
pub fn forwarding_lines(present: Present, view: &ConnView) -> Option<&[u8]> {
    let carried = [
        Watched::XForwardedFor,
        Watched::XRealIp,
        Watched::Forwarded,
        Watched::XForwardedProto,
        Watched::XForwardedPort,
    ]
    .into_iter()
    .any(|watched| present.has(watched));
    (!carried).then_some(&view.lines[..])
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is a digit.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(digit);
    }
}

/// Sets the forwarding headers from the proxy's own view, under one rule (README "Headers"):
///
/// - `x-forwarded-for` and `forwarded` are lists: the last `trusted_hops` entries (elements)
///   the client sent, then ours; `x-real-ip` is the first address of that `x-forwarded-for`
///   (the client as the outermost trusted hop saw it, or the peer).
/// - `x-forwarded-proto`, `-host`, `-port` and `-prefix` are single values: with
///   `trusted_hops > 0` the peer is a proxy we trust and what it sent is kept; otherwise (or
///   when it sent none) ours: the connection's scheme, `host` (the request's host; `None`
///   removes the header), the listener's port, and no prefix (the proxy never sets one).
///
/// `present` is `headers` scanned.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    present: Present,
    view: &ConnView,
    trusted_hops: u32,
    host: Option<&HeaderValue>,
) {
    let trusted = trusted_hops > 0;
    let real_ip = if trusted && present.has(Watched::XForwardedFor) {
        set_chain(headers, &X_FORWARDED_FOR, &view.peer, trusted_hops)
            .and_then(|first| HeaderValue::from_str(first.trim()).ok())
            .unwrap_or_else(|| view.peer.clone())
    } else {
        // The usual case, no trusted client entries: the connection's value as it is.
        headers.insert(X_FORWARDED_FOR.clone(), view.peer.clone());
        view.peer.clone()
    };
    headers.insert(X_REAL_IP.clone(), real_ip);
    if trusted && present.has(Watched::Forwarded) {
        set_chain(headers, &header::FORWARDED, &view.forwarded, trusted_hops);
    } else {
        headers.insert(header::FORWARDED, view.forwarded.clone());
    }
    // A trusted hop's single values stand; a client's are replaced by ours or removed.
    let kept = |watched: Watched, name: &HeaderName, headers: &HeaderMap| {
        trusted && present.has(watched) && headers.contains_key(name)
    };
    if !kept(Watched::XForwardedProto, &X_FORWARDED_PROTO, headers) {
        headers.insert(X_FORWARDED_PROTO.clone(), view.proto.clone());
    }
    if !kept(Watched::XForwardedPort, &X_FORWARDED_PORT, headers) {
        headers.insert(X_FORWARDED_PORT.clone(), view.port.clone());
    }
    set_forwarded_host(headers, present, trusted_hops, host);
}

/// The part of [`set_forwarded`] that depends on the request, not only on the connection:
/// `x-forwarded-host` (the request's `host`, or a trusted hop's) and `x-forwarded-prefix`
/// (removed unless from a trusted hop). With [`forwarding_lines`], it is all of it that goes
/// into the header map.
pub fn set_forwarded_host(
    headers: &mut HeaderMap,
    present: Present,
    trusted_hops: u32,
    host: Option<&HeaderValue>,
) {
    let trusted = trusted_hops > 0;
    let kept =
        trusted && present.has(Watched::XForwardedHost) && headers.contains_key(&X_FORWARDED_HOST);
    if !kept {
        match host {
            Some(value) => {
                headers.insert(X_FORWARDED_HOST.clone(), value.clone());
            }
            None if present.has(Watched::XForwardedHost) => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    if !trusted && present.has(Watched::XForwardedPrefix) {
        headers.remove(&X_FORWARDED_PREFIX);
    }
}

/// The client address a listener's trusted proxies vouch for: with `trusted_hops = N > 0`,
/// the N-th `x-forwarded-for` entry from the right (each trusted proxy appended the address it
/// saw, so entries left of it are the client's own words). `None` without trusted hops, with
/// fewer entries, or when that entry is not an address (`ip`, `ip:port`, `[v6]`, `[v6]:port`):
/// callers then use the connection's peer, as they do for a listener with no trusted hop.
pub fn trusted_client(headers: &HeaderMap, trusted_hops: u32) -> Option<IpAddr> {
    if trusted_hops == 0 {
        return None;
    }
    // Two passes over the header lines (count, then take) rather than a Vec per request.
    let entries = || {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
    };
    let index = entries().count().checked_sub(trusted_hops as usize)?;
    let entry = std::str::from_utf8(entries().nth(index)?).ok()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// `name` as the last `trusted_hops` comma-separated entries the client sent, then `ours`.
/// Returns the first entry kept (`None`: none were, and `name` is `ours` alone).
fn set_chain(
    headers: &mut HeaderMap,
    name: &HeaderName,
    ours: &HeaderValue,
    trusted_hops: u32,
) -> Option<String> {
    let client_entries: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let keep = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
    let trusted = &client_entries[client_entries.len().saturating_sub(keep)..];
    let Some(&first) = trusted.first() else {
        headers.insert(name.clone(), ours.clone());
        return None;
    };
    let first = first.to_owned();
    let mut chain = trusted.join(", ");
    chain.push_str(", ");
    chain.push_str(ours.to_str().unwrap_or_default());
    // Entries that came as text joined with ours are text; the fallback only satisfies the type.
    let value = HeaderValue::from_str(&chain).unwrap_or_else(|_| ours.clone());
    headers.insert(name.clone(), value);
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trusted_client_is_the_entry_the_last_trusted_proxy_appended() {
        let mut h = HeaderMap::new();
        assert_eq!(trusted_client(&h, 1), None, "no header");
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 10.0.0.1"),
        );
        assert_eq!(trusted_client(&h, 0), None, "no trusted hop: the peer");
        assert_eq!(trusted_client(&h, 1), "10.0.0.1".parse().ok());
        assert_eq!(trusted_client(&h, 2), "6.6.6.6".parse().ok());
        assert_eq!(trusted_client(&h, 3), None, "fewer entries than hops");
        // A second header line continues the list.
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(trusted_client(&h, 1), "2001:db8::1".parse().ok());
        assert_eq!(trusted_client(&h, 2), "10.0.0.1".parse().ok());
        let mut h = HeaderMap::new();
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("10.0.0.9:8080, unknown, [::1]"),
        );
        assert_eq!(trusted_client(&h, 3), "10.0.0.9".parse().ok());
        assert_eq!(trusted_client(&h, 2), None, "not an address");
        assert_eq!(trusted_client(&h, 1), "::1".parse().ok());
    }

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
    fn forwarded_for_keeps_only_trusted_client_entries() {
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let present = Present::scan(&h);
        set_forwarded(
            &mut h,
            present,
            &ConnView::new(peer, 8080, false),
            0,
            Some(&HeaderValue::from_static("api.example.com")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["forwarded"], "for=10.0.0.9;proto=http");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let present = Present::scan(&h);
        set_forwarded(&mut h, present, &ConnView::new(peer, 443, true), 2, None);
        assert_eq!(h["x-forwarded-for"], "2.2.2.2, 3.3.3.3, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "2.2.2.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(!h.contains_key("x-forwarded-host"));
        // IPv6 peers are bracketed and quoted in `forwarded` (RFC 7239 6).
        let v6 = ConnView::new("2001:db8::1".parse().expect("ip"), 443, true);
        assert_eq!(v6.forwarded, "for=\"[2001:db8::1]\";proto=https");
        assert_eq!(v6.peer, "2001:db8::1");
        assert_eq!(v6.port, "443");
        let mapped = ConnView::new("::ffff:192.0.2.255".parse().expect("ip"), 65535, false);
        assert_eq!(mapped.peer, "::ffff:192.0.2.255");
        assert_eq!(mapped.port, "65535");
    }

    #[test]
    fn the_lines_are_what_set_forwarded_inserts() {
        for (ip, port, tls) in [
            ("10.0.0.9", 8080, false),
            ("0.0.0.0", 0, true),
            ("2001:db8::1", 443, true),
            ("::ffff:192.0.2.255", 65535, false),
        ] {
            let view = ConnView::new(ip.parse().expect("ip"), port, tls);
            for trusted_hops in [0, 2] {
                let mut h = map(&[("accept", "*/*")]);
                let present = Present::scan(&h);
                let lines = forwarding_lines(present, &view).expect("no client fields");
                set_forwarded(&mut h, present, &view, trusted_hops, None);
                let mut rendered = Vec::new();
                for name in LINE_NAMES {
                    let mut values = h.get_all(name).iter();
                    let value = values.next().expect(name);
                    assert!(values.next().is_none(), "{name}");
                    rendered.extend_from_slice(name.as_bytes());
                    rendered.extend_from_slice(b": ");
                    rendered.extend_from_slice(value.as_bytes());
                    rendered.extend_from_slice(b"\r\n");
                }
                assert_eq!(
                    String::from_utf8_lossy(lines),
                    String::from_utf8_lossy(&rendered),
                    "{ip}"
                );
                // Besides the five, the map path sets nothing the lines path leaves out.
                let mut rest = map(&[("accept", "*/*")]);
                set_forwarded_host(&mut rest, present, trusted_hops, None);
                assert_eq!(h.len(), rest.len() + LINE_NAMES.len());
            }
        }
        // Any of the five from the client: the map path (its entries to keep or replace).
        let view = ConnView::new("10.0.0.9".parse().expect("ip"), 80, false);
        for name in LINE_NAMES {
            let h = map(&[(name, "1.2.3.4")]);
            assert!(
                forwarding_lines(Present::scan(&h), &view).is_none(),
                "{name}"
            );
        }
        let h = map(&[("x-forwarded-host", "a"), ("x-forwarded-prefix", "/p")]);
        assert!(forwarding_lines(Present::scan(&h), &view).is_some());
    }

    #[test]
    fn the_view_renders_like_display() {
        for (ip, port) in [
            ("0.0.0.0", 0),
            ("255.255.255.255", 65535),
            ("10.0.0.9", 80),
            ("127.0.0.1", 8080),
            ("192.168.100.7", 9),
        ] {
            let addr: IpAddr = ip.parse().expect("ip");
            let view = ConnView::new(addr, port, false);
            assert_eq!(view.peer, ip);
            assert_eq!(view.forwarded, format!("for={ip};proto=http").as_str());
            assert_eq!(view.port, port.to_string().as_str());
            assert_eq!(view.proto, "http");
        }
    }
}
