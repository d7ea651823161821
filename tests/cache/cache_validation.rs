//! Validation and stale content (RFC 9111 §4.3, §4.4, §5.2.2.2; RFC 5861), each against a
//! backend that counts requests.

use std::time::Duration;

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::cache::*;
use crate::support::launcher::Proxy;
use crate::support::{wait_until_async, DEADLINE};
use http::Method;

const LAST_MODIFIED: &str = "Tue, 01 Jan 2030 00:00:00 GMT";

#[tokio::test]
async fn revalidation_sends_the_stored_validators() {
    // RFC 9111 §4.3.1: a stale response is validated with If-None-Match (its ETag) and
    // If-Modified-Since (its Last-Modified).
    let (backend, proxy) = start(|req, _| {
        if req.headers.contains_key("if-none-match") {
            return respond(304, &[("etag", "\"v1\"")], "");
        }
        let headers = [
            ("cache-control", "max-age=0"),
            ("etag", "\"v1\""),
            ("last-modified", LAST_MODIFIED),
        ];
        respond(200, &headers, "body")
    });
    get(&proxy, "/val", &[]).await;
    let second = get(&proxy, "/val", &[]).await;
    assert_eq!(second.text(), "body");
    assert_eq!(
        cache_status(&second),
        "switchyard; fwd=stale; fwd-status=304"
    );
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
    assert_eq!(seen[1].headers["if-modified-since"], LAST_MODIFIED);
}

#[tokio::test]
async fn a_304_updates_the_stored_headers() {
    // RFC 9111 §4.3.4 and §3.2: the 304's fields replace the stored ones; the body stays.
    let (backend, proxy) = start(|req, _| {
        if req.headers.contains_key("if-none-match") {
            let headers = [
                ("etag", "\"v1\""),
                ("cache-control", "max-age=60"),
                ("x-version", "2"),
            ];
            return respond(304, &headers, "");
        }
        let headers = [
            ("etag", "\"v1\""),
            ("cache-control", "max-age=0"),
            ("x-version", "1"),
        ];
        respond(200, &headers, "the body")
    });
    let first = get(&proxy, "/u", &[]).await;
    assert_eq!(first.header("x-version"), Some("1"));
    let revalidated = get(&proxy, "/u", &[]).await;
    assert_eq!(
        revalidated.status.as_u16(),
        200,
        "the client gets the full response"
    );
    assert_eq!(revalidated.text(), "the body");
    assert_eq!(revalidated.header("x-version"), Some("2"));
    let hit = get(&proxy, "/u", &[]).await;
    assert_eq!(
        cache_status(&hit),
        "switchyard; hit",
        "fresh again after the 304's max-age"
    );
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(hit.header("content-length"), Some("8"));
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn a_client_with_matching_validators_gets_its_own_304() {
    // RFC 9111 §4.3.2: a cache answers a conditional request from a stored response.
    let (backend, proxy) = start(|_, _| {
        let headers = [
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("last-modified", LAST_MODIFIED),
        ];
        respond(200, &headers, "body")
    });
    get(&proxy, "/c", &[]).await;
    let matching = get(&proxy, "/c", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(matching.status.as_u16(), 304);
    assert!(matching.body.is_empty());
    assert_eq!(matching.header("etag"), Some("\"v1\""));
    let other = get(&proxy, "/c", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(
        (other.status.as_u16(), other.text().as_str()),
        (200, "body")
    );
    let since = get(
        &proxy,
        "/c",
        &[("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT")],
    )
    .await;
    assert_eq!(since.status.as_u16(), 304);
    assert_eq!(backend.request_count(), 1, "all answered from the cache");
}

#[tokio::test]
async fn if_none_match_takes_precedence_over_if_modified_since() {
    // RFC 9110 §13.2.2 (step 3 before 4), as RFC 9111 §4.3.2 requires of a cache: with a
    // non-matching If-None-Match, a satisfied If-Modified-Since must not produce a 304.
    let (_backend, proxy) = start(|_, _| {
        let headers = [
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("last-modified", LAST_MODIFIED),
        ];
        respond(200, &headers, "body")
    });
    get(&proxy, "/p", &[]).await;
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT"),
    ];
    let reply = get(&proxy, "/p", &both).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "body")
    );
    assert_eq!(cache_status(&reply), "switchyard; hit");
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale() {
    // RFC 9111 §5.2.2.2: once stale, a must-revalidate response is not used without successful
    // validation — not for stale-if-error, stale-while-revalidate or a client's max-stale.
    let (backend, proxy) = start(|_, n| {
        if n == 0 {
            let cc = "max-age=0, must-revalidate, stale-if-error=60, stale-while-revalidate=60";
            return respond(200, &[("cache-control", cc), ("etag", "\"v\"")], "stored");
        }
        respond(500, &[], "origin down")
    });
    get(&proxy, "/m", &[]).await;
    let reply = get(&proxy, "/m", &[]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (500, "origin down")
    );
    let max_stale = get(&proxy, "/m", &[("cache-control", "max-stale")]).await;
    assert_eq!(max_stale.status.as_u16(), 500);
    assert_eq!(backend.request_count(), 3);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    // RFC 5861 §3: within the window, stale content is served at once and one background
    // request refreshes it. The Age header makes the response stale from the start; the
    // refresh is slow, so every request below arrives while it is in flight.
    let (backend, proxy) = start(|_, n| {
        let response = respond(
            200,
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=600"),
                ("age", "5"),
            ],
            &format!("v{n}"),
        );
        if n == 0 {
            response
        } else {
            // Long enough for the five requests below on a loaded CI machine.
            Action::Delay(Duration::from_secs(3), Box::new(response))
        }
    });
    get(&proxy, "/swr", &[]).await;
    for _ in 0..5 {
        let stale = get(&proxy, "/swr", &[]).await;
        assert_eq!(stale.text(), "v0");
        let status = cache_status(&stale);
        assert!(status.starts_with("switchyard; hit; ttl=-"), "{status}");
        assert!(
            status.ends_with("detail=stale-while-revalidate"),
            "{status}"
        );
    }
    assert!(wait_until_async(DEADLINE, || backend.request_count() == 2).await);
    // The refresh stored v1 (itself stale at once, so serving it starts the next refresh).
    let refreshed = crate::support::wait_until_check(DEADLINE, || async {
        get(&proxy, "/swr", &[]).await.text() == "v1"
    })
    .await;
    assert!(refreshed, "the background refresh was stored");
    assert!(backend.request_count() <= 3, "one refresh at a time");
}

