//! The config loader under hostile edits (issue 16, the stable-Rust half of the config fuzz
//! target): starting from the full reference config, random deletions, insertions, duplicated
//! and swapped lines never panic the parser, and every error it reports points at a real place
//! in the file — a line that exists and a column within it — as `FILE:LINE:COL: message`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;

const REFERENCE: &str = include_str!("../../examples/configs/full-reference.toml");

/// One edit a hurried human (or a broken template) might make.
#[derive(Debug, Clone)]
enum Edit {
    /// Delete `len` bytes at a relative position.
    Delete(f64, usize),
    /// Insert text at a relative position.
    Insert(f64, String),
    /// Repeat the line at a relative position (duplicate keys and tables).
    DuplicateLine(f64),
    /// Swap two lines (keys under the wrong table).
    SwapLines(f64, f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippets = prop::sample::select(vec![
        "\"",
        "'",
        "[",
        "]",
        "{",
        "}",
        "=",
        ",",
        "\n",
        "#",
        "\\",
        "0",
        "-1",
        "1e999",
        "\"0s\"",
        "\"-5s\"",
        "\"99999999999999999999GiB\"",
        "[[routes]]",
        "[clusters.x]",
        "é",
        "\u{0}",
        "\"127.0.0.1:99999\"",
        "true",
        "nan",
        "inf",
        "\"[::1]:80\"",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        (0.0..1.0f64, 1usize..40).prop_map(|(at, len)| Edit::Delete(at, len)),
        (0.0..1.0f64, prop_oneof![snippets, "[ -~]{1,12}"]).prop_map(|(at, s)| Edit::Insert(at, s)),
        (0.0..1.0f64).prop_map(Edit::DuplicateLine),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// The nearest char boundary at or before `at` × len.
fn boundary(text: &str, at: f64) -> usize {
    let mut i = ((text.len() as f64) * at) as usize;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut text: String, edit: &Edit) -> String {
    match edit {
        Edit::Delete(at, len) => {
            let start = boundary(&text, *at);
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(start..end, "");
        }
        Edit::Insert(at, snippet) => {
            let i = boundary(&text, *at);
            text.insert_str(i, snippet);
        }
        Edit::DuplicateLine(at) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = ((lines.len() as f64) * at) as usize % lines.len().max(1);
            if let Some(line) = lines.get(i).copied() {
                lines.insert(i, line);
            }
            text = lines.join("\n");
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let n = lines.len().max(1);
            lines.swap(((n as f64) * a) as usize % n, ((n as f64) * b) as usize % n);
            text = lines.join("\n");
        }
    }
    text
}

proptest! {
    #![proptest_config(crate::support::proptest_config(1500))]

    #[test]
    fn edited_configs_never_panic_and_errors_point_into_the_file(
        edits in prop::collection::vec(edit(), 1..5)
    ) {
        let text = edits.iter().fold(REFERENCE.to_owned(), apply);
        let lines: Vec<&str> = text.split('\n').collect();
        if let Err(errors) = switchyard::config::parse(&text, Path::new("edited.toml")) {
            prop_assert!(!errors.errors.is_empty());
            for error in &errors.errors {
                prop_assert!(error.line >= 1, "no position: {}", error);
                let line = lines.get(error.line - 1);
                prop_assert!(line.is_some(), "line {} of {}: {}", error.line, lines.len(), error);
                let width = line.map_or(0, |l| l.chars().count());
                // A column one past the end points at the line break (a missing value).
                prop_assert!(
                    error.col >= 1 && error.col <= width + 1,
                    "col {} on a line of {} chars: {}", error.col, width, error
                );
                let shown = error.to_string();
                let prefix = format!("edited.toml:{}:{}: ", error.line, error.col);
                prop_assert!(shown.starts_with(&prefix), "{}", shown);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\n\t]{0,400}") {
        let _ = switchyard::config::parse(&text, Path::new("noise.toml"));
    }
}
