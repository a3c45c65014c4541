//! The typed RPCs' messages into [`EdgeRequest`]s.
//!
//! A proto3 `optional` field left unset, or an enum left at `_UNSPECIFIED`, is a fact not
//! given: the core asks for it only if the partnership's rules read it. A repeated field is a
//! list given (possibly empty), except `safety_scores`, where empty means not given.

use serde_json::{Map, Value};

use super::{EdgeRequest, FactEnum, addressing, enum_code};
use crate::facts::FieldViolation;
use crate::grpc::pb;
use crate::vocabulary::DEFAULT_MAX_ITEMS;

/// Builds one request's facts, collecting the edge's problems.
struct FactsBuilder {
    map: Map<String, Value>,
    problems: Vec<FieldViolation>,
}

impl FactsBuilder {
    fn new() -> Self {
        Self { map: Map::new(), problems: Vec::new() }
    }

    fn value<T: Into<Value>>(&mut self, field: &str, value: Option<T>) {
        if let Some(v) = value {
            self.map.insert(field.to_string(), v.into());
        }
    }

    fn text(&mut self, field: &str, value: String) {
        self.value(field, (!value.is_empty()).then_some(value));
    }

    fn enumeration<E: FactEnum>(&mut self, field: &str, value: i32) {
        match enum_code::<E>(value) {
            Ok(code) => self.value(field, code),
            Err(problem) => self.problems.push(FieldViolation::new(field, problem)),
        }
    }

    /// A list of enum codes. An unknown number is a problem; an unset one cannot be a code. A
    /// list far over the vocabulary's bound is one problem, not one per item.
    fn enum_list<E: FactEnum>(&mut self, field: &str, values: &[i32]) {
        if values.len() > DEFAULT_MAX_ITEMS {
            self.problems.push(FieldViolation::new(field, format!("has {} items; at most {DEFAULT_MAX_ITEMS} are accepted", values.len())));
            return;
        }
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match enum_code::<E>(*v) {
                Ok(Some(code)) => out.push(Value::String(code)),
                Ok(None) => self.problems.push(FieldViolation::new(format!("{field}[{i}]"), format!("is unset: give a {} value", E::NAME))),
                Err(problem) => self.problems.push(FieldViolation::new(format!("{field}[{i}]"), problem)),
            }
        }
        self.map.insert(field.to_string(), Value::Array(out));
    }

    fn finish(self, partnership: String, kind: &str, case_ref: String) -> Result<EdgeRequest, Vec<FieldViolation>> {
        let addressing = addressing(&partnership, None, &case_ref);
        if !addressing.is_empty() {
            return Err(addressing);
        }
        Ok(EdgeRequest { partnership, kind: kind.to_string(), facts: Value::Object(self.map), case_ref, problems: self.problems, facts_field: None })
    }
}

impl TryFrom<pb::CheckAttendanceRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckAttendanceRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new();
        f.enumeration::<pb::Role>("role", r.role);
        f.enumeration::<pb::Session>("session", r.session);
        f.value("wishes_to_give_views", r.wishes_to_give_views);
        f.value("intends_to_attend", r.intends_to_attend);
        f.value("conference_date", r.conference_date);
        f.value("first_language_english", r.first_language_english);
        f.value("needs_other_format", r.needs_other_format);
        f.finish(r.partnership, "attendance", r.case_ref)
    }
}

impl TryFrom<pb::CheckExclusionRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckExclusionRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new();
        f.enumeration::<pb::Role>("role", r.role);
        f.enum_list::<pb::ExclusionGround>("grounds", &r.grounds);
        f.finish(r.partnership, "exclusion", r.case_ref)
    }
}

impl TryFrom<pb::CheckChildInvitationRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckChildInvitationRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new();
        f.value("age", r.age);
        f.value("sufficient_understanding", r.sufficient_understanding);
        f.enumeration::<pb::ChildWish>("wishes_to_attend", r.wishes_to_attend);
        f.value("sensitive_information", r.sensitive_information);
        f.finish(r.partnership, "child_invitation", r.case_ref)
    }
}

impl TryFrom<pb::DeterminePlanTypeRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::DeterminePlanTypeRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new();
        f.enumeration::<pb::ConferenceType>("conference_type", r.conference_type);
        f.enumeration::<pb::SignificantHarm>("significant_harm", r.significant_harm);
        f.enum_list::<pb::AbuseCategory>("categories", &r.categories);
        f.value("needs_support", r.needs_support);
        f.value("early_help_appropriate", r.early_help_appropriate);
        f.value("conference_date", r.conference_date);
        f.value("first_review", r.first_review);
        f.value("first_language_english", r.first_language_english);
        f.value("needs_other_format", r.needs_other_format);
        // proto3 cannot tell an empty repeated field from an absent one: empty means not given.
        if !r.safety_scores.is_empty() {
            f.map.insert("safety_scores".into(), Value::Array(r.safety_scores.into_iter().map(Value::from).collect()));
        }
        f.finish(r.partnership, "plan_type", r.case_ref)
    }
}

impl TryFrom<pb::CheckComplaintEligibilityRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::CheckComplaintEligibilityRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new();
        f.enumeration::<pb::Complainant>("complainant", r.complainant);
        let mut grounds = Vec::with_capacity(r.grounds.len());
        for (i, g) in r.grounds.into_iter().enumerate() {
            let mut ground = Map::new();
            match enum_code::<pb::GroundCategory>(g.category) {
                Ok(Some(code)) => {
                    ground.insert("category".into(), Value::String(code));
                }
                Ok(None) => {}
                Err(problem) => f.problems.push(FieldViolation::new(format!("grounds[{i}].category"), problem)),
            }
            ground.insert("description".into(), Value::String(g.description));
            grounds.push(Value::Object(ground));
        }
        f.map.insert("grounds".into(), Value::Array(grounds));
        f.value("stage1_completed", r.stage1_completed);
        f.value("states_criteria_aspects", r.states_criteria_aspects);
        f.value("still_dissatisfied", r.still_dissatisfied);
        f.value("solution_sought", r.solution_sought);
        f.finish(r.partnership, "complaint_eligibility", r.case_ref)
    }
}

impl TryFrom<pb::ComputeTimescalesRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::ComputeTimescalesRequest) -> Result<Self, Self::Error> {
        let mut f = FactsBuilder::new();
        f.value("strategy_discussion_date", r.strategy_discussion_date);
        f.value("initial_conference_date", r.initial_conference_date);
        f.value("last_review_date", r.last_review_date);
        f.text("as_of", r.as_of);
        f.finish(r.partnership, "timescales", r.case_ref)
    }
}
