//! What the network-namespace tests share (`mesh_partition`, `transparent`,
//! `transparent_redirect`): running a setup command, and namespaces deleted when a test ends.
//! Needs root and iproute2 (`.ci/run` installs it); a missing tool fails the test, never skips it.

use std::process::Command;

/// Runs a command and panics with its stderr and stdout if it fails; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces of one test; deleted on drop (which also removes their links and rules).
pub struct Namespaces {
    pub names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
