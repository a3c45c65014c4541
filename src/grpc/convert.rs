//! Converting between protobuf and the decision core, at the edge and nowhere else.
//!
//! Requests become a [`DecisionRequest`]: the partnership, the kind and the facts as the JSON
//! object the core validates and the scripts read. This layer only refuses what the core cannot
//! see once the protobuf is gone — an enum left at `_UNSPECIFIED` or set to a number this version
//! does not know, a required `optional` field left unset, an over-long partnership id or
//! `case_ref`, a non-finite number in `Evaluate`'s facts — and it reports every such problem at
//! once, together with whatever the core's own checks ([`crate::facts::validate`]) find in the
//! rest of the request. Ranges, dates and contradictions are the core's rules, run here on
//! every typed request (and every `Evaluate` of a built-in kind), so bad input is
//! `INVALID_ARGUMENT` before the partnership is even looked up.
//!
//! Sizes are bounded here before any per-item work, so no request can make the server do (or
//! answer with) more than a small multiple of what a well-formed request costs: a list longer
//! than [`crate::facts::MAX_ITEMS`] is one violation, not one per item; `Evaluate`'s facts are
//! limited in nesting ([`MAX_FACTS_DEPTH`]), keys per map ([`MAX_FACT_KEYS`]), key length
//! ([`MAX_FACT_KEY_LEN`]), text length ([`crate::facts::MAX_TEXT`]) and values in all
//! ([`MAX_FACT_VALUES`]) — they are the only bounds on the facts of a partnership-defined kind,
//! which the core does not check against a schema. (The whole message is bounded first by the
//! server's `max_request_bytes`.)
//!
//! Enum values map to the core's snake_case codes by rule: strip the enum's prefix and lower the
//! case (`ROLE_NON_RESIDENT_PARENT` → `non_resident_parent`). A unit test checks that every
//! value of every enum maps to a code the core knows, and that every code has a value.

use serde_json::{Map, Number, Value};

use super::pb;
use crate::engine::KindInfo;
use crate::facts::{FieldViolation, Kind};
use crate::model;
use crate::store::ReloadReport;

/// Longest partnership id accepted (characters).
pub const MAX_PARTNERSHIP_LEN: usize = 64;
/// Longest decision kind name accepted (characters).
pub const MAX_KIND_LEN: usize = 64;
/// Longest `case_ref` accepted (characters).
pub const MAX_CASE_REF_LEN: usize = 128;
/// Deepest nesting of maps and lists in `Evaluate`'s facts (the facts map itself is depth 1).
pub const MAX_FACTS_DEPTH: usize = 8;
/// Most keys in one map of `Evaluate`'s facts.
pub const MAX_FACT_KEYS: usize = 64;
/// Longest key in `Evaluate`'s facts (characters).
pub const MAX_FACT_KEY_LEN: usize = 64;
/// Most values (of any kind, at any depth) in `Evaluate`'s facts.
pub const MAX_FACT_VALUES: usize = 4096;

/// A decision request as the core takes it, whichever RPC it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRequest {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind name.
    pub kind: String,
    /// The facts: a JSON object of named facts.
    pub facts: Value,
    /// The caller's opaque reference, echoed in the decision and never logged.
    pub case_ref: String,
}

/// A protobuf enum whose values map to the core's snake_case codes.
trait FactEnum: TryFrom<i32> {
    /// The value-name prefix to strip (`ROLE_`).
    const PREFIX: &'static str;
    /// The enum's name, for messages.
    const NAME: &'static str;
    /// The proto name of a known value (`ROLE_PARENT`).
    fn proto_name(value: i32) -> Option<&'static str>;
}

macro_rules! fact_enum {
    ($($ty:ident => $prefix:literal),* $(,)?) => {$(
        impl FactEnum for pb::$ty {
            const PREFIX: &'static str = $prefix;
            const NAME: &'static str = stringify!($ty);
            fn proto_name(value: i32) -> Option<&'static str> {
                pb::$ty::try_from(value).ok().map(|v| v.as_str_name())
            }
        }
    )*};
}

fact_enum! {
    Role => "ROLE_",
    Session => "SESSION_",
    ExclusionGround => "EXCLUSION_GROUND_",
    ChildWish => "CHILD_WISH_",
    ConferenceType => "CONFERENCE_TYPE_",
    SignificantHarm => "SIGNIFICANT_HARM_",
    AbuseCategory => "ABUSE_CATEGORY_",
    Complainant => "COMPLAINANT_",
    GroundCategory => "GROUND_CATEGORY_",
}

