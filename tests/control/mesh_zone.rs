//! Zones over the mesh: B (zone a) and C (zone b) advertise `orders`, each in front of its own
//! backend; A (zone a) discovers `orders` through the mesh with `locality = "prefer_local"`.
//! The discovered endpoints carry their announcing member's zone, and A's requests stay with
//! B's backend.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::wait_until_check;

/// A proxy in `zone` whose cluster `orders` is `cluster`, in the mesh of `key` via `seeds`,
/// advertising `advertise` (TOML, may be empty).
fn proxy(zone: &str, key: &str, seeds: &[SocketAddr], cluster: &str, advertise: &str) -> TestProxy {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    Proxy::start_toml(&format!(
        "[runtime]\nzone = \"{zone}\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"orders\"\n\n\
         [clusters.orders]\n{cluster}\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nseeds = [{}]\nsecret_file = \"{key}\"\n{advertise}\n",
        seeds.join(", ")
    ))
}

/// `(address, zone)` of each endpoint of `orders` in A's `/upstreams`.
async fn zones(client: &HttpClient, admin: &str) -> Vec<(String, Option<String>)> {
    let Ok(reply) = client.get(admin).await else {
        return Vec::new();
    };
    let view: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    view["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "orders"))
        .and_then(|c| c["endpoints"].as_array())
        .map(|e| {
            e.iter()
                .map(|e| {
                    let address = e["address"].as_str().unwrap_or_default().to_owned();
                    (address, e["zone"].as_str().map(str::to_owned))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_endpoints_take_their_members_zone_and_prefer_local_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("mesh.key");
    std::fs::write(&key, "zone test key, at least thirty-two bytes long\n").expect("key");
    let key = key.to_string_lossy().into_owned();
    let near = Backend::start_named("near", Behavior::fixed(200, "near"));
    let far = Backend::start_named("far", Behavior::fixed(200, "far"));
    let static_cluster = "endpoints = [\"127.0.0.1:9\"]";

    let a = proxy(
        "a",
        &key,
        &[],
        "discovery = { mesh = \"orders\" }\nlocality = \"prefer_local\"",
        "",
    );
    let seed = [a.mesh_addr()];
    let advertise =
        |addr: SocketAddr| format!("advertise = {{ service = \"orders\", address = \"{addr}\" }}");
    let _b = proxy("a", &key, &seed, static_cluster, &advertise(near.addr()));
    let _c = proxy("b", &key, &seed, static_cluster, &advertise(far.addr()));

    let client = HttpClient::http1();
    let admin = a.admin_url("/upstreams");
    let expected = {
        let mut e = vec![
            (near.addr().to_string(), Some("a".to_owned())),
            (far.addr().to_string(), Some("b".to_owned())),
        ];
        e.sort();
        e
    };
    let seen = wait_until_check(Duration::from_secs(10), || async {
        let mut z = zones(&client, &admin).await;
        z.sort();
        z == expected
    })
    .await;
    assert!(
        seen,
        "A's endpoints and zones: {:?}",
        zones(&client, &admin).await
    );

    let url = a.url("public", "/");
    for _ in 0..100 {
        let reply = client.get(&url).await.expect("reply");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(near.request_count(), 100, "every request stays in zone a");
    assert_eq!(far.request_count(), 0);
}
