//! Small helpers for the `proxy_*` integration tests: a hyper backend on its own thread, a proxy
//! started from inline TOML, and HTTP/1.1 and h2c clients.
//!
//! Kept local so these tests do not depend on `tests/support/` while it is being written; the
//! backends run on their own threads so a blocked test runtime cannot starve them.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard::runtime::{self, ProxyHandle};
use tokio::sync::oneshot;

/// Upper bound for anything that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(10);

type BackendBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A backend that answers by path: `/hang` never answers (within a test), `/slow` answers after
/// 300 ms, a POST echoes its body, anything else returns the backend's name. It records every
/// request's headers.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend on loopback");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("backend addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel();
        let (name_owned, seen_task) = (name.to_owned(), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("backend runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("register");
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(_) => continue,
                        },
                    };
                    let (name, seen) = (name_owned.clone(), Arc::clone(&seen_task));
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |req| answer(name.clone(), Arc::clone(&seen), req));
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Backend {
            addr,
            name: name.to_owned(),
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Headers of every request received so far.
    pub fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    name: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    req: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    seen.lock()
        .expect("not poisoned")
        .push(req.headers().clone());
    let body = match req.uri().path() {
        "/hang" => {
            // A backend that hangs: the proxy's route timeout must fire first.
            tokio::time::sleep(Duration::from_secs(60)).await;
            full("late")
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            full("slow")
        }
        _ if req.method() == http::Method::POST => req.into_body().boxed_unsync(),
        _ => full(name),
    };
    Ok(Response::new(body))
}

fn full(text: impl Into<Bytes>) -> BackendBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Starts the proxy from TOML text (listener port 0).
pub fn start_proxy(toml: &str) -> ProxyHandle {
    let config = switchyard::config::parse(toml, Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("config does not parse: {e}\n{toml}"));
    runtime::start(config).expect("proxy starts")
}

/// A one-listener, one-route, one-cluster config; `extra_route` is inserted into the route
/// table and `extra_cluster` into the cluster table.
pub fn simple_config(
    workers: usize,
    endpoints: &[SocketAddr],
    extra_route: &str,
    extra_cluster: &str,
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[runtime]
workers = {workers}
drain_timeout = "5s"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"
{extra_route}

[clusters.app]
endpoints = [{endpoints}]
{extra_cluster}
"#,
        endpoints = endpoints.join(", ")
    )
}

/// The proxy's `public` listener as a base URL.
pub fn url(proxy: &ProxyHandle, path: &str) -> String {
    let addr = proxy.listener_addr("public").expect("listener public");
    format!("http://{addr}{path}")
}

/// A buffered response.
pub struct Reply {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// HTTP client; `h2c` = HTTP/2 with prior knowledge. Idle connections are not pooled, so every
/// request opens its own connection when `fresh` is set.
pub fn client(h2c: bool, fresh: bool) -> Client<HttpConnector, Full<Bytes>> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(h2c);
    if fresh {
        builder.pool_max_idle_per_host(0);
    }
    builder.build_http()
}

/// Sends `req` and buffers the answer, failing the test after [`DEADLINE`].
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(DEADLINE, client.request(req))
        .await
        .expect("response within the deadline")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("body within the deadline")
        .expect("body completes")
        .to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// GET `url` over HTTP/1.1.
pub async fn get(url: &str) -> Reply {
    let req = Request::get(url).body(Full::default()).expect("request");
    send(&client(false, false), req).await
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}
