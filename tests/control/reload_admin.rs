//! Reloads on demand (`POST /reload`, `SIGHUP`), listener changes, and `check --diff`.
//!
//! The proxy reads its config through a symlink into a second folder that the watcher does not
//! watch, so edits there are seen only by the trigger under test.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::BinProcess;
use crate::support::net::free_port;
use crate::support::reload::*;
use crate::support::{wait_until_async, DEADLINE};

/// (watched folder, unwatched folder, config path through the symlink, real file).
fn unwatched(text: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, PathBuf) {
    let (watched, real_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let real = real_dir.path().join("real.toml");
    std::fs::write(&real, text).expect("write");
    let path = watched.path().join("switchyard.toml");
    symlink(&real, &path).expect("symlink");
    (watched, real_dir, path, real)
}

fn backends() -> (Backend, Backend) {
    (
        Backend::start_named("a", Behavior::fixed(200, "a")),
        Backend::start_named("b", Behavior::fixed(200, "b")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_answers_the_new_version_or_the_errors() {
    let (a, b) = backends();
    let eps = (&[a.addr()][..], &[b.addr()][..]);
    let (_w, _r, path, real) = unwatched(&config("a", eps.0, eps.1, ""));
    let handle = start_from(&path);
    let (addr, admin) = (
        handle.listener_addr("public").expect("listener"),
        handle.admin_addr(),
    );

    let (status, body) = post_reload(admin).await;
    assert_eq!(
        (status, &body["version"], &body["changed"]),
        (200, &1.into(), &false.into())
    );

    std::fs::write(&real, config("b", eps.0, eps.1, "")).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!(
        (status, &body["version"], &body["changed"]),
        (200, &2.into(), &true.into())
    );
    // Live when the answer comes: no waiting.
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));

    std::fs::write(&real, config("nowhere", eps.0, eps.1, "")).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 400, "{body}");
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    assert!(!errors.is_empty(), "{body}");
    let first = errors[0].as_str().unwrap_or_default();
    assert!(
        first.contains("switchyard.toml:") && first.contains("nowhere"),
        "{first}"
    );
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));
    assert!(admin_config(admin).await["last_error"].is_string());
    let get = crate::support::http_client::get(&format!("http://{admin}/reload"))
        .await
        .expect("GET");
    assert_eq!(get.status, 405);
    stop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_removed_and_rebound() {
    let (a, b) = backends();
    let eps = (&[a.addr()][..], &[b.addr()][..]);
    let extra = "\n[[listeners]]\nname = \"extra\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"x\"\nlistener = \"extra\"\ncluster = \"b\"\n";
    let (_w, _r, path, real) = unwatched(&config("a", eps.0, eps.1, ""));
    let handle = start_from(&path);
    let admin = handle.admin_addr();
    let public = handle.listener_addr("public").expect("public");

    // Added: bound, routed, while `public` keeps its socket.
    std::fs::write(&real, config("a", eps.0, eps.1, extra)).expect("write");
    assert_eq!(post_reload(admin).await.0, 200);
    let added = handle.listener_addr("extra").expect("extra listener");
    assert!(wait_until_async(DEADLINE, || std::net::TcpStream::connect(added).is_ok()).await);
    assert_eq!(backend_of(added).await.as_deref(), Ok("b"));
    assert_eq!(handle.listener_addr("public"), Some(public));
    assert_eq!(backend_of(public).await.as_deref(), Ok("a"));

    // Removed: stops accepting.
    std::fs::write(&real, config("a", eps.0, eps.1, "")).expect("write");
    assert_eq!(post_reload(admin).await.0, 200);
    assert_eq!(handle.listener_addr("extra"), None);
    assert!(
        wait_until_async(DEADLINE, || std::net::TcpStream::connect(added).is_err()).await,
        "removed listener still accepts"
    );

    // Re-addressed: a port picked free just before (the brief race is the test's only one).
    let port = free_port().port();
    let moved = config("a", eps.0, eps.1, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&real, moved).expect("write");
    assert_eq!(post_reload(admin).await.0, 200);
    let rebound = handle.listener_addr("public").expect("public");
    assert_eq!(rebound.port(), port);
    assert_eq!(backend_of(rebound).await.as_deref(), Ok("a"));
    assert!(
        wait_until_async(DEADLINE, || std::net::TcpStream::connect(public).is_err()).await,
        "old address still accepts"
    );
    stop(handle);
}

