//! The client's side of an accepted HTTP/1.1 upgrade, handed from the downstream server to the
//! tunnel (`upstream::upgrade`): the server puts an [`OnUpgrade`] into the request's extensions
//! and resolves it with the raw connection (bytes already read past the request head first)
//! once its 101 is written; if the answer was not a 101, it drops the sender and the wait fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// A downstream connection after its 101: reads and writes bytes, nothing HTTP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The upgraded connection, boxed (plain TCP or TLS).
pub type Upgraded = Box<dyn Io>;

/// Resolves to the client's upgraded connection once the 101 is written. In the request's
/// extensions, which need `Clone`: only the first taker gets the connection.
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The server's half: resolves the [`OnUpgrade`] of the same request.
pub struct Pending(oneshot::Sender<Upgraded>);

impl std::fmt::Debug for OnUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnUpgrade").finish_non_exhaustive()
    }
}

/// A pair for one request that asks to upgrade.
pub fn pending() -> (Pending, OnUpgrade) {
    let (tx, rx) = oneshot::channel();
    (Pending(tx), OnUpgrade(Arc::new(Mutex::new(Some(rx)))))
}

impl Pending {
    /// The 101 is written: the tunnel takes the connection.
    pub fn fulfill(self, io: Upgraded) {
        // The tunnel is gone only if its task was: then the connection closes here.
        let _ = self.0.send(io);
    }
}

/// Why an upgrade did not complete.
#[derive(Debug, thiserror::Error)]
#[error("the downstream connection was not upgraded")]
pub struct NotUpgraded;

impl Future for OnUpgrade {
    type Output = Result<Upgraded, NotUpgraded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut slot) = self.0.lock() else {
            return Poll::Ready(Err(NotUpgraded));
        };
        let Some(rx) = slot.as_mut() else {
            return Poll::Ready(Err(NotUpgraded));
        };
        let result = match Pin::new(rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result.map_err(|_| NotUpgraded),
        };
        *slot = None;
        Poll::Ready(result)
    }
}
