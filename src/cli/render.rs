//! Human-readable rendering of diagnostics, case failures, decisions and comparisons.

use std::fmt::Write;

use cpc_rules::cases::CaseResult;
use cpc_rules::engine::Diagnostic;
use cpc_rules::model::Decision;

/// A diagnostic, drawn by miette: location, source excerpt with a caret, and help.
pub(super) fn diagnostic(d: &Diagnostic) -> String {
    cpc_rules::engine::diagnostics::render(std::slice::from_ref(d))
}

/// A failed test case: where, what was sent, what was expected and what came back.
pub(super) fn case_failure(r: &CaseResult) -> String {
    let mut s = String::new();
    let c = &r.case;
    let _ = writeln!(s, "FAILED {}:{}: {} ({})", c.file, c.line, c.name, c.kind);
    let _ = writeln!(s, "  facts:    {}", c.facts);
    let _ = writeln!(s, "  expected: {}", serde_json::to_string(&c.expect).unwrap_or_default());
    for m in &r.mismatches {
        let _ = writeln!(s, "  mismatch: {m}");
    }
    if let Some(d) = &r.decision {
        let _ = writeln!(s, "  actual decision:");
        for line in decision(d).lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
    if let Some(e) = &r.error {
        let _ = writeln!(s, "  actual error: {e}");
    }
    s.push('\n');
    s
}

/// A decision, for people.
pub(super) fn decision(d: &Decision) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} — {}: {}", d.partnership, d.kind, d.outcome);
    let _ = writeln!(s, "{}", d.summary);
    let _ = writeln!(s, "Reasons:");
    for (i, r) in d.reasons.iter().enumerate() {
        let tag = if r.citation.assumption { " [ASSUMPTION — the guide is silent]" } else { "" };
        let _ = writeln!(s, "  {}. {}{tag}", i + 1, r.text);
        let _ = writeln!(s, "     rule {} — {}, \"{}\"", r.rule_id, r.citation.document, r.citation.section);
    }
    if !d.actions.is_empty() {
        let _ = writeln!(s, "Actions:");
        for a in &d.actions {
            let due = a.due_date.map(|d| format!(" by {d}")).unwrap_or_default();
            let _ = writeln!(s, "  - [{}] {}{due} ({})", a.code, a.description, a.responsible);
        }
    }
    if !d.details.grounds.is_empty() {
        let _ = writeln!(s, "Grounds:");
        for g in &d.details.grounds {
            let _ = writeln!(s, "  {}. {} → {}", g.index, g.category, g.route);
        }
    }
    if !d.details.panel_recommendations.is_empty() {
        let _ = writeln!(s, "The panel may only recommend:");
        for p in &d.details.panel_recommendations {
            let _ = writeln!(s, "  - {p}");
        }
    }
    if !d.details.categories.is_empty() {
        let _ = writeln!(s, "Categories: {}", d.details.categories.join(", "));
    }
    let _ = writeln!(s, "Revision {}", d.rules_revision);
    if let Some(today) = d.as_of_defaulted {
        let _ = writeln!(s, "as_of was not given: used today's date in England, {today}");
    }
    s
}

/// One partnership's row in `compare`.
#[derive(serde::Serialize)]
pub(super) struct CompareRow {
    /// Partnership id.
    pub partnership: String,
    /// Outcome code.
    pub outcome: Option<String>,
    /// First reason's text.
    pub first_reason: Option<String>,
    /// Its citation, `document — section`.
    pub citation: Option<String>,
    /// Whether the first reason is an assumption.
    pub assumption: bool,
    /// Error, when no decision was made.
    pub error: Option<String>,
}

impl CompareRow {
    /// A row from a decision.
    pub(super) fn decision(d: &Decision) -> Self {
        let r = d.reasons.first();
        CompareRow {
            partnership: d.partnership.clone(),
            outcome: Some(d.outcome.clone()),
            first_reason: r.map(|r| r.text.clone()),
            citation: r.map(|r| format!("{} — {}", r.citation.document, r.citation.section)),
            assumption: r.is_some_and(|r| r.citation.assumption),
            error: None,
        }
    }
    /// A row for a partnership that could not decide.
    pub(super) fn error(id: &str, e: &str) -> Self {
        CompareRow { partnership: id.to_string(), outcome: None, first_reason: None, citation: None, assumption: false, error: Some(e.to_string()) }
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().map(|l| l.chars().count()).unwrap_or(0);
        if last > 0 && last + 1 + word.chars().count() > width {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(word);
        }
    }
    lines
}

/// The compare table: partnership | outcome | first reason (with citation).
pub(super) fn compare_table(kind: &str, rows: &[CompareRow]) -> String {
    let mut s = String::new();
    let pw = rows.iter().map(|r| r.partnership.len()).max().unwrap_or(11).max(11);
    let ow = rows.iter().filter_map(|r| r.outcome.as_ref().map(String::len)).max().unwrap_or(7).max(7);
    let _ = writeln!(s, "{kind}: the same facts, each partnership's decision\n");
    let _ = writeln!(s, "{:pw$}  {:ow$}  first reason", "partnership", "outcome");
    let _ = writeln!(s, "{}  {}  {}", "-".repeat(pw), "-".repeat(ow), "-".repeat(60));
    for r in rows {
        let outcome = r.outcome.clone().unwrap_or_else(|| "ERROR".into());
        let mut text = match (&r.first_reason, &r.error) {
            (Some(t), _) => t.clone(),
            (None, Some(e)) => e.clone(),
            _ => String::new(),
        };
        if r.assumption {
            text.push_str(" [assumption]");
        }
        let mut lines = wrap(&text, 60);
        if let Some(c) = &r.citation {
            lines.extend(wrap(&format!("({c})"), 60));
        }
        for (i, l) in lines.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(s, "{:pw$}  {:ow$}  {l}", r.partnership, outcome);
            } else {
                let _ = writeln!(s, "{:pw$}  {:ow$}  {l}", "", "");
            }
        }
    }
    s
}

/// The helper reference, generated from the engine's helper table.
pub(super) fn helpers_markdown() -> String {
    // The bundled vocabulary: the reference documents the rules shipped with the crate.
    match cpc_rules::vocabulary::Vocabulary::from_toml(include_str!("../../rules/vocabulary.toml")) {
        Ok(v) => cpc_rules::engine::helpers::reference_markdown(&v),
        Err(e) => format!("rules/vocabulary.toml does not parse: {e:?}\n"),
    }
}
