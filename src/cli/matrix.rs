//! The "how the partnerships differ" table, generated from the rules themselves.
//!
//! Standard scenarios (`rules/scenarios.toml`) are run through every partnership's rule set and
//! tabulated: each cell is the outcome (with `†` when the deciding reason is an assumption, or
//! the dated actions for scenarios marked `show = "actions"`). `cpc-rules matrix` prints it and
//! a test checks the README's copy is identical, so the README cannot drift from the rules.

use serde::Deserialize;

use cpc_rules::cases::toml_to_json;
use cpc_rules::engine::RuleSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scenario: Vec<Scenario>,
}

/// One standard scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Scenario {
    /// Row label.
    pub label: String,
    /// Decision kind.
    pub kind: String,
    /// `outcome` (default) or `actions`.
    #[serde(default)]
    pub show: Option<String>,
    /// Facts (TOML).
    pub facts: toml::Value,
}

/// Parses `scenarios.toml`.
pub(super) fn parse_scenarios(text: &str) -> Result<Vec<Scenario>, String> {
    toml::from_str::<File>(text).map(|f| f.scenario).map_err(|e| e.to_string())
}

fn cell(set: &RuleSet, s: &Scenario) -> String {
    let req = cpc_rules::model::DecisionRequest {
        partnership: set.id().to_string(),
        kind: s.kind.clone(),
        facts: toml_to_json(s.facts.clone()),
        today: cpc_rules::cases::CASE_TODAY,
    };
    match set.decide(&req) {
        Err(e) => format!("error: {e}"),
        Ok(d) if s.show.as_deref() == Some("actions") => {
            let acts: Vec<String> = d
                .actions
                .iter()
                .map(|a| match a.due_date {
                    Some(due) => format!("{} {}", a.code, due),
                    None => a.code.clone(),
                })
                .collect();
            format!("{}: {}", d.outcome, acts.join(", "))
        }
        Ok(d) => {
            let assumed = d.reasons.iter().any(|r| r.citation.assumption);
            format!("`{}`{}", d.outcome, if assumed { " †" } else { "" })
        }
    }
}

/// The Markdown tables: partnerships and their guides (with each one's number of test cases),
/// then one row per scenario.
pub(super) fn markdown(partnerships: &[(&RuleSet, usize)], scenarios: &[Scenario]) -> String {
    let sets: Vec<&RuleSet> = partnerships.iter().map(|(s, _)| *s).collect();
    let mut s = String::from("| id | partnership | guide | kinds | test cases |\n|---|---|---|---|---|\n");
    for (set, cases) in partnerships {
        let m = set.metadata();
        let guide = m.documents.iter().map(|d| format!("{} (`{}`)", d.title, d.source)).collect::<Vec<_>>().join("; ");
        s.push_str(&format!("| `{}` | {} | {} | {} | {} |\n", m.id, m.name, guide, set.kinds().count(), cases));
    }
    s.push_str("\n| scenario |");
    for set in &sets {
        s.push_str(&format!(" {} |", set.id()));
    }
    s.push_str("\n|---|");
    for _ in &sets {
        s.push_str("---|");
    }
    s.push('\n');
    for sc in scenarios {
        s.push_str(&format!("| {} (`{}`) |", sc.label, sc.kind));
        for set in &sets {
            s.push_str(&format!(" {} |", cell(set, sc).replace('|', "\\|")));
        }
        s.push('\n');
    }
    s.push_str("\n† at least one reason is a stated assumption: the partnership's guide is silent on the point.\n");
    s
}

/// Builds every partnership in `root` and renders the table (what `cpc-rules matrix` prints and
/// the README must contain). Fails with the problems if any partnership does not build.
pub(super) fn render_from_disk(root: &std::path::Path) -> Result<String, Vec<String>> {
    let limits = cpc_rules::engine::Limits::default();
    let ids = cpc_rules::store::partnership_ids(root).map_err(|e| vec![e.to_string()])?;
    let builds: Vec<_> = ids.iter().map(|id| cpc_rules::store::build(root, id, &limits)).collect();
    let problems: Vec<String> = builds.iter().flat_map(|b| b.diagnostics.iter().map(cpc_rules::engine::Diagnostic::one_line)).collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let text = std::fs::read_to_string(root.join("scenarios.toml")).map_err(|e| vec![format!("scenarios.toml: {e}")])?;
    let scenarios = parse_scenarios(&text).map_err(|e| vec![format!("scenarios.toml: {e}")])?;
    let rows: Vec<(&RuleSet, usize)> = builds.iter().filter_map(|b| b.set.as_ref().map(|s| (s, b.cases.len()))).collect();
    Ok(markdown(&rows, &scenarios))
}
