//! Access-log lines as `switchyard run` writes them: one per request, JSON objects carrying
//! every field, successes sampled, errors always written, `[log] access = false` silent.
//!
//! Each test ends the process (SIGTERM, exit) before judging what was *not* logged, so the
//! complete output is known and no absence is concluded from a timeout.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::backend::{Backend, Behavior};
use support::http_client::{self, HttpClient};
use support::launcher::{BinProcess, Pipe};
use support::raw_client::raw_request;
use support::DEADLINE;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn start(dir: &Path, backend: SocketAddr, log: &str) -> (BinProcess, SocketAddr) {
    let path = dir.join("switchyard.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[runtime]
workers = 1

[admin]
listen = "127.0.0.1:0"

[log]
{log}

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "app-route"
match = {{ path_prefix = "/app" }}
cluster = "app"

[clusters.app]
endpoints = ["{backend}"]
"#
        ),
    )
    .expect("write config");
    let proxy = BinProcess::spawn(&["run", "-c", &path.to_string_lossy()]);
    // The first such line is the proxy listener's; the admin API's comes after.
    let line = proxy.expect_line("listening on http://");
    let addr = addr_in(&line);
    (proxy, addr)
}

/// Stops the proxy and returns every access-log line it wrote (stderr, JSON).
fn stop_and_collect_json(mut proxy: BinProcess) -> Vec<Value> {
    proxy.terminate();
    let exit = proxy.wait_exit(DEADLINE).expect("exits on SIGTERM");
    assert!(exit.success(), "{exit:?}");
    // The pipes close once the process is gone; the last line is `stopped`.
    proxy.expect_line("stopped");
    proxy
        .output(Pipe::Stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "switchyard::access")
        .collect()
}

#[tokio::test]
async fn json_lines_carry_every_field() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, addr) = start(dir.path(), backend.addr(), r#"format = "json""#);

    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/app/items?x=1"))
        .header("x-request-id", "req-42")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    let resp = HttpClient::http1().send(req).await.expect("POST");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text(), "hello");
    let missing = http_client::get(&format!("http://{addr}/missing"))
        .await
        .expect("GET");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let lines = stop_and_collect_json(proxy);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let ok = lines
        .iter()
        .find(|l| l["request_id"] == "req-42")
        .expect("the POST's line");
    for field in [
        "method",
        "authority",
        "path",
        "status",
        "duration_ms",
        "cluster",
        "endpoint",
        "attempts",
        "bytes_in",
        "bytes_out",
        "request_id",
        "trace_id",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing: {ok}");
    }
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["authority"], addr.to_string());
    assert_eq!(ok["path"], "/app/items?x=1");
    assert_eq!(ok["status"], 200);
    assert!(ok["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{ok}");
    assert_eq!(ok["route"], "app-route");
    assert_eq!(ok["cluster"], "app");
    assert_eq!(ok["endpoint"], backend.addr().to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["bytes_in"], 5);
    assert_eq!(ok["bytes_out"], 5);
    assert_eq!(ok["trace_id"], TRACE_ID);
    assert_eq!(ok["completed"], true);

    let not_found = lines
        .iter()
        .find(|l| l["status"] == 404)
        .expect("the 404's line");
    assert_eq!(not_found["path"], "/missing");
    assert_eq!(not_found["cluster"], "-");
    assert_eq!(not_found["attempts"], 0);
    // A trace id is made when the client sent none.
    assert_eq!(not_found["trace_id"].as_str().map(str::len), Some(32));
}

#[tokio::test]
async fn sampling_drops_successes_but_never_errors() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, addr) = start(
        dir.path(),
        backend.addr(),
        "format = \"json\"\naccess_sample = 0.0",
    );
    for _ in 0..5 {
        let resp = http_client::get(&format!("http://{addr}/app"))
            .await
            .expect("GET");
        assert_eq!(resp.status, StatusCode::OK);
    }
    let missing = http_client::get(&format!("http://{addr}/missing"))
        .await
        .expect("GET");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let lines = stop_and_collect_json(proxy);
    let statuses: Vec<&Value> = lines.iter().map(|l| &l["status"]).collect();
    assert_eq!(statuses, [&Value::from(404)], "{lines:#?}");
}

/// A request refused before routing (here a smuggling attempt) never reaches the access log's
/// writer, so it gets its own line, even with the access log off.
#[tokio::test]
async fn rejected_requests_are_logged_even_with_access_off() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut proxy, addr) = start(
        dir.path(),
        backend.addr(),
        "format = \"json\"\naccess = false",
    );
    let smuggle = b"POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let resp = tokio::task::spawn_blocking(move || raw_request(addr, smuggle))
        .await
        .expect("raw client");
    assert_eq!(resp.status, 400);
    proxy.terminate();
    assert!(proxy.wait_exit(DEADLINE).is_some_and(|s| s.success()));
    proxy.expect_line("stopped");
    let rejected: Vec<Value> = proxy
        .output(Pipe::Stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "switchyard::rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(rejected[0]["status"], 400);
    assert_eq!(rejected[0]["reason"], "te_with_content_length");
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn access_off_writes_nothing() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, addr) = start(
        dir.path(),
        backend.addr(),
        "format = \"json\"\naccess = false",
    );
    let resp = http_client::get(&format!("http://{addr}/missing"))
        .await
        .expect("GET");
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert!(stop_and_collect_json(proxy).is_empty());
}

#[tokio::test]
async fn text_lines_name_the_target_and_fields() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut proxy, addr) = start(dir.path(), backend.addr(), r#"format = "text""#);
    let resp = http_client::get(&format!("http://{addr}/app/t"))
        .await
        .expect("GET");
    assert_eq!(resp.status, StatusCode::OK);
    let line = proxy.expect_line("switchyard::access");
    for needle in ["method=GET", "path=/app/t", "status=200", "cluster=app"] {
        assert!(line.contains(needle), "{needle} not in {line:?}");
    }
    proxy.terminate();
    assert!(proxy.wait_exit(DEADLINE).is_some_and(|s| s.success()));
}

/// The address after the first `http://` in a log line, text or JSON (where a quote ends it).
fn addr_in(line: &str) -> SocketAddr {
    let start = line.find("http://").map(|i| i + "http://".len());
    let rest = &line[start.unwrap_or(line.len())..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"))
}
