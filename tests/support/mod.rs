//! Shared helpers for the integration tests: scriptable backends, a fault-injecting TCP proxy,
//! proxy launchers (in-process and as the binary), a raw-bytes client and a small HTTP client.
//!
//! Every server here runs on its own thread with its own tokio runtime, so a helper works the
//! same from a `#[test]` and a `#[tokio::test]`, and a test that blocks its own runtime cannot
//! starve the backend it is talking to.

// Each test binary compiles this module with `mod support;` and uses only a subset of it;
// without this, every binary would warn about the helpers it happens not to call.
#![allow(dead_code)]

pub mod backend;
pub mod dns;
pub mod etcd;
pub mod fault_proxy;
pub mod h2_server;
pub mod http_client;
pub mod launcher;
pub mod raw_client;
mod rt_thread;
pub mod tcp_server;

use std::time::{Duration, Instant};

/// How long helpers wait for something that should happen "at once" before failing the test.
/// Generous because CI machines are slow; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds or `deadline` (from now) passes; returns whether it held.
///
/// This is the only way tests wait for something to happen: never a bare sleep.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
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
