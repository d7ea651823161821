//! Matching, listener scoping, rewrite and header rules through `Router::route`.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use super::*;

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
}

#[test]
fn exact_host_ignores_case_port_and_trailing_dot() {
    let config = config(
        &["public"],
        vec![route("api", "public", host_exact("API.example.com"), "c")],
    );
    let router = Router::new(&config);
    for host in [
        "api.example.com",
        "Api.Example.COM:8080",
        "api.example.com.",
        "api.example.com.:1",
    ] {
        assert_eq!(
            routed(&router, &Req::get(host, "/")).as_deref(),
            Some("api"),
            "{host}"
        );
    }
    for host in ["shop.example.com", "x.api.example.com", "api.example.co"] {
        assert_eq!(routed(&router, &Req::get(host, "/")), None, "{host}");
    }
    let mut no_host = Req::get("", "/");
    no_host.host = None;
    assert_eq!(routed(&router, &no_host), None);
}

#[test]
fn suffix_host_matches_subdomains_only() {
    let matcher = RouteMatch {
        host: Some(HostMatch::Suffix(".Example.com".into())),
        ..RouteMatch::default()
    };
    let config = config(&["public"], vec![route("wild", "public", matcher, "c")]);
    let router = Router::new(&config);
    for host in ["a.example.com", "x.y.example.com:8443", "A.EXAMPLE.COM."] {
        assert_eq!(
            routed(&router, &Req::get(host, "/")).as_deref(),
            Some("wild"),
            "{host}"
        );
    }
    for host in [
        "example.com",
        "example.com:80",
        "badexample.com",
        "a.example.org",
    ] {
        assert_eq!(routed(&router, &Req::get(host, "/")), None, "{host}");
    }
}

#[test]
fn ipv6_literal_host_with_and_without_port() {
    let config = config(
        &["public"],
        vec![route("v6", "public", host_exact("[::1]"), "c")],
    );
    let router = Router::new(&config);
    for host in ["[::1]:8080", "[::1]", "::1"] {
        assert_eq!(
            routed(&router, &Req::get(host, "/")).as_deref(),
            Some("v6"),
            "{host}"
        );
    }
    assert_eq!(routed(&router, &Req::get("[::2]:8080", "/")), None);
}

#[test]
fn path_matchers_use_the_normalised_path() {
    let exact = RouteMatch {
        path: Some(PathMatch::Exact("/health".into())),
        ..RouteMatch::default()
    };
    let regex = RouteMatch {
        path: Some(PathMatch::Regex(Regex::new("^/v[0-9]+/").unwrap())),
        ..RouteMatch::default()
    };
    let config = config(
        &["public"],
        vec![
            route("exact", "public", exact, "c"),
            route("admin", "public", prefix("/admin"), "c"),
            route("versioned", "public", regex, "c"),
        ],
    );
    let router = Router::new(&config);
    let cases = [
        ("/health", Some("exact")),
        ("/health?full=1", Some("exact")),
        ("//health", Some("exact")),
        ("/health/", None),
        ("/healthz", None),
        ("/admin", Some("admin")),
        ("/administrator", Some("admin")),
        ("/%2e/admin", Some("admin")),
        ("//admin", Some("admin")),
        ("/x/../admin/users", Some("admin")),
        ("/v1/users", Some("versioned")),
        ("/%76%32/users", Some("versioned")),
        ("/v/users", None),
        ("/users?x=/v1/", None),
    ];
    for (target, want) in cases {
        assert_eq!(
            routed(&router, &Req::get("h", target)).as_deref(),
            want,
            "{target}"
        );
    }
}

#[test]
fn method_headers_and_identity() {
    let matcher = RouteMatch {
        method: Some(Method::POST),
        headers: vec![(
            HeaderName::from_static("x-canary"),
            HeaderValue::from_static("1"),
        )],
        client_identity: Some("spiffe://local/web".into()),
        ..RouteMatch::default()
    };
    let config = config(&["public"], vec![route("strict", "public", matcher, "c")]);
    let router = Router::new(&config);
    let mut req = Req::get("h", "/");
    req.method = Method::POST;
    req.identity = Some("spiffe://local/web".into());
    req.headers
        .append("x-canary", HeaderValue::from_static("0"));
    assert_eq!(routed(&router, &req), None, "only a differing value");
    req.headers
        .append("x-canary", HeaderValue::from_static("1"));
    assert_eq!(
        routed(&router, &req).as_deref(),
        Some("strict"),
        "any repeated value may match"
    );
    req.method = Method::GET;
    assert_eq!(routed(&router, &req), None, "method");
    req.method = Method::POST;
    req.identity = None;
    assert_eq!(routed(&router, &req), None, "no identity never matches");
    req.identity = Some("spiffe://local/other".into());
    assert_eq!(routed(&router, &req), None, "other identity");
    req.identity = Some("spiffe://local/web".into());
    req.headers.remove("x-canary");
    assert_eq!(routed(&router, &req), None, "header missing");
}

