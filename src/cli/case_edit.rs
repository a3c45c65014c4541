//! Rewriting case files the way a person would: `test --update` and `eval --save-case`.
//!
//! Why this exists: after a deliberate rule change (meetings monthly instead of four-weekly),
//! every case whose dates moved must be corrected, and doing that by hand in one-line TOML is
//! slow and error-prone. Here the expected values of a failing case are recomputed from the new
//! decision and written back with `toml_edit`, which keeps every comment, blank line and the
//! layout of everything else in the file; a new case is appended as text, leaving the rest of
//! the file untouched.

use cpc_rules::cases::{Case, Expect, ExpectAction};
use cpc_rules::model::Decision;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Value};

/// One expected value to change: the `expect` key, its old value and the new one (as TOML).
pub(super) struct Change {
    /// The key under `expect`.
    pub key: &'static str,
    /// What the file says now.
    pub old: String,
    /// What the decision gives.
    pub new: Value,
    /// The difference in words, when shorter than both values (`core_group_meeting due
    /// 2025-06-03 → 2025-06-05`).
    pub summary: Option<String>,
}

/// Items added and removed between two lists, in words.
fn added_removed(old: &[&str], new: &[&str]) -> Option<String> {
    let removed: Vec<&str> = old.iter().filter(|x| !new.contains(x)).copied().collect();
    let added: Vec<&str> = new.iter().filter(|x| !old.contains(x)).copied().collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("adds {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("drops {}", removed.join(", ")));
    }
    if parts.is_empty() { Some("same items, new order".into()) } else { Some(parts.join("; ")) }
}

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    let mut a: Array = items.into_iter().collect();
    a.fmt();
    Value::Array(a)
}

fn dated(code: &str, due: Option<String>) -> Value {
    let mut t = InlineTable::new();
    t.insert("code", code.into());
    if let Some(d) = due {
        t.insert("due_date", d.into());
    }
    t.fmt();
    Value::InlineTable(t)
}

/// The actions as a case writes them: dated where a date was given (or where the old
/// expectation checked dates), bare codes otherwise.
fn actions_value(d: &Decision, checks_dates: bool) -> Value {
    let mut a = Array::new();
    for act in &d.actions {
        let due = act.due_date.map(|x| x.format("%Y-%m-%d").to_string());
        if due.is_some() || checks_dates {
            a.push(dated(&act.code, due));
        } else {
            a.push(act.code.as_str());
        }
    }
    a.fmt();
    Value::Array(a)
}

fn show_actions(a: &[ExpectAction]) -> String {
    let items: Vec<String> = a
        .iter()
        .map(|x| match x {
            ExpectAction::Code(c) => format!("\"{c}\""),
            ExpectAction::Dated { code, due_date: Some(d) } => format!("{{ code = \"{code}\", due_date = \"{d}\" }}"),
            ExpectAction::Dated { code, due_date: None } => format!("{{ code = \"{code}\" }}"),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn show_strings(a: &[String]) -> String {
    format!("[{}]", a.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "))
}

/// What would change in `case`'s `expect` to match `d`: only keys the case already checks, and
/// only where they differ.
pub(super) fn changes(expect: &Expect, d: &Decision) -> Vec<Change> {
    let mut out = Vec::new();
    if let Some(o) = &expect.outcome {
        if *o != d.outcome {
            out.push(Change { key: "outcome", old: format!("\"{o}\""), new: d.outcome.as_str().into(), summary: Some(format!("{o} → {}", d.outcome)) });
        }
    }
    if let Some(r) = &expect.reasons {
        let got: Vec<&str> = d.reasons.iter().map(|r| r.rule_id.as_str()).collect();
        if *r != got {
            let old: Vec<&str> = r.iter().map(String::as_str).collect();
            out.push(Change { key: "reasons", old: show_strings(r), summary: added_removed(&old, &got), new: strings(got) });
        }
    }
    if let Some(a) = &expect.actions {
        let checks_dates = a.iter().any(|x| matches!(x, ExpectAction::Dated { .. }));
        let same = a.len() == d.actions.len()
            && a.iter().zip(&d.actions).all(|(x, act)| match x {
                ExpectAction::Code(c) => *c == act.code,
                ExpectAction::Dated { code, due_date } => *code == act.code && *due_date == act.due_date.map(|x| x.format("%Y-%m-%d").to_string()),
            });
        if !same {
            let code = |x: &ExpectAction| match x {
                ExpectAction::Code(c) | ExpectAction::Dated { code: c, .. } => c.clone(),
            };
            let old_codes: Vec<String> = a.iter().map(code).collect();
            let new_codes: Vec<&str> = d.actions.iter().map(|x| x.code.as_str()).collect();
            let summary = if old_codes == new_codes {
                let moved: Vec<String> = a
                    .iter()
                    .zip(&d.actions)
                    .filter_map(|(x, act)| match x {
                        ExpectAction::Dated { code, due_date } => {
                            let now = act.due_date.map(|x| x.format("%Y-%m-%d").to_string());
                            (*due_date != now).then(|| format!("{code} due {} → {}", due_date.as_deref().unwrap_or("none"), now.as_deref().unwrap_or("none")))
                        }
                        ExpectAction::Code(_) => None,
                    })
                    .collect();
                Some(moved.join("; "))
            } else {
                let old: Vec<&str> = old_codes.iter().map(String::as_str).collect();
                added_removed(&old, &new_codes)
            };
            out.push(Change { key: "actions", old: show_actions(a), new: actions_value(d, checks_dates), summary });
        }
    }
    if let Some(r) = &expect.routes {
        let got: Vec<&str> = d.details.grounds.iter().map(|g| g.route.as_str()).collect();
        if *r != got {
            out.push(Change { key: "routes", old: show_strings(r), new: strings(got), summary: None });
        }
    }
    if let Some(c) = &expect.categories {
        if *c != d.details.categories {
            out.push(Change { key: "categories", old: show_strings(c), new: strings(d.details.categories.iter().map(String::as_str)), summary: None });
        }
    }
    if let Some(a) = expect.assumption {
        let any = d.reasons.iter().any(|r| r.citation.assumption);
        if a != any {
            out.push(Change { key: "assumption", old: a.to_string(), new: any.into(), summary: Some(format!("{a} → {any}")) });
        }
    }
    out
}

/// Writes `changes` into the `expect` of the `index`-th `[[case]]` of `text`, keeping the rest
/// of the file as it was.
pub(super) fn apply(text: &str, index: usize, changes: &[Change]) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    let case = doc
        .get_mut("case")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|a| a.get_mut(index))
        .ok_or_else(|| format!("there is no [[case]] number {} in the file", index + 1))?;
    let expect = case.get_mut("expect").ok_or("the case has no `expect`")?;
    for c in changes {
        let mut new = c.new.clone();
        match expect {
            Item::Value(Value::InlineTable(t)) => {
                if let Some(old) = t.get(c.key) {
                    *new.decor_mut() = old.decor().clone();
                }
                t.insert(c.key, new);
            }
            Item::Table(t) => {
                if let Some(old) = t.get(c.key).and_then(Item::as_value) {
                    *new.decor_mut() = old.decor().clone();
                }
                t.insert(c.key, Item::Value(new));
            }
            _ => return Err("`expect` is not a table".into()),
        }
    }
    Ok(doc.to_string())
}

/// A JSON fact as a TOML value (`null` has no TOML form: `None`).
fn json_value(v: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => (*b).into(),
        J::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        J::String(s) => s.as_str().into(),
        J::Array(a) => {
            let mut arr: Array = a.iter().filter_map(json_value).collect();
            arr.fmt();
            Value::Array(arr)
        }
        J::Object(m) => {
            let mut t = InlineTable::new();
            for (k, v) in m {
                if let Some(v) = json_value(v) {
                    t.insert(k, v);
                }
            }
            t.fmt();
            Value::InlineTable(t)
        }
    })
}

