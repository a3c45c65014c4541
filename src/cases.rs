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
struct FileDe {
    kind: Option<String>,
    #[serde(default)]
    case: Vec<CaseDe>,
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

/// Parses one case file. Every case needs a kind (its own or the file's).
pub fn parse_cases(file: &SourceFile) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let de: FileDe = toml::from_str(&file.text).map_err(|e| vec![toml_error(file, &e)])?;
    let headers: Vec<usize> = file
        .text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[case]]"))
        .map(|(i, _)| i + 1)
        .collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, c) in de.case.into_iter().enumerate() {
        let line = headers.get(i).copied().unwrap_or(1);
        let Some(kind) = c.kind.or_else(|| de.kind.clone()) else {
            problems.push(problem(file, line, format!("case `{}` has no kind (set `kind` on the case or at the top of the file)", c.name)));
            continue;
        };
        let e = &c.expect;
        if e.invalid_field.is_none() && e.outcome.is_none() {
            problems.push(problem(file, line, format!("case `{}` expects nothing: give expect.outcome or expect.invalid_field", c.name)));
        }
        let today = match c.today.map(|d| crate::facts::parse_date(&d.to_string())) {
            None => CASE_TODAY,
            Some(Some(d)) => d,
            Some(None) => {
                problems.push(problem(file, line, format!("case `{}`: `today` must be a date (YYYY-MM-DD)", c.name)));
                continue;
            }
        };
        out.push(Case { file: file.path.clone(), line, name: c.name, kind, facts: toml_to_json(c.facts), today, expect: c.expect });
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
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

fn check_decision(e: &Expect, d: &Decision, out: &mut Vec<String>) {
    if let Some(o) = &e.outcome {
        if *o != d.outcome {
            out.push(format!("outcome: expected `{o}`, got `{}`", d.outcome));
        }
    }
    if let Some(r) = &e.reasons {
        let got: Vec<&str> = d.reasons.iter().map(|r| r.rule_id.as_str()).collect();
        if *r != got {
            out.push(format!("reasons: expected [{}], got [{}]", r.join(", "), got.join(", ")));
        }
    }
    if let Some(a) = &e.actions {
        let got: Vec<&str> = d.actions.iter().map(|a| a.code.as_str()).collect();
        let want: Vec<&str> = a.iter().map(|x| match x {
            ExpectAction::Code(c) | ExpectAction::Dated { code: c, .. } => c.as_str(),
        }).collect();
        if want != got {
            out.push(format!("actions: expected [{}], got [{}]", want.join(", "), got.join(", ")));
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
