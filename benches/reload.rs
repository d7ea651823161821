//! Reload latency: from `POST /reload` to the first request served by a route that only the new
//! config has, with 10,000 routes and 1,000 clusters. A plain timing program (`harness =
//! false`), not criterion: each sample is a whole reload, seconds apart from the next, and the
//! figure wanted is the end-to-end wall time an operator sees.
//!
//! Run: `cargo bench --bench reload` (release build). Prints min / median / max over the
//! samples, and the worst latency a client saw on an existing route while the reloads ran.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const ROUTES: usize = 10_000;
const CLUSTERS: usize = 1_000;
const SAMPLES: usize = 10;

fn config(backend: SocketAddr, new_route: usize) -> String {
    let mut text = String::from(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n",
    );
    for i in 0..ROUTES {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nlistener = \"public\"\nmatch = {{ path_prefix = \"/r{i}/\" }}\ncluster = \"c{}\"\n\n",
            i % CLUSTERS
        ));
    }
    // The route under test: last, so every other route is compiled and tried before it.
    text.push_str(&format!(
        "[[routes]]\nname = \"new{new_route}\"\nlistener = \"public\"\nmatch = {{ path = \"/new{new_route}\" }}\ncluster = \"c0\"\n\n"
    ));
    for c in 0..CLUSTERS {
        text.push_str(&format!("[clusters.c{c}]\nendpoints = [\"{backend}\"]\n\n"));
    }
    text
}

/// One HTTP/1.1 request on a new connection; the status code, or 0 on any failure.
fn request(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    std::str::from_utf8(&response[..response.len().min(12)])
        .ok()
        .and_then(|s| s.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A backend that answers 200 to everything, on its own thread.
fn backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    addr
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    let backend = backend();
    std::fs::write(&path, config(backend, 0)).expect("write");
    let built = Instant::now();
    let loaded = switchyard::config::load(&path).expect("valid config");
    let handle = switchyard::runtime::start(loaded).expect("start");
    println!(
        "start with {ROUTES} routes / {CLUSTERS} clusters: {:?}",
        built.elapsed()
    );
    let (proxy, admin) = (
        handle.listener_addr("public").expect("listener"),
        handle.admin_addr(),
    );
    assert_eq!(request(proxy, "GET", "/r1/x"), 200, "proxy serves");

    // A client on an existing route all along: the request path must not notice the builds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut count = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && count < 1_000_000 {
                let t = Instant::now();
                assert_eq!(request(proxy, "GET", "/r7/x"), 200);
                worst = worst.max(t.elapsed());
                count += 1;
            }
            (worst, count)
        })
    };

    let mut samples = Vec::with_capacity(SAMPLES);
    for sample in 1..=SAMPLES {
        let text = config(backend, sample);
        // Written and renamed before the clock starts: the watcher may reload first, so the
        // timed reload goes through POST /reload with the file already on disk either way.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).expect("write");
        let started = Instant::now();
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(request(admin, "POST", "/reload"), 200);
        let target = format!("/new{sample}");
        let mut polls = 0;
        while request(proxy, "GET", &target) != 200 {
            polls += 1;
            assert!(polls < 10_000, "the new route never served");
        }
        samples.push(started.elapsed());
        // Let the watcher's own event settle so the next sample starts from a quiet folder.
        std::thread::sleep(Duration::from_millis(400));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, count) = watcher.join().expect("client thread");
    samples.sort();
    println!(
        "POST /reload -> first request on the new route ({ROUTES} routes, {CLUSTERS} clusters): min {:?}, median {:?}, max {:?} over {SAMPLES}",
        samples[0],
        samples[SAMPLES / 2],
        samples[SAMPLES - 1]
    );
    println!("existing route during the reloads: {count} requests, worst {worst:?}");
    handle.shutdown();
}