#[test]
fn sighup_reloads_the_running_binary() {
    let a = Backend::start_named("a", Behavior::fixed(200, "a"));
    let b = Backend::start_named("b", Behavior::fixed(200, "b"));
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let (_w, _r, path, real) = unwatched(&config("a", &[a.addr()], &[b.addr()], admin));
    let process = BinProcess::spawn(&["run", "-c", path.to_str().expect("utf-8 path")]);
    let addr = process.wait_for_addr("listening on");
    process.wait_for_addr("admin API listening on");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    assert_eq!(rt.block_on(backend_of(addr)).as_deref(), Ok("a"));

    std::fs::write(&real, config("b", &[a.addr()], &[b.addr()], admin)).expect("write");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &process.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    process.expect_line("config reloaded");
    assert!(rt.block_on(wait_for_backend(addr, "b", DEADLINE)));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn check_diff_lists_what_a_reload_would_change() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (
        "127.0.0.1:9001".parse().expect("a"),
        "127.0.0.1:9002".parse().expect("b"),
    );
    let running = write(dir.path(), "running.toml", &config("a", &[a], &[b], ""));
    let new = write(dir.path(), "new.toml", &config("b", &[a, b], &[b], ""));
    let out = BinProcess::run(&["check", "-c", &new, "--diff", &running], DEADLINE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "~ route main: target a -> b\n~ cluster a: endpoint +127.0.0.1:9002 (weight 1)"
    );
    let same = BinProcess::run(&["check", "-c", &running, "--diff", &running], DEADLINE);
    assert_eq!(same.stdout.trim(), "no changes");
    let broken = write(dir.path(), "broken.toml", "[[routes]");
    let out = BinProcess::run(
        &["check", "-c", &broken, "--diff", &running],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("broken.toml:1:"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_post_reload_is_refused_and_reloads_nothing() {
    // Alone in its own process: it reads the process-wide reload counter as zero, and the other
    // control tests reload.
    if !crate::support::alone::in_own_process(
        "reload_admin::a_cross_origin_post_reload_is_refused_and_reloads_nothing",
    ) {
        return;
    }
    // Issue 26 §3: any page open in a browser on the host could POST here. The file has
    // changed, so a reload that ran would publish version 2.
    let (a, b) = backends();
    let eps = (&[a.addr()][..], &[b.addr()][..]);
    let (_w, _r, path, real) = unwatched(&config("a", eps.0, eps.1, ""));
    let handle = start_from(&path);
    let (addr, admin) = (
        handle.listener_addr("public").expect("listener"),
        handle.admin_addr(),
    );
    let initial = admin_config(admin).await;
    std::fs::write(&real, config("b", eps.0, eps.1, "")).expect("write");
    let from_a_page = http::Request::post(format!("http://{admin}/reload"))
        .header("origin", "http://evil.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let refused = crate::support::http_client::HttpClient::http1()
        .send(from_a_page)
        .await
        .expect("an answer");
    assert_eq!(refused.status.as_u16(), 403, "{}", refused.text());
    assert!(
        refused.text().contains("cross-origin"),
        "{}",
        refused.text()
    );
    let after = admin_config(admin).await;
    assert_eq!(after["version"], 1, "no reload ran");
    assert_eq!(backend_of(addr).await.as_deref(), Ok("a"));
    // Not `switchyard_config_reloads_total`: this binary's other tests run proxies in the same
    // process, and the metrics recorder is process-wide, so their reloads count there too. The
    // running config's own record shows that nothing was loaded since start.
    assert_eq!(after["loaded_at"], initial["loaded_at"], "no reload ran");
    assert_eq!(after["sha256"], initial["sha256"], "no reload ran");

    // The admin's own origin (its status page) and a client without Origin (curl) reload.
    let own_page = http::Request::post(format!("http://{admin}/reload"))
        .header("origin", format!("http://{admin}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let reloaded = crate::support::http_client::HttpClient::http1()
        .send(own_page)
        .await
        .expect("an answer");
    assert_eq!(reloaded.status.as_u16(), 200, "{}", reloaded.text());
    assert_eq!(admin_config(admin).await["version"], 2);
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));
    stop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_drop_the_token_of_an_admin_still_bound_off_loopback() {
    // `listen` applies at the next restart: an edit that moves it to loopback and drops
    // `token_file` together would leave the running non-loopback port open without a token.
    let (a, b) = backends();
    let eps = (&[a.addr()][..], &[b.addr()][..]);
    let token_dir = tempfile::tempdir().expect("tmp");
    let token = token_dir.path().join("token");
    std::fs::write(&token, "t0ken\n").expect("write token");
    let guarded = format!(
        "\n[admin]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let (_w, _r, path, real) = unwatched(&config("a", eps.0, eps.1, &guarded));
    let handle = start_from(&path);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], handle.admin_addr().port()));
    std::fs::write(
        &real,
        config("b", eps.0, eps.1, "\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write");
    let reload = crate::support::http_client::HttpClient::http1()
        .send(
            http::Request::post(format!("http://{admin}/reload"))
                .header("authorization", "Bearer t0ken")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("an answer");
    assert_eq!(reload.status.as_u16(), 400, "{}", reload.text());
    assert!(
        reload.text().contains("admin.token_file"),
        "{}",
        reload.text()
    );
    let unauthenticated = crate::support::http_client::get(&format!("http://{admin}/healthz"))
        .await
        .expect("an answer");
    assert_eq!(
        unauthenticated.status.as_u16(),
        401,
        "the token still applies"
    );
    stop(handle);
}

/// Issue 26: a changed `[mesh]` cannot be applied by a reload (the member keeps its socket,
/// identity and keys); the reload used to say nothing. The answer and `/config` now name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mesh_section_is_reported_as_needing_a_restart() {
    let (a, b) = backends();
    let eps = (&[a.addr()][..], &[b.addr()][..]);
    let keys = tempfile::tempdir().expect("tmp");
    let key = keys.path().join("mesh.key");
    std::fs::write(&key, "k".repeat(64)).expect("write key");
    let mesh = |window: &str| {
        format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [mesh]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{}\"\neject_window = \"{window}\"\n",
            key.display()
        )
    };
    let (_w, _r, path, real) = unwatched(&config("a", eps.0, eps.1, &mesh("1s")));
    let handle = start_from(&path);
    let (addr, admin) = (
        handle.listener_addr("public").expect("listener"),
        handle.admin_addr(),
    );
    assert_eq!(
        admin_config(admin).await["restart_required"],
        serde_json::json!([])
    );

    // The route change applies; the mesh change waits for a restart, and both answers say so.
    std::fs::write(&real, config("b", eps.0, eps.1, &mesh("2s"))).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!((status, &body["changed"]), (200, &true.into()), "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["[mesh]"]),
        "{body}"
    );
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));
    let running = admin_config(admin).await;
    assert_eq!(
        running["restart_required"],
        serde_json::json!(["[mesh]"]),
        "{running}"
    );

    // Back to the running `[mesh]`: nothing waits for a restart any more.
    std::fs::write(&real, config("a", eps.0, eps.1, &mesh("1s"))).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    assert_eq!(
        admin_config(admin).await["restart_required"],
        serde_json::json!([])
    );
    stop(handle);
}

/// `[identity]` is kept as started (the mesh announces that identity for the process's life):
/// a reload naming other files applies everything else, reports `[identity]` as needing a
/// restart, and the tunnel keeps the startup identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_is_reported_as_needing_a_restart() {
    use switchyard::tls::certs_cli;
    let (a, b) = backends();
    let eps = (&[a.addr()][..], &[b.addr()][..]);
    let certs = tempfile::tempdir().expect("tmp");
    let ca = certs.path().join("ca");
    certs_cli::init(&ca, 1).expect("CA");
    for name in ["reload-one", "reload-two"] {
        certs_cli::issue(&certs_cli::IssueOptions {
            ca_dir: ca.clone(),
            name: name.to_owned(),
            spiffe: Some(format!("spiffe://local/{name}")),
            dns: Vec::new(),
            ips: Vec::new(),
            out: None,
            days: 1,
        })
        .expect("leaf");
    }
    let identity = |name: &str| {
        format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [identity]\ncert = \"{0}/{name}.pem\"\nkey = \"{0}/{name}.key\"\nca = \"{0}/ca.pem\"\n",
            ca.display()
        )
    };
    let (_w, _r, path, real) = unwatched(&config("a", eps.0, eps.1, &identity("reload-one")));
    let handle = start_from(&path);
    let (addr, admin) = (
        handle.listener_addr("public").expect("listener"),
        handle.admin_addr(),
    );
    let tunnel_identity = |handle: &switchyard::runtime::ProxyHandle| {
        handle
            .shared()
            .snapshot()
            .tunnel_tls()
            .map(|t| t.identity().to_owned())
    };
    assert_eq!(
        tunnel_identity(&handle).as_deref(),
        Some("spiffe://local/reload-one")
    );

    std::fs::write(&real, config("b", eps.0, eps.1, &identity("reload-two"))).expect("write");
    let (status, body) = post_reload(admin).await;
    assert_eq!((status, &body["changed"]), (200, &true.into()), "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["[identity]"]),
        "{body}"
    );
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));
    assert_eq!(
        tunnel_identity(&handle).as_deref(),
        Some("spiffe://local/reload-one"),
        "the startup identity stays"
    );
    stop(handle);
}