#[tokio::test]
async fn stale_if_error_serves_stale_on_5xx_reset_and_timeout() {
    // RFC 5861 §4: within the window, a stale response answers for an upstream error.
    let (backend, proxy) = start_with(
        |req, n| {
            if n == 0 {
                return respond(
                    200,
                    &[("cache-control", "max-age=0, stale-if-error=600")],
                    "stale copy",
                );
            }
            match req.headers.get("x-fail").and_then(|v| v.to_str().ok()) {
                Some("reset") => Action::Reset,
                Some("hang") => Action::Hang,
                _ => respond(503, &[], "unavailable"),
            }
        },
        1,
        "timeout = \"500ms\"",
        "",
    );
    get(&proxy, "/sie", &[]).await;
    let on_5xx = get(&proxy, "/sie", &[]).await;
    assert_eq!(
        (on_5xx.status.as_u16(), on_5xx.text().as_str()),
        (200, "stale copy")
    );
    assert_eq!(
        cache_status(&on_5xx),
        "switchyard; fwd=stale; fwd-status=503; detail=stale-if-error"
    );
    let on_reset = get(&proxy, "/sie", &[("x-fail", "reset")]).await;
    assert_eq!(
        (on_reset.status.as_u16(), on_reset.text().as_str()),
        (200, "stale copy")
    );
    assert_eq!(
        cache_status(&on_reset),
        "switchyard; fwd=stale; detail=stale-if-error"
    );
    let on_timeout = get(&proxy, "/sie", &[("x-fail", "hang")]).await;
    assert_eq!(
        (on_timeout.status.as_u16(), on_timeout.text().as_str()),
        (200, "stale copy")
    );
    assert_eq!(backend.request_count(), 4);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_no_endpoint_is_in_service() {
    // RFC 5861 §4 with the proxy's own failure: the only endpoint is gone and fails its probes,
    // and with panic mode off the proxy has nowhere to send the request (its own 503).
    // Ejection alone never gets there: it never takes a cluster's last endpoint in service.
    let mut backend = Backend::start(Behavior::script(|_, _| {
        respond(
            200,
            &[("cache-control", "max-age=0, stale-if-error=600")],
            "stale copy",
        )
    }));
    let toml = config(&backend, 1, "", "").replace(
        "[clusters.origin]\n",
        "[clusters.origin]\npanic_threshold = 0.0\n\
         health_check = { kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", unhealthy_threshold = 1 }\n",
    );
    let proxy = Proxy::start_toml(&toml);
    get(&proxy, "/e", &[]).await;
    backend.stop();
    let endpoint = proxy
        .handle()
        .shared()
        .registry()
        .get("origin", backend.addr())
        .expect("endpoint");
    assert!(
        wait_until_async(DEADLINE, || !endpoint.is_healthy()).await,
        "the probes notice the endpoint is gone"
    );
    for _ in 0..3 {
        let reply = get(&proxy, "/e", &[]).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "stale copy")
        );
    }
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_its_location() {
    // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI and
    // the same-origin Location / Content-Location; an error response invalidates nothing.
    let (backend, proxy) = start(|req, _| match (req.method.as_str(), req.uri.path()) {
        ("POST", "/fail") => respond(500, &[], ""),
        ("POST", _) => respond(
            201,
            &[
                ("location", "/created"),
                ("content-location", "http://elsewhere.example/x"),
            ],
            "",
        ),
        ("DELETE", _) => respond(204, &[], ""),
        _ => respond(200, &[("cache-control", "max-age=60")], req.uri.path()),
    });
    for path in ["/item", "/created", "/fail", "/gone"] {
        get(&proxy, path, &[]).await;
    }
    send(&proxy, Method::POST, "/item", &[]).await;
    send(&proxy, Method::POST, "/fail", &[]).await;
    let deleted = send(&proxy, Method::DELETE, "/gone", &[]).await;
    assert_eq!(cache_status(&deleted), "switchyard; fwd=method");
    for path in ["/item", "/created", "/fail", "/gone"] {
        get(&proxy, path, &[]).await;
    }
    let gets = |path: &str| {
        backend
            .requests()
            .iter()
            .filter(|r| r.method == Method::GET && r.uri.path() == path)
            .count()
    };
    assert_eq!(gets("/item"), 2, "the POST target was invalidated");
    assert_eq!(gets("/created"), 2, "the Location was invalidated");
    assert_eq!(gets("/gone"), 2, "the DELETE target was invalidated");
    assert_eq!(gets("/fail"), 1, "a failed POST invalidates nothing");
}
