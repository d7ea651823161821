//! The request's edges: what happens before the per-route stack and after it.
//!
//! [`handle`] loads the snapshot once (one `ArcSwap` load) and keeps it to the end, so a reload
//! mid-request changes nothing for it; it settles the request id, trace context and access-log
//! record, runs the stack ([`super::stack`]: route, cache, cluster limits, retry, balancer,
//! endpoint pool, outlier), and finishes the response head (`x-request-id`, `via`, debug
//! headers). Failures before the response head become a [`ProxyError`] answered here; failures
//! after it abort the response (our HTTP/1 server closes the connection, the HTTP/2 one resets
//! the stream, when the body errors).
//!
//! The head rules the stack applies between its layers are here too: `upstream_head` makes
//! the request head the endpoint sees, `downstream_head` the response head the client sees.
//! `handle` returns an `async move` block rather than being an `async fn` for the reason the
//! stack's module doc gives.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};

use super::access_log::{AccessLog, Tracked};
use super::attempt::Won;
use super::body::{self, IdleWatch, ProxyBody};
use super::request_body::{DownstreamBody, H2Limits};
use crate::config::Protocol;
use crate::router::CompiledRoute;
use crate::state::{ListenerSnapshot, Shared};
use crate::upstream::upgrade::{self, UpstreamUpgrade};
use crate::upstream::{HeadLines, Upstream};
use crate::wire::headers::{self, Present, Watched};
use crate::wire::upgrade::OnUpgrade;
use crate::wire::ProxyError;
use crate::wire::{FailureKind, UpstreamError};

/// What every request on one downstream connection shares.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// Current snapshot and endpoint registry.
    pub shared: Arc<Shared>,
    /// This worker's upstream side.
    pub upstream: Arc<Upstream>,
    /// The listener the connection came in on (by name: a reload may renumber listeners).
    pub listener: Arc<str>,
    /// The downstream peer.
    pub peer: SocketAddr,
    /// The forwarding headers' view of this connection (peer, scheme, port), rendered once per
    /// session (see [`ConnContext::render_forwarding`]) and dropped while an HTTP/1 connection
    /// is parked, so an idle connection holds neither the texts nor their room here.
    pub forwarding: Option<Box<headers::ConnView>>,
    /// The listener's port the client connected to (`x-forwarded-port`).
    pub port: u16,
    /// The connection is TLS.
    pub tls: bool,
    /// The verified client certificate's identity (mTLS listeners, and the peer sidecar's
    /// identity on an inbound tunnel).
    pub client_identity: Option<Arc<crate::tls::identity::PeerIdentity>>,
    /// `Some` on connections a transparent listener intercepted (see
    /// [`super::transparent`]); `None` on an `http` listener, whose path is unchanged.
    pub intercepted: Option<Arc<InterceptedConn>>,
}

/// What an intercepted connection adds to each of its requests.
#[derive(Debug)]
pub struct InterceptedConn {
    /// The original destination as routing knows it: selects the synthetic route
    /// (`outbound:CLUSTER`, `inbound:PORT`) when none of the listener's own routes matches.
    pub destination: crate::router::Destination,
    /// The inbound listener's `identity_header`: the peer's identity goes to the app in this
    /// header. Intercepted connections never carry `x-forwarded-client-cert` (the tunnel's
    /// certificate is the sidecar's, not the app's client's), so without it no identity
    /// header reaches the app.
    pub identity_header: Option<HeaderName>,
    /// Whether the proxy adds its forwarding headers (`x-forwarded-*`, `forwarded`,
    /// `x-real-ip`) and `via` to requests, and `via` to responses: `false` on an outbound
    /// listener (see [`ConnContext::adds_forwarding`]).
    pub adds_forwarding: bool,
}

