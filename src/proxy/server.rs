//! Accepting downstream connections and serving HTTP on them.
//!
//! Each worker runs one accept loop per listener on its own `SO_REUSEPORT` socket; each accepted
//! connection becomes a task on the same current-thread runtime (`tokio::spawn` on a
//! current-thread runtime never leaves that thread, so no `LocalSet` is needed).
//!
//! Every connection goes through [`GuardedIo`] first: it runs the first-byte, header, body and
//! keep-alive timers and recognises the HTTP/2 preface (after which bytes pass unchecked to our
//! HTTP/2 server). The first bytes choose our HTTP/1.1 server ([`super::h1`], which reads each
//! request head through `GuardedIo`'s strict parser) or our HTTP/2 one ([`super::h2`]);
//! HTTP/1 runs in sessions that end while the connection idles, so an idle keep-alive
//! connection holds no buffers (see `serve`).
//!
//! Connection limit: one semaphore shared by every worker; a connection accepted without a
//! permit is closed at once (mini-redis holds the accept instead, but then the backlog fills and
//! clients hang in SYN queues rather than learning at once that we are full).
//!
//! Graceful drain follows mini-redis: every connection task holds a clone of an `mpsc::Sender`,
//! so the worker knows all connections are gone when `recv()` returns `None`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Semaphore};

use super::access_log::Tracked;
use super::body::{self, ProxyBody};
use super::h2;
use super::handler::{self, ConnContext};
use super::hygiene::{self, conn, Arrival, ConnState, GuardedIo, Limits, Protocols, Reject};
use super::listener::Acceptor;
use super::request_body::{DownstreamBody, H2Limits};
use super::woken::Woken;
use crate::config::LimitsConfig;
use crate::state::Shared;
use crate::tls::server::{handshake, Termination};
use crate::upstream::Upstream;
use crate::wire::shutdown::stopped;

/// First pause after an accept error such as EMFILE; doubled per consecutive error up to
/// [`ACCEPT_BACKOFF_MAX`]. Retrying at once would spin a core while descriptors are short.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between accept attempts while errors persist.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What one worker's accept loop for one listener hands to each connection.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    /// Current snapshot and endpoint registry.
    pub shared: Arc<Shared>,
    /// The worker's upstream side.
    pub upstream: Arc<Upstream>,
    /// The listener's name.
    pub name: Arc<str>,
}

/// How a worker serves connections: the protocol builder and limits, configured once from
/// `[limits]`, and the process-wide connection semaphore. One pointer: every connection task
/// holds a clone for its whole life (see `serve`).
#[derive(Clone)]
pub struct ConnServer(Arc<ServerParts>);

/// What [`ConnServer`] shares.
pub struct ServerParts {
    http2: h2::Settings,
    limits: Arc<Limits>,
    connections: Arc<Semaphore>,
}

impl std::ops::Deref for ConnServer {
    type Target = ServerParts;

    fn deref(&self) -> &ServerParts {
        &self.0
    }
}

impl std::fmt::Debug for ConnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnServer").finish_non_exhaustive()
    }
}

impl ConnServer {
    /// HTTP/1.1 (keep-alive, half-close) and h2c with `[limits]` applied; `connections` is the
    /// semaphore of `max_connections` permits shared by all workers.
    pub fn new(limits: &LimitsConfig, connections: Arc<Semaphore>) -> Self {
        Self(Arc::new(ServerParts {
            http2: h2::Settings::new(limits),
            limits: Arc::new(Limits::from_config(limits)),
            connections,
        }))
    }

