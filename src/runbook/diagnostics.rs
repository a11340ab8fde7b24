//! Errors that point at a place in the runbook file: `file:line:col`, the line, a caret.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a runbook, located by byte offsets into its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Range<usize>,
    /// A hint on how to fix it, printed under the caret.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A line and column (both 1-based) with the text of that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub line_text: String,
}

/// The runbook text with the path it came from, able to turn offsets into locations.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl AsRef<Path>, text: String) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            text,
        }
    }

    /// Where a byte offset falls; the column counts characters, not bytes.
    pub fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        Location {
            line,
            column,
            line_text: self.text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
        }
    }

    /// Renders a diagnostic the way compilers do, so an editor can jump to it.
    pub fn render(&self, diagnostic: &Diagnostic) -> String {
        let loc = self.locate(diagnostic.span.start);
        let width = loc.line.to_string().len();
        let span_chars = self.text[floor_char_boundary(&self.text, diagnostic.span.start)
            ..floor_char_boundary(&self.text, diagnostic.span.end.max(diagnostic.span.start))]
            .chars()
            .take_while(|c| *c != '\n')
            .count()
            .max(1);
        let mut out = format!(
            "{}:{}:{}: error: {}\n{:width$} |\n{} | {}\n{:width$} | {}{}",
            self.path.display(),
            loc.line,
            loc.column,
            diagnostic.message,
            "",
            loc.line,
            loc.line_text,
            "",
            " ".repeat(loc.column - 1),
            "^".repeat(span_chars),
        );
        if let Some(help) = &diagnostic.help {
            out.push_str(&format!("\n{:width$} = help: {}", "", help));
        }
        out
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// All the problems of one runbook file; `Display` renders every one of them.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub source: SourceFile,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{}", self.source.render(d))?;
        }
        let n = self.items.len();
        write!(
            f,
            "{}: {} error{}",
            self.source.path.display(),
            n,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column_in_characters() {
        let src = SourceFile::new("r.toml", "a = 1\nbé = \"x\"\n".to_string());
        let loc = src.locate(src.text.find('=').map_or(0, |_| 10));
        assert_eq!(loc.line, 2);
        assert_eq!(loc.line_text, "bé = \"x\"");
        assert_eq!(loc.column, 4);
    }

    #[test]
    fn renders_caret_under_span() {
        let src = SourceFile::new("r.toml", "x = 1\ntiemout = 3\n".to_string());
        let d =
            Diagnostic::new(6..13, "unknown key `tiemout`").with_help("did you mean `timeout`?");
        let text = src.render(&d);
        assert!(
            text.starts_with("r.toml:2:1: error: unknown key `tiemout`"),
            "{text}"
        );
        assert!(text.contains("2 | tiemout = 3"), "{text}");
        assert!(text.contains("  | ^^^^^^^"), "{text}");
        assert!(text.contains("= help: did you mean `timeout`?"), "{text}");
    }
}
