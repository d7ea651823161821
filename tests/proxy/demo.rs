//! `switchyard demo` as a user runs it: the real binary, its printed address, real requests.

use std::collections::BTreeSet;

use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::{BinProcess, Pipe};
use crate::support::DEADLINE;
use http::StatusCode;

const READY: &str = "switchyard demo listening on";

fn backend_of(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).expect("demo answers JSON");
    json["backend"].as_str().expect("backend field").to_string()
}

#[tokio::test]
async fn demo_starts_and_balances_across_its_backends() {
    let demo = BinProcess::spawn(&["demo", "--listen", "127.0.0.1:0"]);
    let addr = demo.wait_for_addr(READY);
    assert_ne!(addr.port(), 0, "the banner must show the real port");

    let client = HttpClient::http1();
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let resp = client
            .get(&format!("http://{addr}/"))
            .await
            .expect("GET / through the demo");
        assert_eq!(resp.status, StatusCode::OK);
        seen.insert(backend_of(&resp.body));
    }
    assert!(
        seen.len() > 1,
        "round robin should reach several backends: {seen:?}"
    );

    let stdout = demo.output(Pipe::Stdout);
    assert!(
        stdout.contains(&format!("curl -s http://{addr}/")),
        "{stdout}"
    );
}

#[tokio::test]
async fn demo_routes_by_host_and_passes_statuses_through() {
    let demo = BinProcess::spawn(&["demo", "--listen", "127.0.0.1:0"]);
    let addr = demo.wait_for_addr(READY);

    let resp = http_client::get(&format!("http://{addr}/status/503"))
        .await
        .expect("status route");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);

    let req = http::Request::builder()
        .uri(format!("http://{addr}/anything"))
        .header(http::header::HOST, "api.localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = HttpClient::http1().send(req).await.expect("host route");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(backend_of(&resp.body), "green");
    assert_eq!(resp.header("x-demo-route"), Some("api-host"));
}

#[test]
fn demo_exits_cleanly_on_sigterm() {
    let mut demo = BinProcess::spawn(&["demo", "--listen", "127.0.0.1:0"]);
    demo.wait_for_addr(READY);
    demo.terminate();
    let status = demo.wait_exit(DEADLINE).expect("demo exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}