    /// Accepts on `listener` until `shutdown` turns true (or its sender is gone), spawning one
    /// task per connection. Each task holds a clone of `active` and a connection permit.
    pub async fn accept_loop(
        &self,
        listener: Acceptor,
        ctx: ListenerContext,
        shutdown: watch::Receiver<bool>,
        active: mpsc::Sender<()>,
    ) {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        // `x-forwarded-port`: every worker's socket of a listener is bound to the same port.
        let port = listener.local_addr().map_or(0, |addr| addr.port());
        // One stop signal for the loop's whole life: a new one per accept would join and leave
        // the channel's waiters each time. Connections get clones of `shutdown`.
        let mut watching = shutdown.clone();
        let stop = stopped(&mut watching);
        tokio::pin!(stop);
        // Looked up once, not in the registry per connection.
        let open_gauge = crate::telemetry::metrics::DownstreamConnection::open_gauge();
        loop {
            let accepted = tokio::select! {
                // Accept first: the stop signal is polled when no connection is waiting, which
                // tokio's cooperative budget also guarantees at least every 128 accepts.
                biased;
                accepted = listener.accept() => accepted,
                () = &mut stop => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(error) if transient_accept_error(&error) => {
                    tracing::debug!(%error, listener = %ctx.name, "accept: connection gone");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, listener = %ctx.name, ?backoff, "accept failed; backing off");
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = next_backoff(backoff);
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                // Over `max_connections`: closed at once, so the client learns now and the
                // descriptor is back before the next accept.
                hygiene::count("connection_limit");
                drop(stream);
                continue;
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, %peer, "set TCP_NODELAY failed");
            }
            // Read per connection: a reload or certificate rotation applies to the next one.
            // An intercepting listener's connections go to `transparent` (one branch here for
            // an `http` listener).
            let (termination, intercepting) = match ctx.shared.snapshot().listener(&ctx.name) {
                Some(l) => (l.tls().clone(), l.intercepting().cloned()),
                None => (Termination::Plain, None),
            };
            let ctx = ConnContext {
                shared: Arc::clone(&ctx.shared),
                upstream: Arc::clone(&ctx.upstream),
                listener: Arc::clone(&ctx.name),
                peer,
                // Rendered when a session starts (with the scheme: a TLS connection serves no
                // request before its handshake succeeded and `tls` is set).
                forwarding: None,
                port,
                tls: false,
                client_identity: None,
                intercepted: None,
            };
            let server = self.clone();
            let shutdown = shutdown.clone();
            let active = active.clone();
            // A guard, so the gauge comes down even if serving panics.
            let open = crate::telemetry::metrics::DownstreamConnection::opened_on(&open_gauge);
            if let Some(intercepting) = intercepting {
                let held = (open, permit, active);
                let serving =
                    super::transparent::serve(server, ctx, stream, intercepting, shutdown, held);
                tokio::spawn(serving);
                continue;
            }
            match termination {
                // The task's future is `serve`'s own, the guards passed in: a parked plain
                // connection holds a task of that size and nothing more (no wrapper around it).
                Termination::Plain => {
                    let held = (open, permit, active);
                    tokio::spawn(server.serve(stream, ctx, Protocols::Detect, shutdown, held));
                }
                Termination::Tls(tls) => {
                    tokio::spawn(async move {
                        let limit = server.limits.first_byte_timeout;
                        // The handshake takes tokio's stream: TLS connections register at once.
                        let stream = match stream.into_registered() {
                            Ok(stream) => Some(stream),
                            Err(error) => {
                                tracing::debug!(%error, %peer, "cannot register the connection");
                                None
                            }
                        };
                        // Boxed: the handshake's state is large.
                        let shake =
                            stream.map(|stream| Box::pin(handshake(&tls, stream, limit, peer)));
                        let shaken = match shake {
                            Some(shake) => shake.await,
                            None => None,
                        };
                        if let Some((stream, identity)) = shaken {
                            let protocols =
                                Protocols::from_alpn(stream.get_ref().1.alpn_protocol());
                            let ctx = ConnContext {
                                tls: true,
                                client_identity: identity.map(Arc::new),
                                ..ctx
                            };
                            // Boxed for the same reason: serving a TLS stream holds several
                            // times a plain one's state.
                            Box::pin(server.serve(stream, ctx, protocols, shutdown, ())).await;
                        }
                        drop((open, permit, active));
                    });
                }
                Termination::Unavailable => drop((stream, open, permit, active)),
            }
        }
    }

    /// Serves one connection, in the `protocols` TLS ALPN allows; on shutdown, lets requests in
    /// progress finish and then closes (HTTP/1: no more keep-alive; HTTP/2: GOAWAY). An HTTP/2
    /// connection without open streams for `keepalive_timeout` is closed the same way (HTTP/1
    /// idling is `GuardedIo`'s job). `held` (the connection's permit and guards) is dropped
    /// when the connection ends.
    ///
    /// HTTP/1 is served in sessions: when a keep-alive connection has idled for
    /// [`hygiene::io::PARK_AFTER`], `GuardedIo` ends the session, which frees its buffers
    /// (write buffer, header map, the request future's slot), and the next request starts a
    /// new one. Between sessions the task holds the socket, `GuardedIo`, the service's handles
    /// and the wait for the next bytes, nothing else: each session lives in its own box, one
    /// allocation per session. So this future,
    /// which is the whole task of a plain connection, stays small: it is built outside the
    /// `async` block, which captures only what lives as long as the connection (an `async fn`
    /// would also keep its arguments' storage after they moved into `GuardedIo` and the
    /// service). Re-measure RSS per idle connection with `benches/load/run.sh` (or
    /// `benches/load/idle_memory.py`).
    fn serve<S, G>(
        self,
        stream: S,
        ctx: ConnContext,
        protocols: Protocols,
        mut shutdown: watch::Receiver<bool>,
        held: G,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        G: Send + 'static,
    {
        let state = ConnState::new();
        let mut io = GuardedIo::new(stream, Arc::clone(&state), Arc::clone(&self.limits))
            .with_protocols(protocols);
        let mut requests = Requests(Arc::new(ConnShared {
            ctx,
            state,
            limits: Arc::clone(&self.limits),
        }));
        async move {
            loop {
                let parked = io
                    .is_parked()
                    .then(crate::telemetry::metrics::DownstreamConnection::parked);
                let arrival = tokio::select! {
                    arrival = std::future::poll_fn(|cx| io.poll_arrival(cx)) => arrival,
                    // Between sessions there is nothing in progress to finish.
                    _ = stopped(&mut shutdown) => break,
                };
                drop(parked);
                match arrival {
                    Ok(Arrival::Http1) => {}
                    Ok(Arrival::Http2) => {
                        requests.render_forwarding();
                        Box::pin(self.serve_http2(io, requests, shutdown)).await;
                        break;
                    }
                    Ok(Arrival::Closed) => {
                        // Writes a refusal of ours (such as a 408 for a head that never
                        // ended), bounded like any write to a client that may not read. Boxed:
                        // its timer would size the task for the connection's whole life.
                        let limit = self.limits.body_read_timeout;
                        let _ = Box::pin(tokio::time::timeout(limit, io.shutdown())).await;
                        break;
                    }
                    Err(error) => {
                        log_end(Err(error.into()), requests.ctx.peer);
                        break;
                    }
                }
                requests.render_forwarding();
                // `None`: the connection ended, or belongs to an upgrade's tunnel now.
                match Box::pin(self.session_http1(io, &requests, &mut shutdown)).await {
                    Some(parked) => {
                        io = parked;
                        requests.park();
                    }
                    None => break,
                }
            }
            drop(held);
        }
    }

    /// Serves HTTP on a connection a transparent listener intercepted (`stream` replays the
    /// bytes detection read): the same server as an `http` listener's, the protocol found
    /// from the first bytes.
    pub(super) fn serve_intercepted<S>(
        self,
        stream: S,
        ctx: ConnContext,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.serve(stream, ctx, Protocols::Detect, shutdown, ())
    }

    /// One HTTP/1 session on `io` (our own server, [`super::h1`]), until the connection ends,
    /// upgrades or parks; returns the socket if it parked (and we are not draining).
    async fn session_http1<S>(
        &self,
        io: GuardedIo<S>,
        requests: &Requests,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<GuardedIo<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Not boxed per request: the session keeps one slot of the request future's size and
        // reuses it for every request (a box per request cost a large malloc, a free and a copy
        // of the whole future each time). The slot goes with the session when the connection
        // parks. Re-check with `benches/load/breakdown.py` (HTTP/1.1 row).
        super::h1::serve(io, &self.limits, shutdown, |req| {
            serve_request(&requests.ctx, &requests.state, &requests.limits, req)
        })
        .await
    }

    /// Serves the rest of the connection with HTTP/2 (the preface arrived, or ALPN said `h2`).
    async fn serve_http2<S>(
        &self,
        io: GuardedIo<S>,
        requests: Requests,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = requests.ctx.peer;
        let state = Arc::clone(&requests.state);
        state.watch_streams();
        // Each stream's future (its request, then its response body) is polled by the
        // connection itself, in this task (see `h2`).
        let mut conn = Box::pin(self.http2.serve_connection(io, move |req| {
            let requests = requests.clone();
            requests.serve_h2(req)
        }));
        let result = self.drive(conn.as_mut(), &state, peer, &mut shutdown).await;
        log_end(result, peer);
    }

    /// Runs an HTTP/2 connection until it ends, the worker drains, the connection has had no
    /// open stream for `keepalive_timeout`, or a stream's client stops taking its response
    /// (HTTP/1 sessions watch all of that through `GuardedIo` on the socket).
    async fn drive<C, E>(
        &self,
        mut conn: Pin<&mut C>,
        state: &ConnState,
        peer: SocketAddr,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), E>
    where
        C: Session + Future<Output = Result<(), E>>,
    {
        let keepalive = self.limits.keepalive_timeout;
        tokio::select! {
            // The session first: it is what wakes the task, nearly every time. The others are
            // polled only when they woke it (`Woken`), not on each of the session's wake-ups.
            biased;
            result = conn.as_mut() => result,
            _ = Woken::new(stopped(shutdown)) => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
            () = Woken::new(idle(state, keepalive)) => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
            () = Woken::new(stalled(state, self.limits.body_read_timeout)) => {
                // Dropping the connection resets every stream and cancels their upstream
                // requests; a graceful close would wait on the very client that stalls.
                hygiene::count("slow_read");
                tracing::debug!(%peer, "client takes no response data: closing");
                Ok(())
            }
        }
    }
}

