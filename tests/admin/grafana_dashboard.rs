//! `examples/grafana/switchyard.json` queries only metrics a real proxy exports: every PromQL
//! expression's metric names are checked against the sample names of a `/metrics` scrape taken
//! after the proxy served traffic that exercises each feature the dashboard charts (cache,
//! mesh, retries, an exhausted budget, an ejection, a reload, span export).

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::metrics;
use crate::support::DEADLINE;
use http::StatusCode;
use serde_json::Value;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/switchyard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets and templating queries.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        out.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_owned()),
        );
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            out.push(variable["query"].as_str().expect("query").to_owned());
        }
    }
    out
}

/// `switchyard_*` identifiers in `expr` (metric names; label names never carry the prefix).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Sample names in a Prometheus text scrape (`name{labels} value` or `name value`).
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn panels_are_well_formed() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "switchyard");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate id"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some());
        assert!(!panel["title"].as_str().unwrap_or("").is_empty());
    }
    for expr in expressions(&dashboard) {
        let balanced = |open: char, close: char| {
            let mut depth = 0i32;
            for c in expr.chars() {
                depth += i32::from(c == open) - i32::from(c == close);
                assert!(depth >= 0, "unbalanced {open}{close} in {expr}");
            }
            depth == 0
        };
        assert!(
            balanced('(', ')') && balanced('{', '}') && balanced('[', ']'),
            "{expr}"
        );
        assert!(
            !metric_names(&expr).is_empty(),
            "no switchyard metric in {expr}"
        );
    }
    // What the issue asks the dashboard to show.
    let all: BTreeSet<String> = expressions(&dashboard)
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    for wanted in [
        "switchyard_requests_total",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_retries_total",
        "switchyard_retry_budget_exhausted_total",
        "switchyard_endpoint_ejected",
        "switchyard_cache_requests_total",
        "switchyard_mesh_members",
    ] {
        assert!(
            all.contains(wanted),
            "the dashboard does not chart {wanted}"
        );
    }
}

fn config(ok: &Backend, bad: &[Backend; 2], collector: &Backend, key: &Path) -> String {
    format!(
        r#"
[tracing]
otlp = "http://{collector}"

[cache]
max_bytes = "16MiB"

[mesh]
listen = "127.0.0.1:0"
secret_file = "{key}"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "cached"
match = {{ path_prefix = "/cached" }}
cluster = "ok"
cache = true

[[routes]]
name = "retried"
match = {{ path_prefix = "/retried" }}
cluster = "flaky"
retry = {{ attempts = 2, backoff = "1ms", budget = {{ ratio = 1.0, min_per_sec = 1000 }} }}

[[routes]]
name = "stingy"
match = {{ path_prefix = "/stingy" }}
cluster = "flaky"
retry = {{ attempts = 2, backoff = "1ms", budget = {{ ratio = 0.0, min_per_sec = 0 }} }}

[clusters.ok]
endpoints = ["{ok}"]
health_check = {{ kind = "tcp", interval = "100ms" }}

[clusters.flaky]
endpoints = ["{}", "{}"]
"#,
        bad[0].addr(),
        bad[1].addr(),
        collector = collector.addr(),
        ok = ok.addr(),
        key = key.display(),
    )
}

async fn scrape(proxy: &TestProxy) -> String {
    metrics::scrape(proxy.admin_addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let ok = Backend::start(Behavior::fixed(200, "cacheable"));
    let bad = [
        Backend::start(Behavior::fixed(503, "down")),
        Backend::start(Behavior::fixed(503, "down")),
    ];
    let collector = Backend::start(Behavior::fixed(200, "{}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("mesh.key");
    std::fs::write(
        &key,
        "grafana dashboard test key, at least thirty-two bytes\n",
    )
    .expect("write key");
    let proxy = Proxy::start_toml(&config(&ok, &bad, &collector, &key));

    for i in 0..3 {
        let _ = http_client::get(&proxy.url("public", "/cached/page")).await;
        let _ = http_client::get(&proxy.url("public", &format!("/stingy/{i}"))).await;
    }
    // Retries on the 503s, until outlier detection ejects one of the two endpoints
    // (consecutive_gateway_errors = 3; max_percent = 50 allows one of two).
    for i in 0..20 {
        let _ = http_client::get(&proxy.url("public", &format!("/retried/{i}"))).await;
    }
    // A changed file (an unchanged one is not counted as a reload).
    let mut text = std::fs::read_to_string(proxy.config_path()).expect("read config");
    text.push_str("\n[log]\naccess_sample = 0.5\n");
    std::fs::write(proxy.config_path(), text).expect("write config");
    let reload = http_client::post(&proxy.admin_url("/reload"), "")
        .await
        .expect("POST /reload");
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());

    let wanted: BTreeSet<String> = expressions(&dashboard())
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    // Some series appear a moment after the traffic (span export batches, health probes,
    // the series count set by the previous scrape): poll scrapes until all are there.
    // Names seen in any scrape count: some series appear only once traffic has moved.
    let missing = std::cell::RefCell::new(wanted.iter().cloned().collect::<Vec<String>>());
    let (proxy_ref, missing_ref) = (&proxy, &missing);
    crate::support::wait_until_check(DEADLINE, || async move {
        let names = scraped_names(&scrape(proxy_ref).await);
        missing_ref.borrow_mut().retain(|m| !names.contains(m));
        missing_ref.borrow().is_empty()
    })
    .await;
    let missing = missing.into_inner();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}"
    );
}

#[tokio::test]
async fn the_scrape_counts_its_own_series() {
    // Alone in its own process: `switchyard_metric_series` is the size of the previous render of
    // the process-wide registry, which the admin binary's other tests would race.
    if !crate::support::alone::in_own_process("grafana_dashboard::the_scrape_counts_its_own_series")
    {
        return;
    }
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\ncluster = \"app\"\n\n[clusters.app]\nendpoints = [\"{}\"]\n",
        backend.addr()
    ));
    let _ = http_client::get(&proxy.url("public", "/")).await;
    let first = scrape(&proxy).await;
    let series = scraped_names(&first);
    assert!(
        series.contains("switchyard_metric_series"),
        "present from the first scrape"
    );
    let counted = first
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    // The next scrape reports the previous scrape's size: this one's, as nothing else scrapes
    // in this process (half stays the bound: a render racing this one could be a little older).
    let second = scrape(&proxy).await;
    let value: f64 = second
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_metric_series "))
        .and_then(|v| v.trim().parse().ok())
        .expect("switchyard_metric_series value");
    assert!(value >= (counted / 2) as f64, "{value} < {counted} / 2");
    let total = second
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert!(value <= total as f64, "{value} > {total}");
}
