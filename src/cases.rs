//! Test cases as data: the same case files run in `cargo test` and in `cpc-rules test`.
//!
//! Each partnership keeps its cases beside its scripts, in `rules/<id>/tests/*.toml`. A case
//! gives the facts and what the decision must be: its outcome, the rule ids of its reasons in
//! order, its action codes (with due dates where they matter) in order, and kind-specific
//! details — or the field a bad request must be refused for. Parsing and running are pure, so
//! the store, the CLI and the test harness share them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{Diagnostic, RuleSet, SourceFile};
use crate::model::{Decision, DecisionRequest};

/// One test case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// File the case came from.
    pub file: String,
    /// 1-based line of the case's `[[case]]` header, for failure reports.
    pub line: usize,
    /// Its position among the file's `[[case]]` entries (0-based), for rewriting it.
    pub index: usize,
    /// What the case is about, in words.
    pub name: String,
    /// The decision kind.
    pub kind: String,
    /// The facts sent.
    pub facts: Value,
    /// Today's date for the case (for facts that default to today): the case's `today`, or
    /// [`CASE_TODAY`], so every run of a case is the same.
    pub today: chrono::NaiveDate,
    /// What must come back.
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The outcome code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Rule ids of the reasons, exactly and in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
    /// Actions, exactly and in order: a code, or a code with its due date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ExpectAction>>,
    /// Complaint grounds' routes, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Plan categories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Whether any reason must (true) or must not (false) be an assumption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assumption: Option<bool>,
    /// The request must be refused as invalid, naming this field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_field: Option<String>,
}

/// An expected action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectAction {
    /// Just the code.
    Code(String),
    /// Code and due date.
    Dated {
        /// Action code.
        code: String,
        /// `YYYY-MM-DD`, or absent to require no due date.
        due_date: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDe {
    name: String,
    kind: Option<String>,
    #[serde(default)]
    today: Option<toml::value::Datetime>,
    facts: toml::Value,
    expect: Expect,
}

/// The date a case runs on when it does not give `today`: fixed, so a case is deterministic.
pub const CASE_TODAY: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(2025, 6, 2) {
    Some(d) => d,
    None => chrono::NaiveDate::MIN,
};

/// Converts TOML values to JSON facts; TOML dates become `YYYY-MM-DD` strings.
pub fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()),
    }
}

/// The keys a case may have.
pub const CASE_KEYS: &[&str] = &["name", "kind", "today", "facts", "expect"];
/// The keys a case's `expect` may have.
pub const EXPECT_KEYS: &[&str] = &["outcome", "reasons", "actions", "routes", "categories", "assumption", "invalid_field"];
/// The keys a case file may have at its top.
pub const FILE_KEYS: &[&str] = &["kind", "case"];

/// Everything read from one case file: the cases that parsed, and a problem for each one that
/// did not. Every `[[case]]` is counted in [`CaseFile::total`], so a malformed case can never
/// silently drop out of the count.
#[derive(Debug, Clone, Default)]
pub struct CaseFile {
    /// The cases that parsed.
    pub cases: Vec<Case>,
    /// One diagnostic per problem, at its file and line.
    pub problems: Vec<Diagnostic>,
    /// How many `[[case]]` entries the file has, well formed or not.
    pub total: usize,
}

/// Parses one case file. Every case needs a kind (its own or the file's). Fails with every
/// problem found (see [`read_case_file`] for the cases that did parse as well).
pub fn parse_cases(file: &SourceFile) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let f = read_case_file(file);
    if f.problems.is_empty() { Ok(f.cases) } else { Err(f.problems) }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    (before.matches('\n').count() + 1, before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1)
}

