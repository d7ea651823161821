//! Link flags for the `switchyard` binary only (`cargo:rustc-link-arg-bins`: the library, the
//! tests and the benches link as before, and no dependency is rebuilt).
//!
//! Start-up and request-path functions first (`--symbol-ordering-file=link/startup-order.txt`):
//! the linker lays the functions that list names out together at the start of `.text`, so the
//! pages a running proxy touches are few (the kernel maps a binary's pages in blocks around each
//! page touched). It changes where code sits, not a single instruction the proxy runs.
//! link/startup_order.py writes the list and says when to regenerate it; re-measure with
//! `benches/load/run.py` ("idle RSS KiB").
//!
//! The flag is passed only if a probe program links with it here (same rustc, target, linker
//! and RUSTFLAGS): a linker without the option (GNU ld) gets the plain link, never a failed
//! build.
//!
//! Not passed: `-z pack-relative-relocs` (DT_RELR), which would cut the ~0.5 MB of RELA
//! relocations the loader reads at every start to a few KiB, but makes the binary need glibc
//! 2.36 or newer wherever it is copied to run (docs/performance.md, "measured and not kept").
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/startup-order.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/startup-order.txt");
    let flags = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        // A name the binary no longer has (the list is older than the code) is skipped quietly.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if order.exists() && links_with(&out, &flags) {
        for flag in flags {
            println!("cargo:rustc-link-arg-bins={flag}");
        }
    }
}

/// Whether an empty program links with `flags`.
fn links_with(out: &Path, flags: &[String]) -> bool {
    let src = out.join("probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.arg(&src).arg("-o").arg(out.join("probe"));
    if let Ok(target) = env::var("TARGET") {
        cmd.args(["--target", &target]);
    }
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    if let Ok(rustflags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(rustflags.split('\x1f').filter(|f| !f.is_empty()));
    }
    for flag in flags {
        cmd.arg(format!("-Clink-arg={flag}"));
    }
    cmd.output().is_ok_and(|o| o.status.success())
}
