//! Shadow traffic (route `mirror`): a sampled request is copied, head and body, to the route's
//! shadow cluster, and the shadow's answer is discarded. The client's exchange never waits for
//! the copy, and the copy's failures are the shadow cluster's only.
//!
//! How a copy goes (`stack::exchange` calls [`start`] once the primary cluster admitted the
//! request, so a request the proxy answers itself — cache hit, cluster limits — is not copied):
//!
//! 1. The route's [`RouteMirror`] draws once against its threshold (`percent`, compiled with the
//!    snapshot). Not sampled: nothing else happens, the body is not wrapped.
//! 2. A body that declares more than `max_body` (`content-length`) is not copied (outcome
//!    `skipped_body`); nor when the route already has `resilience::mirror::MAX_IN_FLIGHT`
//!    copies in flight (outcome `dropped`); nor a request with an `Upgrade` header (WebSocket),
//!    whose body would be a tunnel (not counted).
//! 3. The shadow's head is made by the same head rules as the primary's
//!    (`handler::upstream_head`, for the shadow cluster's protocol), then `Host` gets `-shadow`
//!    appended to its host part, as Envoy does: `orders.example` becomes
//!    `orders.example-shadow`, `orders.example:8080` becomes `orders.example-shadow:8080`.
//! 4. The body is teed ([`Tee`]) as the primary reads it: each chunk is kept (a `Bytes` clone,
//!    no byte copy) while the total stays within `max_body`; over it the copy is abandoned
//!    (`skipped_body`) and the body streams on unchanged. Nothing is read ahead of the primary,
//!    so the client's upload keeps the primary's pace. When the body has ended, the copy is
//!    complete and the shadow request is spawned on the worker (`tokio::spawn`); a bodiless
//!    request is spawned at once. A body that never completes (the client abandoned it, or it
//!    failed, or the primary stopped reading it) is not sent, and not counted.
//! 5. The shadow task picks an endpoint with the shadow cluster's own balancer and health
//!    (`stack::pick`), takes the shadow cluster's limits, sends through the worker's pool for
//!    that cluster and records the outcome to the shadow cluster's health (`stack::send`): a
//!    failing shadow ejects shadow endpoints, never primary ones. It never retries or hedges.
//!    Its time limit is the route's `timeout` ([`FALLBACK_TIMEOUT`] when the route has none),
//!    until the response head; the answer's body is then read and dropped within the same
//!    limit (up to [`DRAIN_LIMIT`] bytes, so its connection can go back to the pool) and
//!    `switchyard_mirrored_requests_total{route, cluster, outcome}` counts the head's class.
//!
//! Why a tee of our own rather than the retry layer's replay buffer
//! (`resilience::replay`): the replay buffer exists only on retried or hedged routes (a plain
//! route sends the body as it is, nothing buffered), its limit is the retry `buffer`, and it
//! drops its chunks once over it. The tee sits below it, on the body as the client sends it,
//! so it sees each chunk once, whichever attempt reads it first, and it costs a sampled
//! request one wrapper; an unsampled one costs nothing but the draw.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::attempt::Plan;
use super::handler::{self, ConnContext};
use super::stack;
use crate::balance::PickContext;
use crate::resilience::mirror::{InFlight, MirrorOutcome, RouteMirror};
use crate::router::CompiledRoute;
use crate::state::{ClusterSnapshot, ListenerSnapshot, Snapshot};
use crate::upstream::{HeadLines, Upstream};
use crate::wire::headers::{Present, Watched};
use crate::wire::{self, BoxError, FailureKind};

/// The shadow's time limit on a route without `timeout` (`timeout = 0`): a copy must end, or
/// hung shadows would hold every in-flight slot and the route would mirror nothing.
pub const FALLBACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Bytes of a shadow's answer read (and dropped) so its connection goes back to the pool; a
/// longer answer's connection is closed instead.
pub const DRAIN_LIMIT: u64 = 1024 * 1024;

/// What the request gives a sampled copy, borrowed from `stack::exchange`.
pub(super) struct Source<'a> {
    pub(super) ctx: &'a ConnContext,
    pub(super) snapshot: &'a Snapshot,
    pub(super) listener: &'a ListenerSnapshot,
    pub(super) route: &'a CompiledRoute,
    /// The request head before the head rules (the primary's are applied after this).
    pub(super) parts: &'a Parts,
    pub(super) present: Present,
    pub(super) host: Option<&'a HeaderValue>,
    pub(super) path_and_query: Option<&'a String>,
}

