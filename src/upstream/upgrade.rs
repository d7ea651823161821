//! WebSocket and other HTTP/1.1 Upgrades: once both sides agreed (101), the two upgraded
//! connections are joined as a byte tunnel with `tokio::io::copy_bidirectional`, ended by either
//! side closing or by the route's `idle_timeout` with no byte in either direction.
//!
//! The downstream side is our HTTP/1 server's ([`OnUpgrade`]: the socket with any bytes it read
//! past the request head). The upstream side is our own HTTP/1.1
//! connection (see [`super::h1`]): the exchange that read the 101 puts the connection into the
//! response's extensions as an [`UpstreamUpgrade`], bytes already read past the 101 head
//! included, and the connection stays counted open (its `OpenConn` moves along) until the
//! tunnel ends.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dial::Dialed;
use super::h1::Conn;
use crate::wire::activity::Activity;
use crate::wire::upgrade::OnUpgrade;

/// The endpoint's side of an accepted upgrade: its connection, handed from the exchange to the
/// tunnel through the response's extensions (which need `Clone`, hence the shared slot; only
/// the first taker gets the connection).
#[derive(Clone)]
pub struct UpstreamUpgrade(Arc<Mutex<Option<Conn>>>);

impl std::fmt::Debug for UpstreamUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamUpgrade").finish_non_exhaustive()
    }
}

impl UpstreamUpgrade {
    pub(crate) fn new(conn: Conn) -> Self {
        Self(Arc::new(Mutex::new(Some(conn))))
    }

    fn take(&self) -> Option<Conn> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Spawns the tunnel between the client's and the endpoint's upgraded connections; it starts
/// once the server has written the 101 downstream.
pub fn spawn_tunnel(
    downstream: OnUpgrade,
    upstream: UpstreamUpgrade,
    idle_timeout: Option<Duration>,
) {
    tokio::spawn(async move {
        let client = match downstream.await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let Some(conn) = upstream.take() else {
            tracing::debug!("upstream upgrade already taken");
            return;
        };
        // `_counted` keeps the connection counted open until the tunnel ends.
        let (io, read_ahead, _counted) = conn.into_parts();
        let activity = Activity::new();
        let mut client = Tracked {
            inner: client,
            activity: activity.clone(),
        };
        let mut server = Rewind { read_ahead, io };
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

/// The endpoint half of a tunnel: the bytes read past the 101 head first, then the socket.
struct Rewind {
    read_ahead: BytesMut,
    io: Dialed,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead[..n]);
            this.read_ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
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
