//! Facts validated once into typed values.
//!
//! Every entry point — the typed gRPC calls, `Evaluate`, test cases and the CLI — hands the
//! core the facts it was given as an untyped tree ([`serde_json::Value`], the one input format),
//! and [`Facts::validate`] turns them, once, into a [`Facts`] value against the partnership's
//! vocabulary ([`crate::vocabulary`]): every given fact is checked in full (type, range, codes,
//! dates the calendar covers) and the kind's cross-field rules run in the same round, so one
//! reply lists every problem. Nothing is defaulted except a date declared `default = "today"`,
//! which takes the caller's `today` and is reported on the decision.
//!
//! No fact is required here. Whether a fact is needed depends on the path a partnership's
//! rules take, so a missing fact is refused only when a script reads it (see
//! [`crate::engine`]), naming the fact and the script position that read it.

use std::ops::RangeInclusive;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use rhai::ImmutableString;
use serde_json::{Map, Value};

use crate::vocabulary::{FactDefault, FactSpec, FactType, KindSchema};

/// The built-in decision kinds of the specification (the typed RPCs).
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
    pub const ALL: [Kind; 6] =
        [Kind::Attendance, Kind::Exclusion, Kind::ChildInvitation, Kind::PlanType, Kind::ComplaintEligibility, Kind::Timescales];

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

    /// The outcome codes of the API contract (the proto documents each). The vocabulary must
    /// declare exactly these for a built-in kind: a rule set whose vocabulary differs is
    /// refused, so an edit cannot silently break what case systems act on.
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

/// Formats a date as `YYYY-MM-DD`, exactly as `NaiveDate`'s `Display` does, for the text
/// scripts see. By hand rather than `d.format("%Y-%m-%d")` (which parses its format string on
/// every call) or `to_string()` (the formatting machinery): dates are formatted on every read of
/// a date fact and every date helper's answer (see docs/performance.md). Years outside
/// 0–9999, which `Display` writes with a sign, go through `Display`.
pub fn format_date(d: NaiveDate) -> ImmutableString {
    let (year, month, day) = (d.year(), d.month(), d.day());
    let Ok(year) = u32::try_from(year) else {
        return d.to_string().into();
    };
    if year > 9999 {
        return d.to_string().into();
    }
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let b = [
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(day / 10),
        digit(day),
    ];
    match std::str::from_utf8(&b) {
        Ok(s) => ImmutableString::from(s),
        Err(_) => d.to_string().into(),
    }
}

/// One validated fact value.
#[derive(Debug, Clone, PartialEq)]
pub enum FactValue {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number within its range.
    Int(i64),
    /// A real calendar date the calendar covers.
    Date(NaiveDate),
    /// Free text within its length.
    Text(ImmutableString),
    /// A code of its list.
    Code(ImmutableString),
    /// A list of values (shared: a script reading the fact gets it without a copy).
    List(Arc<[FactValue]>),
    /// A nested object: every field of its declaration, in order.
    Object(Arc<[(ImmutableString, FactValue)]>),
}

impl FactValue {
    /// Back to the input format (for records, saved cases and `eval`).
    pub fn to_json(&self) -> Value {
        match self {
            FactValue::Bool(b) => Value::Bool(*b),
            FactValue::Int(i) => Value::from(*i),
            FactValue::Date(d) => Value::String(format_date(*d).to_string()),
            FactValue::Text(s) | FactValue::Code(s) => Value::String(s.to_string()),
            FactValue::List(items) => Value::Array(items.iter().map(FactValue::to_json).collect()),
            FactValue::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect()),
        }
    }
}

/// What validation needs besides the facts: the caller's date and the calendar's range.
#[derive(Debug, Clone)]
pub struct Context {
    /// Today's date in England, as the caller stamps it (for `default = "today"`).
    pub today: NaiveDate,
    /// Dates the bank-holiday calendar covers; a date fact outside it is refused.
    pub dates: RangeInclusive<NaiveDate>,
}

/// A kind's facts, validated: each declared fact given or absent, in declaration order.
///
/// Cheap to clone (one reference count), so scripts can hold it freely.
#[derive(Debug, Clone)]
pub struct Facts(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    kind: Arc<KindSchema>,
    values: Vec<Option<FactValue>>,
    defaulted: Option<(usize, NaiveDate)>,
}

