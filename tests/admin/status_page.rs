//! The status page (admin `GET /`) in a real browser, and the `/stats` summary behind it.
//!
//! The browser test drives Debian's headless `chromium` (`.ci/run` installs it) against a
//! running proxy: it serves traffic, kills one endpoint's backend with an active health check
//! configured, waits for `/upstreams` to say so, then lets the page run its scripts
//! (`--virtual-time-budget`) and reads the resulting DOM. A screenshot goes to
//! `target/status-page.png`; with `SWITCHYARD_UPDATE_SCREENSHOT=1` it also replaces
//! `docs/status-page.png`, the one the README shows (kept out of ordinary runs so a test run
//! never dirties the tree).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::DEADLINE;
use http::StatusCode;
use serde_json::Value;

fn config(a: &Backend, b: &Backend) -> String {
    format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "web"
listener = "public"
match = {{ path_prefix = "/" }}
cluster = "app"

[clusters.app]
balance = "round_robin"
endpoints = ["{}", "{}"]
health_check = {{ kind = "tcp", interval = "100ms", timeout = "200ms", healthy_threshold = 1, unhealthy_threshold = 1 }}
"#,
        a.addr(),
        b.addr()
    )
}

async fn admin_json(proxy: &TestProxy, path: &str) -> Value {
    let resp = http_client::get(&proxy.admin_url(path))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

async fn serve_traffic(proxy: &TestProxy, count: usize) {
    for i in 0..count {
        let resp = http_client::get(&proxy.url("public", &format!("/page/{i}")))
            .await
            .expect("request through the proxy");
        assert_eq!(resp.status, StatusCode::OK);
    }
}

/// Runs headless Chromium with `args` then `url`; returns stdout. Bounded: killed after 90 s.
async fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let mut command = tokio::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            // Five seconds of page time: the first refresh and two more (every 2 s).
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .expect("start chromium (apt-get install chromium; .ci/run installs it)");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium output");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The opening tag of the element carrying `attribute` (e.g. `data-endpoint="1.2.3.4:5"`).
fn tag_with<'a>(dom: &'a str, attribute: &str) -> &'a str {
    let at = dom
        .find(attribute)
        .unwrap_or_else(|| panic!("no element with {attribute} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap_or(0);
    let end = at + dom[at..].find('>').unwrap_or(0);
    &dom[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_an_endpoint_turning_unhealthy_in_a_real_browser() {
    let a = Backend::start(Behavior::Echo);
    let mut b = Backend::start(Behavior::Echo);
    let b_addr = b.addr().to_string();
    let proxy = Proxy::start_toml(&config(&a, &b));
    serve_traffic(&proxy, 30).await;
    assert!(b.request_count() > 0, "round robin reached both endpoints");

    b.stop();
    let unhealthy = crate::support::wait_until_check(DEADLINE, || async {
        let ups = admin_json(&proxy, "/upstreams").await;
        ups["clusters"][0]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["address"] == b_addr.as_str() && e["healthy"] == false)
    })
    .await;
    assert!(unhealthy, "/upstreams never showed {b_addr} unhealthy");
    // Traffic after the failure goes to the healthy endpoint only.
    serve_traffic(&proxy, 10).await;

    let profile = tempfile::tempdir().expect("profile dir");
    let url = proxy.admin_url("/");
    let dom = chromium(profile.path(), &["--dump-dom"], &url).await;

    let body = tag_with(&dom, "data-loaded=");
    assert!(
        !body.contains("data-loaded=\"0\""),
        "the page's scripts never rendered the API data: {body}"
    );
    let down = tag_with(&dom, &format!("data-endpoint=\"{b_addr}\""));
    assert!(down.contains("data-healthy=\"false\""), "{down}");
    assert!(down.contains("unhealthy"), "{down}");
    let up = tag_with(&dom, &format!("data-endpoint=\"{}\"", a.addr()));
    assert!(up.contains("data-healthy=\"true\""), "{up}");
    assert!(up.contains("data-state=\"healthy\""), "{up}");
    assert!(
        dom.contains(">1/2 up<"),
        "cluster badge counts one of two endpoints up"
    );
    // The route row carries the last minute's figures from /stats.
    let route = tag_with(&dom, "data-route=\"web\"");
    assert!(route.starts_with("<tr"), "{route}");
    assert!(dom.contains("<svg class=\"spark\""), "sparklines drawn");
    assert!(
        dom.contains("<polyline class=\"rate\""),
        "request-rate line drawn"
    );
    // No cache and no mesh configured: both panels say so.
    assert!(tag_with(&dom, "id=\"cache\"").contains("data-state=\"off\""));
    assert!(dom.contains("cache off"));
    assert!(tag_with(&dom, "id=\"mesh\"").contains("data-state=\"off\""));

    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &[
            "--window-size=1300,620",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "screenshot suspiciously small");
    if std::env::var_os("SWITCHYARD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::create_dir_all(docs.parent().expect("docs dir")).expect("mkdir docs");
        std::fs::copy(&shot, &docs).expect("update docs/status-page.png");
    }
}

fn screenshot_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    dir.join("status-page.png")
}

#[tokio::test]
async fn the_page_is_self_contained_html() {
    let a = Backend::start(Behavior::Echo);
    let b = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&a, &b));
    let resp = http_client::get(&proxy.admin_url("/"))
        .await
        .expect("GET /");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = resp.header("content-security-policy").expect("CSP header");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let page = resp.text();
    assert!(page.starts_with("<!doctype html>"));
    for path in [
        "\"config\"",
        "\"upstreams\"",
        "\"mesh/members\"",
        "\"stats\"",
    ] {
        assert!(page.contains(path), "the page does not poll {path}");
    }
    // The proxy listeners never serve it.
    let proxied = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("GET / on the proxy");
    assert!(!proxied.text().contains("switchyard status"));
}

