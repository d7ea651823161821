//! Tunnel announcements over a real mesh: two in-process members on 127.0.0.1 (real UDP
//! sockets, sealed datagrams), each with `[identity]`, see each other's `TunnelAd` in their
//! meshed table (`Shared::meshed`) and in `/mesh/members`, and a member that leaves drops out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard::mesh::MeshHandle;
use switchyard::state::{Shared, TunnelPeer};
use switchyard::tls::certs_cli::{self, IssueOptions};

use crate::support::{wait_until_async, DEADLINE};

const KEY: &str = "mesh tunnel test key, thirty-two bytes or more\n";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Config text for member `name` (identity `spiffe://local/NAME`, leaf issued here), joining
/// through `seed`.
fn config(dir: &Path, name: &str, seed: Option<SocketAddr>) -> switchyard::config::Config {
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
    let seeds = seed.map_or(String::new(), |s| format!("seeds = [\"{s}\"]\n"));
    let text = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n\n\
         [identity]\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\nca = \"ca/ca.pem\"\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"mesh.key\"\n{seeds}"
    );
    switchyard::config::parse(&text, &dir.join(format!("{name}.toml"))).expect("config")
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
