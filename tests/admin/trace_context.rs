//! W3C trace context through the proxy, and the OTLP/HTTP export of its spans to an in-test
//! collector (a scripted backend that records what is posted to it).

use crate::support::backend::{Backend, Behavior, RecordedRequest};
use crate::support::http_client::HttpClient;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::{wait_until_async, DEADLINE};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn config(backend: &Backend, tracing: &str) -> String {
    format!(
        r#"
[tracing]
{tracing}

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "web"
cluster = "app"

[clusters.app]
endpoints = ["{}"]
"#,
        backend.addr()
    )
}

async fn get(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) {
    let mut req = Request::get(proxy.url("public", path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = HttpClient::http1()
        .send(req.body(Full::new(bytes::Bytes::new())).expect("request"))
        .await
        .expect("request through the proxy");
    assert_eq!(resp.status, StatusCode::OK);
}

fn header<'a>(req: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `(trace id, parent id, flags)` of a `traceparent` the backend received.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    assert_eq!(
        (fields[1].len(), fields[2].len()),
        (32, 16),
        "{traceparent}"
    );
    (fields[1].into(), fields[2].into(), fields[3].into())
}

#[tokio::test]
async fn a_client_trace_reaches_the_backend_under_the_proxys_span() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, ""));
    let client = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    get(
        &proxy,
        "/a",
        &[
            ("traceparent", &client),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    get(&proxy, "/b", &[]).await;
    get(
        &proxy,
        "/c",
        &[("traceparent", "00-zz-bad-01"), ("tracestate", "x=y")],
    )
    .await;

    let seen = backend.requests();
    assert_eq!(seen.len(), 3);
    let (trace, parent, flags) = parts(header(&seen[0], "traceparent").expect("traceparent"));
    assert_eq!(trace, TRACE, "the client's trace continues");
    assert_ne!(
        parent, CLIENT_SPAN,
        "the proxy's own span is the parent upstream"
    );
    assert_ne!(parent, "0000000000000000");
    assert_eq!(flags, "01");
    assert_eq!(header(&seen[0], "tracestate"), Some("congo=t61rcWkgMzE"));

    // No traceparent: a new trace, sampled (sample_ratio defaults to 1).
    let (fresh, _, flags) = parts(header(&seen[1], "traceparent").expect("traceparent"));
    assert_ne!(fresh, TRACE);
    assert_ne!(fresh, "0".repeat(32));
    assert_eq!(flags, "01");

    // An invalid one restarts the trace; its tracestate has nothing to belong to.
    let (restarted, _, _) = parts(header(&seen[2], "traceparent").expect("traceparent"));
    assert_ne!(restarted, fresh);
    assert_eq!(header(&seen[2], "tracestate"), None);
}

#[tokio::test]
async fn sample_ratio_zero_leaves_new_traces_unsampled_but_follows_the_client() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&config(&backend, "sample_ratio = 0.0"));
    get(&proxy, "/new", &[]).await;
    let client = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    get(&proxy, "/kept", &[("traceparent", &client)]).await;
    let seen = backend.requests();
    assert_eq!(parts(header(&seen[0], "traceparent").expect("tp")).2, "00");
    assert_eq!(parts(header(&seen[1], "traceparent").expect("tp")).2, "01");
}

