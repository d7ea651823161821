//! `/metrics` after traffic of every kind: the series the request path records, and a scrape
//! that `promtool check metrics` accepts (CI installs Debian's `prometheus` package for it).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client;
use crate::support::launcher::Proxy;
use crate::support::net::closed_port;
use crate::support::raw_client::raw_request;
use http::StatusCode;

fn promtool_check(scrape: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install Debian's `prometheus` package (.ci/run does)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write the scrape to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test]
async fn scrape_after_every_kind_of_traffic_passes_promtool() {
    let ok = Backend::start_named("ok", Behavior::Echo);
    let hang = Backend::start_named("hang", Behavior::Hang);
    let failing = Backend::start_named("failing", Behavior::fixed(500, "boom"));
    let proxy = Proxy::start_toml(&format!(
        r#"
[[listeners]]
name = "metrics-test"
listen = "127.0.0.1:0"

[[routes]]
name = "m-ok"
match = {{ path_prefix = "/ok" }}
cluster = "m-app"

[[routes]]
name = "m-dead"
match = {{ path_prefix = "/dead" }}
cluster = "m-dead"

[[routes]]
name = "m-slow"
match = {{ path_prefix = "/slow" }}
cluster = "m-hang"
timeout = "200ms"

[[routes]]
name = "m-fail"
match = {{ path_prefix = "/fail" }}
cluster = "m-fail"

[clusters.m-app]
endpoints = ["{ok}"]

[clusters.m-dead]
endpoints = ["{dead}"]

[clusters.m-hang]
endpoints = ["{hang}"]

[clusters.m-fail]
endpoints = ["{fail}"]
"#,
        ok = ok.addr(),
        dead = closed_port(),
        hang = hang.addr(),
        fail = failing.addr(),
    ));
    let url = |path: &str| proxy.url("metrics-test", path);
    for (path, status) in [
        ("/ok/1", StatusCode::OK),
        ("/ok/2", StatusCode::OK),
        ("/nowhere", StatusCode::NOT_FOUND),
        ("/dead", StatusCode::BAD_GATEWAY),
        ("/slow", StatusCode::GATEWAY_TIMEOUT),
        ("/fail", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let resp = http_client::get(&url(path)).await.expect("request");
        assert_eq!(resp.status, status, "{path}");
    }
    // Rejected before routing: a malformed path, and a request-smuggling attempt.
    let addr = proxy.addr("metrics-test");
    let bad_path = raw_request(addr, b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bad_path.status, 400);
    let smuggle = raw_request(
        addr,
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(smuggle.status, 400, "a smuggling attempt is refused");

    let resp = http_client::get(&proxy.admin_url("/metrics"))
        .await
        .expect("scrape");
    assert_eq!(resp.status, StatusCode::OK);
    let scrape = resp.text();

    let series = |needle: &str| {
        assert!(
            scrape.lines().any(|l| l.contains(needle)),
            "no line with {needle} in\n{scrape}"
        );
    };
    for (route, cluster, code) in [
        ("m-ok", "m-app", "200"),
        ("m-dead", "m-dead", "502"),
        ("m-slow", "m-hang", "504"),
        ("m-fail", "m-fail", "500"),
    ] {
        series(&format!(
            "switchyard_requests_total{{listener=\"metrics-test\",route=\"{route}\",cluster=\"{cluster}\",code=\"{code}\"}}"
        ));
    }
    series("switchyard_requests_total{listener=\"metrics-test\",route=\"m-ok\",cluster=\"m-app\",code=\"200\"} 2");
    series("switchyard_requests_total{listener=\"metrics-test\",route=\"\",cluster=\"\",code=\"404\"} 1");
    series(
        "switchyard_requests_total{listener=\"metrics-test\",route=\"\",cluster=\"\",code=\"400\"}",
    );
    series("switchyard_request_duration_seconds_bucket{route=\"m-slow\",cluster=\"m-hang\",class=\"5xx\",le=\"+Inf\"} 1");
    series("switchyard_request_duration_seconds_bucket{route=\"m-ok\",cluster=\"m-app\",class=\"2xx\",le=\"0.00005\"}");
    series("switchyard_request_duration_seconds_bucket{route=\"m-ok\",cluster=\"m-app\",class=\"2xx\",le=\"30\"} 2");
    series("# HELP switchyard_requests_total ");
    series("# HELP switchyard_request_duration_seconds ");
    series("# TYPE switchyard_request_duration_seconds histogram");
    series("switchyard_rejected_requests_total{reason=\"");
    series("# HELP switchyard_rejected_requests_total ");
    series("switchyard_downstream_connections");
    series("switchyard_config_version");
    series("switchyard_build_info{version=");

    let (passed, report) = promtool_check(&scrape);
    assert!(
        passed,
        "promtool check metrics failed:\n{report}\n--- scrape:\n{scrape}"
    );
}