/// Starts a copy of a request route `mirror`'s draw sampled: returns the body the primary
/// sends, teed when the copy waits for it, else `body` unchanged (no copy, or no body).
pub(super) fn start(
    request: Source<'_>,
    mirror: &Arc<RouteMirror>,
    body: wire::Body,
) -> wire::Body {
    if request.present.has(Watched::Upgrade) {
        return body;
    }
    let max_body = mirror.config().max_body;
    if body.size_hint().lower() > max_body {
        mirror.count(MirrorOutcome::SkippedBody);
        return body;
    }
    let Some(slot) = mirror.try_start() else {
        mirror.count(MirrorOutcome::Dropped);
        return body;
    };
    let Some(shadow) = shadow(&request, slot) else {
        mirror.count(MirrorOutcome::Error);
        return body;
    };
    if body.is_end_stream() {
        tokio::spawn(shadow.send(Copied::default()));
        return body;
    }
    Tee {
        inner: body,
        copy: Some(Copy {
            shadow,
            chunks: Vec::new(),
            len: 0,
            max: max_body,
        }),
    }
    .boxed_unsync()
}

/// Everything the shadow request needs, owned: it outlives the client's request.
struct Shadow {
    slot: InFlight,
    cluster: Arc<ClusterSnapshot>,
    upstream: Arc<Upstream>,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// `HeadLines`' fields, owned (the connection's forwarding lines are the session's).
    conn_lines: Box<[u8]>,
    via: &'static [u8],
    forwarded_host: Option<HeaderValue>,
    limit: Duration,
}

/// The shadow's head: the head rules for the shadow cluster's protocol, then `-shadow` on the
/// host. `None` when the shadow cluster is missing from the snapshot (validation makes sure it
/// exists) or the head rules fail.
fn shadow(request: &Source<'_>, slot: InFlight) -> Option<Shadow> {
    let cluster = request.snapshot.cluster(&slot.mirror().config().cluster)?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.parts.method.clone();
    parts.uri = request.parts.uri.clone();
    parts.version = request.parts.version;
    parts.headers = request.parts.headers.clone();
    let head = handler::upstream_head(
        request.ctx,
        request.listener,
        request.route,
        cluster.config().protocol,
        request.path_and_query.cloned(),
        request.host.cloned(),
        &mut parts,
        request.present,
    )
    .ok()?;
    if let Some(host) = parts.headers.get(header::HOST).and_then(shadow_host) {
        parts.headers.insert(header::HOST, host);
    }
    Some(Shadow {
        cluster: Arc::clone(cluster),
        upstream: Arc::clone(&request.ctx.upstream),
        peer: request.ctx.peer,
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        conn_lines: head.lines.conn.into(),
        via: head.lines.via,
        forwarded_host: head.lines.forwarded_host,
        limit: request.route.config().timeout.unwrap_or(FALLBACK_TIMEOUT),
        slot,
    })
}

/// `host` with `-shadow` appended to its host part, before a port: `a.example:8080` ->
/// `a.example-shadow:8080`. A bracketed IPv6 literal keeps its brackets (`[::1]-shadow:8080`,
/// which no backend resolves, but names the copy as one).
pub fn shadow_host(host: &HeaderValue) -> Option<HeaderValue> {
    let text = host.to_str().ok()?;
    let name_end = if text.starts_with('[') {
        text.find(']').map_or(text.len(), |at| at + 1)
    } else if text.bytes().filter(|&b| b == b':').count() == 1 {
        text.find(':').unwrap_or(text.len())
    } else {
        // No port, or a bare IPv6 address (not a valid Host, but not ours to refuse here).
        text.len()
    };
    let (name, port) = text.split_at(name_end);
    HeaderValue::from_str(&format!("{name}-shadow{port}")).ok()
}

