//! Downstream TLS: termination with ALPN h2/http1.1, certificates by SNI (and the default
//! without SNI), no protocol below TLS 1.2, the handshake timeout, the mTLS matrix with
//! `match.client_identity` and `x-forwarded-client-cert`, and rotation under a held connection.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::Proxy;
use crate::support::tls::{client_config, der_of, tls_get, Ca, H1Conn, Leaf};
use crate::support::{wait_until_async, DEADLINE};

fn config(backend: std::net::SocketAddr, tls: &str, routes: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"
tls = {tls}

{routes}

[clusters.app]
endpoints = ["{backend}"]
"#
    )
}

const CATCH_ALL: &str = r#"
[[routes]]
listener = "public"
match = { path_prefix = "/" }
cluster = "app"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_h1_and_h2_and_picks_the_certificate_by_sni() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let a = ca.issue("a", &Leaf::named("a.test"));
    let b = ca.issue("b", &Leaf::named("b.test"));
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let tls = format!(
        r#"{{ certs = [ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ] }}"#,
        a.0.display(),
        a.1.display(),
        b.0.display(),
        b.1.display()
    );
    let proxy = Proxy::start_toml(&config(backend.addr(), &tls, CATCH_ALL));
    let addr = proxy.addr("public");

    let h1 = client_config(&ca.cert_path, None, &[b"http/1.1"]);
    let got = tls_get(addr, Some("a.test"), h1, "a.test", "/x", &[])
        .await
        .expect("h1 over TLS");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "ok");
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(got.server_cert, der_of(&a.0));

    let h2 = client_config(&ca.cert_path, None, &[b"h2", b"http/1.1"]);
    let got = tls_get(addr, Some("b.test"), h2.clone(), "b.test", "/y", &[])
        .await
        .expect("h2 over TLS");
    assert_eq!(got.status, 200);
    assert_eq!(got.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        got.server_cert,
        der_of(&b.0),
        "SNI b.test gets b's certificate"
    );

    // No SNI: the first certificate (a.test), which a client checking the IP refuses...
    let got = tls_get(addr, None, h2, "a.test", "/z", &[]).await;
    assert!(
        got.is_err(),
        "the default certificate names a.test, not 127.0.0.1"
    );
    // ...so a listener whose first certificate lists 127.0.0.1 shows which one is sent.
    let leaf = Leaf {
        ips: vec!["127.0.0.1".parse().expect("ip")],
        ..Leaf::named("c.test")
    };
    let c = ca.issue("c", &leaf);
    let tls = format!(
        r#"{{ certs = [ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ] }}"#,
        c.0.display(),
        c.1.display(),
        a.0.display(),
        a.1.display()
    );
    let proxy2 = Proxy::start_toml(&config(backend.addr(), &tls, CATCH_ALL));
    let h1 = client_config(&ca.cert_path, None, &[b"http/1.1"]);
    let got = tls_get(proxy2.addr("public"), None, h1, "c.test", "/", &[])
        .await
        .expect("no SNI");
    assert_eq!(got.status, 200);
    assert_eq!(
        got.server_cert,
        der_of(&c.0),
        "no SNI gets the first certificate"
    );

    // The expiry gauge names each certificate file (re-published by the watcher each second).
    let series = format!(
        "switchyard_cert_expiry_timestamp_seconds{{name=\"{}\"}}",
        c.0.display()
    );
    let mut metrics = String::new();
    let found = crate::support::wait_until_async(DEADLINE, || {
        let url = proxy2.admin_url("/metrics");
        metrics = futures_poll(async move { crate::support::http_client::get(&url).await })
            .map(|r| r.text())
            .unwrap_or_default();
        metrics.contains(&series)
    })
    .await;
    assert!(found, "{series} missing from\n{metrics}");

    let recorded = backend.requests();
    assert!(recorded
        .iter()
        .all(|r| r.headers["x-forwarded-proto"] == "https"));
}