/// The core's code for an enum value, or why there is none.
fn enum_code<E: FactEnum>(value: i32) -> Result<String, String> {
    if value == 0 {
        return Err(format!("is required: set a {} value ({}UNSPECIFIED means not set)", E::NAME, E::PREFIX));
    }
    match E::proto_name(value) {
        Some(name) => Ok(name.strip_prefix(E::PREFIX).unwrap_or(name).to_ascii_lowercase()),
        None => Err(format!("{value} is not a known {} value", E::NAME)),
    }
}

/// Builds one kind's facts from a typed request, collecting every edge violation.
struct FactsBuilder {
    kind: Kind,
    map: Map<String, Value>,
    violations: Vec<FieldViolation>,
}

impl FactsBuilder {
    fn new(kind: Kind) -> Self {
        Self { kind, map: Map::new(), violations: Vec::new() }
    }

    fn required_message(&self, field: &str) -> String {
        match self.kind.schema().iter().find(|s| s.name == field) {
            Some(spec) => format!("is required: {}", spec.doc),
            None => "is required".to_string(),
        }
    }

    /// A required fact carried in a proto3 `optional` field.
    fn required<T: Into<Value>>(&mut self, field: &str, value: Option<T>) {
        match value {
            Some(v) => {
                self.map.insert(field.to_string(), v.into());
            }
            None => {
                let message = self.required_message(field);
                self.violations.push(FieldViolation::new(field, message));
            }
        }
    }

    /// An optional fact: absent stays absent.
    fn optional<T: Into<Value>>(&mut self, field: &str, value: Option<T>) {
        if let Some(v) = value {
            self.map.insert(field.to_string(), v.into());
        }
    }

    /// A required date or text carried in a plain proto3 `string`: empty means not given.
    fn required_string(&mut self, field: &str, value: String) {
        self.required(field, (!value.is_empty()).then_some(value));
    }

    /// A required enum fact.
    fn enumeration<E: FactEnum>(&mut self, field: &str, value: i32) {
        match enum_code::<E>(value) {
            Ok(code) => {
                self.map.insert(field.to_string(), Value::String(code));
            }
            Err(problem) => self.violations.push(FieldViolation::new(field, problem)),
        }
    }

    /// A list of enum codes. A bad item stays in place as `null`, so the core's own checks of
    /// the list still name items by their index in the request.
    fn enum_list<E: FactEnum>(&mut self, field: &str, values: &[i32]) -> Vec<Value> {
        if !self.list_len_ok(field, values.len()) {
            return Vec::new();
        }
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match enum_code::<E>(*v) {
                Ok(code) => Value::String(code),
                Err(problem) => {
                    self.violations.push(FieldViolation::new(format!("{field}[{i}]"), problem));
                    Value::Null
                }
            })
            .collect()
    }

    /// Whether a list of `len` items is short enough; if not, reports it once.
    fn list_len_ok(&mut self, field: &str, len: usize) -> bool {
        if len > crate::facts::MAX_ITEMS {
            self.violations.push(too_many(field, len));
            return false;
        }
        true
    }

    /// Finishes: the core's checks ([`crate::facts::validate`]) run here too, on what could be
    /// converted, and every problem not already reported for the same field is added, so the
    /// caller sees them all in one reply — and sees them whichever partnership it asked, before
    /// the partnership or kind is looked up.
    fn finish(self, partnership: String, case_ref: String) -> Result<DecisionRequest, Vec<FieldViolation>> {
        let mut violations = addressing(&partnership, None, &case_ref);
        let facts = Value::Object(self.map);
        violations.extend(self.violations);
        add_core_violations(self.kind, &facts, None, &mut violations);
        if violations.is_empty() {
            return Ok(DecisionRequest { partnership, kind: self.kind.as_str().to_string(), facts, case_ref });
        }
        Err(violations)
    }
}

fn too_many(field: &str, len: usize) -> FieldViolation {
    FieldViolation::new(field, format!("has {len} items; at most {} are accepted", crate::facts::MAX_ITEMS))
}

