//! `switchyard certs init|issue` through the binary, then two sidecars holding the issued
//! leaves talk mTLS (HTTP/2) with nothing else configured; `examples/mtls` loads with them.

use std::path::Path;

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client;
use crate::support::launcher::{BinProcess, Proxy};
use crate::support::DEADLINE;

fn certs(args: &[&str]) -> crate::support::launcher::BinOutput {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    BinProcess::run(&all, DEADLINE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_leaves_let_two_sidecars_talk_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("certs");
    let ca = ca_dir.to_str().expect("utf-8 path");
    let init = certs(&["init", "--dir", ca]);
    assert!(init.status.success(), "{}", init.stderr);
    assert!(init.stdout.contains("ca.pem"), "{}", init.stdout);
    let again = certs(&["init", "--dir", ca]);
    assert!(
        !again.status.success(),
        "a second init must not replace the CA key"
    );
    for (name, id) in [
        ("orders", "spiffe://local/orders"),
        ("web", "spiffe://local/web"),
    ] {
        let out = certs(&["issue", "--ca", ca, "--name", name, "--spiffe", id]);
        assert!(out.status.success(), "{}", out.stderr);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(ca_dir.join("web.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private keys are owner-only");
    }

    // The shipped example loads with these files next to it.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mtls");
    for file in ["orders.toml", "web.toml"] {
        let copy = dir.path().join(file);
        std::fs::copy(examples.join(file), &copy).expect("copy example");
        let config = switchyard::config::load(&copy).unwrap_or_else(|e| panic!("{e}"));
        switchyard::tls::store::preload(&config).expect("example TLS loads");
    }

    let app = Backend::start(Behavior::fixed(200, "orders app"));
    let path = |f: &str| ca_dir.join(f).display().to_string();
    let orders = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "mesh"
listen = "127.0.0.1:0"
tls = {{ cert = "{}", key = "{}", client_ca = "{}" }}

[[routes]]
listener = "mesh"
match = {{ client_identity = "spiffe://local/web" }}
cluster = "app"

[clusters.app]
endpoints = ["{}"]
"#,
        path("orders.pem"),
        path("orders.key"),
        path("ca.pem"),
        app.addr()
    ));
    let web = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "local"
listen = "127.0.0.1:0"

[[routes]]
listener = "local"
match = {{ path_prefix = "/" }}
cluster = "orders"

[clusters.orders]
protocol = "h2"
endpoints = ["{}"]
tls = {{ sni = "orders", ca = "{}", cert = "{}", key = "{}" }}
"#,
        orders.addr("mesh"),
        path("ca.pem"),
        path("web.pem"),
        path("web.key")
    ));
    let got = http_client::get(&web.url("local", "/orders/1"))
        .await
        .expect("response");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "orders app");
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    let xfcc = seen[0].headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii");
    assert!(xfcc.ends_with(";URI=\"spiffe://local/web\""), "{xfcc}");

    // The orders sidecar's own leaf is not web: presenting it matches no route (404).
    let sneaky = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "local"
listen = "127.0.0.1:0"

[[routes]]
listener = "local"
match = {{ path_prefix = "/" }}
cluster = "orders"

[clusters.orders]
endpoints = ["{}"]
tls = {{ sni = "orders", ca = "{}", cert = "{}", key = "{}" }}
"#,
        orders.addr("mesh"),
        path("ca.pem"),
        path("orders.pem"),
        path("orders.key")
    ));
    let got = http_client::get(&sneaky.url("local", "/"))
        .await
        .expect("response");
    assert_eq!(got.status, 404);
    assert_eq!(app.request_count(), 1);
}

#[test]
fn run_refuses_to_start_with_a_certificate_that_does_not_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").expect("write");
    std::fs::write(dir.path().join("bad.key"), "not a key").expect("write");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"
tls = { cert = "bad.pem", key = "bad.key" }
"#,
    )
    .expect("write config");
    let out = BinProcess::run(&["run", "-c", config.to_str().expect("utf-8")], DEADLINE);
    assert!(!out.status.success());
    assert!(out.stderr.contains("bad.pem"), "{}", out.stderr);
}
