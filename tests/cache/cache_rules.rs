//! What the shared cache stores and reuses (RFC 9111 §3, §4, §5; RFC 9213), each test against
//! a backend that counts requests. The "where the usual caches go wrong" cases of issue 11 are
//! here: `Age`, `Authorization`, `Vary: *`, invalid `Expires`, `Connection`-named headers, no
//! freshness information, and `CDN-Cache-Control`.

use crate::support::cache::*;
use http::Method;

const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60")];

#[tokio::test]
async fn fresh_response_is_stored_then_served_from_cache() {
    // RFC 9111 §3 (storing) and §4.2 (serving fresh); RFC 9211 Cache-Status.
    let (backend, proxy) = start(|_, n| respond(200, FRESH, &format!("body-{n}")));
    let first = get(&proxy, "/fresh", &[]).await;
    assert_eq!(
        (first.status.as_u16(), first.text().as_str()),
        (200, "body-0")
    );
    assert_eq!(cache_status(&first), "switchyard; fwd=uri-miss; stored");
    let second = get(&proxy, "/fresh", &[]).await;
    assert_eq!(
        (second.status.as_u16(), second.text().as_str()),
        (200, "body-0")
    );
    assert_eq!(cache_status(&second), "switchyard; hit");
    assert!(age(&second).is_some(), "a hit carries Age (§5.1)");
    assert_eq!(second.header("x-request-id").map(str::len), Some(32));
    assert_eq!(upstream_count(&backend, "/fresh"), 1);
    // Another URL is another key.
    get(&proxy, "/fresh?v=2", &[]).await;
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn age_is_read_from_upstream_and_generated_on_hits() {
    // RFC 9111 §4.2.3 (age calculation) and §5.1: the upstream's Age counts toward the age, a hit
    // reports it, and a response older than its max-age is not served as fresh.
    let (backend, proxy) = start(|req, _| match req.uri.path() {
        "/aged" => respond(
            200,
            &[("cache-control", "max-age=3600"), ("age", "30")],
            "a",
        ),
        _ => respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "100"),
                ("etag", "\"x\""),
            ],
            "b",
        ),
    });
    get(&proxy, "/aged", &[]).await;
    let hit = get(&proxy, "/aged", &[]).await;
    assert_eq!(cache_status(&hit), "switchyard; hit");
    let hit_age = age(&hit).expect("Age on the hit");
    assert!(
        (30..=32).contains(&hit_age),
        "Age {hit_age} should start from the upstream's 30"
    );

    get(&proxy, "/too-old", &[]).await;
    let again = get(&proxy, "/too-old", &[]).await;
    assert_eq!(
        upstream_count(&backend, "/too-old"),
        2,
        "Age 100 > max-age 60: stale at once"
    );
    assert!(
        cache_status(&again).contains("fwd=stale"),
        "{}",
        cache_status(&again)
    );
}

#[tokio::test]
async fn no_store_and_private_responses_are_never_stored() {
    // RFC 9111 §5.2.2.5 (no-store) and §5.2.2.7 (private: a shared cache must not store it).
    let (backend, proxy) = start(|req, _| match req.uri.path() {
        "/no-store" => respond(200, &[("cache-control", "no-store, max-age=60")], "x"),
        _ => respond(200, &[("cache-control", "private, max-age=60")], "x"),
    });
    for path in ["/no-store", "/private"] {
        let first = get(&proxy, path, &[]).await;
        assert!(
            cache_status(&first).contains("detail="),
            "{}",
            cache_status(&first)
        );
        get(&proxy, path, &[]).await;
        assert_eq!(upstream_count(&backend, path), 2, "{path} was reused");
    }
}

