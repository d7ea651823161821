//! The shipped `examples/mtls` pair, `examples/etcd` and the three-member `examples/mesh` run
//! as written: each file is read from the repository and only its fixed addresses are moved
//! (free ports, test backends, a throwaway etcd, the mesh key's absolute path); certificate
//! paths point at certificates `switchyard certs` made, as `run.sh` does.

use std::path::Path;

use crate::support::backend::{Backend, Behavior};
use crate::support::etcd::Etcd;
use crate::support::http_client;
use crate::support::launcher::{BinProcess, Proxy};
use crate::support::net::{free_port, free_udp_port};
use crate::support::DEADLINE;
use http::StatusCode;

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
    let answered = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let (url_ref, answered_ref) = (url.as_str(), &answered);
    crate::support::wait_until_check(DEADLINE, || async move {
        if let Ok(resp) = http_client::get(url_ref).await {
            if resp.status == StatusCode::OK {
                answered_ref.borrow_mut().insert(resp.text());
            }
        }
        answered_ref.borrow().len() >= 2
    })
    .await;
    let answered = answered.into_inner();
    assert_eq!(
        answered.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "round robin over both registered endpoints"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_example_routes_web_to_both_announced_orders_members() {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mesh/mesh.key");
    let key = format!("\"{}\"", key.to_str().expect("utf-8 path"));
    let [m0, m1, m2] = [0; 3].map(|_| free_udp_port().to_string());
    let [l1, l2] = [0; 2].map(|_| free_port().to_string());
    let app1 = Backend::start(Behavior::fixed(200, "orders-1"));
    let app2 = Backend::start(Behavior::fixed(200, "orders-2"));
    // Each file names its own mesh port and the ones it seeds from.
    let mesh_ports = |text: String, ports: &[&str]| {
        let all = [
            ("127.0.0.1:7946", m0.clone()),
            ("127.0.0.1:7947", m1.clone()),
            ("127.0.0.1:7948", m2.clone()),
        ];
        let mut moves: Vec<(&str, String)> = all
            .into_iter()
            .filter(|(from, _)| ports.contains(from))
            .collect();
        moves.push(("\"mesh.key\"", key.clone()));
        moved(text, &moves)
    };
    let web = Proxy::start_toml(&mesh_ports(
        moved(
            example("mesh", "web.toml"),
            &[
                ("127.0.0.1:9901", "127.0.0.1:0".to_owned()),
                ("127.0.0.1:8080", "127.0.0.1:0".to_owned()),
            ],
        ),
        &["127.0.0.1:7946", "127.0.0.1:7947", "127.0.0.1:7948"],
    ));
    let _orders1 = Proxy::start_toml(&mesh_ports(
        moved(
            example("mesh", "orders-1.toml"),
            &[
                ("127.0.0.1:9902", "127.0.0.1:0".to_owned()),
                ("127.0.0.1:8081", l1.clone()),
                ("127.0.0.1:9001", app1.addr().to_string()),
            ],
        ),
        &["127.0.0.1:7946", "127.0.0.1:7947"],
    ));
    let _orders2 = Proxy::start_toml(&mesh_ports(
        moved(
            example("mesh", "orders-2.toml"),
            &[
                ("127.0.0.1:9903", "127.0.0.1:0".to_owned()),
                ("127.0.0.1:8082", l2.clone()),
                ("127.0.0.1:9002", app2.addr().to_string()),
            ],
        ),
        &["127.0.0.1:7946", "127.0.0.1:7948"],
    ));
    // The bound: an announcement is routable within 5 s; twice that for a loaded box.
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let (web_url, seen_ref) = (web.url("public", "/"), &seen);
    let web_url = web_url.as_str();
    crate::support::wait_until_check(2 * DEADLINE, || async move {
        if let Ok(reply) = http_client::get(web_url).await {
            if reply.status == StatusCode::OK {
                seen_ref.borrow_mut().insert(reply.text());
            }
        }
        seen_ref.borrow().len() >= 2
    })
    .await;
    let seen = seen.into_inner();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["orders-1", "orders-2"],
        "web did not reach both announced members"
    );
}
