//! A TCP proxy that sits in front of one upstream address and injects network faults, switchable
//! at runtime: latency, a bandwidth cap, resets, half-close, blackholing, truncation, refusal.
//!
//! Faults apply per chunk of data as it arrives, so switching a fault affects existing
//! connections as well as new ones; `Reset` also resets every open connection at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::rt_thread::RtThread;
use super::{wait_until, DEADLINE};

/// The fault currently injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward bytes unchanged.
    None,
    /// Hold every chunk this long before forwarding it, in both directions.
    Latency(Duration),
    /// Forward at most this many bytes per second in each direction.
    Bandwidth(u64),
    /// RST new connections at accept and every open connection at once.
    Reset,
    /// After forwarding the client's first chunk (the request) upstream, close the write side
    /// towards the upstream (it sees EOF); the upstream's answer is still relayed back.
    HalfClose,
    /// New connections are accepted and never connected upstream nor answered; on existing
    /// connections, data is dropped in both directions.
    Blackhole,
    /// Forward only the first N bytes of each connection's response, then close it.
    Truncate(usize),
    /// Close the listening socket so connects are refused; open connections are untouched.
    /// Any other fault re-opens the same port.
    Refuse,
}

/// State shared between the handle, the accept loop and the connection tasks.
struct State {
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Generation of the last fault the accept loop has acted on; `set` waits for it, so a
    /// test's next connect already sees the new fault (a closed or re-opened listener).
    applied: AtomicU64,
}

