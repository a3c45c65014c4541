use serde_json::json;

use super::*;
use crate::vocabulary::Vocabulary;

fn codes<E: FactEnum>() -> Vec<String> {
    (1..256).filter_map(|v| enum_code::<E>(v).ok().flatten()).collect()
}

fn vocabulary() -> Vocabulary {
    Vocabulary::from_toml(include_str!("../../../rules/vocabulary.toml")).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn every_enum_value_maps_to_exactly_the_vocabulary_codes() {
    let v = vocabulary();
    let pairs: [(Vec<String>, &str); 9] = [
        (codes::<pb::Role>(), "role"),
        (codes::<pb::Session>(), "session"),
        (codes::<pb::ExclusionGround>(), "exclusion_ground"),
        (codes::<pb::ChildWish>(), "child_wish"),
        (codes::<pb::ConferenceType>(), "conference_type"),
        (codes::<pb::SignificantHarm>(), "significant_harm"),
        (codes::<pb::AbuseCategory>(), "abuse_category"),
        (codes::<pb::Complainant>(), "complainant"),
        (codes::<pb::GroundCategory>(), "ground_category"),
    ];
    for (proto, list) in pairs {
        let core: Vec<String> = v.codes(list).map(|l| l.codes().map(str::to_string).collect()).unwrap_or_default();
        assert_eq!(proto, core, "{list}");
        for code in &core {
            let alias = format!("{}_{}", list.to_ascii_uppercase(), code.to_ascii_uppercase());
            if list != "child_wish" {
                assert_eq!(code_alias(&alias).as_deref(), Some(code.as_str()), "{alias}");
            }
        }
    }
}

#[test]
fn unset_fields_are_facts_not_given() {
    let att = EdgeRequest::try_from(pb::CheckAttendanceRequest {
        partnership: "york".into(),
        role: pb::Role::Professional as i32,
        intends_to_attend: Some(true),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(att.facts, json!({"role": "professional", "intends_to_attend": true}));
    assert!(att.problems.is_empty());
}

#[test]
fn typed_requests_carry_every_vocabulary_fact() {
    let v = vocabulary();
    let plan = EdgeRequest::try_from(pb::DeterminePlanTypeRequest {
        partnership: "barnsley".into(),
        conference_type: pb::ConferenceType::Review as i32,
        significant_harm: pb::SignificantHarm::Likely as i32,
        categories: vec![pb::AbuseCategory::Neglect as i32],
        needs_support: Some(true),
        early_help_appropriate: Some(false),
        conference_date: Some("2025-03-03".into()),
        first_review: Some(true),
        safety_scores: vec![3, 7],
        first_language_english: Some(true),
        needs_other_format: Some(false),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
    let mut names: Vec<&str> = plan.facts.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    names.sort_unstable();
    let mut schema: Vec<&str> = v.kind("plan_type").map(|k| k.facts.iter().map(|f| f.name.as_str()).collect()).unwrap_or_default();
    schema.sort_unstable();
    assert_eq!(names, schema);
}

#[test]
fn addressing_problems_are_refused_at_once_and_fact_problems_wait() {
    let err = EdgeRequest::try_from(pb::CheckChildInvitationRequest { partnership: String::new(), case_ref: "x".repeat(200), ..Default::default() })
        .err()
        .unwrap_or_default();
    let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["partnership", "case_ref"]);
    let ok = EdgeRequest::try_from(pb::CheckExclusionRequest { partnership: "york".into(), grounds: vec![99, 0], ..Default::default() })
        .unwrap_or_else(|e| panic!("{e:?}"));
    let fields: Vec<&str> = ok.problems.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["grounds[0]", "grounds[1]"]);
}

#[test]
fn evaluate_facts_are_bounded_and_numbers_whole() {
    use prost_types::{Struct, Value as V, value::Kind as K};
    let num = |n: f64| V { kind: Some(K::NumberValue(n)) };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("age".to_string(), num(12.0));
    fields.insert("score".to_string(), num(1.5));
    let req = EdgeRequest::try_from(pb::EvaluateRequest {
        partnership: "york".into(),
        kind: "child_invitation".into(),
        facts: Some(Struct { fields }),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(req.facts, json!({"age": 12, "score": 1.5}));
    let mut deep = V { kind: Some(K::BoolValue(true)) };
    for _ in 0..40 {
        let mut f = std::collections::BTreeMap::new();
        f.insert("x".to_string(), deep);
        deep = V { kind: Some(K::StructValue(Struct { fields: f })) };
    }
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("x".to_string(), deep);
    let req = EdgeRequest::try_from(pb::EvaluateRequest { partnership: "york".into(), kind: "k".into(), facts: Some(Struct { fields }), ..Default::default() })
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(req.problems.iter().any(|p| p.description.contains("deep")), "{:?}", req.problems);
}

#[test]
fn reload_ids_stay_inside_the_rules_folder() {
    assert!(reload_ids(&["york".into()]).is_ok());
    let err = reload_ids(&["../etc".into(), String::new(), ".hidden".into(), "a/b".into()]).err().unwrap_or_default();
    assert_eq!(err.len(), 4);
}
