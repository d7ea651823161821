//! The access log and per-request metrics: one record per request, written once the response
//! body has ended (so `bytes_out` is known) or been abandoned.
//!
//! Lines go through `tracing` with target `switchyard::access` at INFO, so they follow
//! `--log-format`/`[log] format` (JSON: one flat object per line) and land on stderr with the
//! other logs; `RUST_LOG=switchyard::access=off` silences them without a config change, and an
//! embedding program (or a test) without a subscriber pays nothing for them. `[log] access`
//! turns them off; `access_sample` keeps that fraction of successes, while errors (status ≥ 500
//! or a response the proxy generated itself) are always written.
//!
//! A request whose client went away before the response head is logged with status 499, the
//! convention nginx made common for "client closed request"; so is one whose request body the
//! client abandoned or reset mid-upload (a malformed or stalled body is its 400 or 408).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::body::ProxyBody;
use super::request_body::{DownstreamBody, H2Limits};
use crate::endpoint::EndpointState;
use crate::state::{ClusterSnapshot, Snapshot};
use crate::tls::identity::PeerIdentity;
use crate::wire::{BoxError, ClientBody};

/// The `tracing` target of access-log lines.
pub const TARGET: &str = "switchyard::access";

/// Logged for a request whose client disconnected before the response head was ready.
const CLIENT_CLOSED: u16 = crate::wire::client_side::CLIENT_CLOSED;

/// What the request path learns while forwarding: filled in by the stack (`proxy::stack`) as
/// it goes, so a failure at any step still logs how far the request got.
#[derive(Debug, Default)]
pub struct RequestFacts {
    /// Index of the matching route in the snapshot's config.
    pub route: Option<usize>,
    /// The cluster picked.
    pub cluster: Option<Arc<ClusterSnapshot>>,
    /// The last endpoint tried.
    pub endpoint: Option<Arc<EndpointState>>,
    /// Endpoints tried (0 when none was reached).
    pub attempts: u32,
    /// The request body's record (requests with a body): `bytes_in`, and whether the client
    /// broke it, which the attempts read to blame the client rather than the endpoint.
    pub client_body: Option<ClientBody>,
}

/// The record of one request in progress; see the module doc.
#[derive(Debug)]
pub struct AccessLog {
    /// `None` once handed to the response body (which then owns the record).
    entry: Option<Entry>,
    /// Where the handler and the attempt loop record the route, cluster, endpoint and attempts;
    /// moved into the entry when it is written.
    pub facts: RequestFacts,
}

/// What the access-log line and the exported span say about the request. Captured only when
/// one of them may be written, so a proxy with both off keeps no copies of the request head.
#[derive(Debug)]
struct Described {
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
    request_id: HeaderValue,
}

#[derive(Debug)]
struct Entry {
    start: Instant,
    snapshot: Arc<Snapshot>,
    listener: Arc<str>,
    /// The client's verified identity (mTLS client certificate, or the peer sidecar's on an
    /// inbound tunnel); `-` in the line without one.
    client_identity: Option<Arc<PeerIdentity>>,
    /// `None` when neither an access-log line nor a span can be written for this request.
    /// Boxed: the entry moves several times per request (into the response body, out to be
    /// written), and the request copies would ride along even when `None`.
    request: Option<Box<Described>>,
    /// The proxy's span (set by `trace::start`): exported when sampled and `otlp` is set.
    span: crate::trace::ServerSpan,
    /// Request body bytes, counted by the body on its way upstream; `None` for a request
    /// without a body, which then costs no shared record.
    bytes_in: Option<ClientBody>,
    facts: RequestFacts,
    status: StatusCode,
    /// The proxy answered itself (no route, upstream failure, …): always logged.
    proxy_error: bool,
}

impl AccessLog {
    /// Starts the record: call once the request id and `traceparent` are settled.
    pub fn start(
        listener: &Arc<str>,
        client_identity: Option<&Arc<PeerIdentity>>,
        snapshot: &Arc<Snapshot>,
        parts: &Parts,
        request_id: &HeaderValue,
        span: crate::trace::ServerSpan,
    ) -> Self {
        Self {
            entry: Some(Entry {
                start: Instant::now(),
                snapshot: Arc::clone(snapshot),
                listener: Arc::clone(listener),
                client_identity: client_identity.cloned(),
                request: (snapshot.config().log.access
                    || (span.sampled() && snapshot.tracer().is_some()))
                .then(|| {
                    Box::new(Described {
                        method: parts.method.clone(),
                        uri: parts.uri.clone(),
                        host: parts.headers.get(header::HOST).cloned(),
                        request_id: request_id.clone(),
                    })
                }),
                span,
                bytes_in: None,
                facts: RequestFacts::default(),
                status: StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST),
                proxy_error: false,
            }),
            facts: RequestFacts::default(),
        }
    }

    /// The request body, counting its bytes for `bytes_in` and recording a failure on the
    /// client's side (see [`RequestFacts::client_body`]), boxed as the upstream side takes it.
    /// `h2`: the limits an HTTP/2 body gets while it streams.
    pub fn count_request_body(
        &mut self,
        body: DownstreamBody,
        h2: Option<H2Limits>,
    ) -> crate::wire::Body {
        // Most requests (GET, HEAD) have no body: no record to share and no wrapper to box.
        if body.is_end_stream() {
            return crate::wire::empty_body();
        }
        let client = ClientBody::new();
        if let Some(entry) = &mut self.entry {
            entry.bytes_in = Some(client.clone());
        }
        self.facts.client_body = Some(client.clone());
        super::request_body::downstream(body, client, h2)
    }

    /// Marks the response as generated by the proxy (an error page): always logged.
    pub fn proxy_error(&mut self) {
        if let Some(entry) = &mut self.entry {
            entry.proxy_error = true;
        }
    }

    /// Hands the record to the response body, which writes it when the body ends or is
    /// dropped.
    pub fn finish(mut self, response: Response<ProxyBody>) -> Response<Tracked> {
        let Some(mut entry) = self.entry.take() else {
            return response.map(Tracked::untracked);
        };
        entry.status = response.status();
        entry.facts = std::mem::take(&mut self.facts);
        response.map(|body| Tracked {
            inner: body,
            bytes_out: 0,
            ended: false,
            entry: Some(entry),
        })
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // Still here: the request future was dropped before a response (client went away).
        if let Some(mut entry) = self.entry.take() {
            entry.facts = std::mem::take(&mut self.facts);
            entry.write(0, false);
        }
    }
}