/// A running fault proxy; stopped (every socket closed) on [`FaultProxy::stop`] or drop.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    tx: watch::Sender<(u64, Fault)>,
    state: Arc<State>,
    rt: RtThread,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`, with no fault.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy addr");
        let (tx, rx) = watch::channel((0, Fault::None));
        let state = Arc::new(State {
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            applied: AtomicU64::new(0),
        });
        let st = state.clone();
        let rt = RtThread::spawn("fault-proxy", move || {
            accept_loop(listener, addr, upstream, rx, st)
        });
        Self {
            addr,
            upstream,
            tx,
            state,
            rt,
        }
    }

    /// Where clients connect (the real port, kept across `Refuse`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the fault; returns once the listener reflects it (closed for `Refuse`,
    /// re-opened after it). Panics if that does not happen within [`DEADLINE`].
    pub fn set(&self, fault: Fault) {
        let gen = self.tx.borrow().0 + 1;
        self.tx.send_replace((gen, fault));
        let applied = wait_until(DEADLINE, || {
            self.state.applied.load(Ordering::SeqCst) >= gen
        });
        assert!(
            applied,
            "fault proxy did not apply {fault:?} (could not re-bind its port?)"
        );
    }

    /// The fault currently set.
    pub fn fault(&self) -> Fault {
        self.tx.borrow().1
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Client connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Stops the proxy and closes every connection.
    pub fn stop(&mut self) {
        self.rt.stop();
    }
}

/// Binds with `SO_REUSEADDR`, so `Refuse` can give the port back and take it again even while
/// closed connections on it sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn accept_loop(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut rx: watch::Receiver<(u64, Fault)>,
    state: Arc<State>,
) {
    let mut listener = Some(TcpListener::from_std(listener).expect("register fault listener"));
    loop {
        let (gen, fault) = *rx.borrow_and_update();
        if fault == Fault::Refuse {
            listener = None;
        } else if listener.is_none() {
            // On failure the generation stays unacknowledged and `set` reports it.
            listener = bind(addr).and_then(TcpListener::from_std).ok();
        }
        if fault == Fault::Refuse || listener.is_some() {
            state.applied.store(gen, Ordering::SeqCst);
        }
        let Some(l) = &listener else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((client, _)) = accepted {
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(handle_conn(client, upstream, rx.clone(), state.clone()));
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// How one direction (or the whole connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// This direction saw EOF and passed it on; the other direction carries on.
    Eof,
    /// Close the whole connection (FIN both ways).
    Close,
    /// Reset both sockets.
    Reset,
}

async fn handle_conn(
    mut client: TcpStream,
    upstream: SocketAddr,
    rx: watch::Receiver<(u64, Fault)>,
    state: Arc<State>,
) {
    state.open.fetch_add(1, Ordering::SeqCst);
    let fault = rx.borrow().1;
    let end = match fault {
        Fault::Reset => End::Reset,
        Fault::Blackhole => blackhole(&mut client, rx.clone()).await,
        _ => match TcpStream::connect(upstream).await {
            Ok(mut up) => {
                let end = relay(&mut client, &mut up, rx.clone()).await;
                if end == End::Reset {
                    reset_tokio(&up);
                }
                end
            }
            // Mirror the refused connect as a reset towards the client.
            Err(_) => End::Reset,
        },
    };
    if end == End::Reset {
        reset_tokio(&client);
    }
    state.open.fetch_sub(1, Ordering::SeqCst);
}

fn reset_tokio(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Resolves once the current fault is `Reset`.
async fn reset_signal(mut rx: watch::Receiver<(u64, Fault)>) {
    loop {
        if rx.borrow_and_update().1 == Fault::Reset {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn blackhole(client: &mut TcpStream, rx: watch::Receiver<(u64, Fault)>) -> End {
    let reset = reset_signal(rx);
    tokio::pin!(reset);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return End::Close,
                Ok(_) => {}
            },
            _ = &mut reset => return End::Reset,
        }
    }
}

async fn relay(
    client: &mut TcpStream,
    up: &mut TcpStream,
    rx: watch::Receiver<(u64, Fault)>,
) -> End {
    let (client_r, client_w) = client.split();
    let (up_r, up_w) = up.split();
    let to_up = pump(client_r, up_w, Direction::Request, rx.clone());
    let to_client = pump(up_r, client_w, Direction::Response, rx.clone());
    let reset = reset_signal(rx);
    tokio::pin!(to_up, to_client, reset);
    let (mut up_done, mut client_done) = (false, false);
    loop {
        tokio::select! {
            end = &mut to_up, if !up_done => match end {
                End::Eof => up_done = true,
                other => return other,
            },
            end = &mut to_client, if !client_done => match end {
                End::Eof => client_done = true,
                other => return other,
            },
            _ = &mut reset => return End::Reset,
        }
        if up_done && client_done {
            return End::Eof;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    dir: Direction,
    rx: watch::Receiver<(u64, Fault)>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut forwarded = 0usize;
    loop {
        // Small reads under a bandwidth cap, so the pacing below is smooth (about 20 steps/s).
        let cap = match rx.borrow().1 {
            Fault::Bandwidth(bps) => (bps / 20).clamp(1, buf.len() as u64) as usize,
            _ => buf.len(),
        };
        let n = match from.read(&mut buf[..cap]).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Close,
        };
        let fault = rx.borrow().1;
        let mut len = n;
        let mut then = None;
        match fault {
            Fault::None | Fault::Refuse | Fault::Bandwidth(_) => {}
            Fault::Latency(d) => tokio::time::sleep(d).await,
            Fault::Reset => return End::Reset,
            Fault::Blackhole => continue,
            Fault::HalfClose if dir == Direction::Request => then = Some(End::Eof),
            Fault::Truncate(limit) if dir == Direction::Response => {
                len = n.min(limit.saturating_sub(forwarded));
                if forwarded + n >= limit {
                    then = Some(End::Close);
                }
            }
            Fault::HalfClose | Fault::Truncate(_) => {}
        }
        if to.write_all(&buf[..len]).await.is_err() {
            return End::Close;
        }
        forwarded += len;
        match then {
            Some(End::Eof) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Some(end) => return end,
            None => {}
        }
        if let Fault::Bandwidth(bps) = fault {
            let nanos = (len as u64).saturating_mul(1_000_000_000) / bps.max(1);
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
    }
}
