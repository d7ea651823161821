//! The shipped `examples/mtls` pair and `examples/etcd` run as written: each file is read from
//! the repository and only its fixed addresses are moved (free ports, test backends, a
//! throwaway etcd); certificate paths point at certificates `switchyard certs` made, as
//! `run.sh` does.

mod support;

use std::path::Path;

use http::StatusCode;
use support::backend::{Backend, Behavior};
use support::etcd::Etcd;
use support::http_client;
use support::launcher::{BinProcess, Proxy};
use support::DEADLINE;

fn example(dir: &str, file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir)
        .join(file);
    std::fs::read_to_string(path).expect("read the example")
}

/// `text` with each `from` replaced (and asserted present, so a changed example fails here
/// rather than silently testing something else).
fn moved(mut text: String, moves: &[(&str, String)]) -> String {
    for (from, to) in moves {
        assert!(text.contains(from), "the example no longer contains {from}");
        text = text.replace(from, to);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mtls_example_pair_carries_web_identity_to_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let ca = certs.to_str().expect("utf-8 path");
    // What run.sh does.
    let init = BinProcess::run(&["certs", "init", "--dir", ca], DEADLINE);
    assert!(init.status.success(), "{}", init.stderr);
    for (name, id) in [
        ("orders", "spiffe://local/orders"),
        ("web", "spiffe://local/web"),
    ] {
        let issued = BinProcess::run(
            &["certs", "issue", "--ca", ca, "--name", name, "--spiffe", id],
            DEADLINE,
        );
        assert!(issued.status.success(), "{}", issued.stderr);
    }
    let certs_dir = format!("\"{ca}/");
    let app = Backend::start(Behavior::fixed(200, "orders app"));

    let orders = Proxy::start_toml(&moved(
        example("mtls", "orders.toml"),
        &[
            ("127.0.0.1:9902", "127.0.0.1:0".to_owned()),
            ("127.0.0.1:8443", "127.0.0.1:0".to_owned()),
            ("127.0.0.1:9000", app.addr().to_string()),
            ("\"certs/", certs_dir.clone()),
        ],
    ));
    let web = Proxy::start_toml(&moved(
        example("mtls", "web.toml"),
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".to_owned()),
            ("127.0.0.1:8080", "127.0.0.1:0".to_owned()),
            ("127.0.0.1:8443", orders.addr("mesh").to_string()),
            ("\"certs/", certs_dir),
        ],
    ));
    let got = http_client::get(&web.url("local", "/orders/7"))
        .await
        .expect("through both sidecars");
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "orders app")
    );
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    let xfcc = seen[0].headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii");
    assert!(xfcc.ends_with(";URI=\"spiffe://local/web\""), "{xfcc}");
    // Plain HTTP to the orders sidecar's mTLS listener gets nowhere near the app.
    let plain = http_client::get(&orders.url("mesh", "/orders/7")).await;
    assert!(plain.map_or(true, |r| r.status != StatusCode::OK));
    assert_eq!(app.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_example_balances_over_registered_endpoints() {
    let etcd = Etcd::start();
    let a = Backend::start_named("a", Behavior::fixed(200, "a"));
    let b = Backend::start_named("b", Behavior::fixed(200, "b"));
    // What `switchyard register` writes (run.sh registers two toy backends).
    etcd.put("/services/orders/a", &format!("\"{}\"", a.addr()), None);
    etcd.put(
        "/services/orders/b",
        &format!("{{\"address\": \"{}\", \"weight\": 1}}", b.addr()),
        None,
    );
    let proxy = Proxy::start_toml(&moved(
        example("etcd", "switchyard.toml"),
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".to_owned()),
            ("127.0.0.1:8080", "127.0.0.1:0".to_owned()),
            ("http://127.0.0.1:2379", etcd.url()),
        ],
    ));
    let url = proxy.url("public", "/");
    // Discovery fills the cluster shortly after start (503 until its first answer).
    let mut answered = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while answered.len() < 2 && std::time::Instant::now() < deadline {
        match http_client::get(&url).await {
            Ok(resp) if resp.status == StatusCode::OK => {
                answered.insert(resp.text());
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(
        answered.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "round robin over both registered endpoints"
    );
}