/// A server connection as [`ConnServer::drive`] runs it (the seam that keeps `drive`'s
/// timers apart from `h2`'s generic connection type).
trait Session {
    /// Stop taking new requests; finish the ones in progress.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<T, F, S> Session for h2::Connection<T, F, S>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnMut(Request<DownstreamBody>) -> S + Unpin,
    S: Future<Output = Response<ProxyBody>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        h2::Connection::graceful_shutdown(self.get_mut());
    }
}

/// How a connection's end is logged: client resets and timeouts are routine, so debug.
fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

/// What each request on one connection is served with (the service clones it per request:
/// one reference count, and one pointer in the connection's task).
#[derive(Clone)]
struct Requests(Arc<ConnShared>);

/// What [`Requests`] shares.
#[derive(Clone)]
struct ConnShared {
    ctx: ConnContext,
    state: Arc<ConnState>,
    limits: Arc<Limits>,
}

impl std::ops::Deref for Requests {
    type Target = ConnShared;

    fn deref(&self) -> &ConnShared {
        &self.0
    }
}

impl Requests {
    /// Renders the connection's forwarding view for the session about to start. The session
    /// before it is over, so nothing else holds the context and it is changed in place.
    fn render_forwarding(&mut self) {
        Arc::make_mut(&mut self.0).ctx.render_forwarding();
    }

