//! Hints for syntax errors that point to the real mistake.
//!
//! Rhai's parser reports where it gave up, which is often not where the policy lead went wrong:
//! a missing `)` is reported as a missing `,`, `or` for `||` as a missing `{`, a missing `;` on
//! the next line, a missing `}` at the end of the file. [`diagnose`] looks at the source around
//! the error and says what to fix, and where. `tests/syntax_errors.toml` is the table of common
//! mistakes and the message each must produce.

use rhai::{LexError, ParseError, ParseErrorType};

use super::diagnostics::Diagnostic;
use super::result::parse_message;
use super::sources::SourceFile;
use crate::suggest::did_you_mean;

/// A syntax error as a diagnostic, moved to the real mistake where that can be found.
///
/// The checks run from the most specific to the most general: words and symbols from other
/// languages on the line where the parser stopped (`or`, `elif`, `<>`, `#`, single quotes, `=`
/// in a condition, an unclosed text), then brackets (a `)` with no `(`, a `(`, `[` or `{` never
/// closed), then an `if` whose lines are not in braces, then a `;` missing at the end of the
/// previous line, and finally Rhai's own message with a hint.
pub(super) fn diagnose(file: &SourceFile, e: &ParseError) -> Diagnostic {
    let pos = e.position();
    let lines: Vec<&str> = file.text.lines().collect();
    let line = pos.line().unwrap_or(lines.len().max(1));
    let at = |l: usize, c: usize, msg: String, help: String| Diagnostic::at("syntax", file, Some(l), Some(c), msg).with_help(help);
    let current = lines.get(line.saturating_sub(1)).copied().unwrap_or("");
    let code = strip_strings_and_comments(current);
    let err_col = pos.position().unwrap_or(1);
    // The character the parser stopped at (None past the end of the line).
    let stopped_at = current.chars().nth(err_col.saturating_sub(1));

    // Comments start with `//`, not `#`.
    if code.trim_start().starts_with('#') {
        return at(line, first_col(current), "`#` does not start a comment in rules scripts".into(), "start a comment with `//`".into());
    }
    // Words other languages use for the logical operators, and `elif`.
    for (word, op) in [(" or ", "||"), (" and ", "&&"), ("not ", "!")] {
        if let Some(i) = find_word(current, word) {
            return at(line, i + 1, format!("`{}` is not an operator in rules scripts", word.trim()), format!("write `{op}` instead of `{}`", word.trim()));
        }
    }
    for (word, fix) in [("elif", "else if"), ("elsif", "else if"), ("elseif", "else if")] {
        if let Some(i) = find_identifier(&code, word) {
            return at(line, i + 1, format!("`{word}` is not a keyword in rules scripts"), format!("write `{fix}` instead of `{word}`"));
        }
    }
    // Comparison operators from other languages.
    for (sym, fix, meaning) in [("<>", "!=", "differs"), ("=>", ">=", "at least"), ("=<", "<=", "at most"), ("===", "==", "equals"), ("!==", "!=", "differs")] {
        if let Some(i) = code.find(sym) {
            return at(line, i + 1, format!("`{sym}` is not an operator in rules scripts"), format!("write `{fix}` ({meaning}) instead of `{sym}`"));
        }
    }
    // Text in single quotes ('yes' is one character too many for Rhai's character literal).
    if let Some((i, word)) = single_quoted(current) {
        return at(line, i + 1, format!("'{word}' is in single quotes"), format!("write text in double quotes: \"{word}\""));
    }
    match e.err_type() {
        ParseErrorType::BadInput(LexError::UnterminatedString) => {
            return at(line, err_col, "this text is never closed".into(), "end the text with `\"` on the same line (a `\"` inside text is written `\\\"`)".into());
        }
        ParseErrorType::BadInput(LexError::ImproperSymbol(sym, _)) if sym == "=" => {
            return at(line, err_col, "`=` in a condition sets a value; it does not compare".into(), "write `==` to compare (and `!=` for differs)".into());
        }
        _ => {}
    }

    // Brackets: a closing one with nothing to close, or one opened and never closed.
    let at_end = pos.is_none() || line > lines.len();
    if !at_end {
        if let Some((l, c, close)) = unmatched_close(&file.text, line) {
            let open = match close {
                ')' => '(',
                ']' => '[',
                _ => '{',
            };
            return at(l, c, format!("this `{close}` has no matching `{open}`"), format!("remove it, or add the missing `{open}` before it"));
        }
    }
    let col = if at_end { usize::MAX } else { err_col };
    if let Some((l, c, open)) = unclosed(&file.text, if at_end { lines.len() } else { line }, col) {
        let close = match open {
            '(' => ')',
            '[' => ']',
            _ => '}',
        };
        // Where the parser stopped at the end of a statement, or on a later line, the open `(`
        // or `[` is the mistake; a `{` only when the file ended inside it.
        let statement_end = matches!(stopped_at, None | Some(';' | '{' | '}'));
        if (open != '{' && (l < line || statement_end)) || at_end {
            return at(l, c, format!("this `{open}` is never closed"), format!("add the missing `{close}`"));
        }
        // `f(a "b")`: the parser wanted a `,` before the next argument.
        if open == '(' && matches!(e.err_type(), ParseErrorType::MissingToken(t, _) if t == ",") {
            return at(line, err_col, "missing `,` between two arguments".into(), "separate the arguments with `,`".into());
        }
    }

    match e.err_type() {
        ParseErrorType::MissingToken(t, _) if t == "{" => {
            // `if condition` with the lines it governs on the next line and no braces.
            let prev = (1..line).rev().find(|l| is_code(lines[l - 1]));
            let governs = |l: &str| ["if ", "else", "while ", "for ", "loop"].iter().any(|k| l.trim_start().starts_with(k));
            match prev {
                Some(p) if err_col <= first_col(current) && governs(lines[p - 1]) && !lines[p - 1].trim_end().ends_with('{') => {
                    let kw: String = lines[p - 1].trim_start().chars().take_while(|c| c.is_alphabetic()).collect();
                    at(p, first_col(lines[p - 1]), format!("`{kw}` needs its lines in `{{ … }}`"), "put `{` at the end of the condition, and `}` after the lines it governs".into())
                }
                _ => Diagnostic::rhai("syntax", file, pos, parse_message(e)).with_help("add the missing `{`"),
            }
        }
        ParseErrorType::MissingToken(t, _) if t == ";" => {
            // Reported where the next statement starts: the `;` belongs at the end of the
            // previous line with code on it.
            let prev = (1..line).rev().find(|l| is_code(lines[l - 1]));
            match prev {
                Some(p) if err_col <= first_col(current) => {
                    at(p, lines[p - 1].trim_end().chars().count() + 1, "missing `;`".into(), "end the statement with `;`".into())
                }
                _ => at(line, err_col, parse_message(e), "end the statement with `;`".into()),
            }
        }
        ParseErrorType::VariableUndefined(v) if v != "facts" => {
            let lower = v.to_ascii_lowercase();
            let help = if matches!(lower.as_str(), "true" | "false") {
                format!("write `{lower}` (in lower case)")
            } else if matches!(lower.as_str(), "null" | "none" | "nil" | "undefined") {
                "there is no empty value to compare with: test whether a fact was given with `\"name\" in facts`".to_string()
            } else {
                let names = defined_names(&file.text);
                match did_you_mean(v, names.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("`{v}` is not defined here; define it with `let {v} = …;` (or `const`) first, or use `facts.{v}` for a fact"),
                }
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

/// A line with code on it (not blank, not only a comment).
fn is_code(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with("//")
}

/// `word` as a whole identifier in `code`: its 0-based char column.
fn find_identifier(code: &str, word: &str) -> Option<usize> {
    let is_id = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = code.chars().collect();
    let w: Vec<char> = word.chars().collect();
    (0..chars.len().saturating_sub(w.len() - 1)).find(|&i| {
        chars[i..].starts_with(&w) && (i == 0 || !is_id(chars[i - 1])) && chars.get(i + w.len()).is_none_or(|c| !is_id(*c))
    })
}

/// `'text'` of two or more characters outside double-quoted text and comments: its 0-based
/// column and the text.
fn single_quoted(line: &str) -> Option<(usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    // Inside "…" or `…` text an apostrophe is just an apostrophe.
    let mut in_double: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            q @ ('"' | '`') if in_double.is_none_or(|d| d == q) => in_double = if in_double.is_some() { None } else { Some(q) },
            '/' if in_double.is_none() && chars.get(i + 1) == Some(&'/') => return None,
            '\'' if in_double.is_none() => {
                let end = chars[i + 1..].iter().position(|c| *c == '\'')?;
                if end >= 2 {
                    return Some((i, chars[i + 1..i + 1 + end].iter().collect()));
                }
                i += end + 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The first closing bracket, up to the end of line `upto_line`, that closes nothing or closes
/// a different kind of bracket (1-based line and column).
fn unmatched_close(text: &str, upto_line: usize) -> Option<(usize, usize, char)> {
    let mut stack: Vec<char> = Vec::new();
    for (i, raw) in text.lines().enumerate().take(upto_line) {
        for (c_i, c) in strip_strings_and_comments(raw).chars().enumerate() {
            match c {
                '(' | '[' | '{' => stack.push(c),
                ')' | ']' | '}' => {
                    let want = match c {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    };
                    if stack.pop() != Some(want) {
                        return Some((i + 1, c_i + 1, c));
                    }
                }
                _ => {}
            }
        }
    }
    None
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
