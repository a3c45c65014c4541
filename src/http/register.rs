//! Comparing partnerships and registering assumptions, from the live rules.
//!
//! **Compare** runs the standard scenarios (`rules/scenarios.toml`, the same file behind
//! `cpc-rules matrix` and the README's table) through each live rule set. **Assumptions**
//! scans the decisions each partnership's rules make over its own test cases and the scenarios,
//! and lists every reason marked as an assumption — where the guide is silent and the rules say
//! what they assume instead — so a partnership can sign each one off. Both run the rules
//! directly (the scenarios are fixed examples, not decisions about a child) on the blocking
//! pool, with each case's own `today`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cases::{CASE_TODAY, toml_to_json};
use crate::model::{Decision, DecisionRequest};
use crate::store::RuleStore;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scenario: Vec<Scenario>,
}

/// One standard scenario of `rules/scenarios.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    /// Row label.
    pub label: String,
    /// Decision kind.
    pub kind: String,
    /// `outcome` (default) or `actions`.
    #[serde(default)]
    pub show: Option<String>,
    /// The facts.
    pub facts: toml::Value,
}

/// Reads `scenarios.toml` from the rules folder.
pub(crate) fn scenarios(store: &RuleStore) -> Result<Vec<Scenario>, String> {
    let path = store.root().join("scenarios.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str::<File>(&text).map(|f| f.scenario).map_err(|e| format!("{}: {e}", path.display()))
}

/// One cell of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// The decision made.
    Decided {
        /// Outcome code.
        outcome: String,
        /// Whether a reason is an assumption.
        assumed: bool,
        /// Actions with due dates (for scenarios shown by their actions).
        actions: Option<Vec<(String, Option<chrono::NaiveDate>)>>,
    },
    /// No decision (the partnership lacks the kind, or a fact it needs).
    Refused(String),
}

/// The comparison: partnerships (id, name) and one row per scenario.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matrix {
    /// Columns.
    pub partnerships: Vec<(String, String)>,
    /// Rows: scenario label, kind, and a cell per partnership.
    pub rows: Vec<(String, String, Vec<Cell>)>,
}

/// Runs every scenario through every live partnership.
pub(crate) fn matrix(store: &RuleStore, scenarios: &[Scenario]) -> Matrix {
    let loaded: Vec<_> = store.ids().into_iter().filter_map(|id| store.get(&id)).collect();
    let partnerships = loaded.iter().map(|l| (l.set.id().to_string(), l.set.metadata().name.clone())).collect();
    let rows = scenarios
        .iter()
        .map(|s| {
            let cells = loaded
                .iter()
                .map(|l| {
                    let req = DecisionRequest { partnership: l.set.id().to_string(), kind: s.kind.clone(), facts: toml_to_json(s.facts.clone()), today: CASE_TODAY };
                    match l.set.decide(&req) {
                        Ok(d) => Cell::Decided {
                            assumed: d.reasons.iter().any(|r| r.citation.assumption),
                            actions: (s.show.as_deref() == Some("actions")).then(|| d.actions.iter().map(|a| (a.code.clone(), a.due_date)).collect()),
                            outcome: d.outcome,
                        },
                        Err(e) => Cell::Refused(e.to_string()),
                    }
                })
                .collect();
            (s.label.clone(), s.kind.clone(), cells)
        })
        .collect();
    Matrix { partnerships, rows }
}

/// One assumption in the register.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assumption {
    /// Rule id.
    pub rule_id: String,
    /// Decision kind.
    pub kind: String,
    /// What the rules assume (the first wording seen).
    pub text: String,
    /// Guide and section it is cited to.
    pub document: String,
    /// Section.
    pub section: String,
    /// Test cases and scenarios whose decision gave it (at most a few).
    pub seen_in: Vec<String>,
    /// How many decisions gave it.
    pub count: usize,
}

/// A partnership's register: id, name, revision and its assumptions by rule id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Register {
    /// Partnership id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Live revision.
    pub revision: String,
    /// Assumptions, by rule id.
    pub assumptions: Vec<Assumption>,
    /// Decisions scanned.
    pub scanned: usize,
}

fn note(map: &mut BTreeMap<String, Assumption>, d: &Decision, source: &str) {
    for r in d.reasons.iter().filter(|r| r.citation.assumption) {
        let a = map.entry(r.rule_id.clone()).or_insert_with(|| Assumption {
            rule_id: r.rule_id.clone(),
            kind: d.kind.clone(),
            text: r.text.clone(),
            document: r.citation.document.clone(),
            section: r.citation.section.clone(),
            seen_in: Vec::new(),
            count: 0,
        });
        a.count += 1;
        if a.seen_in.len() < 3 {
            a.seen_in.push(source.to_string());
        }
    }
}

/// Every live partnership's register, from its test cases and the scenarios.
pub(crate) fn assumptions(store: &RuleStore, scenarios: &[Scenario]) -> Vec<Register> {
    store
        .ids()
        .into_iter()
        .filter_map(|id| store.get(&id))
        .map(|l| {
            let mut map = BTreeMap::new();
            let mut scanned = 0;
            for c in &l.cases {
                let req = DecisionRequest { partnership: l.set.id().to_string(), kind: c.kind.clone(), facts: c.facts.clone(), today: c.today };
                if let Ok(d) = l.set.decide(&req) {
                    scanned += 1;
                    note(&mut map, &d, &format!("test case “{}”", c.name));
                }
            }
            for s in scenarios {
                let req = DecisionRequest { partnership: l.set.id().to_string(), kind: s.kind.clone(), facts: toml_to_json(s.facts.clone()), today: CASE_TODAY };
                if let Ok(d) = l.set.decide(&req) {
                    scanned += 1;
                    note(&mut map, &d, &format!("scenario “{}”", s.label));
                }
            }
            let mut assumptions: Vec<Assumption> = map.into_values().collect();
            assumptions.sort_by(|a, b| (&a.kind, &a.rule_id).cmp(&(&b.kind, &b.rule_id)));
            Register { id: l.set.id().to_string(), name: l.set.metadata().name.clone(), revision: l.set.revision().to_string(), assumptions, scanned }
        })
        .collect()
}
