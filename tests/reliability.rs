//! Reliability and security of the gRPC service, end to end: hostile scripts, bad input,
//! overload, deadlines, draining, TLS and mutual TLS, credentials, metrics and a soak run —
//! each against a real server on `127.0.0.1:0` (traffic never leaves loopback). Privacy of logs
//! is tested in `tests/privacy.rs` (it needs the process-wide log subscriber).
//!
//! Every test builds its own rules folder (see `support::fixture`) so that edits to the bundled rules
//! cannot make these tests flaky; only the property test reads the bundled rules (the
//! partnerships among them that currently build), as the contract says the service must not
//! panic or hang on them whatever the request.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::pb::rules_service_client::RulesServiceClient;
use cpc_rules::grpc::server::ServerOptions;
use prost_types::value::Kind as V;
use support::{HOSTILE, child, evaluate, facts, fixture, load, slow_limits, start};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------




fn slow(ms: u32) -> pb::EvaluateRequest {
    evaluate("good", "slow", facts(&[("ms", V::NumberValue(f64::from(ms)))]))
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(message);
    r.set_timeout(timeout);
    r
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    r
}

fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().unwrap_or_else(|| panic!("INVALID_ARGUMENT carries a BadRequest: {status:?}"));
    bad.field_violations.iter().map(|v| v.field.clone()).collect()
}

fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 1. Hostile or broken scripts
// ---------------------------------------------------------------------------------------------

/// What each hostile kind must be answered with: the `ErrorInfo` reasons allowed, and whether
/// the engine knows the line (then `file:line:col` is in the message).
fn expected(kind: &str) -> (&'static [&'static str], Option<usize>) {
    match kind {
        "endless_loop" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(3)),
        "deep_recursion" => (&["SCRIPT_LIMIT"], Some(3)),
        "huge_string" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(3)),
        "huge_array" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(3)),
        "huge_map" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(4)),
        "throws" => (&["SCRIPT_RUNTIME"], Some(3)),
        "throws_facts" => (&["SCRIPT_RUNTIME"], Some(2)),
        "wrong_shape" | "unknown_outcome" => (&["SCRIPT_BAD_RESULT"], None),
        "dynamic_call" => (&["SCRIPT_RUNTIME"], Some(3)),
        other => panic!("no expectation for {other}"),
    }
}

fn hostile_request(kind: &str) -> pb::EvaluateRequest {
    evaluate("hostile", kind, facts(&[("name", V::StringValue("read_file".into()))]))
}

fn assert_script_failure(kind: &str, status: &tonic::Status) {
    assert_eq!(status.code(), Code::Internal, "{kind}: {status:?}");
    let (reasons, line) = expected(kind);
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("{kind}: ErrorInfo: {status:?}"));
    assert!(reasons.contains(&info.reason.as_str()), "{kind}: reason {} not in {reasons:?}: {}", info.reason, status.message());
    let file = format!("hostile/{kind}.rhai");
    assert_eq!(info.metadata.get("file"), Some(&file), "{kind}: {status:?}");
    match line {
        Some(line) => {
            assert_eq!(info.metadata.get("line").map(String::as_str), Some(line.to_string().as_str()), "{kind}: {}", status.message());
            let column = info.metadata.get("column").unwrap_or_else(|| panic!("{kind}: a column: {status:?}"));
            assert!(status.message().contains(&format!("{file}:{line}:{column}")), "{kind}: {}", status.message());
        }
        None => assert!(status.message().contains(&file), "{kind}: {}", status.message()),
    }
}

#[tokio::test]
async fn every_hostile_script_is_internal_naming_file_and_position_within_its_budget() {
    let rules = fixture();
    let server = start(load(rules.path(), Limits::default()), ServerOptions::default(), false).await;
    let mut client = server.decisions().await;
    for (kind, _) in HOSTILE {
        let started = Instant::now();
        let status = client.evaluate(hostile_request(kind)).await.expect_err(&format!("{kind} must not decide"));
        let took = started.elapsed();
        assert_script_failure(kind, &status);
        // The budget is 50 ms; allow for a slow CI machine, but never a hang.
        assert!(took < Duration::from_secs(2), "{kind} took {took:?}");
        eprintln!("{kind:>16}: {} in {took:?}: {}", reason(&status), status.message());
    }
    // The unknown outcome is named in the message.
    let status = client.evaluate(hostile_request("unknown_outcome")).await.expect_err("no decision");
    assert!(status.message().contains("maybe"), "{}", status.message());
    // The same partnership's well-behaved kind still decides.
    let d = client.check_child_invitation(child("hostile", 14)).await.expect("hostile/child_invitation decides").into_inner();
    assert_eq!(d.outcome, "invite");
}

