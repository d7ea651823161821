//! A scriptable HTTP backend: HTTP/1.1 and h2c (auto-detected), a request log, a connection
//! count, and faults a real upstream commits (delays, hangs, resets, slow or truncated bodies).
//!
//! Every response carries `x-backend: NAME` (the address unless named), so a test can tell which
//! endpoint answered without parsing bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

mod actions;

use actions::{perform, RespBody};

use super::rt_thread::RtThread;

/// What `DieMidBody` sends before dropping the connection.
pub const DIE_MID_BODY_SENT: &[u8] = b"partial-body-";
/// The `content-length` `DieMidBody` announces: more than it sends, so the cut is detectable.
pub const DIE_MID_BODY_LEN: usize = 64;
/// What `Behavior::Delay` answers once the delay is over.
pub const DELAYED_BODY: &[u8] = b"delayed";

/// One request as the backend received it (body read completely).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// As received: origin-form for HTTP/1.1, absolute for HTTP/2.
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Per-request decision of a [`Behavior::Script`]; also what every other behaviour maps to.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status, extra headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// 200 with the request body, and `x-echo-method`, `x-echo-uri`, `x-echo-version`,
    /// `x-echo-host` headers describing the request.
    Echo,
    /// Wait this long before doing the inner action (so before any response header).
    Delay(Duration, Box<Action>),
    /// Never answer; the connection stays open until the client or `stop` closes it.
    Hang,
    /// Close the connection with a TCP RST (SO_LINGER 0) instead of answering.
    Reset,
    /// 200, then `chunks` copies of `chunk`, `interval` apart (the first at once).
    SlowBody {
        chunk: Bytes,
        interval: Duration,
        chunks: usize,
    },
    /// Headers announcing [`DIE_MID_BODY_LEN`] bytes, then [`DIE_MID_BODY_SENT`], then the
    /// connection (HTTP/1.1) or stream (HTTP/2) is aborted.
    DieMidBody,
}

impl Action {
    /// A response with an empty body.
    pub fn status(status: u16) -> Self {
        Self::respond(status, Bytes::new())
    }

