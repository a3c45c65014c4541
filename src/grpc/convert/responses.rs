//! The core's answers as protobuf messages.

use chrono::{DateTime, NaiveDate, Utc};

use super::MAX_PARTNERSHIP_LEN;
use crate::engine::KindInfo;
use crate::facts::FieldViolation;
use crate::grpc::pb;
use crate::model;
use crate::store::ReloadReport;

/// A time as a protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

impl From<model::IssuedDecision> for pb::Decision {
    fn from(issued: model::IssuedDecision) -> Self {
        let d = issued.decision;
        pb::Decision {
            decided_at: Some(timestamp(issued.decided_at)),
            decision_id: issued.decision_id,
            partnership: d.partnership,
            kind: d.kind,
            outcome: d.outcome,
            summary: d.summary,
            reasons: d.reasons.into_iter().map(Into::into).collect(),
            actions: d.actions.into_iter().map(Into::into).collect(),
            rules_revision: d.rules_revision,
            categories: d.details.categories,
            ground_routes: d.details.grounds.into_iter().map(Into::into).collect(),
            panel_recommendations: d.details.panel_recommendations,
            case_ref: String::new(),
            as_of_defaulted: d.as_of_defaulted.map(date).unwrap_or_default(),
        }
    }
}

impl From<model::Reason> for pb::Reason {
    fn from(r: model::Reason) -> Self {
        pb::Reason { rule_id: r.rule_id, text: r.text, citation: Some(r.citation.into()) }
    }
}

impl From<model::Citation> for pb::Citation {
    fn from(c: model::Citation) -> Self {
        pb::Citation { document: c.document, section: c.section, assumption: c.assumption }
    }
}

impl From<model::Action> for pb::Action {
    fn from(a: model::Action) -> Self {
        pb::Action { code: a.code, description: a.description, due_date: a.due_date.map(date).unwrap_or_default(), responsible: a.responsible }
    }
}

impl From<model::GroundRoute> for pb::GroundRoute {
    fn from(g: model::GroundRoute) -> Self {
        pb::GroundRoute { index: g.index, category: g.category, route: g.route }
    }
}

impl From<model::GuidanceDocument> for pb::GuidanceDocument {
    fn from(d: model::GuidanceDocument) -> Self {
        pb::GuidanceDocument { title: d.title, source: d.source, sections: d.sections }
    }
}

impl From<model::ReloadFailure> for pb::ReloadFailure {
    fn from(f: model::ReloadFailure) -> Self {
        pb::ReloadFailure { at: Some(timestamp(f.at)), diagnostics: f.diagnostics }
    }
}

impl From<&KindInfo> for pb::DecisionKind {
    fn from(k: &KindInfo) -> Self {
        pb::DecisionKind { name: k.name.clone(), outcomes: k.outcomes().to_vec() }
    }
}

/// A partnership for `ListPartnerships`, with the live rule set's kinds and their outcomes.
pub fn partnership_info(info: model::PartnershipInfo, kinds: Vec<pb::DecisionKind>) -> pb::PartnershipInfo {
    pb::PartnershipInfo {
        loaded_at: Some(timestamp(info.loaded_at)),
        id: info.id,
        name: info.name,
        revision: info.revision,
        kinds,
        documents: info.documents.into_iter().map(Into::into).collect(),
        last_failure: info.last_failure.map(Into::into),
    }
}

impl From<ReloadReport> for pb::ReloadRulesResponse {
    fn from(r: ReloadReport) -> Self {
        pb::ReloadRulesResponse {
            swapped: r.swapped.into_iter().map(|(id, revision)| pb::SwappedPartnership { id, revision, record_impact: None }).collect(),
            unchanged: r.unchanged,
            skipped: r.skipped,
            refused: r
                .refused
                .into_iter()
                .map(|refusal| pb::RefusedPartnership { problems: refusal.lines(), partnership: refusal.partnership })
                .collect(),
        }
    }
}

/// The impact of a new revision on recorded decisions, as the reload reply gives it.
pub fn record_impact(days: u32, impact: Result<crate::record::replay::ImpactSummary, crate::record::RecordError>) -> pb::RecordImpact {
    match impact {
        Ok(s) => pb::RecordImpact {
            days,
            replayed: s.replayed as u64,
            changed: s.changed as u64,
            refused: s.refused as u64,
            outcome_changes: s.outcome_changes.into_iter().map(|(k, n)| (k, n as u64)).collect(),
            examples: s.examples.into_iter().map(|(id, diffs)| format!("{id}: {}", diffs.join("; "))).collect(),
            unavailable: String::new(),
        },
        Err(e) => pb::RecordImpact { days, unavailable: e.to_string(), ..Default::default() },
    }
}

/// Checks the partnership ids of a reload: each must name a folder directly under the rules
/// folder, so nothing outside it can be read.
pub fn reload_ids(ids: &[String]) -> Result<(), Vec<FieldViolation>> {
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let field = format!("partnerships[{i}]");
        if id.is_empty() {
            out.push(FieldViolation::new(field, "is empty"));
        } else if id.chars().count() > MAX_PARTNERSHIP_LEN {
            out.push(FieldViolation::new(field, format!("is longer than {MAX_PARTNERSHIP_LEN} characters")));
        } else if id.starts_with('.') || id.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            out.push(FieldViolation::new(field, "is not a partnership id (a folder name under the rules folder)"));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