/// Adds the core's violations of `facts` (named under `prefix` in the request) that are not
/// already reported for the same field.
fn add_core_violations(kind: Kind, facts: &Value, prefix: Option<&str>, violations: &mut Vec<FieldViolation>) {
    if let Err(core) = crate::facts::validate(kind, facts) {
        let extra: Vec<FieldViolation> = core
            .into_iter()
            .map(|c| match prefix {
                Some(p) => prefix_violation(p, c),
                None => c,
            })
            .filter(|c| !violations.iter().any(|v| covers(&v.field, &c.field)))
            .collect();
        violations.extend(extra);
    }
}

/// Whether a violation of `outer` already accounts for one of `inner`.
fn covers(outer: &str, inner: &str) -> bool {
    inner == outer
        || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Checks the request fields that address a decision: partnership, kind and case_ref.
fn addressing(partnership: &str, kind: Option<&str>, case_ref: &str) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if partnership.trim().is_empty() {
        out.push(FieldViolation::new("partnership", "is required: the id of the partnership whose rules decide (e.g. `york`)"));
    } else if partnership.chars().count() > MAX_PARTNERSHIP_LEN {
        out.push(FieldViolation::new("partnership", format!("is longer than {MAX_PARTNERSHIP_LEN} characters")));
    }
    if let Some(kind) = kind {
        if kind.trim().is_empty() {
            out.push(FieldViolation::new("kind", "is required: the decision kind's name (e.g. `child_invitation`)"));
        } else if kind.chars().count() > MAX_KIND_LEN {
            out.push(FieldViolation::new("kind", format!("is longer than {MAX_KIND_LEN} characters")));
        }
    }
    if case_ref.chars().count() > MAX_CASE_REF_LEN {
        out.push(FieldViolation::new("case_ref", format!("is longer than {MAX_CASE_REF_LEN} characters")));
    }
    out
}

impl TryFrom<pb::CheckAttendanceRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckAttendanceRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new(Kind::Attendance);
        f.enumeration::<pb::Role>("role", r.role);
        f.enumeration::<pb::Session>("session", r.session);
        f.required("wishes_to_give_views", r.wishes_to_give_views);
        f.required("intends_to_attend", r.intends_to_attend);
        f.optional("conference_date", r.conference_date);
        f.optional("first_language_english", r.first_language_english);
        f.optional("needs_other_format", r.needs_other_format);
        f.finish(r.partnership, r.case_ref)
    }
}

impl TryFrom<pb::CheckExclusionRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckExclusionRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new(Kind::Exclusion);
        f.enumeration::<pb::Role>("role", r.role);
        let grounds = f.enum_list::<pb::ExclusionGround>("grounds", &r.grounds);
        f.map.insert("grounds".into(), Value::Array(grounds));
        f.finish(r.partnership, r.case_ref)
    }
}

impl TryFrom<pb::CheckChildInvitationRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckChildInvitationRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new(Kind::ChildInvitation);
        f.required("age", r.age);
        f.required("sufficient_understanding", r.sufficient_understanding);
        f.enumeration::<pb::ChildWish>("wishes_to_attend", r.wishes_to_attend);
        f.required("sensitive_information", r.sensitive_information);
        f.finish(r.partnership, r.case_ref)
    }
}

impl TryFrom<pb::DeterminePlanTypeRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::DeterminePlanTypeRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new(Kind::PlanType);
        f.enumeration::<pb::ConferenceType>("conference_type", r.conference_type);
        f.enumeration::<pb::SignificantHarm>("significant_harm", r.significant_harm);
        let categories = f.enum_list::<pb::AbuseCategory>("categories", &r.categories);
        f.map.insert("categories".into(), Value::Array(categories));
        f.required("needs_support", r.needs_support);
        f.required("early_help_appropriate", r.early_help_appropriate);
        f.optional("conference_date", r.conference_date);
        f.optional("first_review", r.first_review);
        f.optional("first_language_english", r.first_language_english);
        f.optional("needs_other_format", r.needs_other_format);
        // proto3 cannot tell an empty repeated field from an absent one: empty means not given.
        if !r.safety_scores.is_empty() && f.list_len_ok("safety_scores", r.safety_scores.len()) {
            f.map.insert("safety_scores".into(), Value::Array(r.safety_scores.into_iter().map(Value::from).collect()));
        }
        f.finish(r.partnership, r.case_ref)
    }
}