/// Clusters in [`big_config`]: each reload rebuilds every one's maglev table, which is what
/// makes the build long enough to matter.
const CLUSTERS: usize = 300;

/// A config of `routes` routes over [`CLUSTERS`] maglev clusters plus `disc`, a maglev cluster fed by
/// the discovery file `endpoints`. `variant` changes every route's prefix, so each variant is a
/// real reload of every route.
fn big_config(routes: usize, variant: usize, endpoints: &Path) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n");
    for i in 0..routes {
        let cluster = if i == 0 {
            "disc".to_owned()
        } else {
            format!("c{}", i % CLUSTERS)
        };
        let _ = write!(
            text,
            "[[routes]]\nname = \"r{i}\"\nlistener = \"public\"\n\
             match = {{ path_prefix = \"/v{variant}/r{i}/\" }}\ncluster = \"{cluster}\"\n\n"
        );
    }
    for c in 0..CLUSTERS {
        let _ = write!(
            text,
            "[clusters.c{c}]\nbalance = \"maglev\"\nhash_on = \"path\"\n\
             endpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\n",
            10_000 + 2 * c,
            10_001 + 2 * c
        );
    }
    let _ = write!(
        text,
        "[clusters.disc]\nbalance = \"maglev\"\nhash_on = \"path\"\ndiscovery = {{ file = \"{}\" }}\n",
        endpoints.display()
    );
    text
}

