//! The router driven by real config text: what `check` accepts is what the router matches.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use http::{HeaderMap, HeaderValue, Method};
use switchyard::config::{self, Config};
use switchyard::router::{RequestView, Router, Verdict};

const CONFIG: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[listeners]]
name = "admin"
listen = "127.0.0.1:0"

[[routes]]
name = "admin-ui"
listener = "admin"
match = { path_prefix = "/" }
cluster = "ops"

[[routes]]
name = "orders"
listener = "public"
match = { host = "api.example.com", path_prefix = "/orders", method = "GET", headers = { "x-canary" = "1" } }
split = [ { cluster = "orders", weight = 90 }, { cluster = "orders-next", weight = 10 } ]
rewrite = { path_prefix = "/v1/orders" }
headers = { request_add = { "x-env" = "prod" }, request_remove = ["x-internal"] }

[[routes]]
name = "shop"
listener = "public"
match = { host = "*.shop.example.com" }
cluster = "shop"

[[routes]]
name = "versioned"
listener = "public"
match = { path_regex = "^/v[0-9]+/" }
cluster = "orders"

[[routes]]
name = "fallback"
listener = "public"
cluster = "shop"

[clusters.orders]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9002"]

[clusters.orders-next]
balance = "ring_hash"
hash_on = "header:x-user-id"
endpoints = ["[::1]:9003"]

[clusters.shop]
endpoints = ["127.0.0.1:9004"]

[clusters.ops]
endpoints = ["127.0.0.1:9005"]
"#;

fn load() -> Config {
    config::parse(CONFIG, Path::new("router_toml.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn view<'a>(
    method: &'a Method,
    host: &'a str,
    target: &'a str,
    headers: &'a HeaderMap,
) -> RequestView<'a> {
    RequestView {
        method,
        host: Some(host),
        path_and_query: target,
        headers,
        client_identity: None,
    }
}

fn canary() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-canary", HeaderValue::from_static("1"));
    headers
}

#[test]
fn routes_parsed_from_toml_match_in_file_order() {
    let config = load();
    let router = Router::new(&config);
    let get = Method::GET;
    let canary = canary();
    let none = HeaderMap::new();
    let name = |host: &str, target: &str, headers: &HeaderMap| {
        router
            .route(0, &view(&get, host, target, headers))
            .unwrap()
            .map(|r| {
                let upstream = r.upstream_target(target).to_owned();
                (r.route.config().name.clone(), upstream)
            })
    };
    let pair = |n: &str, p: &str| Some((n.to_owned(), p.to_owned()));
    assert_eq!(
        name("API.example.com:443", "/orders/7?x=1", &canary),
        pair("orders", "/v1/orders/7?x=1")
    );
    assert_eq!(
        name("api.example.com", "//%6Frders/./7", &canary),
        pair("orders", "/v1/orders/7")
    );
    assert_eq!(
        name("api.example.com", "/orders/7", &none),
        pair("fallback", "/orders/7")
    );
    assert_eq!(
        name("eu.shop.example.com", "/orders/7", &canary),
        pair("shop", "/orders/7")
    );
    assert_eq!(
        name("shop.example.com", "/v2/cart", &none),
        pair("versioned", "/v2/cart")
    );
    assert_eq!(name("h", "/anything", &none), pair("fallback", "/anything"));
    let admin = router
        .route(1, &view(&get, "h", "/orders", &canary))
        .unwrap()
        .unwrap();
    assert_eq!(
        (admin.route.config().name.as_str(), admin.index),
        ("admin-ui", 0)
    );
}

#[test]
fn split_from_toml_stays_within_two_percent_over_ten_thousand_picks() {
    let config = load();
    let router = Router::new(&config);
    let orders = &router.routes()[1];
    let mut rng = fastrand::Rng::with_seed(2);
    let next = (0..10_000)
        .filter(|_| orders.pick_cluster(rng.u64(..)) == "orders-next")
        .count();
    assert!(
        (800..=1200).contains(&next),
        "orders-next got {next} of 10000, want 1000 +- 200"
    );
}

#[test]
fn header_rules_from_toml() {
    let config = load();
    let router = Router::new(&config);
    let mut headers = HeaderMap::new();
    headers.insert("x-internal", HeaderValue::from_static("secret"));
    router.routes()[1].apply_request_headers(&mut headers);
    assert_eq!(headers["x-env"], "prod");
    assert!(!headers.contains_key("x-internal"));
}

#[test]
fn explain_from_toml_names_the_reasons_and_the_clusters() {
    let config = load();
    let router = Router::new(&config);
    let post = Method::POST;
    let none = HeaderMap::new();
    let explanation = router.explain(
        &config,
        Some("public"),
        &view(&post, "api.example.com", "/orders/1", &none),
    );
    let text = explanation.to_string();
    for reason in [
        "route is on listener admin, not public",
        "method POST != GET",
        "header x-canary missing",
        "host api.example.com is not a subdomain of shop.example.com",
        "path /orders/1 does not match regex ^/v[0-9]+/",
        "result: route #5 fallback",
        "cluster shop: balance least_request",
        "endpoints: 127.0.0.1:9004",
    ] {
        assert!(text.contains(reason), "missing {reason:?} in:\n{text}");
    }
    assert_eq!(explanation.routes[4].verdict, Verdict::Matched);

    let get = Method::GET;
    let canary = canary();
    let split = router.explain(
        &config,
        None,
        &view(&get, "api.example.com", "/orders/1", &canary),
    );
    // Without a listener name, the first configured listener (public) is explained.
    assert_eq!(split.listener.as_deref(), Some("public"));
    assert_eq!(split.routes[0].verdict, Verdict::NoMatch);
    let text = split.to_string();
    assert!(
        text.contains("orders weight 90 (90.0%), orders-next weight 10 (10.0%)"),
        "{text}"
    );
    assert!(
        text.contains("cluster orders-next: balance ring_hash, hash_on header:x-user-id"),
        "{text}"
    );
    assert!(text.contains("endpoints: [::1]:9003"), "{text}");
    assert!(text.contains("upstream path: /v1/orders/1"), "{text}");
}
