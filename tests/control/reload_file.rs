//! Reloads triggered by the file watcher: a route moves, invalid files are refused while the old
//! config serves on, a burst of writes converges, and a ConfigMap-style symlink swap is seen.

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::Proxy;
use crate::support::reload::*;
use crate::support::DEADLINE;

fn backends() -> (Backend, Backend) {
    (
        Backend::start_named("a", Behavior::fixed(200, "a")),
        Backend::start_named("b", Behavior::fixed(200, "b")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_moves_to_its_new_cluster_within_a_second_of_the_write() {
    let (a, b) = backends();
    let proxy = Proxy::start_toml(&config("a", &[a.addr()], &[b.addr()], ""));
    let addr = proxy.addr("public");
    assert_eq!(backend_of(addr).await.as_deref(), Ok("a"));

    // A plain in-place write, as a user's `echo > file` does.
    std::fs::write(
        proxy.config_path(),
        config("b", &[a.addr()], &[b.addr()], ""),
    )
    .expect("write");
    let written = Instant::now();
    assert!(
        wait_for_backend(addr, "b", DEADLINE).await,
        "traffic never moved"
    );
    let moved = written.elapsed();
    assert!(moved < Duration::from_secs(1), "took {moved:?}");
    let doc = admin_config(proxy.admin_addr()).await;
    assert_eq!(doc["version"], 2);
    assert!(doc["last_error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_are_refused_and_the_fix_then_loads() {
    let (a, b) = backends();
    let good = config("a", &[a.addr()], &[b.addr()], "");
    let proxy = Proxy::start_toml(&good);
    let (addr, admin) = (proxy.addr("public"), proxy.admin_addr());
    let path = proxy.config_path().to_path_buf();
    let cases = [
        (
            "syntax",
            good.replace("[[routes]]", "[[routes]"),
            "switchyard.toml:",
        ),
        (
            "unknown key",
            good.replace("cluster = \"a\"", "cluster = \"a\"\nbogus_key = 1"),
            "bogus_key",
        ),
        (
            "dangling cluster",
            good.replace("cluster = \"a\"", "cluster = \"nowhere\""),
            "nowhere",
        ),
    ];
    for (what, text, needle) in cases {
        let failures = reloads(admin, "failure").await;
        write_atomic(&path, &text);
        let (doc, seen) = wait_for_config(admin, |doc| {
            doc["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(needle))
        })
        .await;
        assert!(seen, "{what}: last_error never named {needle:?}: {doc}");
        let error = doc["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("switchyard.toml:"), "{what}: {error}");
        assert_eq!(doc["version"], 1, "{what}: nothing may be published");
        assert!(reloads(admin, "failure").await >= failures + 1.0, "{what}");
        assert_eq!(
            backend_of(addr).await.as_deref(),
            Ok("a"),
            "{what}: old config serves on"
        );
    }

    write_atomic(&path, &config("b", &[a.addr()], &[b.addr()], ""));
    let (doc, loaded) = wait_for_config(admin, |doc| doc["version"] == 2).await;
    assert!(loaded, "the fix never loaded: {doc}");
    assert!(doc["last_error"].is_null(), "cleared on success: {doc}");
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_writes_in_a_second_converge_to_the_last_content() {
    let (a, b) = backends();
    let proxy = Proxy::start_toml(&config("a", &[a.addr()], &[b.addr()], ""));
    let (addr, admin) = (proxy.addr("public"), proxy.admin_addr());
    let mut last = String::new();
    for i in 0..50 {
        let target = if i % 2 == 0 { "a" } else { "b" };
        last = config(target, &[a.addr()], &[b.addr()], &format!("# write {i}\n"));
        // In place, not renamed: the watcher must cope with the messiest writer too.
        std::fs::write(proxy.config_path(), &last).expect("write");
        // Pacing the burst over about a second, not waiting for anything.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sha = switchyard::config::sha256_hex(last.as_bytes());
    let (doc, converged) = wait_for_config(admin, |doc| doc["sha256"] == sha.as_str()).await;
    assert!(converged, "never converged on the last write: {doc}");
    assert_eq!(backend_of(addr).await.as_deref(), Ok("b"));
    // Debounced: far fewer reloads than writes (each debounce window is at least 200 ms).
    let version = doc["version"].as_u64().unwrap_or(0);
    assert!(version <= 12, "{version} versions for 50 writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up() {
    let (a, b) = backends();
    let dir = tempfile::tempdir().expect("tempdir");
    // The layout kubelet writes: the file is a symlink through `..data`, itself a symlink to a
    // timestamped folder; an update writes a new folder and renames a new `..data` over the old.
    let first = dir.path().join("..2026_11_25_18_00_00.1");
    std::fs::create_dir(&first).expect("mkdir");
    std::fs::write(
        first.join("switchyard.toml"),
        config("a", &[a.addr()], &[b.addr()], ""),
    )
    .expect("write");
    symlink("..2026_11_25_18_00_00.1", dir.path().join("..data")).expect("symlink ..data");
    let path = dir.path().join("switchyard.toml");
    symlink("..data/switchyard.toml", &path).expect("symlink file");
    let handle = start_from(&path);
    let addr = handle.listener_addr("public").expect("listener");
    assert_eq!(backend_of(addr).await.as_deref(), Ok("a"));

    let second = dir.path().join("..2026_11_25_18_05_00.2");
    std::fs::create_dir(&second).expect("mkdir");
    std::fs::write(
        second.join("switchyard.toml"),
        config("b", &[a.addr()], &[b.addr()], ""),
    )
    .expect("write");
    symlink("..2026_11_25_18_05_00.2", dir.path().join("..data_tmp")).expect("symlink tmp");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    std::fs::remove_dir_all(&first).expect("remove old folder");

    let moved = wait_for_backend(addr, "b", DEADLINE).await;
    let version = handle.shared().snapshot().version();
    stop(handle);
    assert!(moved, "the swap was not picked up");
    assert_eq!(version, 2);
}