/// Where `key = …` is first written in `text[from..to]` (a key of a table or inline table).
fn key_position(text: &str, from: usize, to: usize, key: &str) -> Option<usize> {
    let region = &text[from.min(text.len())..to.min(text.len())];
    let bytes = region.as_bytes();
    let mut at = 0;
    while let Some(i) = region[at..].find(key) {
        let s = at + i;
        let e = s + key.len();
        let before_ok = s == 0 || !(bytes[s - 1].is_ascii_alphanumeric() || bytes[s - 1] == b'_' || bytes[s - 1] == b'"');
        let after = region[e..].trim_start_matches([' ', '\t']);
        if before_ok && (after.starts_with('=') && !after.starts_with("==") || after.starts_with('.')) {
            return Some(from + s);
        }
        at = e;
    }
    None
}

fn unknown_key(file: &SourceFile, offset: usize, key: &str, place: &str, known: &[&str]) -> Diagnostic {
    let (l, c) = line_col(&file.text, offset);
    let help = match crate::suggest::did_you_mean(key, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? (the keys are: {})", known.join(", ")),
        None => format!("the keys are: {}", known.join(", ")),
    };
    Diagnostic::at("case", file, Some(l), Some(c), format!("unknown key `{key}` in {place}")).with_help(help)
}

/// Reads one case file, keeping the cases that parse and reporting each that does not at its
/// own line: an unknown key anywhere (`outcom`), a missing kind, an expectation of nothing.
pub fn read_case_file(file: &SourceFile) -> CaseFile {
    use toml::Spanned;
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        case: Vec<Spanned<toml::Table>>,
    }
    let mut out = CaseFile::default();
    let top: toml::Table = match toml::from_str(&file.text) {
        Ok(t) => t,
        Err(e) => {
            // Not TOML at all: count the headers so the summary still says how many were lost.
            out.total = file.text.lines().filter(|l| l.trim_start().starts_with("[[case]]")).count();
            out.problems.push(toml_error(file, &e));
            return out;
        }
    };
    for key in top.keys().filter(|k| !FILE_KEYS.contains(&k.as_str())) {
        let at = key_position(&file.text, 0, file.text.len(), key).unwrap_or(0);
        out.problems.push(unknown_key(file, at, key, "the case file (above the first [[case]])", FILE_KEYS));
    }
    let file_kind = match top.get("kind") {
        None => None,
        Some(toml::Value::String(k)) => Some(k.clone()),
        Some(_) => {
            let at = key_position(&file.text, 0, file.text.len(), "kind").unwrap_or(0);
            let (l, c) = line_col(&file.text, at);
            out.problems.push(Diagnostic::at("case", file, Some(l), Some(c), "`kind` must be text, e.g. kind = \"exclusion\""));
            None
        }
    };
    let raw: Raw = match toml::from_str(&file.text) {
        Ok(r) => r,
        Err(e) => {
            out.problems.push(toml_error(file, &e));
            return out;
        }
    };
    out.total = raw.case.len();
    // Each case's text runs from its `[[case]]` header (its span) to the next case's.
    let starts: Vec<usize> = raw.case.iter().map(|c| c.span().start).collect();
    for (index, spanned) in raw.case.into_iter().enumerate() {
        let from = starts[index];
        let to = starts.get(index + 1).copied().unwrap_or(file.text.len());
        let line = line_col(&file.text, from).0;
        let table = spanned.into_inner();
        let name = table.get("name").and_then(toml::Value::as_str).unwrap_or("(unnamed)").to_string();
        let mut bad = false;
        for key in table.keys().filter(|k| !CASE_KEYS.contains(&k.as_str())) {
            let at = key_position(&file.text, from, to, key).unwrap_or(from);
            out.problems.push(unknown_key(file, at, key, &format!("case `{name}`"), CASE_KEYS));
            bad = true;
        }
        if let Some(toml::Value::Table(e)) = table.get("expect") {
            let expect_from = key_position(&file.text, from, to, "expect").unwrap_or(from);
            for key in e.keys().filter(|k| !EXPECT_KEYS.contains(&k.as_str())) {
                let at = key_position(&file.text, expect_from, to, key).unwrap_or(expect_from);
                out.problems.push(unknown_key(file, at, key, &format!("`expect` of case `{name}`"), EXPECT_KEYS));
                bad = true;
            }
        }
        if bad {
            continue;
        }
        let c: CaseDe = match CaseDe::deserialize(toml::Value::Table(table)) {
            Ok(c) => c,
            Err(e) => {
                out.problems.push(problem(file, line, format!("case `{name}`: {}", e.message().trim())));
                continue;
            }
        };
        let Some(kind) = c.kind.or_else(|| file_kind.clone()) else {
            out.problems.push(problem(file, line, format!("case `{}` has no kind (set `kind` on the case or at the top of the file)", c.name)));
            continue;
        };
        let e = &c.expect;
        if e.invalid_field.is_none() && e.outcome.is_none() {
            out.problems.push(problem(file, line, format!("case `{}` expects nothing: give expect.outcome or expect.invalid_field", c.name)));
            continue;
        }
        let today = match c.today.map(|d| crate::facts::parse_date(&d.to_string())) {
            None => CASE_TODAY,
            Some(Some(d)) => d,
            Some(None) => {
                out.problems.push(problem(file, line, format!("case `{}`: `today` must be a date (YYYY-MM-DD)", c.name)));
                continue;
            }
        };
        out.cases.push(Case { file: file.path.clone(), line, index, name: c.name, kind, facts: toml_to_json(c.facts), today, expect: c.expect });
    }
    out
}