#[tokio::test]
async fn stats_report_rate_and_latency_per_route_and_cluster() {
    let a = Backend::start(Behavior::Echo);
    let b = Backend::start(Behavior::fixed(503, "down"));
    let proxy = Proxy::start_toml(&config(&a, &b));
    for i in 0..40 {
        let _ = http_client::get(&proxy.url("public", &format!("/s/{i}"))).await;
    }
    // A request is counted when the proxy drops its response body, just after the client has
    // the last byte: poll until all 40 are in.
    crate::support::wait_until_check(DEADLINE, || async {
        let stats = admin_json(&proxy, "/stats").await;
        stats["routes"][0]["requests"] == 40 && stats["clusters"][0]["requests"] == 40
    })
    .await;
    let stats = admin_json(&proxy, "/stats").await;
    assert_eq!(stats["bucket_seconds"], 10);
    assert_eq!(stats["cache"], Value::Null);
    let route = &stats["routes"][0];
    assert_eq!(route["name"], "web");
    assert_eq!(route["listener"], "public");
    assert_eq!(route["requests"], 40);
    // Round robin over a 200 and a 503 backend; outlier detection ejects the 503 one after
    // consecutive_gateway_errors = 3 (sooner or later, by timing), so 3 to 20 of the 40 are 5xx.
    let errors = route["error_ratio"].as_f64().expect("error ratio");
    assert!((2.5 / 40.0..=0.5).contains(&errors), "{errors}");
    let (p50, p99) = (
        route["p50_ms"].as_f64().expect("p50"),
        route["p99_ms"].as_f64().expect("p99"),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    assert!(route["rate"].as_f64().expect("rate") > 0.0);
    let series = route["series"].as_array().expect("series");
    assert_eq!(series.len(), 30);
    let in_series: u64 = series.iter().filter_map(|b| b["requests"].as_u64()).sum();
    assert_eq!(in_series, 40);
    let cluster = &stats["clusters"][0];
    assert_eq!(
        (cluster["name"].as_str(), cluster["requests"].as_u64()),
        (Some("app"), Some(40))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_mesh_members_and_the_cache_hit_ratio_when_they_are_on() {
    use crate::support::backend::Action;
    let backend = Backend::start(Behavior::script(|_, _| Action::Respond {
        status: 200,
        headers: vec![("cache-control".into(), "max-age=60".into())],
        body: bytes::Bytes::from_static(b"cacheable"),
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("mesh.key");
    std::fs::write(&key, "status page test key, at least thirty-two bytes\n").expect("write key");
    let proxy = Proxy::start_toml(&format!(
        r#"
[cache]
max_bytes = "16MiB"

[mesh]
listen = "127.0.0.1:0"
secret_file = "{}"
advertise = {{ service = "web", address = "127.0.0.1:8080" }}

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "cached"
cluster = "app"
cache = true

[clusters.app]
endpoints = ["{}"]
"#,
        key.display(),
        backend.addr()
    ));
    for _ in 0..5 {
        let resp = http_client::get(&proxy.url("public", "/same"))
            .await
            .expect("request through the proxy");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert!(backend.request_count() < 5, "the cache answered some");

    let profile = tempfile::tempdir().expect("profile dir");
    let dom = chromium(profile.path(), &["--dump-dom"], &proxy.admin_url("/")).await;
    assert!(
        tag_with(&dom, "id=\"mesh\"").contains("data-state=\"on\""),
        "{dom}"
    );
    let member = tag_with(&dom, "class=\"member\"");
    assert!(member.contains("data-state=\"alive\""), "{member}");
    assert!(
        dom.contains("web 127.0.0.1:8080"),
        "advertised service shown"
    );
    assert!(tag_with(&dom, "id=\"cache\"").contains("data-state=\"on\""));
    let ratio = &dom[dom.find("id=\"cache-ratio\">").expect("cache ratio") + 17..];
    let percent: f64 = ratio[..ratio.find(' ').expect("number")]
        .parse()
        .expect("a percentage");
    assert!(percent > 0.0 && percent < 100.0, "hit ratio {percent} %");
}