#[tokio::test]
async fn the_wall_clock_budget_stops_a_loop_even_without_an_operations_limit() {
    let rules = fixture();
    let limits = Limits { max_operations: 0, ..Limits::default() };
    let budget = limits.time_budget;
    let server = start(load(rules.path(), limits), ServerOptions::default(), false).await;
    let mut client = server.decisions().await;
    let started = Instant::now();
    let status = client.evaluate(hostile_request("endless_loop")).await.expect_err("the loop is stopped");
    let took = started.elapsed();
    assert_eq!(reason(&status), "SCRIPT_TIMEOUT", "{status:?}");
    assert!(status.message().contains("hostile/endless_loop.rhai:3:"), "{}", status.message());
    assert!(took >= budget, "stopped after {took:?}, before its budget");
    assert!(took < budget + Duration::from_secs(2), "stopped after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_requests_are_served_while_hostile_scripts_run() {
    let rules = fixture();
    let options = ServerOptions { max_queue_wait: Duration::from_secs(10), max_queued_decisions: 1000, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let bad_channel = server.channel().await;
    let good_channel = server.channel().await;

    let mut bad = Vec::new();
    for round in 0..4 {
        for (kind, _) in HOSTILE {
            let mut c = DecisionServiceClient::new(bad_channel.clone());
            let kind = *kind;
            bad.push(tokio::spawn(async move {
                let _ = round;
                (kind, c.evaluate(hostile_request(kind)).await)
            }));
        }
    }
    let mut good = Vec::new();
    for i in 0..40 {
        // Both partnerships: `good`, and the hostile partnership's own well-behaved kind.
        let partnership = if i % 2 == 0 { "good" } else { "hostile" };
        let age = 8 + (i % 8);
        let mut c = DecisionServiceClient::new(good_channel.clone());
        good.push(tokio::spawn(async move { (age, c.check_child_invitation(child(partnership, age)).await) }));
    }
    for g in good {
        let (age, result) = g.await.expect("task");
        let d = result.unwrap_or_else(|s| panic!("a good request failed while hostile scripts ran: {s:?}")).into_inner();
        assert_eq!(d.outcome, if age >= 12 { "invite" } else { "represent_views" }, "age {age}");
    }
    for b in bad {
        let (kind, result) = b.await.expect("task");
        assert_script_failure(kind, &result.expect_err("no decision"));
    }
}

/// Writes `script` as `hostile/<kind>.rhai` (declaring the kind) and asks the running server to
/// reload: the set must be refused naming the file and line, and the old revision keep serving.
async fn refused_on_reload(server: &support::TestServer, root: &std::path::Path, kind: &str, script: &str, admin: &str) -> Vec<String> {
    let toml = root.join("hostile").join("partnership.toml");
    let meta = std::fs::read_to_string(&toml).expect("read partnership.toml");
    if !meta.contains(&format!("[custom_kinds.{kind}]")) {
        std::fs::write(&toml, format!("{meta}\n[custom_kinds.{kind}]\noutcomes = [\"ok\"]\n")).expect("declare kind");
    }
    let file = root.join("hostile").join(format!("{kind}.rhai"));
    std::fs::write(&file, script).expect("write script");
    let mut rules = server.rules().await;
    let r = rules
        .reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec!["hostile".into()] }, admin))
        .await
        .expect("ReloadRules")
        .into_inner();
    std::fs::remove_file(&file).expect("remove script");
    assert_eq!(r.refused.len(), 1, "{kind}: {r:?}");
    r.refused[0].problems.clone()
}

