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
}

impl ConnView {
    /// The view of a client at `peer` connected to our `port`, over TLS or not.
    ///
    /// Rendered per connection (per session), so without the formatting machinery: the text
    /// `for=<peer>;proto=<proto><port>` is written into one buffer, and the peer, our
    /// `forwarded` element and the port are views of it (one allocation, and each request's
    /// clones of them only count a reference). Re-measure with
    /// `benches/load/breakdown.py --tests close` (`ConnView::new` under header policy).
    pub fn new(peer: IpAddr, port: u16, tls: bool) -> Self {
        let proto = if tls { "https" } else { "http" };
        // Room for the longest: `for="[` 45 bytes of IPv6 `]";proto=https` and 5 digits.
        let mut text = Vec::with_capacity(80);
        text.extend_from_slice(b"for=");
        let peer_at = match peer {
            IpAddr::V4(ip) => {
                let start = text.len();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    push_decimal(&mut text, octet.into());
                }
                start..text.len()
            }
            // RFC 7239 6: an IPv6 address is bracketed, and then quoted (`:` is not a token
            // char).
            IpAddr::V6(ip) => {
                text.extend_from_slice(b"\"[");
                let start = text.len();
                let _ = std::io::Write::write_fmt(&mut text, format_args!("{ip}"));
                let end = text.len();
                text.extend_from_slice(b"]\"");
                start..end
            }
        };
        text.extend_from_slice(b";proto=");
        text.extend_from_slice(proto.as_bytes());
        let forwarded_end = text.len();
        push_decimal(&mut text, port);
        let port_at = forwarded_end..text.len();
        let text = bytes::Bytes::from(text);
        let value = |range: std::ops::Range<usize>, fallback: &'static str| {
            HeaderValue::from_maybe_shared(text.slice(range))
                .unwrap_or(HeaderValue::from_static(fallback))
        };
        Self {
            peer: value(peer_at, "unknown"),
            forwarded: value(0..forwarded_end, "for=unknown"),
            port: value(port_at, "0"),
            proto: HeaderValue::from_static(proto),
        }
    }
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
    if !kept(Watched::XForwardedHost, &X_FORWARDED_HOST, headers) {
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