fn problem(file: &SourceFile, line: usize, message: String) -> Diagnostic {
    Diagnostic::at("case", file, Some(line), Some(1), message)
}

fn toml_error(file: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    match e.span() {
        Some(span) => Diagnostic::at_offset("toml", file, span.start, e.message()),
        None => Diagnostic::whole_file("toml", file.path.clone(), e.message()),
    }
}

/// Checks parsed cases against the compiled rules, before any runs: each case's kind must be
/// one the partnership answers and its `expect.outcome` one the kind has. Returns the cases
/// that may run and a problem for each that may not.
pub fn check_cases(set: &RuleSet, cases: Vec<Case>, sources: &[SourceFile]) -> (Vec<Case>, Vec<Diagnostic>) {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for c in cases {
        let file = sources.iter().find(|f| f.path == c.file);
        let at = |key: &str, message: String| -> Diagnostic {
            let (l, col) = match file {
                Some(f) => {
                    let from: usize = f.text.split_inclusive('\n').take(c.line.saturating_sub(1)).map(str::len).sum();
                    key_position(&f.text, from, f.text.len(), key).map_or((c.line, 1), |o| line_col(&f.text, o))
                }
                None => (c.line, 1),
            };
            match file {
                Some(f) => Diagnostic::at("case", f, Some(l), Some(col), message),
                None => Diagnostic::whole_file("case", c.file.clone(), message),
            }
        };
        let Some(kind) = set.kind(&c.kind) else {
            let known: Vec<&str> = set.kinds().map(|k| k.name.as_str()).collect();
            let d = at("kind", format!("case `{}`: `{}` is not a decision kind of {}", c.name, c.kind, set.id()));
            problems.push(d.with_help(match crate::suggest::did_you_mean(&c.kind, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("the kinds are: {}", known.join(", ")),
            }));
            continue;
        };
        if let Some(o) = &c.expect.outcome {
            if !kind.outcomes().iter().any(|x| x == o) {
                let d = at("outcome", format!("case `{}` expects outcome `{o}`, which `{}` does not have", c.name, c.kind));
                problems.push(d.with_help(match crate::suggest::did_you_mean(o, kind.outcomes().iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("`{}` outcomes are: {}", c.kind, kind.outcomes().join(", ")),
                }));
                continue;
            }
        }
        ok.push(c);
    }
    (ok, problems)
}

/// One case run against a rule set: what came out, and how it differed from what was expected.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// Each way the result differed from the expectation (empty when it passed).
    pub mismatches: Vec<String>,
    /// The decision, when one was made.
    pub decision: Option<Decision>,
    /// The error, when none was.
    pub error: Option<String>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Runs one case against a compiled rule set.
