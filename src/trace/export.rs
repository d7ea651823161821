//! OTLP/HTTP JSON export of the proxy's spans: a bounded queue the request path pushes to
//! without waiting, and a background batcher on a thread of its own that posts to the
//! collector.
//!
//! A span that does not fit in the queue (collector slow or down) is dropped and counted in
//! `switchyard_trace_spans_total{result="dropped"}`: tracing must never slow or block a request.
//! The batcher owns the receiving end; when the last [`Tracer`] handle goes (a reload removed
//! `otlp`, or the proxy stopped) the queue closes, the batcher posts what it holds and its
//! thread ends.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::ServerSpan;
use crate::config::TracingConfig;

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::SPANS_TOTAL;

/// Spans waiting for the batcher; at ~1 KiB of JSON each, 4096 bound the memory a dead
/// collector can hold to a few MiB.
const QUEUE: usize = 4096;
/// Spans per post: OTLP collectors take far larger batches; this keeps one post under ~1 MiB.
const MAX_BATCH: usize = 512;
/// How long the batcher waits for a batch to fill once it holds a span: the delay between a
/// request ending and its span reaching the collector.
const FLUSH_AFTER: Duration = Duration::from_millis(500);
/// A post (connect, send, response head) that takes longer fails; its spans are counted as
/// failed rather than retried, so a slow collector costs one batch, not a growing backlog.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// One finished request span, as the access log knows it when the response ends.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    /// Ids, flags and start time.
    pub span: ServerSpan,
    /// When the response body ended (or was abandoned).
    pub end: SystemTime,
    /// Span name: method and route (`GET web`), per OpenTelemetry's HTTP server convention.
    pub name: String,
    /// The status the client got; 5xx marks the span as an error.
    pub status: u16,
    /// String attributes (`http.request.method`, `url.path`, `switchyard.route`, …).
    pub attributes: Vec<(&'static str, String)>,
    /// Integer attributes (`switchyard.attempts`).
    pub int_attributes: Vec<(&'static str, i64)>,
}

/// A handle on one exporter: the queue's sending end plus what identifies it, so a reload
/// with the same `[tracing]` keeps the same exporter (and its queue) instead of starting a new
/// thread.
#[derive(Debug)]
pub struct Tracer {
    uri: Uri,
    service_name: String,
    queue: mpsc::Sender<FinishedSpan>,
}

impl Tracer {
    /// The exporter `[tracing]` asks for: `None` without `otlp`; `previous` reused when it posts
    /// to the same place under the same service name; otherwise a new one (and its thread). A
    /// thread that cannot be spawned leaves tracing off with a warning rather than failing the
    /// reload.
    pub fn build(config: &TracingConfig, previous: Option<&Arc<Tracer>>) -> Option<Arc<Tracer>> {
        let uri = config.otlp.as_ref()?;
        if let Some(previous) =
            previous.filter(|p| &p.uri == uri && p.service_name == config.service_name)
        {
            return Some(Arc::clone(previous));
        }
        Self::spawn(uri, &config.service_name, QUEUE).map(Arc::new)
    }

    /// Starts an exporter with a queue of `capacity` spans on a thread of its own.
    fn spawn(uri: &Uri, service_name: &str, capacity: usize) -> Option<Tracer> {
        let (queue, spans) = mpsc::channel(capacity);
        let (target, service) = (uri.clone(), service_name.to_owned());
        let spawned = std::thread::Builder::new()
            .name("switchyard-otlp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(batch_and_post(spans, target, service)),
                    Err(error) => {
                        tracing::warn!(%error, "OTLP exporter runtime failed; spans are dropped")
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Tracer {
                uri: uri.clone(),
                service_name: service_name.to_owned(),
                queue,
            }),
            Err(error) => {
                tracing::warn!(%error, "cannot start the OTLP exporter thread; tracing export is off");
                None
            }
        }
    }

    /// Queues `span` for export; never waits. A full queue drops and counts it (returns
    /// false).
    pub fn export(&self, span: FinishedSpan) -> bool {
        let queued = self.queue.try_send(span).is_ok();
        if !queued {
            metrics::counter!(SPANS_TOTAL, "result" => "dropped").increment(1);
        }
        queued
    }
}

/// The batcher: collects up to [`MAX_BATCH`] spans or [`FLUSH_AFTER`], posts them, repeats;
/// ends once the queue is closed and drained.
async fn batch_and_post(mut spans: mpsc::Receiver<FinishedSpan>, uri: Uri, service: String) {
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_AFTER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let body = encode(&batch, &service).to_string();
        let result = match tokio::time::timeout(POST_TIMEOUT, post(&uri, body)).await {
            Ok(Ok(())) => "exported",
            Ok(Err(error)) => {
                tracing::warn!(%error, %uri, spans = count, "OTLP export failed");
                "failed"
            }
            Err(_) => {
                tracing::warn!(%uri, spans = count, "OTLP export timed out");
                "failed"
            }
        };
        metrics::counter!(SPANS_TOTAL, "result" => result).increment(count);
    }
}

