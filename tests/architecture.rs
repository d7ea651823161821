//! The layering of `src/`'s top-level modules, as `docs/architecture.md` (section `## Layers`)
//! states it: a module may use (`crate::<module>`) only modules in lower rows of the table, and
//! every top-level module must be in the table. The doc is the source of truth; this test reads
//! it, so changing the layering means changing the doc.
//!
//! std only, no parser crate: the checker strips comments, string and char literals (keeping
//! line breaks, so positions stay right), then finds every `crate::` path, including each item
//! of a `crate::{a, b::c}` group. Not seen: `super::super::…` climbing out of a top-level module
//! (none does) and paths built by macros.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The table: module name → row (0 is the bottom).
type Layers = BTreeMap<String, usize>;

#[test]
fn top_level_modules_use_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let layers = parse_layers(&doc).unwrap_or_else(|e| panic!("docs/architecture.md: {e}"));
    let src = root.join("src");
    let modules = top_level_modules(&src);
    let mut files = Vec::new();
    collect_rs(&src, &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|path| {
            let text = fs::read_to_string(path).expect("source file is readable");
            let shown = path.strip_prefix(root).unwrap_or(path);
            (shown.display().to_string(), text)
        })
        .collect();
    let problems = check(&layers, &modules, &sources);
    assert!(
        problems.is_empty(),
        "layering broken (see docs/architecture.md, section Layers):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_reports_a_forbidden_import() {
    let layers = parse_layers(SYNTHETIC_DOC).expect("synthetic table parses");
    let modules = vec!["low".to_owned(), "high".to_owned()];
    let sources = vec![
        (
            "src/low/mod.rs".to_owned(),
            "//! Mentions crate::high in a doc comment: fine.\n\
             use std::fmt;\n\
             /* crate::high in a block comment: fine */\n\
             const S: &str = \"crate::high in a string: fine\";\n\
             use crate::{config, high::Thing};\n\
             fn f() { crate::high::call(); }\n"
                .to_owned(),
        ),
        (
            "src/high/mod.rs".to_owned(),
            "use crate::low::Item;\n".to_owned(),
        ),
    ];
    let problems = check(&layers, &modules, &sources);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("src/low/mod.rs:5:"),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("`low`") && problems[0].contains("`high`"));
    assert!(
        problems[1].starts_with("src/low/mod.rs:6:"),
        "{}",
        problems[1]
    );
}

#[test]
fn the_checker_reports_an_unlisted_module() {
    let layers = parse_layers(SYNTHETIC_DOC).expect("synthetic table parses");
    let modules = vec!["low".to_owned(), "high".to_owned(), "stray".to_owned()];
    let problems = check(&layers, &modules, &[]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("`stray`"), "{}", problems[0]);
}

#[test]
fn the_checker_reports_a_same_row_import() {
    let doc = "## Layers\n\n| row | modules | why |\n|---|---|---|\n| 0 | `a`, `b` | x |\n";
    let layers = parse_layers(doc).expect("table parses");
    let modules = vec!["a".to_owned(), "b".to_owned()];
    let sources = vec![("src/a.rs".to_owned(), "use crate::b;\n".to_owned())];
    let problems = check(&layers, &modules, &sources);
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

const SYNTHETIC_DOC: &str = "# x\n\n## Layers\n\n\
    | row | modules | why |\n|---|---|---|\n\
    | 1 | `high` | on top |\n| 0 | `low` | at the bottom |\n\n## Next\n\n| 9 | `ignored` | x |\n";

/// Reads the `## Layers` table: rows `| N | `a`, `b` | why |`; the header and separator rows
/// (no number in the first cell) are skipped. Errors on a module listed twice or no row at all.
fn parse_layers(doc: &str) -> Result<Layers, String> {
    let start = if doc.starts_with("## Layers") {
        0
    } else {
        doc.find("\n## Layers").ok_or("no `## Layers` section")? + 1
    };
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut layers = Layers::new();
    for line in section[..end].lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        let Some(row) = cells.first().and_then(|c| c.trim().parse::<usize>().ok()) else {
            continue;
        };
        let names = cells
            .get(1)
            .ok_or_else(|| format!("row {row} lists no modules"))?;
        for name in names.split(',') {
            let name = name.trim().trim_matches('`').trim();
            if name.is_empty() {
                continue;
            }
            if layers.insert(name.to_owned(), row).is_some() {
                return Err(format!("module `{name}` is listed twice"));
            }
        }
    }
    if layers.is_empty() {
        return Err("the Layers section has no table rows".to_owned());
    }
    Ok(layers)
}

