//! Ejection reports over the mesh: B and C eject two failing endpoints on their own evidence; A,
//! which never sent them a request, ejects by quorum — but only as many as its `max_percent`
//! allows. Each cluster also has a sound endpoint: ejection never takes a cluster's last
//! endpoint in service, so without it B and C could eject only one of the two.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::wait_until_async;
use switchyard::endpoint::Trigger;
use switchyard::wire::time::epoch_ms;

/// A proxy whose cluster `api` has the two failing `endpoints` and the `sound` one.
fn proxy(
    key: &str,
    seeds: &[SocketAddr],
    endpoints: [SocketAddr; 2],
    sound: SocketAddr,
    max_percent: u32,
) -> TestProxy {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"api\"\n\n\
         [clusters.api]\nbalance = \"round_robin\"\n\
         endpoints = [\"{}\", \"{}\", \"{sound}\"]\n\
         outlier_detection = {{ consecutive_5xx = 1, base_time = \"60s\", max_percent = {max_percent} }}\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nseeds = [{}]\nsecret_file = \"{key}\"\n\
         eject_quorum = 2\neject_window = \"30s\"\n",
        endpoints[0],
        endpoints[1],
        seeds.join(", ")
    ))
}

/// (ejected, ejected by a mesh quorum) for each endpoint of cluster `api`.
fn ejections(p: &TestProxy, endpoints: [SocketAddr; 2]) -> Vec<(bool, bool)> {
    let now = epoch_ms(SystemTime::now());
    endpoints
        .iter()
        .map(|&a| {
            p.handle()
                .shared()
                .registry()
                .get("api", a)
                .map_or((false, false), |e| {
                    let out = e.is_ejected(now);
                    (
                        out,
                        out && e.health().trigger() == Some(Trigger::MeshQuorum),
                    )
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_peers_ejects_within_max_percent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("mesh.key");
    std::fs::write(&key, "quorum test key, at least thirty-two bytes\n").expect("key");
    let key = key.to_string_lossy().into_owned();
    let bad1 = Backend::start(Behavior::fixed(503, "down"));
    let bad2 = Backend::start(Behavior::fixed(503, "down"));
    let sound = Backend::start(Behavior::fixed(200, "ok"));
    let endpoints = [bad1.addr(), bad2.addr()];

    // A holds the default max_percent of 50: of three endpoints, one may go.
    let a = proxy(&key, &[], endpoints, sound.addr(), 50);
    let seed = [a.mesh_addr()];
    // B and C may eject both failing ones (max_percent 100, the sound one stays in service):
    // their own evidence says both fail.
    let b = proxy(&key, &seed, endpoints, sound.addr(), 100);
    let c = proxy(&key, &seed, endpoints, sound.addr(), 100);
    let client = HttpClient::http1();
    for (i, peer) in [&b, &c].into_iter().enumerate() {
        let url = peer.url("public", "/");
        let mut both = false;
        for _ in 0..20 {
            // 503s are the point; a refused connection would only mean the proxy is not up.
            let _ = client.get(&url).await;
            if ejections(peer, endpoints).iter().all(|e| e.0) {
                both = true;
                break;
            }
            // The health task applies a failure after the response: on a loaded machine 20
            // back-to-back requests can all finish before it has. Bounded: 20 × 100 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(both, "the peer should eject both failing endpoints locally");
        if i == 0 {
            // One report is below the quorum of two, and A has no evidence of its own. Checked
            // before C fails anything: once C has, the quorum may reach A at any moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                ejections(&a, endpoints),
                [(false, false); 2],
                "one peer's report must not eject on A"
            );
        }
    }

    let quorum = wait_until_async(Duration::from_secs(10), || {
        ejections(&a, endpoints).iter().any(|e| e.1)
    })
    .await;
    assert!(quorum, "A should eject by the peers' quorum");
    // The health task applies reports one by one; give the second report its chance, then
    // check max_percent held.
    let settled = wait_until_async(Duration::from_secs(2), || {
        ejections(&a, endpoints).iter().all(|e| e.0)
    })
    .await;
    let state = ejections(&a, endpoints);
    assert!(
        !settled,
        "max_percent 50 must keep one of the two failing endpoints in: {state:?}"
    );
    assert_eq!(state.iter().filter(|e| e.1).count(), 1, "{state:?}");
    // A saw no traffic: whatever it ejected, it ejected on the peers' word.
    assert!(state.iter().all(|e| e.0 == e.1), "{state:?}");
}