#[tokio::test]
async fn authorization_requests_are_not_served_from_the_shared_cache_unless_the_response_allows_it()
{
    // RFC 9111 §3.5: only public, s-maxage or must-revalidate let a shared cache reuse a response
    // to a request with Authorization.
    let (backend, proxy) = start(|req, _| {
        let cc = match req.uri.path() {
            "/public" => "public, max-age=60",
            "/s-maxage" => "s-maxage=60",
            "/must-revalidate" => "must-revalidate, max-age=60",
            _ => "max-age=60",
        };
        respond(200, &[("cache-control", cc)], req.uri.path())
    });
    let auth = [("authorization", "Bearer alice")];
    for path in ["/plain", "/public", "/s-maxage", "/must-revalidate"] {
        get(&proxy, path, &auth).await;
        get(&proxy, path, &[("authorization", "Bearer bob")]).await;
    }
    assert_eq!(
        upstream_count(&backend, "/plain"),
        2,
        "max-age alone is not enough"
    );
    assert_eq!(upstream_count(&backend, "/public"), 1);
    assert_eq!(upstream_count(&backend, "/s-maxage"), 1);
    assert_eq!(upstream_count(&backend, "/must-revalidate"), 1);

    // A response stored for an anonymous request is not handed to an authorised one either,
    // unless it allows authorised reuse.
    get(&proxy, "/anon", &[]).await;
    get(&proxy, "/anon", &[]).await;
    get(&proxy, "/anon", &auth).await;
    assert_eq!(upstream_count(&backend, "/anon"), 2);
}

#[tokio::test]
async fn vary_keys_variants_by_the_named_request_headers() {
    // RFC 9111 §4.1: a stored response is used only for requests whose Vary-named fields match.
    let (backend, proxy) = start(|req, _| {
        let lang = req
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok());
        let body = lang.unwrap_or("none").to_owned();
        respond(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            &body,
        )
    });
    let en = get(&proxy, "/v", &[("accept-language", "en")]).await;
    let fr = get(&proxy, "/v", &[("accept-language", "fr")]).await;
    assert_eq!(cache_status(&fr), "switchyard; fwd=vary-miss; stored");
    let en_again = get(&proxy, "/v", &[("accept-language", "en")]).await;
    let fr_again = get(&proxy, "/v", &[("accept-language", "fr")]).await;
    let none = get(&proxy, "/v", &[]).await;
    assert_eq!((en.text(), en_again.text()), ("en".into(), "en".into()));
    assert_eq!((fr.text(), fr_again.text()), ("fr".into(), "fr".into()));
    assert_eq!(none.text(), "none");
    assert_eq!(cache_status(&en_again), "switchyard; hit");
    assert_eq!(upstream_count(&backend, "/v"), 3);
}

#[tokio::test]
async fn vary_star_is_never_served_from_cache_even_mixed_with_other_names() {
    // RFC 9111 §4.1: "Vary: *" always fails to match.
    let (backend, proxy) = start(|req, _| {
        let vary = if req.uri.path() == "/star" {
            "*"
        } else {
            "accept, *"
        };
        respond(
            200,
            &[("cache-control", "public, max-age=60"), ("vary", vary)],
            "x",
        )
    });
    for path in ["/star", "/mixed"] {
        for _ in 0..3 {
            let r = get(&proxy, path, &[]).await;
            assert!(
                cache_status(&r).contains("detail=vary-star"),
                "{}",
                cache_status(&r)
            );
        }
        assert_eq!(upstream_count(&backend, path), 3, "{path}");
    }
}

#[tokio::test]
async fn an_invalid_expires_is_treated_as_already_expired() {
    // RFC 9111 §5.3: an invalid Expires (e.g. "0") means "already expired".
    let (backend, proxy) = start(|req, _| {
        let expires = if req.uri.path() == "/zero" {
            "0"
        } else {
            "not a date"
        };
        respond(200, &[("expires", expires), ("etag", "\"e\"")], "x")
    });
    for path in ["/zero", "/garbage"] {
        get(&proxy, path, &[]).await;
        let second = get(&proxy, path, &[]).await;
        assert_eq!(
            upstream_count(&backend, path),
            2,
            "{path} reused without validation"
        );
        assert!(
            cache_status(&second).contains("fwd=stale"),
            "{}",
            cache_status(&second)
        );
    }
}