    /// The session ended with the connection parked: drops what only a session needs.
    fn park(&mut self) {
        if let Some(shared) = Arc::get_mut(&mut self.0) {
            shared.ctx.forwarding = None;
        }
    }

    /// Serves one HTTP/2 stream's request.
    async fn serve_h2(self, req: Request<DownstreamBody>) -> Response<ProxyBody> {
        serve_request(&self.ctx, &self.state, &self.limits, req).await
    }
}

/// One request: the HTTP/2 checks (HTTP/1 heads were checked when they were parsed), then
/// the handler. The response body holds the request open for the idle timer.
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc of crate::proxy::stack"
)]
fn serve_request<'a>(
    ctx: &'a ConnContext,
    state: &'a Arc<ConnState>,
    limits: &'a Limits,
    req: Request<DownstreamBody>,
) -> impl Future<Output = Response<ProxyBody>> + 'a {
    async move {
        let open = state.start();
        // HTTP/1 bodies are limited and timed by `GuardedIo` on the socket; an HTTP/2 body only
        // frame by frame as it streams, and only if there is one (a stream that ended with its
        // headers has none). A body that goes over or stalls fails as the client's (413, 408).
        let h2_body = (req.version() == http::Version::HTTP_2 && !req.body().is_end_stream())
            .then_some(H2Limits {
                max_body_bytes: limits.max_body_bytes,
                read_timeout: limits.body_read_timeout,
            });
        let response = match hygiene::h2::check(&req, limits) {
            Ok(()) => handler::handle(ctx, req, h2_body).await,
            Err(reject) => {
                reject.count();
                refusal(reject).map(Tracked::untracked)
            }
        };
        state.responded();
        response.map(|body| conn::hold_open(body, open))
    }
}

