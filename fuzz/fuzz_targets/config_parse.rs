//! Any bytes as a config file: the loader answers `Ok` or errors that point into the file, and
//! never panics (tests/prop_config.rs runs the same property on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = switchyard::config::parse(text, std::path::Path::new("fuzz.toml")) {
        let lines = text.split('\n').count();
        for error in &errors.errors {
            assert!(error.line >= 1 && error.line <= lines, "{error}");
        }
    }
});
