//! The mesh between real `switchyard` processes on loopback: A routes `orders` to whatever the
//! mesh announces; B and C advertise it (each in front of its own backend); W has the wrong key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::launcher::BinProcess;
use crate::support::wait_until_check;
use crate::support::DEADLINE;

const KEY: &str = "correct horse battery staple, mesh proxies test\n";

/// A running sidecar: the process and the addresses it printed (`mesh_rate_limit` too).
pub(super) struct Sidecar {
    pub(super) process: BinProcess,
    pub(super) listener: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) mesh: SocketAddr,
}

impl Sidecar {
    /// Writes `toml` to `dir/NAME.toml`, runs the binary on it and reads the addresses it
    /// prints (the config has `[mesh]` and an admin listener).
    pub(super) fn spawn(dir: &Path, name: &str, toml: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let process = BinProcess::spawn(&["run", "-c", &config.to_string_lossy()]);
        let listener = process.wait_for_addr("listening on http://");
        let admin = process.wait_for_addr("admin API listening on");
        let mesh = process.mesh_addr();
        Sidecar {
            process,
            listener,
            admin,
            mesh,
        }
    }
}

/// The start-up warning of a key file readable by group or others.
const OPEN_KEY_WARNING: &str = "is accessible to group or others";

/// Writes a config into `dir` and starts the binary on it; the key file gets `key_mode`.
fn sidecar(
    dir: &Path,
    name: &str,
    (key, key_mode): (&str, u32),
    mesh: &str,
    cluster: &str,
) -> Sidecar {
    use std::os::unix::fs::PermissionsExt;
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&key_path, key).expect("write key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(key_mode))
        .expect("chmod key");
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"orders\"\ntimeout = \"2s\"\n\n\
         [clusters.orders]\n{cluster}\nconnect_timeout = \"500ms\"\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{name}.key\"\n{mesh}\n"
    );
    Sidecar::spawn(dir, name, &toml)
}

async fn members(client: &HttpClient, admin: SocketAddr) -> serde_json::Value {
    let resp = client
        .get(&format!("http://{admin}/mesh/members"))
        .await
        .expect("GET /mesh/members");
    serde_json::from_slice(&resp.body).expect("members JSON")
}

fn state_of(members: &serde_json::Value, mesh: SocketAddr) -> Option<String> {
    members["members"]
        .as_array()?
        .iter()
        .find(|m| m["address"] == mesh.to_string())
        .and_then(|m| m["state"].as_str().map(str::to_owned))
}

/// Waits (with [`wait_until_check`]) until `check` holds; how long it took, or `None` if
/// `deadline` passed first.
async fn within<F, Fut>(deadline: Duration, check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    wait_until_check(deadline, check)
        .await
        .then(|| start.elapsed())
}

