//! Shared helpers for the integration tests, one module for every area binary
//! (`tests/<area>/main.rs` declares it with `#[path = "../support/mod.rs"] mod support;`):
//! scriptable backends, a fault-injecting TCP proxy, the proxy launcher (in-process and as the
//! binary) with its config builder, raw-bytes and HTTP clients, metric scraping, and the
//! fixtures of single areas (cache, hygiene, reload, TLS, the mesh simulator's network).
//! `tests/README.md` lists what is where.
//!
//! Every server here runs on its own thread with its own tokio runtime, so a helper works the
//! same from a `#[test]` and a `#[tokio::test]`, and a test that blocks its own runtime cannot
//! starve the backend it is talking to.

// Every area binary compiles this whole module and uses only part of it; without this, each
// binary would warn (and clippy -D warnings fail) about the helpers it happens not to call.
// Splitting the module per area would not help: an area still uses part of each file.
#![allow(dead_code)]

pub mod alone;
pub mod backend;
pub mod cache;
pub mod config;
pub mod dns;
pub mod etcd;
pub mod fault_proxy;
pub mod h2_server;
pub mod http_client;
pub mod hygiene;
pub mod launcher;
pub mod mesh_net;
pub mod metrics;
pub mod net;
pub mod raw_client;
pub mod reload;
mod rt_thread;
pub mod tcp_server;
pub mod tls;
pub mod traffic;

use std::time::{Duration, Instant};

/// How long helpers wait for something that should happen "at once" before failing the test.
/// Generous because CI machines are slow; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds or `deadline` (from now) passes; returns whether it held.
///
/// This is the only way tests wait for something to happen: never a bare sleep.
pub fn wait_until(deadline: Duration, condition: impl FnMut() -> bool) -> bool {
    wait_until_every(deadline, Duration::from_millis(5), condition)
}

/// [`wait_until`] polling every `period`: a measurement of how long something takes (the
/// scale tests' change-to-live latency) polls finer than the 5 ms a plain wait needs.
pub fn wait_until_every(
    deadline: Duration,
    period: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(period);
    }
}

/// [`wait_until`] for async tests: yields to the test's runtime between polls instead of
/// blocking its thread.
pub async fn wait_until_async(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`wait_until_async`] for a condition that is itself async (an HTTP request, a scrape over
/// the test's client): awaits `check()` until it yields `true` or `deadline` passes.
pub async fn wait_until_check<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The config of every `proptest!` block here: `cases` cases, and a failing case's seed saved
/// to `tests/proptest-regressions/<file>.txt` (commit it: proptest replays it first on every
/// run). `SourceParallel` finds the folder beside the area folder holding `main.rs`, so the
/// regressions of every area land in that one folder.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
