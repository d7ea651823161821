//! Route matching against a naive matcher written from the README's rules (issue 16): random
//! route tables, parsed from TOML as a user writes them, and random requests; the router must
//! pick the same route as "the first route in file order whose every condition holds".
//!
//! The naive side shares nothing with `src/router`: hosts are compared by lower-casing both
//! sides and cutting the port, a `*.suffix` host matches any name ending in `.suffix` but not
//! the apex, `path` is equality and `path_prefix` a string prefix of the normalised path (the
//! generated paths are already normal), `method` is equality and a header condition holds when
//! any of the request's values for that name equals it.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use switchyard::router::{RequestView, Router};

const HOSTS: &[&str] = &[
    "a.example",
    "b.example",
    "x.a.example",
    "A.Example",
    "other.test",
];
const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/v1",
    "/api/v1/users",
    "/apix",
    "/static/app.js",
];
const METHODS: &[&str] = &["GET", "POST", "DELETE"];

#[derive(Debug, Clone)]
enum HostRule {
    Exact(&'static str),
    Suffix(&'static str),
}

#[derive(Debug, Clone)]
enum PathRule {
    Exact(&'static str),
    Prefix(&'static str),
}

#[derive(Debug, Clone)]
struct Rule {
    host: Option<HostRule>,
    path: Option<PathRule>,
    method: Option<&'static str>,
    header: Option<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
struct Req {
    host: Option<String>,
    path: &'static str,
    method: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn rule() -> impl Strategy<Value = Rule> {
    let host = prop::option::of(prop_oneof![
        prop::sample::select(vec!["a.example", "b.example", "A.EXAMPLE"]).prop_map(HostRule::Exact),
        prop::sample::select(vec!["a.example", "example"]).prop_map(HostRule::Suffix),
    ]);
    let path = prop::option::of(prop_oneof![
        prop::sample::select(PATHS.to_vec()).prop_map(PathRule::Exact),
        prop::sample::select(vec!["/", "/api", "/api/", "/static"]).prop_map(PathRule::Prefix),
    ]);
    let method = prop::option::of(prop::sample::select(METHODS.to_vec()));
    let header = prop::option::of(prop::sample::select(vec![
        ("x-canary", "1"),
        ("x-canary", "0"),
        ("x-tenant", "blue"),
    ]));
    (host, path, method, header).prop_map(|(host, path, method, header)| Rule {
        host,
        path,
        method,
        header,
    })
}

fn req() -> impl Strategy<Value = Req> {
    let host = prop::option::of(
        (
            prop::sample::select(HOSTS.to_vec()),
            prop::option::of(1u16..65535),
        )
            .prop_map(|(host, port)| match port {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }),
    );
    let headers = prop::collection::vec(
        prop::sample::select(vec![
            ("x-canary", "1"),
            ("x-canary", "0"),
            ("x-tenant", "blue"),
            ("x-tenant", "red"),
        ]),
        0..3,
    );
    (
        host,
        prop::sample::select(PATHS.to_vec()),
        prop::sample::select(METHODS.to_vec()),
        headers,
    )
        .prop_map(|(host, path, method, headers)| Req {
            host,
            path,
            method,
            headers,
        })
}

/// The route table as a user writes it.
fn toml(rules: &[Rule]) -> String {
    let mut text = String::from(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [clusters.app]\nendpoints = [\"127.0.0.1:9\"]\n",
    );
    for rule in rules {
        let mut conditions = Vec::new();
        match &rule.host {
            Some(HostRule::Exact(h)) => conditions.push(format!("host = \"{h}\"")),
            Some(HostRule::Suffix(s)) => conditions.push(format!("host = \"*.{s}\"")),
            None => {}
        }
        match &rule.path {
            Some(PathRule::Exact(p)) => conditions.push(format!("path = \"{p}\"")),
            Some(PathRule::Prefix(p)) => conditions.push(format!("path_prefix = \"{p}\"")),
            None => {}
        }
        if let Some(m) = rule.method {
            conditions.push(format!("method = \"{m}\""));
        }
        if let Some((name, value)) = rule.header {
            conditions.push(format!("headers = {{ \"{name}\" = \"{value}\" }}"));
        }
        text.push_str(&format!(
            "\n[[routes]]\ncluster = \"app\"\nmatch = {{ {} }}\n",
            conditions.join(", ")
        ));
    }
    text
}

/// The README's rules, spelled out as plainly as possible.
fn naive(rules: &[Rule], req: &Req) -> Option<usize> {
    let host = req
        .host
        .as_ref()
        .map(|h| h.split(':').next().unwrap().to_ascii_lowercase());
    rules.iter().position(|rule| {
        let host_ok = match &rule.host {
            None => true,
            Some(HostRule::Exact(want)) => host.as_deref() == Some(&want.to_ascii_lowercase()),
            Some(HostRule::Suffix(suffix)) => host
                .as_deref()
                .is_some_and(|h| h.ends_with(&format!(".{suffix}"))),
        };
        let path_ok = match &rule.path {
            None => true,
            Some(PathRule::Exact(want)) => req.path == *want,
            Some(PathRule::Prefix(prefix)) => req.path.starts_with(prefix),
        };
        let method_ok = rule.method.is_none_or(|m| m == req.method);
        let header_ok = rule
            .header
            .is_none_or(|(name, value)| req.headers.iter().any(|&(n, v)| n == name && v == value));
        host_ok && path_ok && method_ok && header_ok
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(1000))]

    #[test]
    fn the_router_picks_what_the_naive_matcher_picks(
        rules in prop::collection::vec(rule(), 1..12),
        requests in prop::collection::vec(req(), 1..16),
    ) {
        let text = toml(&rules);
        let config = switchyard::config::parse(&text, Path::new("prop.toml"))
            .unwrap_or_else(|e| panic!("generated config refused: {e}\n{text}"));
        let router = Router::new(&config);
        for req in &requests {
            let method = Method::from_bytes(req.method.as_bytes()).unwrap();
            let mut headers = HeaderMap::new();
            for (name, value) in &req.headers {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let view = RequestView {
                method: &method,
                host: req.host.as_deref(),
                path_and_query: req.path,
                headers: &headers,
                client_identity: None,
            };
            let got = router.route(0, &view).unwrap().map(|routed| routed.index);
            prop_assert_eq!(got, naive(&rules, req), "request {:?}\n{}", req, text);
        }
    }
}
