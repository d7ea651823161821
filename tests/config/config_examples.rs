//! Every config file shipped under `config/` and `examples/configs/` must load: they are
//! documentation users copy from. (The runnable examples beside `examples/configs/` are loaded
//! by the tests that run them: some need files their `run.sh` creates first.)

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_loads() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("config");
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    toml_files(&manifest.join("examples/configs"), &mut files);
    assert!(
        files.len() >= 4,
        "expected the default config and the examples, found {files:?}"
    );
    assert!(files.contains(&root.join("switchyard.toml")));
    for file in &files {
        let config = switchyard::config::load(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.listeners.is_empty(), "{}", file.display());
        assert!(
            config.summary().contains("listeners:"),
            "{}",
            file.display()
        );
    }
}
