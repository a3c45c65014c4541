//! Decision forms generated from a kind's fact vocabulary, and their answers turned into facts.
//!
//! Nothing here is written per kind: each fact's label, help, type and code list come from
//! `rules/vocabulary.toml` (and a partnership's `partnership.toml`). A true/false fact is a
//! group of radio buttons (with "Not given", since a fact the rules never read may be left
//! out); a code is a select; a list of codes is a group of checkboxes; a date is a date input;
//! a list of objects (complaint grounds) is a set of numbered rows, with a button that adds a
//! row without JavaScript. Inputs are named by the fact's path in the request
//! (`grounds[0].description`), so a field violation from the core lands on its input: every
//! error is shown next to its field, tied to it with `aria-describedby`, and listed at the top.

use std::collections::{BTreeMap, BTreeSet};

use maud::{Markup, html};
use serde_json::{Map, Number, Value};

use crate::facts::FieldViolation;
use crate::vocabulary::{FactSpec, FactType, KindSchema};

/// What was typed into a form, by input name (several values for checkboxes), plus how many
/// rows each list of objects shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FormState {
    /// Values by input name.
    pub values: BTreeMap<String, Vec<String>>,
    /// Rows shown for each list-of-objects fact.
    pub rows: BTreeMap<String, usize>,
}

impl FormState {
    /// The state from a submitted form's fields (those starting with `_` are the form's own);
    /// blank rows of a list are dropped and the rest renumbered from 0 in order.
    pub(crate) fn from_pairs(schema: &KindSchema, pairs: &[(String, String)]) -> FormState {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            if !k.starts_with('_') {
                values.entry(k.clone()).or_default().push(v.clone());
            }
        }
        let mut state = FormState { values, rows: BTreeMap::new() };
        for f in &schema.facts {
            if let FactType::List { item, .. } = &f.ty
                && matches!(**item, FactType::Object(_))
            {
                state.compact(&f.name);
            }
        }
        state
    }

    fn compact(&mut self, list: &str) {
        let prefix = format!("{list}[");
        let mut rows: BTreeMap<usize, Vec<(String, Vec<String>)>> = BTreeMap::new();
        let keys: Vec<String> = self.values.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
        for key in keys {
            let rest = &key[prefix.len()..];
            let Some((index, field)) = rest.split_once("].") else { continue };
            let Ok(index) = index.parse::<usize>() else { continue };
            let vals = self.values.remove(&key).unwrap_or_default();
            rows.entry(index).or_default().push((field.to_string(), vals));
        }
        let kept: Vec<_> = rows.into_values().filter(|fields| fields.iter().any(|(_, v)| v.iter().any(|s| !s.trim().is_empty()))).collect();
        self.rows.insert(list.to_string(), kept.len());
        for (i, fields) in kept.into_iter().enumerate() {
            for (field, vals) in fields {
                self.values.insert(format!("{list}[{i}].{field}"), vals);
            }
        }
    }

    /// The first value of `name`, trimmed.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.values.get(name).and_then(|v| v.first()).map_or("", |s| s.trim())
    }

    fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// Rows to show for list `name`: those given, at least `min`, plus `extra`.
    pub(crate) fn rows_for(&self, name: &str, min: usize) -> usize {
        self.rows.get(name).copied().unwrap_or(0).max(min)
    }

    /// The facts this form gives, and the problems only the form can see (a number that is not
    /// a number). An empty input is a fact not given; a list of codes is always given.
    pub(crate) fn facts(&self, schema: &KindSchema) -> (Value, Vec<FieldViolation>) {
        let mut problems = Vec::new();
        let mut map = Map::new();
        for f in &schema.facts {
            if let Some(v) = self.value(&f.name, &f.ty, &mut problems) {
                map.insert(f.name.clone(), v);
            }
        }
        (Value::Object(map), problems)
    }

    fn value(&self, path: &str, ty: &FactType, problems: &mut Vec<FieldViolation>) -> Option<Value> {
        let raw = self.get(path);
        match ty {
            FactType::Bool => match raw {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            FactType::Int { .. } if raw.is_empty() => None,
            FactType::Int { .. } => match raw.parse::<i64>() {
                Ok(n) => Some(Value::Number(n.into())),
                Err(_) => {
                    problems.push(FieldViolation::new(path, "must be a whole number"));
                    None
                }
            },
            FactType::Date | FactType::Text { .. } | FactType::Code(_) if raw.is_empty() => None,
            FactType::Date | FactType::Code(_) => Some(Value::String(raw.to_string())),
            FactType::Text { .. } => Some(Value::String(self.all(path).first().cloned().unwrap_or_default())),
            FactType::List { item, .. } => match &**item {
                FactType::Code(_) => Some(Value::Array(self.all(path).iter().filter(|s| !s.is_empty()).map(|s| Value::String(s.clone())).collect())),
                FactType::Object(fields) => {
                    let rows = self.rows.get(path).copied().unwrap_or(0);
                    let mut items = Vec::with_capacity(rows);
                    for i in 0..rows {
                        let mut obj = Map::new();
                        for field in fields {
                            let p = format!("{path}[{i}].{}", field.name);
                            if let Some(v) = self.value(&p, &field.ty, problems) {
                                obj.insert(field.name.clone(), v);
                            }
                        }
                        items.push(Value::Object(obj));
                    }
                    Some(Value::Array(items))
                }
                scalar if raw.is_empty() => {
                    let _ = scalar;
                    None
                }
                scalar => {
                    let mut items = Vec::new();
                    for (i, part) in raw.split(',').map(str::trim).enumerate() {
                        match scalar {
                            FactType::Int { .. } => match part.parse::<i64>() {
                                Ok(n) => items.push(Value::Number(Number::from(n))),
                                Err(_) => problems.push(FieldViolation::new(format!("{path}[{i}]"), "must be a whole number")),
                            },
                            _ => items.push(Value::String(part.to_string())),
                        }
                    }
                    Some(Value::Array(items))
                }
            },
            FactType::Object(fields) => {
                let mut obj = Map::new();
                for field in fields {
                    let p = format!("{path}.{}", field.name);
                    if let Some(v) = self.value(&p, &field.ty, problems) {
                        obj.insert(field.name.clone(), v);
                    }
                }
                (!obj.is_empty()).then_some(Value::Object(obj))
            }
        }
    }
}