impl ConnContext {
    /// Whether requests on this connection get the proxy's forwarding headers and `via` (and
    /// responses its `via`). Not on an outbound listener's connections: there the app called
    /// its destination itself and the sidecar stands in for its socket, so the request goes on
    /// with the app's own head, as Linkerd's outbound proxy sends it. A meshed destination's
    /// inbound sidecar adds them for its app (the tunnel's peer is this pod's address, the
    /// client the app would have seen), and an unmeshed one sees the app's head and this pod's
    /// address, as without a sidecar. The inbound sidecar then gets a head without forwarding
    /// fields to parse and replace, and renders its own in one write (`forwarding_lines`).
    ///
    /// Dropping `via` there loses no loop detection: a loop through the outbound listener is
    /// refused before any request is read. The sidecar's own connections are excluded from
    /// redirection by its UID (`switchyard redirect --proxy-uid`), so what it sends is never
    /// intercepted again, and a connection redirected to one of our own listeners' addresses is
    /// refused (`Refusal::Loop`). `x-request-id` and `traceparent` are not forwarding headers:
    /// they are kept or made as on any listener, so both sidecars' access logs and the trace
    /// share one id.
    pub fn adds_forwarding(&self) -> bool {
        self.intercepted
            .as_deref()
            .is_none_or(|intercepted| intercepted.adds_forwarding)
    }

    /// Renders the forwarding view, before a session's first request (not on a connection
    /// whose requests get no forwarding headers: [`ConnContext::adds_forwarding`]).
    pub fn render_forwarding(&mut self) {
        if self.forwarding.is_none() && self.adds_forwarding() {
            self.forwarding = Some(Box::new(self.view()));
        }
    }

    /// The forwarding view: the scheme is TLS once the handshake succeeded, which is before
    /// any request is served.
    fn view(&self) -> headers::ConnView {
        headers::ConnView::new(self.peer.ip(), self.port, self.tls)
    }
}

/// Serves one request; never fails (errors become responses). `h2_body`: the limits of an
/// HTTP/2 request's body (HTTP/1 bodies are checked on the socket).
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc of crate::proxy::stack"
)]
pub fn handle<'a>(
    ctx: &'a ConnContext,
    req: Request<DownstreamBody>,
    h2_body: Option<H2Limits>,
) -> impl Future<Output = Response<Tracked>> + 'a {
    async move {
        let version = req.version();
        let (mut parts, body) = req.into_parts();
        let present = Present::scan(&parts.headers);
        let request_id = headers::ensure_request_id(&mut parts.headers, present);
        let grpc = is_grpc(&parts.headers, present);
        let snapshot = ctx.shared.snapshot();
        // Settled here rather than in the stack so the access log knows the trace id; the proxy's
        // span becomes the upstream request's parent (crate::trace).
        let span = crate::trace::start(&mut parts, present, &snapshot.config().tracing);
        let mut access = AccessLog::start(
            &ctx.listener,
            ctx.client_identity.as_ref(),
            &snapshot,
            &parts,
            &request_id,
            span,
        );
        // HTTP/2 bodies are held to max_body_bytes and body_read_timeout as they stream.
        let body = access.count_request_body(body, h2_body);
        let served = super::stack::serve(ctx, &snapshot, parts, body, &mut access.facts, false);
        let mut response = match served.await {
            Ok(response) => response,
            Err(error) => {
                access.proxy_error();
                let side = error.side();
                tracing::debug!(%error, ?side, ?request_id, "request failed");
                error_response(&error, grpc)
            }
        };
        // Our servers write the connection's own protocol whatever this says; matching the
        // request's version keeps an HTTP/2 upstream answer from being labelled HTTP/2 on an
        // HTTP/1.1 connection for anything that reads the response.
        *response.version_mut() = version;
        let response_headers = response.headers_mut();
        response_headers.insert(headers::X_REQUEST_ID.clone(), request_id);
        if ctx.adds_forwarding() {
            headers::add_via(response_headers);
        }
        let debug = access
            .facts
            .route
            .and_then(|i| snapshot.router().routes().get(i));
        if debug.is_some_and(|route| route.config().debug_headers) {
            debug_headers(response_headers, &access.facts);
        }
        // Metrics and the access-log line are written when the body ends (bytes out known).
        access.finish(response)
    }
}