/// The answer to a refused HTTP/2 request (the stream ends; the connection stays).
fn refusal(reject: Reject) -> Response<ProxyBody> {
    let status = reject.status();
    let text = format!("{}\n", status.canonical_reason().unwrap_or("refused"));
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Accept errors that concern one connection (it was reset before we took it), not the
/// listener; anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) means back off.
fn transient_accept_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    )
}

/// The pause after the next consecutive accept error: doubled, capped at
/// [`ACCEPT_BACKOFF_MAX`] (50 ms, 100 ms, … 800 ms, 1 s, 1 s, …).
fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(ACCEPT_BACKOFF_MAX)
}

/// Resolves once the connection has had no open request for `keepalive`.
async fn idle(state: &ConnState, keepalive: Duration) {
    loop {
        match state.idle_deadline(keepalive) {
            Some(at) if at <= Instant::now() => return,
            Some(at) => tokio::time::sleep_until(at.into()).await,
            // Re-checked a few times per period, so a deadline is missed by at most a quarter.
            None => tokio::time::sleep(keepalive / 4).await,
        }
    }
}

/// Resolves once a response body has waited on the client (handed a frame, not asked for the
/// next) with no body asked for anything on this connection for `limit`.
async fn stalled(state: &ConnState, limit: Duration) {
    loop {
        match state.stall_deadline(limit) {
            Some(at) if at <= Instant::now() => return,
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => tokio::time::sleep(limit / 4).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_to_one_second_and_never_spin() {
        let mut pause = ACCEPT_BACKOFF_MIN;
        let mut total = Duration::ZERO;
        for _ in 0..10 {
            total += pause;
            pause = next_backoff(pause);
        }
        assert_eq!(pause, ACCEPT_BACKOFF_MAX);
        // Ten consecutive EMFILEs cost at least 5 s of sleeping, i.e. at most 10 attempts.
        assert!(total >= Duration::from_secs(5), "{total:?}");
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(!transient_accept_error(&emfile), "EMFILE must back off");
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert!(transient_accept_error(&aborted));
    }
}
