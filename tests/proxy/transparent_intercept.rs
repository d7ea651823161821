//! Transparent listeners (`mode = "outbound"` / `"inbound"`) over loopback, without network
//! namespaces: what needs no `SO_ORIGINAL_DST` redirect. A connection straight to an outbound
//! listener is refused (`not_redirected`); one straight to an inbound listener is a tunnel
//! attempt, so plaintext there is refused (`tunnel_handshake`), and our real mTLS tunnel
//! client (`tls::tunnel::connect`) reaches the app behind it: HTTP on a declared port through
//! the HTTP stack (identity header, route `allow`), opaque bytes to an undeclared one. The
//! redirected paths are the netns tests' (`tests/control/transparent.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use switchyard::config::IdentityConfig;
use switchyard::tls::tunnel::{self, TunnelHeader, TunnelProtocol, TunnelTls};

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::metrics::{scrape, sum};
use crate::support::raw_client::{raw_request, RawConn};
use crate::support::tls::{Ca, Leaf};
use crate::support::{wait_until, wait_until_check, DEADLINE};

/// `switchyard_intercepted_refused_total` of `listener` for `reason`.
fn refused(proxy: &TestProxy, listener: &str, reason: &str) -> f64 {
    sum(
        &scrape(proxy.admin_addr()),
        "switchyard_intercepted_refused_total",
        &[
            &format!("listener=\"{listener}\""),
            &format!("reason=\"{reason}\""),
        ],
    )
}

#[test]
fn a_connection_straight_to_the_outbound_listener_is_refused_as_not_redirected() {
    let proxy = Proxy::start_toml(
        r#"
[[listeners]]
name = "out-direct"
listen = "127.0.0.1:0"
mode = "outbound"
detect_timeout = "200ms"
"#,
    );
    let mut conn = RawConn::connect(proxy.addr("out-direct"));
    let _ = conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(conn.wait_closed(DEADLINE), "closed at once");
    assert!(
        wait_until(DEADLINE, || refused(&proxy, "out-direct", "not_redirected")
            >= 1.0),
        "counted"
    );
    proxy.shutdown();
}

#[test]
fn plaintext_straight_to_the_inbound_listener_is_a_failed_tunnel() {
    let proxy = Proxy::start_toml(
        r#"
[[listeners]]
name = "in-plain"
listen = "127.0.0.1:0"
mode = "inbound"
"#,
    );
    let mut conn = RawConn::connect(proxy.addr("in-plain"));
    let _ = conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(conn.wait_closed(DEADLINE), "closed, nothing forwarded");
    assert!(
        wait_until(DEADLINE, || refused(&proxy, "in-plain", "tunnel_handshake")
            >= 1.0),
        "counted as a failed tunnel"
    );
    proxy.shutdown();
}

#[test]
fn route_allow_refuses_clients_without_an_allowed_identity() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let toml = format!(
        r#"
[[listeners]]
name = "allow-http"
listen = "127.0.0.1:0"

[[routes]]
name = "guarded"
match = {{ path_prefix = "/guarded" }}
allow = ["spiffe://local/web"]
cluster = "app"

[[routes]]
name = "open"
cluster = "app"

[clusters.app]
endpoints = ["{}"]
"#,
        backend.addr()
    );
    let proxy = Proxy::start_toml(&toml);
    let addr = proxy.addr("allow-http");
    let refused = raw_request(addr, b"GET /guarded HTTP/1.1\r\nhost: a\r\n\r\n");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body_text(), "forbidden\n");
    assert_eq!(
        backend.request_count(),
        0,
        "a refused request reaches nothing"
    );
    let open = raw_request(addr, b"GET /open HTTP/1.1\r\nhost: a\r\n\r\n");
    assert_eq!(open.status, 200);
    proxy.shutdown();
}

/// A mesh CA with sidecar identities `spiffe://local/{name}` for each of `names`.
struct Mesh {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    pairs: Vec<(PathBuf, PathBuf)>,
}

impl Mesh {
    fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new(dir.path(), "mesh");
        let pairs = names
            .iter()
            .map(|name| {
                let leaf = Leaf::named(name).uri(&format!("spiffe://local/{name}"));
                ca.issue(name, &leaf)
            })
            .collect();
        Self {
            ca: ca.cert_path.clone(),
            _dir: dir,
            pairs,
        }
    }

    fn identity(&self, i: usize) -> IdentityConfig {
        IdentityConfig {
            cert: self.pairs[i].0.clone(),
            key: self.pairs[i].1.clone(),
            ca: self.ca.clone(),
        }
    }

    /// The `[identity]` section for identity `i`.
    fn section(&self, i: usize) -> String {
        let show = |p: &Path| p.display().to_string();
        format!(
            "[identity]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            show(&self.pairs[i].0),
            show(&self.pairs[i].1),
            show(&self.ca)
        )
    }
}

/// Opens our mTLS tunnel as identity `client` to the inbound listener at `inbound` (whose
/// sidecar is `spiffe://local/b`), for workload port `port`.
async fn tunnel_to(
    mesh: &Mesh,
    client: usize,
    inbound: SocketAddr,
    port: u16,
    protocol: TunnelProtocol,
) -> Box<switchyard::tls::unbuffered::ClientStream> {
    let tls = TunnelTls::load(&mesh.identity(client)).expect("client identity");
    let tcp = TcpStream::connect(inbound).await.expect("connect");
    let header = TunnelHeader { port, protocol };
    tunnel::connect(&tls, tcp, "spiffe://local/b", header, DEADLINE)
        .await
        .expect("tunnel handshake")
}

