//! One attempt: lease a connection, send, check the response head, count the outcome.
//!
//! Inside an attempt the request is resent only when the endpoint certainly did not process it:
//! not a byte of it was written (the pooled connection closed under us), or an HTTP/2 stream
//! was refused / above a GOAWAY's last-stream-id (RFC 9113 8.7). Anything else is the caller's
//! (retry policy's) decision, made with [`UpstreamError::sent`].

use std::future::Future;
use std::sync::Arc;

use std::net::SocketAddr;

use http::header::HOST;
use http::{HeaderMap, Method, Request, Response, Uri, Version};

use super::body::UpstreamBody;
use super::connect::Sender;
use super::dial::Tunnels;
use super::h1::{self, BodyReader, Sent};
use super::pool::{self, Lease};
use super::upgrade::UpstreamUpgrade;
use super::HeadLines;
use crate::config::ClusterConfig;
use crate::endpoint::EndpointState;
use crate::wire::outcome::{classify, FailureKind, UpstreamError};
use crate::wire::Body;

/// Sends of one request within one attempt: the first plus two resends of a request that was
/// not processed (a stale pooled connection, then a GOAWAY on the fresh one is already rare).
const MAX_SENDS: usize = 3;

/// The head of a bodiless request, kept so an HTTP/2 request refused by GOAWAY can be rebuilt
/// (hyper's HTTP/2 client does not hand a refused request back).
struct ReplayHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl ReplayHead {
    fn of(req: &Request<Body>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn rebuild(&self) -> Request<Body> {
        let mut req = Request::new(crate::wire::empty_body());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Sends `req` to `endpoint` and returns the checked response head, or the failure and, when
/// none of it was written to an HTTP/1.1 endpoint, the request ([`super::Unsent`]). `lines`:
/// fields the HTTP/1.1 client writes after the map's (see [`HeadLines`]). `tunnels`: where a
/// new connection looks up whether the endpoint is reached through the mTLS tunnel.
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc of proxy::stack"
)]
pub(crate) fn exchange<'a>(
    cluster: &'a ClusterConfig,
    endpoint: &'a Arc<EndpointState>,
    mut req: Request<Body>,
    lines: &'a HeadLines<'a>,
    tunnels: Option<&'a Tunnels>,
) -> impl Future<Output = (Result<Response<UpstreamBody>, UpstreamError>, super::Unsent)> + 'a {
    async move {
        let address = endpoint.address();
        let h2 = cluster.protocol == crate::config::Protocol::H2;
        if h2 {
            if let Err(error) = absolute_target(&mut req, address) {
                return (Err(error), None);
            }
        }
        // What goes back with a failure: the request not written, HTTP/1.1 only (see
        // `super::Unsent`).
        let unsent = |request: Option<Request<Body>>| request.filter(|_| !h2).map(Box::new);
        let replay = (cluster.protocol == crate::config::Protocol::H2
            && http_body::Body::is_end_stream(req.body()))
        .then(|| ReplayHead::of(&req));
        let mut pending = Some(req);
        let mut fresh = false;
        let mut last_error = None;
        for _ in 0..MAX_SENDS {
            let Some(request) = pending
                .take()
                .or_else(|| replay.as_ref().map(ReplayHead::rebuild))
            else {
                break;
            };
            let Lease { sender, h2_id, .. } =
                match pool::checkout(cluster, endpoint, fresh, tunnels).await {
                    Ok(lease) => lease,
                    Err(error) => return (Err(error), unsent(Some(request))),
                };
            fresh = true;
            match sender {
                Sender::H1(mut conn) => match conn.send(request, address, lines).await {
                    Ok(sent) => return (finish_h1(endpoint, conn, sent), None),
                    Err(h1::SendError { error, unsent }) => {
                        match unsent {
                            // Not written: the pooled connection was closing. A new one gets it.
                            Some(request) => pending = Some(request),
                            None => return (Err(error), None),
                        }
                        last_error = Some(error);
                    }
                },
                Sender::H2(mut sender) => match sender.try_send_request(request).await {
                    // Never lines for HTTP/2: `handler::upstream_head` puts its forwarding
                    // fields in the map.
                    Ok(response) => {
                        return (Ok(response.map(UpstreamBody::h2)), None);
                    }
                    Err(mut e) => {
                        let error = classify(e.error(), address);
                        let unsent = e.take_message();
                        if unsent.is_some() || error.kind == FailureKind::RefusedStream {
                            // A connection that refuses new streams (GOAWAY) gets none from us.
                            pool::retire_h2(endpoint, h2_id);
                        }
                        if unsent.is_none() && (error.sent || replay.is_none()) {
                            return (Err(error), None);
                        }
                        pending = unsent;
                        last_error = Some(error);
                    }
                },
            }
        }
        let error = last_error.unwrap_or_else(|| {
            UpstreamError::unsent(FailureKind::Reset, address, "request could not be sent")
        });
        (Err(error), unsent(pending))
    }
}

/// HTTP/2 carries the target as `:scheme` + `:authority` + `:path`, so hyper needs an absolute
/// URI: the authority is the request's `Host` (what an HTTP/1.1 backend would have seen), or the
/// endpoint address when there is none.
fn absolute_target(req: &mut Request<Body>, address: SocketAddr) -> Result<(), UpstreamError> {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let authority = match req.headers().get(HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => host.to_owned(),
        None => address.to_string(),
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| UpstreamError::unsent(FailureKind::BadRequest, address, e))?;
    // `:authority` now says it; a Host header too would be redundant (RFC 9113 8.3.1).
    req.headers_mut().remove(HOST);
    *req.uri_mut() = uri;
    Ok(())
}

/// Makes the response of an HTTP/1.1 exchange (its head already checked by `h1::parse`), and
/// decides whether the connection goes back to the pool now, when the body ends, or never.
fn finish_h1(
    endpoint: &Arc<EndpointState>,
    conn: h1::Conn,
    sent: Sent,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let Sent {
        head,
        reusable,
        upload,
    } = sent;
    let mut parts = head.parts;
    if head.upgrade {
        // The socket now belongs to the upgrade (see `upgrade`), never to the pool.
        parts.extensions.insert(UpstreamUpgrade::new(conn));
        return Ok(Response::from_parts(parts, UpstreamBody::empty()));
    }
    if head.framing == h1::decode::Framing::Length(0) {
        if conn.has_buffered() {
            if head.bodiless {
                // No body may follow a HEAD, 204 or 304 response: bytes that do are a
                // framing error (RFC 9112 6.3), and the connection is dropped with this.
                return Err(UpstreamError::sent(
                    FailureKind::BadResponse,
                    endpoint.address(),
                    "bytes after a response that has no body",
                ));
            }
        } else if reusable && upload.is_none() {
            pool::release_h1(endpoint, conn);
        }
        return Ok(Response::from_parts(parts, UpstreamBody::empty()));
    }
    let release = reusable.then(|| Arc::clone(endpoint));
    let body = BodyReader::new(conn, head.framing, release, upload);
    Ok(Response::from_parts(parts, UpstreamBody::h1(body)))
}
