//! Opaque TCP: the bytes of a connection that is not HTTP (or whose destination is unknown),
//! copied both ways between the client and the target, as Envoy's `tcp_proxy` and Linkerd's
//! opaque transport do.
//!
//! - **Half-close is honoured both ways**: when one side ends its stream, the other side's
//!   write half is shut down (a FIN, or TLS `close_notify` then FIN in the tunnel) and the
//!   other direction keeps flowing until it ends too.
//! - **One idle timer over both directions** (`opaque_idle_timeout`): a byte either way
//!   restarts it; when it fires the connection is closed.
//! - **No buffer while idle**: each direction holds its 64 KiB buffer only while bytes move
//!   (allocated for a read, freed when the read would wait with nothing left to write), so an
//!   idle opaque connection costs its task and sockets, not 2 × 8 KiB as tokio's
//!   `copy_bidirectional` keeps (issue 27's target: 4 KiB per idle intercepted connection).
//! - Bytes each way are counted as they pass, so a connection that ends by timeout or error
//!   still reports what it carried; the counts, its duration and how it ended go to the
//!   metrics and to one access-log line per connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::telemetry::intercept::{Direction, Protocol};

/// How an opaque connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both sides ended their streams.
    Closed,
    /// No byte either way for `opaque_idle_timeout`.
    IdleTimeout,
    /// A read or write failed (a reset, most often); the error's kind.
    Error(io::ErrorKind),
}

impl End {
    /// The access log's `end` value.
    pub fn as_str(&self) -> String {
        match self {
            Self::Closed => "closed".to_owned(),
            Self::IdleTimeout => "idle_timeout".to_owned(),
            Self::Error(kind) => format!("error:{kind:?}"),
        }
    }
}

/// What one opaque connection carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Client -> target.
    pub sent: u64,
    /// Target -> client.
    pub received: u64,
    /// How it ended.
    pub end: End,
    /// From the start of the copy to its end.
    pub lasted: Duration,
}

/// Copies between `client` and `target` until both directions ended, one failed, or nothing
/// moved for `idle`. Both streams are dropped (closed) when this returns.
pub async fn copy<A, B>(client: A, target: B, idle: Duration) -> Copied
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let activity = Activity::new(started);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        bytes: &sent,
        activity: &activity,
    };
    let mut target = Counted {
        inner: target,
        bytes: &received,
        activity: &activity,
    };
    let end = tokio::select! {
        result = bidirectional(&mut client, &mut target) => match result {
            Ok(_) => End::Closed,
            Err(error) => End::Error(error.kind()),
        },
        () = idle_for(&activity, idle) => End::IdleTimeout,
    };
    Copied {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        end,
        lasted: started.elapsed(),
    }
}

/// Bytes a direction buffers at most: four TLS records' worth. A read fills what the reader
/// has ready (several records of a tunnel, or a large socket read) before the bytes are
/// written, so a bulk stream makes a quarter of the reads and writes a 16 KiB buffer made
/// (each a syscall on a plain socket; a tunnel write of 64 KiB is four records in one
/// `writev`). Held only while bytes move (see the module doc).
const BUFFER: usize = 64 * 1024;

/// The stack buffer of a burst's first read (see [`Half::poll`]).
const PROBE: usize = 4 * 1024;

/// One direction of the copy.
#[derive(Debug, Default)]
struct Half {
    /// Present only while bytes move (see the module doc). Its spare capacity is what a read
    /// may fill; allocated without zeroing (tokio's `read_buf` reads into the uninitialised
    /// capacity), so a burst costs one malloc, not a malloc and a 64 KiB memset.
    buf: Option<Vec<u8>>,
    /// Read but not yet written: `buf[start..]`.
    start: usize,
    /// The reader ended its stream.
    eof: bool,
    /// Something was written since the last flush.
    unflushed: bool,
    /// The writer's write half is shut (after `eof`): this direction is done.
    done: bool,
}

