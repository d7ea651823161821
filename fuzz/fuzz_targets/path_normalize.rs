//! Path normalisation: never panics, and its output is canonical — normalising it again gives
//! the same path, with no `//`, `/./` or `/../` left (tests/router_normalize.rs on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::router::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(once) = normalize(text) {
        let path = once.path.to_string();
        assert!(path.starts_with('/'));
        assert!(!path.contains("//") && !path.contains("/./") && !path.contains("/../"));
        let twice = normalize(&path).expect("a normalised path normalises");
        assert_eq!(twice.path, path);
    }
});