    /// A response with a body and no extra headers.
    pub fn respond(status: u16, body: impl Into<Bytes>) -> Self {
        Self::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// A per-request script: gets the request and its 0-based index among all requests this
/// backend received.
pub type ScriptFn = Arc<dyn Fn(&RecordedRequest, usize) -> Action + Send + Sync>;

/// How a backend treats every request (or, for `Reset`, every connection).
#[derive(Clone)]
pub enum Behavior {
    Fixed {
        status: u16,
        body: Bytes,
    },
    Echo,
    /// Wait, then 200 with [`DELAYED_BODY`].
    Delay(Duration),
    Hang,
    /// Accept each connection and reset it at once, before reading anything.
    Reset,
    SlowBody {
        chunk: Bytes,
        interval: Duration,
        chunks: usize,
    },
    DieMidBody,
    Script(ScriptFn),
}

impl Behavior {
    /// `Fixed` without the struct syntax.
    pub fn fixed(status: u16, body: impl Into<Bytes>) -> Self {
        Self::Fixed {
            status,
            body: body.into(),
        }
    }

    /// `Script` without the `Arc`.
    pub fn script(f: impl Fn(&RecordedRequest, usize) -> Action + Send + Sync + 'static) -> Self {
        Self::Script(Arc::new(f))
    }

    fn action_for(&self, req: &RecordedRequest, n: usize) -> Action {
        match self {
            Self::Fixed { status, body } => Action::respond(*status, body.clone()),
            Self::Echo => Action::Echo,
            Self::Delay(d) => Action::Delay(*d, Box::new(Action::respond(200, DELAYED_BODY))),
            Self::Hang => Action::Hang,
            Self::Reset => Action::Reset,
            Self::SlowBody {
                chunk,
                interval,
                chunks,
            } => Action::SlowBody {
                chunk: chunk.clone(),
                interval: *interval,
                chunks: *chunks,
            },
            Self::DieMidBody => Action::DieMidBody,
            Self::Script(f) => f(req, n),
        }
    }
}

/// State shared between the handle and the backend's runtime thread.
struct Shared {
    name: String,
    behavior: Mutex<Behavior>,
    log: Mutex<Vec<RecordedRequest>>,
    /// Request heads received, counted before the body is read (the log waits for the body).
    heads: AtomicUsize,
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A running backend; stopped (every socket closed) on [`Backend::stop`] or drop.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: RtThread,
}

impl Backend {
    /// A backend on `127.0.0.1:0`, named after its address.
    pub fn start(behavior: Behavior) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), None, behavior)
    }

    /// A backend on `127.0.0.1:0` whose responses carry `x-backend: NAME`.
    pub fn start_named(name: &str, behavior: Behavior) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), Some(name), behavior)
    }

    /// A backend on a given local address (e.g. `[::1]:0`); panics if it cannot bind.
    pub fn start_at(addr: SocketAddr, name: Option<&str>, behavior: Behavior) -> Self {
        let listener = std::net::TcpListener::bind(addr).expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("backend addr");
        let shared = Arc::new(Shared {
            name: name.map_or_else(|| addr.to_string(), str::to_string),
            behavior: Mutex::new(behavior),
            log: Mutex::new(Vec::new()),
            heads: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let state = shared.clone();
        let rt = RtThread::spawn("test-backend", move || accept_loop(listener, state));
        Self { addr, shared, rt }
    }

    /// The bound address (the real port, never 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The `x-backend` value.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// `requests().len()` without copying the log.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Request heads received so far, including requests whose body never completed: how a
    /// test knows an upload is in flight before it breaks it.
    pub fn heads(&self) -> usize {
        self.shared.heads.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (including those reset at once).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open on the backend side.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Changes the behaviour for requests (and connections) that arrive from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.shared.behavior) = behavior;
    }

    /// Stops accepting and closes every connection; returns once all sockets are closed.
    pub fn stop(&mut self) {
        self.rt.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not turn every later assertion into a poison panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Closes `stream` with an RST rather than a FIN.
pub(crate) fn reset_socket(stream: &std::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn accept_loop(listener: std::net::TcpListener, state: Arc<Shared>) {
    let listener = TcpListener::from_std(listener).expect("register backend listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let reset_now = matches!(*lock(&state.behavior), Behavior::Reset);
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        if reset_now {
            reset_socket(&std_stream);
            continue;
        }
        tokio::spawn(serve_conn(std_stream, state.clone()));
    }
}

async fn serve_conn(stream: std::net::TcpStream, state: Arc<Shared>) {
    // A duplicate descriptor of the same socket: lets a request handler turn the close into an
    // RST after hyper has taken ownership of the stream.
    let Ok(control) = stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    state.open.fetch_add(1, Ordering::SeqCst);
    let kill = Arc::new(Notify::new());
    let svc = {
        let (state, kill) = (state.clone(), kill.clone());
        service_fn(move |req| handle(req, state.clone(), kill.clone()))
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => reset_socket(&control),
    }
    state.open.fetch_sub(1, Ordering::SeqCst);
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Shared>,
    kill: Arc<Notify>,
) -> Result<Response<RespBody>, Infallible> {
    state.heads.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    // A body the client aborted is recorded as what arrived before the abort: nothing.
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let rec = RecordedRequest {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    };
    let n = {
        let mut log = lock(&state.log);
        log.push(rec.clone());
        log.len() - 1
    };
    let behavior = lock(&state.behavior).clone();
    let action = behavior.action_for(&rec, n);
    let mut resp = perform(action, &rec, &kill).await;
    if let Ok(v) = state.name.parse() {
        resp.headers_mut().insert("x-backend", v);
    }
    Ok(resp)
}