impl TryFrom<pb::CheckComplaintEligibilityRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckComplaintEligibilityRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new(Kind::ComplaintEligibility);
        f.enumeration::<pb::Complainant>("complainant", r.complainant);
        let listed = if f.list_len_ok("grounds", r.grounds.len()) { r.grounds } else { Vec::new() };
        let mut grounds = Vec::with_capacity(listed.len());
        for (i, g) in listed.into_iter().enumerate() {
            let mut ground = Map::new();
            match enum_code::<pb::GroundCategory>(g.category) {
                Ok(code) => {
                    ground.insert("category".into(), Value::String(code));
                }
                Err(problem) => f.violations.push(FieldViolation::new(format!("grounds[{i}].category"), problem)),
            }
            ground.insert("description".into(), Value::String(g.description));
            grounds.push(Value::Object(ground));
        }
        f.map.insert("grounds".into(), Value::Array(grounds));
        f.required("stage1_completed", r.stage1_completed);
        f.required("states_criteria_aspects", r.states_criteria_aspects);
        f.optional("still_dissatisfied", r.still_dissatisfied);
        f.optional("solution_sought", r.solution_sought);
        f.finish(r.partnership, r.case_ref)
    }
}

impl TryFrom<pb::ComputeTimescalesRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::ComputeTimescalesRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new(Kind::Timescales);
        f.optional("strategy_discussion_date", r.strategy_discussion_date);
        f.optional("initial_conference_date", r.initial_conference_date);
        f.optional("last_review_date", r.last_review_date);
        f.required_string("as_of", r.as_of);
        f.finish(r.partnership, r.case_ref)
    }
}

impl TryFrom<pb::EvaluateRequest> for DecisionRequest {
    type Error = Vec<FieldViolation>;

