//! The admin listener: a small HTTP/1.1 server on the control runtime, bound to its own address
//! (`[admin] listen`, loopback by default) and never to a proxy listener, so nothing a client
//! sends to the proxy can reach it.
//!
//! Loopback is not enough against a browser on the same host: any page it opens can send a
//! `POST /reload` or `/cache/purge` there, and can read the GET answers after rebinding a name
//! of its own to 127.0.0.1. So before any handler ([`refusal`]): a `Host` that is neither a
//! loopback name nor an address of this listener is refused (a rebound name is neither), an
//! `Origin` other than the admin's own is refused (a cross-site page always sends one with a
//! POST), and with `[admin] token_file` every request needs the bearer token.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::views;
use crate::config::AdminConfig;
use crate::state::Shared;
use crate::wire::shutdown::stopped;

/// How long a client may take to send a request head; the admin port is for operators and
/// scrapers, which send theirs at once.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The live snapshot, endpoint states and the draining flag.
    pub shared: Arc<Shared>,
    /// `POST /reload`, and the last reload error `/config` shows.
    pub reload: crate::state::ReloadHandle,
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
    let bound = listener.local_addr()?;
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
                        if let Some(refused) = refusal(
                            &state.shared.snapshot().config().admin,
                            bound,
                            req.headers(),
                        ) {
                            return Ok::<_, Infallible>(refused);
                        }
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

/// The answer to a request the admin API must not serve, if it is one: 403 for a foreign `Host` or
/// `Origin`, 401 without the bearer token when `[admin] token_file` is set. `bound` is the
/// listener's own address (the port resolved), which is what "this admin" means even after a reload
/// changed `listen` in the file (it applies at the next restart).
pub fn refusal(
    admin: &AdminConfig,
    bound: SocketAddr,
    headers: &HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    // No `Host` at all is a hand-made client (HTTP/1.0, a raw socket), not a browser: browsers
    // always send one, and it is the rebound name that gives them away.
    if host.is_some_and(|h| !own_host(h, bound)) {
        return Some(text(
            StatusCode::FORBIDDEN,
            "forbidden: Host is neither this admin address nor a loopback name\n",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !same_origin(origin.as_bytes(), host) {
            return Some(text(
                StatusCode::FORBIDDEN,
                "forbidden: cross-origin request (Origin is not this admin API)\n",
            ));
        }
    }
    if let Some(token) = &admin.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()));
        if !presented.is_some_and(|p| token.matches(p)) {
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <token of [admin] token_file>\n",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
            );
            return Some(response);
        }
    }
    None
}

/// A `Host` this admin answers to: `localhost` or a loopback IP, or the listener's own IP (any
/// IP literal when it listens on every address), with any port or none. A browser only sends a
/// DNS name of the attacker's in a rebinding attack; an IP literal cannot be rebound, and a
/// loopback name cannot be an attacker's origin, so the port does not matter (an SSH tunnel
/// from another local port keeps working).
fn own_host(host: &[u8], bound: SocketAddr) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        inside
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The admin's own origin is the one its pages are served from: `http://` + the request's
/// `Host` (which [`own_host`] has accepted). `null` (a sandboxed or `file:` page) never is.
fn same_origin(origin: &[u8], host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        return false;
    };
    origin
        .strip_prefix(b"http://")
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// The credentials of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 9110
/// §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
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
        "/metrics" => match crate::telemetry::metrics::install() {
            Ok(handle) => {
                crate::telemetry::runtime_tasks::record();
                let mut rendered = handle.render();
                super::endpoint_render::render(
                    &mut state.shared.registry().states(),
                    &mut rendered,
                );
                crate::telemetry::metrics::count_series(&rendered);
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
                &views::config(
                    &snapshot,
                    last_error.as_deref().map(String::as_str),
                    &state.reload.restart_required(),
                ),
            )
        }
        "/upstreams" => {
            let intercepted = state.shared.intercepted().read();
            json(StatusCode::OK, &views::upstreams(&snapshot, &intercepted))
        }
        "/mesh/members" => match &state.mesh {
            Some(mesh) => json(StatusCode::OK, &mesh.view().members_json()),
            None => text(StatusCode::NOT_FOUND, "no [mesh] configured\n"),
        },
        "/stats" => {
            let rendered = crate::telemetry::metrics::install()
                .ok()
                .map(|h| h.render());
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

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: &str = "127.0.0.1:9901";

    fn check(headers: &[(&str, &str)], token: Option<&str>, bound: &str) -> u16 {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let admin = AdminConfig {
            listen: bound.parse().expect("addr"),
            token_file: None,
            token: token.map(crate::config::AdminToken::new),
        };
        match refusal(&admin, bound.parse().expect("addr"), &map) {
            None => 200,
            Some(response) => response.status().as_u16(),
        }
    }

    #[test]
    fn hosts_the_admin_answers_to() {
        for host in [
            "localhost",
            "LOCALHOST:9901",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:9901",
        ] {
            assert_eq!(check(&[("host", host)], None, BOUND), 200, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "10.0.0.5:9901",
            "127.0.0.1:x",
            "[::1",
            "[::1]x",
            "",
        ] {
            assert_eq!(check(&[("host", host)], None, BOUND), 403, "{host}");
        }
        // A non-loopback listener answers to its own address; on every address, to any IP.
        assert_eq!(
            check(&[("host", "10.0.0.5:9901")], None, "10.0.0.5:9901"),
            200
        );
        assert_eq!(
            check(&[("host", "10.0.0.6:9901")], None, "10.0.0.5:9901"),
            403
        );
        assert_eq!(
            check(&[("host", "10.0.0.6:9901")], None, "0.0.0.0:9901"),
            200
        );
        assert_eq!(
            check(&[("host", "admin.internal")], None, "0.0.0.0:9901"),
            403
        );
        assert_eq!(check(&[], None, BOUND), 200, "no Host: not a browser");
    }

    #[test]
    fn origins_other_than_the_admins_own_are_refused() {
        let host = ("host", "127.0.0.1:9901");
        assert_eq!(
            check(&[host, ("origin", "http://127.0.0.1:9901")], None, BOUND),
            200
        );
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9902",
            "https://127.0.0.1:9901",
            "http://localhost:9901",
            "null",
        ] {
            assert_eq!(
                check(&[host, ("origin", origin)], None, BOUND),
                403,
                "{origin}"
            );
        }
        assert_eq!(
            check(&[("origin", "http://127.0.0.1:9901")], None, BOUND),
            403
        );
    }

    #[test]
    fn the_bearer_token_is_required_when_configured() {
        let token = Some("s3cret");
        assert_eq!(check(&[], token, BOUND), 401);
        assert_eq!(
            check(&[("authorization", "Bearer wrong")], token, BOUND),
            401
        );
        assert_eq!(
            check(&[("authorization", "Bearer s3cre")], token, BOUND),
            401
        );
        assert_eq!(
            check(&[("authorization", "Basic s3cret")], token, BOUND),
            401
        );
        assert_eq!(
            check(&[("authorization", "Bearer s3cret")], token, BOUND),
            200
        );
        assert_eq!(
            check(&[("authorization", "bearer s3cret")], token, BOUND),
            200
        );
        // The Host / Origin rule comes first: a foreign page gets 403 even with the token.
        assert_eq!(
            check(
                &[("host", "evil.example"), ("authorization", "Bearer s3cret")],
                token,
                BOUND
            ),
            403
        );
    }
}
