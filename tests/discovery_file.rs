//! File discovery end to end: traffic follows edits and renames of the watched file, a broken or
//! missing file keeps the last good set, and an endpoint removed while a request is in flight
//! lets that request finish.

mod support;

use std::path::Path;
use std::time::Duration;

use support::backend::{Backend, Behavior, DELAYED_BODY};
use support::http_client::get;
use support::launcher::{Proxy, TestProxy};
use support::{wait_until_async, DEADLINE};

fn start(cluster: &str) -> TestProxy {
    Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"{cluster}\"\n\n\
         [clusters.{cluster}]\nbalance = \"round_robin\"\n\
         discovery = {{ file = \"endpoints.json\" }}\n"
    ))
}

/// Writes `text` to a temporary file beside `path` and renames it over `path` (what deploy
/// tools do).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the endpoints file");
}

/// The bodies of `n` GETs (a backend answers its own name); an error or a non-200 is "!status".
async fn bodies(url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match get(url).await {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => format!("!{}", r.status.as_u16()),
            Err(e) => format!("!{e:?}"),
        });
    }
    out
}

/// Polls until `n` consecutive requests are all served by one of `names` (with each of them
/// seen at least once).
async fn wait_for_backends(url: &str, names: &[&str]) -> bool {
    let end = std::time::Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while std::time::Instant::now() < end {
        got = bodies(url, 12).await;
        if got.iter().all(|b| names.contains(&b.as_str()))
            && names.iter().all(|n| got.iter().any(|b| b == n))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("wanted {names:?}, last got {got:?}");
    false
}

async fn metric(proxy: &TestProxy, series: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape")
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn traffic_follows_edits_and_renames_and_bad_files_keep_the_last_set() {
    let a = Backend::start(Behavior::fixed(200, "a"));
    let b = Backend::start(Behavior::fixed(200, "b"));
    let c = Backend::start(Behavior::fixed(200, "c"));
    let proxy = start("files");
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
    assert!(metric(&proxy, updates).await >= 3.0);
    assert_eq!(
        metric(&proxy, "switchyard_endpoints{cluster=\"files\"}").await,
        2.0
    );

    // Invalid JSON, then an invalid entry, then no file: each is an error; the set stays.
    let before = metric(&proxy, errors).await;
    for (step, broken) in ["[\"127.0.0.1:1\",", "[\"localhost:80\"]"]
        .iter()
        .enumerate()
    {
        replace(&file, broken);
        let counted = step as f64 + 1.0;
        let mut seen = false;
        let end = std::time::Instant::now() + DEADLINE;
        while !seen && std::time::Instant::now() < end {
            seen = metric(&proxy, errors).await >= before + counted;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen, "broken file {step} not reported");
        let got = bodies(&url, 10).await;
        assert!(got.iter().all(|b| b == "a" || b == "c"), "{got:?}");
    }
    std::fs::remove_file(&file).expect("remove");
    let end = std::time::Instant::now() + DEADLINE;
    while metric(&proxy, errors).await < before + 3.0 && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&proxy, errors).await, before + 3.0);
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
    let proxy = start("drain");
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
    let proxy = start("moved");
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
    let reload = support::http_client::post(&proxy.admin_url("/reload"), "")
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