impl Facts {
    /// Validates `input` against `kind`, collecting every problem: unknown facts (with a
    /// did-you-mean), wrong types, ranges, codes, dates outside the calendar, and the kind's
    /// cross-field rules.
    pub fn validate(kind: &Arc<KindSchema>, input: &Value, ctx: &Context) -> Result<Facts, Vec<FieldViolation>> {
        let mut out = Vec::new();
        let Some(map) = input.as_object() else {
            return Err(vec![FieldViolation::new("facts", "must be an object of named facts")]);
        };
        let mut values: Vec<Option<FactValue>> = vec![None; kind.facts.len()];
        for (i, spec) in kind.facts.iter().enumerate() {
            if let Some(v) = map.get(&spec.name).filter(|v| !v.is_null()) {
                values[i] = check_value(&spec.ty, v, &spec.name, ctx, &mut out);
            }
        }
        unknown_keys(&kind.facts, map, "", &mut out);
        let mut defaulted = None;
        for (i, spec) in kind.facts.iter().enumerate() {
            if values[i].is_none() && spec.default == Some(FactDefault::Today) {
                values[i] = Some(FactValue::Date(ctx.today));
                defaulted = Some((i, ctx.today));
            }
        }
        let facts = Facts(Arc::new(Inner { kind: kind.clone(), values, defaulted }));
        cross_checks(&facts, &mut out);
        if out.is_empty() { Ok(facts) } else { Err(out) }
    }

    /// The kind these facts are for.
    pub fn kind(&self) -> &Arc<KindSchema> {
        &self.0.kind
    }

    /// The fact called `name`, if it was given (or defaulted).
    pub fn get(&self, name: &str) -> Option<&FactValue> {
        let (i, _) = self.0.kind.fact(name)?;
        self.0.values[i].as_ref()
    }

    /// Whether `name` is a fact of this kind (given or not).
    pub fn declares(&self, name: &str) -> bool {
        self.0.kind.fact(name).is_some()
    }

    /// The date a `default = "today"` fact took, when it was not given.
    pub fn defaulted_date(&self) -> Option<(&str, NaiveDate)> {
        self.0.defaulted.map(|(i, d)| (self.0.kind.facts[i].name.as_str(), d))
    }

    /// The facts as given (defaults included), in the input format.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (spec, v) in self.0.kind.facts.iter().zip(&self.0.values) {
            if let Some(v) = v {
                m.insert(spec.name.clone(), v.to_json());
            }
        }
        Value::Object(m)
    }

    fn code(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(FactValue::Code(c)) => Some(c.as_str()),
            _ => None,
        }
    }
    fn date(&self, name: &str) -> Option<NaiveDate> {
        match self.get(name) {
            Some(FactValue::Date(d)) => Some(*d),
            _ => None,
        }
    }
}

