//! Hints for syntax errors that point to the real mistake.
//!
//! Rhai's parser reports where it gave up, which is often not where the policy lead went wrong:
//! a missing `)` is reported as a missing `,`, `or` for `||` as a missing `{`, a missing `;` on
//! the next line, a missing `}` at the end of the file. [`diagnose`] looks at the source around
//! the error and says what to fix, and where. `tests/syntax_errors.toml` is the table of common
//! mistakes and the message each must produce.

use rhai::{ParseError, ParseErrorType};

use super::diagnostics::Diagnostic;
use super::result::parse_message;
use super::sources::SourceFile;
use crate::suggest::did_you_mean;

/// A syntax error as a diagnostic, moved to the real mistake where that can be found.
pub(super) fn diagnose(file: &SourceFile, e: &ParseError) -> Diagnostic {
    let pos = e.position();
    let lines: Vec<&str> = file.text.lines().collect();
    let line = pos.line().unwrap_or(lines.len().max(1));
    let at = |l: usize, c: usize, msg: String, help: String| Diagnostic::at("syntax", file, Some(l), Some(c), msg).with_help(help);
    let current = lines.get(line.saturating_sub(1)).copied().unwrap_or("");

    // Words other languages use for the logical operators.
    for (word, op) in [(" or ", "||"), (" and ", "&&"), ("not ", "!")] {
        if let Some(i) = find_word(current, word) {
            return at(line, i + 1, format!("`{}` is not an operator in rules scripts", word.trim()), format!("write `{op}` instead of `{}`", word.trim()));
        }
    }

    // Brackets: the first one opened and never closed, or closed without being opened.
    let at_end = pos.is_none() || line > lines.len();
    let col = if at_end { usize::MAX } else { pos.position().unwrap_or(usize::MAX) };
    if let Some((l, c, open)) = unclosed(&file.text, if at_end { lines.len() } else { line }, col) {
        let close = match open {
            '(' => ')',
            '[' => ']',
            _ => '}',
        };
        // A `(` or `[` still open where the parser stopped is the mistake; a `{` only when the
        // file ended inside it.
        if (open != '{' && l < line) || at_end {
            return at(l, c, format!("this `{open}` is never closed"), format!("add the missing `{close}`"));
        }
    }

    match e.err_type() {
        ParseErrorType::MissingToken(t, _) if t == ";" => {
            // Reported where the next statement starts: the `;` belongs at the end of the
            // previous non-blank line.
            let prev = (1..line).rev().find(|l| !lines[l - 1].trim().is_empty() && !lines[l - 1].trim_start().starts_with("//"));
            match prev {
                Some(p) if pos.position().is_some_and(|c| c <= first_col(current)) => {
                    at(p, lines[p - 1].trim_end().chars().count() + 1, "missing `;`".into(), "end the statement with `;`".into())
                }
                _ => at(line, pos.position().unwrap_or(1), parse_message(e), "end the statement with `;`".into()),
            }
        }
        ParseErrorType::VariableUndefined(v) if v != "facts" => {
            let names = defined_names(&file.text);
            let help = match did_you_mean(v, names.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("`{v}` is not defined here; define it with `let {v} = …;` (or `const`) first, or use `facts.{v}` for a fact"),
            };
            Diagnostic::rhai("syntax", file, pos, parse_message(e)).with_help(help)
        }
        ParseErrorType::MissingToken(t, _) => Diagnostic::rhai("syntax", file, pos, parse_message(e)).with_help(format!("add the missing `{t}`")),
        _ => {
            let d = Diagnostic::rhai("syntax", file, pos, parse_message(e));
            if pos.line().is_none() { d.with_help("the file ended before the script was complete") } else { d }
        }
    }
}

fn first_col(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).count() + 1
}

fn find_word(line: &str, word: &str) -> Option<usize> {
    let code = strip_strings_and_comments(line);
    code.find(word).map(|i| if word.starts_with(' ') { i + 1 } else { i })
}

/// The line with string contents and comments blanked, so brackets and words in them are not
/// counted.
fn strip_strings_and_comments(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' {
                    chars.next();
                    out.push_str("  ");
                    continue;
                }
                if c == q {
                    quote = None;
                    out.push(c);
                } else {
                    out.push(' ');
                }
            }
            None => {
                if c == '/' && chars.peek() == Some(&'/') {
                    break;
                }
                if c == '"' || c == '`' || c == '\'' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// The innermost bracket still open where the parser gave up (1-based line and column).
fn unclosed(text: &str, upto_line: usize, upto_col: usize) -> Option<(usize, usize, char)> {
    let mut stack: Vec<(usize, usize, char)> = Vec::new();
    for (i, raw) in text.lines().enumerate().take(upto_line) {
        let line = strip_strings_and_comments(raw);
        for (c_i, c) in line.chars().enumerate() {
            if i + 1 == upto_line && c_i + 1 >= upto_col {
                break;
            }
            match c {
                '(' | '[' | '{' => stack.push((i + 1, c_i + 1, c)),
                ')' | ']' | '}' => {
                    stack.pop();
                }
                _ => {}
            }
        }
    }
    stack.pop()
}

fn defined_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        for kw in ["const ", "let ", "fn "] {
            if let Some(rest) = t.strip_prefix(kw) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}
