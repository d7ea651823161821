//! The cache as storage: coalescing, the `max_bytes` bound and its eviction policy,
//! `max_object`, purges over the admin API, and reloads.

use std::time::Duration;

use crate::support::backend::Action;
use crate::support::cache::*;
use crate::support::http_client::{self, HttpClient};
use bytes::Bytes;

fn max_age_60() -> Vec<(String, String)> {
    vec![("cache-control".into(), "max-age=60".into())]
}

#[tokio::test]
async fn fifty_concurrent_cold_requests_make_one_backend_request() {
    // Coalescing (RFC 9211 `collapsed`): the misses wait for the first fetch, on both workers.
    let (backend, proxy) = start_with(
        |_, n| {
            let response = Action::Respond {
                status: 200,
                headers: max_age_60(),
                body: Bytes::from(format!("only-{n}")),
            };
            // Long enough for all 50 to arrive while the first fetch is in flight.
            Action::Delay(Duration::from_secs(1), Box::new(response))
        },
        2,
        "",
        "",
    );
    let url = proxy.url("public", "/cold");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = url.clone();
        // A client each: 50 connections, spread over both workers by SO_REUSEPORT.
        tasks.push(tokio::spawn(
            async move { HttpClient::http1().get(&url).await },
        ));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let reply = task.await.expect("task").expect("reply");
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "only-0")
        );
        statuses.push(cache_status(&reply));
    }
    assert_eq!(backend.request_count(), 1, "statuses: {statuses:?}");
    let stored = statuses.iter().filter(|s| s.ends_with("stored")).count();
    assert_eq!(stored, 1, "{statuses:?}");
    assert!(
        statuses.iter().any(|s| s == "switchyard; hit; collapsed"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn uncacheable_results_release_the_waiters_to_go_upstream_themselves() {
    // Coalescing must not serialise URLs that turn out uncacheable: the waiters are released
    // as soon as the leader's response head says so.
    let (backend, proxy) = start(|_, n| {
        let response = Action::Respond {
            status: 200,
            headers: vec![("cache-control".into(), "no-store".into())],
            body: Bytes::from(format!("r{n}")),
        };
        Action::Delay(Duration::from_millis(200), Box::new(response))
    });
    let url = proxy.url("public", "/private");
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { HttpClient::http1().get(&url).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("reply").status, 200);
    }
    assert_eq!(backend.request_count(), 5);
    // Not held for the coalescing wait (the route's 5 s timeout): released at the first head.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn eviction_under_max_bytes_keeps_hot_entries() {
    // The store stays within max_bytes; TinyLFU admission keeps the often-read object while
    // a stream of one-off objects (3x the capacity) passes through.
    let (backend, proxy) = start_with(
        |_, _| Action::Respond {
            status: 200,
            headers: max_age_60(),
            body: Bytes::from(vec![b'x'; 8 * 1024]),
        },
        1,
        "",
        "max_bytes = \"256KiB\"\nmax_object = \"16KiB\"",
    );
    for _ in 0..20 {
        get(&proxy, "/hot", &[]).await;
    }
    for i in 0..96 {
        get(&proxy, &format!("/cold/{i}"), &[]).await;
        if i % 8 == 0 {
            get(&proxy, "/hot", &[]).await;
        }
    }
    let hot = get(&proxy, "/hot", &[]).await;
    assert_eq!(cache_status(&hot), "switchyard; hit");
    assert_eq!(
        upstream_count(&backend, "/hot"),
        1,
        "the hot object was evicted"
    );
    let snapshot = proxy.handle().shared().snapshot();
    let cache = snapshot.cache().expect("[cache] configured");
    cache.store().settle();
    assert!(
        cache.store().bytes() <= 256 * 1024,
        "{} bytes",
        cache.store().bytes()
    );
    assert!(
        cache.store().entries() < 40,
        "{} entries",
        cache.store().entries()
    );
    let scrape = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    let evictions = scrape
        .lines()
        .find(|l| l.starts_with("switchyard_cache_evictions_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("evictions series");
    assert!(evictions >= 1.0, "{scrape}");
}

/// 1 MiB of a pattern that would show any reordering or loss.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn objects_over_max_object_stream_through_uncached_and_byte_exact() {
    // Declared too large (Content-Length) or found too large while streaming (chunked): the
    // client gets every byte, nothing is stored.
    let big = pattern(1024 * 1024);
    let body = big.clone();
    let (backend, proxy) = start_with(
        move |req, _| match req.uri.path() {
            "/declared" => Action::Respond {
                status: 200,
                headers: max_age_60(),
                body: body.clone(),
            },
            _ => Action::SlowBody {
                chunk: Bytes::from(vec![b'c'; 16 * 1024]),
                interval: Duration::from_millis(1),
                chunks: 10,
            },
        },
        1,
        "",
        "max_object = \"64KiB\"",
    );
    for _ in 0..2 {
        let declared = get(&proxy, "/declared", &[]).await;
        assert_eq!(declared.body, big, "byte-exact");
        assert!(
            cache_status(&declared).contains("detail=too-large"),
            "{}",
            cache_status(&declared)
        );
        let streamed = get(&proxy, "/streamed", &[]).await;
        assert_eq!(streamed.body.len(), 160 * 1024);
        assert!(streamed.body.iter().all(|&b| b == b'c'));
    }
    assert_eq!(upstream_count(&backend, "/declared"), 2);
    assert_eq!(upstream_count(&backend, "/streamed"), 2);
}

#[tokio::test]
async fn purge_by_key_and_by_prefix_over_the_admin_api() {
    let (backend, proxy) = start(|req, _| Action::Respond {
        status: 200,
        headers: max_age_60(),
        body: Bytes::from(req.uri.path().to_owned()),
    });
    for path in ["/a/1", "/a/2", "/a/3", "/b/1"] {
        get(&proxy, path, &[]).await;
    }
    let key = format!("http://{}/a/1", proxy.addr("public"));
    let purge = |query: String| {
        let url = proxy.admin_url(&format!("/cache/purge?{query}"));
        async move { http_client::post(&url, "").await.expect("admin reply") }
    };
    let by_key = purge(format!("key={key}")).await;
    assert_eq!(
        (by_key.status.as_u16(), by_key.text().trim()),
        (200, r#"{"purged":1}"#)
    );
    get(&proxy, "/a/1", &[]).await;
    get(&proxy, "/a/2", &[]).await;
    assert_eq!(upstream_count(&backend, "/a/1"), 2);
    assert_eq!(upstream_count(&backend, "/a/2"), 1);

    let by_prefix = purge("prefix=/a/".to_owned()).await;
    assert_eq!(by_prefix.text().trim(), r#"{"purged":3}"#);
    for path in ["/a/1", "/a/2", "/a/3", "/b/1"] {
        get(&proxy, path, &[]).await;
    }
    assert_eq!(upstream_count(&backend, "/a/2"), 2);
    assert_eq!(upstream_count(&backend, "/b/1"), 1, "outside the prefix");

    assert_eq!(purge(String::new()).await.status.as_u16(), 400);
    assert_eq!(purge("key=/relative".to_owned()).await.status.as_u16(), 400);
    let get_purge = http_client::get(&proxy.admin_url("/cache/purge?prefix=/"))
        .await
        .expect("reply");
    assert_eq!(get_purge.status.as_u16(), 405);
}

#[tokio::test]
async fn a_reload_keeps_the_cache_unless_the_cache_section_changes() {
    let (backend, proxy) = start(|_, _| Action::Respond {
        status: 200,
        headers: max_age_60(),
        body: Bytes::from_static(b"x"),
    });
    get(&proxy, "/kept", &[]).await;
    let reload = |text: String| {
        std::fs::write(proxy.config_path(), text).expect("write config");
        let url = proxy.admin_url("/reload");
        async move { http_client::post(&url, "").await.expect("reload reply") }
    };
    // Another route setting changes, [cache] does not: the stored response survives.
    let same_cache = config(&backend, 1, "debug_headers = true", "");
    assert_eq!(reload(same_cache).await.status.as_u16(), 200);
    let after = get(&proxy, "/kept", &[]).await;
    assert_eq!(cache_status(&after), "switchyard; hit");
    assert!(
        after.header("x-switchyard-attempts").is_some(),
        "the reload applied"
    );
    // A new size: a new, empty cache.
    let resized = config(&backend, 1, "", "max_bytes = \"32MiB\"");
    assert_eq!(reload(resized).await.status.as_u16(), 200);
    let snapshot = proxy.handle().shared().snapshot();
    assert_eq!(
        snapshot.cache().map(|c| c.config().max_bytes),
        Some(32 << 20)
    );
    let after = get(&proxy, "/kept", &[]).await;
    assert_eq!(cache_status(&after), "switchyard; fwd=uri-miss; stored");
    assert_eq!(backend.request_count(), 2);
}
