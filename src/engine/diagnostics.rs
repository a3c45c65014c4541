//! One diagnostic type for every problem found in a rule set, wherever it was found.
//!
//! `check`, `test`, hot reload and the CLI all report problems the same way: a stable code, the
//! file with line and column, the offending source line, what is wrong and how to fix it. A
//! [`Diagnostic`] is built only through its constructors (so `file:line:col` is formatted in one
//! place, [`Location`]'s `Display`), and implements [`miette::Diagnostic`], so the CLI draws it
//! with miette's renderer — source excerpt, caret and help — rather than by hand.

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use super::sources::SourceFile;

/// Where a problem is: a file relative to the rules folder, and a 1-based line and column
/// when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// File, relative to the rules folder (`york/plan_type.rhai`).
    pub file: String,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
}

impl Location {
    /// A whole file.
    pub fn file(file: impl Into<String>) -> Self {
        Location { file: file.into(), line: None, column: None }
    }
    /// A line and column in a file.
    pub fn at(file: impl Into<String>, line: Option<usize>, column: Option<usize>) -> Self {
        Location { file: file.into(), line, column }
    }
    /// A Rhai position in a file.
    pub fn rhai(file: impl Into<String>, pos: rhai::Position) -> Self {
        Location { file: file.into(), line: pos.line(), column: pos.position() }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}", self.file),
            (Some(l), None) => write!(f, "{}:{l}", self.file),
            _ => write!(f, "{}", self.file),
        }
    }
}

/// One problem found while compiling, checking or testing a rule set.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// A stable code for the kind of problem (`syntax`, `unknown-helper`, `unknown-fact`, …).
    pub code: &'static str,
    /// Where.
    #[serde(flatten)]
    pub location: Location,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// The offending source line.
    pub source_line: Option<String>,
    #[serde(skip)]
    source: Option<Arc<NamedSource<String>>>,
    #[serde(skip)]
    span: Option<SourceSpan>,
}

impl PartialEq for Diagnostic {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.location == other.location
            && self.message == other.message
            && self.help == other.help
            && self.source_line == other.source_line
    }
}
impl Eq for Diagnostic {}

impl Diagnostic {
    /// A problem at a 1-based line and column of `file` (or the whole file when `line` is
    /// `None`), quoting the line and keeping the file's text for a rendered excerpt.
    pub fn at(code: &'static str, file: &SourceFile, line: Option<usize>, column: Option<usize>, message: impl Into<String>) -> Self {
        let source_line = line.and_then(|l| file.text.lines().nth(l.saturating_sub(1))).map(str::to_string);
        let span = line.map(|l| {
            let start: usize = file.text.split_inclusive('\n').take(l.saturating_sub(1)).map(str::len).sum();
            let col_bytes = source_line
                .as_deref()
                .map(|s| s.char_indices().nth(column.unwrap_or(1).saturating_sub(1)).map_or(s.len(), |(i, _)| i))
                .unwrap_or(0);
            let len = source_line.as_deref().map_or(0, |s| {
                let rest = &s[col_bytes.min(s.len())..];
                rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len()).max(1).min(rest.len().max(1))
            });
            SourceSpan::new((start + col_bytes).min(file.text.len()).into(), len.min(file.text.len().saturating_sub(start + col_bytes)))
        });
        Diagnostic {
            code,
            location: Location::at(file.path.clone(), line, column),
            message: message.into(),
            help: None,
            source_line,
            source: Some(Arc::new(NamedSource::new(file.path.clone(), file.text.clone()))),
            span,
        }
    }

    /// A problem at a Rhai position.
    pub fn rhai(code: &'static str, file: &SourceFile, pos: rhai::Position, message: impl Into<String>) -> Self {
        Diagnostic::at(code, file, pos.line(), pos.position(), message)
    }

    /// A problem at a byte offset of `file` (TOML parse errors give spans).
    pub fn at_offset(code: &'static str, file: &SourceFile, offset: usize, message: impl Into<String>) -> Self {
        let before = &file.text[..offset.min(file.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic::at(code, file, Some(line), Some(column), message)
    }

    /// A problem with a whole file (or a file that could not be read).
    pub fn whole_file(code: &'static str, file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            location: Location::file(file),
            message: message.into(),
            help: None,
            source_line: None,
            source: None,
            span: None,
        }
    }

    /// The same problem with a hint on how to fix it.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The same problem with an optional hint.
    #[must_use]
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// `file:line:col: message (help)`, for logs and status messages.
    pub fn one_line(&self) -> String {
        match &self.help {
            Some(h) => format!("{}: {} ({h})", self.location, self.message),
            None => format!("{}: {}", self.location, self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match (&self.source, self.span) {
            (Some(s), Some(_)) => Some(&**s as &dyn miette::SourceCode),
            _ => None,
        }
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.span.map(|s| Box::new(std::iter::once(LabeledSpan::new_with_span(Some("here".into()), s))) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
}

/// Draws diagnostics as a person reads them: the location, an excerpt of the source with a
/// caret, and the help. No colour, so the text is the same in a terminal, a log or a test.
pub fn render(diags: &[Diagnostic]) -> String {
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_context_lines(1);
    let mut out = String::new();
    for d in diags {
        out.push_str(&format!("{}: {}\n", d.location, d.code));
        if handler.render_report(&mut out, d).is_err() {
            out.push_str(&d.one_line());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_excerpt_and_help() {
        let file = SourceFile { path: "york/x.rhai".into(), text: "let a = 1;\nlet b = facts.agee;\n".into() };
        let d = Diagnostic::at("unknown-fact", &file, Some(2), Some(15), "`agee` is not a fact").with_help("did you mean `facts.age`?");
        assert_eq!(d.one_line(), "york/x.rhai:2:15: `agee` is not a fact (did you mean `facts.age`?)");
        let text = render(&[d]);
        assert!(text.contains("york/x.rhai:2:15"), "{text}");
        assert!(text.contains("let b = facts.agee;"), "{text}");
        assert!(text.contains("did you mean `facts.age`?"), "{text}");
    }
}
