//! The admin API over real sockets: every path, its JSON shape, and its absence from the proxy
//! listeners.

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::{self, HttpResponse};
use crate::support::launcher::{Proxy, TestProxy};
use http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn config(backend: &Backend) -> String {
    format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "api"
listener = "public"
match = {{ path_prefix = "/api" }}
cluster = "app"

[clusters.app]
balance = "round_robin"
endpoints = ["{}", {{ address = "127.0.0.1:1", weight = 3 }}]
"#,
        backend.addr()
    )
}

async fn admin_get(proxy: &TestProxy, path: &str) -> HttpResponse {
    http_client::get(&proxy.admin_url(path))
        .await
        .unwrap_or_else(|e| panic!("GET {path} on the admin listener: {e}"))
}

async fn admin_json(proxy: &TestProxy, path: &str) -> Value {
    let resp = admin_get(proxy, path).await;
    assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

#[tokio::test]
async fn health_and_readiness_answer_ok_while_serving() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    assert_ne!(proxy.admin_addr().port(), 0);
    let health = admin_get(&proxy, "/healthz").await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok\n")
    );
    let ready = admin_get(&proxy, "/readyz").await;
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (StatusCode::OK, "ready\n")
    );

    // Draining (what SIGTERM does first) flips readiness, not liveness.
    proxy.handle().shared().set_draining();
    assert_eq!(
        admin_get(&proxy, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(admin_get(&proxy, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn config_shows_version_time_hash_and_no_error() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    let json = admin_json(&proxy, "/config").await;
    assert_eq!(json["version"], 1);
    assert_eq!(json["last_error"], Value::Null);
    let file = std::fs::read(proxy.config_path()).expect("read config file");
    let expected: String = Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(json["sha256"], Value::String(expected));
    let loaded_at = json["loaded_at"].as_str().expect("loaded_at is a string");
    // RFC 3339, UTC, e.g. 2025-01-31T12:00:00.123Z
    let shape = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").expect("regex");
    assert!(shape.is_match(loaded_at), "{loaded_at}");
    assert!(loaded_at >= "2024-01-01", "{loaded_at}");
    assert_eq!(json["listeners"][0]["name"], "public");
    assert_eq!(json["routes"][0]["name"], "api");
    assert_eq!(json["clusters"][0], "app");
}

#[tokio::test]
async fn upstreams_list_every_endpoint_with_its_state() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    let json = admin_json(&proxy, "/upstreams").await;
    let clusters = json["clusters"].as_array().expect("clusters array");
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["name"], "app");
    let endpoints = clusters[0]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 2);
    let weighted = endpoints
        .iter()
        .find(|e| e["address"] == "127.0.0.1:1")
        .expect("the weighted endpoint");
    assert_eq!(weighted["weight"], 3);
    for endpoint in endpoints {
        for field in [
            "address",
            "source",
            "healthy",
            "ejected_until",
            "ejections",
            "breaker",
            "in_flight",
            "connections",
            "ewma_ms",
            "weight",
        ] {
            assert!(endpoint.get(field).is_some(), "{field} missing: {endpoint}");
        }
        assert_eq!(endpoint["source"], "static");
        assert_eq!(endpoint["healthy"], true);
        assert_eq!(endpoint["ejected_until"], Value::Null);
        assert_eq!(endpoint["breaker"], "closed");
        assert_eq!(endpoint["in_flight"], 0);
    }
}