/// The accepted upgrade of a request (WebSocket), kept from the request head for the response.
pub(super) struct Upgrade {
    /// The client's `Upgrade` token, echoed on the 101.
    token: HeaderValue,
    /// The downstream connection's upgrade; our HTTP/1 server resolves it once the 101 is
    /// written downstream.
    downstream: Option<OnUpgrade>,
}

/// The request head's rules beyond its `Parts`: what `upstream_head` hands the stack.
pub(super) struct UpstreamHead<'c> {
    /// The accepted upgrade, if any.
    pub(super) upgrade: Option<Upgrade>,
    /// Fields for the HTTP/1.1 client to write after the header map's, instead of their
    /// inserts: the connection's forwarding fields (`headers::forwarding_lines`),
    /// `x-forwarded-host` and `via` when the client sent none of them.
    pub(super) lines: HeadLines<'c>,
}

/// Makes the request head the endpoint sees: hop-by-hop headers stripped (an accepted upgrade
/// and `te: trailers` to HTTP/2 backends survive on purpose), forwarding headers and `via`
/// (not on an outbound listener: [`ConnContext::adds_forwarding`]),
/// the client's Host, the route's header rules, the rewritten target and the upstream
/// protocol's version. `present`: the head's scan. Returns the accepted upgrade, if any, and
/// the forwarding fields left out of the map for an HTTP/1.1 endpoint.
#[allow(
    clippy::too_many_arguments,
    reason = "each is a distinct input of the head rules, borrowed from the stack's locals"
)]
pub(super) fn upstream_head<'c>(
    ctx: &'c ConnContext,
    listener: &ListenerSnapshot,
    route: &CompiledRoute,
    protocol: Protocol,
    path_and_query: Option<String>,
    host: Option<HeaderValue>,
    parts: &mut Parts,
    present: Present,
) -> Result<UpstreamHead<'c>, ProxyError> {
    let upgrade = (route.config().websocket
        && protocol == Protocol::Http1
        && present.has(Watched::Connection)
        && present.has(Watched::Upgrade))
    .then(|| upgrade_token(&parts.headers))
    .flatten();
    let te_trailers =
        protocol == Protocol::H2 && present.has(Watched::Te) && asks_for_trailers(&parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers, present);
    if let Some(token) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, token.clone());
    }
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers::ensure_traceparent(&mut parts.headers, present);
    let adds_forwarding = ctx.adds_forwarding();
    let mut lines = HeadLines::default();
    let forwarding = if adds_forwarding {
        forwarding_fields(
            ctx,
            listener,
            route,
            protocol,
            host.as_ref(),
            parts,
            present,
            &mut lines,
        )
    } else {
        None
    };
    match ctx.intercepted.as_deref() {
        None => crate::tls::identity::set_forwarded_client_cert(
            &mut parts.headers,
            present,
            ctx.client_identity.as_deref(),
        ),
        Some(intercepted) => {
            // A client-sent one is removed as on any listener: only we may vouch.
            crate::tls::identity::set_forwarded_client_cert(&mut parts.headers, present, None);
            if let Some(name) = &intercepted.identity_header {
                // Likewise a client-sent identity header: the app must be able to trust it.
                parts.headers.remove(name);
                let identity = ctx.client_identity.as_deref();
                if let Some(value) = identity.and_then(|id| HeaderValue::from_str(&id.id).ok()) {
                    parts.headers.insert(name.clone(), value);
                }
            }
        }
    }
    // With the version the client spoke, before it becomes the upstream protocol's. As a line
    // with the forwarding ones when the client sent no `via` to append to.
    if !adds_forwarding {
        // The app's own head: see `ConnContext::adds_forwarding`.
    } else if forwarding.is_some() && !present.has(Watched::Via) {
        lines.via = headers::request_via_line(parts.version);
    } else {
        headers::add_request_via(&mut parts.headers, parts.version);
    }
    // The client's Host (or the authority of an absolute-form / HTTP/2 target, which
    // RFC 9112 3.2.2 and RFC 9113 8.3.1 say take precedence) goes upstream unchanged. An HTTP/1
    // origin-form request's host *is* its one Host line (the head check refuses a second), so
    // the map already holds it and is not looked up again.
    let host_is_the_header = parts.uri.authority().is_none()
        && matches!(
            parts.version,
            Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
        );
    if let Some(host) = host.filter(|_| !host_is_the_header) {
        parts.headers.insert(header::HOST, host);
    }
    route.apply_request_headers(&mut parts.headers);
    match path_and_query {
        Some(target) => {
            parts.uri = Uri::try_from(target)
                .map_err(|e| ProxyError::Internal(format!("rewritten target is not a URI: {e}")))?;
        }
        // The request's own target, already canonical: an origin-form one stays as it is (not
        // built and parsed again); an absolute-form or HTTP/2 one loses its scheme and authority
        // (the authority went into `Host` above).
        None if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => {}
        None => {
            parts.uri = match parts.uri.path_and_query() {
                Some(target) => Uri::from(target.clone()),
                None => Uri::from_static("/"),
            };
        }
    }
    parts.version = match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::H2 => Version::HTTP_2,
    };
    // Taken before the request moves on: the server resolves it once the 101 is written
    // downstream.
    Ok(UpstreamHead {
        upgrade: upgrade.map(|token| Upgrade {
            token,
            downstream: parts.extensions.remove::<OnUpgrade>(),
        }),
        lines,
    })
}