impl Shadow {
    /// Sends the copy with `body` and discards the answer; counts the outcome.
    async fn send(self, body: Copied) {
        let mirror = self.slot.mirror();
        let cluster = &*self.cluster;
        // The shadow cluster's own limits: over them the copy is not sent.
        let Ok(_admission) = crate::endpoint::limits::admit(cluster.config(), cluster.health())
        else {
            mirror.count(MirrorOutcome::Dropped);
            return;
        };
        let now = Instant::now();
        let deadline = now + self.limit;
        let plan = Plan {
            upstream: &self.upstream,
            cluster,
            pick: PickContext {
                endpoints: cluster.endpoints(),
                client: Some(self.peer),
                random: fastrand::u64(..),
                // The shadow cluster's own `hash_on`, as the primary's pick computes it.
                hash: cluster.config().hash_on.as_ref().and_then(|hash_on| {
                    let target = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
                    crate::balance::request_hash(
                        hash_on,
                        &self.headers,
                        target,
                        Some(self.peer.ip()),
                    )
                }),
            },
            idle: None,
            retry: None,
            hedge: None,
            state: None,
            grpc: false,
            per_try: None,
            deadline: Some((deadline, self.limit)),
            started: now,
            client: None,
            lines: HeadLines {
                conn: &self.conn_lines,
                via: self.via,
                forwarded_host: self.forwarded_host.clone(),
            },
        };
        let Some((_, guard)) = stack::pick(&plan, &[], false) else {
            mirror.count(MirrorOutcome::Error);
            return;
        };
        let mut request = Request::new(body.boxed_unsync());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        let done = stack::send(&plan, guard, request, false, Some(now)).await;
        let response = match done.result {
            Ok(response) => response,
            Err(error) => {
                let outcome = if error.kind == FailureKind::Timeout {
                    MirrorOutcome::Timeout
                } else {
                    MirrorOutcome::Error
                };
                tracing::debug!(%error, cluster = cluster.name(), "mirrored request failed");
                mirror.count(outcome);
                return;
            }
        };
        mirror.count(MirrorOutcome::of_status(response.status().as_u16()));
        // Read and drop the answer (bounded in bytes and time) so an HTTP/1.1 connection can
        // be reused; the in-flight guard and slot are released when this task ends.
        let mut body = response.into_body();
        let drain = async {
            let mut read = 0u64;
            while read <= DRAIN_LIMIT {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    Some(Err(_)) | None => break,
                }
            }
        };
        let _ = crate::wire::deadline::timeout_at(deadline, drain).await;
        drop(done.guard);
    }
}

/// The copy in progress: the chunks so far and the shadow waiting for them.
struct Copy {
    shadow: Shadow,
    chunks: Vec<Bytes>,
    len: u64,
    max: u64,
}

/// The primary's request body, copying each chunk for the shadow (see the module doc).
struct Tee {
    inner: wire::Body,
    /// `None` once the copy was sent or abandoned.
    copy: Option<Copy>,
}

impl Tee {
    /// The body ended (with `trailers`, if any): the copy is complete, send it.
    fn complete(&mut self, trailers: Option<HeaderMap>) {
        if let Some(copy) = self.copy.take() {
            let body = Copied {
                chunks: copy.chunks.into(),
                trailers,
                left: copy.len,
            };
            tokio::spawn(copy.shadow.send(body));
        }
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        match &frame {
            None => this.complete(None),
            // The client's body failed: the copy would be incomplete.
            Some(Err(_)) => this.copy = None,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(copy) = this.copy.as_mut() {
                        copy.len += data.len() as u64;
                        if copy.len > copy.max {
                            copy.shadow.slot.mirror().count(MirrorOutcome::SkippedBody);
                            this.copy = None;
                        } else {
                            copy.chunks.push(data.clone());
                        }
                    }
                    // Clients of a body with a known length stop at its last byte rather than
                    // polling for the end (`upstream::h1`): the copy is complete here then.
                    if this.inner.is_end_stream() {
                        this.complete(None);
                    }
                } else {
                    this.complete(frame.trailers_ref().cloned());
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The completed copy of a request body, as the shadow request sends it.
#[derive(Default)]
struct Copied {
    chunks: std::collections::VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// Data bytes not yielded yet.
    left: u64,
}

impl HttpBody for Copied {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            self.left -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadowed(host: &str) -> String {
        let value = HeaderValue::from_str(host).expect("value");
        let out = shadow_host(&value).expect("shadow host");
        out.to_str().expect("text").to_owned()
    }

    #[test]
    fn shadow_goes_before_the_port() {
        assert_eq!(shadowed("orders.example"), "orders.example-shadow");
        assert_eq!(
            shadowed("orders.example:8080"),
            "orders.example-shadow:8080"
        );
        assert_eq!(shadowed("127.0.0.1:80"), "127.0.0.1-shadow:80");
        assert_eq!(shadowed("[::1]:8080"), "[::1]-shadow:8080");
        assert_eq!(shadowed("[::1]"), "[::1]-shadow");
    }

    #[tokio::test]
    async fn a_copied_body_is_the_chunks_then_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", HeaderValue::from_static("1"));
        let body = Copied {
            chunks: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")].into(),
            trailers: Some(trailers),
            left: 4,
        };
        assert_eq!(body.size_hint().exact(), Some(4));
        let collected = body.collect().await.expect("body");
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), "abcd");
    }
}
