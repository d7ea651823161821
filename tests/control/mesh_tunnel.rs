//! Tunnel announcements over a real mesh: two in-process members on 127.0.0.1 (real UDP
//! sockets, sealed datagrams), each with `[identity]`, see each other's `TunnelAd` in their
//! meshed table (`Shared::meshed`) and in `/mesh/members`, and a member that leaves drops out.
//! Two in-process proxies: a reload that moves (then removes) one's inbound listener is
//! announced to the other.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard::mesh::MeshHandle;
use switchyard::state::{Shared, TunnelPeer};
use switchyard::tls::certs_cli::{self, IssueOptions};

use crate::support::reload::{post_reload, start_from, stop, write_atomic};
use crate::support::{http_client, wait_until_async, wait_until_check, DEADLINE};

const KEY: &str = "mesh tunnel test key, thirty-two bytes or more\n";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Config text for member `name` (identity `spiffe://local/NAME`, leaf issued here), joining
/// through `seed`.
fn config(dir: &Path, name: &str, seed: Option<SocketAddr>) -> switchyard::config::Config {
    issue(dir, name);
    let seeds = seed.map_or(String::new(), |s| format!("seeds = [\"{s}\"]\n"));
    let text = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n\n\
         [identity]\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\nca = \"ca/ca.pem\"\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"mesh.key\"\n{seeds}"
    );
    switchyard::config::parse(&text, &dir.join(format!("{name}.toml"))).expect("config")
}

/// Issues member `name`'s leaf (identity `spiffe://local/NAME`) into `dir`, from `dir/ca`.
fn issue(dir: &Path, name: &str) {
    certs_cli::issue(&IssueOptions {
        ca_dir: dir.join("ca"),
        name: name.to_owned(),
        spiffe: Some(format!("spiffe://local/{name}")),
        dns: Vec::new(),
        ips: Vec::new(),
        out: Some(dir.to_owned()),
        days: 1,
    })
    .expect("leaf");
}

/// Starts a member on the test's runtime; `inbound_port` is what it announces.
fn member(
    dir: &Path,
    name: &str,
    seed: Option<SocketAddr>,
    inbound_port: u16,
) -> (Arc<Shared>, MeshHandle) {
    let config = config(dir, name, seed);
    let mesh = config.mesh.clone().expect("[mesh]");
    let ad = switchyard::mesh::tunnel::tunnel_ad(&config, Some(inbound_port));
    assert!(ad.is_some(), "{name} announces a tunnel");
    let shared = Arc::new(Shared::new(config));
    let handle = switchyard::mesh::start(&mesh, ad, &shared, &tokio::runtime::Handle::current())
        .expect("mesh start");
    (shared, handle)
}

fn peer(shared: &Shared) -> Option<TunnelPeer> {
    shared.meshed().get(LOOPBACK).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_others_tunnel_and_forget_a_leaver() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs_cli::init(&dir.path().join("ca"), 1).expect("CA");
    std::fs::write(dir.path().join("mesh.key"), KEY).expect("key");
    let (a, mesh_a) = member(dir.path(), "tunnel-a", None, 15101);
    let (b, mesh_b) = member(dir.path(), "tunnel-b", Some(mesh_a.local_addr()), 15102);

    let sees = |shared: &Shared, identity: &str, port: u16| {
        peer(shared).is_some_and(|p| &*p.identity == identity && p.port == port)
    };
    assert!(
        wait_until_async(DEADLINE, || sees(&a, "spiffe://local/tunnel-b", 15102)
            && sees(&b, "spiffe://local/tunnel-a", 15101))
        .await,
        "a sees {:?}, b sees {:?}",
        peer(&a),
        peer(&b)
    );
    assert_eq!(a.meshed().len(), 1, "our own tunnel is not in our table");

    let members = mesh_a.view().members_json();
    let tunnels: Vec<(String, u64)> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| {
            let t = &m["tunnel"];
            Some((t["identity"].as_str()?.to_owned(), t["port"].as_u64()?))
        })
        .collect();
    assert_eq!(
        tunnels.len(),
        2,
        "both announcements in /mesh/members: {members}"
    );
    assert!(tunnels.contains(&("spiffe://local/tunnel-b".to_owned(), 15102)));

    // b leaves gracefully: a dials its IP directly again at once.
    tokio::task::spawn_blocking(move || mesh_b.leave(Duration::from_secs(2)))
        .await
        .expect("leave");
    assert!(
        wait_until_async(DEADLINE, || a.meshed().is_empty()).await,
        "a still sees {:?}",
        peer(&a)
    );
}

