//! A real etcd for the discovery tests: started on free loopback ports with a temp data dir,
//! killed on drop. Without the `etcd` binary the test fails and says how to install it (the
//! tests never skip: `.ci/run` installs Debian's `etcd-server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::net::free_port;
use super::wait_until;

/// A running etcd; stopped (and its data removed) on drop.
pub struct Etcd {
    child: Option<Child>,
    client: SocketAddr,
    peer: SocketAddr,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers. Panics with install instructions when the
    /// binary is missing.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut etcd = Self {
            child: None,
            client: free_port(),
            peer: free_port(),
            dir,
        };
        etcd.launch();
        etcd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let spawned = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the etcd discovery tests need a real etcd: `etcd` is not on PATH. Install it \
                 with `apt-get install -y etcd-server` (Debian/Ubuntu; .ci/run does this)"
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        };
        self.child = Some(child);
        let url = self.url();
        let ready = wait_until(Duration::from_secs(30), || health(&url));
        assert!(ready, "etcd did not become ready on {url}");
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills etcd (SIGKILL: connections drop at once) and starts it again on the same ports
    /// and data; returns once it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Kills etcd and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Puts `key` = `value` (with an optional lease id).
    pub fn put(&self, key: &str, value: &str, lease: Option<i64>) {
        let mut body =
            serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) });
        if let Some(lease) = lease {
            body["lease"] = serde_json::json!(lease.to_string());
        }
        call(&self.url(), "/v3/kv/put", &body).expect("etcd put");
    }

    /// Puts every `(key, value)` pair, 128 to a transaction (etcd's default `--max-txn-ops`):
    /// thousands of keys in a few dozen requests, for the scale tests.
    pub fn put_many(&self, pairs: &[(String, String)]) {
        for chunk in pairs.chunks(128) {
            let ops: Vec<serde_json::Value> = chunk
                .iter()
                .map(|(key, value)| {
                    serde_json::json!({ "request_put": {
                        "key": b64(key.as_bytes()), "value": b64(value.as_bytes())
                    }})
                })
                .collect();
            let body = serde_json::json!({ "success": ops });
            call(&self.url(), "/v3/kv/txn", &body).expect("etcd txn");
        }
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        let body = serde_json::json!({ "key": b64(key.as_bytes()) });
        call(&self.url(), "/v3/kv/deleterange", &body).expect("etcd delete");
    }

    /// Grants a lease of `ttl` seconds and returns its id.
    pub fn grant(&self, ttl: i64) -> i64 {
        let body = serde_json::json!({ "TTL": ttl.to_string() });
        let answer = call(&self.url(), "/v3/lease/grant", &body).expect("etcd lease grant");
        answer["ID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("lease id")
    }

    /// Every key under `prefix` with its value.
    pub fn keys(&self, prefix: &str) -> Vec<(String, String)> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&end) });
        let answer = call(&self.url(), "/v3/kv/range", &body).expect("etcd range");
        answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let text = |v: &serde_json::Value| {
                    String::from_utf8(unb64(v.as_str().unwrap_or(""))).expect("utf-8")
                };
                (text(&kv["key"]), text(&kv["value"]))
            })
            .collect()
    }

    /// Compacts history up to the current revision.
    pub fn compact(&self) {
        let answer = call(
            &self.url(),
            "/v3/kv/range",
            &serde_json::json!({ "key": "AA==" }),
        )
        .expect("etcd revision");
        let revision = answer["header"]["revision"]
            .as_str()
            .expect("revision")
            .to_owned();
        call(
            &self.url(),
            "/v3/kv/compaction",
            &serde_json::json!({ "revision": revision }),
        )
        .expect("etcd compaction");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn health(url: &str) -> bool {
    call(url, "/v3/kv/range", &serde_json::json!({ "key": "AA==" })).is_ok()
}

/// A blocking JSON POST over a plain TCP connection (HTTP/1.1, `Connection: close`).
fn call(url: &str, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {head}"));
    }
    // The gateway may answer chunked: take the JSON object between the first '{' and last '}'.
    let json = rest
        .find('{')
        .zip(rest.rfind('}'))
        .map(|(a, b)| &rest[a..=b])
        .ok_or("no JSON body")?;
    serde_json::from_str(json).map_err(|e| e.to_string())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(input: &str) -> Vec<u8> {
    let digits: Vec<u32> = input
        .bytes()
        .filter(|&b| b != b'=')
        .filter_map(|d| ALPHABET.iter().position(|&a| a == d).map(|v| v as u32))
        .collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &v)| n | v << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