/// Every span posted to `collector` so far, from every batch.
fn posted_spans(collector: &Backend) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for post in collector.requests() {
        assert_eq!(post.uri.path(), "/v1/traces");
        assert_eq!(header(&post, "content-type"), Some("application/json"));
        let doc: Value = serde_json::from_slice(&post.body).expect("OTLP JSON");
        for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((rs["resource"].clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test]
async fn sampled_spans_are_exported_over_otlp_http() {
    let collector = Backend::start(Behavior::fixed(200, "{}"));
    let backend = Backend::start(Behavior::Echo);
    let tracing = format!(
        "otlp = \"http://{}\"\nservice_name = \"edge\"\nsample_ratio = 0.0",
        collector.addr()
    );
    let proxy = Proxy::start_toml(&config(&backend, &tracing));
    let client = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    get(&proxy, "/traced?q=1", &[("traceparent", &client)]).await;
    // Unsampled (sample_ratio 0, no client context): propagated, never exported.
    get(&proxy, "/untraced", &[]).await;
    let unsampled = format!("00-{TRACE}-{CLIENT_SPAN}-00");
    get(&proxy, "/untraced", &[("traceparent", &unsampled)]).await;

    let exported = wait_until_async(DEADLINE, || !posted_spans(&collector).is_empty()).await;
    assert!(exported, "no span reached the collector");
    let spans = posted_spans(&collector);
    assert_eq!(
        spans.len(),
        1,
        "only the sampled request is exported: {spans:?}"
    );
    let (resource, span) = &spans[0];
    assert_eq!(resource["attributes"][0]["key"], "service.name");
    assert_eq!(resource["attributes"][0]["value"]["stringValue"], "edge");
    assert_eq!(span["traceId"], TRACE);
    assert_eq!(span["parentSpanId"], CLIENT_SPAN);
    assert_eq!(span["kind"], 2);
    assert_eq!(span["name"], "GET web");
    // The span id is the parent the backend saw.
    let upstream = backend.requests();
    let (_, upstream_parent, _) = parts(header(&upstream[0], "traceparent").expect("tp"));
    assert_eq!(span["spanId"], upstream_parent.as_str());
    assert_eq!(
        attribute(span, "http.route").map(|v| &v["stringValue"]),
        Some(&Value::from("web"))
    );
    assert_eq!(
        attribute(span, "url.path").map(|v| &v["stringValue"]),
        Some(&Value::from("/traced"))
    );
    assert_eq!(
        attribute(span, "http.response.status_code").map(|v| &v["intValue"]),
        Some(&Value::from("200"))
    );
    assert_eq!(
        attribute(span, "server.address").map(|v| &v["stringValue"]),
        Some(&Value::from(backend.addr().to_string()))
    );
    let start: u128 = span["startTimeUnixNano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("start");
    let end: u128 = span["endTimeUnixNano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("end");
    assert!(start > 0 && start <= end, "{start} {end}");

    // A reload that keeps `[tracing]` keeps the exporter: spans keep flowing.
    let mut text = std::fs::read_to_string(proxy.config_path()).expect("read config");
    text.push_str("\n[log]\naccess_sample = 0.5\n");
    std::fs::write(proxy.config_path(), text).expect("write config");
    let reload = crate::support::http_client::post(&proxy.admin_url("/reload"), "")
        .await
        .expect("POST /reload");
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());
    get(&proxy, "/after-reload", &[("traceparent", &client)]).await;
    let again = wait_until_async(DEADLINE, || posted_spans(&collector).len() == 2).await;
    assert!(again, "{:?}", posted_spans(&collector));
}

#[test]
fn otlp_must_be_an_http_url_with_a_port() {
    for (value, needle) in [
        ("https://127.0.0.1:4318", "scheme"),
        ("http://127.0.0.1", "port"),
        ("127.0.0.1:4318", "http://"),
    ] {
        let toml = format!(
            "[tracing]\notlp = \"{value}\"\n[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n"
        );
        let errors = switchyard::config::parse(&toml, std::path::Path::new("t.toml"))
            .expect_err("invalid otlp accepted")
            .to_string();
        assert!(
            errors.contains("tracing.otlp") && errors.contains(needle),
            "{errors}"
        );
        assert!(
            errors.contains("t.toml:2:"),
            "points at the value: {errors}"
        );
    }
    let toml =
        "[tracing]\nsample_ratio = 1.5\n[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n";
    let errors = switchyard::config::parse(toml, std::path::Path::new("t.toml"))
        .expect_err("ratio above 1 accepted")
        .to_string();
    assert!(errors.contains("tracing.sample_ratio"), "{errors}");
}
