//! `switchyard demo`: three built-in backends and the proxy in front of them, from an embedded
//! config, so anyone can see routing and balancing work with nothing installed.
//!
//! The backends (`blue`, `green`, `red`) answer every request with a line of JSON naming
//! themselves; `/slow` answers after 2 s and `/status/NNN` with status NNN. They run on their own
//! small tokio runtime, separate from the proxy's workers, exactly as a real upstream would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::{config, runtime};

/// The backends' names, in the order they are started and printed.
const BACKENDS: [&str; 3] = ["blue", "green", "red"];

/// How long `/slow` waits: long enough to watch, short of the demo routes' 5 s timeout.
const SLOW: Duration = Duration::from_secs(2);

/// The embedded config; `@LISTEN@`, `@BLUE@`, `@GREEN@`, `@RED@` are replaced with real
/// addresses. Routes are tried in order, so the catch-all `/` comes last.
const CONFIG_TEMPLATE: &str = r#"
# Port 0: the demo must not clash with a real proxy's admin port; the banner prints the address.
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "demo"
listen = "@LISTEN@"

# Host-based: only requests for api.localhost, whatever the path.
[[routes]]
name = "api-host"
listener = "demo"
match = { host = "api.localhost" }
cluster = "canary"
headers = { response_add = { "x-demo-route" = "api-host" } }

# A canary release: 90 % to the stable colors, 10 % to the canary.
[[routes]]
name = "canary-split"
listener = "demo"
match = { path_prefix = "/canary" }
split = [ { cluster = "colors", weight = 90 }, { cluster = "canary", weight = 10 } ]
headers = { response_add = { "x-demo-route" = "canary-split" } }

[[routes]]
name = "default"
listener = "demo"
match = { path_prefix = "/" }
cluster = "colors"
timeout = "5s"
headers = { response_add = { "x-demo-route" = "default" } }

[clusters.colors]
balance = "round_robin"
endpoints = ["@BLUE@", "@GREEN@", "@RED@"]

[clusters.canary]
balance = "round_robin"
endpoints = ["@GREEN@"]
"#;

/// Runs the demo until Ctrl-C or SIGTERM: starts the backends and the proxy (listening on
/// `listen`, port 0 allowed), prints the URLs and example commands, then shuts both down.
pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let backends_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("demo-backends")
        .enable_all()
        .build()
        .context("cannot start the demo backends' runtime")?;
    let mut backend_addrs = Vec::with_capacity(BACKENDS.len());
    for name in BACKENDS {
        let addr = backends_rt
            .block_on(start_backend(name))
            .with_context(|| format!("cannot start demo backend {name}"))?;
        backend_addrs.push(addr);
    }

    let text = CONFIG_TEMPLATE
        .replace("@LISTEN@", &listen.to_string())
        .replace("@BLUE@", &backend_addrs[0].to_string())
        .replace("@GREEN@", &backend_addrs[1].to_string())
        .replace("@RED@", &backend_addrs[2].to_string());
    let config = config::parse(&text, Path::new("<demo>"))
        .map_err(|e| anyhow::anyhow!("embedded demo config is invalid:\n{e}"))?;
    let handle = runtime::start(config)?;
    let proxy = handle
        .listener_addr("demo")
        .context("demo listener missing after start")?;

    // Watch the signals before the banner: tests and scripts send SIGTERM as soon as they read
    // it, and a SIGTERM that came before the watch would kill the process with the default
    // action instead of shutting down.
    let signals = {
        let _entered = backends_rt.enter();
        Signals::watch()?
    };
    print_banner(proxy, handle.admin_addr(), &backend_addrs);

    backends_rt.block_on(signals.wait());
    println!("switchyard demo shutting down");
    handle.shutdown();
    backends_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn print_banner(proxy: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) {
    println!("switchyard demo");
    for (name, addr) in BACKENDS.iter().zip(backends) {
        println!("  backend {name:<6} http://{addr}");
    }
    println!("  proxy          http://{proxy}");
    println!("  admin          http://{admin}");
    println!();
    println!("try:");
    println!("  curl -s http://{proxy}/                                   # round robin over blue, green, red");
    println!("  curl -s http://{proxy}/canary                             # 90 % colors, 10 % canary (green)");
    println!("  curl -s -H 'Host: api.localhost' http://{proxy}/          # host-based route to the canary");
    println!("  curl -s -i http://{proxy}/status/503                      # backend status passed through");
    println!("  curl -s -i http://{proxy}/slow                            # answers after 2 s");
    println!("  curl -s http://{admin}/metrics                            # Prometheus metrics");
    println!("  curl -s http://{admin}/upstreams                          # endpoints as JSON");
    println!();
    // Tests and scripts wait for this exact line; keep it last and stable.
    println!("switchyard demo listening on http://{proxy}");
}

/// Ctrl-C and SIGTERM, registered with the runtime when made (see `run`).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers both; must run inside a runtime.
    fn watch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    /// Returns when either arrives.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Binds a backend on `127.0.0.1:0` and serves it (HTTP/1.1 and h2c) on the current runtime.
async fn start_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            // Accept errors (e.g. out of descriptors) are transient: keep serving.
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(name, req));
                // A client that goes away mid-request is not the demo's problem.
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(name: &str, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/slow" {
        tokio::time::sleep(SLOW).await;
    }
    let status = match path.strip_prefix("/status/") {
        Some(code) => code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST),
        None => StatusCode::OK,
    };
    let body = serde_json::json!({
        "backend": name,
        "path": req.uri().path_and_query().map_or(path, |pq| pq.as_str()),
        "method": req.method().as_str(),
        "status": status.as_u16(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
