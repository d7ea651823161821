//! The admin listener: a small HTTP/1.1 server on the control runtime, bound to its own address
//! (`[admin] listen`, loopback by default) and never to a proxy listener, so nothing a client
//! sends to the proxy can reach it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::views;
use crate::proxy::server::stopped;
use crate::runtime::Shared;

/// How long a client may take to send a request head; the admin port is for operators and
/// scrapers, which send theirs at once.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The live snapshot, endpoint states and the draining flag.
    pub shared: Arc<Shared>,
    /// `POST /reload`, and the last reload error `/config` shows.
    pub reload: crate::runtime::ReloadHandle,
    /// The mesh member for `/mesh/members` and purges, when `[mesh]` is configured.
    pub mesh: Option<crate::mesh::MeshHandle>,
}

/// Binds the admin address (port 0 allowed) without serving yet, so a bind error surfaces from
/// `runtime::start` before anything else runs.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the admin API on `listener` from `runtime` until `shutdown` turns true.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    listener: std::net::TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(listener)?
    };
    runtime.spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "admin accept failed");
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        // The one handler that waits (for the reloader); the others answer
                        // from the snapshot at once.
                        if req.uri().path() == "/reload" {
                            return Ok::<_, Infallible>(
                                super::reload::answer(&state, req.method()).await,
                            );
                        }
                        if req.uri().path() == "/cache/purge" {
                            let snapshot = state.shared.snapshot();
                            let (status, body) = crate::cache::purge::admin_answer(
                                snapshot.cache().map(|c| &**c),
                                req.method(),
                                req.uri().query(),
                            );
                            // A purge that ran here runs on every mesh peer too.
                            if let (true, Some(mesh)) = (status.is_success(), &state.mesh) {
                                if let Ok(purge) =
                                    crate::cache::Purge::from_query(req.uri().query())
                                {
                                    mesh.broadcast_purge(crate::mesh::purge::from_cache(&purge));
                                }
                            }
                            return Ok::<_, Infallible>(json(status, &body));
                        }
                        Ok::<_, Infallible>(handle(&state, &req))
                    }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, %peer, "admin connection ended with an error");
                }
            });
        }
    });
    Ok(())
}

/// Answers one admin request.
pub fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/metrics"
            | "/healthz"
            | "/readyz"
            | "/config"
            | "/upstreams"
            | "/explain"
            | "/stats"
            | "/"
            | "/mesh/members"
    );
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let snapshot = state.shared.snapshot();
    match path {
        "/metrics" => match super::metrics::install() {
            Ok(handle) => {
                super::runtime_tasks::record();
                let rendered = handle.render();
                super::metrics::count_series(&rendered);
                let mut response = text(StatusCode::OK, rendered);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // Ready once a config is published (always, since `start` needs one) and until
        // shutdown begins: load balancers in front stop sending during `shutdown_delay`.
        "/readyz" if state.shared.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/config" => {
            let last_error = state.reload.last_error();
            json(
                StatusCode::OK,
                &views::config(&snapshot, last_error.as_deref().map(String::as_str)),
            )
        }
        "/upstreams" => json(StatusCode::OK, &views::upstreams(&snapshot)),
        "/mesh/members" => match &state.mesh {
            Some(mesh) => json(StatusCode::OK, &mesh.view().members_json()),
            None => text(StatusCode::NOT_FOUND, "no [mesh] configured\n"),
        },
        "/stats" => {
            let rendered = super::metrics::install().ok().map(|h| h.render());
            json(
                StatusCode::OK,
                &super::status::stats(&snapshot, rendered.as_deref()),
            )
        }
        "/" => {
            let mut response = text(StatusCode::OK, super::status::PAGE);
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(super::status::PAGE_CSP),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        _ => match views::explain(&snapshot, req.uri().query()) {
            Ok(explanation) => json(StatusCode::OK, &explanation),
            Err(views::BadQuery(error)) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": error }),
            ),
        },
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
