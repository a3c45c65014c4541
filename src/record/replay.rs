//! Replaying a recorded decision, and comparing two decisions field by field.
//!
//! Why: "why was this decided?" is answered by deciding again — the recorded facts, on the
//! recorded day, with exactly the archived rules that made it — and showing that the answer is
//! identical; "what would today's rules say?" by deciding with another revision and listing
//! every difference. The same comparison measures a rule change's impact on real recorded
//! decisions. Pure: the rule set is compiled from sources already read from the archive.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DecisionRecord, RecordError};
use crate::engine::{Limits, RuleSet, RuleSources};
use crate::model::Decision;

/// Most recorded decisions one impact measurement replays.
pub const MAX_IMPACT: usize = 100_000;

/// A replayed decision next to the recorded one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    /// The revision replayed with.
    pub revision: String,
    /// When the recorded decision was made.
    pub decided_at: chrono::DateTime<chrono::Utc>,
    /// The decision as recorded.
    pub recorded: Decision,
    /// The decision made again.
    pub replayed: Decision,
    /// Each difference, in words; empty when identical.
    pub differences: Vec<String>,
}

impl Replay {
    /// Whether the replay decided exactly as recorded.
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compiles archived sources (without running their test cases: they passed when the revision
/// went live, and a replay must work even if today's case runner would judge them differently).
pub fn compile(sources: &RuleSources, limits: &Limits) -> Result<RuleSet, RecordError> {
    RuleSet::compile(sources, limits)
        .map_err(|d| RecordError::Replay(format!("the archived rules of {} do not compile: {}", sources.id, d.iter().map(|d| d.one_line()).collect::<Vec<_>>().join("; "))))
}

/// Decides `record`'s facts, on its day, with `set`.
pub fn decide(record: &DecisionRecord, set: &RuleSet) -> Result<Decision, RecordError> {
    let facts = set.facts(&record.decision.kind, &record.facts, record.today).map_err(|e| RecordError::Replay(format!("the recorded facts are refused: {e}")))?;
    set.decide_facts(&facts).map_err(|e| RecordError::Replay(format!("the rules refused to decide: {e}")))
}

/// Replays `record` with `set`.
pub fn replay(record: &DecisionRecord, set: &RuleSet) -> Result<Replay, RecordError> {
    let replayed = decide(record, set)?;
    let same_revision = set.revision() == record.decision.rules_revision;
    Ok(Replay { revision: set.revision().to_string(), decided_at: record.decided_at, differences: differences(&record.decision, &replayed, same_revision), recorded: record.decision.clone(), replayed })
}

fn date(d: Option<chrono::NaiveDate>) -> String {
    d.map_or_else(|| "none".into(), |d| d.format("%Y-%m-%d").to_string())
}

/// Every difference between decision `a` (recorded) and `b` (replayed), in words. The revision
/// is compared only when `compare_revision` (a replay with another revision differs in it by
/// design).
pub fn differences(a: &Decision, b: &Decision, compare_revision: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, x: &str, y: &str| {
        if x != y {
            out.push(format!("{name}: {x:?} → {y:?}"));
        }
    };
    field("partnership", &a.partnership, &b.partnership);
    field("kind", &a.kind, &b.kind);
    field("outcome", &a.outcome, &b.outcome);
    field("summary", &a.summary, &b.summary);
    if compare_revision {
        field("rules_revision", &a.rules_revision, &b.rules_revision);
    }
    field("as_of_defaulted", &date(a.as_of_defaulted), &date(b.as_of_defaulted));
    let ids = |d: &Decision| d.reasons.iter().map(|r| r.rule_id.clone()).collect::<Vec<_>>();
    if ids(a) != ids(b) {
        out.push(format!("reasons: [{}] → [{}]", ids(a).join(", "), ids(b).join(", ")));
    } else {
        for (x, y) in a.reasons.iter().zip(&b.reasons) {
            if x.text != y.text {
                out.push(format!("reason {}: text {:?} → {:?}", x.rule_id, x.text, y.text));
            }
            if x.citation != y.citation {
                out.push(format!(
                    "reason {}: citation {} § {}{} → {} § {}{}",
                    x.rule_id,
                    x.citation.document,
                    x.citation.section,
                    if x.citation.assumption { " (assumption)" } else { "" },
                    y.citation.document,
                    y.citation.section,
                    if y.citation.assumption { " (assumption)" } else { "" }
                ));
            }
        }
    }
    let codes = |d: &Decision| d.actions.iter().map(|a| a.code.clone()).collect::<Vec<_>>();
    if codes(a) != codes(b) {
        out.push(format!("actions: [{}] → [{}]", codes(a).join(", "), codes(b).join(", ")));
    } else {
        for (x, y) in a.actions.iter().zip(&b.actions) {
            if x.due_date != y.due_date {
                out.push(format!("action {}: due {} → {}", x.code, date(x.due_date), date(y.due_date)));
            }
            if x.responsible != y.responsible {
                out.push(format!("action {}: responsible {} → {}", x.code, x.responsible, y.responsible));
            }
            if x.description != y.description {
                out.push(format!("action {}: description {:?} → {:?}", x.code, x.description, y.description));
            }
        }
    }
    if a.details != b.details {
        out.push(format!(
            "details: {} → {}",
            serde_json::to_string(&a.details).unwrap_or_default(),
            serde_json::to_string(&b.details).unwrap_or_default()
        ));
    }
    out
}

/// How a rule change would change recorded decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImpactSummary {
    /// Recorded decisions replayed.
    pub replayed: usize,
    /// Of those, how many would be decided differently (in any field).
    pub changed: usize,
    /// How many could not be decided at all by the candidate rules.
    pub refused: usize,
    /// Outcome changes: `"from → to"` → how many.
    pub outcome_changes: BTreeMap<String, usize>,
    /// Up to 20 changed decisions: (decision id, differences).
    pub examples: Vec<(String, Vec<String>)>,
}

/// Replays each of `records` with the candidate rules `set_for` gives for its partnership
/// (`None`: that partnership is not in the candidate; skipped) and summarises what changes.
pub fn impact<'a>(records: &[DecisionRecord], set_for: impl Fn(&str) -> Option<&'a RuleSet>) -> ImpactSummary {
    let mut s = ImpactSummary::default();
    for r in records {
        let Some(set) = set_for(&r.decision.partnership) else { continue };
        s.replayed += 1;
        match decide(r, set) {
            Ok(d) => {
                let diffs = differences(&r.decision, &d, false);
                if !diffs.is_empty() {
                    s.changed += 1;
                    if r.decision.outcome != d.outcome {
                        *s.outcome_changes.entry(format!("{} → {}", r.decision.outcome, d.outcome)).or_default() += 1;
                    }
                    if s.examples.len() < 20 {
                        s.examples.push((r.decision_id.clone(), diffs));
                    }
                }
            }
            Err(e) => {
                s.changed += 1;
                s.refused += 1;
                *s.outcome_changes.entry(format!("{} → no decision", r.decision.outcome)).or_default() += 1;
                if s.examples.len() < 20 {
                    s.examples.push((r.decision_id.clone(), vec![e.to_string()]));
                }
            }
        }
    }
    s
}