#[tokio::test]
async fn a_response_without_freshness_information_is_not_reused_without_validation() {
    // RFC 9111 §4.2.2 / §4.3: no explicit lifetime and no Last-Modified for a heuristic: every
    // reuse is validated first (here the ETag is sent as If-None-Match).
    let (backend, proxy) = start(|req, _| {
        if req
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return respond(304, &[("etag", "\"v1\"")], "");
        }
        respond(200, &[("etag", "\"v1\"")], "full body")
    });
    get(&proxy, "/nofresh", &[]).await;
    let second = get(&proxy, "/nofresh", &[]).await;
    assert_eq!(second.text(), "full body");
    assert_eq!(
        cache_status(&second),
        "switchyard; fwd=stale; fwd-status=304"
    );
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");

    // Nothing to validate with either: not stored at all.
    let (backend, proxy) = start(|_, _| respond(200, &[], "x"));
    let first = get(&proxy, "/bare", &[]).await;
    assert!(
        cache_status(&first).contains("detail=no-freshness"),
        "{}",
        cache_status(&first)
    );
    get(&proxy, "/bare", &[]).await;
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn heuristic_freshness_comes_from_last_modified() {
    // RFC 9111 §4.2.2: 10 % of the time since Last-Modified, for a heuristically cacheable status.
    let ten_days_ago = httpdate::fmt_http_date(
        std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86400),
    );
    let (backend, proxy) = start(move |req, _| {
        let status = if req.uri.path() == "/ok" { 200 } else { 302 };
        respond(
            status,
            &[("last-modified", &ten_days_ago), ("location", "/ok")],
            "x",
        )
    });
    get(&proxy, "/ok", &[]).await;
    let hit = get(&proxy, "/ok", &[]).await;
    assert_eq!(cache_status(&hit), "switchyard; hit");
    // 302 is not heuristically cacheable: it needs explicit freshness.
    get(&proxy, "/found", &[]).await;
    get(&proxy, "/found", &[]).await;
    assert_eq!(upstream_count(&backend, "/ok"), 1);
    assert_eq!(upstream_count(&backend, "/found"), 2);
}

#[tokio::test]
async fn headers_named_in_connection_are_neither_forwarded_nor_stored() {
    // RFC 9110 §7.6.1 and RFC 9111 §3.1: Connection-nominated fields are hop-by-hop.
    let (backend, proxy) = start(|_, _| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("x-kept", "1"),
            ],
            "x",
        )
    });
    let first = get(&proxy, "/conn", &[]).await;
    let hit = get(&proxy, "/conn", &[]).await;
    assert_eq!(cache_status(&hit), "switchyard; hit");
    for r in [&first, &hit] {
        assert!(
            r.header("x-secret").is_none(),
            "x-secret leaked: {:?}",
            r.headers
        );
        assert_eq!(r.header("x-kept"), Some("1"));
    }
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn cdn_cache_control_takes_precedence_over_cache_control() {
    // RFC 9213 §2.1: a cache that honours CDN-Cache-Control ignores Cache-Control (and Expires).
    let (backend, proxy) = start(|req, _| match req.uri.path() {
        "/cdn-allows" => respond(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            "a",
        ),
        _ => respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            "b",
        ),
    });
    for _ in 0..2 {
        get(&proxy, "/cdn-allows", &[]).await;
        get(&proxy, "/cdn-forbids", &[]).await;
    }
    assert_eq!(upstream_count(&backend, "/cdn-allows"), 1);
    assert_eq!(upstream_count(&backend, "/cdn-forbids"), 2);
}

