//! Certificates and reloads: a reload naming a new pair serves it to new connections; one
//! naming files that do not load is refused (400) and the running certificate stays.

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::Proxy;
use crate::support::reload::post_reload;
use crate::support::tls::{client_config, der_of, tls_get, Ca, Leaf};

fn config(
    backend: std::net::SocketAddr,
    pair: &(std::path::PathBuf, std::path::PathBuf),
) -> String {
    format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"
tls = {{ cert = "{}", key = "{}" }}

[[routes]]
listener = "public"
match = {{ path_prefix = "/" }}
cluster = "app"

[clusters.app]
endpoints = ["{backend}"]
"#,
        pair.0.display(),
        pair.1.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_certificates_and_refuses_ones_that_do_not_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "root");
    let first = ca.issue("first", &Leaf::named("a.test"));
    let second = ca.issue("second", &Leaf::named("a.test"));
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = Proxy::start_toml(&config(backend.addr(), &first));
    let (addr, admin) = (proxy.addr("public"), proxy.admin_addr());
    let cfg = client_config(&ca.cert_path, None, &[b"h2"]);
    let served = || async {
        tls_get(addr, Some("a.test"), cfg.clone(), "a.test", "/", &[])
            .await
            .expect("response")
            .server_cert
    };
    assert_eq!(served().await, der_of(&first.0));

    let broken = (
        dir.path().join("missing.pem"),
        dir.path().join("missing.key"),
    );
    std::fs::write(proxy.config_path(), config(backend.addr(), &broken)).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("missing.pem"), "{body}");
    assert_eq!(
        served().await,
        der_of(&first.0),
        "the running certificate stays"
    );

    std::fs::write(proxy.config_path(), config(backend.addr(), &second)).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        served().await,
        der_of(&second.0),
        "new connections get the new pair"
    );
}