    /// The facts map converts to JSON with whole numbers (within `i64`) as integers, so that
    /// `age: 12` reaches the rules as the integer 12. Absent facts are an empty map: the core then
    /// names every required fact that is missing.
    fn try_from(r: pb::EvaluateRequest) -> Result<Self, Self::Error> {
        let mut violations = addressing(&r.partnership, Some(&r.kind), &r.case_ref);
        let facts = match r.facts {
            Some(s) => {
                let mut budget = FactsBudget { values: 0, over: false };
                let facts = struct_to_json(s, "facts", 1, &mut budget, &mut violations);
                if budget.over {
                    violations.push(FieldViolation::new("facts", format!("holds more than {MAX_FACT_VALUES} values")));
                }
                facts
            }
            None => Value::Object(Map::new()),
        };
        // A built-in kind's facts are checked here whichever partnership was asked; a
        // partnership-defined kind's facts have no schema beyond the bounds above.
        if let Some(kind) = Kind::parse(&r.kind) {
            add_core_violations(kind, &facts, Some("facts"), &mut violations);
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(DecisionRequest { partnership: r.partnership, kind: r.kind, facts, case_ref: r.case_ref })
    }
}

/// Names a core violation (whose field is relative to the facts) by its path in the request,
/// e.g. `age` → `facts.age`. A violation of the facts as a whole stays `facts`.
pub fn prefix_violation(prefix: &str, v: FieldViolation) -> FieldViolation {
    if v.field == prefix {
        v
    } else {
        FieldViolation { field: format!("{prefix}.{}", v.field), description: v.description }
    }
}

/// How many values of `Evaluate`'s facts have been converted, against [`MAX_FACT_VALUES`].
struct FactsBudget {
    values: usize,
    over: bool,
}

impl FactsBudget {
    /// Counts one value; false (and stops the conversion's descent) once over budget.
    fn take(&mut self) -> bool {
        self.values += 1;
        if self.values > MAX_FACT_VALUES {
            self.over = true;
        }
        !self.over
    }
}

fn struct_to_json(s: prost_types::Struct, path: &str, depth: usize, budget: &mut FactsBudget, out: &mut Vec<FieldViolation>) -> Value {
    if s.fields.len() > MAX_FACT_KEYS {
        out.push(FieldViolation::new(path, format!("has {} keys; at most {MAX_FACT_KEYS} are accepted", s.fields.len())));
        return Value::Null;
    }
    let mut map = Map::new();
    for (k, v) in s.fields {
        if budget.over {
            break;
        }
        if k.chars().count() > MAX_FACT_KEY_LEN {
            let shown: String = k.chars().take(24).collect();
            out.push(FieldViolation::new(path, format!("has a key longer than {MAX_FACT_KEY_LEN} characters (`{shown}…`)")));
            continue;
        }
        let p = format!("{path}.{k}");
        let json = value_to_json(v, &p, depth, budget, out);
        map.insert(k, json);
    }
    Value::Object(map)
}

fn value_to_json(v: prost_types::Value, path: &str, depth: usize, budget: &mut FactsBudget, out: &mut Vec<FieldViolation>) -> Value {
    use prost_types::value::Kind as K;
    if !budget.take() {
        return Value::Null;
    }
    match v.kind {
        None => {
            out.push(FieldViolation::new(path, "has no value (set null, a number, text, true/false, a list or a map)"));
            Value::Null
        }
        Some(K::NullValue(_)) => Value::Null,
        Some(K::BoolValue(b)) => Value::Bool(b),
        Some(K::StringValue(s)) if s.chars().count() > crate::facts::MAX_TEXT => {
            out.push(FieldViolation::new(path, format!("is longer than {} characters", crate::facts::MAX_TEXT)));
            Value::Null
        }
        Some(K::StringValue(s)) => Value::String(s),
        Some(K::NumberValue(n)) => number_to_json(n, path, out),
        Some(K::StructValue(_) | K::ListValue(_)) if depth >= MAX_FACTS_DEPTH => {
            out.push(FieldViolation::new(path, format!("nests maps and lists more than {MAX_FACTS_DEPTH} deep")));
            Value::Null
        }
        Some(K::StructValue(s)) => struct_to_json(s, path, depth + 1, budget, out),
        Some(K::ListValue(l)) if l.values.len() > crate::facts::MAX_ITEMS => {
            out.push(too_many(path, l.values.len()));
            Value::Null
        }
        Some(K::ListValue(l)) => Value::Array(
            l.values.into_iter().enumerate().map(|(i, item)| value_to_json(item, &format!("{path}[{i}]"), depth + 1, budget, out)).collect(),
        ),
    }
}

/// `-2^63` and `2^63` as `f64` (both exact).
const I64_MIN_F: f64 = -9_223_372_036_854_775_808.0;
const I64_END_F: f64 = 9_223_372_036_854_775_808.0;

fn number_to_json(n: f64, path: &str, out: &mut Vec<FieldViolation>) -> Value {
    if !n.is_finite() {
        out.push(FieldViolation::new(path, "must be a finite number"));
        return Value::Null;
    }
    if n.fract() == 0.0 && (I64_MIN_F..I64_END_F).contains(&n) {
        // In range and whole, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(n as i64);
    }
    match Number::from_f64(n) {
        Some(num) => Value::Number(num),
        None => {
            out.push(FieldViolation::new(path, "must be a finite number"));
            Value::Null
        }
    }
}

/// Parses an RFC 3339 time into a protobuf timestamp (`None` if it does not parse).
pub fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).ok()? })
}