/// The `x-backend` names of `n` responses from A (503s count as "none").
async fn backends_seen(client: &HttpClient, a: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let name = match client.get(&format!("http://{a}/orders")).await {
            Ok(resp) if resp.status == 200 => resp.header("x-backend").unwrap_or("?").to_owned(),
            Ok(resp) => format!("status {}", resp.status.as_u16()),
            Err(_) => "error".to_owned(),
        };
        seen.push(name);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_services_are_routed_and_withdrawn_on_death_and_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_b = Backend::start_named("b", Behavior::fixed(200, "orders from b"));
    let backend_c = Backend::start_named("c", Behavior::fixed(200, "orders from c"));
    let client = HttpClient::http1().with_timeout(Duration::from_secs(3));

    let a = sidecar(
        dir.path(),
        "a",
        (KEY, 0o600),
        "",
        "discovery = { mesh = \"orders\" }",
    );
    let seeds = format!("seeds = [\"{}\"]", a.mesh);
    let advertise = |addr: SocketAddr| {
        format!("{seeds}\nadvertise = {{ service = \"orders\", address = \"{addr}\" }}")
    };
    let static_cluster = "endpoints = [\"127.0.0.1:9\"]";
    let b = sidecar(
        dir.path(),
        "b",
        (KEY, 0o600),
        &advertise(backend_b.addr()),
        static_cluster,
    );
    let started = Instant::now();
    let routed = within(Duration::from_secs(10), || async {
        backends_seen(&client, a.listener, 1).await == ["b"]
    })
    .await;
    let routed = routed.expect("A never routed to B's announced orders");
    println!(
        "A routes to B's orders {:?} after B started",
        started.elapsed()
    );
    assert!(routed < Duration::from_secs(5), "took {routed:?}");

    // A member with the wrong key announces to A over and over and never appears.
    let w = sidecar(
        dir.path(),
        "w",
        ("another key, just as long as the right one\n", 0o640),
        &advertise(backend_c.addr()),
        static_cluster,
    );
    let c = sidecar(
        dir.path(),
        "c",
        (KEY, 0o600),
        &advertise(backend_c.addr()),
        static_cluster,
    );
    let both = within(DEADLINE, || async {
        let mut seen = backends_seen(&client, a.listener, 6).await;
        seen.sort();
        seen.dedup();
        seen == ["b", "c"]
    })
    .await;
    assert!(both.is_some(), "A should balance over B and C");
    // The mesh was up before `sidecar` returned, so a start-up warning is printed by now.
    assert!(
        w.process
            .wait_for_line(OPEN_KEY_WARNING, Duration::ZERO)
            .is_some(),
        "no warning for a group-readable key"
    );
    assert_eq!(
        b.process.wait_for_line(OPEN_KEY_WARNING, Duration::ZERO),
        None,
        "a 0600 key needs no warning"
    );
    let view = members(&client, a.admin).await;
    assert_eq!(
        state_of(&view, w.mesh),
        None,
        "wrong-key member listed: {view}"
    );
    assert_eq!(state_of(&view, b.mesh).as_deref(), Some("alive"), "{view}");
    // W started with C: C may be in before W's first datagram reached A, so wait for it.
    let rejected = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("switchyard_mesh_rejected_packets_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let scrape = || async {
        client
            .get(&format!("http://{}/metrics", a.admin))
            .await
            .expect("metrics")
            .text()
    };
    let counted = within(DEADLINE, || async { rejected(&scrape().await) > 0.0 }).await;
    let metrics = scrape().await;
    assert!(
        counted.is_some(),
        "W's datagrams are counted as rejected:\n{metrics}"
    );
    assert!(
        metrics.contains("switchyard_mesh_members{state=\"alive\"} 3"),
        "{metrics}"
    );

    // B killed (no leave): A stops routing to it within the detection time.
    let killed = Instant::now();
    let b_mesh = b.mesh;
    drop(b);
    let gone = within(Duration::from_secs(20), || async {
        state_of(&members(&client, a.admin).await, b_mesh).as_deref() == Some("dead")
            && backends_seen(&client, a.listener, 10)
                .await
                .iter()
                .all(|n| n == "c")
    })
    .await;
    let gone = gone.expect("A kept routing to the killed B");
    println!(
        "killed B: A stopped routing to it after {:?}",
        killed.elapsed()
    );
    assert!(gone < Duration::from_secs(15), "took {gone:?}");

    // C stopped gracefully: it leaves, and A drops it at once.
    let mut c = c;
    c.process.terminate();
    let stopped = Instant::now();
    let left = within(Duration::from_secs(5), || async {
        state_of(&members(&client, a.admin).await, c.mesh).as_deref() == Some("left")
    })
    .await;
    println!(
        "graceful stop of C: shown as left after {:?}",
        stopped.elapsed()
    );
    assert!(left.is_some(), "C not shown as left");
    let empty = within(Duration::from_secs(5), || async {
        backends_seen(&client, a.listener, 1).await == ["status 503"]
    })
    .await;
    println!("graceful stop of C: unrouted after {:?}", stopped.elapsed());
    assert!(
        empty.is_some_and(|d| d < Duration::from_secs(2)),
        "C's service should go at once: {empty:?}"
    );
    assert!(c.process.wait_exit(DEADLINE).is_some_and(|s| s.success()));
}

#[test]
fn the_shipped_three_member_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mesh");
    for name in ["web.toml", "orders-1.toml", "orders-2.toml"] {
        let config =
            switchyard::config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(config.mesh.is_some(), "{name}");
    }
}