#[tokio::test]
async fn request_no_cache_max_age_and_min_fresh_go_upstream() {
    // RFC 9111 §5.2.1.4 (no-cache), §5.2.1.1 (max-age), §5.2.1.3 (min-fresh), §5.4 (Pragma).
    let (backend, proxy) = start(|req, _| {
        if req.headers.contains_key("if-none-match") {
            return respond(
                304,
                &[
                    ("etag", "\"v\""),
                    ("cache-control", "max-age=60"),
                    ("age", "10"),
                ],
                "",
            );
        }
        respond(
            200,
            &[
                ("etag", "\"v\""),
                ("cache-control", "max-age=60"),
                ("age", "10"),
            ],
            "body",
        )
    });
    get(&proxy, "/r", &[]).await;
    let no_cache = get(&proxy, "/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(no_cache.text(), "body");
    assert_eq!(
        cache_status(&no_cache),
        "switchyard; fwd=request; fwd-status=304"
    );
    // The stored response is 10 s old (its Age): older than the client's max-age=5.
    get(&proxy, "/r", &[("cache-control", "max-age=5")]).await;
    get(&proxy, "/r", &[("cache-control", "min-fresh=120")]).await;
    get(&proxy, "/r", &[("pragma", "no-cache")]).await;
    assert_eq!(upstream_count(&backend, "/r"), 5);
    let hit = get(
        &proxy,
        "/r",
        &[("cache-control", "max-age=30, min-fresh=10")],
    )
    .await;
    assert_eq!(cache_status(&hit), "switchyard; hit");
    assert_eq!(upstream_count(&backend, "/r"), 5);
}

#[tokio::test]
async fn only_if_cached_answers_504_on_a_miss() {
    // RFC 9111 §5.2.1.7: only-if-cached with nothing stored → 504, nothing forwarded.
    let (backend, proxy) = start(|_, _| respond(200, FRESH, "x"));
    let only = [("cache-control", "only-if-cached")];
    let miss = get(&proxy, "/o", &only).await;
    assert_eq!(miss.status.as_u16(), 504);
    assert!(cache_status(&miss).contains("only-if-cached"));
    assert_eq!(backend.request_count(), 0);
    get(&proxy, "/o", &[]).await;
    let hit = get(&proxy, "/o", &only).await;
    assert_eq!((hit.status.as_u16(), hit.text().as_str()), (200, "x"));
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get_and_a_head_miss_stores_nothing() {
    // RFC 9110 §9.3.2 / RFC 9111 §4: a stored GET response answers HEAD (no body); a response to
    // HEAD has no body to store.
    let (backend, proxy) = start(|_, _| respond(200, FRESH, "twelve bytes"));
    let head_miss = send(&proxy, Method::HEAD, "/h", &[]).await;
    assert_eq!(head_miss.status.as_u16(), 200);
    assert!(head_miss.body.is_empty());
    get(&proxy, "/h", &[]).await;
    assert_eq!(upstream_count(&backend, "/h"), 2, "the HEAD stored nothing");
    let head_hit = send(&proxy, Method::HEAD, "/h", &[]).await;
    assert_eq!(cache_status(&head_hit), "switchyard; hit");
    assert!(head_hit.body.is_empty());
    assert_eq!(head_hit.header("content-length"), Some("12"));
    assert_eq!(upstream_count(&backend, "/h"), 2);
}

#[tokio::test]
async fn a_route_without_cache_is_not_cached() {
    // `cache = true` is per route: the same backend behind a plain route is always asked.
    let backend = crate::support::backend::Backend::start(
        crate::support::backend::Behavior::script(|_, _| respond(200, FRESH, "x")),
    );
    let toml = config(&backend, 1, "match = { path_prefix = \"/cached\" }", "")
        + "\n[[routes]]\nlistener = \"public\"\ncluster = \"origin\"\n";
    let proxy = crate::support::launcher::Proxy::start_toml(&toml);
    for _ in 0..2 {
        let r = get(&proxy, "/plain", &[]).await;
        assert!(r.header("cache-status").is_none());
        get(&proxy, "/cached", &[]).await;
    }
    assert_eq!(upstream_count(&backend, "/plain"), 2);
    assert_eq!(upstream_count(&backend, "/cached"), 1);
}

#[tokio::test]
async fn hits_are_served_over_http2_too() {
    // The stored response is protocol-neutral: stored from an HTTP/1.1 client, served to h2c.
    let (backend, proxy) = start(|_, _| respond(200, FRESH, "shared"));
    get(&proxy, "/h2", &[]).await;
    let reply = crate::support::http_client::get_h2(&proxy.url("public", "/h2"))
        .await
        .expect("h2c reply");
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "shared")
    );
    assert_eq!(cache_status(&reply), "switchyard; hit");
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn a_response_cached_for_one_route_never_answers_another_route() {
    // Issue 26 §3: the same URL behind two routes (a header-matched canary to cluster `canary`,
    // the rest to `stable`) is two cached objects; neither backend says `Vary: x-canary`, so
    // only the route can keep them apart. A purge by URL still drops both.
    let stable =
        crate::support::backend::Backend::start(crate::support::backend::Behavior::script(
            |_, n| respond(200, FRESH, &format!("stable-{n}")),
        ));
    let canary =
        crate::support::backend::Backend::start(crate::support::backend::Behavior::script(
            |_, n| respond(200, FRESH, &format!("canary-{n}")),
        ));
    let toml = format!(
        "[runtime]\nworkers = 1\ndrain_timeout = \"2s\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"canary\"\nlistener = \"public\"\ncluster = \"canary\"\ncache = true\n\
         timeout = \"5s\"\nmatch = {{ headers = {{ \"x-canary\" = \"1\" }} }}\n\n\
         [[routes]]\nname = \"stable\"\nlistener = \"public\"\ncluster = \"stable\"\ncache = true\n\
         timeout = \"5s\"\n\n\
         [clusters.stable]\nendpoints = [\"{}\"]\n\n\
         [clusters.canary]\nendpoints = [\"{}\"]\n\n[cache]\n",
        stable.addr(),
        canary.addr()
    );
    let proxy = crate::support::launcher::Proxy::start_toml(&toml);
    let first = get(&proxy, "/page", &[]).await;
    assert_eq!(first.text(), "stable-0");
    let to_canary = get(&proxy, "/page", &[("x-canary", "1")]).await;
    assert_eq!(
        to_canary.text(),
        "canary-0",
        "the canary route got the stable route's stored response ({})",
        cache_status(&to_canary)
    );
    assert_eq!(upstream_count(&canary, "/page"), 1);
    assert_eq!(
        cache_status(&to_canary),
        "switchyard; fwd=uri-miss; stored",
        "nothing stored for this route: a URI miss, not a Vary miss"
    );
    // Each route now hits its own copy.
    let stable_hit = get(&proxy, "/page", &[]).await;
    assert_eq!(
        (
            stable_hit.text().as_str(),
            cache_status(&stable_hit).as_str()
        ),
        ("stable-0", "switchyard; hit")
    );
    let canary_hit = get(&proxy, "/page", &[("x-canary", "1")]).await;
    assert_eq!(
        (
            canary_hit.text().as_str(),
            cache_status(&canary_hit).as_str()
        ),
        ("canary-0", "switchyard; hit")
    );
    assert_eq!(upstream_count(&stable, "/page"), 1);
    assert_eq!(upstream_count(&canary, "/page"), 1);

    // `?key=URL` purges the URL for every route.
    let key = format!("http://{}/page", proxy.addr("public"));
    let purge =
        crate::support::http_client::post(&proxy.admin_url(&format!("/cache/purge?key={key}")), "")
            .await
            .expect("purge answered");
    assert_eq!(
        purge.text().trim(),
        r#"{"purged":1}"#,
        "one URL, both routes"
    );
    assert_eq!(
        get(&proxy, "/page", &[("x-canary", "1")]).await.text(),
        "canary-1"
    );
    assert_eq!(get(&proxy, "/page", &[]).await.text(), "stable-1");
}

#[tokio::test]
async fn a_list_valued_age_uses_its_first_member_and_an_invalid_cdn_cache_control_is_ignored() {
    // RFC 9111 §5.1: `Age: 7200, 0` is 7200, older than max-age=3600: stale at once, so the
    // second request goes upstream. RFC 9213 §2.1: a `CDN-Cache-Control` that is not a valid
    // Dictionary (or gives max-age a string) is ignored whole: `Cache-Control: no-store` rules.
    let (backend, proxy) = start(|req, _| match req.uri.path() {
        "/age-list" => respond(
            200,
            &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
            "a",
        ),
        "/cdn-garbage" => respond(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=10000, &&&&&"),
            ],
            "b",
        ),
        "/cdn-quoted" => respond(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=\"10000\""),
            ],
            "c",
        ),
        _ => respond(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "foobar, max-age=3600"),
            ],
            "d",
        ),
    });
    for _ in 0..2 {
        for path in ["/age-list", "/cdn-garbage", "/cdn-quoted", "/cdn-extension"] {
            get(&proxy, path, &[]).await;
        }
    }
    assert_eq!(
        upstream_count(&backend, "/age-list"),
        2,
        "Age 7200 > max-age 3600"
    );
    assert_eq!(upstream_count(&backend, "/cdn-garbage"), 2);
    assert_eq!(upstream_count(&backend, "/cdn-quoted"), 2);
    assert_eq!(
        upstream_count(&backend, "/cdn-extension"),
        1,
        "an unknown directive is valid: the field applies"
    );
}