/// Every violation, as `FILE:LINE: ...` lines, sorted as found; `sources` are (path shown,
/// text) pairs of files under `src/<module>/` or `src/<module>.rs`.
fn check(layers: &Layers, modules: &[String], sources: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for module in modules {
        if !layers.contains_key(module) {
            problems.push(format!(
                "src/{module}: top-level module `{module}` is not in the Layers table"
            ));
        }
    }
    for name in layers.keys() {
        if !modules.contains(name) {
            problems.push(format!(
                "docs/architecture.md: the Layers table lists `{name}`, which src/ does not have"
            ));
        }
    }
    for (path, text) in sources {
        let Some(from) = owning_module(path) else {
            continue;
        };
        let Some(&from_row) = layers.get(&from) else {
            continue;
        };
        for (line, to) in crate_references(&strip(text)) {
            if to == from || !modules.contains(&to) {
                continue;
            }
            match layers.get(&to) {
                Some(&to_row) if to_row < from_row => {}
                Some(&to_row) => problems.push(format!(
                    "{path}:{line}: `{from}` (row {from_row}) uses `{to}` (row {to_row}); a \
                     module may use only modules in lower rows"
                )),
                None => problems.push(format!(
                    "{path}:{line}: `{from}` uses `{to}`, which the Layers table does not list"
                )),
            }
        }
    }
    problems
}

/// `src/balance/p2c.rs` → `balance`, `src/demo.rs` → `demo`; `lib.rs` and `main.rs` belong to
/// no module.
fn owning_module(path: &str) -> Option<String> {
    let normal = path.replace('\\', "/");
    let rest = normal.split("src/").nth(1)?;
    let first = rest.split('/').next()?;
    if rest.contains('/') {
        return Some(first.to_owned());
    }
    let name = first.strip_suffix(".rs")?;
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The top-level modules: `src/*.rs` but `lib.rs` and `main.rs`, and `src/*/` folders.
fn top_level_modules(src: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(src)
        .expect("src/ is readable")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?.to_owned();
            if path.is_dir() {
                Some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_owned())
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("folder is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` with comments (line, doc, nested block), string literals (plain, byte, raw) and char
/// literals replaced by spaces; line breaks are kept so line numbers stay right.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident_before(&chars, i) {
            // A raw string r"…" or r#"…"#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &skipped in &chars[i..j.min(chars.len())] {
                out.push(blank(skipped));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&skipped) = chars.get(i) {
                    out.push(blank(skipped));
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\\') {
                j += 1;
            }
            j += 1;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            for _ in i..=j.min(chars.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Every `crate::<name>` in stripped source, with its 1-based line; a group
/// `crate::{a, b::{c, d}}` yields `a` and `b`. `$crate::` (macros) is not ours to judge.
fn crate_references(code: &str) -> Vec<(usize, String)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = code[from..].find("crate::") {
        let at = from + offset;
        from = at + "crate::".len();
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            continue;
        }
        let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
        let rest = &code[from..];
        if rest.starts_with('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item_start = from + 1;
            for (k, ch) in rest.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let slice = &code[item_start..from + k];
                        let item = slice.trim_start();
                        let lead = item_start + (slice.len() - item.len());
                        if let Some(name) = first_segment(item) {
                            found.push((line_of(lead), name));
                        }
                        item_start = from + k + 1;
                        if ch == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else if let Some(name) = first_segment(rest) {
            found.push((line_of(at), name));
        }
    }
    found
}

/// The leading identifier of a path (`balance::{self, X}` → `balance`); `self` and empty items
/// name no module.
fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}