/// What a new case records about a decision (or a refusal naming `invalid_field`).
pub(super) enum Saved<'a> {
    /// A decision: its outcome, reasons, actions (with dates), details and assumption flag.
    Decision(&'a Decision),
    /// A refusal, naming the first field refused.
    Invalid(String),
}

/// The text of a new `[[case]]` (to append to a case file), in the one-line style of the
/// bundled cases. `kind` is written unless the file already sets it for every case.
pub(super) fn new_case_text(name: &str, kind: Option<&str>, today: Option<chrono::NaiveDate>, facts: &serde_json::Value, saved: &Saved<'_>) -> String {
    let mut t = toml_edit::Table::new();
    if let Some(k) = kind {
        t.insert("kind", toml_edit::value(k));
    }
    t.insert("name", toml_edit::value(name));
    if let Some(d) = today {
        if let Ok(dt) = d.format("%Y-%m-%d").to_string().parse::<toml_edit::Datetime>() {
            t.insert("today", toml_edit::value(dt));
        }
    }
    t.insert("facts", Item::Value(json_value(facts).unwrap_or_else(|| Value::InlineTable(InlineTable::new()))));
    let mut e = InlineTable::new();
    match saved {
        Saved::Decision(d) => {
            e.insert("outcome", d.outcome.as_str().into());
            if !d.details.categories.is_empty() {
                e.insert("categories", strings(d.details.categories.iter().map(String::as_str)));
            }
            if !d.details.grounds.is_empty() {
                e.insert("routes", strings(d.details.grounds.iter().map(|g| g.route.as_str())));
            }
            e.insert("reasons", strings(d.reasons.iter().map(|r| r.rule_id.as_str())));
            e.insert("actions", actions_value(d, false));
            e.insert("assumption", d.reasons.iter().any(|r| r.citation.assumption).into());
        }
        Saved::Invalid(field) => {
            e.insert("invalid_field", field.as_str().into());
        }
    }
    e.fmt();
    t.insert("expect", Item::Value(Value::InlineTable(e)));
    let mut aot = toml_edit::ArrayOfTables::new();
    aot.push(t);
    let mut doc = DocumentMut::new();
    doc.insert("case", Item::ArrayOfTables(aot));
    doc.to_string()
}

/// `file:line: name` for a case.
pub(super) fn label(c: &Case) -> String {
    format!("{}:{}: {}", c.file, c.line, c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_keeps_comments_and_other_cases() {
        let text = "# top comment\nkind = \"x\"\n\n[[case]]\nname = \"a\" # why\nfacts = { a = 1 }\nexpect = { outcome = \"yes\", reasons = [\"r1\"] }\n\n# second\n[[case]]\nname = \"b\"\nfacts = {}\nexpect = { outcome = \"no\" }\n";
        let out = apply(text, 0, &[Change { key: "outcome", old: String::new(), new: "maybe".into(), summary: None }]).expect("apply");
        assert_eq!(out, text.replacen("outcome = \"yes\"", "outcome = \"maybe\"", 1));
    }
}
