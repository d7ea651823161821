//! File discovery end to end: traffic follows edits and renames of the watched file, a broken or
//! missing file keeps the last good set, and an endpoint removed while a request is in flight
//! lets that request finish.

use std::path::Path;
use std::time::Duration;

use crate::support::backend::{Backend, Behavior, DELAYED_BODY};
use crate::support::config::ProxyConfig;
use crate::support::http_client::get;
use crate::support::metrics::metric;
use crate::support::traffic::{bodies, wait_for_bodies};
use crate::support::{wait_until_async, wait_until_check, DEADLINE};

/// The file's config: round robin over what `endpoints.json` (beside the config) lists.
fn config(cluster: &str) -> ProxyConfig {
    ProxyConfig::new([])
        .cluster(cluster)
        .cluster_lines("balance = \"round_robin\"\ndiscovery = { file = \"endpoints.json\" }")
}

/// Writes `text` to a temporary file beside `path` and renames it over `path` (what deploy
/// tools do).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the endpoints file");
}

/// [`wait_for_bodies`] within [`DEADLINE`], printing what answered instead.
async fn wait_for_backends(url: &str, names: &[&str]) -> bool {
    wait_for_bodies(url, names, DEADLINE)
        .await
        .map_err(|got| eprintln!("wanted {names:?}, now get {got:?}"))
        .is_ok()
}