impl From<model::Decision> for pb::Decision {
    fn from(d: model::Decision) -> Self {
        pb::Decision {
            decided_at: timestamp(&d.decided_at),
            decision_id: d.decision_id,
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
        pb::Action { code: a.code, description: a.description, due_date: a.due_date.unwrap_or_default(), responsible: a.responsible }
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
        pb::ReloadFailure { at: timestamp(&f.at), diagnostics: f.diagnostics }
    }
}

impl From<&KindInfo> for pb::DecisionKind {
    fn from(k: &KindInfo) -> Self {
        pb::DecisionKind { name: k.name.clone(), outcomes: k.outcomes.clone() }
    }
}

/// A partnership for `ListPartnerships`. `kinds` are the live rule set's kinds with their
/// outcomes; when they are not at hand, built-in kinds get their outcomes from the contract and
/// other kinds are listed by name alone.
pub fn partnership_info(info: model::PartnershipInfo, kinds: Option<Vec<pb::DecisionKind>>) -> pb::PartnershipInfo {
    let kinds = kinds.unwrap_or_else(|| {
        info.kinds
            .iter()
            .map(|name| pb::DecisionKind {
                name: name.clone(),
                outcomes: Kind::parse(name).map(|k| k.outcomes().iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
            })
            .collect()
    });
    pb::PartnershipInfo {
        loaded_at: timestamp(&info.loaded_at),
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
            swapped: r.swapped.into_iter().map(|(id, revision)| pb::SwappedPartnership { id, revision }).collect(),
            unchanged: r.unchanged,
            refused: r
                .refused
                .into_iter()
                .map(|refusal| pb::RefusedPartnership { problems: refusal.lines(), partnership: refusal.partnership })
                .collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts;
    use serde_json::json;

    fn codes<E: FactEnum>() -> Vec<String> {
        (1..256).filter_map(|v| enum_code::<E>(v).ok()).collect()
    }

    #[test]
    fn every_enum_value_maps_to_exactly_the_core_codes() {
        let pairs: [(Vec<String>, &[&str]); 9] = [
            (codes::<pb::Role>(), facts::ROLES),
            (codes::<pb::Session>(), facts::SESSIONS),
            (codes::<pb::ExclusionGround>(), facts::EXCLUSION_GROUNDS),
            (codes::<pb::ChildWish>(), facts::WISHES),
            (codes::<pb::ConferenceType>(), facts::CONFERENCE_TYPES),
            (codes::<pb::SignificantHarm>(), facts::HARM),
            (codes::<pb::AbuseCategory>(), facts::CATEGORIES),
            (codes::<pb::Complainant>(), facts::COMPLAINANTS),
            (codes::<pb::GroundCategory>(), facts::GROUND_CATEGORIES),
        ];
        for (proto, core) in pairs {
            let core: Vec<String> = core.iter().map(|s| s.to_string()).collect();
            assert_eq!(proto, core);
        }
    }

    #[test]
    fn typed_requests_carry_every_schema_fact() {
        let att = DecisionRequest::try_from(pb::CheckAttendanceRequest {
            partnership: "york".into(),
            role: pb::Role::NonResidentParent as i32,
            session: pb::Session::Whole as i32,
            wishes_to_give_views: Some(true),
            intends_to_attend: Some(false),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            att.facts,
            json!({"role": "non_resident_parent", "session": "whole", "wishes_to_give_views": true, "intends_to_attend": false})
        );
        assert_eq!(facts::validate(Kind::Attendance, &att.facts), Ok(()));

        let plan = DecisionRequest::try_from(pb::DeterminePlanTypeRequest {
            partnership: "barnsley".into(),
            conference_type: pb::ConferenceType::Review as i32,
            significant_harm: pb::SignificantHarm::Likely as i32,
            categories: vec![pb::AbuseCategory::Neglect as i32],
            needs_support: Some(true),
            early_help_appropriate: Some(false),
            conference_date: Some("2025-03-03".into()),
            first_review: Some(true),
            safety_scores: vec![3, 7],
            first_language_english: Some(false),
            needs_other_format: Some(true),
            ..Default::default()
        })
        .unwrap();
        let names: Vec<&str> = plan.facts.as_object().unwrap().keys().map(String::as_str).collect();
        let mut schema: Vec<&str> = Kind::PlanType.schema().iter().map(|s| s.name).collect();
        schema.sort_unstable();
        assert_eq!(names, schema);
        assert_eq!(facts::validate(Kind::PlanType, &plan.facts), Ok(()));

        let complaint = DecisionRequest::try_from(pb::CheckComplaintEligibilityRequest {
            partnership: "norfolk".into(),
            complainant: pb::Complainant::FamilyMember as i32,
            grounds: vec![pb::ComplaintGround { category: pb::GroundCategory::CategoryOfAbuse as i32, description: "x".into() }],
            stage1_completed: Some(true),
            states_criteria_aspects: Some(true),
            still_dissatisfied: Some("a".into()),
            solution_sought: Some("b".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(complaint.facts["grounds"], json!([{"category": "category_of_abuse", "description": "x"}]));
        assert_eq!(facts::validate(Kind::ComplaintEligibility, &complaint.facts), Ok(()));
    }

    #[test]
    fn reports_every_edge_and_core_problem_at_once() {
        let err = DecisionRequest::try_from(pb::CheckChildInvitationRequest {
            partnership: String::new(),
            case_ref: "x".repeat(200),
            age: Some(-1),
            sufficient_understanding: None,
            wishes_to_attend: 0,
            sensitive_information: Some(false),
        })
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["partnership", "case_ref", "sufficient_understanding", "wishes_to_attend", "age"]);

        let err = DecisionRequest::try_from(pb::CheckExclusionRequest {
            partnership: "york".into(),
            role: 99,
            grounds: vec![1, 0, 2],
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["role", "grounds[1]"]);
        assert!(err[0].description.contains("99"), "{err:?}");
    }

    #[test]
    fn evaluate_numbers_become_integers_when_whole() {
        use prost_types::{Struct, Value as V, value::Kind as K};
        let num = |n: f64| V { kind: Some(K::NumberValue(n)) };
        let s = Struct {
            fields: [("age".to_string(), num(12.0)), ("score".to_string(), num(2.5)), ("big".to_string(), num(1e300))]
                .into_iter()
                .collect(),
        };
        let req = DecisionRequest::try_from(pb::EvaluateRequest {
            partnership: "york".into(),
            kind: "custom".into(),
            facts: Some(s),
            case_ref: String::new(),
        })
        .unwrap();
        assert_eq!(req.facts["age"], json!(12));
        assert!(req.facts["age"].is_i64());
        assert_eq!(req.facts["score"], json!(2.5));
        assert!(req.facts["big"].is_f64());

        let s = Struct { fields: [("age".to_string(), num(f64::NAN))].into_iter().collect() };
        let err = DecisionRequest::try_from(pb::EvaluateRequest {
            partnership: "york".into(),
            kind: "child_invitation".into(),
            facts: Some(s),
            case_ref: String::new(),
        })
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["facts.age", "facts.sufficient_understanding", "facts.wishes_to_attend", "facts.sensitive_information"]);
    }

    #[test]
    fn long_lists_are_one_violation_not_one_per_item() {
        let err = DecisionRequest::try_from(pb::CheckExclusionRequest {
            partnership: "york".into(),
            role: pb::Role::Parent as i32,
            grounds: vec![99; 100_000],
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["grounds"]);
        let err = DecisionRequest::try_from(pb::CheckComplaintEligibilityRequest {
            partnership: "york".into(),
            complainant: pb::Complainant::Parent as i32,
            grounds: vec![pb::ComplaintGround { category: 0, description: String::new() }; 1000],
            stage1_completed: Some(true),
            states_criteria_aspects: Some(true),
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["grounds"]);
    }

    #[test]
    fn evaluate_facts_are_bounded() {
        use prost_types::{ListValue, Struct, Value as V, value::Kind as K};
        let eval = |facts: Struct| {
            DecisionRequest::try_from(pb::EvaluateRequest { partnership: "york".into(), kind: "custom".into(), facts: Some(facts), case_ref: String::new() })
        };
        let one = |k: &str, v: K| Struct { fields: [(k.to_string(), V { kind: Some(v) })].into_iter().collect() };
        // Deep nesting.
        let mut deep = one("leaf", K::BoolValue(true));
        for _ in 0..20 {
            deep = one("x", K::StructValue(deep));
        }
        let err = eval(deep).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].description.contains("deep"), "{err:?}");
        // Too many keys, a long key, a long text, a long list.
        let many = Struct { fields: (0..100).map(|i| (format!("k{i}"), V { kind: Some(K::BoolValue(true)) })).collect() };
        assert_eq!(eval(many).unwrap_err()[0].field, "facts");
        assert_eq!(eval(one(&"k".repeat(100), K::BoolValue(true))).unwrap_err()[0].field, "facts");
        assert_eq!(eval(one("t", K::StringValue("x".repeat(5000)))).unwrap_err()[0].field, "facts.t");
        let list = ListValue { values: vec![V { kind: Some(K::NumberValue(1.0)) }; 65] };
        assert_eq!(eval(one("l", K::ListValue(list))).unwrap_err()[0].field, "facts.l");
        // Many values in all: a list of 64 maps of 64 keys (64 × 65 + 1 values).
        let inner = Struct { fields: (0..64).map(|i| (format!("k{i}"), V { kind: Some(K::BoolValue(true)) })).collect() };
        let list = ListValue { values: vec![V { kind: Some(K::StructValue(inner)) }; 64] };
        let Err(err) = eval(one("l", K::ListValue(list))) else { panic!("over MAX_FACT_VALUES is refused") };
        assert!(err.iter().any(|v| v.field == "facts" && v.description.contains("values")), "{err:?}");
    }

    #[test]
    fn reload_ids_stay_inside_the_rules_folder() {
        assert!(reload_ids(&["york".into(), "north-yorkshire".into()]).is_ok());
        let err = reload_ids(&["../etc".into(), ".".into(), String::new()]).unwrap_err();
        assert_eq!(err.len(), 3);
    }
}