/// The HTML id of the input for a fact path: `grounds[0].description` → `f-grounds-0-description`.
pub(crate) fn field_id(path: &str) -> String {
    let mut id = String::from("f-");
    let mut last_dash = true;
    for c in path.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            id.push(c);
            last_dash = false;
        } else if !last_dash {
            id.push('-');
            last_dash = true;
        }
    }
    id.trim_end_matches('-').to_string()
}

/// Errors by the input path they are shown at: a violation of a path the form shows goes
/// there; any other (`grounds[3]`, `facts`) goes to its top-level fact, or to the form.
pub(crate) fn place_errors(schema: &KindSchema, state: &FormState, violations: &[FieldViolation]) -> BTreeMap<String, Vec<String>> {
    let mut shown: BTreeSet<String> = BTreeSet::new();
    for f in &schema.facts {
        shown.insert(f.name.clone());
        if let FactType::List { item, .. } = &f.ty
            && let FactType::Object(fields) = &**item
        {
            for i in 0..state.rows_for(&f.name, 1) {
                for field in fields {
                    shown.insert(format!("{}[{i}].{}", f.name, field.name));
                }
            }
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in violations {
        let field = v.field.strip_prefix("facts.").unwrap_or(&v.field);
        let at = if shown.contains(field) {
            field.to_string()
        } else {
            let top = field.split(['[', '.']).next().unwrap_or_default();
            if shown.contains(top) { top.to_string() } else { String::new() }
        };
        out.entry(at).or_default().push(describe(schema, field, &v.description));
    }
    out
}

/// A violation in words a person reads: the fact's label, then what is wrong.
fn describe(schema: &KindSchema, field: &str, description: &str) -> String {
    let top = field.split(['[', '.']).next().unwrap_or_default();
    let label = schema.fact(top).map(|(_, f)| f.label.clone());
    let row = field.split_once('[').and_then(|(_, r)| r.split_once(']')).and_then(|(n, _)| n.parse::<usize>().ok());
    let sub = field.rsplit_once("].").map(|(_, s)| s);
    let sub_label = sub.and_then(|s| {
        schema.fact(top).and_then(|(_, f)| match &f.ty {
            FactType::List { item, .. } => match &**item {
                FactType::Object(fields) => fields.iter().find(|x| x.name == s).map(|x| x.label.clone()),
                _ => None,
            },
            _ => None,
        })
    });
    let description = description.replace("is required here: the rules read it at", "is needed: the rules read it (at");
    let description = if description.starts_with("is needed: the rules read it (at") { format!("{description})") } else { description };
    match (label, row, sub_label) {
        (Some(l), Some(r), Some(s)) => format!("{l} {}, {s}: {description}", r + 1),
        (Some(l), Some(r), None) => format!("{l} {}: {description}", r + 1),
        (Some(l), _, _) => format!("{l}: {description}"),
        (None, _, _) if field.is_empty() || field == "facts" => description,
        (None, _, _) => format!("{field}: {description}"),
    }
}

fn error_block(id: &str, errors: Option<&Vec<String>>) -> Markup {
    html! {
        @if let Some(errors) = errors {
            p id=(format!("{id}-error")) class="field-error" {
                span class="visually-hidden" { "Error: " }
                (errors.join(" "))
            }
        }
    }
}

fn described_by(id: &str, has_help: bool, has_error: bool) -> String {
    let mut parts = Vec::new();
    if has_help {
        parts.push(format!("{id}-hint"));
    }
    if has_error {
        parts.push(format!("{id}-error"));
    }
    parts.join(" ")
}

/// The inputs for every fact of `schema`, filled from `state`, with `errors` by path.
/// `min_rows` is the rows shown for each list of objects when none are given.
pub(crate) fn fields(schema: &KindSchema, state: &FormState, errors: &BTreeMap<String, Vec<String>>, min_rows: usize) -> Markup {
    html! {
        @for f in &schema.facts {
            (field(f, &f.name, state, errors, min_rows))
        }
    }
}

fn field(f: &FactSpec, path: &str, state: &FormState, errors: &BTreeMap<String, Vec<String>>, min_rows: usize) -> Markup {
    let id = field_id(path);
    let err = errors.get(path);
    let group_class = if err.is_some() { "field field-has-error" } else { "field" };
    let aria = described_by(&id, !f.help.is_empty(), err.is_some());
    let value = state.get(path);
    match &f.ty {
        FactType::Bool => html! {
            fieldset class=(group_class) id=(id) aria-describedby=(aria) {
                legend { (f.label) }
                @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) } }
                (error_block(&id, err))
                div class="choices inline" {
                    @for (v, label) in [("true", "Yes"), ("false", "No"), ("", "Not given")] {
                        div class="choice" {
                            input type="radio" id=(format!("{id}-{}", if v.is_empty() { "unset" } else { v })) name=(path) value=(v) checked[value == v];
                            label for=(format!("{id}-{}", if v.is_empty() { "unset" } else { v })) { (label) }
                        }
                    }
                }
            }
        },
        FactType::Int { min, max } => html! {
            div class=(group_class) {
                label for=(id) { (f.label) }
                @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) " (a whole number from " (min) " to " (max) ")" } }
                (error_block(&id, err))
                input type="text" inputmode="numeric" id=(id) name=(path) value=(value) class="short" aria-describedby=(aria) aria-invalid=[err.map(|_| "true")];
            }
        },
        FactType::Date => html! {
            div class=(group_class) {
                label for=(id) { (f.label) }
                @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) } }
                (error_block(&id, err))
                input type="date" id=(id) name=(path) value=(value) aria-describedby=(aria) aria-invalid=[err.map(|_| "true")];
            }
        },
        FactType::Text { max_len } => html! {
            div class=(group_class) {
                label for=(id) { (f.label) }
                @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) } }
                (error_block(&id, err))
                textarea id=(id) name=(path) rows="3" maxlength=(max_len) aria-describedby=(aria) aria-invalid=[err.map(|_| "true")] { (state.values.get(path).and_then(|v| v.first()).map_or("", String::as_str)) }
            }
        },
        FactType::Code(list) => html! {
            div class=(group_class) {
                label for=(id) { (f.label) }
                @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) } }
                (error_block(&id, err))
                select id=(id) name=(path) aria-describedby=(aria) aria-invalid=[err.map(|_| "true")] {
                    option value="" selected[value.is_empty()] { "Not given" }
                    @for c in &list.values {
                        option value=(c.code) selected[value == c.code] { (c.label) }
                    }
                }
            }
        },
        FactType::List { item, max_items } => match &**item {
            FactType::Code(list) => {
                let chosen = state.values.get(path).cloned().unwrap_or_default();
                html! {
                    fieldset class=(group_class) id=(id) aria-describedby=(aria) {
                        legend { (f.label) }
                        @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) " Tick all that apply." } }
                        (error_block(&id, err))
                        div class="choices" {
                            @for c in &list.values {
                                div class="choice" {
                                    input type="checkbox" id=(format!("{id}-{}", c.code)) name=(path) value=(c.code) checked[chosen.contains(&c.code)];
                                    label for=(format!("{id}-{}", c.code)) { (c.label) }
                                }
                            }
                        }
                    }
                }
            }
            FactType::Object(fields) => {
                let rows = state.rows_for(path, min_rows).min(*max_items);
                html! {
                    fieldset class=(group_class) id=(id) aria-describedby=(aria) {
                        legend { (f.label) }
                        @if !f.help.is_empty() { p class="hint" id=(format!("{id}-hint")) { (f.help) " Leave a row empty to leave it out." } }
                        (error_block(&id, err))
                        @for i in 0..rows {
                            fieldset class="row" {
                                legend { (singular(&f.label)) " " (i + 1) }
                                @for sub in fields {
                                    (field(sub, &format!("{path}[{i}].{}", sub.name), state, errors, min_rows))
                                }
                            }
                        }
                        @if rows < *max_items {
                            button type="submit" name="_action" value=(format!("add:{path}")) class="secondary" formnovalidate { "Add another " (singular(&f.label).to_lowercase()) }
                        }
                    }
                }
            }
            scalar => html! {
                div class=(group_class) {
                    label for=(id) { (f.label) }
                    p class="hint" id=(format!("{id}-hint")) { (f.help) " Separate values with commas; each is " (scalar.describe()) "." }
                    (error_block(&id, err))
                    input type="text" id=(id) name=(path) value=(value) aria-describedby=(format!("{id}-hint{}", if err.is_some() { format!(" {id}-error") } else { String::new() })) aria-invalid=[err.map(|_| "true")];
                }
            },
        },
        FactType::Object(fields) => html! {
            fieldset class=(group_class) id=(id) {
                legend { (f.label) }
                @for sub in fields { (field(sub, &format!("{path}.{}", sub.name), state, errors, min_rows)) }
            }
        },
    }
}

