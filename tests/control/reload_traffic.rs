//! Zero failed requests through 20 reloads that change routes and endpoints, with clients on
//! keep-alive connections and on a new connection per request sending all the while.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::Proxy;
use crate::support::reload::*;
use crate::support::{wait_until_async, DEADLINE};

/// Upper bounds for every client loop: however the proxy behaves, the test ends.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;
const MAX_CLIENT_TIME: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_through_twenty_reloads() {
    let backends: Vec<Backend> = ["a1", "a2", "b1", "b2"]
        .iter()
        .map(|name| Backend::start_named(name, Behavior::fixed(200, *name)))
        .collect();
    let addr_of = |i: usize| backends[i].addr();
    let proxy = Proxy::start_toml(&config("a", &[addr_of(0)], &[addr_of(2)], ""));
    let (url, admin) = (proxy.url("public", "/"), proxy.admin_addr());

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for kind in ["keep-alive", "keep-alive-h2", "per-request", "per-request"] {
        let (stop, served, url) = (Arc::clone(&stop), Arc::clone(&served), url.clone());
        clients.push(tokio::spawn(async move {
            let client = match kind {
                "keep-alive-h2" => Some(HttpClient::h2c()),
                "keep-alive" => Some(HttpClient::http1()),
                _ => None,
            };
            let started = Instant::now();
            let mut failures = Vec::new();
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_CLIENT_TIME {
                    break;
                }
                let result = match &client {
                    Some(client) => client.get(&url).await,
                    None => http_client::get(&url).await,
                };
                match result {
                    Ok(r) if r.status == 200 && r.header("x-backend").is_some() => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("{kind}: status {} {:?}", r.status, r.text())),
                    Err(e) => failures.push(format!("{kind}: {e}")),
                }
            }
            failures
        }));
    }

    for i in 0..20 {
        // Alternate the route's cluster and grow/shrink both clusters' endpoint sets.
        let target = if i % 2 == 0 { "b" } else { "a" };
        let a: Vec<_> = if i % 3 == 0 {
            vec![addr_of(0), addr_of(1)]
        } else {
            vec![addr_of(1)]
        };
        let b: Vec<_> = if i % 4 < 2 {
            vec![addr_of(2), addr_of(3)]
        } else {
            vec![addr_of(3)]
        };
        write_atomic(
            proxy.config_path(),
            &config(target, &a, &b, &format!("# reload {i}\n")),
        );
        let (status, body) = post_reload(admin).await;
        assert_eq!(status, 200, "reload {i}: {body}");
        // Let traffic flow on every version before the next.
        let before = served.load(Ordering::Relaxed);
        assert!(
            wait_until_async(DEADLINE, || served.load(Ordering::Relaxed) >= before + 20).await,
            "reload {i}: traffic stalled"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("client task"));
    }
    let version = admin_config(admin).await["version"].as_u64().unwrap_or(0);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(version >= 20, "version {version}");
    assert!(served.load(Ordering::Relaxed) >= 400);
}