#[tokio::test]
async fn scripts_cannot_read_files_env_or_network_or_use_eval() {
    const ADMIN: &str = "admin-token-for-tests-0123456789";
    let rules = fixture();
    let options = ServerOptions {
        access: cpc_rules::grpc::auth::AccessPolicy { admin_token: Some(cpc_rules::grpc::auth::Secret::new(ADMIN).expect("token")), ..Default::default() },
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let mut client = server.decisions().await;

    // Calls that get past the static checks (the name is only known at run time) find nothing:
    // no function reads files, the environment or the network, and `eval` cannot be reached.
    for name in ["read_file", "open", "File", "env", "getenv", "system", "exec", "command", "http_get", "connect", "socket", "eval", "import"] {
        let req = evaluate("hostile", "dynamic_call", facts(&[("name", V::StringValue(name.into()))]));
        let status = client.evaluate(req).await.expect_err(&format!("{name} is not callable"));
        assert_eq!(status.code(), Code::Internal, "{name}: {status:?}");
        assert!(status.message().contains("hostile/dynamic_call.rhai"), "{name}: {}", status.message());
    }

    // Written directly, they are refused when the rules are loaded, with file and position, and
    // the last good revision keeps serving.
    let before = client.check_child_invitation(child("hostile", 14)).await.expect("decides").into_inner().rules_revision;
    let attempts: [(&str, &str, &str); 5] = [
        ("reads_file", "let text = read_file(\"/etc/passwd\");\ndecide(\"ok\", text, [], [])\n", "hostile/reads_file.rhai:1:"),
        ("reads_env", "let home = env(\"HOME\");\ndecide(\"ok\", home, [], [])\n", "hostile/reads_env.rhai:1:"),
        ("opens_socket", "let s = connect(\"127.0.0.1:22\");\ndecide(\"ok\", \"x\", [], [])\n", "hostile/opens_socket.rhai:1:"),
        ("uses_eval", "let x = eval(\"40 + 2\");\ndecide(\"ok\", \"x\", [], [])\n", "hostile/uses_eval.rhai:1:"),
        ("runs_process", "\nlet out = system(\"id\");\ndecide(\"ok\", out, [], [])\n", "hostile/runs_process.rhai:2:"),
    ];
    for (kind, script, position) in attempts {
        let problems = refused_on_reload(&server, rules.path(), kind, script, ADMIN).await;
        assert!(problems.iter().any(|p| p.starts_with(position)), "{kind}: {problems:?}");
    }

    // `import` either fails to load or fails at run time: the module resolver finds nothing.
    let toml = rules.path().join("hostile").join("partnership.toml");
    let meta = std::fs::read_to_string(&toml).expect("read");
    std::fs::write(&toml, format!("{meta}\n[custom_kinds.imports]\noutcomes = [\"ok\"]\n")).expect("declare");
    std::fs::write(
        rules.path().join("hostile").join("imports.rhai"),
        format!("import \"/etc/passwd\" as p;\ndecide(\"ok\", \"x\", [reason(\"h.i\", \"{}\", \"x\")], [])\n", support::SECTION),
    )
    .expect("write");
    let mut rules_client = server.rules().await;
    let r = rules_client
        .reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec!["hostile".into()] }, ADMIN))
        .await
        .expect("reload")
        .into_inner();
    if r.refused.is_empty() {
        let status = client.evaluate(evaluate("hostile", "imports", facts(&[]))).await.expect_err("import fails");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("hostile/imports.rhai:1:"), "{}", status.message());
        eprintln!("import fails at run time: {}", status.message());
    } else {
        assert!(r.refused[0].problems.iter().any(|p| p.starts_with("hostile/imports.rhai:1:")), "{r:?}");
        eprintln!("import is refused at load: {:?}", r.refused[0].problems);
        let after = client.check_child_invitation(child("hostile", 14)).await.expect("still decides").into_inner().rules_revision;
        assert_eq!(after, before, "the last good revision keeps serving");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_each_field() {
    let rules = fixture();
    let options = ServerOptions { max_request_bytes: 256 * 1024, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let mut c = server.decisions().await;

    // Unknown enum numbers (positive and negative) and a missing required boolean, all at once.
    let status = c
        .check_attendance(pb::CheckAttendanceRequest {
            partnership: "good".into(),
            case_ref: String::new(),
            role: 99,
            session: -5,
            wishes_to_give_views: None,
            intends_to_attend: Some(true),
        })
        .await
        .expect_err("unknown enums");
    assert_eq!(bad_fields(&status), ["role", "session", "wishes_to_give_views"]);

    // Unknown values inside a list are named by index.
    let status = c
        .check_exclusion(pb::CheckExclusionRequest { partnership: "good".into(), case_ref: String::new(), role: 1, grounds: vec![1, 77, -1] })
        .await
        .expect_err("unknown grounds");
    assert_eq!(bad_fields(&status), ["grounds[1]", "grounds[2]"]);

    // A list far over the limit is one violation, not one per item.
    let status = c
        .check_exclusion(pb::CheckExclusionRequest { partnership: "good".into(), case_ref: String::new(), role: 1, grounds: vec![77; 50_000] })
        .await
        .expect_err("too many grounds");
    assert_eq!(bad_fields(&status), ["grounds"]);

    // Missing required facts, through Evaluate: every one is named.
    let status = c.evaluate(evaluate("good", "child_invitation", facts(&[]))).await.expect_err("no facts");
    assert_eq!(
        bad_fields(&status),
        ["facts.age", "facts.sufficient_understanding", "facts.wishes_to_attend", "facts.sensitive_information"]
    );

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
    assert_eq!(bad_fields(&status), ["facts.sensitive_information", "facts.sensitive_informaton"]);

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
    assert_eq!(bad_fields(&status).len(), 1);
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
    use cpc_rules::facts::{self, Kind};
    use cpc_rules::grpc::convert::DecisionRequest;
    use cpc_rules::grpc::{pb, status};
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

    fn codes() -> Vec<String> {
        let mut v: Vec<String> = [facts::ROLES, facts::SESSIONS, facts::EXCLUSION_GROUNDS, facts::WISHES, facts::CONFERENCE_TYPES, facts::HARM, facts::CATEGORIES, facts::COMPLAINANTS, facts::GROUND_CATEGORIES]
            .iter()
            .flat_map(|c| c.iter().map(|s| s.to_string()))
            .collect();
        v.extend(["2025-03-03", "2025-04-01", "2024-12-25"].map(String::from));
        v
    }

    fn fact_names() -> Vec<String> {
        let mut v: Vec<String> = Kind::ALL.iter().flat_map(|k| k.schema().iter().map(|s| s.name.to_string())).collect();
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
            Req::Attendance(pb::CheckAttendanceRequest { partnership, case_ref, role, session, wishes_to_give_views: w, intends_to_attend: i })
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
            Req::Attendance(r) => DecisionRequest::try_from(r),
            Req::Exclusion(r) => DecisionRequest::try_from(r),
            Req::Child(r) => DecisionRequest::try_from(r),
            Req::Plan(r) => DecisionRequest::try_from(r),
            Req::Complaint(r) => DecisionRequest::try_from(r),
            Req::Timescales(r) => DecisionRequest::try_from(r),
            Req::Evaluate(r) => DecisionRequest::try_from(r),
        };
        match converted {
            Err(violations) => {
                prop_assert!(!violations.is_empty());
                prop_assert!(violations.iter().all(|v| !v.field.is_empty() && !v.description.is_empty()), "{violations:?}");
                let s = status::invalid_argument(&violations);
                prop_assert_eq!(s.code(), Code::InvalidArgument);
            }
            Ok(req) => match store.decide(&req.partnership, &req.kind, &req.facts) {
                Ok(decision) => {
                    let outcomes = store
                        .get(&req.partnership)
                        .and_then(|l| l.set.kinds().find(|k| k.name == req.kind).map(|k| k.outcomes.clone()))
                        .unwrap_or_default();
                    prop_assert!(outcomes.contains(&decision.outcome), "{} is not a {} outcome ({outcomes:?})", decision.outcome, req.kind);
                    if let Some(kind) = Kind::parse(&req.kind) {
                        prop_assert!(kind.outcomes().contains(&decision.outcome.as_str()));
                    }
                    prop_assert!(!decision.reasons.is_empty());
                    let _ = pb::Decision::from(decision);
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

// ---------------------------------------------------------------------------------------------
// 3. Overload, deadlines, draining
// ---------------------------------------------------------------------------------------------

fn assert_shed(status: &tonic::Status, why: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some(why), "{status:?}");
    let retry = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(60), "{retry:?}");
}

fn assert_deadline(status: &tonic::Status) {
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

/// Waits until the server reports `n` scripts running (via its metrics), so tests do not race.
async fn until_running(server: &support::TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(server, "/metrics").await.1;
        let running = text.lines().find_map(|l| l.strip_prefix("cpc_decisions_running ")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
        if running >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} scripts never ran:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server reports `n` decisions queued.
async fn until_queued(server: &support::TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(server, "/metrics").await.1;
        let queued = text.lines().find_map(|l| l.strip_prefix("cpc_decisions_queued ")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
        if queued >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} decisions never queued:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET path` on the metrics port: (status line, body).
async fn scrape(server: &support::TestServer, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.metrics_addr.expect("the server serves metrics");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("metrics answer in time").expect("read");
    let text = String::from_utf8(buf).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_decision_queue_sheds_with_resource_exhausted() {
    let rules = fixture();
    let options = ServerOptions {
        max_concurrent_decisions: 1,
        max_queued_decisions: 1,
        max_queue_wait: Duration::from_secs(10),
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), slow_limits()), options, true).await;
    let ch = server.channel().await;
    let mut a = DecisionServiceClient::new(ch.clone());
    let running = tokio::spawn(async move { a.evaluate(slow(700)).await });
    until_running(&server, 1).await;
    let mut b = DecisionServiceClient::new(ch.clone());
    let queued = tokio::spawn(async move { b.check_child_invitation(child("good", 14)).await });
    until_queued(&server, 1).await;

    let mut c = DecisionServiceClient::new(ch.clone());
    for _ in 0..3 {
        let started = Instant::now();
        let status = c.check_child_invitation(child("good", 14)).await.expect_err("the queue is full");
        assert_shed(&status, "DECISION_QUEUE_FULL");
        assert!(started.elapsed() < Duration::from_millis(500), "shed at once, not after waiting: {:?}", started.elapsed());
    }
    assert_eq!(running.await.expect("task").expect("the running decision completes").into_inner().outcome, "done");
    assert_eq!(queued.await.expect("task").expect("the queued decision completes").into_inner().outcome, "invite");
    // With the slot free again, decisions are made.
    assert_eq!(c.check_child_invitation(child("good", 14)).await.expect("decides").into_inner().outcome, "invite");
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains(r#"cpc_shed_total{reason="DECISION_QUEUE_FULL"} 3"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_waits_too_long_for_a_slot_is_shed() {
    let rules = fixture();
    let options = ServerOptions {
        max_concurrent_decisions: 1,
        max_queued_decisions: 10,
        max_queue_wait: Duration::from_millis(150),
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), slow_limits()), options, true).await;
    let mut a = server.decisions().await;
    let running = tokio::spawn(async move { a.evaluate(slow(1000)).await });
    until_running(&server, 1).await;
    let mut c = server.decisions().await;
    let started = Instant::now();
    let status = c.check_child_invitation(child("good", 14)).await.expect_err("no slot in time");
    let waited = started.elapsed();
    assert_shed(&status, "DECISION_QUEUE_WAIT");
    assert!(waited >= Duration::from_millis(140) && waited < Duration::from_millis(900), "waited {waited:?}");
    running.await.expect("task").expect("the running decision completes");
}

/// Calls `path` with `message` over a raw HTTP/2 connection carrying `grpc-timeout: timeout`.
/// Unlike tonic's client, this one does not enforce the deadline itself, so what comes back is
/// the server's own answer. Returns the status code, message and the time it took.
async fn raw_call(addr: std::net::SocketAddr, path: &str, message: &impl prost::Message, timeout: &str) -> (Code, String, Duration) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let started = Instant::now();
    let (response, mut body) = client.send_request(request, false).expect("send");
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend(u32::try_from(encoded.len()).expect("small").to_be_bytes());
    frame.extend(encoded);
    // The server may answer (and close the stream) before reading the body, e.g. for a
    // deadline that has already passed.
    let _ = body.send_data(frame.into(), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer within 10 s").expect("response");
    let status_of = |headers: &http::HeaderMap| {
        headers.get("grpc-status").map(|v| (Code::from_bytes(v.as_bytes()), headers.get("grpc-message").map(|m| m.to_str().unwrap_or_default().to_string()).unwrap_or_default()))
    };
    if let Some((code, message)) = status_of(response.headers()) {
        return (code, message, started.elapsed());
    }
    let mut stream = response.into_body();
    while let Some(chunk) = stream.data().await {
        chunk.expect("data");
    }
    let trailers = stream.trailers().await.expect("trailers").expect("grpc trailers");
    let (code, message) = status_of(&trailers).expect("grpc-status");
    (code, message, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured_before_while_queued_and_while_running() {
    const EVALUATE: &str = "/cpc.v1.DecisionService/Evaluate";
    const CHILD: &str = "/cpc.v1.DecisionService/CheckChildInvitation";
    let rules = fixture();
    let options = ServerOptions { max_concurrent_decisions: 1, max_queue_wait: Duration::from_secs(10), ..ServerOptions::default() };
    let server = start(load(rules.path(), slow_limits()), options, true).await;

    // A deadline already passed: refused before anything runs.
    let (code, _, _) = raw_call(server.addr, CHILD, &child("good", 14), "0n").await;
    assert_eq!(code, Code::DeadlineExceeded);

    // While running: a 1.5 s script under a 200 ms deadline.
    let (code, message, took) = raw_call(server.addr, EVALUATE, &slow(1500), "200m").await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(1200), "answered after {took:?}");

    // While queued: the abandoned script keeps its slot until its own end (the server never runs
    // more than its limit), so a call with a short deadline waits in the queue and times out.
    let (code, message, took) = raw_call(server.addr, CHILD, &child("good", 14), "150m").await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took < Duration::from_millis(1000), "answered after {took:?}");
    assert!(message.contains("waiting"), "{message}");

    // Once the slot is free, a call with a generous deadline decides; tonic's own client
    // deadlines work too.
    let mut c = server.decisions().await;
    let d = c.check_child_invitation(with_timeout(child("good", 14), Duration::from_secs(10))).await.expect("decides");
    assert_eq!(d.into_inner().outcome, "invite");
    let (code, _, _) = raw_call(server.addr, CHILD, &child("good", 14), "5S").await;
    assert_eq!(code, Code::Ok);
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains(r#"cpc_rpc_errors_total{method="Evaluate",code="DEADLINE_EXCEEDED"} 1"#), "{text}");
    assert!(text.contains(r#"cpc_rpc_errors_total{method="CheckChildInvitation",code="DEADLINE_EXCEEDED"} 2"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_request_timeout_applies_without_a_client_deadline() {
    let rules = fixture();
    let options = ServerOptions { request_timeout: Duration::from_millis(300), ..ServerOptions::default() };
    let server = start(load(rules.path(), slow_limits()), options, false).await;
    let mut c = server.decisions().await;
    let started = Instant::now();
    let status = c.evaluate(slow(2000)).await.expect_err("over the server's timeout");
    assert_deadline(&status);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_has_its_own_limit_on_calls_in_progress() {
    let rules = fixture();
    let options = ServerOptions { concurrency_limit_per_connection: 2, max_concurrent_decisions: 8, ..ServerOptions::default() };
    let server = start(load(rules.path(), slow_limits()), options, true).await;
    let busy = server.channel().await;
    let mut slow_calls = Vec::new();
    for _ in 0..2 {
        let mut c = DecisionServiceClient::new(busy.clone());
        slow_calls.push(tokio::spawn(async move { c.evaluate(slow(800)).await }));
    }
    until_running(&server, 2).await;
    let status = DecisionServiceClient::new(busy.clone()).check_child_invitation(child("good", 14)).await.expect_err("third call on the connection");
    assert_shed(&status, "CONNECTION_CONCURRENCY_LIMITED");
    // Another connection is not affected.
    let d = server.decisions().await.check_child_invitation(child("good", 14)).await.expect("another connection decides");
    assert_eq!(d.into_inner().outcome, "invite");
    for call in slow_calls {
        call.await.expect("task").expect("the slow calls complete");
    }
}

#[tokio::test]
async fn rate_limits_apply_per_connection_and_overall_but_not_to_health() {
    use cpc_rules::grpc::limits::RateLimit;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let rules = fixture();
    // Per connection: bursts of 3, then 1 a second.
    let options = ServerOptions { rate_limit_per_connection: Some(RateLimit { per_second: 1, burst: 3 }), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let a = server.channel().await;
    let mut ca = DecisionServiceClient::new(a.clone());
    for _ in 0..3 {
        ca.check_child_invitation(child("good", 14)).await.expect("within the burst");
    }
    let status = ca.check_child_invitation(child("good", 14)).await.expect_err("over the connection's rate");
    assert_shed(&status, "CONNECTION_RATE_LIMITED");
    let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("retry delay");
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    let health = HealthClient::new(a.clone()).check(HealthCheckRequest { service: String::new() }).await.expect("health is not rate limited");
    assert_eq!(health.into_inner().status, 1);
    server.decisions().await.check_child_invitation(child("good", 14)).await.expect("another connection has its own budget");
    drop(server);

    // Overall: bursts of 3 across every connection.
    let options = ServerOptions { rate_limit: Some(RateLimit { per_second: 1, burst: 3 }), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let mut c1 = server.decisions().await;
    let mut c2 = server.decisions().await;
    c1.check_child_invitation(child("good", 14)).await.expect("1");
    c2.check_child_invitation(child("good", 14)).await.expect("2");
    c1.check_child_invitation(child("good", 14)).await.expect("3");
    let status = c2.check_child_invitation(child("good", 14)).await.expect_err("over the server's rate");
    assert_shed(&status, "RATE_LIMITED");
}

#[tokio::test]
async fn connections_beyond_the_maximum_are_closed_and_slots_come_back() {
    let rules = fixture();
    let options = ServerOptions { max_connections: 1, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let first = server.channel().await;
    DecisionServiceClient::new(first.clone()).check_child_invitation(child("good", 14)).await.expect("the first connection decides");

    let second = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    match second {
        Err(_) => {}
        Ok(ch) => {
            let status = DecisionServiceClient::new(ch).check_child_invitation(child("good", 14)).await.expect_err("the second connection is closed");
            assert!(matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{status:?}");
        }
    }
    // The first connection is unaffected.
    DecisionServiceClient::new(first.clone()).check_child_invitation(child("good", 14)).await.expect("still decides");
    drop(first);
    // Once it closes, its slot comes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).ok()?.connect().await.ok()?;
            DecisionServiceClient::new(ch).check_child_invitation(child("good", 14)).await.ok()
        };
        if attempt.await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the connection slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn scripts_run_off_the_async_executor() {
    // The server gets a runtime with ONE worker thread. If scripts ran on it, two busy scripts
    // would stall every other call until they finished.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("client runtime");
    let rules = fixture();
    let store = load(rules.path(), slow_limits());
    let server = server_rt.block_on(start(store, ServerOptions { max_concurrent_decisions: 4, ..ServerOptions::default() }, true));
    client_rt.block_on(async {
        let ch = server.channel().await;
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut c = DecisionServiceClient::new(ch.clone());
            busy.push(tokio::spawn(async move { c.evaluate(slow(1500)).await }));
        }
        until_running(&server, 2).await;
        let mut c = DecisionServiceClient::new(ch.clone());
        let started = Instant::now();
        c.check_child_invitation(child("good", 14)).await.expect("decides");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(700), "a quick decision waited {took:?} behind busy scripts");
        let started = Instant::now();
        tonic_health::pb::health_client::HealthClient::new(ch.clone())
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .expect("health");
        assert!(started.elapsed() < Duration::from_millis(700), "health waited {:?}", started.elapsed());
        for b in busy {
            b.await.expect("task").expect("busy scripts complete");
        }
    });
    drop(server);
    drop(server_rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_reports_not_serving_and_lets_in_flight_calls_finish() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let rules = fixture();
    let options = ServerOptions { shutdown_grace: Duration::from_secs(10), ..ServerOptions::default() };
    let mut server = start(load(rules.path(), slow_limits()), options, true).await;
    let ch = server.channel().await;
    let mut watch = HealthClient::new(ch.clone()).watch(HealthCheckRequest { service: "cpc.v1.DecisionService".into() }).await.expect("watch").into_inner();
    assert_eq!(watch.message().await.expect("status").expect("a status").status(), ServingStatus::Serving);

    let mut c = DecisionServiceClient::new(ch.clone());
    let in_flight = tokio::spawn(async move { c.evaluate(slow(800)).await });
    until_running(&server, 1).await;
    server.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("a status change").expect("watch").expect("status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    let d = in_flight.await.expect("task").expect("the in-flight call finishes during draining").into_inner();
    assert_eq!(d.outcome, "done");
    let addr = server.addr;
    drop(ch);
    server.stop().await.expect("clean shutdown");
    let after = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_timeout(Duration::from_secs(1)).connect().await;
    assert!(after.is_err(), "no new connections after shutdown");
}

// ---------------------------------------------------------------------------------------------
// 4. Transport security and access
// ---------------------------------------------------------------------------------------------

mod pki {
    //! A throw-away PKI made at test time: a CA, a server certificate for `localhost` and
    //! 127.0.0.1, client certificates, and a second ("rogue") CA the server does not trust.

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

    pub struct Ca {
        pub pem: String,
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
    }

    pub fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { pem: issuer.pem(), issuer }
    }

    fn leaf(ca: &Ca, cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.issuer).expect("sign");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    pub fn server(ca: &Ca) -> Leaf {
        leaf(
            ca,
            "cpc-rules test server",
            vec![SanType::DnsName("localhost".try_into().expect("dns")), SanType::IpAddress([127, 0, 0, 1].into())],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client(ca: &Ca, cn: &str) -> Leaf {
        leaf(ca, cn, vec![], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Pki {
    ca: pki::Ca,
    server: pki::Leaf,
    admin: pki::Leaf,
    caller: pki::Leaf,
    rogue: pki::Leaf,
}

fn make_pki() -> Pki {
    let ca = pki::ca("cpc-rules test CA");
    let rogue_ca = pki::ca("rogue CA");
    Pki {
        server: pki::server(&ca),
        admin: pki::client(&ca, "ops.example"),
        caller: pki::client(&ca, "case-system.example"),
        rogue: pki::client(&rogue_ca, "ops.example"),
        ca,
    }
}

fn tls_settings(p: &Pki, mutual: bool, optional: bool) -> cpc_rules::grpc::transport::TlsSettings {
    cpc_rules::grpc::transport::TlsSettings {
        cert_pem: p.server.cert_pem.clone().into_bytes(),
        key_pem: p.server.key_pem.clone().into_bytes(),
        client_ca_pem: mutual.then(|| p.ca.pem.clone().into_bytes()),
        client_cert_optional: optional,
    }
}

/// A TLS connection to `server` trusting the test CA, with an optional client certificate.
async fn tls_channel(server: &support::TestServer, p: &Pki, identity: Option<&pki::Leaf>) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&p.ca.pem)).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Endpoint::from_shared(format!("https://{}", server.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Whether a decision can be made over `channel` (a failed handshake may surface at connect or
/// at the first call).
async fn decides(channel: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
    let ch = channel.map_err(|e| format!("connect: {e}"))?;
    DecisionServiceClient::new(ch).check_child_invitation(child("good", 14)).await.map(|_| ()).map_err(|s| format!("call: {s:?}"))
}

#[tokio::test]
async fn tls_serves_decisions_and_refuses_plaintext_clients() {
    let p = make_pki();
    let rules = fixture();
    let options = ServerOptions { tls: Some(tls_settings(&p, false, false)), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    decides(tls_channel(&server, &p, None).await).await.expect("TLS client decides");
    // Health and reflection work over TLS too.
    let ch = tls_channel(&server, &p, None).await.expect("connect");
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health over TLS");
    // A plaintext client cannot talk to a TLS server.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(decides(plain).await.is_err(), "plaintext to a TLS port must fail");
    // A client that does not trust the server's CA refuses it.
    let other = pki::ca("some other CA");
    let untrusting = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("endpoint")
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&other.pem)).domain_name("localhost"))
        .expect("tls")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(decides(untrusting).await.is_err(), "a client that does not trust the CA must fail");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let p = make_pki();
    let rules = fixture();
    let options = ServerOptions { tls: Some(tls_settings(&p, true, false)), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    decides(tls_channel(&server, &p, Some(&p.caller)).await).await.expect("a client certificate from the CA is accepted");
    let without = decides(tls_channel(&server, &p, None).await).await;
    assert!(without.is_err(), "no client certificate must be refused: {without:?}");
    let rogue = decides(tls_channel(&server, &p, Some(&p.rogue)).await).await;
    assert!(rogue.is_err(), "a certificate from another CA must be refused: {rogue:?}");
}

#[tokio::test]
async fn admin_client_certificates_may_reload_and_others_may_not() {
    let p = make_pki();
    let rules = fixture();
    let options = ServerOptions {
        tls: Some(tls_settings(&p, true, true)),
        access: cpc_rules::grpc::auth::AccessPolicy { admin_client_names: vec!["ops.example".into()], ..Default::default() },
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let reload = |ch: Channel| async move { RulesServiceClient::new(ch).reload_rules(pb::ReloadRulesRequest { partnerships: vec![] }).await };

    // With the client certificate optional, a client without one may decide (no caller token
    // is configured) but not reload.
    let anonymous = tls_channel(&server, &p, None).await.expect("connect without a certificate");
    decides(Ok(anonymous.clone())).await.expect("decides without a certificate");
    assert_eq!(reload(anonymous).await.expect_err("no credential").code(), Code::Unauthenticated);
    // A certificate from the CA that is not an admin: PERMISSION_DENIED.
    let caller = tls_channel(&server, &p, Some(&p.caller)).await.expect("connect");
    assert_eq!(reload(caller).await.expect_err("not an admin").code(), Code::PermissionDenied);
    // The admin certificate (CN ops.example) may reload.
    let admin = tls_channel(&server, &p, Some(&p.admin)).await.expect("connect");
    let r = reload(admin).await.expect("the admin reloads").into_inner();
    assert_eq!(r.unchanged.len(), 2, "{r:?}");
}

#[tokio::test]
async fn bearer_tokens_guard_decisions_and_reloads() {
    use cpc_rules::grpc::auth::{AccessPolicy, Secret};
    const ADMIN: &str = "admin-token-for-tests-0123456789";
    const CALLER: &str = "caller-token-for-tests-0123456789";
    let rules = fixture();
    let options = ServerOptions {
        access: AccessPolicy { admin_token: Some(Secret::new(ADMIN).expect("admin")), caller_token: Some(Secret::new(CALLER).expect("caller")), ..Default::default() },
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, true).await;
    let mut d = server.decisions().await;
    let mut r = server.rules().await;

    // Decisions need the caller token (or the admin one).
    let status = d.check_child_invitation(child("good", 14)).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = d.check_child_invitation(with_token(child("good", 14), "wrong-token-0123456789abcdef")).await.expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!status.message().contains("wrong-token"), "the token is not echoed: {}", status.message());
    d.check_child_invitation(with_token(child("good", 14), CALLER)).await.expect("the caller token decides");
    d.check_child_invitation(with_token(child("good", 14), ADMIN)).await.expect("the admin token decides");
    r.list_partnerships(with_token(pb::ListPartnershipsRequest {}, CALLER)).await.expect("the caller token lists");
    assert_eq!(r.list_partnerships(pb::ListPartnershipsRequest {}).await.expect_err("no token").code(), Code::Unauthenticated);

    // Reloads need the admin token: a caller token is PERMISSION_DENIED.
    let reload = || pb::ReloadRulesRequest { partnerships: vec!["good".into()] };
    assert_eq!(r.reload_rules(reload()).await.expect_err("no token").code(), Code::Unauthenticated);
    assert_eq!(r.reload_rules(with_token(reload(), CALLER)).await.expect_err("caller token").code(), Code::PermissionDenied);
    r.reload_rules(with_token(reload(), ADMIN)).await.expect("the admin token reloads");

    // Health and reflection stay open.
    tonic_health::pb::health_client::HealthClient::new(server.channel().await)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health needs no token");
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut stream = ServerReflectionClient::new(server.channel().await)
            .server_reflection_info(tokio_stream::once(req))
            .await
            .expect("reflection needs no token")
            .into_inner();
        stream.message().await.expect("reflection answer").expect("one answer");
    }
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains(r#"cpc_rpc_errors_total{method="ReloadRules",code="PERMISSION_DENIED"} 1"#), "{text}");
    assert!(!text.contains(CALLER) && !text.contains(ADMIN));
}

#[tokio::test]
async fn plaintext_on_a_public_address_is_refused_unless_allowed() {
    let rules = fixture();
    let store = load(rules.path(), Limits::default());
    // Bound but never connected to: no traffic leaves the machine.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = cpc_rules::grpc::server::serve_with(listener, Arc::clone(&store), &ServerOptions::default(), std::future::ready(()))
        .await
        .expect_err("plaintext on 0.0.0.0 is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("--tls-cert") && msg.contains("--allow-plaintext"), "{msg}");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let allowed = ServerOptions { allow_plaintext: true, ..ServerOptions::default() };
    cpc_rules::grpc::server::serve_with(listener, store, &allowed, std::future::ready(())).await.expect("allowed explicitly");
}

#[test]
fn the_serve_command_refuses_plaintext_on_a_public_address() {
    let rules = fixture();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(["serve", "--addr", "0.0.0.0:0", "--rules"])
        .arg(rules.path())
        .env_remove("CPC_ALLOW_PLAINTEXT")
        .env_remove("CPC_TLS_CERT")
        .env_remove("CPC_TLS_KEY")
        .output()
        .expect("run cpc-rules serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plaintext gRPC on 0.0.0.0:0"), "{stderr}");
    // A short token is refused too, naming the problem but not the token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(["serve", "--addr", "127.0.0.1:0", "--rules"])
        .arg(rules.path())
        .env("CPC_ADMIN_TOKEN", "short")
        .env_remove("CPC_ADMIN_TOKEN_FILE")
        .output()
        .expect("run cpc-rules serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin token is shorter than 16"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 6. Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_are_scraped_over_http() {
    use cpc_rules::grpc::auth::{AccessPolicy, Secret};
    const ADMIN: &str = "admin-token-for-tests-0123456789";
    let rules = fixture();
    let options = ServerOptions { access: AccessPolicy { admin_token: Some(Secret::new(ADMIN).expect("token")), ..Default::default() }, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, true).await;
    let mut c = server.decisions().await;
    c.check_child_invitation(child("good", 14)).await.expect("invite");
    c.check_child_invitation(child("good", 14)).await.expect("invite");
    c.check_child_invitation(child("good", 8)).await.expect("represent views");
    c.check_child_invitation(child("good", 30)).await.expect_err("bad age");
    c.evaluate(hostile_request("throws")).await.expect_err("script fails");
    let mut r = server.rules().await;
    r.reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec![] }, ADMIN)).await.expect("reload");
    // A broken edit: the reload is refused and counted.
    std::fs::write(rules.path().join("good").join("child_invitation.rhai"), "let x = ;\n").expect("break");
    let refused = r.reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec!["good".into()] }, ADMIN)).await.expect("reload").into_inner();
    assert_eq!(refused.refused.len(), 1);

    let (status_line, text) = scrape(&server, "/metrics").await;
    assert!(status_line.contains("200"), "{status_line}");
    let revision = server.store.get("good").expect("good is live").set.revision().to_string();
    for expected in [
        r#"cpc_decisions_total{partnership="good",kind="child_invitation",outcome="invite"} 2"#.to_string(),
        r#"cpc_decisions_total{partnership="good",kind="child_invitation",outcome="represent_views"} 1"#.to_string(),
        r#"cpc_decision_failures_total{partnership="hostile",kind="throws",reason="SCRIPT_RUNTIME"} 1"#.to_string(),
        r#"cpc_rpc_errors_total{method="CheckChildInvitation",code="INVALID_ARGUMENT"} 1"#.to_string(),
        r#"cpc_rpc_errors_total{method="Evaluate",code="INTERNAL"} 1"#.to_string(),
        r#"cpc_decision_duration_seconds_count{partnership="good",kind="child_invitation"} 3"#.to_string(),
        r#"cpc_rpc_duration_seconds_bucket{le="#.to_string(),
        r#"cpc_rule_reloads_total{partnership="good",result="unchanged"} 1"#.to_string(),
        r#"cpc_rule_reloads_total{partnership="hostile",result="unchanged"} 1"#.to_string(),
        r#"cpc_rule_reloads_total{partnership="good",result="refused"} 1"#.to_string(),
        format!(r#"cpc_rules_revision_info{{partnership="good",revision="{revision}"}} 1"#),
        r#"cpc_rules_last_reload_refused{partnership="good"} 1"#.to_string(),
        r#"cpc_rules_last_reload_refused{partnership="hostile"} 0"#.to_string(),
        "cpc_connections_open ".to_string(),
        "# EOF".to_string(),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("CASE-0001"), "no case reference in metrics");
    let (status_line, _) = scrape(&server, "/other").await;
    assert!(status_line.contains("404"), "{status_line}");
}

// ---------------------------------------------------------------------------------------------
// 7. Soak
// ---------------------------------------------------------------------------------------------

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Drives the server past its capacity for `duration` from many connections and asserts every
/// answer is either the right decision (same facts, same outcome) or the documented shedding.
async fn soak(duration: Duration) {
    let rules = fixture();
    let options = ServerOptions {
        max_concurrent_decisions: 4,
        max_queued_decisions: 16,
        max_queue_wait: Duration::from_millis(100),
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, true).await;
    let rss_before = resident_kib();
    let ok = Arc::new(AtomicUsize::new(0));
    let shed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + duration;
    const MAX_CALLS: usize = 500_000;
    let mut workers = Vec::new();
    for conn in 0..8 {
        let ch = server.channel().await;
        for w in 0..8 {
            let (ch, ok, shed, sent) = (ch.clone(), Arc::clone(&ok), Arc::clone(&shed), Arc::clone(&sent));
            workers.push(tokio::spawn(async move {
                let mut c = DecisionServiceClient::new(ch);
                let mut outcomes: BTreeMap<(i32, bool), String> = BTreeMap::new();
                let mut i: i32 = conn * 8 + w;
                while Instant::now() < stop_at && sent.fetch_add(1, Ordering::Relaxed) < MAX_CALLS {
                    i += 1;
                    let age = i % 18;
                    let understanding = i % 3 != 0;
                    let mut req = child("good", age);
                    req.sufficient_understanding = Some(understanding);
                    match c.check_child_invitation(req).await {
                        Ok(d) => {
                            let d = d.into_inner();
                            let expected = if age >= 12 && understanding { "invite" } else { "represent_views" };
                            assert_eq!(d.outcome, expected, "wrong decision for age {age}");
                            let first = outcomes.entry((age, understanding)).or_insert_with(|| d.outcome.clone());
                            assert_eq!(*first, d.outcome, "same facts, different outcome");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            shed.fetch_add(1, Ordering::Relaxed);
                            // Back off as a well-behaved client does.
                            let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay).unwrap_or(Duration::from_millis(10));
                            tokio::time::sleep(retry.min(Duration::from_millis(20))).await;
                        }
                        Err(status) => panic!("an undocumented error under load: {status:?}"),
                    }
                }
            }));
        }
    }
    for w in workers {
        w.await.expect("worker");
    }
    let rss_after = resident_kib();
    let (ok, shed) = (ok.load(Ordering::Relaxed), shed.load(Ordering::Relaxed));
    let (_, metrics) = scrape(&server, "/metrics").await;
    eprintln!(
        "soak {duration:?}: {ok} decisions, {shed} shed (RESOURCE_EXHAUSTED); resident memory before {} KiB, after {} KiB",
        rss_before.map_or("?".into(), |v| v.to_string()),
        rss_after.map_or("?".into(), |v| v.to_string()),
    );
    for line in metrics.lines().filter(|l| l.starts_with("cpc_shed_total") || l.starts_with("cpc_decisions_total")) {
        eprintln!("  {line}");
    }
    assert!(ok > 0, "some decisions were made");
    // Nothing is left running or queued once the load stops.
    assert!(metrics.contains("cpc_decisions_queued 0") && metrics.contains("cpc_decisions_running 0"), "{metrics}");
    server.stop().await.expect("clean shutdown after the soak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak(Duration::from_secs(3)).await;
}

/// The long soak: `cargo test --test reliability soak_long -- --ignored --nocapture`
/// (`CPC_SOAK_SECS` sets the length; 60 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run explicitly"]
async fn soak_long() {
    let secs = std::env::var("CPC_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    soak(Duration::from_secs(secs)).await;
}

/// Sends `bytes` as one gRPC message to `path` over a raw HTTP/2 connection (no protobuf
/// encoding on this side, so the bytes can be anything) and returns the server's status.
async fn raw_bytes_call(addr: std::net::SocketAddr, path: &str, bytes: &[u8]) -> tonic::Status {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    let mut frame = vec![0u8];
    frame.extend(u32::try_from(bytes.len()).expect("small").to_be_bytes());
    frame.extend(bytes);
    let _ = body.send_data(frame.into(), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer within 10 s").expect("response");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut stream = response.into_body();
    while let Some(chunk) = stream.data().await {
        chunk.expect("data");
    }
    let trailers = stream.trailers().await.expect("trailers").expect("grpc trailers");
    tonic::Status::from_header_map(&trailers).expect("grpc-status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument_with_details_never_internal() {
    use prost::Message as _;
    let rules = fixture();
    let server = start(load(rules.path(), Limits::default()), ServerOptions::default(), true).await;
    let mut deep = facts(&[("leaf", V::BoolValue(true))]);
    for _ in 0..40 {
        deep = facts(&[("nested", V::StructValue(deep))]);
    }
    let too_deep = evaluate("good", "child_invitation", deep).encode_to_vec();
    // Field 1 (partnership), length 2, bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    let garbage = vec![0xff; 24];
    let truncated = child("good", 14).encode_to_vec()[..3].to_vec();
    for (what, path, bytes) in [
        ("a Struct nested 40 deep", "/cpc.v1.DecisionService/Evaluate", too_deep),
        ("invalid UTF-8", "/cpc.v1.DecisionService/CheckChildInvitation", not_utf8),
        ("garbage bytes", "/cpc.v1.DecisionService/CheckChildInvitation", garbage),
        ("a truncated message", "/cpc.v1.DecisionService/CheckChildInvitation", truncated),
        ("garbage bytes to the rules service", "/cpc.v1.RulesService/ListPartnerships", vec![0xff; 8]),
    ] {
        let status = raw_bytes_call(server.addr, path, &bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let details = status.get_error_details();
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("MALFORMED_REQUEST"), "{what}: {status:?}");
        assert!(details.bad_request().is_some_and(|b| !b.field_violations.is_empty()), "{what}: {status:?}");
    }
    // The server carries on.
    let d = server.decisions().await.check_child_invitation(child("good", 14)).await.expect("still serving").into_inner();
    assert_eq!(d.outcome, "invite");
}