/// A TLS 1.0 ClientHello (one cipher suite, no extensions): what a legacy client sends.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00, 0x00, u8::try_from(body.len()).expect("short")];
    hs.extend_from_slice(&body);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        0x00,
        u8::try_from(hs.len()).expect("short"),
    ];
    record.extend_from_slice(&hs);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_tls_below_1_2_and_closes_a_silent_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let a = ca.issue("a", &Leaf::named("a.test"));
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let tls = format!(
        r#"{{ cert = "{}", key = "{}" }}"#,
        a.0.display(),
        a.1.display()
    );
    let toml = format!(
        "{}\n[limits]\nfirst_byte_timeout = \"300ms\"\n",
        config(backend.addr(), &tls, CATCH_ALL)
    );
    let proxy = Proxy::start_toml(&toml);
    let addr = proxy.addr("public");

    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
        tcp.write_all(&tls10_client_hello()).expect("hello");
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
        buf
    })
    .await
    .expect("probe");
    // An alert record (0x15), or nothing: never a ServerHello (a handshake record, 0x16).
    assert!(matches!(answer.first(), None | Some(0x15)), "{answer:02x?}");

    // TLS 1.2 still works.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der_of(
            &ca.cert_path,
        )))
        .expect("root");
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls12")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let got = tls_get(
        addr,
        Some("a.test"),
        std::sync::Arc::new(tls12),
        "a.test",
        "/",
        &[],
    )
    .await
    .expect("TLS 1.2");
    assert_eq!(got.status, 200);

    // Silent client: closed once first_byte_timeout bounds the handshake.
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut byte = [0u8; 1];
        matches!(tcp.read(&mut byte), Ok(0))
    })
    .await
    .expect("silent");
    assert!(closed, "a silent client is closed, not kept");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_valid_client_certificate_and_routes_by_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let other_ca = Ca::new(&dir.path().join("other"), "other");
    let server = ca.issue("server", &Leaf::named("mesh.test"));
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let tls = format!(
        r#"{{ cert = "{}", key = "{}", client_ca = "{}" }}"#,
        server.0.display(),
        server.1.display(),
        ca.cert_path.display()
    );
    let routes = r#"
[[routes]]
listener = "public"
match = { client_identity = "spiffe://local/web" }
cluster = "app"
"#;
    let proxy = Proxy::start_toml(&config(backend.addr(), &tls, routes));
    let addr = proxy.addr("public");
    let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];

    let web = ca.issue("web", &Leaf::named("web").uri("spiffe://local/web"));
    let cases = [
        ("no client certificate", None),
        (
            "another CA",
            Some(other_ca.issue("stranger", &Leaf::named("web").uri("spiffe://local/web"))),
        ),
        (
            "expired",
            Some(ca.issue(
                "expired",
                &Leaf {
                    from: -7200,
                    to: -3600,
                    ..Leaf::named("web").uri("spiffe://local/web")
                },
            )),
        ),
        (
            "not yet valid",
            Some(ca.issue(
                "future",
                &Leaf {
                    from: 3600,
                    to: 7200,
                    ..Leaf::named("web").uri("spiffe://local/web")
                },
            )),
        ),
        (
            "server-only usage",
            Some(ca.issue(
                "serveronly",
                &Leaf {
                    client: false,
                    ..Leaf::named("web").uri("spiffe://local/web")
                },
            )),
        ),
    ];
    for (what, pair) in &cases {
        let cfg = client_config(&ca.cert_path, pair.as_ref(), alpn);
        let got = tls_get(addr, Some("mesh.test"), cfg, "mesh.test", "/", &[]).await;
        assert!(
            got.is_err(),
            "{what}: must be refused, got status {:?}",
            got.map(|r| r.status)
        );
    }
    assert_eq!(
        backend.request_count(),
        0,
        "nothing refused reached the backend"
    );

    let other = ca.issue("other", &Leaf::named("other").uri("spiffe://local/other"));
    let cfg = client_config(&ca.cert_path, Some(&other), alpn);
    let got = tls_get(addr, Some("mesh.test"), cfg, "mesh.test", "/", &[])
        .await
        .expect("other identity");
    assert_eq!(
        got.status, 404,
        "a valid certificate of another identity matches no route"
    );

    for protocols in [&[&b"h2"[..]][..], &[&b"http/1.1"[..]][..]] {
        let cfg = client_config(&ca.cert_path, Some(&web), protocols);
        let forged = [("x-forwarded-client-cert", "URI=\"spiffe://local/admin\"")];
        let got = tls_get(addr, Some("mesh.test"), cfg, "mesh.test", "/", &forged)
            .await
            .expect("valid identity");
        assert_eq!(got.status, 200);
    }
    let recorded = backend.requests();
    assert_eq!(recorded.len(), 2);
    for request in recorded {
        let xfcc: Vec<_> = request
            .headers
            .get_all("x-forwarded-client-cert")
            .iter()
            .collect();
        assert_eq!(xfcc.len(), 1, "the client's own header is dropped");
        let value = xfcc[0].to_str().expect("ascii");
        assert!(value.starts_with("Hash="), "{value}");
        assert!(value.ends_with(";URI=\"spiffe://local/web\""), "{value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_while_old_ones_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let first = ca.issue("site", &Leaf::named("a.test"));
    let first_der = der_of(&first.0);
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let tls = format!(
        r#"{{ cert = "{}", key = "{}" }}"#,
        first.0.display(),
        first.1.display()
    );
    let proxy = Proxy::start_toml(&config(backend.addr(), &tls, CATCH_ALL));
    let addr = proxy.addr("public");
    let cfg = client_config(&ca.cert_path, None, &[b"http/1.1"]);

    let mut held = H1Conn::open(addr, "a.test", cfg.clone()).await;
    assert_eq!(held.server_cert, first_der);
    assert_eq!(held.get("a.test", "/1").await, 200);

    // A half-written file first (the watcher may or may not see it; either way the old pair
    // stays until a good one loads), then the rotation: same paths, new key and certificate.
    std::fs::write(&first.0, "not a certificate").expect("garbage");
    let second = ca.issue("site", &Leaf::named("a.test"));
    let second_der = der_of(&second.0);
    assert_ne!(first_der, second_der);
    let rotated = wait_until_async(DEADLINE, || {
        let got = futures_poll(tls_get(
            addr,
            Some("a.test"),
            cfg.clone(),
            "a.test",
            "/",
            &[],
        ));
        got.is_ok_and(|r| r.server_cert == second_der)
    })
    .await;
    assert!(rotated, "new connections get the new certificate");
    assert_eq!(
        held.get("a.test", "/2").await,
        200,
        "the held connection goes on"
    );
}

/// Runs `fut` to completion on a fresh runtime in a helper thread (the polling closure of
/// `wait_until_async` is synchronous).
fn futures_poll<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .join()
    .expect("poll thread")
}

