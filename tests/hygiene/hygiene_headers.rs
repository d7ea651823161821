//! Header policy at the boundary: `x-forwarded-for` with `trusted_hops`, and a client's
//! `Connection` header that names the proxy's own headers.

use crate::support::backend::{Backend, Behavior};
use crate::support::hygiene::{config, limits};
use crate::support::launcher::Proxy;
use crate::support::raw_client::raw_request;

#[test]
fn connection_cannot_strip_forwarding_headers_and_trusted_hops_are_kept() {
    let backend = Backend::start(Behavior::Echo);
    let toml = config(&backend, &limits("")).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntrusted_hops = 1\n",
    );
    let proxy = Proxy::start_toml(&toml);
    let resp = raw_request(
        proxy.addr("public"),
        b"GET /h HTTP/1.1\r\nHost: api.example\r\n\
          Connection: x-forwarded-for, x-request-id, traceparent, x-forwarded-host, x-private\r\n\
          X-Forwarded-For: 6.6.6.6, 10.1.2.3\r\nX-Request-Id: req-7\r\n\
          Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
          X-Private: secret\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-request-id"), Some("req-7"));
    let seen = backend.requests();
    let up = &seen[0].headers;
    // One trusted hop: the last client entry stays, the forged first one goes.
    assert_eq!(up["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(up["x-request-id"], "req-7");
    // The trace survives `Connection`: same trace id and flags; the parent is the proxy's own
    // span (W3C trace context), so only the middle field differs.
    let traceparent = up["traceparent"].to_str().expect("ascii");
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-")
            && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    assert_ne!(
        traceparent,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(up["x-forwarded-host"], "api.example");
    assert_eq!(up["x-forwarded-proto"], "http");
    assert!(
        !up.contains_key("x-private"),
        "Connection still strips other names"
    );
    assert!(!up.contains_key("connection"));
}

/// Forwarding headers a client may forge, sent by a client with no trusted hop in front.
const FORGED: &[u8] = b"GET /h HTTP/1.1\r\nHost: api.example\r\n\
    Forwarded: for=6.6.6.6;proto=https;host=evil.example\r\n\
    X-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\n\
    X-Forwarded-Prefix: /admin\r\nX-Forwarded-Proto: https\r\n\
    X-Forwarded-For: 6.6.6.6\r\nVia: 1.0 outer\r\n\r\n";

/// With `trusted_hops = 0` (the default) nothing the client says about the forwarding chain
/// reaches the backend: each header is the proxy's own view or absent. Requests carry `via`.
#[test]
fn forged_forwarding_headers_are_replaced_by_the_proxys_view() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, &limits("")));
    let addr = proxy.addr("public");
    let resp = raw_request(addr, FORGED);
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = backend.requests();
    let up = &seen[0].headers;
    assert_eq!(up["x-forwarded-for"], "127.0.0.1");
    assert_eq!(up["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(up.get_all("forwarded").iter().count(), 1);
    assert_eq!(up["x-real-ip"], "127.0.0.1");
    assert_eq!(up["x-forwarded-host"], "api.example");
    assert_eq!(up["x-forwarded-port"], addr.port().to_string().as_str());
    assert_eq!(up["x-forwarded-proto"], "http");
    assert!(!up.contains_key("x-forwarded-prefix"), "{up:?}");
    // RFC 9110 7.6.3: the proxy adds itself to the request's `via`, after the client's entry.
    assert_eq!(up["via"], "1.0 outer, 1.1 switchyard");
    assert_eq!(resp.header("via"), Some("1.1 switchyard"));
}

/// With one trusted hop the peer is a proxy we trust: its last `forwarded` element and its
/// single-valued headers are kept, as its last `x-forwarded-for` entry is; ours is appended.
#[test]
fn a_trusted_hop_keeps_its_forwarding_headers() {
    let backend = Backend::start(Behavior::Echo);
    let toml = config(&backend, &limits("")).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntrusted_hops = 1\n",
    );
    let proxy = Proxy::start_toml(&toml);
    let resp = raw_request(
        proxy.addr("public"),
        b"GET /h HTTP/1.1\r\nHost: api.example\r\n\
          Forwarded: for=6.6.6.6, for=10.1.2.3;proto=https;host=www.example\r\n\
          X-Forwarded-For: 6.6.6.6, 10.1.2.3\r\nX-Real-IP: 6.6.6.6\r\n\
          X-Forwarded-Host: www.example\r\nX-Forwarded-Port: 443\r\n\
          X-Forwarded-Prefix: /shop\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = backend.requests();
    let up = &seen[0].headers;
    assert_eq!(up["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(
        up["forwarded"],
        "for=10.1.2.3;proto=https;host=www.example, for=127.0.0.1;proto=http"
    );
    // The first trusted address, as `x-forwarded-for` has it; the client's own claim is gone.
    assert_eq!(up["x-real-ip"], "10.1.2.3");
    assert_eq!(up["x-forwarded-host"], "www.example");
    assert_eq!(up["x-forwarded-port"], "443");
    assert_eq!(up["x-forwarded-prefix"], "/shop");
    assert_eq!(up["x-forwarded-proto"], "https");
}
