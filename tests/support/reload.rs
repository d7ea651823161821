//! Helpers the reload tests share: config text, atomic writes, a proxy started from a path of
//! the test's choosing (a symlink, a ConfigMap-like folder), and admin calls.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use switchyard::runtime::ProxyHandle;

use crate::support::{http_client, launcher, metrics, DEADLINE};

/// A config with listener `public` on port 0, one route `main` to `target`, and clusters `a`
/// and `b` with the given endpoints. `extra` is appended verbatim.
pub fn config(target: &str, a: &[SocketAddr], b: &[SocketAddr], extra: &str) -> String {
    let list = |eps: &[SocketAddr]| {
        eps.iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
name = "main"
listener = "public"
cluster = "{target}"

[clusters.a]
endpoints = [{}]

[clusters.b]
endpoints = [{}]
{extra}"#,
        list(a),
        list(b)
    )
}

/// Writes `text` the way the README recommends: a temporary file in the same folder, then a
/// rename over `path`, so a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

/// Starts the proxy from the config file at `path` (admin on a free port), from a plain thread
/// as `runtime::start` requires outside async code.
pub fn start_from(path: &Path) -> ProxyHandle {
    let text = std::fs::read_to_string(path).expect("read config");
    let mut config = switchyard::config::load(path).expect("valid config");
    launcher::admin_on_free_port(&text, &mut config);
    std::thread::scope(|s| s.spawn(|| switchyard::runtime::start(config)).join())
        .expect("start did not panic")
        .expect("proxy starts")
}

/// Shuts `handle` down from a plain thread (shutdown may block on the proxy's runtimes).
pub fn stop(handle: ProxyHandle) {
    std::thread::scope(|s| {
        let _ = s.spawn(move || handle.shutdown()).join();
    });
}

/// `GET /config` on the admin API, as JSON.
pub async fn admin_config(admin: SocketAddr) -> serde_json::Value {
    let response = http_client::get(&format!("http://{admin}/config"))
        .await
        .expect("GET /config");
    serde_json::from_slice(&response.body).expect("/config is JSON")
}

/// `POST /reload`: status and JSON body.
pub async fn post_reload(admin: SocketAddr) -> (u16, serde_json::Value) {
    let response = http_client::post(&format!("http://{admin}/reload"), "")
        .await
        .expect("POST /reload");
    let body = serde_json::from_slice(&response.body).expect("/reload answers JSON");
    (response.status.as_u16(), body)
}

/// `switchyard_config_reloads_total{result}` from `/metrics` (0 before the first one).
pub async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    metrics::metric(
        admin,
        &format!("switchyard_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// The `x-backend` of a GET through `addr` (a new connection each time), or the failure.
pub async fn backend_of(addr: SocketAddr) -> Result<String, String> {
    let response = http_client::get(&format!("http://{addr}/"))
        .await
        .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!("status {}", response.status));
    }
    response
        .header("x-backend")
        .map(str::to_owned)
        .ok_or_else(|| "no x-backend".to_owned())
}

/// Polls until a GET through `addr` is answered by `backend`; returns whether it was in time.
pub async fn wait_for_backend(addr: SocketAddr, backend: &str, deadline: Duration) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if backend_of(addr).await.as_deref() == Ok(backend) {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `/config` until `check` holds on it; returns the last document and whether it held.
pub async fn wait_for_config(
    admin: SocketAddr,
    check: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let doc = admin_config(admin).await;
        if check(&doc) {
            return (doc, true);
        }
        if tokio::time::Instant::now() >= end {
            return (doc, false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
