//! Upstream TLS: a cluster `tls` table verifies the backend against its CA and SNI (a wrong
//! name is a 502, never a plaintext fallback), negotiates h2 by ALPN for h2 clusters, and
//! presents a client certificate to a backend that requires one.

mod support;
mod tls_support;

use support::http_client;
use support::launcher::Proxy;
use tls_support::{Ca, Leaf, TlsBackend};

fn config(backend: std::net::SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
match = {{ path_prefix = "/" }}
cluster = "secure"

[clusters.secure]
protocol = "{protocol}"
endpoints = ["{backend}"]
tls = {tls}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_the_backend_and_speaks_h1_or_h2_by_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let pair = ca.issue("backend", &Leaf::named("backend.test"));
    let backend = TlsBackend::start(&pair, None);
    let ca_path = ca.cert_path.display();
    for (protocol, version) in [("http1", "HTTP/1.1"), ("h2", "HTTP/2.0")] {
        let tls = format!(r#"{{ sni = "backend.test", ca = "{ca_path}" }}"#);
        let proxy = Proxy::start_toml(&config(backend.addr, protocol, &tls));
        let got = http_client::get(&proxy.url("public", "/"))
            .await
            .expect("response");
        assert_eq!(got.status, 200, "{protocol}");
        assert_eq!(got.text(), format!("tls-backend {version}"));
    }

    // The certificate does not name other.test: 502, and nothing reaches the backend.
    let before = backend.seen.lock().expect("seen").len();
    let tls = format!(r#"{{ sni = "other.test", ca = "{ca_path}" }}"#);
    let proxy = Proxy::start_toml(&config(backend.addr, "http1", &tls));
    let got = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("response");
    assert_eq!(got.status, 502);
    // Another CA: 502 too.
    let other = Ca::new(&dir.path().join("other"), "other");
    let tls = format!(
        r#"{{ sni = "backend.test", ca = "{}" }}"#,
        other.cert_path.display()
    );
    let proxy = Proxy::start_toml(&config(backend.addr, "http1", &tls));
    let got = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("response");
    assert_eq!(got.status, 502);
    assert_eq!(backend.seen.lock().expect("seen").len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presents_a_client_certificate_for_upstream_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let pair = ca.issue("backend", &Leaf::named("backend.test"));
    let backend = TlsBackend::start(&pair, Some(&ca.cert_path));
    let client = ca.issue(
        "client",
        &Leaf::named("client").uri("spiffe://local/client"),
    );
    let ca_path = ca.cert_path.display();

    let tls = format!(
        r#"{{ sni = "backend.test", ca = "{ca_path}", cert = "{}", key = "{}" }}"#,
        client.0.display(),
        client.1.display()
    );
    let proxy = Proxy::start_toml(&config(backend.addr, "h2", &tls));
    let got = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("response");
    assert_eq!(got.status, 200);

    let tls = format!(r#"{{ sni = "backend.test", ca = "{ca_path}" }}"#);
    let proxy = Proxy::start_toml(&config(backend.addr, "h2", &tls));
    let got = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("response");
    assert_eq!(
        got.status, 502,
        "without a client certificate the backend refuses us"
    );
}
