//! `FILE:LINE:COL: message` errors, and the byte-offset -> line:col mapping behind them.
//!
//! toml reports positions as byte ranges; users and editors want 1-based lines and columns
//! (columns counted in characters, so a non-ASCII string before the error does not shift it).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file, located at the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 means the error concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based, in characters; 0 together with `line == 0`.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one config file, sorted by position: `check` and reload print them all
/// at once, so a user fixes a file in one pass instead of one error per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// A single error about the whole file (unreadable, not UTF-8).
    pub(crate) fn whole_file(file: &Path, message: String) -> Self {
        Self {
            errors: vec![ConfigError {
                file: file.to_path_buf(),
                line: 0,
                col: 0,
                message,
            }],
        }
    }
}

/// Maps byte offsets of one document to line:col.
pub(crate) struct Locator<'a> {
    text: &'a str,
    file: PathBuf,
    /// Byte offset at which each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str, file: &Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            text,
            file: file.to_path_buf(),
            line_starts,
        }
    }

    /// 1-based line and column of a byte offset (clamped to the document).
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let col = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            None => offset - start,
        };
        (line, col + 1)
    }

    /// An error located at the start of `span`.
    pub(crate) fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = self.position(span.start);
        ConfigError {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        }
    }

    pub(crate) fn file(&self) -> &Path {
        &self.file
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nb = \"é\" x\n\nlast";
        let loc = Locator::new(text, Path::new("f.toml"));
        assert_eq!(loc.position(0), (1, 1));
        assert_eq!(loc.position(4), (1, 5));
        assert_eq!(loc.position(6), (2, 1));
        // 'x' comes after the two-byte 'é': byte column 10, character column 9.
        assert_eq!(loc.position(text.find('x').unwrap()), (2, 9));
        assert_eq!(loc.position(text.find("last").unwrap()), (4, 1));
        assert_eq!(loc.position(10_000), (4, 5));
    }

    #[test]
    fn display_formats() {
        let loc = Locator::new("x\ny", Path::new("dir/f.toml"));
        let errors = ConfigErrors {
            errors: vec![loc.error(&(2..3), "bad y"), loc.error(&(0..1), "bad x")],
        };
        assert_eq!(
            errors.to_string(),
            "dir/f.toml:2:1: bad y\ndir/f.toml:1:1: bad x"
        );
        let whole = ConfigErrors::whole_file(Path::new("f.toml"), "cannot read: gone".into());
        assert_eq!(whole.to_string(), "f.toml: cannot read: gone");
    }
}
