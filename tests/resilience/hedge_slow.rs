//! Hedging (issue 8): a slow endpoint is beaten by a hedge to another one, and the loser is
//! cancelled.

use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::Proxy;
use crate::support::{wait_until, DEADLINE};

#[tokio::test]
async fn a_hedge_beats_a_hanging_endpoint_and_the_loser_is_cancelled() {
    let slow = Backend::start(Behavior::Hang);
    let fast = Backend::start(Behavior::fixed(200, "fast"));
    let toml = format!(
        "[runtime]\nworkers = 1\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"api\"\nlistener = \"public\"\ncluster = \"app\"\ntimeout = \"5s\"\n\
         debug_headers = true\nhedge = {{ after = \"50ms\", max = 1 }}\n\n\
         [clusters.app]\nbalance = \"round_robin\"\nendpoints = [\"{}\", \"{}\"]\n",
        slow.addr(),
        fast.addr()
    );
    let proxy = Proxy::start_toml(&toml);
    let client = HttpClient::http1();
    let mut hedged = 0;
    for _ in 0..4 {
        let started = Instant::now();
        let reply = client.get(&proxy.url("public", "/x")).await.expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "fast");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not waiting for the slow one"
        );
        if reply.header("x-switchyard-attempts") == Some("2") {
            hedged += 1;
        }
    }
    assert!(
        hedged >= 1,
        "round robin sends some requests to the slow endpoint first"
    );
    // Cancelled: the slow attempts hold nothing in the proxy, and their connections close.
    let state = proxy
        .handle()
        .shared()
        .registry()
        .get("app", slow.addr())
        .expect("endpoint");
    assert!(wait_until(DEADLINE, || state.in_flight() == 0));
    assert!(wait_until(DEADLINE, || slow.open_connections() == 0));
    let metrics = crate::support::http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text();
    assert!(metrics.contains("switchyard_hedges_total{route=\"api\",result=\"cancelled\"}"));
    proxy.shutdown();
}

#[tokio::test]
async fn post_is_not_hedged() {
    // Two slow endpoints: a hedge would have somewhere to go, so only the method stops it.
    let a = Backend::start(Behavior::Delay(Duration::from_millis(300)));
    let b = Backend::start(Behavior::Delay(Duration::from_millis(300)));
    let proxy = Proxy::start_toml(&format!(
        "[runtime]\nworkers = 1\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"app\"\n\
         debug_headers = true\nhedge = {{ after = \"20ms\", max = 1 }}\n\n\
         [clusters.app]\nendpoints = [\"{}\", \"{}\"]\n",
        a.addr(),
        b.addr()
    ));
    let client = HttpClient::http1();
    let reply = client
        .post(&proxy.url("public", "/x"), "once")
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));
    assert_eq!(a.request_count() + b.request_count(), 1);
    // The same route hedges a GET: the 20 ms timer fires long before the 300 ms answer.
    let reply = client.get(&proxy.url("public", "/x")).await.expect("reply");
    assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
    proxy.shutdown();
}
