//! Decision kinds, their outcome codes, and the facts each one takes.
//!
//! The schema here is the single place that says what a well-formed request is. Every entry
//! point — typed gRPC RPCs, the generic `Evaluate`, test-case files and the CLI — passes its
//! facts through [`validate`], so a bad date, a negative age or a child protection plan with no
//! category of abuse is refused the same way everywhere, naming the offending field, before any
//! script runs. Nothing is silently defaulted: an optional fact that is absent stays absent and
//! the scripts see `()`.

use chrono::NaiveDate;
use serde_json::{Map, Value};

/// The built-in decision kinds of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Who may attend and how.
    Attendance,
    /// Whether a person is excluded from all or part of a conference.
    Exclusion,
    /// Whether a child is invited.
    ChildInvitation,
    /// Which plan, if any, follows a conference.
    PlanType,
    /// Whether a complaint may be heard at Stage 2.
    ComplaintEligibility,
    /// Statutory timescales in working days.
    Timescales,
}

impl Kind {
    /// Every built-in kind, in the specification's order.
    pub const ALL: [Kind; 6] = [
        Kind::Attendance,
        Kind::Exclusion,
        Kind::ChildInvitation,
        Kind::PlanType,
        Kind::ComplaintEligibility,
        Kind::Timescales,
    ];

    /// The kind's name as used in requests, script file names and decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Attendance => "attendance",
            Kind::Exclusion => "exclusion",
            Kind::ChildInvitation => "child_invitation",
            Kind::PlanType => "plan_type",
            Kind::ComplaintEligibility => "complaint_eligibility",
            Kind::Timescales => "timescales",
        }
    }

    /// Parses a kind name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The outcome codes a script for this kind may return (the contract).
    pub fn outcomes(self) -> &'static [&'static str] {
        match self {
            Kind::Attendance => &["attend", "attend_as_supporter", "attend_part", "not_invited", "proceed_without"],
            Kind::Exclusion => &["exclude", "exclude_part", "do_not_exclude"],
            Kind::ChildInvitation => &["invite", "invite_part", "represent_views"],
            Kind::PlanType => &["child_protection_plan", "child_in_need_plan", "family_early_help_plan", "no_plan"],
            Kind::ComplaintEligibility => &["eligible", "partly_eligible", "not_eligible", "premature", "incomplete"],
            Kind::Timescales => &["on_track", "overdue"],
        }
    }

    /// The facts this kind takes.
    pub fn schema(self) -> &'static [FactSpec] {
        match self {
            Kind::Attendance => ATTENDANCE,
            Kind::Exclusion => EXCLUSION,
            Kind::ChildInvitation => CHILD_INVITATION,
            Kind::PlanType => PLAN_TYPE,
            Kind::ComplaintEligibility => COMPLAINT,
            Kind::Timescales => TIMESCALES,
        }
    }
}

/// The roles a person at a conference may have.
pub const ROLES: &[&str] = &[
    "parent", "carer", "non_resident_parent", "child", "supporter", "advocate", "solicitor",
    "professional", "police", "interpreter", "observer",
];
/// Parts of a conference.
pub const SESSIONS: &[&str] = &["whole", "confidential_information"];
/// Grounds offered for excluding someone.
pub const EXCLUSION_GROUNDS: &[&str] = &[
    "threat_to_others", "likely_to_disrupt", "bail_conditions_no_contact",
    "confidential_police_information", "attendee_objection", "disagreement_with_professionals",
];
/// A child's wish to attend.
pub const WISHES: &[&str] = &["yes", "no", "unknown"];
/// Conference types.
pub const CONFERENCE_TYPES: &[&str] = &["initial", "review"];
/// Significant-harm findings.
pub const HARM: &[&str] = &["suffered", "likely", "not_at_risk"];
/// Categories of abuse.
pub const CATEGORIES: &[&str] = &["physical", "emotional", "sexual", "neglect"];
/// Who may make a complaint.
pub const COMPLAINANTS: &[&str] = &["parent", "carer", "child", "family_member", "advocate", "other"];
/// Complaint ground categories.
pub const GROUND_CATEGORIES: &[&str] = &[
    "plan_decision", "category_of_abuse", "conference_process", "procedures_not_followed",
    "agency_practice", "professional_conduct", "other",
];

