//! Running one test in a process of its own.
//!
//! The tests of an area share one process, and some state in it is process-wide: the metrics
//! recorder, `[metrics] max_endpoint_series`' label budget, the resident set. A test that needs
//! exact figures of that state starts with
//!
//! ```ignore
//! if !support::alone::in_own_process("area_module::test_name") {
//!     return;
//! }
//! ```
//!
//! In the test binary's own run this re-runs the binary with only that test (and an
//! environment variable naming it) and returns `false` once the child passed; in the child it
//! returns `true` and the test body runs with the process to itself.

use std::process::Command;

/// Set in the child to the name of the one test it runs.
const ALONE: &str = "SWITCHYARD_TEST_ALONE";

/// Whether the caller is the child running `test` alone (then run the body); otherwise runs
/// that child, fails the test if the child fails or did not run exactly this test, and returns
/// `false`. `test` is the test's path inside its area binary, as `cargo test` lists it.
pub fn in_own_process(test: &str) -> bool {
    if std::env::var(ALONE).is_ok_and(|name| name == test) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, test)
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An exact filter that matches nothing still exits 0: insist the one test ran and passed.
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} alone in its own process failed ({})\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        out.status
    );
    false
}