pub fn run_case(set: &RuleSet, case: &Case) -> CaseResult {
    let mut mismatches = Vec::new();
    let e = &case.expect;
    let req = DecisionRequest { partnership: set.id().to_string(), kind: case.kind.clone(), facts: case.facts.clone(), today: case.today };
    let result = set.decide(&req);
    let (decision, error) = match result {
        Ok(d) => {
            if let Some(f) = &e.invalid_field {
                mismatches.push(format!("expected the facts to be refused for `{f}`, but a decision was made"));
            }
            check_decision(e, &d, &mut mismatches);
            (Some(d), None)
        }
        Err(err) => {
            match (&e.invalid_field, &err) {
                (Some(f), _) if err.violations().iter().any(|x| &x.field == f) => {}
                (Some(f), _) => mismatches.push(format!("expected the facts to be refused for `{f}`, got: {err}")),
                (None, _) => mismatches.push(format!("expected a decision, got an error: {err}")),
            }
            (None, Some(err.to_string()))
        }
    };
    CaseResult { case: case.clone(), mismatches, decision, error }
}

/// How two lists differ, short enough for one line: both in full when short, else what is
/// missing and what was not expected (or that only the order differs).
fn list_difference<A: AsRef<str>, B: AsRef<str>>(want: &[A], got: &[B]) -> String {
    let w: Vec<&str> = want.iter().map(AsRef::as_ref).collect();
    let g: Vec<&str> = got.iter().map(AsRef::as_ref).collect();
    let full = format!("expected [{}], got [{}]", w.join(", "), g.join(", "));
    if full.chars().count() <= 100 {
        return full;
    }
    let missing: Vec<&str> = w.iter().filter(|x| !g.contains(x)).copied().collect();
    let extra: Vec<&str> = g.iter().filter(|x| !w.contains(x)).copied().collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing [{}]", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("not expected [{}]", extra.join(", ")));
    }
    if parts.is_empty() {
        parts.push(format!("same items in another order: got [{}]", g.join(", ")));
    }
    parts.join("; ")
}

fn check_decision(e: &Expect, d: &Decision, out: &mut Vec<String>) {
    if let Some(o) = &e.outcome {
        if *o != d.outcome {
            out.push(format!("outcome: expected `{o}`, got `{}`", d.outcome));
        }
    }
    if let Some(r) = &e.reasons {
        let got: Vec<&str> = d.reasons.iter().map(|r| r.rule_id.as_str()).collect();
        if *r != got {
            out.push(format!("reasons: {}", list_difference(r, &got)));
        }
    }
    if let Some(a) = &e.actions {
        let got: Vec<&str> = d.actions.iter().map(|a| a.code.as_str()).collect();
        let want: Vec<&str> = a.iter().map(|x| match x {
            ExpectAction::Code(c) | ExpectAction::Dated { code: c, .. } => c.as_str(),
        }).collect();
        if want != got {
            out.push(format!("actions: {}", list_difference(&want, &got)));
        } else {
            for (x, act) in a.iter().zip(&d.actions) {
                if let ExpectAction::Dated { code, due_date } = x {
                    let got = act.due_date.map(|d| d.format("%Y-%m-%d").to_string());
                    if *due_date != got {
                        out.push(format!(
                            "action `{code}`: expected due {}, got {}",
                            due_date.as_deref().unwrap_or("none"),
                            got.as_deref().unwrap_or("none")
                        ));
                    }
                }
            }
        }
    }
    if let Some(r) = &e.routes {
        let got: Vec<&str> = d.details.grounds.iter().map(|g| g.route.as_str()).collect();
        if *r != got {
            out.push(format!("routes: expected [{}], got [{}]", r.join(", "), got.join(", ")));
        }
    }
    if let Some(c) = &e.categories {
        if *c != d.details.categories {
            out.push(format!("categories: expected [{}], got [{}]", c.join(", "), d.details.categories.join(", ")));
        }
    }
    if let Some(a) = e.assumption {
        let any = d.reasons.iter().any(|r| r.citation.assumption);
        if a != any {
            out.push(if a { "expected a reason marked as an assumption; none is".into() } else { "expected no assumption; a reason is marked as one".into() });
        }
    }
}
