//! The request path, in order: snapshot → route → cluster → endpoint → forward → response.
//!
//! Everything a request needs is loaded once at the start (one `ArcSwap` load) and kept to the
//! end, so a reload mid-request changes nothing for it. Failures before the response head
//! becomes a [`ProxyError`] answered here; failures after it abort the stream (hyper does that
//! when the body errors).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, ProxyBody};
use super::error::ProxyError;
use super::headers;
use crate::balance::PickContext;
use crate::config::Protocol;
use crate::router::RequestView;
use crate::runtime::{Shared, Snapshot};
use crate::upstream::{Upstream, UpstreamError};

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
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(ctx: &ConnContext, req: Request<Incoming>) -> Response<ProxyBody> {
    let version = req.version();
    let (mut parts, body) = req.into_parts();
    let request_id = headers::ensure_request_id(&mut parts.headers);
    let snapshot = ctx.shared.snapshot();
    let mut response = match forward(ctx, &snapshot, parts, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, side = ?error.side(), request_id = ?request_id, "request failed");
            error_response(&error)
        }
    };
    // hyper writes the connection's own protocol; matching the request's version keeps an
    // HTTP/2 upstream answer from being labelled HTTP/2 on an HTTP/1.1 connection.
    *response.version_mut() = version;
    let response_headers = response.headers_mut();
    response_headers.insert(headers::X_REQUEST_ID.clone(), request_id);
    headers::add_via(response_headers);
    response
}

async fn forward(
    ctx: &ConnContext,
    snapshot: &Snapshot,
    mut parts: Parts,
    body: Incoming,
) -> Result<Response<ProxyBody>, ProxyError> {
    let listener = snapshot.listener(&ctx.listener).ok_or_else(|| {
        ProxyError::Internal(format!("listener {} not in snapshot", ctx.listener))
    })?;
    let host = request_host(&parts);
    let routed = {
        let view = RequestView {
            method: &parts.method,
            host: host.as_deref(),
            path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            headers: &parts.headers,
            client_identity: None,
        };
        snapshot
            .router()
            .route(listener.index(), &view)?
            .ok_or(ProxyError::NoRoute)?
    };
    let route = routed.route;
    let cluster_name = route.pick_cluster(fastrand::u64(..));
    let cluster = snapshot
        .cluster(cluster_name)
        .ok_or_else(|| ProxyError::Internal(format!("cluster {cluster_name} not in snapshot")))?;

    let pick = PickContext {
        endpoints: cluster.endpoints(),
        client: Some(ctx.peer),
        random: fastrand::u64(..),
    };
    // Ejection and breakers (later issues) will skip candidates here; today the first one goes.
    let endpoint = cluster
        .balancer()
        .candidates(&pick)
        .next()
        .and_then(|i| cluster.endpoints().get(i))
        .ok_or_else(|| ProxyError::NoEndpoint {
            cluster: cluster.name().to_owned(),
        })?;

    // Request head as the endpoint will see it.
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::ensure_traceparent(&mut parts.headers);
    headers::set_forwarded(
        &mut parts.headers,
        ctx.peer.ip(),
        listener.trusted_hops(),
        host.as_deref(),
    );
    if let Some(host) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
        // The client's Host (or the authority of an absolute-form / HTTP/2 target, which
        // RFC 9112 3.2.2 and RFC 9113 8.3.1 say take precedence) goes upstream unchanged.
        parts.headers.insert(header::HOST, host);
    }
    route.apply_request_headers(&mut parts.headers);
    parts.uri = Uri::try_from(routed.upstream_path_and_query)
        .map_err(|e| ProxyError::Internal(format!("rewritten target is not a URI: {e}")))?;
    parts.version = match cluster.config().protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::H2 => Version::HTTP_2,
    };
    let upstream_req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());

    let guard = endpoint.start_request();
    let send = ctx.upstream.send(cluster.config(), endpoint, upstream_req);
    let result = match route.config().timeout {
        Some(limit) => tokio::time::timeout(limit, send)
            .await
            .map_err(|_| ProxyError::Timeout(limit))?,
        None => send.await,
    };
    let response = result.map_err(|e| match e {
        UpstreamError::Connect { .. } => ProxyError::Connect(e),
        UpstreamError::InvalidTarget(_) => ProxyError::Internal(e.to_string()),
        UpstreamError::Exchange { .. } => ProxyError::Upstream(e),
    })?;

    let (mut head, upstream_body) = response.into_parts();
    headers::strip_hop_by_hop(&mut head.headers);
    route.apply_response_headers(&mut head.headers);
    Ok(Response::from_parts(
        head,
        body::upstream(upstream_body, guard),
    ))
}

/// The request's host: the URI authority when there is one (absolute-form HTTP/1 targets and
/// HTTP/2's `:authority`), else the `Host` header.
fn request_host(parts: &Parts) -> Option<String> {
    if let Some(authority) = parts.uri.authority() {
        // Userinfo (`user@host`) is not part of the host and must not reach the backend.
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        return Some(host.to_owned());
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(error.body_text()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(error, ProxyError::NoEndpoint { .. }) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