/// The forwarding headers of [`upstream_head`]: as `lines` (returning the connection's
/// pre-rendered ones) when they are exactly ours and the endpoint speaks HTTP/1.1 and no route
/// rule could add or remove them, else set in the map (returning `None`).
#[allow(
    clippy::too_many_arguments,
    reason = "each is a distinct input of the head rules, borrowed from upstream_head's"
)]
fn forwarding_fields<'c>(
    ctx: &'c ConnContext,
    listener: &ListenerSnapshot,
    route: &CompiledRoute,
    protocol: Protocol,
    host: Option<&HeaderValue>,
    parts: &mut Parts,
    present: Present,
    lines: &mut HeadLines<'c>,
) -> Option<&'c [u8]> {
    // The connection's forwarding fields go to an HTTP/1.1 endpoint as lines its client writes
    // after the map's fields, when they are exactly ours (the client sent none of them) and no
    // route rule could add or remove them; else into the map.
    let rules = &route.config().headers;
    let forwarding = ctx
        .forwarding
        .as_deref()
        .filter(|_| {
            protocol == Protocol::Http1
                && rules.request_add.is_empty()
                && rules.request_remove.is_empty()
        })
        .and_then(|view| headers::forwarding_lines(present, view));
    match forwarding {
        Some(conn) => {
            lines.conn = conn;
            // `x-forwarded-host` too, when it is ours to set (the client sent none: with none
            // there is nothing a trusted hop's could keep or a client's must lose).
            if !present.has(Watched::XForwardedHost) {
                lines.forwarded_host = host.cloned();
            }
            headers::set_forwarded_host(
                &mut parts.headers,
                present,
                listener.trusted_hops(),
                host.filter(|_| lines.forwarded_host.is_none()),
            );
        }
        None => {
            // Rendered at the session's start; rendered here only if a path ever skipped
            // that.
            let rendered;
            let view = match ctx.forwarding.as_deref() {
                Some(view) => view,
                None => {
                    rendered = ctx.view();
                    &rendered
                }
            };
            headers::set_forwarded(
                &mut parts.headers,
                present,
                view,
                listener.trusted_hops(),
                host,
            );
        }
    }
    forwarding
}