/// "Grounds of complaint" → "Ground"; a label's first word, singular, for numbered rows.
fn singular(label: &str) -> String {
    let first = label.split_whitespace().next().unwrap_or(label);
    first.strip_suffix('s').unwrap_or(first).to_string()
}

/// Adds one row to list `path` (the "Add another" button).
pub(crate) fn add_row(state: &mut FormState, path: &str, min_rows: usize) {
    let n = state.rows_for(path, min_rows);
    state.rows.insert(path.to_string(), n + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> KindSchema {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/vocabulary.toml")).unwrap();
        let v = crate::vocabulary::Vocabulary::from_toml(&text).unwrap();
        (**v.kind("complaint_eligibility").unwrap()).clone()
    }

    #[test]
    fn blank_rows_are_dropped_and_the_rest_renumbered() {
        let s = schema();
        let pairs: Vec<(String, String)> = [
            ("_csrf", "x"),
            ("complainant", "parent"),
            ("grounds[0].category", ""),
            ("grounds[0].description", " "),
            ("grounds[1].category", "plan_decision"),
            ("grounds[1].description", "They did not listen to me."),
            ("stage1_completed", "true"),
            ("states_criteria_aspects", ""),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect();
        let state = FormState::from_pairs(&s, &pairs);
        let (facts, problems) = state.facts(&s);
        assert!(problems.is_empty());
        assert_eq!(
            facts,
            serde_json::json!({"complainant": "parent", "grounds": [{"category": "plan_decision", "description": "They did not listen to me."}], "stage1_completed": true})
        );
        let errors = place_errors(&s, &state, &[FieldViolation::new("grounds[0].category", "is not a code"), FieldViolation::new("solution_sought", "is required here: the rules read it at x.rhai:3:4 on the way")]);
        assert!(errors["grounds[0].category"][0].starts_with("Grounds of complaint 1, Category:"));
        assert!(errors["solution_sought"][0].starts_with("Solution sought: is needed"));
        assert_eq!(field_id("grounds[0].category"), "f-grounds-0-category");
    }
}
