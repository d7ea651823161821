//! Path normalisation: the table of canonical forms, the bypass attempts a prefix rule must
//! survive, the rejected inputs, and the properties every output has.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use switchyard::router::{normalize, PathError};

/// `(raw path_and_query, normalised path, query)`.
const CANONICAL: &[(&str, &str, Option<&str>)] = &[
    ("/", "/", None),
    ("/a/b", "/a/b", None),
    ("/a/b/", "/a/b/", None),
    ("//", "/", None),
    ("//a///b//", "/a/b/", None),
    ("/./a", "/a", None),
    ("/a/.", "/a/", None),
    ("/a/./b/.", "/a/b/", None),
    ("/a/b/..", "/a/", None),
    ("/a/b/../c", "/a/c", None),
    ("/a/../../../b", "/b", None),
    ("/..", "/", None),
    ("/../a", "/a", None),
    ("/a/..b/c..", "/a/..b/c..", None),
    ("/.../a", "/.../a", None),
    ("/a?b=/../c", "/a", Some("b=/../c")),
    ("/a?", "/a", Some("")),
    ("/a/../b?x?y", "/b", Some("x?y")),
    ("/%7Euser", "/~user", None),
    ("/%41%62%2d%5F%30", "/Ab-_0", None),
    ("/a%3fb", "/a%3Fb", None),
    ("/a%2fb", "/a/b", None),
    ("/a%25%32%66", "/a%252f", None),
    ("/%c3%a9t%C3%A9", "/%C3%A9t%C3%A9", None),
    ("/caf\u{e9}", "/caf\u{e9}", None),
    ("/a%20b", "/a%20b", None),
    ("/a%5cb", "/a%5Cb", None),
    ("/a%2Fb%2F%2E%2E", "/a/", None),
];

/// Ways to reach `/admin...` without writing it plainly: each must normalise to the path shown,
/// so that a prefix rule on `/admin` sees it.
const BYPASS_ATTEMPTS: &[(&str, &str)] = &[
    ("/%2e/admin", "/admin"),
    ("/%2E/admin", "/admin"),
    ("//admin", "/admin"),
    ("///admin/", "/admin/"),
    ("/./admin", "/admin"),
    ("/x/../admin", "/admin"),
    ("/x/y/../../admin", "/admin"),
    ("/%2E%2E/admin", "/admin"),
    ("/%2e%2e/admin", "/admin"),
    ("/.%2e/admin", "/admin"),
    ("/x/%2e%2e%2fadmin", "/admin"),
    ("/x%2f..%2fadmin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/%61%64%6D%69%6E/users", "/admin/users"),
    ("/admin%2f..", "/"),
    ("/admin/%2e%2e/admin/x", "/admin/x"),
    ("/public/..%2F..%2Fadmin", "/admin"),
];

#[test]
fn canonical_forms() {
    for (raw, path, query) in CANONICAL {
        let normalized = normalize(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(normalized.path, *path, "path of {raw}");
        assert_eq!(normalized.query, *query, "query of {raw}");
    }
}

#[test]
fn bypass_attempts_normalise_to_the_plain_path() {
    for (raw, want) in BYPASS_ATTEMPTS {
        assert_eq!(
            normalize(raw).map(|n| n.path).as_deref(),
            Ok(*want),
            "{raw}"
        );
    }
}

#[test]
fn malformed_paths_are_rejected() {
    let cases = [
        ("", PathError::NotOriginForm),
        ("admin", PathError::NotOriginForm),
        ("*", PathError::NotOriginForm),
        ("?a=/", PathError::NotOriginForm),
        ("http://h/a", PathError::NotOriginForm),
        ("/a%zz", PathError::InvalidEscape(2)),
        ("/a%2", PathError::InvalidEscape(2)),
        ("/a%", PathError::InvalidEscape(2)),
        ("/%g0", PathError::InvalidEscape(1)),
        ("/a%00b", PathError::EncodedNul),
        ("/a\0b", PathError::ControlByte(0)),
        ("/a\nb", PathError::ControlByte(b'\n')),
        ("/a\tb", PathError::ControlByte(b'\t')),
        ("/a\x7fb", PathError::ControlByte(0x7F)),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize(raw).map(|n| n.path), Err(want), "{raw:?}");
    }
}

#[test]
fn the_query_is_not_validated_or_changed() {
    let normalized = normalize("/a?%zz&%00=..//").unwrap();
    assert_eq!(normalized.path, "/a");
    assert_eq!(normalized.query, Some("%zz&%00=..//"));
}

/// Paths built from the pieces that matter: separators (raw and escaped), dots (raw and
/// escaped), escapes of reserved and unreserved bytes, plain text.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("."),
        Just(".."),
        Just("%2e"),
        Just("%2E"),
        Just("%2f"),
        Just("%2F"),
        Just("%41"),
        Just("%7e"),
        Just("%3f"),
        Just("%25"),
        Just("%c3%a9"),
        Just("a"),
        Just("admin"),
        Just("~"),
        Just("\u{e9}"),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(crate::support::proptest_config(ProptestConfig::default().cases))]
    #[test]
    fn normalise_is_idempotent_and_canonical(raw in tricky_path()) {
        let once = normalize(&raw).unwrap().path;
        prop_assert!(once.starts_with('/'));
        for bad in ["//", "/./", "/../"] {
            prop_assert!(!once.contains(bad), "{raw} -> {once} contains {bad}");
        }
        prop_assert!(!once.ends_with("/.") && !once.ends_with("/.."), "{raw} -> {once}");
        let twice = normalize(&once).unwrap().path;
        prop_assert_eq!(&twice, &once, "not idempotent for {}", raw);
    }

    #[test]
    fn arbitrary_text_never_panics_and_stays_canonical(raw in "/[ -~\u{e9}]{0,40}") {
        if let Ok(normalized) = normalize(&raw) {
            let path = normalized.path;
            prop_assert!(!path.contains("//") && !path.contains("/./") && !path.contains("/../"));
            prop_assert_eq!(normalize(&path).map(|n| n.path), Ok(path.clone()));
        }
    }
}