/// Makes the winning attempt's response the client's: hop-by-hop headers stripped, an
/// accepted upgrade's 101 joined to the downstream connection by a byte tunnel, the route's
/// header rules, and the body that holds the attempt's guard (and so the cluster's
/// `max_requests` slot) until it ends.
pub(super) fn downstream_head(
    route: &CompiledRoute,
    won: Won,
    upgrade: Option<Upgrade>,
    idle: Option<IdleWatch>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (response, guard, endpoint) = (won.response, won.guard, won.endpoint);
    let (mut head, upstream_body) = response.into_parts();
    let present = Present::scan(&head.headers);
    headers::strip_hop_by_hop(&mut head.headers, present);
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(Upgrade {
            token,
            downstream: Some(downstream),
        }) = upgrade
        else {
            // A 101 we did not ask for cannot be relayed: the client would not expect it.
            return Err(ProxyError::Upstream(UpstreamError::sent(
                FailureKind::BadResponse,
                endpoint.address(),
                "101 without an accepted Upgrade",
            )));
        };
        let upstream = head.extensions.remove::<UpstreamUpgrade>().ok_or_else(|| {
            ProxyError::Internal("upstream 101 without an upgradable connection".into())
        })?;
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        head.headers.insert(header::UPGRADE, token);
        let idle_timeout = route.config().idle_timeout;
        upgrade::spawn_tunnel(downstream, upstream, idle_timeout);
    }
    route.apply_response_headers(&mut head.headers);
    Ok(Response::from_parts(
        head,
        body::upstream(upstream_body, guard, idle),
    ))
}

/// `x-switchyard-attempts` and `x-switchyard-endpoint`, for routes with `debug_headers = true`
/// only: they reveal backend addresses, which a public route should not.
fn debug_headers(headers: &mut HeaderMap, facts: &super::access_log::RequestFacts) {
    static ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
    static ENDPOINT: HeaderName = HeaderName::from_static("x-switchyard-endpoint");
    headers.insert(ATTEMPTS.clone(), HeaderValue::from(facts.attempts));
    if let Some(endpoint) = &facts.endpoint {
        if let Ok(value) = HeaderValue::from_str(&endpoint.address().to_string()) {
            headers.insert(ENDPOINT.clone(), value);
        }
    }
}

/// gRPC requests (RFC-less but universal: `application/grpc`, `application/grpc+proto`, …) get
/// proxy failures as `grpc-status` instead of an HTTP error status.
pub(super) fn is_grpc(headers: &HeaderMap, present: Present) -> bool {
    present.has(Watched::ContentType)
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `Upgrade` token of an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`).
fn upgrade_token(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Whether the client said it accepts trailers (`te: trailers`), which gRPC requires.
fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The request's host: the URI authority when there is one (absolute-form HTTP/1 targets and
/// HTTP/2's `:authority`), else the `Host` header. A header value, so the usual case (HTTP/1
/// with `Host`) shares the parsed head's bytes instead of copying them for routing,
/// `x-forwarded-host` and the upstream `Host`.
pub(super) fn request_host(parts: &Parts) -> Option<HeaderValue> {
    if let Some(authority) = parts.uri.authority() {
        // Userinfo (`user@host`) is not part of the host and must not reach the backend.
        // A byte loop over the short authority rather than `rsplit('@')`, whose searcher
        // (`memrchr`) costs more to set up than the whole scan.
        let authority = authority.as_str();
        let host = match authority.bytes().rposition(|b| b == b'@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        };
        return HeaderValue::from_str(host).ok();
    }
    parts
        .headers
        .get(header::HOST)
        .filter(|h| h.to_str().is_ok())
        .cloned()
}

fn error_response(error: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_error_response(error);
    }
    let mut response = Response::new(body::full(error.body_text()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if error.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A gRPC "trailers-only" response: 200 with `grpc-status` and `grpc-message` in the only
/// header block and no body, which every gRPC client reads as the call's status.
fn grpc_error_response(error: &ProxyError) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(error.grpc_status())),
    );
    // Our texts are plain ASCII, so they need no grpc-message percent-encoding.
    headers.insert(
        GRPC_MESSAGE.clone(),
        HeaderValue::from_static(error.body_text().trim_end()),
    );
    response
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
