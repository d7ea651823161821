//! Listening sockets: one per worker per listener, all bound to the same address with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the workers and no accept lock or
//! hand-off between threads exists.
//!
//! An accepted connection joins the worker's reactor only once it has to wait
//! ([`Connection`]): a client that sends its request with the connection and closes after the
//! answer is read, answered and closed without an `epoll_ctl` add and delete, as HAProxy does.
//! Re-measure with `python3 benches/load/syscalls.py --switchyard BINARY --haproxy` (syscalls
//! per request on a connection per request) and `benches/load/breakdown.py --tests close`.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Accept backlog. 1024 matches nginx's default on Linux and is what `somaxconn` allows by
/// default on current kernels.
const BACKLOG: i32 = 1024;

/// Binds `count` sockets on `addr`. When the port is 0 the first socket takes an ephemeral port
/// and the rest bind that same port, so every worker serves the one resolved address.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut resolved = addr;
    for _ in 0..count.max(1) {
        let listener = bind_one(resolved)?;
        resolved = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]:80` must not also claim IPv4: a separate `0.0.0.0:80` listener would then fail.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// One worker's listening socket on its reactor; what it accepts is not registered yet.
#[derive(Debug)]
pub struct Acceptor {
    socket: AsyncFd<mio::net::TcpListener>,
}

impl Acceptor {
    /// Registers the (non-blocking) `socket` with the current runtime's reactor.
    #[allow(
        deprecated,
        reason = "tokio deprecated the safe constructors because an arbitrary `AsRawFd` may \
                  close or change its descriptor while registered; `mio::net::TcpListener` owns \
                  its descriptor until it drops, after `AsyncFd` deregistered it, which is the \
                  contract of the `unsafe` replacement (and this crate has no unsafe code)"
    )]
    pub fn from_std(socket: TcpListener) -> io::Result<Self> {
        let socket =
            AsyncFd::with_interest(mio::net::TcpListener::from_std(socket), Interest::READABLE)?;
        Ok(Self { socket })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// The next connection: `accept4` with `SOCK_NONBLOCK`, as tokio's listener does, but
    /// without the `epoll_ctl` that tokio's stream makes at once.
    pub async fn accept(&self) -> io::Result<(Connection, SocketAddr)> {
        let (stream, peer) = self
            .socket
            .async_io(Interest::READABLE, mio::net::TcpListener::accept)
            .await?;
        Ok((Connection::fresh(TcpStream::from(stream)), peer))
    }
}

/// Reads on a connection that is not registered yet go through this buffer (zeroed once per
/// thread): safe code cannot have the kernel write into the caller's uninitialised buffer, and
/// zeroing 16 KiB of it per read costs more than copying what arrived.
const FRESH_READ_MAX: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An accepted connection. It starts outside the reactor (a non-blocking socket on which reads
/// and writes are tried directly) and registers the first time a read or write would block, so
/// a connection that never waits (the request came with the connection, the answer fits in the
/// socket's buffer, the client closes) costs neither `epoll_ctl` call, and closing it needs no
/// deregistration. A read polled with the no-op waker (the lingering drain before a close) that
/// would block returns `Pending` without registering: nothing waits for it. Registering after the failed try loses no wake-up: `epoll_ctl` adds a socket
/// that is already ready as ready.
#[derive(Debug)]
pub struct Connection {
    state: State,
}

#[derive(Debug)]
enum State {
    Fresh(TcpStream),
    Registered(tokio::net::TcpStream),
    /// Only while registering fails; the error went to the caller.
    Failed,
}

impl Connection {
    fn fresh(stream: TcpStream) -> Self {
        Self {
            state: State::Fresh(stream),
        }
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match &self.state {
            State::Fresh(stream) => stream.set_nodelay(nodelay),
            State::Registered(stream) => stream.set_nodelay(nodelay),
            State::Failed => Err(failed()),
        }
    }

    /// The connection on the reactor, for code that needs tokio's stream (the TLS handshake).
    pub fn into_registered(self) -> io::Result<tokio::net::TcpStream> {
        match self.state {
            State::Fresh(stream) => tokio::net::TcpStream::from_std(stream),
            State::Registered(stream) => Ok(stream),
            State::Failed => Err(failed()),
        }
    }

    /// Registers a fresh connection (its try would block) and returns the registered stream.
    #[cold]
    fn register(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        self.state = match std::mem::replace(&mut self.state, State::Failed) {
            State::Fresh(stream) => State::Registered(tokio::net::TcpStream::from_std(stream)?),
            other => other,
        };
        match &mut self.state {
            State::Registered(stream) => Ok(stream),
            _ => Err(failed()),
        }
    }
}

fn failed() -> io::Error {
    io::Error::other("the connection could not be registered with the reactor")
}

/// Retries `op` on `EINTR`; `None` when it would block.
fn try_io<R>(mut op: impl FnMut() -> io::Result<R>) -> Option<io::Result<R>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            other => return Some(other),
        }
    }
}

/// One read on a fresh connection; `None` when it would block.
fn read_fresh(mut stream: &TcpStream, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
    // What the caller already initialised is read into directly; otherwise through SCRATCH.
    let ready = buf.initialized().len() - buf.filled().len();
    if ready > 0 {
        let dst = buf.initialize_unfilled_to(ready);
        let n = match try_io(|| stream.read(dst))? {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        buf.advance(n);
        return Some(Ok(()));
    }
    let want = buf.remaining().min(FRESH_READ_MAX);
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < want {
            // Zeroed by the allocator (fresh pages need no writes), so an idle worker keeps
            // only the pages its reads touched.
            *scratch = vec![0; FRESH_READ_MAX];
        }
        let read = try_io(|| stream.read(&mut scratch[..want]))?;
        Some(read.map(|n| buf.put_slice(&scratch[..n])))
    })
}

impl AsyncRead for Connection {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The registered case first and inline: a kept-alive connection is registered after
        // its first wait, and the wrapper should cost it a branch, not a call.
        if let State::Registered(stream) = &mut this.state {
            return Pin::new(stream).poll_read(cx, buf);
        }
        this.poll_read_unregistered(cx, buf)
    }
}

impl Connection {
    #[inline(never)]
    fn poll_read_unregistered(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &self.state {
            State::Fresh(stream) => {
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                if let Some(done) = read_fresh(stream, buf) {
                    return Poll::Ready(done);
                }
                // A caller that polls with the no-op waker wants no wake-up (the lingering
                // drain before a close: only what is already there), so nothing needs the
                // reactor. Any other waker registers; a waker that only looks different from
                // the no-op one registers too, which is merely the slower way.
                if cx.waker().will_wake(std::task::Waker::noop()) {
                    return Poll::Pending;
                }
            }
            State::Registered(_) => {}
            State::Failed => return Poll::Ready(Err(failed())),
        }
        let stream = self.register()?;
        Pin::new(stream).poll_read(cx, buf)
    }

    #[inline(never)]
    fn poll_write_unregistered(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &self.state {
            State::Fresh(stream) => {
                if let Some(done) = try_io(|| (&*stream).write_vectored(bufs)) {
                    return Poll::Ready(done);
                }
            }
            State::Registered(_) => {}
            State::Failed => return Poll::Ready(Err(failed())),
        }
        let stream = self.register()?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }
}

impl AsyncWrite for Connection {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let State::Registered(stream) = &mut this.state {
            return Pin::new(stream).poll_write(cx, buf);
        }
        this.poll_write_unregistered(cx, &[IoSlice::new(buf)])
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let State::Registered(stream) = &mut this.state {
            return Pin::new(stream).poll_write_vectored(cx, bufs);
        }
        this.poll_write_unregistered(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Registered(stream) => Pin::new(stream).poll_flush(cx),
            // A TCP socket has nothing to flush.
            State::Fresh(_) | State::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            // What tokio's stream does too: shut the write side down, no waiting.
            State::Fresh(stream) => Poll::Ready(stream.shutdown(Shutdown::Write)),
            State::Registered(stream) => Pin::new(stream).poll_shutdown(cx),
            State::Failed => Poll::Ready(Err(failed())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on 127.0.0.1 and a client connected to it, accepted.
    async fn pair() -> (tokio::net::TcpStream, Connection) {
        let socket = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 1)
            .expect("bind on loopback")
            .remove(0);
        let acceptor = Acceptor::from_std(socket).expect("register the listener");
        let addr = acceptor.local_addr().expect("local addr");
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), acceptor.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn a_connection_serves_without_waiting_then_registers_when_it_must_wait() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut conn) = pair().await;
        conn.set_nodelay(true).expect("nodelay");
        client.write_all(b"ping").await.expect("client write");
        // Data that is there is read without the reactor (and through the scratch buffer:
        // `read` hands an uninitialised `ReadBuf`).
        let mut got = Vec::new();
        while got.len() < 4 {
            let mut buf = [0u8; 16];
            let n = conn.read(&mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"ping");
        assert!(matches!(conn.state, State::Fresh(_)));
        conn.write_all(b"pong").await.expect("write");
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.expect("client read");
        assert_eq!(&buf, b"pong");
        // Nothing to read: the connection registers and wakes when data comes.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 8];
            let n = conn.read(&mut buf).await.expect("read after waiting");
            buf.truncate(n);
            (buf, conn)
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        client.write_all(b"late").await.expect("client write");
        let (buf, mut conn) = reader.await.expect("reader task");
        assert_eq!(buf, b"late");
        assert!(matches!(conn.state, State::Registered(_)));
        // Shutdown ends the client's stream.
        conn.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("client reads the end");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_drain_with_the_no_op_waker_does_not_register() {
        let (_client, mut conn) = pair().await;
        let mut chunk = [0u8; 64];
        let mut buf = ReadBuf::new(&mut chunk);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut conn)
            .poll_read(&mut cx, &mut buf)
            .is_pending());
        assert!(matches!(conn.state, State::Fresh(_)));
    }

    #[tokio::test]
    async fn a_fresh_connection_reads_the_end_and_hands_over_to_tls_code() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut conn) = pair().await;
        client.shutdown().await.expect("client shutdown");
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await.expect("read to end");
        assert!(buf.is_empty());
        let (client, conn) = pair().await;
        let stream = conn.into_registered().expect("register");
        assert_eq!(
            stream.peer_addr().expect("peer"),
            client.local_addr().expect("local")
        );
    }

    #[test]
    fn port_zero_resolves_once_for_every_socket() {
        let sockets =
            bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 3).expect("bind on loopback");
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().expect("local addr").port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn ipv6_loopback_binds_when_available() {
        // Hosts without IPv6 fail at bind with AddrNotAvailable; that is not our bug.
        match bind_reuseport("[::1]:0".parse().expect("literal"), 2) {
            Ok(sockets) => assert_eq!(sockets.len(), 2),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                ) || e.raw_os_error() == Some(97),
                "{e}"
            ),
        }
    }
}
