//! Bad input: refused as INVALID_ARGUMENT naming each field, and arbitrary requests (a property test) never panic, hang or leave the contract.

use super::*;

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_each_field() {
    let rules = fixture();
    let options = ServerOptions { max_request_bytes: 256 * 1024, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let mut c = server.decisions().await;

    let plan = |conference_type: i32, significant_harm: i32, categories: Vec<i32>| pb::DeterminePlanTypeRequest {
        partnership: "good".into(),
        conference_type,
        significant_harm,
        categories,
        needs_support: Some(true),
        ..Default::default()
    };

    // A kind the partnership does not have is NOT_FOUND before any fact is looked at.
    let status = c
        .check_attendance(pb::CheckAttendanceRequest { partnership: "good".into(), role: 99, ..Default::default() })
        .await
        .expect_err("no attendance rules");
    assert_eq!(status.code(), Code::NotFound);

    // Unknown enum numbers (positive and negative), all at once, with the core's own findings.
    let status = c.determine_plan_type(plan(99, -5, vec![1])).await.expect_err("unknown enums");
    assert_eq!(bad_fields(&status), ["conference_type", "significant_harm"]);

    // Unknown values inside a list are named by index.
    let status = c.determine_plan_type(plan(1, 1, vec![1, 77, -1])).await.expect_err("unknown categories");
    assert_eq!(bad_fields(&status), ["categories[1]", "categories[2]"]);

    // A list far over the limit is one violation, not one per item.
    let status = c.determine_plan_type(plan(1, 1, vec![77; 50_000])).await.expect_err("too many categories");
    assert_eq!(bad_fields(&status), ["categories"]);

    // A fact the rules read but the call left out is named, with where the rules read it.
    let status = c.evaluate(evaluate("good", "child_invitation", facts(&[]))).await.expect_err("no facts");
    assert_eq!(bad_fields(&status), ["facts.age"]);
    assert!(status.message().contains("good/child_invitation.rhai:"), "{}", status.message());

    // A misspelt fact is named, not ignored.
    let status = c
        .evaluate(evaluate(
            "good",
            "child_invitation",
            facts(&[
                ("age", V::NumberValue(14.0)),
                ("sufficient_understanding", V::BoolValue(true)),
                ("wishes_to_attend", V::StringValue("yes".into())),
                ("sensitive_informaton", V::BoolValue(false)),
            ]),
        ))
        .await
        .expect_err("misspelt fact");
    assert_eq!(bad_fields(&status), ["facts.sensitive_informaton"]);
    assert!(status.message().contains("did you mean `sensitive_information`"), "{}", status.message());

    // Contradictory facts.
    let plan = |harm: pb::SignificantHarm, categories: Vec<i32>| pb::DeterminePlanTypeRequest {
        partnership: "good".into(),
        case_ref: String::new(),
        conference_type: pb::ConferenceType::Initial as i32,
        significant_harm: harm as i32,
        categories,
        needs_support: Some(true),
        early_help_appropriate: Some(false),
        conference_date: None,
        first_review: None,
        safety_scores: vec![],
        first_language_english: None,
        needs_other_format: None,
    };
    let status = c.determine_plan_type(plan(pb::SignificantHarm::NotAtRisk, vec![1])).await.expect_err("not at risk, with a category");
    assert_eq!(bad_fields(&status), ["categories"]);
    let status = c.determine_plan_type(plan(pb::SignificantHarm::Suffered, vec![1, 1])).await.expect_err("a category twice");
    assert_eq!(bad_fields(&status), ["categories[1]"]);
    let mut initial_review = plan(pb::SignificantHarm::Suffered, vec![1]);
    initial_review.first_review = Some(true);
    let status = c.determine_plan_type(initial_review).await.expect_err("first review of an initial conference");
    assert_eq!(bad_fields(&status), ["first_review"]);
    let status = c
        .compute_timescales(pb::ComputeTimescalesRequest {
            partnership: "good".into(),
            case_ref: String::new(),
            strategy_discussion_date: Some("2025-03-10".into()),
            initial_conference_date: Some("2025-03-01".into()),
            last_review_date: None,
            as_of: "2025-02-01".into(),
        })
        .await
        .expect_err("conference before the strategy discussion, and both in the future");
    assert_eq!(bad_fields(&status), ["initial_conference_date", "strategy_discussion_date", "initial_conference_date"]);

    // Sizes: addressing fields, free text, Evaluate's facts.
    let mut long = child(&"p".repeat(65), 14);
    long.case_ref = "c".repeat(129);
    let status = c.check_child_invitation(long).await.expect_err("too long");
    assert_eq!(bad_fields(&status), ["partnership", "case_ref"]);
    let status = c
        .check_complaint_eligibility(pb::CheckComplaintEligibilityRequest {
            partnership: "good".into(),
            case_ref: String::new(),
            complainant: 1,
            grounds: vec![pb::ComplaintGround { category: 1, description: "d".repeat(5000) }],
            stage1_completed: Some(true),
            states_criteria_aspects: Some(true),
            still_dissatisfied: None,
            solution_sought: Some("s".repeat(4001)),
        })
        .await
        .expect_err("text too long");
    assert_eq!(bad_fields(&status), ["grounds[0].description", "solution_sought"]);
    let mut deep = facts(&[("leaf", V::BoolValue(true))]);
    for _ in 0..12 {
        deep = facts(&[("nested", V::StructValue(deep))]);
    }
    let status = c.evaluate(evaluate("good", "slow", deep)).await.expect_err("too deep");
    // Two problems, both named: `nested` is not a fact of `slow`, and it nests too deep.
    assert_eq!(bad_fields(&status).len(), 2, "{}", status.message());
    assert!(status.message().contains("deep"), "{}", status.message());
    let many: Vec<(String, V)> = (0..60).map(|i| (format!("unknown_{i}"), V::BoolValue(true))).collect();
    let many = prost_types::Struct { fields: many.into_iter().map(|(k, v)| (k, prost_types::Value { kind: Some(v) })).collect() };
    let status = c.evaluate(evaluate("good", "child_invitation", many)).await.expect_err("many unknown facts");
    let fields = bad_fields(&status);
    assert_eq!(fields.len(), cpc_rules::grpc::status::MAX_REPORTED_VIOLATIONS + 1, "capped: {fields:?}");
    assert_eq!(fields.last().map(String::as_str), Some("…"));

    // A message over the server's size limit is refused before it is decoded, and the server
    // carries on.
    let huge = evaluate("good", "slow", facts(&[("x", V::StringValue("x".repeat(300 * 1024)))]));
    let status = c.evaluate(huge).await.expect_err("too large");
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");
    let d = c.check_child_invitation(child("good", 14)).await.expect("still serving").into_inner();
    assert_eq!(d.outcome, "invite");
}

mod props {
    //! Property test: arbitrary typed requests and arbitrary `Struct` facts, converted at the
    //! edge and decided by the live rules through [`RuleStore`] directly — never a panic, a
    //! hang, or an outcome outside the kind's codes.

    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cpc_rules::engine::Limits;
    use cpc_rules::facts::Kind;
    use cpc_rules::grpc::convert::EdgeRequest;
    use cpc_rules::grpc::{pb, status};
    use cpc_rules::model::DecisionRequest;
    use cpc_rules::vocabulary::Vocabulary;
    use cpc_rules::store::{RuleStore, build, partnership_ids};
    use prost_types::value::Kind as K;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::{Config, TestRunner};
    use tonic::Code;

    /// The bundled partnerships that build now (others are being edited), plus the fixture's
    /// `good` partnership (without its slow kind), in a folder of their own.
    fn store() -> (tempfile::TempDir, Arc<RuleStore>) {
        let dir = super::fixture();
        let root = dir.path();
        std::fs::remove_dir_all(root.join("hostile")).expect("drop hostile");
        std::fs::remove_file(root.join("good").join("slow.rhai")).expect("drop slow");
        let bundled = super::support::bundled_rules();
        let limits = Limits::default();
        let good: Vec<String> = partnership_ids(bundled).unwrap_or_default().into_iter().filter(|id| build(bundled, id, &limits).ok()).collect();
        if !good.is_empty() {
            copy(&bundled.join("shared"), &root.join("shared"));
            for id in &good {
                copy(&bundled.join(id), &root.join(id));
            }
        }
        match RuleStore::load(root, limits.clone()) {
            Ok(s) => {
                eprintln!("property test over partnerships: {:?}", s.ids());
                (dir, Arc::new(s))
            }
            Err(_) => {
                // The bundled rules changed while being copied: test over the fixture alone.
                for id in &good {
                    let _ = std::fs::remove_dir_all(root.join(id));
                }
                let _ = std::fs::remove_dir_all(root.join("shared"));
                let s = RuleStore::load(root, limits).expect("the fixture loads");
                eprintln!("bundled rules are mid-edit; property test over the fixture: {:?}", s.ids());
                (dir, Arc::new(s))
            }
        }
    }

    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read dir") {
            let e = e.expect("entry");
            if e.path().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Req {
        Attendance(pb::CheckAttendanceRequest),
        Exclusion(pb::CheckExclusionRequest),
        Child(pb::CheckChildInvitationRequest),
        Plan(pb::DeterminePlanTypeRequest),
        Complaint(pb::CheckComplaintEligibilityRequest),
        Timescales(pb::ComputeTimescalesRequest),
        Evaluate(pb::EvaluateRequest),
    }

    fn enum_int() -> impl Strategy<Value = i32> {
        prop_oneof![6 => 0..14i32, 1 => any::<i32>()]
    }

    fn opt_bool() -> BoxedStrategy<Option<bool>> {
        proptest::option::weighted(0.9, any::<bool>()).boxed()
    }

    fn text() -> BoxedStrategy<String> {
        prop_oneof![
            4 => "[A-Za-z ,.]{0,40}",
            2 => any::<String>(),
            1 => Just(String::new()),
            1 => Just("   ".to_string()),
            1 => (3990usize..4010).prop_map(|n| "é".repeat(n)),
        ]
        .boxed()
    }

    fn date() -> BoxedStrategy<String> {
        prop_oneof![
            6 => (2019i32..2031, 1u32..13, 1u32..32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            1 => Just("2025-02-30".to_string()),
            1 => "[0-9-]{0,12}",
            1 => any::<String>(),
        ]
        .boxed()
    }

    fn partnership(ids: Vec<String>) -> BoxedStrategy<String> {
        prop_oneof![8 => select(ids), 1 => any::<String>(), 1 => Just(String::new())].boxed()
    }

    fn vocabulary() -> Vocabulary {
        let text = std::fs::read_to_string(super::support::bundled_rules().join("vocabulary.toml")).expect("vocabulary.toml");
        Vocabulary::from_toml(&text).expect("the bundled vocabulary parses")
    }

    fn codes() -> Vec<String> {
        let mut v: Vec<String> = vocabulary().code_lists().flat_map(|c| c.codes().map(str::to_string).collect::<Vec<_>>()).collect();
        v.extend(["2025-03-03", "2025-04-01", "2024-12-25"].map(String::from));
        v
    }

    fn fact_names() -> Vec<String> {
        let mut v: Vec<String> = vocabulary().kinds().flat_map(|k| k.facts.iter().map(|f| f.name.clone()).collect::<Vec<_>>()).collect();
        v.extend(["category", "description"].map(String::from));
        v.sort();
        v.dedup();
        v
    }

    fn key() -> BoxedStrategy<String> {
        prop_oneof![6 => select(fact_names()), 1 => "[a-z_]{1,12}", 1 => any::<String>()].boxed()
    }

    fn value() -> BoxedStrategy<prost_types::Value> {
        let number = prop_oneof![
            4 => (-3i64..25).prop_map(|i| i as f64),
            2 => any::<f64>(),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(1e300),
            1 => Just(0.5),
        ];
        let string = prop_oneof![4 => select(codes()), 2 => text()];
        let leaf = prop_oneof![
            1 => Just(None),
            1 => Just(Some(K::NullValue(0))),
            3 => any::<bool>().prop_map(|b| Some(K::BoolValue(b))),
            3 => number.prop_map(|n| Some(K::NumberValue(n))),
            4 => string.prop_map(|s| Some(K::StringValue(s))),
        ]
        .prop_map(|kind| prost_types::Value { kind });
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(|values| prost_types::Value { kind: Some(K::ListValue(prost_types::ListValue { values })) }),
                btree_map(key(), inner, 0..6).prop_map(|fields| prost_types::Value { kind: Some(K::StructValue(prost_types::Struct { fields })) }),
            ]
        })
        .boxed()
    }

    fn request(ids: Vec<String>) -> BoxedStrategy<Req> {
        let p = partnership(ids);
        let case_ref = prop_oneof![4 => "[A-Z0-9-]{0,20}", 1 => any::<String>(), 1 => (120usize..140).prop_map(|n| "c".repeat(n))];
        let attendance = (p.clone(), case_ref.clone(), enum_int(), enum_int(), opt_bool(), opt_bool()).prop_map(|(partnership, case_ref, role, session, w, i)| {
            Req::Attendance(pb::CheckAttendanceRequest { partnership, case_ref, role, session, wishes_to_give_views: w, intends_to_attend: i, conference_date: None, first_language_english: None, needs_other_format: None })
        });
        let exclusion = (p.clone(), case_ref.clone(), enum_int(), vec(enum_int(), 0..70))
            .prop_map(|(partnership, case_ref, role, grounds)| Req::Exclusion(pb::CheckExclusionRequest { partnership, case_ref, role, grounds }));
        let child = (
            p.clone(),
            case_ref.clone(),
            proptest::option::weighted(0.9, prop_oneof![4 => -3i32..22, 1 => any::<i32>()]),
            opt_bool(),
            enum_int(),
            opt_bool(),
        )
            .prop_map(|(partnership, case_ref, age, u, w, s)| {
                Req::Child(pb::CheckChildInvitationRequest { partnership, case_ref, age, sufficient_understanding: u, wishes_to_attend: w, sensitive_information: s })
            });
        let plan = (
            p.clone(),
            (enum_int(), enum_int(), vec(enum_int(), 0..6), opt_bool(), opt_bool()),
            (proptest::option::of(date()), opt_bool(), vec(prop_oneof![4 => -2i32..13, 1 => any::<i32>()], 0..70)),
        )
            .prop_map(|(partnership, (conference_type, significant_harm, categories, needs_support, early_help_appropriate), (conference_date, first_review, safety_scores))| {
                Req::Plan(pb::DeterminePlanTypeRequest {
                    partnership,
                    case_ref: String::new(),
                    conference_type,
                    significant_harm,
                    categories,
                    needs_support,
                    early_help_appropriate,
                    conference_date,
                    first_review,
                    safety_scores,
                    first_language_english: None,
                    needs_other_format: None,
                })
            });
        let ground = (enum_int(), text()).prop_map(|(category, description)| pb::ComplaintGround { category, description });
        let complaint = (
            p.clone(),
            enum_int(),
            vec(ground, 0..5),
            (opt_bool(), opt_bool(), proptest::option::of(text()), proptest::option::of(text())),
        )
            .prop_map(|(partnership, complainant, grounds, (stage1_completed, states_criteria_aspects, still_dissatisfied, solution_sought))| {
                Req::Complaint(pb::CheckComplaintEligibilityRequest {
                    partnership,
                    case_ref: String::new(),
                    complainant,
                    grounds,
                    stage1_completed,
                    states_criteria_aspects,
                    still_dissatisfied,
                    solution_sought,
                })
            });
        let timescales = (p.clone(), proptest::option::of(date()), proptest::option::of(date()), proptest::option::of(date()), date()).prop_map(
            |(partnership, strategy_discussion_date, initial_conference_date, last_review_date, as_of)| {
                Req::Timescales(pb::ComputeTimescalesRequest {
                    partnership,
                    case_ref: String::new(),
                    strategy_discussion_date,
                    initial_conference_date,
                    last_review_date,
                    as_of,
                })
            },
        );
        let kinds: Vec<String> = Kind::ALL.iter().map(|k| k.as_str().to_string()).chain(["slow".to_string()]).collect();
        let kind = prop_oneof![8 => select(kinds), 1 => any::<String>()];
        let evaluate = (p, kind, proptest::option::weighted(0.95, btree_map(key(), value(), 0..10)), case_ref).prop_map(|(partnership, kind, fields, case_ref)| {
            Req::Evaluate(pb::EvaluateRequest { partnership, kind, facts: fields.map(|fields| prost_types::Struct { fields }), case_ref })
        });
        prop_oneof![
            1 => attendance,
            1 => exclusion,
            1 => child,
            1 => plan,
            1 => complaint,
            1 => timescales,
            3 => evaluate,
        ]
        .boxed()
    }

    fn check(store: &RuleStore, req: Req) -> Result<(), TestCaseError> {
        let started = Instant::now();
        let converted = match req {
            Req::Attendance(r) => EdgeRequest::try_from(r),
            Req::Exclusion(r) => EdgeRequest::try_from(r),
            Req::Child(r) => EdgeRequest::try_from(r),
            Req::Plan(r) => EdgeRequest::try_from(r),
            Req::Complaint(r) => EdgeRequest::try_from(r),
            Req::Timescales(r) => EdgeRequest::try_from(r),
            Req::Evaluate(r) => EdgeRequest::try_from(r),
        };
        match converted {
            Err(violations) => {
                prop_assert!(!violations.is_empty());
                prop_assert!(violations.iter().all(|v| !v.field.is_empty() && !v.description.is_empty()), "{violations:?}");
                let s = status::invalid_argument(&violations);
                prop_assert_eq!(s.code(), Code::InvalidArgument);
            }
            Ok(edge) => match store.decide(&DecisionRequest {
                partnership: edge.partnership.clone(),
                kind: edge.kind.clone(),
                facts: edge.facts.clone(),
                today: cpc_rules::cases::CASE_TODAY,
            }) {
                Ok(decision) => {
                    let outcomes = store
                        .get(&edge.partnership)
                        .and_then(|l| l.set.kinds().find(|k| k.name == edge.kind).map(|k| k.outcomes().to_vec()))
                        .unwrap_or_default();
                    prop_assert!(outcomes.contains(&decision.outcome), "{} is not a {} outcome ({outcomes:?})", decision.outcome, edge.kind);
                    if let Some(kind) = Kind::parse(&edge.kind) {
                        prop_assert!(kind.outcomes().contains(&decision.outcome.as_str()));
                    }
                    prop_assert!(!decision.reasons.is_empty());
                    let _ = pb::Decision::from(cpc_rules::model::IssuedDecision::stamp(decision, cpc_rules::clock::now()));
                }
                Err(err) => {
                    let s = status::to_status(&err);
                    prop_assert!(matches!(s.code(), Code::InvalidArgument | Code::NotFound | Code::Internal), "{s:?}");
                }
            },
        }
        prop_assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        Ok(())
    }

    #[test]
    fn arbitrary_requests_are_refused_or_decided_within_the_contract() {
        let (dir, store) = store();
        let ids = store.ids();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let _dir = dir;
            let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
            let result = runner.run(&request(ids), |req| check(&store, req));
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the property test did not finish within 120 s: something hangs"),
        }
        worker.join().expect("worker");
    }
}
