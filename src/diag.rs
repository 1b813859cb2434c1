//! Diagnostics: problems found in config and route files, located by file, line and
//! column, so that `check`, start-up and reloads all print them the same way.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file. `line` and `column` are 1-based; 0 means "the whole file".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {kind}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {kind}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Turns byte offsets of one file's text into line and column, collecting diagnostics.
pub struct SourceFile<'a> {
    pub path: &'a Path,
    text: &'a str,
    /// Byte offset of each line's start, so a position is a binary search, not a scan
    /// (a 10,000-route file asks for one per route).
    line_starts: Vec<usize>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> SourceFile<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(
                text.bytes()
                    .enumerate()
                    .filter(|&(_, b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        SourceFile {
            path,
            text,
            line_starts,
            diagnostics: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset, clamped to the text.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    pub fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.push(Severity::Error, span, message.into());
    }

    pub fn warning(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.push(Severity::Warning, span, message.into());
    }

    fn push(&mut self, severity: Severity, span: Option<Range<usize>>, message: String) {
        let (line, column) = span.map_or((0, 0), |s| self.position(s.start));
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.path.to_path_buf(),
            line,
            column,
            message,
        });
    }

    /// Records a TOML parse or schema error, whose message from the toml crate already
    /// names the problem; only its first line is kept (the rest is a source excerpt).
    pub fn toml_error(&mut self, err: &toml::de::Error) {
        let message = err.message().trim().replace('\n', " ");
        self.error(err.span(), message);
    }
}

/// All diagnostics of one load, errors first within each file order.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// A report of one error about a whole file or folder (no line).
    pub fn whole_file_error(file: &Path, message: impl Into<String>) -> Report {
        Report {
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: message.into(),
            }],
        }
    }

    pub fn extend(&mut self, more: impl IntoIterator<Item = Diagnostic>) {
        self.diagnostics.extend(more);
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nné = 2\n";
        let src = SourceFile::new(Path::new("f.toml"), text);
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(4), (1, 5));
        assert_eq!(src.position(6), (2, 1));
        // 'é' is two bytes: the '=' after "né " is the 4th character of line 2.
        assert_eq!(src.position(6 + "né ".len()), (2, 4));
        assert_eq!(src.position(10_000), (3, 1));
    }

    #[test]
    fn display_names_file_line_and_column() {
        let mut src = SourceFile::new(Path::new("routes/a.toml"), "x\ny = 3\n");
        src.error(Some(2..3), "bad y");
        src.warning(None, "whole file");
        assert_eq!(
            src.diagnostics[0].to_string(),
            "routes/a.toml:2:1: error: bad y"
        );
        assert_eq!(
            src.diagnostics[1].to_string(),
            "routes/a.toml: warning: whole file"
        );
    }
}
