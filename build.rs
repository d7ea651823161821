//! Link options of the `switchyard` binary (nothing else is generated).
//!
//! Packed relative relocations (`DT_RELR`, glibc 2.36+): a position-independent binary's
//! pointers in read-only-after-start data are fixed up at start from a table that, as plain
//! `RELA` entries, is half a megabyte read at every start and counted in the idle RSS; packed,
//! it is a few KiB. Nothing changes at run time after the start. Set
//! `SWITCHYARD_PACKED_RELOCS=0` to link without (for a glibc older than 2.36). Re-measure the
//! idle RSS with `benches/load/idle_memory.py` (RssFile in `/proc/PID/status`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_PACKED_RELOCS");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let wanted = std::env::var("SWITCHYARD_PACKED_RELOCS").map_or(true, |v| v != "0");
    if wanted && target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