/// One POST on a fresh HTTP/1.1 connection: at most one batch per [`FLUSH_AFTER`], so a
/// pooled connection would save little and need reconnect logic of its own.
async fn post(uri: &Uri, body: String) -> Result<(), String> {
    let authority = uri.authority().ok_or("no authority")?.as_str().to_owned();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::post(uri.path())
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("collector answered {}", response.status()))
    }
}

/// `ExportTraceServiceRequest` in the protobuf JSON mapping OTLP/HTTP specifies: ids as hex
/// strings, 64-bit integers as decimal strings, enums as numbers.
pub fn encode(batch: &[FinishedSpan], service: &str) -> Value {
    let spans: Vec<Value> = batch.iter().map(span_json).collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [string_attr("service.name", service)] },
            "scopeSpans": [{
                "scope": { "name": "switchyard", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

fn span_json(finished: &FinishedSpan) -> Value {
    let span = &finished.span;
    let mut attributes: Vec<Value> = finished
        .attributes
        .iter()
        .map(|(k, v)| string_attr(k, v))
        .collect();
    attributes.push(json!({
        "key": "http.response.status_code",
        "value": { "intValue": finished.status.to_string() },
    }));
    attributes.extend(
        finished
            .int_attributes
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": { "intValue": v.to_string() } })),
    );
    // Status 2 (ERROR) for 5xx only: a 4xx is the client's error, not the server span's
    // (OpenTelemetry HTTP semantic conventions).
    let status = if finished.status >= 500 {
        json!({ "code": 2 })
    } else {
        json!({})
    };
    let mut out = json!({
        "traceId": span.trace_hex(),
        "spanId": format!("{:016x}", span.span_id),
        "name": finished.name,
        // SPAN_KIND_SERVER
        "kind": 2,
        "startTimeUnixNano": unix_nanos(span.started).to_string(),
        "endTimeUnixNano": unix_nanos(finished.end).to_string(),
        "attributes": attributes,
        "status": status,
    });
    if let (Some(parent), Some(map)) = (span.parent_id, out.as_object_mut()) {
        map.insert("parentSpanId".into(), json!(format!("{parent:016x}")));
    }
    out
}

fn string_attr(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(span_id: u64) -> FinishedSpan {
        FinishedSpan {
            span: ServerSpan {
                trace_id: 7,
                span_id,
                parent_id: None,
                flags: 1,
                started: SystemTime::now(),
            },
            end: SystemTime::now(),
            name: "GET".into(),
            status: 200,
            attributes: Vec::new(),
            int_attributes: Vec::new(),
        }
    }

    #[test]
    fn a_stuck_collector_fills_the_queue_and_spans_are_dropped_not_waited_for() {
        // A collector that accepts and never answers: the batcher's post hangs (up to
        // POST_TIMEOUT) holding the first batch, and the queue behind it fills.
        let collector = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let uri: Uri = format!("http://{}/v1/traces", collector.local_addr().expect("addr"))
            .parse()
            .expect("uri");
        let tracer = Tracer::spawn(&uri, "t", 2).expect("exporter thread");
        assert!(tracer.export(finished(1)));
        let (_held, _) = collector.accept().expect("the batcher connects");
        // The batcher is now inside its post: two spans fit, the third does not.
        let queued: Vec<bool> = (2..5).map(|id| tracer.export(finished(id))).collect();
        assert_eq!(queued, [true, true, false]);
    }

    #[test]
    fn spans_encode_in_the_otlp_json_mapping() {
        let span = ServerSpan {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0xab,
            parent_id: Some(0xcd),
            flags: 1,
            started: UNIX_EPOCH + Duration::from_nanos(1_000),
        };
        let finished = FinishedSpan {
            span,
            end: UNIX_EPOCH + Duration::from_nanos(3_000),
            name: "GET web".into(),
            status: 503,
            attributes: vec![("switchyard.route", "web".into())],
            int_attributes: vec![("switchyard.attempts", 2)],
        };
        let doc = encode(&[finished], "edge");
        let rs = &doc["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "edge"
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00000000000000ab");
        assert_eq!(s["parentSpanId"], "00000000000000cd");
        assert_eq!(s["startTimeUnixNano"], "1000");
        assert_eq!(s["endTimeUnixNano"], "3000");
        assert_eq!(s["status"]["code"], 2);
        let attrs = s["attributes"].as_array().expect("array");
        assert!(attrs
            .iter()
            .any(|a| a["key"] == "http.response.status_code" && a["value"]["intValue"] == "503"));
        assert!(attrs.iter().any(|a| a["key"] == "switchyard.attempts"));
    }
}
