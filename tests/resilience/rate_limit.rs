//! Route `rate_limit` on one proxy (`scope = "local"`): exactly `requests + burst` admitted
//! from a full bucket, then 429 with `Retry-After`, `RateLimit-Policy` and `RateLimit`,
//! counted per route; keys by header; a flood of distinct keys neither grows the limiter nor
//! refills an active bucket. The mesh scope is tested with real processes in
//! `tests/control/mesh_rate_limit.rs`.

use bytes::Bytes;
use http::Method;

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::TestProxy;
use crate::support::metrics;

fn limited(name: &str, backend: &Backend, limit: &str) -> TestProxy {
    ProxyConfig::new([backend.addr()])
        .workers(2)
        .route(&format!("name = \"{name}\"\nrate_limit = {{ {limit} }}"))
        .start()
}

/// `GET path` with `x-api-key: key` (none when `key` is `None`): the status.
async fn status(client: &HttpClient, proxy: &TestProxy, key: Option<&str>) -> u16 {
    let mut req = http_client::request(Method::GET, &proxy.url("public", "/"), Bytes::new())
        .expect("request");
    if let Some(key) = key {
        req.headers_mut()
            .insert("x-api-key", key.parse().expect("header value"));
    }
    client.send(req).await.expect("response").status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bucket_admits_requests_plus_burst_then_429_with_the_fields() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = limited(
        "rl-exact",
        &backend,
        "requests = 10, per = \"60s\", burst = 5, key = \"route\"",
    );
    let client = HttpClient::http1();
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(status(&client, &proxy, None).await);
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(admitted, 15, "{statuses:?}");
    assert!(statuses[..15].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(statuses[15..].iter().all(|&s| s == 429), "{statuses:?}");
    assert_eq!(
        backend.request_count(),
        15,
        "a refused request reaches no cluster"
    );

    let reply = client.get(&proxy.url("public", "/")).await.expect("429");
    assert_eq!(reply.status, 429);
    // One request costs 6 s of a 60 s window: the next is admitted within 6 s.
    let retry: u64 = reply
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=6).contains(&retry), "retry-after {retry}");
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"rl-exact\";q=10;w=60")
    );
    assert_eq!(
        reply.header("ratelimit"),
        Some(format!("\"rl-exact\";r=0;t={retry}").as_str())
    );
    assert_eq!(reply.text(), "rate limited\n");
    let scrape = metrics::scrape(proxy.admin_addr());
    assert_eq!(
        metrics::value(
            &scrape,
            "switchyard_rate_limited_requests_total{route=\"rl-exact\"}"
        ),
        Some(11.0),
        "10 refused in the loop and one after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_limits_each_value_alone_and_requests_without_it_together() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = limited(
        "rl-header",
        &backend,
        "requests = 2, per = \"60s\", key = \"header:x-api-key\"",
    );
    let client = HttpClient::http1();
    for key in [Some("alice"), Some("bob"), None] {
        let got = [
            status(&client, &proxy, key).await,
            status(&client, &proxy, key).await,
            status(&client, &proxy, key).await,
        ];
        assert_eq!(got, [200, 200, 429], "key {key:?}");
    }
    // An empty value is a value, not a missing header.
    assert_eq!(status(&client, &proxy, Some("")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flood_stays_within_the_table_and_refills_no_active_bucket() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = limited(
        "rl-flood",
        &backend,
        "requests = 1, per = \"60s\", key = \"header:x-api-key\", max_keys = 1024",
    );
    let limiter = || {
        let snapshot = proxy.handle().shared().snapshot();
        let l = snapshot.rate_limits().get(0).expect("limiter");
        (l.memory_bytes(), l.key_capacity(), l.active_keys())
    };
    let (bytes, capacity, _) = limiter();
    assert_eq!(capacity, Some(1024));
    let client = HttpClient::http1();
    assert_eq!(status(&client, &proxy, Some("victim")).await, 200);
    assert_eq!(status(&client, &proxy, Some("victim")).await, 429);

    // 10,000 distinct keys, ten times the table, from eight connections at once.
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let url = proxy.url("public", "/");
            tokio::spawn(async move {
                let client = HttpClient::http1();
                let mut admitted = 0;
                for i in 0..1250 {
                    let mut req =
                        http_client::request(Method::GET, &url, Bytes::new()).expect("request");
                    let key = format!("flood-{t}-{i}");
                    req.headers_mut()
                        .insert("x-api-key", key.parse().expect("value"));
                    if client.send(req).await.expect("response").status == 200 {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("flood task");
    }
    let (after, _, active) = limiter();
    assert_eq!(after, bytes, "the table never grows");
    assert!(active <= 1024, "{active} active keys");
    // Each key is admitted at most once: the table holds 1024 buckets and later keys share
    // them, so far fewer than 10,000 get through.
    assert!(
        (1000..=1024).contains(&admitted),
        "{admitted} flood requests admitted"
    );
    assert_eq!(
        status(&client, &proxy, Some("victim")).await,
        429,
        "the flood must not refill the victim's bucket"
    );
}

/// Writes `text` as `proxy`'s config, asks for a reload and waits for the new version's
/// `/config`.
async fn reload_to(proxy: &TestProxy, text: String) -> serde_json::Value {
    use crate::support::reload::{admin_config, post_reload, wait_for_config, write_atomic};
    write_atomic(proxy.config_path(), &text);
    let before = admin_config(proxy.admin_addr()).await["version"]
        .as_u64()
        .unwrap_or(0);
    let _ = post_reload(proxy.admin_addr()).await;
    let (doc, done) = wait_for_config(proxy.admin_addr(), |doc| {
        doc["version"].as_u64().unwrap_or(0) > before
    })
    .await;
    assert!(done, "no reload: {doc}");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_unchanged_limits_and_starts_changed_ones_full() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = limited(
        "rl-reload",
        &backend,
        "requests = 2, per = \"60s\", key = \"route\"",
    );
    let client = HttpClient::http1();
    let statuses = [
        status(&client, &proxy, None).await,
        status(&client, &proxy, None).await,
        status(&client, &proxy, None).await,
    ];
    assert_eq!(statuses, [200, 200, 429]);
    let original = std::fs::read_to_string(proxy.config_path()).expect("config");
    // Another key of the route changes; the limit does not: the bucket stays empty.
    let doc = reload_to(
        &proxy,
        original.replace(
            "name = \"rl-reload\"",
            "name = \"rl-reload\"\ntimeout = \"5s\"",
        ),
    )
    .await;
    assert_eq!(doc["routes"][0]["rate_limit"]["requests"], 2, "{doc}");
    assert_eq!(
        status(&client, &proxy, None).await,
        429,
        "a reload refilled the bucket"
    );
    // The limit changes: a new, full bucket.
    let doc = reload_to(&proxy, original.replace("requests = 2", "requests = 3")).await;
    assert_eq!(doc["routes"][0]["rate_limit"]["requests"], 3, "{doc}");
    assert_eq!(status(&client, &proxy, None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_background_refresh_is_not_counted_against_the_limit() {
    use crate::support::cache::{get, respond, start_with};
    // Stale from the start (Age over max-age) and within stale-while-revalidate: the second
    // client request is served stale and starts one background refresh.
    let (backend, proxy) = start_with(
        |_, n| {
            respond(
                200,
                &[
                    ("cache-control", "max-age=1, stale-while-revalidate=600"),
                    ("age", "5"),
                ],
                &format!("v{n}"),
            )
        },
        1,
        "name = \"rl-cached\"\nrate_limit = { requests = 2, per = \"60s\", key = \"route\" }",
        "",
    );
    assert_eq!(get(&proxy, "/r", &[]).await.status, 200);
    assert_eq!(get(&proxy, "/r", &[]).await.status, 200);
    // Both client requests took the bucket's two tokens; the refresh needs none.
    let refreshed =
        crate::support::wait_until_async(crate::support::DEADLINE, || backend.request_count() == 2)
            .await;
    assert!(
        refreshed,
        "the refresh was refused by the client's rate limit"
    );
    assert_eq!(get(&proxy, "/r", &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_client_ip_is_the_address_they_vouch_for() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    // One trusted hop: every request comes from 127.0.0.1 (the "load balancer"), and the
    // client is the last x-forwarded-for entry.
    let proxy = TestProxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ntrusted_hops = 1\n\n\
         [[routes]]\nname = \"rl-trusted\"\ncluster = \"app\"\n\
         rate_limit = {{ requests = 2, per = \"60s\", key = \"client_ip\" }}\n\n\
         [clusters.app]\nendpoints = [\"{}\"]\n",
        backend.addr()
    ));
    let client = HttpClient::http1();
    let from = |xff: &'static str| {
        let mut req = http_client::request(Method::GET, &proxy.url("public", "/"), Bytes::new())
            .expect("request");
        req.headers_mut()
            .insert("x-forwarded-for", http::HeaderValue::from_static(xff));
        client.send(req)
    };
    let mut statuses = Vec::new();
    for xff in [
        "10.0.0.1",
        "10.0.0.1",
        "6.6.6.6, 10.0.0.1",
        "10.0.0.2",
        "10.0.0.2",
    ] {
        statuses.push(from(xff).await.expect("response").status.as_u16());
    }
    // 10.0.0.1's two requests use its bucket; a spoofed entry left of the trusted one does
    // not make a new client; 10.0.0.2 has a bucket of its own although the peer is the same.
    assert_eq!(statuses, [200, 200, 429, 200, 200]);
}
