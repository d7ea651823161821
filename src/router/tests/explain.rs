//! `Router::explain`: reasons, verdicts, targets, JSON.

use http::{HeaderName, HeaderValue, Method};

use super::*;

#[test]
fn explain_gives_a_reason_for_every_non_matching_route() {
    let mut canary = route(
        "canary",
        "public",
        RouteMatch {
            headers: vec![(
                HeaderName::from_static("x-canary"),
                HeaderValue::from_static("1"),
            )],
            ..RouteMatch::default()
        },
        "c",
    );
    canary.target = RouteTarget::Split(vec![
        WeightedCluster {
            cluster: "stable".into(),
            weight: 90,
        },
        WeightedCluster {
            cluster: "next".into(),
            weight: 10,
        },
    ]);
    let post = RouteMatch {
        method: Some(Method::POST),
        ..RouteMatch::default()
    };
    let config = config(
        &["public", "admin"],
        vec![
            route("shop", "public", host_exact("shop.example.com"), "c"),
            route("orders", "public", prefix("/orders"), "c"),
            route("writes", "public", post, "c"),
            route("ops", "admin", RouteMatch::default(), "c"),
            canary.clone(),
            {
                let mut split = canary;
                split.name = "split".into();
                split.matcher = RouteMatch::default();
                split
            },
            route("never", "public", RouteMatch::default(), "c"),
        ],
    );
    let router = Router::new(&config);
    let req = Req::get("api.example.com:8080", "/x/./y?q=1");
    let explanation = router.explain(&config, Some("public"), &req.view());
    let text = explanation.to_string();
    for reason in [
        "host api.example.com != shop.example.com",
        "path /x/y does not start with /orders",
        "method GET != POST",
        "route is on listener admin, not public",
        "header x-canary missing",
    ] {
        assert!(text.contains(reason), "missing {reason:?} in:\n{text}");
    }
    let verdicts: Vec<Verdict> = explanation.routes.iter().map(|r| r.verdict).collect();
    use Verdict::*;
    assert_eq!(
        verdicts,
        [NoMatch, NoMatch, NoMatch, NoMatch, NoMatch, Matched, NotReached]
    );
    assert!(
        text.contains("split stable weight 90 (90.0%), next weight 10 (10.0%)"),
        "{text}"
    );
    assert!(text.contains("upstream path: /x/y?q=1"), "{text}");
    assert!(
        text.contains("cluster stable: balance round_robin"),
        "{text}"
    );
    assert!(
        text.contains("endpoints: 127.0.0.1:9001, 127.0.0.1:9002"),
        "{text}"
    );
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["matched"]["name"], "split");
    assert_eq!(json["routes"][0]["verdict"], "no_match");
    assert_eq!(json["matched"]["target"]["kind"], "split");
    assert!(json["matched"]["clusters"][0]["hashed_endpoint"].is_null());
}

#[test]
fn explain_reports_a_rejected_path_and_no_route() {
    let config = config(
        &["public"],
        vec![route("orders", "public", prefix("/orders"), "c")],
    );
    let router = Router::new(&config);
    let bad = router.explain(&config, None, &Req::get("h", "/a%00").view());
    assert!(bad.path_error.is_some());
    assert!(bad.to_string().contains("400"), "{bad}");
    let none = router.explain(&config, None, &Req::get("h", "/x").view());
    assert!(none.matched.is_none());
    assert!(none.to_string().contains("404"), "{none}");
}