fn unknown_keys(schema: &[FactSpec], map: &Map<String, Value>, prefix: &str, out: &mut Vec<FieldViolation>) {
    for key in map.keys() {
        if !schema.iter().any(|s| s.name == *key) {
            let hint = crate::suggest::did_you_mean(key, schema.iter().map(|s| s.name.as_str()))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let what = if prefix.is_empty() { "is not a fact this kind takes" } else { "is not a field of this object" };
            out.push(FieldViolation::new(join(prefix, &truncate(key)), format!("{what}{hint}")));
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

fn check_value(ty: &FactType, v: &Value, path: &str, ctx: &Context, out: &mut Vec<FieldViolation>) -> Option<FactValue> {
    match ty {
        FactType::Bool => match v.as_bool() {
            Some(b) => Some(FactValue::Bool(b)),
            None => {
                out.push(FieldViolation::new(path, "must be true or false"));
                None
            }
        },
        FactType::Int { min, max } => match v.as_i64() {
            Some(n) if n >= *min && n <= *max => Some(FactValue::Int(n)),
            Some(n) => {
                out.push(FieldViolation::new(path, format!("{n} is outside {min}–{max}")));
                None
            }
            None => {
                out.push(FieldViolation::new(path, format!("must be a whole number from {min} to {max}")));
                None
            }
        },
        FactType::Date => match v.as_str() {
            Some(s) => match parse_date(s) {
                Some(d) if ctx.dates.contains(&d) => Some(FactValue::Date(d)),
                Some(_) => {
                    out.push(FieldViolation::new(
                        path,
                        format!(
                            "{s} is outside the dates the bank-holiday calendar covers ({} to {}), so no working day can be counted from it",
                            ctx.dates.start(),
                            ctx.dates.end()
                        ),
                    ));
                    None
                }
                None => {
                    out.push(FieldViolation::new(path, format!("`{}` is not a real date in YYYY-MM-DD form", truncate(s))));
                    None
                }
            },
            None => {
                out.push(FieldViolation::new(path, "must be a date in YYYY-MM-DD form"));
                None
            }
        },
        FactType::Text { max_len } => match v.as_str() {
            Some(s) if s.chars().count() <= *max_len => Some(FactValue::Text(s.into())),
            Some(_) => {
                out.push(FieldViolation::new(path, format!("is longer than {max_len} characters")));
                None
            }
            None => {
                out.push(FieldViolation::new(path, "must be text"));
                None
            }
        },
        FactType::Code(list) => match v.as_str() {
            Some(s) if list.contains(s) => Some(FactValue::Code(s.into())),
            Some(s) => {
                let hint = crate::suggest::did_you_mean(s, list.codes()).map(|h| format!("; did you mean `{h}`?")).unwrap_or_default();
                out.push(FieldViolation::new(path, format!("`{}` is not one of {}{hint}", truncate(s), list.codes().collect::<Vec<_>>().join(", "))));
                None
            }
            None => {
                out.push(FieldViolation::new(path, format!("must be one of {}", list.codes().collect::<Vec<_>>().join(", "))));
                None
            }
        },
        FactType::List { item, max_items } => match v.as_array() {
            Some(items) if items.len() > *max_items => {
                out.push(FieldViolation::new(path, format!("has {} items; at most {max_items} are accepted", items.len())));
                None
            }
            Some(items) => {
                let before = out.len();
                let values: Vec<FactValue> =
                    items.iter().enumerate().filter_map(|(i, it)| check_value(item, it, &format!("{path}[{i}]"), ctx, out)).collect();
                (out.len() == before).then(|| FactValue::List(values.into()))
            }
            None => {
                out.push(FieldViolation::new(path, "must be a list"));
                None
            }
        },
        FactType::Object(fields) => match v.as_object() {
            Some(map) => {
                let before = out.len();
                let mut values = Vec::with_capacity(fields.len());
                for f in fields {
                    let p = join(path, &f.name);
                    match map.get(&f.name).filter(|v| !v.is_null()) {
                        Some(v) => {
                            if let Some(x) = check_value(&f.ty, v, &p, ctx, out) {
                                values.push((ImmutableString::from(f.name.as_str()), x));
                            }
                        }
                        None => out.push(FieldViolation::new(p, format!("is required: {}", if f.help.is_empty() { &f.label } else { &f.help }))),
                    }
                }
                unknown_keys(fields, map, path, out);
                (out.len() == before).then(|| FactValue::Object(values.into()))
            }
            None => {
                out.push(FieldViolation::new(path, "must be an object"));
                None
            }
        },
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

/// The built-in kinds' rules that relate one fact to another. They look only at facts that
/// were given: a contradiction is refused, an absence is the scripts' business.
fn cross_checks(f: &Facts, out: &mut Vec<FieldViolation>) {
    match Kind::parse(&f.kind().name) {
        Some(Kind::PlanType) => {
            let cats = match f.get("categories") {
                Some(FactValue::List(c)) => Some(c),
                _ => None,
            };
            match (f.code("significant_harm"), cats.map(|c| c.len())) {
                (Some("suffered" | "likely"), Some(0)) => out.push(FieldViolation::new(
                    "categories",
                    "a child at risk of significant harm needs at least one category of abuse for a child protection plan",
                )),
                (Some("not_at_risk"), Some(n)) if n > 0 => out.push(FieldViolation::new(
                    "categories",
                    "categories of abuse were given but the child was found not at risk of significant harm",
                )),
                _ => {}
            }
            if let Some(cs) = cats {
                for (i, c) in cs.iter().enumerate() {
                    if cs[..i].contains(c) {
                        out.push(FieldViolation::new(format!("categories[{i}]"), "is given twice"));
                    }
                }
            }
            if f.code("conference_type") == Some("initial") && f.get("first_review").is_some() {
                out.push(FieldViolation::new("first_review", "only applies to a review conference"));
            }
        }
        Some(Kind::Timescales) => {
            let strategy = f.date("strategy_discussion_date");
            let initial = f.date("initial_conference_date");
            let review = f.date("last_review_date");
            if let (Some(s), Some(i)) = (strategy, initial) {
                if i < s {
                    out.push(FieldViolation::new("initial_conference_date", "is before the strategy discussion"));
                }
            }
            if let (Some(i), Some(r)) = (initial, review) {
                if r <= i {
                    out.push(FieldViolation::new("last_review_date", "is not after the initial conference"));
                }
            }
            if let Some(a) = f.date("as_of") {
                for (k, d) in [("strategy_discussion_date", strategy), ("initial_conference_date", initial), ("last_review_date", review)] {
                    if d.is_some_and(|d| d > a) {
                        out.push(FieldViolation::new(k, "is after the as_of date: a held meeting cannot be in the future"));
                    }
                }
            }
        }
        Some(Kind::ComplaintEligibility) => {
            if let Some(FactValue::List(gs)) = f.get("grounds") {
                for (i, g) in gs.iter().enumerate() {
                    if let FactValue::Object(fields) = g {
                        if fields.iter().any(|(k, v)| k == "description" && matches!(v, FactValue::Text(t) if t.trim().is_empty())) {
                            out.push(FieldViolation::new(format!("grounds[{i}].description"), "must describe the ground"));
                        }
                    }
                }
            }
        }
        Some(Kind::Attendance | Kind::Exclusion | Kind::ChildInvitation) | None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::Vocabulary;
    use serde_json::json;

    fn ctx() -> Context {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        Context { today: d(2025, 6, 2), dates: d(2020, 1, 1)..=d(2035, 12, 31) }
    }

    fn kind(name: &str) -> Arc<KindSchema> {
        let v = Vocabulary::from_toml(include_str!("../rules/vocabulary.toml")).unwrap_or_else(|e| panic!("{e:?}"));
        v.kind(name).cloned().unwrap_or_else(|| panic!("no kind {name}"))
    }

    fn fields(k: &str, v: Value) -> Vec<String> {
        Facts::validate(&kind(k), &v, &ctx()).err().unwrap_or_default().into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn format_date_writes_what_display_writes() {
        let mut dates: Vec<NaiveDate> = [(0, 1, 1), (9, 9, 9), (999, 12, 31), (2024, 2, 29), (2025, 4, 17), (9999, 12, 31), (10000, 1, 1), (-1, 6, 30)]
            .into_iter()
            .filter_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
            .collect();
        dates.extend([NaiveDate::MIN, NaiveDate::MAX]);
        let mut d = NaiveDate::from_ymd_opt(2019, 12, 25).unwrap_or_default();
        for _ in 0..800 {
            dates.push(d);
            d = d.succ_opt().unwrap_or(d);
        }
        for d in dates {
            assert_eq!(format_date(d).as_str(), d.to_string(), "{d:?}");
        }
    }

    #[test]
    fn accepts_well_formed_and_partial_facts() {
        let v = json!({"age": 12, "sufficient_understanding": true, "wishes_to_attend": "yes", "sensitive_information": false});
        assert!(Facts::validate(&kind("child_invitation"), &v, &ctx()).is_ok());
        // No fact is required by validation: the scripts ask for what they read.
        assert!(Facts::validate(&kind("child_invitation"), &json!({"age": 3}), &ctx()).is_ok());
    }

    #[test]
    fn names_every_bad_field_in_one_round() {
        let v = json!({"age": -1, "sufficient_understanding": "yes", "wishes_to_attend": "maybe", "sensitive": false});
        assert_eq!(fields("child_invitation", v), ["age", "sufficient_understanding", "wishes_to_attend", "sensitive"]);
        // cross-field checks run with the per-field ones
        let v = json!({"conference_type": "initial", "significant_harm": "suffered", "categories": [], "first_review": true, "safety_scores": [11]});
        assert_eq!(fields("plan_type", v), ["safety_scores[0]", "categories", "first_review"]);
    }

    #[test]
    fn refuses_dates_outside_the_calendar_and_impossible_ones() {
        let v = json!({"as_of": "2025-02-30", "strategy_discussion_date": "2019-12-31"});
        assert_eq!(fields("timescales", v), ["strategy_discussion_date", "as_of"]);
    }

    #[test]
    fn as_of_defaults_to_today_and_says_so() {
        let f = Facts::validate(&kind("timescales"), &json!({"initial_conference_date": "2025-03-03"}), &ctx()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(f.defaulted_date(), Some(("as_of", ctx().today)));
        assert_eq!(f.get("as_of"), Some(&FactValue::Date(ctx().today)));
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
        let err = Facts::validate(&kind("exclusion"), &json!({"role": "parnet", "grounds": []}), &ctx()).err().unwrap_or_default();
        assert!(err[0].description.contains("did you mean `parent`"), "{err:?}");
    }

    #[test]
    fn round_trips_to_json() {
        let v = json!({"complainant": "parent", "grounds": [{"category": "other", "description": "x"}], "stage1_completed": true});
        let f = Facts::validate(&kind("complaint_eligibility"), &v, &ctx()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(f.to_json(), v);
    }
}
