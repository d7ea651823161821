//! Retries end to end (issue 8): real backends from tests/support behind a real proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::{self, HttpClient, HttpResponse};
use crate::support::launcher::TestProxy;
use crate::support::net::closed_port;
use bytes::Bytes;
use http::Method;

/// The file's config: one worker, route `api` with `route` lines, round robin over `endpoints`.
fn config(endpoints: &[SocketAddr], route: &str) -> ProxyConfig {
    ProxyConfig::new(endpoints.iter().copied())
        .workers(1)
        .route(&format!("name = \"api\"\n{route}"))
        .cluster_lines("balance = \"round_robin\"")
}

async fn send(proxy: &TestProxy, method: Method, body: Bytes) -> HttpResponse {
    let req = http_client::request(method, &proxy.url("public", "/x"), body).expect("request");
    HttpClient::http1().send(req).await.expect("reply")
}

fn attempts(reply: &HttpResponse) -> u32 {
    reply
        .header("x-switchyard-attempts")
        .and_then(|v| v.parse().ok())
        .expect("x-switchyard-attempts")
}

const DEBUG_RETRY: &str = "debug_headers = true\nretry = { attempts = 3, backoff = \"1ms\" }";

#[tokio::test]
async fn a_503_is_retried_on_the_other_endpoint() {
    let failing = Backend::start(Behavior::fixed(503, "busy"));
    let healthy = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(&[failing.addr(), healthy.addr()], DEBUG_RETRY).start();
    let mut retried = 0;
    for _ in 0..6 {
        let reply = send(&proxy, Method::GET, Bytes::new()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "ok");
        let endpoint = healthy.addr().to_string();
        assert_eq!(
            reply.header("x-switchyard-endpoint"),
            Some(endpoint.as_str())
        );
        if attempts(&reply) == 2 {
            retried += 1;
        }
    }
    assert!(
        retried >= 1,
        "round robin sends some requests to the 503 first"
    );
    assert_eq!(failing.request_count(), retried);
    proxy.shutdown();
}

#[tokio::test]
async fn debug_headers_only_when_asked() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(&[backend.addr()], "retry = {}").start();
    let reply = send(&proxy, Method::GET, Bytes::new()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchyard-attempts"), None);
    assert_eq!(reply.header("x-switchyard-endpoint"), None);
    proxy.shutdown();
}

#[tokio::test]
async fn post_after_write_is_not_retried_on_503() {
    let failing = Backend::start(Behavior::fixed(503, "busy"));
    let healthy = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(&[failing.addr(), healthy.addr()], DEBUG_RETRY).start();
    let failing_addr = failing.addr().to_string();
    let mut hit_failing = 0;
    for _ in 0..4 {
        let reply = send(&proxy, Method::POST, Bytes::from_static(b"order")).await;
        assert_eq!(attempts(&reply), 1, "a written POST is never sent twice");
        if reply.header("x-switchyard-endpoint") == Some(failing_addr.as_str()) {
            assert_eq!(reply.status, 503);
            hit_failing += 1;
        } else {
            assert_eq!(reply.status, 200);
        }
    }
    assert!(hit_failing >= 1);
    assert_eq!(failing.request_count() + healthy.request_count(), 4);
    proxy.shutdown();
}

#[tokio::test]
async fn post_is_retried_after_a_connect_failure() {
    let healthy = Backend::start(Behavior::Echo);
    let proxy = config(&[closed_port(), healthy.addr()], DEBUG_RETRY).start();
    let mut retried = 0;
    for _ in 0..4 {
        let reply = send(&proxy, Method::POST, Bytes::from_static(b"order")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "order");
        retried += usize::from(attempts(&reply) == 2);
    }
    assert!(
        retried >= 1,
        "round robin tries the closed port first sometimes"
    );
    assert_eq!(
        healthy.request_count(),
        4,
        "each POST reached the backend once"
    );
    proxy.shutdown();
}

/// A route that retries only connection failures (the synthetic routes' policy) sends its first
/// attempt without a copy of the request, and a refused attempt hands the request back: the
/// retry carries the same method, target, headers and body, and nothing reaches the backend
/// twice.
#[tokio::test]
async fn a_connect_failure_only_retry_resends_the_refused_request_whole() {
    let healthy = Backend::start(Behavior::Echo);
    let proxy = config(
        &[closed_port(), healthy.addr()],
        "debug_headers = true\n\
         retry = { attempts = 3, on = [\"connect-failure\"], backoff = \"1ms\" }",
    )
    .start();
    let mut retried = 0;
    for i in 0..4 {
        let body = format!("order {i}");
        let mut req = http_client::request(
            Method::POST,
            &proxy.url("public", &format!("/x?n={i}")),
            Bytes::from(body.clone()),
        )
        .expect("request");
        req.headers_mut()
            .insert("x-order", i.to_string().parse().expect("value"));
        let reply = HttpClient::http1().send(req).await.expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), body);
        retried += usize::from(attempts(&reply) == 2);
    }
    assert!(
        retried >= 1,
        "round robin tries the closed port first sometimes"
    );
    let seen = healthy.requests();
    assert_eq!(seen.len(), 4, "each POST reached the backend once");
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.uri, format!("/x?n={i}").as_str());
        assert_eq!(request.headers["x-order"], i.to_string().as_str());
        assert_eq!(request.body, format!("order {i}").as_bytes());
        assert_eq!(request.headers.get_all("via").iter().count(), 1);
        assert_eq!(request.headers.get_all("x-forwarded-for").iter().count(), 1);
    }
    proxy.shutdown();
}