impl Entry {
    /// Records metrics and (unless sampled out) writes the line.
    fn write(self, bytes_out: u64, completed: bool) {
        // One reading for the duration and the stats period.
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let snapshot = &self.snapshot;
        let listener = snapshot.listener(&self.listener).map(|l| l.index());
        let cluster = self.facts.cluster.as_ref().map(|c| c.name());
        if let Some(series) =
            listener.and_then(|l| snapshot.metrics().series(l, self.facts.route, cluster))
        {
            series.record(self.status, elapsed);
        }
        snapshot
            .stats()
            .record(self.facts.route, cluster, self.status, elapsed, now);
        if let (Some(tracer), Some(request)) = (
            snapshot.tracer().filter(|_| self.span.sampled()),
            &self.request,
        ) {
            tracer.export(self.finished_span(request, self.span, completed));
        }

        let log = &snapshot.config().log;
        let error = self.proxy_error || self.status.is_server_error() || !completed;
        let sampled = log.access_sample >= 1.0 || fastrand::f64() < log.access_sample;
        let Some(request) = self.request.as_ref().filter(|_| log.access) else {
            return;
        };
        if !(error || sampled) {
            return;
        }
        let route = self
            .facts
            .route
            .and_then(|i| snapshot.router().routes().get(i))
            .map_or("-", |r| r.config().name.as_str());
        let authority = request
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| request.host.as_ref().and_then(|h| h.to_str().ok()))
            .unwrap_or("-");
        let endpoint = self.facts.endpoint.as_ref().map(|e| e.address());
        // The trace `traceparent` carries upstream (the client's, or the one we started).
        let trace_id = self.span.trace_hex();
        tracing::info!(
            target: TARGET,
            method = %request.method,
            authority = %authority,
            path = %request.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            status = self.status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            listener = %self.listener,
            route = %route,
            cluster = %cluster.unwrap_or("-"),
            endpoint = %endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            attempts = self.facts.attempts,
            bytes_in = self.bytes_in.as_ref().map_or(0, ClientBody::bytes),
            bytes_out,
            request_id = %request.request_id.to_str().unwrap_or("-"),
            trace_id = %trace_id,
            completed,
            client_identity = %self.client_identity.as_deref().map_or("-", |id| id.id.as_str()),
            "request"
        );
    }
}

impl Entry {
    /// The span the exporter sends: OpenTelemetry HTTP server attributes plus the proxy's own
    /// (route, cluster, endpoint, attempts). Built only for sampled requests with export on.
    fn finished_span(
        &self,
        request: &Described,
        span: crate::trace::ServerSpan,
        completed: bool,
    ) -> crate::trace::FinishedSpan {
        let route = self
            .facts
            .route
            .and_then(|i| self.snapshot.router().routes().get(i))
            .map(|r| r.config().name.clone());
        let request_id = request.request_id.to_str().unwrap_or("-").to_owned();
        let mut attributes = vec![
            ("http.request.method", request.method.to_string()),
            ("url.path", request.uri.path().to_owned()),
            ("switchyard.listener", self.listener.to_string()),
            ("switchyard.request_id", request_id),
        ];
        if let Some(route) = &route {
            attributes.push(("http.route", route.clone()));
        }
        if let Some(cluster) = &self.facts.cluster {
            attributes.push(("switchyard.cluster", cluster.name().to_owned()));
        }
        if let Some(endpoint) = &self.facts.endpoint {
            attributes.push(("server.address", endpoint.address().to_string()));
        }
        if !completed {
            attributes.push(("switchyard.aborted", "true".to_owned()));
        }
        crate::trace::FinishedSpan {
            span,
            end: std::time::SystemTime::now(),
            name: match &route {
                Some(route) => format!("{} {route}", request.method),
                None => request.method.to_string(),
            },
            status: self.status.as_u16(),
            attributes,
            int_attributes: vec![("switchyard.attempts", i64::from(self.facts.attempts))],
        }
    }
}

pin_project! {
    /// The downstream response body: counts bytes out and writes the record when dropped
    /// (the server drops a body once it has sent it, or when the stream is abandoned). Not boxed
    /// here: the connection's own wrapper (`hygiene::conn::hold_open`) boxes both at once.
    pub struct Tracked {
        #[pin]
        inner: ProxyBody,
        bytes_out: u64,
        ended: bool,
        entry: Option<Entry>,
    }

    impl PinnedDrop for Tracked {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(entry) = this.entry.take() {
                let completed = *this.ended || this.inner.is_end_stream();
                entry.write(*this.bytes_out, completed);
            }
        }
    }
}

impl Tracked {
    /// A body that writes no record: a response made before the request reached the handler
    /// (an HTTP/2 request the hygiene checks refused).
    pub fn untracked(body: ProxyBody) -> Self {
        Self {
            inner: body,
            bytes_out: 0,
            ended: false,
            entry: None,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => *this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
