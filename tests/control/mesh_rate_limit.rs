//! `rate_limit = { ..., scope = "mesh" }` between three real `switchyard` processes on
//! loopback: a shared limit of 100 requests/s under uneven load (60/30/10 % of an offered
//! 300/s) admits 100 +- 15 % per second in total once the shares converged, and when the
//! busiest member stops, the other two take its share back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::http_client::HttpClient;
use crate::support::wait_until_check;

use super::mesh_proxies::Sidecar;

const KEY: &str = "correct horse battery staple, mesh rate limit test\n";

fn sidecar(dir: &Path, name: &str, seeds: &str, backend: SocketAddr) -> Sidecar {
    use std::os::unix::fs::PermissionsExt;
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&key_path, KEY).expect("write key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let toml = format!(
        "[runtime]\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [log]\naccess = false\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"shared\"\nlistener = \"public\"\ncluster = \"app\"\n\
         rate_limit = {{ requests = 100, per = \"1s\", key = \"route\", scope = \"mesh\" }}\n\n\
         [clusters.app]\nendpoints = [\"{backend}\"]\n\n\
         [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{name}.key\"\n{seeds}\n"
    );
    Sidecar::spawn(dir, name, &toml)
}

/// Offered load on one member: `per_second` requests spread over a few connections, each
/// admitted one (200) counted in `admitted`. Stops when `stop` is set or the member is gone.
fn load(
    target: SocketAddr,
    per_second: u64,
    admitted: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    const CONNECTIONS: u64 = 3;
    (0..CONNECTIONS)
        .map(|_| {
            let admitted = Arc::clone(&admitted);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let client = HttpClient::http1().with_timeout(Duration::from_secs(2));
                let period = Duration::from_secs_f64(CONNECTIONS as f64 / per_second as f64);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                // Bounded: at most a minute of ticks whatever happens.
                for _ in 0..(60 * per_second / CONNECTIONS) {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match client.get(&format!("http://{target}/")).await {
                        Ok(r) if r.status == 200 => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect()
}

/// Admitted requests per second summed over `counters`, measured over `window`.
async fn admitted_rate(counters: &[&AtomicU64], window: Duration) -> f64 {
    let sum = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let before = sum();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    (sum() - before) as f64 / started.elapsed().as_secs_f64()
}

async fn alive_members(client: &HttpClient, admin: SocketAddr) -> usize {
    let Ok(resp) = client.get(&format!("http://{admin}/mesh/members")).await else {
        return 0;
    };
    let view: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    view["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count())
}

/// `switchyard_rate_limit_share{route="shared"}` on `admin` (for the test's report).
async fn share(client: &HttpClient, admin: SocketAddr) -> Option<f64> {
    let text = client
        .get(&format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix("switchyard_rate_limit_share{route=\"shared\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_one_limit_and_a_leaving_member_returns_its_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let client = HttpClient::http1().with_timeout(Duration::from_secs(2));
    let a = sidecar(dir.path(), "a", "", backend.addr());
    let seeds = format!("seeds = [\"{}\"]", a.mesh);
    let b = sidecar(dir.path(), "b", &seeds, backend.addr());
    let c = sidecar(dir.path(), "c", &seeds, backend.addr());
    let joined = wait_until_check(Duration::from_secs(10), || async {
        alive_members(&client, a.admin).await == 3
            && alive_members(&client, b.admin).await == 3
            && alive_members(&client, c.admin).await == 3
    })
    .await;
    assert!(joined, "the three members never all saw each other");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut tasks = Vec::new();
    for (member, rate, count) in [
        (&a, 180, &counts[0]),
        (&b, 90, &counts[1]),
        (&c, 30, &counts[2]),
    ] {
        tasks.extend(load(
            member.listener,
            rate,
            Arc::clone(count),
            Arc::clone(&stop),
        ));
    }
    // Converged: the three shares add up to one (two mesh periods and gossip), then one more
    // period so every member's buckets run at its share.
    let load_started = Instant::now();
    let converged = wait_until_check(Duration::from_secs(15), || async {
        let mut sum = 0.0;
        for member in [&a, &b, &c] {
            match share(&client, member.admin).await {
                Some(s) if s > 0.0 && s < 1.0 => sum += s,
                _ => return false,
            }
        }
        (0.97..=1.03).contains(&sum)
    })
    .await;
    assert!(converged, "the shares never added up to the whole limit");
    println!(
        "shares converged {:?} after the load started",
        load_started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<&AtomicU64> = counts.iter().map(|c| &**c).collect();
    let before: Vec<u64> = all.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total = admitted_rate(&all, Duration::from_secs(4)).await;
    let each: Vec<u64> = all
        .iter()
        .zip(&before)
        .map(|(c, b)| c.load(Ordering::Relaxed) - b)
        .collect();
    println!(
        "three members, offered 180/90/30 per second: {total:.1} admitted per second \
         (A, B, C admitted {each:?} in the window; shares {:?}; alive as A sees it: {})",
        [
            share(&client, a.admin).await,
            share(&client, b.admin).await,
            share(&client, c.admin).await
        ],
        alive_members(&client, a.admin).await
    );
    assert!(
        (85.0..=115.0).contains(&total),
        "admitted {total:.1}/s in total, expected 100 +- 15 %"
    );

    // A (60 % of the demand) stops gracefully: B and C (120/s offered) share the whole limit.
    let mut a = a;
    a.process.terminate();
    assert!(a.process.wait_exit(Duration::from_secs(10)).is_some());
    let left = Instant::now();
    let returned = wait_until_check(Duration::from_secs(15), || async {
        let b_share = share(&client, b.admin).await.unwrap_or(0.0);
        let c_share = share(&client, c.admin).await.unwrap_or(0.0);
        (0.97..=1.03).contains(&(b_share + c_share))
    })
    .await;
    assert!(returned, "B and C never took A's share back");
    println!("A's share returned {:?} after it left", left.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rest = admitted_rate(&all[1..], Duration::from_secs(3)).await;
    println!("A gone, B and C offered 90/30 per second: {rest:.1} admitted per second");
    assert!(
        (85.0..=115.0).contains(&rest),
        "B and C admitted {rest:.1}/s after A left, expected 100 +- 15 %"
    );
    let metrics = client
        .get(&format!("http://{}/metrics", b.admin))
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("switchyard_rate_limit_share{route=\"shared\"}"),
        "no share gauge"
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    drop((b, c));
}