#[tokio::test]
async fn explain_answers_against_the_live_snapshot() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    let json = admin_json(
        &proxy,
        "/explain?method=GET&url=http%3A%2F%2Fexample.com%2Fapi%2Fx&header=x-a%3A%201",
    )
    .await;
    assert_eq!(json["matched"]["name"], "api");
    assert_eq!(json["matched"]["clusters"][0]["name"], "app");
    assert_eq!(json["routes"][0]["verdict"], "matched");

    let miss = admin_json(&proxy, "/explain?url=/other&header=host:%20example.com").await;
    assert_eq!(miss["matched"], Value::Null);
    assert_eq!(miss["routes"][0]["verdict"], "no_match");

    let bad = admin_get(&proxy, "/explain?method=GET").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bad.body).expect("JSON error");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("url")),
        "{error}"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_and_writes_are_405() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    assert_eq!(
        admin_get(&proxy, "/nope").await.status,
        StatusCode::NOT_FOUND
    );
    // `/` is the status page (tests/status_page.rs); a path beside it is not.
    assert_eq!(
        admin_get(&proxy, "/favicon.ico").await.status,
        StatusCode::NOT_FOUND
    );
    let post = http_client::post(&proxy.admin_url("/config"), "x")
        .await
        .expect("POST /config");
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn metrics_answer_in_prometheus_text_format() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    let resp = admin_get(&proxy, "/metrics").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = resp.text();
    assert!(
        text.contains("# TYPE switchyard_build_info gauge"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "switchyard_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(text.contains("switchyard_config_version"), "{text}");
}

#[tokio::test]
async fn admin_paths_on_a_proxy_listener_are_routed_like_any_request() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/config",
        "/upstreams",
        "/explain",
    ] {
        let resp = http_client::get(&proxy.url("public", path))
            .await
            .expect("GET on the proxy listener");
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(resp.text(), "no route\n", "{path}");
    }
    assert_eq!(backend.request_count(), 0);

    // With a catch-all route the path goes to the backend, never to the admin API.
    let catch_all = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
cluster = "app"

[clusters.app]
endpoints = ["{}"]
"#,
        backend.addr()
    ));
    let resp = http_client::get(&catch_all.url("public", "/metrics"))
        .await
        .expect("GET /metrics through the proxy");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-backend"), Some("app"));
    assert!(!resp.text().contains("switchyard_"));
}

#[tokio::test]
async fn explain_names_the_endpoint_a_hash_key_maps_to() {
    let proxy = Proxy::start_toml(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
cluster = "users"

[clusters.users]
balance = "ring_hash"
hash_on = "header:x-user"
endpoints = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
"#,
    );
    let url = "/explain?url=http%3A%2F%2Fa%2Fb&header=x-user%3A%20alice";
    let json = admin_json(&proxy, url).await;
    let hashed = json["matched"]["clusters"][0]["hashed_endpoint"]
        .as_str()
        .expect("hashed_endpoint is filled in")
        .to_owned();
    assert!(hashed.starts_with("127.0.0.1:"), "{hashed}");
    // Same key, same endpoint: the answer comes from the live balancer table.
    let again = admin_json(&proxy, url).await;
    assert_eq!(
        again["matched"]["clusters"][0]["hashed_endpoint"],
        hashed.as_str()
    );
}

/// A GET on the admin API with extra request headers.
async fn admin_get_with(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut req = http::Request::get(proxy.admin_url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    http_client::HttpClient::http1()
        .send(req)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on the admin listener: {e}"))
}

#[tokio::test]
async fn a_rebound_host_or_a_foreign_origin_is_refused() {
    // Issue 26 §3: DNS rebinding makes a browser send `Host: evil.example` to 127.0.0.1; a
    // page elsewhere sends its own `Origin`. Clients without Origin (curl, Prometheus) and the
    // admin's own address or loopback names keep working.
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend));
    let admin = proxy.admin_addr();
    let port = admin.port();
    for host in ["evil.example", &format!("evil.example:{port}")] {
        let refused = admin_get_with(&proxy, "/config", &[("host", host)]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "Host {host}");
        assert!(!refused.text().contains("sha256"), "{}", refused.text());
    }
    for host in [
        admin.to_string(),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let ok = admin_get_with(&proxy, "/config", &[("host", &host)]).await;
        assert_eq!(ok.status, StatusCode::OK, "Host {host}: {}", ok.text());
    }
    let own = format!("http://{admin}");
    let same_origin = admin_get_with(&proxy, "/stats", &[("origin", &own)]).await;
    assert_eq!(same_origin.status, StatusCode::OK, "{}", same_origin.text());
    let foreign = admin_get_with(&proxy, "/stats", &[("origin", "http://evil.example")]).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let purge = http_client::HttpClient::http1()
        .send(
            http::Request::post(proxy.admin_url("/cache/purge?prefix=/"))
                .header("origin", "http://evil.example")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("an answer");
    assert_eq!(purge.status, StatusCode::FORBIDDEN, "{}", purge.text());
}