#[tokio::test]
async fn traffic_follows_edits_and_renames_and_bad_files_keep_the_last_set() {
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let c = Backend::start(Behavior::fixed(200, "c"));
    let proxy = config("files").start();
    let file = proxy.config_path().with_file_name("endpoints.json");
    let url = proxy.url("public", "/");

    // No file yet: the cluster is empty, requests get 503 with retry-after.
    let reply = get(&url).await.expect("reply");
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").is_some());

    std::fs::write(&file, format!("[\"{}\"]", a.addr())).expect("write");
    assert!(
        wait_for_backends(&url, &["a"]).await,
        "first file not picked up"
    );

    // An in-place edit.
    std::fs::write(&file, format!("[\"{}\"]", b.addr())).expect("rewrite");
    assert!(wait_for_backends(&url, &["b"]).await, "edit not picked up");

    // A rename over the file, with the object form.
    replace(
        &file,
        &format!(
            "[\"{}\", {{ \"address\": \"{}\", \"weight\": 2, \"zone\": \"z1\" }}]",
            a.addr(),
            c.addr()
        ),
    );
    assert!(
        wait_for_backends(&url, &["a", "c"]).await,
        "rename not picked up"
    );
    let upstreams = get(&proxy.admin_url("/upstreams"))
        .await
        .expect("upstreams");
    let json: serde_json::Value = serde_json::from_str(&upstreams.text()).expect("json");
    let endpoints = json["clusters"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    assert_eq!(endpoints.len(), 2);
    assert!(
        endpoints.iter().all(|e| e["source"] == "file"),
        "{endpoints:?}"
    );
    assert!(endpoints.iter().any(|e| e["weight"] == 2), "{endpoints:?}");
    let errors = "switchyard_discovery_errors_total{cluster=\"files\",source=\"file\"}";
    let updates = "switchyard_discovery_updates_total{cluster=\"files\",source=\"file\"}";
    assert!(metric(proxy.admin_addr(), updates) >= 3.0);
    assert_eq!(
        metric(
            proxy.admin_addr(),
            "switchyard_endpoints{cluster=\"files\"}"
        ),
        2.0
    );

    // Invalid JSON, then an invalid entry, then no file: each is an error; the set stays.
    let before = metric(proxy.admin_addr(), errors);
    for (step, broken) in ["[\"127.0.0.1:1\",", "[\"localhost:80\"]"]
        .iter()
        .enumerate()
    {
        replace(&file, broken);
        let counted = step as f64 + 1.0;
        let seen = wait_until_async(DEADLINE, || {
            metric(proxy.admin_addr(), errors) >= before + counted
        })
        .await;
        assert!(seen, "broken file {step} not reported");
        let got = bodies(&url, 10).await;
        assert!(got.iter().all(|b| b == "a" || b == "c"), "{got:?}");
    }
    std::fs::remove_file(&file).expect("remove");
    wait_until_async(DEADLINE, || {
        metric(proxy.admin_addr(), errors) >= before + 3.0
    })
    .await;
    assert_eq!(metric(proxy.admin_addr(), errors), before + 3.0);
    let got = bodies(&url, 10).await;
    assert!(got.iter().all(|b| b == "a" || b == "c"), "{got:?}");

    let scrape = get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    for name in [
        "switchyard_discovery_updates_total",
        "switchyard_discovery_errors_total",
        "switchyard_endpoints",
    ] {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }

    // A good file again recovers.
    replace(&file, &format!("[\"{}\"]", b.addr()));
    assert!(
        wait_for_backends(&url, &["b"]).await,
        "recovery not picked up"
    );
    proxy.shutdown();
}

#[tokio::test]
async fn an_endpoint_removed_with_a_request_in_flight_lets_it_finish() {
    let slow = Backend::start(Behavior::Delay(Duration::from_millis(800)));
    let fast = Backend::start(Behavior::fixed(200, "fast"));
    let proxy = config("drain").start();
    let file = proxy.config_path().with_file_name("endpoints.json");
    let url = proxy.url("public", "/");
    replace(&file, &format!("[\"{}\"]", slow.addr()));
    let shared = std::sync::Arc::clone(proxy.handle().shared());
    let has = |addr| {
        let shared = std::sync::Arc::clone(&shared);
        move || shared.snapshot().has_endpoint("drain", addr)
    };
    assert!(wait_until_async(DEADLINE, has(slow.addr())).await);

    let in_flight = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    let state = shared
        .registry()
        .get("drain", slow.addr())
        .expect("registered");
    assert!(wait_until_async(DEADLINE, || state.in_flight() == 1).await);

    replace(&file, &format!("[\"{}\"]", fast.addr()));
    assert!(wait_until_async(DEADLINE, has(fast.addr())).await);
    assert!(!shared.snapshot().has_endpoint("drain", slow.addr()));
    assert!(shared.registry().get("drain", slow.addr()).is_none());
    assert_eq!(bodies(&url, 3).await, ["fast", "fast", "fast"]);

    let reply = in_flight.await.expect("task").expect("in-flight reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text().as_bytes(), DELAYED_BODY);
    assert_eq!(state.in_flight(), 0);
    proxy.shutdown();
}

#[tokio::test]
async fn a_reload_that_changes_the_source_restarts_discovery() {
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let proxy = config("moved").start();
    let config = proxy.config_path().to_path_buf();
    let url = proxy.url("public", "/");
    replace(
        &config.with_file_name("endpoints.json"),
        &format!("[\"{}\"]", a.addr()),
    );
    assert!(wait_for_backends(&url, &["a"]).await, "first source");

    replace(
        &config.with_file_name("other.json"),
        &format!("[\"{}\"]", b.addr()),
    );
    let text = std::fs::read_to_string(&config).expect("read config");
    replace(&config, &text.replace("endpoints.json", "other.json"));
    let reload = crate::support::http_client::post(&proxy.admin_url("/reload"), "")
        .await
        .expect("reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert!(
        wait_for_backends(&url, &["b"]).await,
        "new source after reload"
    );
    // The old file no longer matters.
    replace(
        &config.with_file_name("endpoints.json"),
        &format!("[\"{}\", \"{}\"]", a.addr(), b.addr()),
    );
    assert_eq!(bodies(&url, 6).await, ["b"; 6]);
    proxy.shutdown();
}

#[tokio::test]
async fn series_of_a_removed_endpoint_leave_the_scrape() {
    // `a` answers 503: three in a row eject it, so it has `endpoint_ejected 1` when it goes.
    let a = Backend::start(Behavior::fixed(503, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let proxy = config("gone").start();
    let file = proxy.config_path().with_file_name("endpoints.json");
    let url = proxy.url("public", "/");
    replace(&file, &format!("[\"{}\", \"{}\"]", a.addr(), b.addr()));
    let (gone, stays) = (a.addr().to_string(), b.addr().to_string());
    let ejected = format!("switchyard_endpoint_ejected{{cluster=\"gone\",endpoint=\"{gone}\"}}");
    let (admin, target, series) = (proxy.admin_addr(), url.as_str(), ejected.as_str());
    wait_until_check(DEADLINE, || async move {
        if metric(admin, series) == 1.0 {
            return true;
        }
        bodies(target, 4).await;
        false
    })
    .await;
    assert_eq!(metric(proxy.admin_addr(), &ejected), 1.0, "{ejected}");
    let scrape = get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    let with = |addr: &str| -> Vec<String> {
        scrape
            .lines()
            .filter(|l| l.contains(&format!("endpoint=\"{addr}\"")))
            .map(str::to_owned)
            .collect()
    };
    for family in [
        "switchyard_upstream_requests_total",
        "switchyard_endpoint_healthy",
        "switchyard_circuit_state",
    ] {
        assert!(
            with(&gone).iter().any(|l| l.starts_with(family)),
            "{family} of {gone} missing:\n{scrape}"
        );
    }

    replace(&file, &format!("[\"{}\"]", b.addr()));
    // Not by traffic: the ejected `a` already gets none.
    let shared = std::sync::Arc::clone(proxy.handle().shared());
    let removed = || !shared.snapshot().has_endpoint("gone", a.addr());
    assert!(
        wait_until_async(DEADLINE, removed).await,
        "edit not picked up"
    );
    let scrape = get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    let left: Vec<&str> = scrape.lines().filter(|l| l.contains(&gone)).collect();
    assert!(left.is_empty(), "series of the removed endpoint: {left:?}");
    assert!(
        scrape.contains(&format!(
            "switchyard_endpoint_healthy{{cluster=\"gone\",endpoint=\"{stays}\"}} 1"
        )),
        "{scrape}"
    );
    proxy.shutdown();
}