#[test]
fn first_match_wins_within_the_listener() {
    let config = config(
        &["public", "internal"],
        vec![
            route("internal-all", "internal", RouteMatch::default(), "c"),
            route("orders", "public", prefix("/orders"), "c"),
            route("orders-shadowed", "public", prefix("/orders/1"), "c"),
            route("fallback", "public", RouteMatch::default(), "c"),
        ],
    );
    let router = Router::new(&config);
    let view_req = Req::get("h", "/orders/1");
    let routed_public = router.route(0, &view_req.view()).unwrap().unwrap();
    assert_eq!(
        (
            routed_public.route.config().name.as_str(),
            routed_public.index
        ),
        ("orders", 1)
    );
    assert_eq!(
        routed(&router, &Req::get("h", "/other")).as_deref(),
        Some("fallback")
    );
    let internal = router
        .route(1, &Req::get("h", "/orders/1").view())
        .unwrap()
        .unwrap();
    assert_eq!(internal.index, 0);
    assert!(
        router
            .route(7, &Req::get("h", "/").view())
            .unwrap()
            .is_none(),
        "unknown listener"
    );
}

#[test]
fn malformed_path_is_an_error_even_without_routes() {
    let config = config(&["public"], vec![]);
    let router = Router::new(&config);
    assert_eq!(
        router.route(0, &Req::get("h", "/a%zz").view()).unwrap_err(),
        PathError::InvalidEscape(2)
    );
    assert!(router
        .route(0, &Req::get("h", "/a").view())
        .unwrap()
        .is_none());
}

#[test]
fn upstream_target_is_normalised_rewritten_and_keeps_the_query() {
    let mut api = route("api", "public", prefix("/api"), "c");
    api.rewrite = Some(Rewrite {
        path_prefix: "/v2".into(),
    });
    let config = config(
        &["public"],
        vec![api, route("rest", "public", RouteMatch::default(), "c")],
    );
    let router = Router::new(&config);
    let upstream = |target: &str| {
        router
            .route(0, &Req::get("h", target).view())
            .unwrap()
            .unwrap()
            .upstream_target(target)
            .to_owned()
    };
    assert_eq!(
        upstream("/api//users/./1?x=%2e%2E&y"),
        "/v2/users/1?x=%2e%2E&y"
    );
    assert_eq!(upstream("/a/%2e%2e/api"), "/v2");
    assert_eq!(upstream("/other/%7euser/%3f"), "/other/~user/%3F");
}

#[test]
fn route_header_rules_apply_both_ways() {
    let mut r = route("r", "public", RouteMatch::default(), "c");
    r.headers = HeaderRules {
        request_add: vec![(
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("prod"),
        )],
        request_remove: vec![HeaderName::from_static("x-internal")],
        response_add: vec![(
            HeaderName::from_static("x-served-by"),
            HeaderValue::from_static("sy"),
        )],
        response_remove: vec![HeaderName::from_static("server")],
    };
    let config = config(&["public"], vec![r]);
    let router = Router::new(&config);
    let compiled = &router.routes()[0];
    let mut request = HeaderMap::new();
    request.insert("x-env", HeaderValue::from_static("dev"));
    request.insert("x-internal", HeaderValue::from_static("1"));
    compiled.apply_request_headers(&mut request);
    assert_eq!(request["x-env"], "prod");
    assert!(!request.contains_key("x-internal"));
    let mut response = HeaderMap::new();
    response.insert("server", HeaderValue::from_static("nginx"));
    compiled.apply_response_headers(&mut response);
    assert_eq!(response["x-served-by"], "sy");
    assert!(!response.contains_key("server"));
}
