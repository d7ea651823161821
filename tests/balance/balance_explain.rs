//! `switchyard explain` names the endpoint a hashing cluster maps the request's key to — the
//! same one the running proxy sends the key to — and says when the request has no key.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::support::launcher::BinProcess;
use crate::support::DEADLINE;
use switchyard::balance::{self, PickContext};
use switchyard::endpoint::EndpointRegistry;
use switchyard::state::Snapshot;

const CONFIG: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "users"

[clusters.users]
balance = "maglev"
hash_on = "header:x-user-id"
endpoints = ["127.0.0.1:9003", "127.0.0.1:9001", "127.0.0.1:9002"]
"#;

/// Where the proxy's own lookup sends `x-user-id: user`.
fn proxy_choice(user: &str) -> SocketAddr {
    let config = switchyard::config::parse(CONFIG, Path::new("t.toml")).expect("valid config");
    let snapshot = Snapshot::build(Arc::new(config), &EndpointRegistry::new(), 1);
    let cluster = snapshot.cluster("users").expect("cluster");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user-id", user.parse().expect("header value"));
    let hash_on = cluster.config().hash_on.as_ref().expect("hash_on");
    let ctx = PickContext {
        endpoints: cluster.endpoints(),
        client: None,
        random: 0,
        hash: balance::request_hash(hash_on, &headers, "/", None),
    };
    let first = cluster
        .balancer()
        .candidates(&ctx)
        .next()
        .expect("candidate");
    cluster.endpoints()[first].address()
}

#[test]
fn explain_names_the_hashed_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    let path = path.to_str().expect("utf-8 path");
    let mut homes = std::collections::HashSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let header = format!("x-user-id: {user}");
        let out = BinProcess::run(
            &["explain", "-c", path, "GET http://a/x", "-H", &header],
            DEADLINE,
        );
        assert!(out.status.success(), "{}", out.stderr);
        let expected = proxy_choice(user);
        assert!(
            out.stdout.contains(&format!("hash maps to: {expected}")),
            "{user}: expected {expected} in\n{}",
            out.stdout
        );
        homes.insert(expected);
    }
    assert!(homes.len() > 1, "six keys all on {homes:?}");
    let out = BinProcess::run(&["explain", "-c", path, "GET http://a/x"], DEADLINE);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("no header:x-user-id key: least_request"),
        "{}",
        out.stdout
    );
}