/// Writes `request` on `stream` and reads until the server closes.
async fn exchange<S>(stream: &mut S, request: &[u8]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// An inbound sidecar `b` with app `backend` on a declared port (only `a` allowed, the
/// identity passed in `x-client-identity`), and opaque forwarding to undeclared ports.
fn inbound_sidecar(mesh: &Mesh, listener: &str, backend: &Backend) -> TestProxy {
    let toml = format!(
        r#"
{identity}
[[listeners]]
name = "{listener}"
listen = "127.0.0.1:0"
mode = "inbound"
identity_header = "x-client-identity"
ports = {{ "{port}" = {{ mtls = "strict", allow = ["spiffe://local/a"] }} }}
"#,
        identity = mesh.section(1),
        port = backend.addr().port(),
    );
    Proxy::start_toml(&toml)
}

#[tokio::test]
async fn http_through_the_tunnel_reaches_the_app_with_the_peer_identity_only_when_allowed() {
    let mesh = Mesh::new(&["a", "b", "c"]);
    let backend = Backend::start(Behavior::fixed(200, "app"));
    let port = backend.addr().port();
    let proxy = inbound_sidecar(&mesh, "in-http", &backend);
    let inbound = proxy.addr("in-http");

    let mut stream = tunnel_to(&mesh, 0, inbound, port, TunnelProtocol::Detect).await;
    let request = b"GET /hello HTTP/1.1\r\nhost: app\r\nx-client-identity: forged\r\n\
x-forwarded-client-cert: forged\r\nconnection: close\r\n\r\n";
    let answer = exchange(&mut stream, request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("app"), "{answer}");
    let seen = backend.requests();
    let headers = &seen.last().expect("the app got the request").headers;
    assert_eq!(headers["x-client-identity"], "spiffe://local/a");
    assert!(
        !headers.contains_key("x-forwarded-client-cert"),
        "no identity header but the configured one: {headers:?}"
    );

    // `c` holds a valid mesh identity but is not in the port's `allow`.
    let mut stream = tunnel_to(&mesh, 2, inbound, port, TunnelProtocol::Http1).await;
    let answer = exchange(&mut stream, b"GET /hello HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(
        backend.request_count(),
        1,
        "the refused request reached nothing"
    );
    // Over h2 the refusal is our SETTINGS and a GOAWAY (REFUSED_STREAM), then the close.
    let mut stream = tunnel_to(&mesh, 2, inbound, port, TunnelProtocol::Detect).await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    stream.write_all(preface).await.expect("preface");
    let mut frames = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut frames)).await;
    assert!(frames.len() >= 26, "{frames:?}");
    assert_eq!(
        (frames[3], frames[12]),
        (4, 7),
        "SETTINGS then GOAWAY: {frames:?}"
    );
    assert_eq!(&frames[22..26], &[0, 0, 0, 7], "REFUSED_STREAM");
    assert_eq!(backend.request_count(), 1);
    assert!(refused(&proxy, "in-http", "not_allowed") >= 1.0);

    let admin = proxy.admin_url("/upstreams");
    let tallied = wait_until_check(DEADLINE, || {
        let admin = admin.clone();
        async move {
            let Ok(reply) = crate::support::http_client::get(&admin).await else {
                return false;
            };
            let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let by_identity = &json["intercepted"]["by_peer_identity"];
            by_identity["spiffe://local/a"].as_u64() == Some(1)
                && json["intercepted"]["by_target"][format!("inbound:{port}")].as_u64() == Some(1)
                && json["intercepted"]["refused"]["not_allowed"].as_u64() == Some(2)
        }
    })
    .await;
    assert!(tallied, "/upstreams shows the intercepted connections");
    proxy.shutdown();
}

/// An echo server on loopback for one connection: echoes until the client ends its side,
/// then ends its own.
async fn echo_once() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (mut read, mut write) = stream.into_split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        let _ = write.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn opaque_bytes_through_the_tunnel_are_exact_over_10_mib_with_half_close() {
    let mesh = Mesh::new(&["a", "b"]);
    let backend = Backend::start(Behavior::fixed(200, "unused"));
    let proxy = inbound_sidecar(&mesh, "in-opaque", &backend);
    let echo = echo_once().await;

    let stream = tunnel_to(
        &mesh,
        0,
        proxy.addr("in-opaque"),
        echo.port(),
        TunnelProtocol::Opaque,
    )
    .await;
    let (mut read, mut write) = tokio::io::split(stream);
    const SIZE: usize = 10 * 1024 * 1024;
    let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("write");
        // Half-close: the echo sees EOF only through our shutdown, and answers after it.
        write.shutdown().await.expect("shutdown");
        write
    });
    let mut back = Vec::with_capacity(SIZE);
    tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut back))
        .await
        .expect("echoed within a minute")
        .expect("read");
    drop(writer.await);
    assert_eq!(back.len(), SIZE);
    assert!(back == payload, "byte-exact");
    let bytes = |way: &str| {
        sum(
            &scrape(proxy.admin_addr()),
            "switchyard_opaque_bytes_total",
            &["listener=\"in-opaque\"", &format!("way=\"{way}\"")],
        )
    };
    assert!(
        wait_until(DEADLINE, || bytes("sent") >= SIZE as f64
            && bytes("received") >= SIZE as f64),
        "bytes counted both ways"
    );
    proxy.shutdown();
}
