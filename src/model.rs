//! The decision contract as plain Rust data.
//!
//! These types are what every caller sees, whatever the transport: the gRPC layer converts them
//! to and from protobuf at the edge, the CLI prints them, and the test-case runner compares them
//! with what a partnership's case files expect. They carry no behaviour beyond serialisation so
//! that the engine, the transport and the tools all speak the same shape.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request for one decision, whichever edge it came in by (gRPC, HTTP, CLI, a test case).
///
/// The facts are the one untyped input format; the core validates them once, against the
/// partnership's vocabulary, into [`crate::facts::Facts`]. `today` is stamped by the caller,
/// so the core never reads a clock.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRequest {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind name.
    pub kind: String,
    /// The facts as given: an object of named facts.
    pub facts: Value,
    /// Today's date in England, for a fact declared `default = "today"` (`as_of`).
    pub today: NaiveDate,
}

/// A decision as the caller received it: the core's [`Decision`] with the id and time the edge
/// stamped on it. The core never makes these up, so a decision is a pure function of the
/// revision, the facts and `today`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedDecision {
    /// Unique id of this decision (a version 7 UUID: its first 48 bits are `decided_at` in
    /// milliseconds, the rest random), for audit trails in the caller's case system.
    pub decision_id: String,
    /// When the decision was made.
    pub decided_at: DateTime<Utc>,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

impl IssuedDecision {
    /// Stamps `decision` with a new id and `decided_at`.
    ///
    /// The id is a UUID v7 taken from `decided_at`: unique (74 random bits) and in time order,
    /// so the decision record's primary-key index grows at its end instead of touching a random
    /// page for every decision recorded (which, in SQLite's WAL, is a whole page written per
    /// decision).
    pub fn stamp(decision: Decision, decided_at: DateTime<Utc>) -> Self {
        let seconds = u64::try_from(decided_at.timestamp()).unwrap_or(0);
        let at = uuid::Timestamp::from_unix(uuid::NoContext, seconds, decided_at.timestamp_subsec_nanos());
        IssuedDecision { decision_id: uuid::Uuid::new_v7(at).to_string(), decided_at, decision }
    }
}

/// One decision made by a partnership's rules about one set of facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Partnership id whose rules decided (`york`, `barnsley`, …).
    pub partnership: String,
    /// Decision kind (`attendance`, `plan_type`, …).
    pub kind: String,
    /// The outcome code: one of the kind's codes (see [`crate::facts::Kind::outcomes`]).
    pub outcome: String,
    /// One plain-English sentence a parent could read.
    pub summary: String,
    /// The rationale, in the order the rules fired.
    pub reasons: Vec<Reason>,
    /// What must happen next.
    pub actions: Vec<Action>,
    /// Content hash of the partnership's rule set that made this decision.
    pub rules_revision: String,
    /// The date a fact declared `default = "today"` (`as_of`) took because the call did not
    /// give it; `None` when every date came from the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of_defaulted: Option<NaiveDate>,
    /// Kind-specific structured details (empty where the kind has none).
    pub details: Details,
}

/// One rule that fired, with the guide it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable id of the rule, e.g. `york.exclusion.bail-conditions`.
    pub rule_id: String,
    /// Plain-English explanation (paraphrasing the guide, never quoting it).
    pub text: String,
    /// The guide and section this reason rests on.
    pub citation: Citation,
}

/// Where in a partnership's published guidance a reason comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// Title of the guidance document.
    pub document: String,
    /// Section heading within the document.
    pub section: String,
    /// True when the guide is silent and the reason states the assumption made instead.
    pub assumption: bool,
}

/// Something that must happen next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Machine-readable action code (see the README's action code table).
    pub code: String,
    /// Plain-English description.
    pub description: String,
    /// Due date, where one applies.
    pub due_date: Option<NaiveDate>,
    /// Who is responsible (`social_worker`, `conference_chair`, …).
    pub responsible: String,
}

/// Kind-specific structured details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// `plan_type`: the categories of abuse under which a child protection plan is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// `complaint_eligibility`: the route of each ground, in the order the grounds were given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grounds: Vec<GroundRoute>,
    /// `complaint_eligibility`: the only recommendations a Stage 2 panel may make.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub panel_recommendations: Vec<String>,
}

/// Where one complaint ground goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundRoute {
    /// Index of the ground in the request (0-based).
    pub index: u32,
    /// The ground's category as given.
    pub category: String,
    /// `stage2_panel` or `agency_complaints_procedure`.
    pub route: String,
}

/// What the service tells callers about one loaded partnership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnershipInfo {
    /// Partnership id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Active rule-set revision.
    pub revision: String,
    /// Decision kinds this partnership answers.
    pub kinds: Vec<String>,
    /// Guidance documents the rules cite.
    pub documents: Vec<GuidanceDocument>,
    /// When the active revision went live.
    pub loaded_at: DateTime<Utc>,
    /// The last reload attempt that failed since the active revision went live, if any.
    pub last_failure: Option<ReloadFailure>,
}

/// A guidance document a partnership's rules cite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuidanceDocument {
    /// Title, as cited in reasons.
    pub title: String,
    /// File name under `../shared/guidance/` (or a URL).
    pub source: String,
    /// Section headings reasons may cite.
    pub sections: Vec<String>,
    /// The decision kinds the document speaks to. A `reason(…)` (not an `assumption(…)`) of a
    /// kind the document does not cover is refused by the static checks: where the guide is
    /// silent, the rule must say so. Absent: the document covers every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<Vec<String>>,
}

/// A reload that was refused, kept so operators can see why the old revision still serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadFailure {
    /// When the attempt was made.
    pub at: DateTime<Utc>,
    /// Each problem found, as `file:line:col: message`.
    pub diagnostics: Vec<String>,
}