#[tokio::test]
async fn per_try_timeout_moves_a_hanging_attempt_on() {
    let hanging = Backend::start(Behavior::Hang);
    let healthy = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(
        &[hanging.addr(), healthy.addr()],
        "timeout = \"3s\"\ndebug_headers = true\n\
         retry = { attempts = 2, per_try_timeout = \"200ms\", backoff = \"1ms\" }",
    )
    .start();
    let mut moved = 0;
    for _ in 0..4 {
        let started = Instant::now();
        let reply = send(&proxy, Method::GET, Bytes::new()).await;
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "within the route timeout"
        );
        if attempts(&reply) == 2 {
            moved += 1;
            assert!(started.elapsed() >= Duration::from_millis(190));
        }
    }
    assert!(moved >= 1);
    proxy.shutdown();
}

#[tokio::test]
async fn the_route_timeout_bounds_all_attempts() {
    let a = Backend::start(Behavior::Hang);
    let b = Backend::start(Behavior::Hang);
    let proxy = config(
        &[a.addr(), b.addr()],
        "timeout = \"500ms\"\nretry = { attempts = 5, per_try_timeout = \"200ms\" }",
    )
    .start();
    let started = Instant::now();
    let reply = send(&proxy, Method::GET, Bytes::new()).await;
    assert_eq!(reply.status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn a_10k_body_is_replayed_byte_exact_once() {
    let body: Bytes = (0..10 * 1024)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let failing = Backend::start(Behavior::fixed(503, "busy"));
    let healthy = Backend::start(Behavior::Echo);
    let proxy = config(&[failing.addr(), healthy.addr()], DEBUG_RETRY).start();
    let mut retried = 0;
    for _ in 0..3 {
        let reply = send(&proxy, Method::PUT, body.clone()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, body);
        retried += usize::from(attempts(&reply) == 2);
    }
    assert!(retried >= 1);
    let seen = healthy.requests();
    assert_eq!(
        seen.len(),
        3,
        "every PUT reached the healthy backend exactly once"
    );
    assert!(seen.iter().all(|r| r.body == body));
    assert!(failing.requests().iter().all(|r| r.body == body));
    proxy.shutdown();
}

#[tokio::test]
async fn a_1mib_body_is_not_retried() {
    let body = Bytes::from(vec![b'x'; 1024 * 1024]);
    let failing = Backend::start(Behavior::fixed(503, "busy"));
    let healthy = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = config(&[failing.addr(), healthy.addr()], DEBUG_RETRY).start();
    let failing_addr = failing.addr().to_string();
    let mut hit_failing = 0;
    for _ in 0..4 {
        let reply = send(&proxy, Method::PUT, body.clone()).await;
        assert_eq!(attempts(&reply), 1, "a body over the buffer is sent once");
        if reply.header("x-switchyard-endpoint") == Some(failing_addr.as_str()) {
            assert_eq!(reply.status, 503);
            hit_failing += 1;
        } else {
            assert_eq!(reply.status, 200);
        }
    }
    assert!(hit_failing >= 1);
    proxy.shutdown();
}

#[tokio::test]
async fn a_short_retry_after_is_honoured() {
    let backend = Backend::start(Behavior::script(|_, n| {
        if n == 0 {
            Action::Respond {
                status: 503,
                headers: vec![("retry-after".into(), "1".into())],
                body: Bytes::new(),
            }
        } else {
            Action::respond(200, "ok")
        }
    }));
    let proxy = config(&[backend.addr()], DEBUG_RETRY).start();
    let started = Instant::now();
    let reply = send(&proxy, Method::GET, Bytes::new()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        attempts(&reply),
        2,
        "a one-endpoint cluster retries the same endpoint"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    proxy.shutdown();
}

#[tokio::test]
async fn max_retries_caps_concurrent_retries_per_cluster() {
    // 0: 503; 1: the first request's retry, held for a while; 2: 503 (the second request).
    let backend = Backend::start(Behavior::script(|_, n| match n {
        0 | 2 => Action::status(503),
        1 => Action::Delay(
            Duration::from_millis(800),
            Box::new(Action::respond(200, "late")),
        ),
        _ => Action::respond(200, "ok"),
    }));
    let proxy = config(&[backend.addr()], DEBUG_RETRY)
        .cluster_lines("circuit_breaker = { max_retries = 1 }")
        .start();
    let url = proxy.url("public", "/x");
    let first = tokio::spawn(async move { HttpClient::http1().get(&url).await });
    assert!(
        crate::support::wait_until_async(crate::support::DEADLINE, || backend.request_count() == 2)
            .await,
        "the first request's retry is in flight"
    );
    let second = send(&proxy, Method::GET, Bytes::new()).await;
    assert_eq!(
        second.status, 503,
        "the one retry slot is taken: the 503 stands"
    );
    assert_eq!(attempts(&second), 1);
    let first = first.await.expect("task").expect("reply");
    assert_eq!(
        (first.status.as_u16(), first.text().as_str()),
        (200, "late")
    );
    assert_eq!(attempts(&first), 2);
    proxy.shutdown();
}

#[tokio::test]
async fn a_retry_after_past_the_route_timeout_returns_the_503_at_once() {
    let backend = Backend::start(Behavior::script(|_, _| Action::Respond {
        status: 503,
        headers: vec![("retry-after".into(), "1".into())],
        body: Bytes::from_static(b"later"),
    }));
    let proxy = config(
        &[backend.addr()],
        &format!("timeout = \"500ms\"\n{DEBUG_RETRY}"),
    )
    .start();
    let started = Instant::now();
    let reply = send(&proxy, Method::GET, Bytes::new()).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "later");
    assert_eq!(attempts(&reply), 1);
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    proxy.shutdown();
}