/// Writes `request` over TLS with ALPN `alpn` and returns what the server sent back until it
/// closed (or 5 s passed), with the protocol that was negotiated.
async fn raw_over_tls(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    request: &[u8],
) -> (Option<Vec<u8>>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("sni");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
    // A reset instead of a clean close also ends the exchange; what arrived before it counts.
    let _ = read;
    (alpn, got)
}

/// ALPN is a promise: a connection that agreed on `h2` is HTTP/2 only (HTTP/1 bytes get no
/// HTTP/1 answer), one that agreed on `http/1.1` is HTTP/1 only (the HTTP/2 preface is a bad
/// HTTP/1 request); neither reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_negotiated_by_alpn_is_the_only_one_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let a = ca.issue("a", &Leaf::named("a.test"));
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let tls = format!(
        r#"{{ cert = "{}", key = "{}" }}"#,
        a.0.display(),
        a.1.display()
    );
    let proxy = Proxy::start_toml(&config(backend.addr(), &tls, CATCH_ALL));
    let addr = proxy.addr("public");

    let h2_only = client_config(&ca.cert_path, None, &[b"h2"]);
    let (alpn, got) = raw_over_tls(
        addr,
        h2_only,
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        !got.starts_with(b"HTTP/1"),
        "an h2 connection answered HTTP/1: {:?}",
        String::from_utf8_lossy(&got)
    );
    // What does come is HTTP/2 framing: the server's SETTINGS (type 4), or a GOAWAY (7).
    assert!(
        got.len() >= 9 && matches!(got[3], 4 | 7),
        "not HTTP/2 frames: {got:?}"
    );

    let h1_only = client_config(&ca.cert_path, None, &[b"http/1.1"]);
    let (alpn, got) = raw_over_tls(addr, h1_only, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "an http/1.1 connection took the HTTP/2 preface: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(backend.request_count(), 0);
}
