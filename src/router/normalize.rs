//! Path normalisation: the one canonical form that routes are matched against and that goes
//! upstream, so a backend never sees a path the router did not.
//!
//! One pass over the bytes writes the result into a single `String`:
//! - `%2E`/`%2F` and escaped unreserved characters (RFC 3986 2.3: ALPHA DIGIT `-._~`) are
//!   decoded; every other escape keeps its meaning and gets upper-case hex (RFC 3986 6.2.2.1);
//! - empty segments (`//`) are dropped;
//! - `.` and `..` segments are resolved as RFC 3986 5.2.4 does, `..` above the root stays there.
//!
//! Decoding `%2F` into a separator is a deliberate choice: a prefix rule on `/admin` must not be
//! dodged with `/x%2F..%2Fadmin`, and backends disagree on whether `%2F` separates segments.
//! Escapes that are not decoded (`%25`, `%3F`, ...) stay escaped, which keeps the function
//! idempotent.

use std::borrow::Cow;

pub use crate::wire::PathError;

/// A normalised request target: the canonical path and the query exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// Starts with `/`; never contains `//`, `/./` or `/../`. Borrowed when the request's path
    /// already was canonical (most are): then nothing is allocated or copied.
    pub path: Cow<'a, str>,
    /// The text after the first `?`, untouched (`Some("")` for a bare `?`).
    pub query: Option<&'a str>,
}

/// Normalises a raw origin-form request target (`/path?query`).
///
/// A path that is already canonical comes back borrowed; a rewritten one has room reserved for
/// `?query`, so the router can append it without a second allocation.
pub fn normalize(path_and_query: &str) -> Result<Normalized<'_>, PathError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if is_canonical(bytes) {
        return Ok(Normalized {
            path: Cow::Borrowed(path),
            query,
        });
    }
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    out.push('/');
    // Invariant: `out[..segment_start]` is resolved and ends with '/'; the current segment is
    // `out[segment_start..]`.
    let mut segment_start = 1;
    let mut i = 1;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'/' => {
                end_segment(&mut out, segment_start, true);
                segment_start = out.len();
                i += 1;
            }
            b'%' => {
                let (hi, lo) = match (hex_value(bytes.get(i + 1)), hex_value(bytes.get(i + 2))) {
                    (Some(hi), Some(lo)) => (hi, lo),
                    _ => return Err(PathError::InvalidEscape(i)),
                };
                i += 3;
                match hi << 4 | lo {
                    0 => return Err(PathError::EncodedNul),
                    b'/' => {
                        end_segment(&mut out, segment_start, true);
                        segment_start = out.len();
                    }
                    decoded if is_unreserved(decoded) => out.push(char::from(decoded)),
                    _ => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(hi)]));
                        out.push(char::from(HEX_UPPER[usize::from(lo)]));
                    }
                }
            }
            0x00..=0x1F | 0x7F => return Err(PathError::ControlByte(byte)),
            0x80.. => {
                // Part of a multi-byte character: `i` is a char boundary because every other
                // arm advances over ASCII only.
                let Some(c) = path[i..].chars().next() else {
                    break;
                };
                out.push(c);
                i += c.len_utf8();
            }
            _ => {
                out.push(char::from(byte));
                i += 1;
            }
        }
    }
    end_segment(&mut out, segment_start, false);
    Ok(Normalized {
        path: Cow::Owned(out),
        query,
    })
}

/// Whether the rewriting pass below would give `path` back unchanged: no escape, no control
/// byte, and no empty (`//`), `.` or `..` segment (a trailing slash, an empty last segment,
/// stays). `path` starts with `/`. Every other byte, multi-byte characters included, is copied
/// as it is by that pass.
fn is_canonical(path: &[u8]) -> bool {
    let mut segment_start = 1;
    for (i, &byte) in path.iter().enumerate().skip(1) {
        match byte {
            b'/' => {
                if matches!(&path[segment_start..i], b"" | b"." | b"..") {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' | 0x00..=0x1F | 0x7F => return false,
            _ => {}
        }
    }
    !matches!(&path[segment_start..], b"." | b"..")
}

/// Closes the segment `out[start..]`: drops it if empty or `.`, pops the previous one on `..`,
/// and otherwise appends the separator when one follows.
fn end_segment(out: &mut String, start: usize, slash_follows: bool) {
    match &out[start..] {
        // Repeated slash, or the final segment after a trailing slash (which stays).
        "" => {}
        "." => out.truncate(start),
        ".." => {
            out.truncate(start);
            // `out[..start]` ends with the previous segment's '/'; at the root there is nothing
            // to pop.
            if start > 1 {
                let previous = out[..start - 1].rfind('/').unwrap_or(0);
                out.truncate(previous + 1);
            }
        }
        _ => {
            if slash_follows {
                out.push('/');
            }
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: Option<&u8>) -> Option<u8> {
    match byte? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 2.3: these mean the same escaped or not, so they are always decoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_query_and_reserves_room_for_it() {
        let n = normalize("/a//b?x=%2e&y=/../").unwrap();
        assert_eq!(n.path, "/a/b");
        assert_eq!(n.query, Some("x=%2e&y=/../"));
        let Cow::Owned(path) = &n.path else {
            panic!("a rewritten path is owned");
        };
        assert!(path.capacity() >= path.len() + 1 + n.query.unwrap().len());
    }

    #[test]
    fn bare_question_mark_keeps_an_empty_query() {
        let n = normalize("/a?").unwrap();
        assert_eq!((n.path.as_ref(), n.query), ("/a", Some("")));
    }

    #[test]
    fn canonical_paths_are_borrowed_and_the_rest_rewritten() {
        for canonical in [
            "/",
            "/a",
            "/a/",
            "/a/b.c/..d/.e",
            "/caf\u{e9}",
            "/a/b?x=/../",
        ] {
            let n = normalize(canonical).unwrap();
            assert!(matches!(n.path, Cow::Borrowed(_)), "{canonical}");
        }
        for (raw, want) in [
            ("//", "/"),
            ("/a//b", "/a/b"),
            ("/.", "/"),
            ("/..", "/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/./a", "/a"),
            ("/a/../b", "/b"),
            ("/%7e", "/~"),
        ] {
            let n = normalize(raw).unwrap();
            assert!(matches!(n.path, Cow::Owned(_)), "{raw}");
            assert_eq!(n.path, want, "{raw}");
        }
    }

    #[test]
    fn multibyte_characters_pass_through() {
        assert_eq!(normalize("/caf\u{e9}/./x").unwrap().path, "/caf\u{e9}/x");
    }

    #[test]
    fn reports_where_the_bad_escape_is() {
        assert_eq!(normalize("/ab%g1"), Err(PathError::InvalidEscape(3)));
    }
}
