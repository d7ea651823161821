//! Reloads on demand (`POST /reload`, `SIGHUP`), listener changes, and `check --diff`.
//!
//! The proxy reads its config through a symlink into a second folder that the watcher does not
//! watch, so edits there are seen only by the trigger under test.

mod reload_support;
mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reload_support::*;
use support::backend::{Backend, Behavior};
use support::launcher::BinProcess;
use support::{wait_until_async, DEADLINE};

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
    let get = support::http_client::get(&format!("http://{admin}/reload"))
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
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
