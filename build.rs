//! Link flags for the `switchyard` binary only (`cargo:rustc-link-arg-bins`: the library, the
//! tests and the benches link as before, and no dependency is rebuilt). Both cut the memory an
//! idle proxy has resident; neither changes a single instruction the proxy runs.
//!
//! * Packed relative relocations (`-z pack-relative-relocs`, DT_RELR): a position-independent
//!   executable carries one relocation per pointer in its read-only data (vtables, string
//!   tables), and the dynamic loader reads them all at every start. As 24-byte RELA entries
//!   they are hundreds of KiB; RELR encodes the same relocations in a few KiB. The binary stays
//!   position-independent (ASLR kept). Check: `readelf -SW target/release/switchyard`
//!   (`.rela.dyn` / `.relr.dyn`).
//! * Start-up functions first (`--symbol-ordering-file=link/startup-order.txt`): see
//!   scripts/startup_order.py, which writes that list and says when to regenerate it.
//!
//! Each flag is used only if a probe program links with it here (same rustc, target, linker
//! and RUSTFLAGS), and for packed relocations also runs (glibc reads DT_RELR from 2.36 on, and
//! the linker makes the binary require a glibc that does): an older glibc or a linker without
//! the option gets the plain link, never a failed build. Re-measure the idle RSS with
//! `benches/load/run.py` ("idle RSS KiB").
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/startup-order.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let same_machine = env::var("TARGET").ok() == env::var("HOST").ok();

    let relr = "-Wl,-z,pack-relative-relocs";
    if same_machine && probe(&out, "relr", &[relr.to_string()], true) {
        println!("cargo:rustc-link-arg-bins={relr}");
    }

    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/startup-order.txt");
    let flags = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        // A name the binary no longer has (the list is older than the code) is skipped quietly.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if order.exists() && probe(&out, "order", &flags, false) {
        for flag in flags {
            println!("cargo:rustc-link-arg-bins={flag}");
        }
    }
}

/// Whether an empty program links with `flags` (and, if `run`, exits 0).
fn probe(out: &Path, name: &str, flags: &[String], run: bool) -> bool {
    let src = out.join("probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let exe = out.join(format!("probe-{name}"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.arg(&src).arg("-o").arg(&exe);
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
    let linked = cmd.output().is_ok_and(|o| o.status.success());
    linked && (!run || Command::new(&exe).status().is_ok_and(|s| s.success()))
}