/// [`config`] with `[admin]` on a free loopback port and `token_file` at `path`.
fn config_with_token(backend: &Backend, path: &std::path::Path) -> String {
    format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        config(backend),
        path.display()
    )
}

#[tokio::test]
async fn with_a_token_file_every_admin_request_needs_the_bearer_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let token_path = dir.path().join("admin-token");
    std::fs::write(&token_path, "  s3cret-token\n").expect("write token");
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config_with_token(&backend, &token_path));
    for path in ["/healthz", "/config", "/metrics"] {
        let none = admin_get_with(&proxy, path, &[]).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(none
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")));
        let wrong = admin_get_with(&proxy, path, &[("authorization", "Bearer s3cret-tokeX")]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        let right = admin_get_with(&proxy, path, &[("authorization", "Bearer s3cret-token")]).await;
        assert_eq!(right.status, StatusCode::OK, "{path}: {}", right.text());
    }
    let reload = http_client::post(&proxy.admin_url("/reload"), "")
        .await
        .expect("answer");
    assert_eq!(reload.status, StatusCode::UNAUTHORIZED);
    let config = admin_get_with(
        &proxy,
        "/config",
        &[("authorization", "Bearer s3cret-token")],
    )
    .await;
    assert!(
        !config.text().contains("s3cret"),
        "the token is never shown"
    );

    // Rotated in the file, the new token applies at the next reload (the config text is
    // unchanged) and the old one stops working.
    std::fs::write(&token_path, "n3w-token\n").expect("rotate token");
    let reload = http_client::HttpClient::http1()
        .send(
            http::Request::post(proxy.admin_url("/reload"))
                .header("authorization", "Bearer s3cret-token")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());
    let old = admin_get_with(
        &proxy,
        "/healthz",
        &[("authorization", "Bearer s3cret-token")],
    )
    .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = admin_get_with(&proxy, "/healthz", &[("authorization", "Bearer n3w-token")]).await;
    assert_eq!(new.status, StatusCode::OK);
}

#[test]
fn a_missing_or_empty_token_file_and_an_open_listen_without_one_are_config_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("switchyard.toml");
    let backend = Backend::start(Behavior::Echo);
    let errors = |toml: &str| match switchyard::config::parse(toml, &path) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e.to_string(),
    };
    let missing = dir.path().join("no-such-token");
    let toml = config_with_token(&backend, &missing);
    let line = toml
        .lines()
        .position(|l| l.starts_with("token_file"))
        .expect("token line")
        + 1;
    let text = errors(&toml);
    assert!(
        text.contains(&format!("switchyard.toml:{line}:14: admin.token_file:"))
            && text.contains("cannot read"),
        "{text}"
    );
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, " \n").expect("write");
    let text = errors(&config_with_token(&backend, &empty));
    assert!(text.contains("holds no token"), "{text}");

    let open = format!("{}\n[admin]\nlisten = \"0.0.0.0:0\"\n", config(&backend));
    let text = errors(&open);
    assert!(
        text.contains("admin.listen") && text.contains("token_file"),
        "{text}"
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").expect("write");
    let open_with_token = format!(
        "{}\n[admin]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n",
        config(&backend),
        token.display()
    );
    let parsed = switchyard::config::parse(&open_with_token, &path).expect("accepted with a token");
    assert!(parsed.admin.token.is_some());
}