impl Half {
    /// Moves bytes from `reader` to `writer` until it would wait, ends, or fails.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        use std::future::Future as _;
        use tokio::io::AsyncReadExt as _;
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Read while there is room and the reader has bytes: what it has ready goes out
            // in one write below.
            if !self.eof {
                match &mut self.buf {
                    Some(buf) => {
                        if self.start == buf.len() {
                            buf.clear();
                            self.start = 0;
                        }
                        if buf.len() < buf.capacity() {
                            let mut reading = reader.as_mut();
                            match std::pin::pin!(reading.read_buf(buf)).poll(cx) {
                                Poll::Ready(Ok(0)) => self.eof = true,
                                Poll::Ready(Ok(_)) => continue,
                                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                                Poll::Pending => {}
                            }
                        }
                    }
                    None => {
                        // The first read of a burst goes to the stack: a direction woken
                        // without bytes (or never, idle) allocates nothing; the buffer comes
                        // with the first bytes.
                        let mut probe = [0u8; PROBE];
                        let mut read = ReadBuf::new(&mut probe);
                        match reader.as_mut().poll_read(cx, &mut read) {
                            Poll::Ready(Ok(())) if read.filled().is_empty() => self.eof = true,
                            Poll::Ready(Ok(())) => {
                                let mut buf = Vec::with_capacity(BUFFER);
                                buf.extend_from_slice(read.filled());
                                self.buf = Some(buf);
                                self.start = 0;
                                continue;
                            }
                            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                            Poll::Pending => {}
                        }
                    }
                }
            }
            if let Some(buf) = &self.buf {
                if self.start < buf.len() {
                    let n = std::task::ready!(writer.as_mut().poll_write(cx, &buf[self.start..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.start += n;
                    self.unflushed = true;
                    continue;
                }
            }
            // Nothing left to write: the buffer goes until bytes come.
            self.buf = None;
            self.start = 0;
            if self.eof {
                // Half-close: our side of the other connection ends too, the other direction
                // goes on.
                std::task::ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // The read above is pending (else the loop went on): flush what was written.
            if self.unflushed {
                std::task::ready!(writer.as_mut().poll_flush(cx))?;
                self.unflushed = false;
            }
            return Poll::Pending;
        }
    }
}

/// Copies both ways until both directions ended (each with a half-close of the other side)
/// or one failed.
async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Half::default();
    let mut b_to_a = Half::default();
    std::future::poll_fn(|cx| {
        let forward = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (forward, back) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// When a byte last moved, as milliseconds since the copy started (an atomic, so the two
/// directions' wrappers share it without a lock).
#[derive(Debug)]
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Resolves once nothing moved for `limit`: sleeps to the deadline the last activity sets,
/// and again if a byte moved meanwhile.
async fn idle_for(activity: &Activity, limit: Duration) {
    loop {
        let at = activity.last() + limit;
        if at <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A stream whose reads are counted and mark activity.
struct Counted<'a, S> {
    inner: S,
    bytes: &'a AtomicU64,
    activity: &'a Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Who an intercepted connection is, for its access-log line.
#[derive(Debug, Clone)]
pub struct ConnRecord<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The client.
    pub peer: SocketAddr,
    /// The original destination (inbound tunnel: our address with the header's port).
    pub original_dst: SocketAddr,
    /// Cluster name, `passthrough` or `local`.
    pub target: &'a str,
    /// The address the bytes went to.
    pub upstream: Option<SocketAddr>,
    /// What was detected.
    pub protocol: Protocol,
    /// The peer sidecar's identity (inbound tunnel) or the target's (outbound tunnel).
    pub identity: Option<&'a str>,
}

/// Writes the connection's access-log line (target `switchyard::access`, message
/// `connection`): the same conventions as a request's line; every value goes through the
/// log format's escaping (`proxy::log_text`), the peer identity from a certificate included.
pub fn log(record: &ConnRecord<'_>, copied: &Copied) {
    tracing::info!(
        target: crate::proxy::access_log::TARGET,
        listener = %record.listener,
        direction = record.direction.as_str(),
        peer = %record.peer,
        original_dst = %record.original_dst,
        target_name = %record.target,
        upstream = %record.upstream.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        protocol = record.protocol.as_str(),
        identity = %record.identity.unwrap_or("-"),
        bytes_sent = copied.sent,
        bytes_received = copied.received,
        duration_ms = copied.lasted.as_secs_f64() * 1000.0,
        end = %copied.end.as_str(),
        "connection"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_and_counts_both_ways() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (target, mut target_far) = tokio::io::duplex(1024);
        let copying = tokio::spawn(copy(client, target, Duration::from_secs(30)));
        client_far.write_all(b"request").await.expect("write");
        client_far.shutdown().await.expect("client half-close");
        let mut got = Vec::new();
        target_far
            .read_to_end(&mut got)
            .await
            .expect("target sees EOF");
        assert_eq!(got, b"request");
        // The client's side ended; the target still answers through the other direction.
        target_far.write_all(b"response!").await.expect("write");
        drop(target_far);
        let mut back = Vec::new();
        client_far
            .read_to_end(&mut back)
            .await
            .expect("client reads");
        assert_eq!(back, b"response!");
        let copied = copying.await.expect("copy task");
        assert_eq!((copied.sent, copied.received), (7, 9));
        assert_eq!(copied.end, End::Closed);
    }

    #[tokio::test]
    async fn ten_mib_over_loopback_sockets_are_byte_exact_both_ways() {
        use tokio::net::{TcpListener, TcpStream};
        const SIZE: usize = 10 * 1024 * 1024;
        // client_far <-> [client | copy | target] <-> target_far (an echo), all real sockets.
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let back = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (front_addr, back_addr) = (
            front.local_addr().expect("addr"),
            back.local_addr().expect("addr"),
        );
        let echo = tokio::spawn(async move {
            let (stream, _) = back.accept().await.expect("accept");
            let (mut read, mut write) = stream.into_split();
            tokio::io::copy(&mut read, &mut write).await.expect("echo");
            write.shutdown().await.expect("echo half-close");
        });
        let copier = tokio::spawn(async move {
            let (client, _) = front.accept().await.expect("accept");
            let target = TcpStream::connect(back_addr).await.expect("connect");
            copy(client, target, Duration::from_secs(30)).await
        });
        let far = TcpStream::connect(front_addr).await.expect("connect");
        let (mut read, mut write) = far.into_split();
        let payload: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            write.write_all(&sent).await.expect("write");
            write.shutdown().await.expect("half-close");
        });
        let mut got = Vec::with_capacity(SIZE);
        tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut got))
            .await
            .expect("within a minute")
            .expect("read");
        writer.await.expect("writer");
        echo.await.expect("echo");
        assert!(got == payload, "byte-exact ({} of {SIZE} bytes)", got.len());
        let copied = copier.await.expect("copier");
        assert_eq!((copied.sent, copied.received), (SIZE as u64, SIZE as u64));
        assert_eq!(copied.end, End::Closed);
    }

    #[tokio::test]
    async fn a_waiting_direction_holds_no_buffer() {
        let (client, mut client_far) = tokio::io::duplex(64);
        let (target, mut target_far) = tokio::io::duplex(64);
        let (mut client, mut target) = (client, target);
        let mut half = Half::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polled = half.poll(&mut cx, Pin::new(&mut client), Pin::new(&mut target));
        assert!(polled.is_pending());
        assert!(half.buf.is_none(), "idle: no buffer");
        client_far.write_all(b"abc").await.expect("write");
        let polled = half.poll(&mut cx, Pin::new(&mut client), Pin::new(&mut target));
        assert!(polled.is_pending(), "waits for more");
        assert!(half.buf.is_none(), "written out: buffer freed again");
        let mut got = [0u8; 3];
        target_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"abc");
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (target, _target_far) = tokio::io::duplex(1024);
        let copying = tokio::spawn(copy(client, target, Duration::from_millis(150)));
        client_far.write_all(b"x").await.expect("write");
        let copied = tokio::time::timeout(Duration::from_secs(5), copying)
            .await
            .expect("closed by the idle timer")
            .expect("copy task");
        assert_eq!(copied.end, End::IdleTimeout);
        assert_eq!(copied.sent, 1);
        assert!(copied.lasted >= Duration::from_millis(150));
        let mut rest = Vec::new();
        client_far
            .read_to_end(&mut rest)
            .await
            .expect("EOF once closed");
    }
}
