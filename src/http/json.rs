//! The JSON API's bodies: `cpc.v1` messages in the protobuf JSON mapping.
//!
//! Field names are lowerCamelCase as protobuf's JSON mapping prints them (`decisionId`,
//! `rulesRevision`), timestamps are RFC 3339 in UTC, and — unlike protobuf's default printer —
//! fields at their default value are printed too, so a client always sees every field of
//! `pb::Decision`. The types here convert from the protobuf messages the gRPC service returns,
//! so the two transports cannot drift: an HTTP decision is the gRPC decision, printed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::grpc::pb;

/// An RFC 3339 UTC timestamp (`2026-03-02T10:15:30.123Z`), as protobuf JSON prints one.
pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// `cpc.v1.Decision`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Unique id of this decision.
    pub decision_id: String,
    /// Partnership id.
    pub partnership: String,
    /// Decision kind.
    pub kind: String,
    /// Outcome code.
    pub outcome: String,
    /// One plain-English sentence.
    pub summary: String,
    /// The rationale.
    pub reasons: Vec<Reason>,
    /// What must happen next.
    pub actions: Vec<Action>,
    /// Rule-set revision that decided.
    pub rules_revision: String,
    /// When it was decided (RFC 3339).
    pub decided_at: String,
    /// `plan_type`: categories of abuse.
    pub categories: Vec<String>,
    /// `complaint_eligibility`: where each ground goes.
    pub ground_routes: Vec<GroundRoute>,
    /// `complaint_eligibility`: what a Stage 2 panel may recommend.
    pub panel_recommendations: Vec<String>,
    /// The caller's reference, echoed.
    pub case_ref: String,
    /// The date a `default = "today"` fact took, or empty.
    pub as_of_defaulted: String,
}

/// `cpc.v1.Reason`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    /// Stable rule id.
    pub rule_id: String,
    /// Plain-English explanation.
    pub text: String,
    /// The guide and section it rests on.
    pub citation: Citation,
}

/// `cpc.v1.Citation`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Citation {
    /// Guidance document title.
    pub document: String,
    /// Section heading.
    pub section: String,
    /// True when the guide is silent and the reason states an assumption.
    pub assumption: bool,
}

/// `cpc.v1.Action`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// Action code.
    pub code: String,
    /// Plain-English description.
    pub description: String,
    /// Due date `YYYY-MM-DD`, or empty.
    pub due_date: String,
    /// Who is responsible.
    pub responsible: String,
}

/// `cpc.v1.GroundRoute`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundRoute {
    /// Index of the ground in the request (0-based).
    pub index: u32,
    /// The ground's category.
    pub category: String,
    /// Where it goes.
    pub route: String,
}

impl From<pb::Decision> for Decision {
    fn from(d: pb::Decision) -> Self {
        Decision {
            decided_at: rfc3339(d.decided_at.as_ref()),
            decision_id: d.decision_id,
            partnership: d.partnership,
            kind: d.kind,
            outcome: d.outcome,
            summary: d.summary,
            reasons: d
                .reasons
                .into_iter()
                .map(|r| {
                    let c = r.citation.unwrap_or_default();
                    Reason { rule_id: r.rule_id, text: r.text, citation: Citation { document: c.document, section: c.section, assumption: c.assumption } }
                })
                .collect(),
            actions: d
                .actions
                .into_iter()
                .map(|a| Action { code: a.code, description: a.description, due_date: a.due_date, responsible: a.responsible })
                .collect(),
            rules_revision: d.rules_revision,
            categories: d.categories,
            ground_routes: d.ground_routes.into_iter().map(|g| GroundRoute { index: g.index, category: g.category, route: g.route }).collect(),
            panel_recommendations: d.panel_recommendations,
            case_ref: d.case_ref,
            as_of_defaulted: d.as_of_defaulted,
        }
    }
}

/// `cpc.v1.ListPartnershipsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartnershipList {
    /// Every loaded partnership.
    pub partnerships: Vec<Partnership>,
}

/// `cpc.v1.PartnershipInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Partnership {
    /// Partnership id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Live revision.
    pub revision: String,
    /// Decision kinds with their outcomes.
    pub kinds: Vec<Kind>,
    /// Guidance documents the rules cite.
    pub documents: Vec<Document>,
    /// When the live revision went live (RFC 3339).
    pub loaded_at: String,
    /// The last refused reload since, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<ReloadFailure>,
}

/// `cpc.v1.DecisionKind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kind {
    /// Kind name.
    pub name: String,
    /// Its outcome codes.
    pub outcomes: Vec<String>,
}

/// `cpc.v1.GuidanceDocument`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// Title.
    pub title: String,
    /// File name or URL.
    pub source: String,
    /// Sections reasons may cite.
    pub sections: Vec<String>,
}

/// `cpc.v1.ReloadFailure`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadFailure {
    /// When the refused reload was tried (RFC 3339).
    pub at: String,
    /// Each problem found.
    pub diagnostics: Vec<String>,
}

impl From<pb::PartnershipInfo> for Partnership {
    fn from(p: pb::PartnershipInfo) -> Self {
        Partnership {
            loaded_at: rfc3339(p.loaded_at.as_ref()),
            id: p.id,
            name: p.name,
            revision: p.revision,
            kinds: p.kinds.into_iter().map(|k| Kind { name: k.name, outcomes: k.outcomes }).collect(),
            documents: p.documents.into_iter().map(|d| Document { title: d.title, source: d.source, sections: d.sections }).collect(),
            last_failure: p.last_failure.map(|f| ReloadFailure { at: rfc3339(f.at.as_ref()), diagnostics: f.diagnostics }),
        }
    }
}

/// Every live partnership as `ListPartnerships` reports it.
pub fn partnerships(store: &crate::store::RuleStore) -> Vec<pb::PartnershipInfo> {
    store
        .partnerships()
        .into_iter()
        .map(|info| {
            let kinds = store.get(&info.id).map(|l| l.set.kinds().map(pb::DecisionKind::from).collect()).unwrap_or_default();
            crate::grpc::convert::partnership_info(info, kinds)
        })
        .collect()
}
