//! WebSocket and other HTTP/1.1 Upgrades: once both sides agreed (101), the two upgraded
//! connections are joined as a byte tunnel with `tokio::io::copy_bidirectional`, ended by either
//! side closing or by the route's `idle_timeout` with no byte in either direction.
//!
//! The upstream connection left the pool when it upgraded (its hyper driver finished and
//! uncounted it), so the tunnel counts it again for as long as it lives.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool;
use crate::endpoint::EndpointState;
use crate::wire::activity::Activity;

/// Spawns the tunnel between the client's and the endpoint's upgraded connections; it starts
/// once hyper has written the 101 downstream.
pub fn spawn_tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    endpoint: Arc<EndpointState>,
    idle_timeout: Option<Duration>,
) {
    tokio::spawn(async move {
        let (client, server) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let _counted = pool::open_slot(&endpoint);
        let activity = Activity::new();
        let mut client = Tracked {
            inner: TokioIo::new(client),
            activity: activity.clone(),
        };
        let mut server = TokioIo::new(server);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
        let result = match idle_timeout {
            Some(limit) => tokio::select! {
                result = copy => result.map(|_| ()),
                () = activity.expired(limit) => {
                    tracing::debug!(?limit, "upgraded connection idle: closing");
                    Ok(())
                }
            },
            None => copy.await.map(|_| ()),
        };
        if let Err(error) = result {
            tracing::debug!(%error, "upgraded connection ended with an error");
        }
    });
}

pin_project! {
    /// The client half of a tunnel; every byte through it in either direction stamps the clock
    /// (everything the server sends is written here, everything it receives is read here).
    struct Tracked<T> {
        #[pin]
        inner: T,
        activity: Activity,
    }
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
