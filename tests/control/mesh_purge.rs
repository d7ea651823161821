//! A cache purge on one member runs on its peers: `POST /cache/purge` on A empties B's cache.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::backend::{Action, Backend, Behavior};
use crate::support::http_client::{self, HttpClient};
use crate::support::launcher::{Proxy, TestProxy};
use crate::support::wait_until_async;
use crate::support::wait_until_check;
use bytes::Bytes;

fn member(key: &str, seeds: &[SocketAddr], origin: SocketAddr) -> TestProxy {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"origin\"\ncache = true\n\n\
         [clusters.origin]\nendpoints = [\"{origin}\"]\n\n\
         [cache]\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nseeds = [{}]\nsecret_file = \"{key}\"\n",
        seeds.join(", ")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_member_empties_its_peers_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("mesh.key");
    std::fs::write(&key, "purge test key, at least thirty-two bytes\n").expect("key");
    let key = key.to_string_lossy().into_owned();
    let origin = Backend::start(Behavior::script(|_, _| Action::Respond {
        status: 200,
        headers: vec![("cache-control".to_owned(), "max-age=600".to_owned())],
        body: Bytes::from_static(b"item"),
    }));
    let a = member(&key, &[], origin.addr());
    let a_mesh = a.handle().mesh().expect("mesh").local_addr();
    let b = member(&key, &[a_mesh], origin.addr());
    let b_mesh = b.handle().mesh().expect("mesh").local_addr();
    let joined = wait_until_async(Duration::from_secs(10), || {
        a.handle()
            .mesh()
            .is_some_and(|m| m.view().status(b_mesh).is_some_and(|s| s.is_live()))
    })
    .await;
    assert!(joined, "B joined A");

    let client = HttpClient::http1();
    let url = b.url("public", "/item");
    for _ in 0..3 {
        let resp = client.get(&url).await.expect("GET through B");
        assert_eq!(resp.status, 200);
    }
    assert_eq!(origin.request_count(), 1, "B serves /item from its cache");

    let purge = http_client::post(&a.admin_url("/cache/purge?prefix=/item"), "")
        .await
        .expect("POST /cache/purge on A");
    assert_eq!(purge.status, 200, "{}", purge.text());
    let start = Instant::now();
    let purged = wait_until_check(Duration::from_secs(10), || async {
        let resp = client.get(&url).await.expect("GET through B");
        assert_eq!(resp.status, 200);
        origin.request_count() >= 2
    })
    .await;
    assert!(purged, "B's cached /item should be purged by A's purge");
    println!("purge on A emptied B's cache after {:?}", start.elapsed());
}
