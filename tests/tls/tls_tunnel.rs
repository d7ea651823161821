//! The mTLS tunnel between sidecars over 127.0.0.1: a proxy with `[identity]` whose cluster
//! endpoint's IP the mesh table lists connects through the tunnel (the peer's inbound side here
//! is this test's own `tunnel::accept` loop in front of the backend); a peer that is not the
//! announced identity is a 502 with nothing sent; pooled connections are re-checked when the
//! table changes (not reused across a change of route); `upstream::dial` tunnels or goes
//! direct by the table.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::config::IdentityConfig;
use switchyard::state::{MeshedPeers, TunnelPeer};
use switchyard::tls::tunnel::{self, TunnelHeader, TunnelProtocol, TunnelTls};
use switchyard::upstream::dial::{dial, Dialed};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client;
use crate::support::launcher::Proxy;
use crate::support::metrics;
use crate::support::tls::{Ca, Leaf, TlsBackend};
use crate::support::{wait_until_async, DEADLINE};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LIMIT: Duration = Duration::from_secs(5);
/// Connections one test's inbound side serves at most (a bound on its accept loop).
const MAX_TUNNELS: usize = 16;

/// `[identity]` files for `name` (URI SAN `spiffe://local/NAME`) under `ca`. Each test uses
/// names of its own: the tunnel counter is process-wide, labelled by identity.
fn identity(ca: &Ca, name: &str) -> IdentityConfig {
    let (cert, key) = ca.issue(
        name,
        &Leaf::named(&format!("{name}.test")).uri(&format!("spiffe://local/{name}")),
    );
    IdentityConfig {
        cert,
        key,
        ca: ca.cert_path.clone(),
    }
}

/// What the inbound side saw of each tunnel: the client's identity and the header.
type Seen = Arc<Mutex<Vec<(String, TunnelHeader)>>>;

/// A peer sidecar's inbound side, reduced to the tunnel: accepts with `tls`, then copies the
/// bytes to `127.0.0.1:header.port`. Returns its port and what it saw.
async fn inbound(tls: TunnelTls) -> (u16, Seen) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let tls = Arc::new(tls);
    tokio::spawn(async move {
        for _ in 0..MAX_TUNNELS {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tls = Arc::clone(&tls);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let Ok((mut tunnel, peer, header)) = tunnel::accept(&tls, stream, LIMIT).await
                else {
                    return;
                };
                log.lock().expect("seen").push((peer.id, header));
                if let Ok(mut app) = TcpStream::connect((LOOPBACK, header.port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut tunnel, &mut app).await;
                }
            });
        }
    });
    (port, seen)
}

fn config(backend: SocketAddr, me: &IdentityConfig, cluster: &str, protocol: &str) -> String {
    config_with(backend, me, cluster, protocol, "")
}

/// [`config`] with `extra` lines in the cluster's table.
fn config_with(
    backend: SocketAddr,
    me: &IdentityConfig,
    cluster: &str,
    protocol: &str,
    extra: &str,
) -> String {
    format!(
        r#"
# One worker: its pool is the only one, so a reused tunnel shows as one handshake.
[runtime]
workers = 1

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
match = {{ path_prefix = "/" }}
cluster = "{cluster}"

[clusters.{cluster}]
protocol = "{protocol}"
endpoints = ["{backend}"]
connect_timeout = "2s"
{extra}

[identity]
cert = "{}"
key = "{}"
ca = "{}"
"#,
        me.cert.display(),
        me.key.display(),
        me.ca.display()
    )
}

