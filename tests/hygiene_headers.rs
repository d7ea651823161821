//! Header policy at the boundary: `x-forwarded-for` with `trusted_hops`, and a client's
//! `Connection` header that names the proxy's own headers.

mod hygiene_support;
mod support;

use hygiene_support::{config, limits};
use support::backend::{Backend, Behavior};
use support::launcher::Proxy;
use support::raw_client::raw_request;

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
