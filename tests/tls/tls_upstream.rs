//! Upstream TLS: a cluster `tls` table verifies the backend against its CA and SNI (a wrong
//! name is a 502, never a plaintext fallback), negotiates h2 by ALPN for h2 clusters, and
//! presents a client certificate to a backend that requires one.

use crate::support::http_client;
use crate::support::launcher::Proxy;
use crate::support::tls::{Ca, Leaf, TlsBackend};

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

/// `last_probe.passed` and `healthy` of the first cluster's first endpoint in `/upstreams`.
async fn probe_view(proxy: &crate::support::launcher::TestProxy) -> (Option<bool>, Option<bool>) {
    let reply = http_client::get(&proxy.admin_url("/upstreams"))
        .await
        .expect("admin");
    let view: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    let endpoint = &view["clusters"][0]["endpoints"][0];
    (
        endpoint["last_probe"]["passed"].as_bool(),
        endpoint["healthy"].as_bool(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_checks_of_a_tls_cluster_speak_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let pair = ca.issue("backend", &Leaf::named("backend.test"));
    // The backend requires a client certificate: the probe must present the cluster's too.
    let backend = TlsBackend::start(&pair, Some(&ca.cert_path));
    let client = ca.issue("client", &Leaf::named("client"));
    let ca_path = ca.cert_path.display();
    for protocol in ["http1", "h2"] {
        let tls = format!(
            r#"{{ sni = "backend.test", ca = "{ca_path}", cert = "{}", key = "{}" }}"#,
            client.0.display(),
            client.1.display()
        );
        // Starts unhealthy with no panic routing: only passing probes let traffic through.
        let health = "panic_threshold = 0.0\nhealth_check = { path = \"/healthz\", \
                      interval = \"200ms\", timeout = \"2s\", healthy_threshold = 1, \
                      initial = \"unhealthy\" }\n";
        let proxy = Proxy::start_toml(&(config(backend.addr, protocol, &tls) + health));
        crate::support::wait_until_check(crate::support::DEADLINE, || async {
            probe_view(&proxy).await == (Some(true), Some(true))
        })
        .await;
        assert_eq!(
            probe_view(&proxy).await,
            (Some(true), Some(true)),
            "{protocol}: (last_probe.passed, healthy)"
        );
        let got = http_client::get(&proxy.url("public", "/"))
            .await
            .expect("response");
        assert_eq!(got.status, 200, "{protocol}");
        proxy.shutdown();
    }
}
