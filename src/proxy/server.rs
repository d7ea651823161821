//! Accepting downstream connections and serving HTTP on them.
//!
//! Each worker runs one accept loop per listener on its own `SO_REUSEPORT` socket; each accepted
//! connection becomes a task on the same current-thread runtime (`tokio::spawn` on a
//! current-thread runtime never leaves that thread, so no `LocalSet` is needed). HTTP/1.1 and
//! h2c with prior knowledge are told apart by hyper-util's `auto` builder from the first bytes.
//!
//! Graceful drain follows mini-redis: every connection task holds a clone of an `mpsc::Sender`,
//! so the worker knows all connections are gone when `recv()` returns `None`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::handler::{self, ConnContext};
use crate::config::LimitsConfig;
use crate::runtime::Shared;
use crate::upstream::Upstream;

/// Pause after an accept error (e.g. EMFILE) so a persistent failure is not a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

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

/// How a worker serves connections: the protocol builder, configured once from `[limits]`.
#[derive(Clone)]
pub struct ConnServer {
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl std::fmt::Debug for ConnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnServer").finish_non_exhaustive()
    }
}

impl ConnServer {
    /// HTTP/1.1 with keep-alive and a header read timeout, plus h2c; the full limits (header
    /// size, first byte, body) are applied by the hygiene layer of a later issue.
    pub fn new(limits: &LimitsConfig) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.h2_keepalive_interval);
        Self {
            builder: Arc::new(builder),
        }
    }

    /// Accepts on `listener` until `shutdown` turns true (or its sender is gone), spawning one
    /// task per connection. Each task holds a clone of `active`.
    pub async fn accept_loop(
        &self,
        listener: TcpListener,
        ctx: ListenerContext,
        mut shutdown: watch::Receiver<bool>,
        active: mpsc::Sender<()>,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, %peer, "set TCP_NODELAY failed");
                    }
                    let ctx = ConnContext {
                        shared: Arc::clone(&ctx.shared),
                        upstream: Arc::clone(&ctx.upstream),
                        listener: Arc::clone(&ctx.name),
                        peer,
                    };
                    let server = self.clone();
                    let shutdown = shutdown.clone();
                    let active = active.clone();
                    tokio::spawn(async move {
                        server.serve(stream, ctx, shutdown).await;
                        drop(active);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, listener = %ctx.name, "accept failed");
                    tokio::select! {
                        _ = stopped(&mut shutdown) => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// Serves one connection; on shutdown, lets requests in progress finish and then closes
    /// (HTTP/1: no more keep-alive; HTTP/2: GOAWAY).
    async fn serve(
        &self,
        stream: tokio::net::TcpStream,
        ctx: ConnContext,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let peer = ctx.peer;
        let ctx = Arc::new(ctx);
        let service = service_fn(move |req| {
            let ctx = Arc::clone(&ctx);
            async move { Ok::<_, Infallible>(handler::handle(&ctx, req).await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            // Client resets and timeouts are routine; not worth more than debug.
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}

/// Resolves once shutdown is signalled or its sender is gone. Returns `()` rather than
/// `wait_for`'s `Ref`, which is a read guard on the channel and must not live across an `.await`.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