/// Issue 26: discovery updates used to build their balancer table on the control runtime's one
/// thread, waiting there on the lock a reload holds for its whole build, so the admin API (and
/// health probes, mesh timers) stalled for as long as a big reload took. `/healthz` is polled
/// throughout reloads of 10,000 routes while file discovery rewrites its file every 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_fast_during_big_reloads_under_discovery_churn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    /// The stall this test exists for lasted whole seconds per reload; a loaded 2-core machine
    /// answers `/healthz` in milliseconds, so this leaves a wide margin both ways.
    const MAX_HEALTHZ: Duration = Duration::from_millis(700);
    const ROUTES: usize = 10_000;
    const RELOADS: usize = 3;

    let files = tempfile::tempdir().expect("tmp");
    let endpoints = files.path().join("disc.json");
    let endpoint_list = |round: usize| {
        let list: Vec<String> = (0..20)
            .map(|i| format!("\"127.0.0.1:{}\"", 20_000 + (round % 2) * 100 + i))
            .collect();
        format!("[{}]", list.join(", "))
    };
    std::fs::write(&endpoints, endpoint_list(0)).expect("write endpoints");
    let (_w, _r, path, real) = unwatched(&big_config(ROUTES, 0, &endpoints));
    let handle = start_from(&path);
    let admin = handle.admin_addr();

    let stop_flag = Arc::new(AtomicBool::new(false));
    // Discovery churn: a new endpoint set every 50 ms, bounded in count.
    let churn = {
        let (stop_flag, endpoints) = (Arc::clone(&stop_flag), endpoints.clone());
        tokio::spawn(async move {
            let tmp = endpoints.with_extension("json.tmp");
            for round in 1..=400 {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                std::fs::write(&tmp, endpoint_list(round)).expect("write endpoints");
                std::fs::rename(&tmp, &endpoints).expect("rename endpoints");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // `/healthz` every 10 ms over a fresh connection (bounded in count); the worst latency.
    let poller = {
        let stop_flag = Arc::clone(&stop_flag);
        tokio::spawn(async move {
            let client = crate::support::http_client::HttpClient::http1()
                .with_timeout(Duration::from_secs(30));
            let mut worst = Duration::ZERO;
            for _ in 0..3_000 {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let started = Instant::now();
                let answer = client.get(&format!("http://{admin}/healthz")).await;
                assert_eq!(answer.map(|r| r.status.as_u16()).ok(), Some(200));
                worst = worst.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        })
    };

    let reloader =
        crate::support::http_client::HttpClient::http1().with_timeout(Duration::from_secs(60));
    for variant in 1..=RELOADS {
        std::fs::write(&real, big_config(ROUTES, variant, &endpoints)).expect("write config");
        let answer = reloader
            .post(&format!("http://{admin}/reload"), "")
            .await
            .expect("POST /reload");
        assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
        assert!(
            answer.text().contains("\"changed\":true"),
            "{}",
            answer.text()
        );
    }
    stop_flag.store(true, Ordering::SeqCst);
    churn.await.expect("churn task");
    let worst = poller.await.expect("poller task");
    eprintln!("worst /healthz latency: {worst:?}");
    assert!(
        worst < MAX_HEALTHZ,
        "/healthz took {worst:?} during reloads (bound {MAX_HEALTHZ:?})"
    );
    stop(handle);
}
