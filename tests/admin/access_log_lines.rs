//! Access-log lines as `switchyard run` writes them: one per request, JSON objects carrying
//! every field, successes sampled, errors always written, `[log] access = false` silent.
//!
//! Each test ends the process (SIGTERM, exit) before judging what was *not* logged, so the
//! complete output is known and no absence is concluded from a timeout.

use std::net::SocketAddr;

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::{BinProcess, BinProxy, Pipe};
use crate::support::raw_client::raw_request;
use crate::support::DEADLINE;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The binary in front of `backend` with `[log]` set to `log`, one route `app-route` on `/app`.
fn start(backend: SocketAddr, log: &str) -> BinProxy {
    let toml = ProxyConfig::new([backend])
        .workers(1)
        .route("name = \"app-route\"\nmatch = { path_prefix = \"/app\" }")
        .tail(&format!("[log]\n{log}"))
        .toml();
    BinProxy::start(&toml)
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
    let bin = start(backend.addr(), r#"format = "json""#);
    let (proxy, addr) = (bin.process, bin.addr);

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
    let bin = start(backend.addr(), "format = \"json\"\naccess_sample = 0.0");
    let (proxy, addr) = (bin.process, bin.addr);
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
    let bin = start(backend.addr(), "format = \"json\"\naccess = false");
    let (mut proxy, addr) = (bin.process, bin.addr);
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
    let bin = start(backend.addr(), "format = \"json\"\naccess = false");
    let (proxy, addr) = (bin.process, bin.addr);
    let resp = http_client::get(&format!("http://{addr}/missing"))
        .await
        .expect("GET");
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert!(stop_and_collect_json(proxy).is_empty());
}

#[tokio::test]
async fn text_lines_name_the_target_and_fields() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let bin = start(backend.addr(), r#"format = "text""#);
    let (mut proxy, addr) = (bin.process, bin.addr);
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

/// A client-controlled value cannot add fields or lines to a text access-log line: an
/// `x-request-id` outside `[A-Za-z0-9._:-]{1,128}` is replaced by a generated one (upstream
/// too), and every value with a space, quote, `=`, backslash or control byte is quoted with
/// escapes, so the line splits into exactly the fields the proxy wrote.
#[tokio::test]
async fn text_lines_cannot_be_forged_by_client_values() {
    let backend = Backend::start_named("app", Behavior::Echo);
    let bin = start(backend.addr(), r#"format = "text""#);
    let (mut proxy, addr) = (bin.process, bin.addr);
    let forged = b"GET /app/q?x=%22a%22=b&y=%0Aline HTTP/1.1\r\nHost: a\r\n\
        User-Agent: ua \"quoted\" status=500\r\nX-Request-Id: abc status=200 x\r\n\
        Connection: close\r\n\r\n";
    let resp = tokio::task::spawn_blocking(move || raw_request(addr, forged))
        .await
        .expect("raw client");
    assert_eq!(resp.status, 200, "{resp:?}");
    let generated = resp.header("x-request-id").expect("an id").to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let seen = backend.requests();
    assert_eq!(seen[0].headers["x-request-id"], generated.as_str());

    let line = proxy.expect_line("switchyard::access");
    let (_, rest) = line
        .split_once("switchyard::access: request ")
        .unwrap_or_else(|| panic!("no access line: {line:?}"));
    let fields = logfmt(rest).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "method",
            "authority",
            "path",
            "status",
            "duration_ms",
            "listener",
            "route",
            "cluster",
            "endpoint",
            "attempts",
            "bytes_in",
            "bytes_out",
            "request_id",
            "trace_id",
            "completed",
            "client_identity"
        ],
        "{line:?}"
    );
    let value = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(value("path"), Some("/app/q?x=%22a%22=b&y=%0Aline"));
    assert_eq!(value("status"), Some("200"));
    assert_eq!(value("request_id"), Some(generated.as_str()));
    proxy.terminate();
    assert!(proxy.wait_exit(DEADLINE).is_some_and(|s| s.success()));
}

/// Splits `key=value key="quoted \"value\"" …` strictly: single spaces between fields, a
/// bare value has no space, quote or `=`, a quoted one ends at an unescaped quote.
fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = line.trim_end().chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad key {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some(c @ ('"' | '\\')) => value.push(c),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
            match chars.next() {
                None | Some(' ') => {}
                Some(c) => return Err(format!("{c:?} after a quoted value")),
            }
        } else {
            for c in chars.by_ref() {
                match c {
                    ' ' => break,
                    '"' | '=' => return Err(format!("{c:?} in a bare value of {key}")),
                    c => value.push(c),
                }
            }
        }
        out.push((key, value));
    }
    Ok(out)
}