fn meshed(identity: &str, port: u16) -> MeshedPeers {
    MeshedPeers::new([(
        LOOPBACK,
        TunnelPeer {
            identity: Arc::from(identity),
            port,
        },
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_endpoint_is_reached_through_the_peer_sidecars_tunnel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "tunnel-mesh");
    let a = identity(&ca, "pool-a");
    let b = TunnelTls::load(&identity(&ca, "pool-b")).expect("b");
    let backend = Backend::start(Behavior::fixed(200, "behind b"));
    let (port, seen) = inbound(b).await;

    let proxy = Proxy::start_toml(&config(backend.addr(), &a, "tunnelled", "http1"));
    assert_eq!(
        proxy
            .handle()
            .shared()
            .snapshot()
            .tunnel_tls()
            .map(|t| t.identity().to_owned()),
        Some("spiffe://local/pool-a".to_owned())
    );
    proxy
        .handle()
        .shared()
        .publish_meshed(meshed("spiffe://local/pool-b", port));
    let series = [
        "direction=\"client\"",
        "peer_identity=\"spiffe://local/pool-b\"",
    ];
    let before = metrics::sum(
        &metrics::scrape(proxy.admin_addr()),
        "switchyard_tunnel_connections_total",
        &series,
    );

    let got = http_client::get(&proxy.url("public", "/x"))
        .await
        .expect("response");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "behind b");
    assert_eq!(backend.request_count(), 1);
    let tunnels = seen.lock().expect("seen").clone();
    assert_eq!(
        tunnels,
        vec![(
            "spiffe://local/pool-a".to_owned(),
            TunnelHeader {
                port: backend.addr().port(),
                protocol: TunnelProtocol::Http1,
            }
        )],
        "one tunnel, from a, for the backend's port"
    );
    let after = metrics::sum(
        &metrics::scrape(proxy.admin_addr()),
        "switchyard_tunnel_connections_total",
        &series,
    );
    assert_eq!(after - before, 1.0, "one client tunnel to b");

    // The tunnel is a pooled connection like any other: the next request reuses it.
    let got = http_client::get(&proxy.url("public", "/y"))
        .await
        .expect("response");
    assert_eq!(got.status, 200);
    assert_eq!(backend.request_count(), 2);
    assert_eq!(seen.lock().expect("seen").len(), 1, "no second handshake");
}

/// Pooled connections follow the meshed table (`upstream::dial`): a connection pooled while
/// the endpoint was direct is not reused once its IP is meshed (the next request goes through
/// the tunnel), and a tunnel is not reused once the peer leaves the table (the next request
/// goes direct). `protocol`: the cluster's; `name`: this run's identities' prefix.
async fn pooled_connections_follow_the_table(protocol: &str, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), &format!("{name}-ca"));
    let a = identity(&ca, &format!("{name}-a"));
    let b_name = format!("{name}-b");
    let b = TunnelTls::load(&identity(&ca, &b_name)).expect("b");
    let backend = Backend::start(Behavior::fixed(200, "pooled"));
    let (port, seen) = inbound(b).await;
    let proxy = Proxy::start_toml(&config(backend.addr(), &a, name, protocol));
    let get = |path: &'static str| {
        let url = proxy.url("public", path);
        async move {
            let got = http_client::get(&url).await.expect("response");
            assert_eq!(got.status, 200, "{path}");
            assert_eq!(got.text(), "pooled", "{path}");
        }
    };

    // Direct, and pooled: the second request rides the first one's connection.
    get("/plain-1").await;
    get("/plain-2").await;
    assert_eq!(backend.connections(), 1, "one pooled plain connection");
    assert!(
        seen.lock().expect("seen").is_empty(),
        "nothing tunnelled yet"
    );

    // The endpoint's IP becomes meshed: the pooled plaintext connection is not used again.
    let table = meshed(&format!("spiffe://local/{b_name}"), port);
    proxy.handle().shared().publish_meshed(table.clone());
    get("/meshed-1").await;
    assert_eq!(
        seen.lock().expect("seen").len(),
        1,
        "the request after meshing went through the tunnel"
    );
    assert_eq!(backend.connections(), 2, "the tunnel's leg to the backend");
    // The same table again is no change: the tunnel stays pooled.
    proxy.handle().shared().publish_meshed(table);
    get("/meshed-2").await;
    assert_eq!(seen.lock().expect("seen").len(), 1, "the tunnel was reused");
    assert_eq!(backend.connections(), 2);

    // The peer leaves the mesh: the pooled tunnel is not used again, the request goes direct.
    proxy
        .handle()
        .shared()
        .publish_meshed(MeshedPeers::default());
    get("/left").await;
    assert_eq!(seen.lock().expect("seen").len(), 1, "no new tunnel");
    assert_eq!(
        backend.connections(),
        3,
        "a new direct connection, not the old tunnel"
    );
    assert_eq!(backend.request_count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_http1_connections_follow_the_meshed_table() {
    pooled_connections_follow_the_table("http1", "follow-h1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_h2_connections_follow_the_meshed_table() {
    pooled_connections_follow_the_table("h2", "follow-h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_cluster_speaks_h2_inside_the_tunnel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "tunnel-h2");
    let a = identity(&ca, "h2-a");
    let b = TunnelTls::load(&identity(&ca, "h2-b")).expect("b");
    let backend = Backend::start(Behavior::fixed(200, "h2 behind b"));
    let (port, seen) = inbound(b).await;
    let proxy = Proxy::start_toml(&config(backend.addr(), &a, "tunnelled-h2", "h2"));
    proxy
        .handle()
        .shared()
        .publish_meshed(meshed("spiffe://local/h2-b", port));
    for path in ["/1", "/2"] {
        let got = http_client::get(&proxy.url("public", path))
            .await
            .expect("response");
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "h2 behind b");
    }
    assert_eq!(
        seen.lock().expect("seen").clone(),
        vec![(
            "spiffe://local/h2-a".to_owned(),
            TunnelHeader {
                port: backend.addr().port(),
                protocol: TunnelProtocol::Http2,
            }
        )],
        "one multiplexed tunnel, hinted h2"
    );
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_of_a_meshed_endpoint_go_through_the_tunnel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "tunnel-probe");
    let a = identity(&ca, "probe-a");
    let b = TunnelTls::load(&identity(&ca, "probe-b")).expect("b");
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let (port, seen) = inbound(b).await;
    let proxy = Proxy::start_toml(&config_with(
        backend.addr(),
        &a,
        "probed",
        "http1",
        "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\" }",
    ));
    proxy
        .handle()
        .shared()
        .publish_meshed(meshed("spiffe://local/probe-b", port));
    assert!(
        wait_until_async(DEADLINE, || !seen.lock().expect("seen").is_empty()).await,
        "no probe came through the tunnel"
    );
    let (identity, header) = seen.lock().expect("seen")[0].clone();
    assert_eq!(identity, "spiffe://local/probe-a");
    assert_eq!(
        header,
        TunnelHeader {
            port: backend.addr().port(),
            protocol: TunnelProtocol::Http1,
        }
    );
    assert!(
        wait_until_async(DEADLINE, || backend
            .requests()
            .iter()
            .any(|r| r.uri.path() == "/healthz"))
        .await,
        "the probe reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_its_own_tls_talks_to_the_endpoint_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "tunnel-own-tls");
    let a = identity(&ca, "own-a");
    let b = TunnelTls::load(&identity(&ca, "own-b")).expect("b");
    let pair = ca.issue("backend", &Leaf::named("backend.test"));
    let backend = TlsBackend::start(&pair, None);
    let (port, seen) = inbound(b).await;
    let tls = format!(
        "tls = {{ sni = \"backend.test\", ca = \"{}\" }}",
        ca.cert_path.display()
    );
    let proxy = Proxy::start_toml(&config_with(backend.addr, &a, "own-tls", "http1", &tls));
    proxy
        .handle()
        .shared()
        .publish_meshed(meshed("spiffe://local/own-b", port));
    let got = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("response");
    assert_eq!(got.status, 200);
    assert!(seen.lock().expect("seen").is_empty(), "not tunnelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_the_announced_identity_gets_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "tunnel-impostor");
    let a = identity(&ca, "impostor-a");
    let b = TunnelTls::load(&identity(&ca, "impostor-b")).expect("b");
    let backend = Backend::start(Behavior::fixed(200, "behind b"));
    let (port, seen) = inbound(b).await;

    let proxy = Proxy::start_toml(&config(backend.addr(), &a, "impostor", "http1"));
    // The mesh says the sidecar on this IP is `orders`; the one answering is `b`.
    proxy
        .handle()
        .shared()
        .publish_meshed(meshed("spiffe://local/orders", port));
    let got = http_client::get(&proxy.url("public", "/"))
        .await
        .expect("response");
    assert_eq!(got.status, 502);
    assert_eq!(backend.request_count(), 0, "nothing reached the backend");
    assert!(seen.lock().expect("seen").is_empty(), "no header was sent");
}

#[tokio::test]
async fn dial_tunnels_to_meshed_ips_and_goes_direct_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "tunnel-dial");
    let a = Arc::new(TunnelTls::load(&identity(&ca, "dial-a")).expect("a"));
    let b = TunnelTls::load(&identity(&ca, "dial-b")).expect("b");
    // An echo server: the workload behind b.
    let echo = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let dst = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut stream, _)) = echo.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let (port, seen) = inbound(b).await;

    async fn round_trip(stream: &mut Dialed) -> Vec<u8> {
        stream.write_all(b"ping").await.expect("write");
        stream.flush().await.expect("flush");
        let mut buf = vec![0u8; 4];
        stream.read_exact(&mut buf).await.expect("read");
        buf
    }

    let table = meshed("spiffe://local/dial-b", port);
    let (mut stream, peer) = dial(&table, Some(&a), dst, TunnelProtocol::Opaque, LIMIT)
        .await
        .expect("tunnel");
    assert!(matches!(stream, Dialed::Tunnel(_)));
    assert_eq!(peer.as_deref(), Some("spiffe://local/dial-b"));
    assert_eq!(round_trip(&mut stream).await, b"ping");
    assert_eq!(
        seen.lock().expect("seen").clone(),
        vec![(
            "spiffe://local/dial-a".to_owned(),
            TunnelHeader {
                port: dst.port(),
                protocol: TunnelProtocol::Opaque
            }
        )]
    );

    // Not meshed, or no identity of ours: straight to the destination.
    for (table, tls) in [(MeshedPeers::default(), Some(&a)), (table, None)] {
        let (mut stream, peer) = dial(&table, tls, dst, TunnelProtocol::Opaque, LIMIT)
            .await
            .expect("direct");
        assert!(matches!(stream, Dialed::Plain(_)));
        assert_eq!(peer, None);
        assert_eq!(round_trip(&mut stream).await, b"ping");
    }
    assert_eq!(seen.lock().expect("seen").len(), 1, "no other tunnel");
}