/// A proxy member's config text: `[identity]` as [`issue`] made it, `[mesh]` joining through
/// `seed`, and an inbound listener on `inbound` (none when `None`).
fn proxy_text(name: &str, inbound: Option<&str>, seed: Option<SocketAddr>) -> String {
    let seeds = seed.map_or(String::new(), |s| format!("seeds = [\"{s}\"]\n"));
    let listener = inbound.map_or(String::new(), |listen| {
        format!("[[listeners]]\nname = \"inbound\"\nlisten = \"{listen}\"\nmode = \"inbound\"\n\n")
    });
    format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n{listener}\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n\n\
         [identity]\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\nca = \"ca/ca.pem\"\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"mesh.key\"\n{seeds}"
    )
}

/// The member at mesh address `member` in `admin`'s `/mesh/members`: `None` while it is not
/// listed, else its announced tunnel port (`Some(None)`: listed, no tunnel).
async fn tunnel_port(admin: SocketAddr, member: SocketAddr) -> Option<Option<u64>> {
    let response = http_client::get(&format!("http://{admin}/mesh/members"))
        .await
        .ok()?;
    let members: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    let entry = members["members"]
        .as_array()?
        .iter()
        .find(|m| m["address"].as_str() == Some(&member.to_string()))?;
    Some(entry["tunnel"]["port"].as_u64())
}

/// Reloads `path` with `text` through `admin`'s `POST /reload`; the reload must succeed.
async fn reload_with(admin: SocketAddr, path: &Path, text: &str) {
    write_atomic(path, text);
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "reload: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_or_removes_the_inbound_listener_is_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs_cli::init(&dir.path().join("ca"), 1).expect("CA");
    std::fs::write(dir.path().join("mesh.key"), KEY).expect("key");
    issue(dir.path(), "proxy-a");
    issue(dir.path(), "proxy-b");
    let a_path = dir.path().join("proxy-a.toml");
    std::fs::write(&a_path, proxy_text("proxy-a", Some("127.0.0.1:0"), None)).expect("write a");
    let a = start_from(&a_path);
    let seed = a.mesh().expect("a's mesh").local_addr();
    let b_path = dir.path().join("proxy-b.toml");
    let b_text = |inbound| proxy_text("proxy-b", inbound, Some(seed));
    std::fs::write(&b_path, b_text(Some("127.0.0.1:0"))).expect("write b");
    let b = start_from(&b_path);
    let b_mesh = b.mesh().expect("b's mesh").local_addr();
    let inbound = |b: &switchyard::runtime::ProxyHandle| {
        u64::from(b.listener_addr("inbound").map_or(0, |addr| addr.port()))
    };
    let first = inbound(&b);
    assert_ne!(first, 0, "b's inbound listener is bound");
    assert!(
        wait_until_check(DEADLINE, || async {
            tunnel_port(a.admin_addr(), b_mesh).await == Some(Some(first))
        })
        .await,
        "a sees b's tunnel as {:?}, not port {first}",
        tunnel_port(a.admin_addr(), b_mesh).await
    );

    // Moved to a port free now (and so not the first one, which b still holds).
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let moved_to = free.local_addr().expect("probe addr").to_string();
    drop(free);
    reload_with(b.admin_addr(), &b_path, &b_text(Some(&moved_to))).await;
    let moved = inbound(&b);
    assert_ne!(moved, first, "the reload moved b's inbound listener");
    assert!(
        wait_until_check(DEADLINE, || async {
            tunnel_port(a.admin_addr(), b_mesh).await == Some(Some(moved))
        })
        .await,
        "a sees b's tunnel as {:?}, not the new port {moved}",
        tunnel_port(a.admin_addr(), b_mesh).await
    );

    // Removed: b announces no tunnel, so a dials b's IP directly again.
    reload_with(b.admin_addr(), &b_path, &b_text(None)).await;
    assert_eq!(b.listener_addr("inbound"), None);
    assert!(
        wait_until_check(DEADLINE, || async {
            tunnel_port(a.admin_addr(), b_mesh).await == Some(None)
        })
        .await,
        "a sees b's tunnel as {:?}, not none",
        tunnel_port(a.admin_addr(), b_mesh).await
    );
    stop(b);
    stop(a);
}
