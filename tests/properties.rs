//! Guards that hold for every partnership and every kind, on generated facts rather than
//! hand-picked ones (issue 10 §5): whatever the facts, a person who will not come is never
//! told to attend; a partnership's attendance and child-invitation decisions agree about the
//! same child; no dated action falls on a weekend or a bank holiday; and a due date in a year
//! whose bank holidays are provisional or projected says it may move.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, NaiveDate, Weekday};
use cpc_rules::engine::{Limits, RuleSet};
use cpc_rules::model::{Decision, DecisionRequest};
use cpc_rules::vocabulary::{FactType, KindSchema};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

fn sets() -> BTreeMap<String, RuleSet> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    cpc_rules::store::partnership_ids(&root)
        .expect("rules folder")
        .into_iter()
        .map(|id| {
            let b = cpc_rules::store::build(&root, &id, &Limits::default());
            let set = b.set.unwrap_or_else(|| panic!("{id} does not compile: {:?}", b.diagnostics));
            (id, set)
        })
        .collect()
}

/// A strategy for one value of `ty`: dates within 2020–2034 so every worked-out date stays in
/// the calendar.
fn value(ty: &FactType) -> BoxedStrategy<Value> {
    match ty {
        FactType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        FactType::Int { min, max } => (*min..=*max).prop_map(|n| json!(n)).boxed(),
        FactType::Date => (0i64..(365 * 14)).prop_map(|d| {
            let base = NaiveDate::from_ymd_opt(2020, 1, 6).unwrap_or_default();
            json!((base + chrono::Duration::days(d)).format("%Y-%m-%d").to_string())
        }).boxed(),
        FactType::Text { .. } => prop_oneof![Just(String::new()), "[a-z ]{1,40}"].prop_map(Value::String).boxed(),
        FactType::Code(list) => {
            let codes: Vec<String> = list.codes().map(str::to_string).collect();
            proptest::sample::select(codes).prop_map(Value::String).boxed()
        }
        FactType::List { item, .. } => proptest::collection::vec(value(item), 0..4).prop_map(Value::Array).boxed(),
        FactType::Object(fields) => {
            let strategies: Vec<BoxedStrategy<(String, Value)>> =
                fields.iter().map(|f| { let n = f.name.clone(); value(&f.ty).prop_map(move |v| (n.clone(), v)).boxed() }).collect();
            strategies.prop_map(|kv| Value::Object(kv.into_iter().collect())).boxed()
        }
    }
}

/// Facts for `kind`: each fact present or absent.
fn facts(kind: &KindSchema) -> BoxedStrategy<Value> {
    let strategies: Vec<BoxedStrategy<Option<(String, Value)>>> = kind
        .facts
        .iter()
        .map(|f| {
            let n = f.name.clone();
            proptest::option::weighted(0.85, value(&f.ty).prop_map(move |v| (n.clone(), v))).boxed()
        })
        .collect();
    strategies.prop_map(|kv| Value::Object(kv.into_iter().flatten().collect::<Map<_, _>>())).boxed()
}

fn decide(set: &RuleSet, kind: &str, facts: Value) -> Option<Decision> {
    let req = DecisionRequest { partnership: set.id().to_string(), kind: kind.to_string(), facts, today: cpc_rules::cases::CASE_TODAY };
    // Refusals (contradictory or missing facts) are the caller's problem, not a decision.
    match set.decide(&req) {
        Ok(d) => Some(d),
        Err(e @ cpc_rules::error::DecisionError::Script { .. }) => panic!("{}/{kind}: the rules failed: {e}", set.id()),
        Err(_) => None,
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() })
}

#[test]
fn no_one_who_will_not_come_is_told_to_attend() {
    for (id, set) in sets() {
        let schema = set.vocabulary().kind("attendance").cloned().expect("attendance");
        runner()
            .run(&facts(&schema), |mut f| {
                f["intends_to_attend"] = json!(false);
                if let Some(d) = decide(&set, "attendance", f.clone()) {
                    prop_assert!(d.outcome != "attend" && d.outcome != "attend_as_supporter", "{id}: {f} gave {}", d.outcome);
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn attendance_and_child_invitation_agree_about_the_same_child() {
    for (id, set) in sets() {
        let schema = set.vocabulary().kind("child_invitation").cloned().expect("child_invitation");
        runner()
            .run(&facts(&schema), |f| {
                let Some(invitation) = decide(&set, "child_invitation", f.clone()) else { return Ok(()) };
                let wants = f.get("wishes_to_attend").and_then(Value::as_str) == Some("yes");
                let attendance = decide(
                    &set,
                    "attendance",
                    json!({"role": "child", "session": "whole", "intends_to_attend": true, "wishes_to_give_views": true}),
                );
                if let Some(a) = attendance {
                    if invitation.outcome.starts_with("invite") && wants {
                        prop_assert!(a.outcome != "not_invited", "{id}: invited by child_invitation ({f}) but attendance says not_invited");
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Runs `check` on the decision of every partnership's dated kinds for generated facts.
fn for_every_dated_decision(check: impl Fn(&str, &str, &Value, &Decision) -> Result<(), TestCaseError>) {
    for (id, set) in sets() {
        for kind in ["plan_type", "timescales", "attendance"] {
            let schema = set.vocabulary().kind(kind).cloned().expect("kind");
            runner()
                .run(&facts(&schema), |f| match decide(&set, kind, f.clone()) {
                    Some(d) => check(&id, kind, &f, &d),
                    None => Ok(()),
                })
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn calendar() -> cpc_rules::calendar::Calendar {
    cpc_rules::calendar::Calendar::from_toml(include_str!("../rules/calendar/bank-holidays.toml")).expect("calendar")
}

#[test]
fn no_dated_action_falls_on_a_weekend_or_bank_holiday() {
    let calendar = calendar();
    for_every_dated_decision(|id, kind, f, d| {
        for a in &d.actions {
            if let Some(due) = a.due_date {
                let working = !matches!(due.weekday(), Weekday::Sat | Weekday::Sun) && !calendar.is_bank_holiday(due).unwrap_or(false);
                let explained = d.reasons.iter().any(|r| r.rule_id.ends_with("non-working-day"));
                prop_assert!(working || explained, "{id}/{kind}: {} due {due} on a non-working day for {f}", a.code);
            }
        }
        Ok(())
    });
}

#[test]
fn a_due_date_in_a_provisional_year_says_it_may_move() {
    let calendar = calendar();
    for_every_dated_decision(|id, kind, f, d| {
        for a in &d.actions {
            if let Some(due) = a.due_date.filter(|due| calendar.is_provisional(*due)) {
                let said = d.reasons.iter().any(|r| r.rule_id.contains("provisional"));
                prop_assert!(said, "{id}/{kind}: {} due {due} in a provisional year, not said, for {f}", a.code);
            }
        }
        Ok(())
    });
}
