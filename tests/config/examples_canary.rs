//! `examples/canary/switchyard.toml` as written, with only its addresses moved to free ports
//! and its endpoints to test backends: the 90/10 split, the `x-canary: 1` override, and a
//! promotion by reload.

use std::collections::HashMap;
use std::path::Path;

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::{Proxy, TestProxy};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

struct Backends {
    stable: [Backend; 2],
    canary: Backend,
}

fn backends() -> Backends {
    Backends {
        stable: [
            Backend::start_named("stable-1", Behavior::fixed(200, "stable")),
            Backend::start_named("stable-2", Behavior::fixed(200, "stable")),
        ],
        canary: Backend::start_named("canary", Behavior::fixed(200, "canary")),
    }
}

/// The example's text with the proxy's listen addresses on port 0 and each endpoint replaced
/// by a backend's address; everything else stays as shipped.
fn example(backends: &Backends) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/canary/switchyard.toml");
    let text = std::fs::read_to_string(path).expect("read the example");
    let moves = [
        ("127.0.0.1:8080", "127.0.0.1:0".to_owned()),
        ("127.0.0.1:9901", "127.0.0.1:0".to_owned()),
        ("127.0.0.1:9001", backends.stable[0].addr().to_string()),
        ("127.0.0.1:9002", backends.stable[1].addr().to_string()),
        ("127.0.0.1:9011", backends.canary.addr().to_string()),
    ];
    let mut text = text;
    for (from, to) in moves {
        assert!(text.contains(from), "the example no longer uses {from}");
        text = text.replace(from, &to);
    }
    text
}

/// Who answered `count` plain requests: `x-backend` name -> answers.
async fn spread(proxy: &TestProxy, count: usize, canary_header: bool) -> HashMap<String, usize> {
    let client = HttpClient::http1();
    let mut seen = HashMap::new();
    for i in 0..count {
        let mut req = Request::get(proxy.url("public", &format!("/item/{i}")));
        if canary_header {
            req = req.header("x-canary", "1");
        }
        let resp = client
            .send(req.body(Full::new(Bytes::new())).expect("request"))
            .await
            .expect("request through the proxy");
        assert_eq!(resp.status, StatusCode::OK);
        let backend = resp.header("x-backend").expect("x-backend").to_owned();
        *seen.entry(backend).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_example_splits_overrides_and_promotes() {
    let backends = backends();
    let proxy = Proxy::start_toml(&example(&backends));

    // 1000 requests at p = 0.1: mean 100, standard deviation 9.5; 50..=160 is over five
    // deviations either way.
    let seen = spread(&proxy, 1000, false).await;
    let canary = seen.get("canary").copied().unwrap_or(0);
    assert!(
        (50..=160).contains(&canary),
        "canary share {canary}/1000: {seen:?}"
    );
    for stable in ["stable-1", "stable-2"] {
        assert!(seen.get(stable).copied().unwrap_or(0) > 200, "{seen:?}");
    }

    // Testers reach the canary every time.
    let forced = spread(&proxy, 30, true).await;
    assert_eq!(forced.get("canary"), Some(&30), "{forced:?}");

    // Promotion done: the split becomes a plain route to the canary, and a reload.
    let text = std::fs::read_to_string(proxy.config_path()).expect("read config");
    let start = text.find("split = [").expect("the split");
    let end = start + text[start..].find(']').expect("end of the split") + 1;
    let promoted = format!(
        "{}cluster = \"shop-canary\"{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(proxy.config_path(), promoted).expect("write config");
    let reload = http_client::post(&proxy.admin_url("/reload"), "")
        .await
        .expect("POST /reload");
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());
    let after = spread(&proxy, 50, false).await;
    assert_eq!(after.get("canary"), Some(&50), "{after:?}");
}

#[test]
fn the_canary_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/canary/switchyard.toml");
    let config = switchyard::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let summary = config.summary();
    assert!(
        summary.contains("shop-stable") && summary.contains("shop-canary"),
        "{summary}"
    );
}