/// Longest free-text fact accepted (characters).
pub const MAX_TEXT: usize = 4000;
/// Most items accepted in any list fact.
pub const MAX_ITEMS: usize = 64;

/// The type of one fact.
#[derive(Debug, Clone, Copy)]
pub enum FactType {
    /// `true` or `false`.
    Bool,
    /// A whole number within `min..=max`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A calendar date as `YYYY-MM-DD`.
    Date,
    /// Free text of at most [`MAX_TEXT`] characters.
    Text,
    /// One of a fixed set of snake_case codes.
    Enum(&'static [&'static str]),
    /// A list (at most [`MAX_ITEMS`]) of one type.
    List(&'static FactType),
    /// A nested object with its own facts.
    Object(&'static [FactSpec]),
}

/// One named fact a kind takes.
#[derive(Debug, Clone, Copy)]
pub struct FactSpec {
    /// Field name, snake_case.
    pub name: &'static str,
    /// Its type.
    pub ty: FactType,
    /// Whether a request must give it.
    pub required: bool,
    /// What it means, for generated documentation.
    pub doc: &'static str,
}

const fn req(name: &'static str, ty: FactType, doc: &'static str) -> FactSpec {
    FactSpec { name, ty, required: true, doc }
}
const fn opt(name: &'static str, ty: FactType, doc: &'static str) -> FactSpec {
    FactSpec { name, ty, required: false, doc }
}

const ATTENDANCE: &[FactSpec] = &[
    req("role", FactType::Enum(ROLES), "the person's role at the conference"),
    req("session", FactType::Enum(SESSIONS), "which part: the whole conference or a confidential information session"),
    req("wishes_to_give_views", FactType::Bool, "whether the person wishes to give their views"),
    req("intends_to_attend", FactType::Bool, "whether the person intends to attend"),
    opt("conference_date", FactType::Date, "date of the conference; with it, actions due before the conference day are dated"),
    opt("first_language_english", FactType::Bool, "whether English is the family's first language (York)"),
    opt("needs_other_format", FactType::Bool, "whether the family needs information in another format, e.g. large print or audio (York)"),
];
const EXCLUSION: &[FactSpec] = &[
    req("role", FactType::Enum(ROLES), "the role of the person whose exclusion is considered"),
    req("grounds", FactType::List(&FactType::Enum(EXCLUSION_GROUNDS)), "the grounds offered for excluding them (may be empty)"),
];
const CHILD_INVITATION: &[FactSpec] = &[
    req("age", FactType::Int { min: 0, max: 17 }, "the child's age in whole years (0–17)"),
    req("sufficient_understanding", FactType::Bool, "whether the child has sufficient understanding, as assessed"),
    req("wishes_to_attend", FactType::Enum(WISHES), "the child's wish to attend"),
    req("sensitive_information", FactType::Bool, "whether sensitive information is to be discussed"),
];
const PLAN_TYPE: &[FactSpec] = &[
    req("conference_type", FactType::Enum(CONFERENCE_TYPES), "initial or review conference"),
    req("significant_harm", FactType::Enum(HARM), "the conference's finding on significant harm"),
    req("categories", FactType::List(&FactType::Enum(CATEGORIES)), "categories of abuse (required when harm is suffered or likely; empty otherwise)"),
    req("needs_support", FactType::Bool, "whether the child or family needs ongoing support"),
    req("early_help_appropriate", FactType::Bool, "whether early help is appropriate"),
    opt("conference_date", FactType::Date, "date of the conference; with it, the plan's dated actions are returned"),
    opt("first_review", FactType::Bool, "for a review conference: whether it is the first review"),
    opt("safety_scores", FactType::List(&FactType::Int { min: 0, max: 10 }), "each participant's 0–10 answer to how safe the child is (Barnsley)"),
    opt("first_language_english", FactType::Bool, "whether English is the family's first language (York)"),
    opt("needs_other_format", FactType::Bool, "whether the family needs information in another format, e.g. large print or audio (York)"),
];
const GROUND: &[FactSpec] = &[
    req("category", FactType::Enum(GROUND_CATEGORIES), "what the ground is about"),
    req("description", FactType::Text, "the ground in the complainant's words"),
];
const COMPLAINT: &[FactSpec] = &[
    req("complainant", FactType::Enum(COMPLAINANTS), "who makes the complaint"),
    req("grounds", FactType::List(&FactType::Object(GROUND)), "the grounds of complaint"),
    req("stage1_completed", FactType::Bool, "whether Stage 1 of the complaints procedure is complete"),
    req("states_criteria_aspects", FactType::Bool, "whether the complaint says which aspects meet the Stage 2 criteria"),
    opt("still_dissatisfied", FactType::Text, "what the complainant is still dissatisfied about"),
    opt("solution_sought", FactType::Text, "the solution the complainant is looking for"),
];
const TIMESCALES: &[FactSpec] = &[
    opt("strategy_discussion_date", FactType::Date, "date of the strategy discussion that started the enquiries"),
    opt("initial_conference_date", FactType::Date, "date the initial conference was held"),
    opt("last_review_date", FactType::Date, "date of the most recent review conference"),
    req("as_of", FactType::Date, "the date to assess the timescales on"),
];

impl FactType {
    /// The type in words, for generated documentation.
    pub fn describe(&self) -> String {
        match self {
            FactType::Bool => "true/false".into(),
            FactType::Int { min, max } => format!("whole number {min}–{max}"),
            FactType::Date => "date `YYYY-MM-DD`".into(),
            FactType::Text => format!("text (at most {MAX_TEXT} characters)"),
            FactType::Enum(v) => format!("one of {}", v.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")),
            FactType::List(inner) => format!("list (at most {MAX_ITEMS}) of {}", inner.describe()),
            FactType::Object(fields) => format!(
                "{{ {} }}",
                fields.iter().map(|f| format!("`{}`: {}", f.name, f.ty.describe())).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldViolation {
    /// Path of the field, e.g. `grounds[1].category`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// Parses a `YYYY-MM-DD` date strictly.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    // By hand rather than `NaiveDate::parse_from_str(s, "%Y-%m-%d")`, which parses its format
    // string on every call (135 ns against 9 ns; see docs/performance.md).
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)
}

/// Checks `facts` against `kind`'s schema and its cross-field rules; returns every problem.
///
/// Unknown fields are refused too, so a misspelt fact never passes as absent.
pub fn validate(kind: Kind, facts: &Value) -> Result<(), Vec<FieldViolation>> {
    let mut out = Vec::new();
    match facts.as_object() {
        Some(map) => {
            check_object(kind.schema(), map, "", &mut out);
            if out.is_empty() {
                cross_checks(kind, map, &mut out);
            }
        }
        None => out.push(FieldViolation::new("facts", "must be an object of named facts")),
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

fn check_object(schema: &[FactSpec], map: &Map<String, Value>, prefix: &str, out: &mut Vec<FieldViolation>) {
    for spec in schema {
        let path = join(prefix, spec.name);
        match map.get(spec.name) {
            None | Some(Value::Null) => {
                if spec.required {
                    out.push(FieldViolation::new(path, format!("is required: {}", spec.doc)));
                }
            }
            Some(v) => check_value(&spec.ty, v, &path, out),
        }
    }
    for key in map.keys() {
        if !schema.iter().any(|s| s.name == key) {
            let hint = crate::suggest::did_you_mean(key, schema.iter().map(|s| s.name))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            out.push(FieldViolation::new(join(prefix, key), format!("is not a fact this kind takes{hint}")));
        }
    }
}

fn check_value(ty: &FactType, v: &Value, path: &str, out: &mut Vec<FieldViolation>) {
    match ty {
        FactType::Bool => {
            if !v.is_boolean() {
                out.push(FieldViolation::new(path, "must be true or false"));
            }
        }
        FactType::Int { min, max } => match v.as_i64() {
            Some(n) if n >= *min && n <= *max => {}
            Some(n) => out.push(FieldViolation::new(path, format!("{n} is outside {min}–{max}"))),
            None => out.push(FieldViolation::new(path, format!("must be a whole number from {min} to {max}"))),
        },
        FactType::Date => match v.as_str() {
            Some(s) if parse_date(s).is_some() => {}
            Some(s) => out.push(FieldViolation::new(path, format!("`{}` is not a real date in YYYY-MM-DD form", truncate(s)))),
            None => out.push(FieldViolation::new(path, "must be a date in YYYY-MM-DD form")),
        },
        FactType::Text => match v.as_str() {
            Some(s) if s.chars().count() <= MAX_TEXT => {}
            Some(_) => out.push(FieldViolation::new(path, format!("is longer than {MAX_TEXT} characters"))),
            None => out.push(FieldViolation::new(path, "must be text")),
        },
        FactType::Enum(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => {}
            Some(s) => {
                let hint = crate::suggest::did_you_mean(s, allowed.iter().copied())
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default();
                out.push(FieldViolation::new(path, format!("`{}` is not one of {}{hint}", truncate(s), allowed.join(", "))))
            }
            None => out.push(FieldViolation::new(path, format!("must be one of {}", allowed.join(", ")))),
        },
        FactType::List(item) => match v.as_array() {
            Some(items) if items.len() > MAX_ITEMS => {
                out.push(FieldViolation::new(path, format!("has {} items; at most {MAX_ITEMS} are accepted", items.len())))
            }
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    check_value(item, it, &format!("{path}[{i}]"), out);
                }
            }
            None => out.push(FieldViolation::new(path, "must be a list")),
        },
        FactType::Object(schema) => match v.as_object() {
            Some(map) => check_object(schema, map, path, out),
            None => out.push(FieldViolation::new(path, "must be an object")),
        },
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

fn date_of(map: &Map<String, Value>, key: &str) -> Option<NaiveDate> {
    map.get(key).and_then(Value::as_str).and_then(parse_date)
}

fn cross_checks(kind: Kind, map: &Map<String, Value>, out: &mut Vec<FieldViolation>) {
    match kind {
        Kind::PlanType => {
            let harm = map.get("significant_harm").and_then(Value::as_str).unwrap_or_default();
            let cats = map.get("categories").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            if harm != "not_at_risk" && cats == 0 {
                out.push(FieldViolation::new(
                    "categories",
                    "a child at risk of significant harm needs at least one category of abuse for a child protection plan",
                ));
            }
            if harm == "not_at_risk" && cats > 0 {
                out.push(FieldViolation::new(
                    "categories",
                    "categories of abuse were given but the child was found not at risk of significant harm",
                ));
            }
            if let Some(Value::Array(cs)) = map.get("categories") {
                let mut seen = std::collections::BTreeSet::new();
                for (i, c) in cs.iter().enumerate() {
                    if !seen.insert(c.as_str().unwrap_or_default()) {
                        out.push(FieldViolation::new(format!("categories[{i}]"), "is given twice"));
                    }
                }
            }
            let ctype = map.get("conference_type").and_then(Value::as_str).unwrap_or_default();
            if ctype == "initial" && map.get("first_review").is_some_and(|v| !v.is_null()) {
                out.push(FieldViolation::new("first_review", "only applies to a review conference"));
            }
        }
        Kind::Timescales => {
            let strategy = date_of(map, "strategy_discussion_date");
            let initial = date_of(map, "initial_conference_date");
            let review = date_of(map, "last_review_date");
            let as_of = date_of(map, "as_of");
            if strategy.is_none() && initial.is_none() {
                out.push(FieldViolation::new(
                    "strategy_discussion_date",
                    "give the strategy discussion date or the initial conference date",
                ));
            }
            if let (Some(s), Some(i)) = (strategy, initial) {
                if i < s {
                    out.push(FieldViolation::new("initial_conference_date", "is before the strategy discussion"));
                }
            }
            if review.is_some() && initial.is_none() {
                out.push(FieldViolation::new("initial_conference_date", "is required when a review date is given"));
            }
            if let (Some(i), Some(r)) = (initial, review) {
                if r <= i {
                    out.push(FieldViolation::new("last_review_date", "is not after the initial conference"));
                }
            }
            if let Some(a) = as_of {
                for (k, d) in [("strategy_discussion_date", strategy), ("initial_conference_date", initial), ("last_review_date", review)] {
                    if d.is_some_and(|d| d > a) {
                        out.push(FieldViolation::new(k, "is after the as_of date: a held meeting cannot be in the future"));
                    }
                }
            }
        }
        Kind::ComplaintEligibility => {
            if let Some(Value::Array(gs)) = map.get("grounds") {
                for (i, g) in gs.iter().enumerate() {
                    if g.get("description").and_then(Value::as_str).is_some_and(|d| d.trim().is_empty()) {
                        out.push(FieldViolation::new(format!("grounds[{i}].description"), "must describe the ground"));
                    }
                }
            }
        }
        Kind::Attendance | Kind::Exclusion | Kind::ChildInvitation => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(kind: Kind, v: Value) -> Vec<String> {
        validate(kind, &v).err().unwrap_or_default().into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn accepts_well_formed_facts() {
        let v = json!({"age": 12, "sufficient_understanding": true, "wishes_to_attend": "yes", "sensitive_information": false});
        assert_eq!(validate(Kind::ChildInvitation, &v), Ok(()));
    }

    #[test]
    fn names_every_bad_field() {
        let v = json!({"age": -1, "sufficient_understanding": "yes", "wishes_to_attend": "maybe", "sensitive": false});
        assert_eq!(fields(Kind::ChildInvitation, v), ["age", "sufficient_understanding", "wishes_to_attend", "sensitive_information", "sensitive"]);
    }

    #[test]
    fn refuses_impossible_dates_and_scores() {
        let v = json!({"as_of": "2025-02-30", "strategy_discussion_date": "2025-1-1"});
        assert_eq!(fields(Kind::Timescales, v), ["strategy_discussion_date", "as_of"]);
        let v = json!({"conference_type": "initial", "significant_harm": "likely", "categories": ["neglect"],
            "needs_support": true, "early_help_appropriate": false, "safety_scores": [3, 11]});
        assert_eq!(fields(Kind::PlanType, v), ["safety_scores[1]"]);
    }

    #[test]
    fn refuses_contradictions() {
        let v = json!({"conference_type": "initial", "significant_harm": "suffered", "categories": [],
            "needs_support": true, "early_help_appropriate": false});
        assert_eq!(fields(Kind::PlanType, v), ["categories"]);
        let v = json!({"strategy_discussion_date": "2025-03-10", "initial_conference_date": "2025-03-01", "as_of": "2025-04-01"});
        assert_eq!(fields(Kind::Timescales, v), ["initial_conference_date"]);
    }

    #[test]
    fn parses_only_real_dates_in_strict_form() {
        assert_eq!(parse_date("2024-02-29"), NaiveDate::from_ymd_opt(2024, 2, 29));
        for bad in ["2023-02-29", "2025-13-01", "2025-1-01", "2025/01/01", "20250101xx", "+025-01-01", "2025-01-0a", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn suggests_near_misses() {
        let v = json!({"role": "parnet", "grounds": []});
        let err = validate(Kind::Exclusion, &v).unwrap_err();
        assert!(err[0].description.contains("did you mean `parent`"), "{:?}", err);
    }
}
