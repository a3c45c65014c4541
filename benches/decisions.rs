//! In-process decision benchmarks (criterion): `cargo bench -p cpc-rules-bench --bench decisions`.
//!
//! Groups (criterion ids, filter with `cargo bench -p cpc-rules-bench --bench decisions -- <regex>`):
//!
//! - `decide/<partnership>/<kind>`: `RuleSet::decide` (validate facts, run the compiled script,
//!   check and convert what it returns) on one representative decision-producing case per kind
//!   per partnership, taken from `rules/<id>/tests/*.toml` — every kind `RuleSet::kinds()` lists.
//! - `decide_all_cases/<partnership>`: every decision-producing case of the partnership once per
//!   iteration (criterion reports the per-decision mean as throughput).
//! - `complaint_policy/*`: Central Bedfordshire's Stage 2 complaint-eligibility policy as the
//!   Rhai script (`rhai_decide`) and as Rego (`benches/complaint.rego`) on regorus — reused
//!   interpreter (`regorus_engine`), `CompiledPolicy::eval_with_input` (`regorus_compiled`) and
//!   the RVM bytecode VM (`regorus_rvm`) — on the same facts. Before measuring, every complaint
//!   case is decided both ways and the outcome, reasons, actions, routes and panel
//!   recommendations must agree.
//! - `parts/<partnership>/<kind>/*`: what one decision is made of, to explain where the time
//!   goes — `validate` (`RuleSet::facts`: JSON facts → typed `Facts`), `script` (`RuleSet::
//!   decide_facts`: the compiled script and the move of its result into a `Decision`), `to_proto`
//!   (`IssuedDecision::stamp` + `pb::Decision::from`, what the gRPC edge adds), and
//!   `proto_to_request` (the gRPC request → `EdgeRequest`, for the plan-type and complaint RPCs).
//! - `store_decide/<partnership>/<kind>`: a full `RuleStore::decide` (live-set lookup included).
//!
//! Before measuring, it prints how many Rhai operations each representative decision takes
//! (counted on a bare engine built from the library's public parts exactly as `RuleSet::compile`
//! builds its own): the interpreter's cost per operation is what bounds a decision's time.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpc_rules::cases::Case;
use cpc_rules::engine::RuleSet;
use cpc_rules::grpc::convert::EdgeRequest;
use cpc_rules::grpc::pb;
use cpc_rules::model::{Decision, DecisionRequest, IssuedDecision};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use common::{bare_engine, request};
use rhai::{Dynamic, Scope};
use serde_json::{Value, json};

/// The partnership whose complaint policy is written in Rego for the comparison.
const COMPARED: &str = "central-bedfordshire";
/// The Rego rule that builds the decision.
const REGO_ENTRY: &str = "data.cpc.complaint.decision";
const REGO_POLICY: &str = include_str!("complaint.rego");

static FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FIRST_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A decision made while measuring: a failure (a script stopped by its wall-clock budget when
/// the machine is busy, say) is counted and reported at the end instead of aborting the run.
fn counted<T, E: std::fmt::Display>(r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = FIRST_FAILURE.set(e.to_string());
            None
        }
    }
}

/// The decision as the Rego policy returns it, in the script's shape, for the equivalence check.
fn decision_as_json(d: &Decision) -> Value {
    json!({
        "outcome": d.outcome,
        "summary": d.summary,
        "reasons": d.reasons.iter().map(|r| json!({
            "rule_id": r.rule_id, "section": r.citation.section, "text": r.text, "assumption": r.citation.assumption,
        })).collect::<Vec<_>>(),
        "actions": d.actions.iter().map(|a| json!({
            "code": a.code, "description": a.description, "due_date": a.due_date, "responsible": a.responsible,
        })).collect::<Vec<_>>(),
        "details": {
            "grounds": d.details.grounds.iter().map(|g| json!({"index": g.index, "category": g.category, "route": g.route})).collect::<Vec<_>>(),
            "panel_recommendations": d.details.panel_recommendations,
        },
    })
}

/// What must agree between the Rego policy and the script: everything but the wording.
fn structure(d: &Value) -> Value {
    let pick = |list: &Value, keys: &[&str]| -> Vec<Value> {
        list.as_array()
            .map(|a| a.iter().map(|x| Value::Array(keys.iter().map(|k| x.get(*k).cloned().unwrap_or(Value::Null)).collect())).collect())
            .unwrap_or_default()
    };
    json!({
        "outcome": d["outcome"],
        "reasons": pick(&d["reasons"], &["rule_id", "section", "assumption"]),
        "actions": pick(&d["actions"], &["code", "due_date", "responsible"]),
        "routes": d["details"]["grounds"],
        "panel_recommendations": d["details"]["panel_recommendations"].as_array().map_or(0, Vec::len),
    })
}

fn rego_json(v: &regorus::Value) -> Value {
    serde_json::to_value(v).expect("regorus value serialises")
}

fn benches(c: &mut Criterion) {
    let rules = common::load_rules();
    let store = Arc::clone(&rules.store);
    let root = rules.root.clone();
    let ids = store.ids();
    println!("partnerships benchmarked: {}", ids.join(", "));
    if !rules.left_out.is_empty() {
        println!("LEFT OUT (rules refused): {}", rules.left_out.join(", "));
    }

    // ---- decide/<partnership>/<kind> -----------------------------------------------------------
    let mut reps: BTreeMap<String, Vec<(String, Case)>> = BTreeMap::new();
    {
        let mut group = c.benchmark_group("decide");
        for id in &ids {
            let loaded = store.get(id).expect("live set");
            let set = &loaded.set;
            let these = common::representatives(&root, set);
            for (kind, case) in &these {
                let req = request(id, case);
                let d = set.decide(&req).unwrap_or_else(|e| panic!("{id}/{kind} `{}`: {e}", case.name));
                assert_eq!(Some(&d.outcome), case.expect.outcome.as_ref(), "{id}/{kind} `{}`", case.name);
                println!(
                    "decide/{id}/{kind}: case `{}` ({}:{}) -> {} ({} reasons, {} actions)",
                    case.name,
                    case.file.rsplit('/').next().unwrap_or(&case.file),
                    case.line,
                    d.outcome,
                    d.reasons.len(),
                    d.actions.len()
                );
                group.bench_function(format!("{id}/{kind}"), |b| b.iter(|| counted(set.decide(black_box(&req)))));
            }
            reps.insert(id.clone(), these);
        }
        group.finish();
    }

    // ---- how much script each representative decision runs (Rhai operations) ---------------------
    for (id, these) in &reps {
        let loaded = store.get(id).expect("live set");
        let mut line = Vec::new();
        for (kind, case) in these {
            line.push(format!("{kind} {}", script_operations(&root, &loaded.set, case)));
        }
        println!("rhai operations per decision, {id}: {}", line.join(", "));
    }

    // ---- decide_all_cases/<partnership> --------------------------------------------------------
    {
        let mut group = c.benchmark_group("decide_all_cases");
        for id in &ids {
            let loaded = store.get(id).expect("live set");
            let set = &loaded.set;
            let reqs: Vec<DecisionRequest> = common::decision_cases(&root, id)
                .into_values()
                .flatten()
                .filter(|c| set.kinds().any(|k| k.name == c.kind))
                .map(|c| request(id, &c))
                .collect();
            if reqs.is_empty() {
                continue;
            }
            group.throughput(Throughput::Elements(reqs.len() as u64));
            println!("decide_all_cases/{id}: {} decision-producing cases", reqs.len());
            group.bench_function(id.as_str(), |b| {
                b.iter(|| {
                    for req in &reqs {
                        black_box(counted(set.decide(black_box(req))));
                    }
                })
            });
        }
        group.finish();
    }

    // ---- complaint_policy: Rhai vs regorus on the same facts -----------------------------------
    complaint_policy(c, &store, &root);

    // ---- parts: where one decision's time goes ---------------------------------------------------
    {
        let mut group = c.benchmark_group("parts");
        for (id, these) in &reps {
            let loaded = store.get(id).expect("live set");
            let set = &loaded.set;
            for (kind, case) in these {
                let req = request(id, case);
                group.bench_function(format!("{id}/{kind}/validate"), |b| {
                    b.iter(|| set.facts(black_box(&req.kind), black_box(&req.facts), req.today).expect("valid"))
                });
                let facts = set.facts(&req.kind, &req.facts, req.today).expect("valid");
                group.bench_function(format!("{id}/{kind}/script"), |b| b.iter(|| counted(set.decide_facts(black_box(&facts)))));
                let d = set.decide(&req).expect("decides");
                let at = chrono::Utc::now();
                group.bench_function(format!("{id}/{kind}/to_proto"), |b| {
                    b.iter_batched(|| d.clone(), |d| pb::Decision::from(IssuedDecision::stamp(d, at)), BatchSize::SmallInput)
                });
                if let Some(edge) = proto_request(id, case) {
                    let (pb_req, convert) = edge;
                    group.bench_function(format!("{id}/{kind}/proto_to_request"), |b| {
                        b.iter_batched(|| pb_req.clone(), |r| convert(r), BatchSize::SmallInput)
                    });
                }
            }
        }
        group.finish();
    }

    // ---- store_decide/<partnership>/<kind>: full RuleStore::decide --------------------------------
    {
        let mut group = c.benchmark_group("store_decide");
        let mut seen = std::collections::BTreeSet::new();
        for (id, these) in &reps {
            for (kind, case) in these {
                // One partnership per kind: the store's lookup costs the same for every one.
                if !seen.insert(kind.clone()) {
                    continue;
                }
                let req = request(id, case);
                group.bench_function(format!("{id}/{kind}"), |b| b.iter(|| counted(store.decide(black_box(&req)))));
            }
        }
        group.finish();
    }

    let failed = FAILED.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        println!(
            "WARNING: {failed} decision(s) failed while being measured; the first: {}",
            FIRST_FAILURE.get().map_or("?", String::as_str)
        );
    }
}

/// The number of Rhai operations one evaluation of a case's script takes, on a bare engine set
/// up as the rule set's own (`RuleSet` does not expose its engine).
fn script_operations(root: &Path, set: &RuleSet, case: &Case) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (mut engine, ast) = bare_engine(root, set, &case.kind);
    let ops = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&ops);
    engine.on_progress(move |n| {
        seen.fetch_max(n, Ordering::Relaxed);
        None
    });
    let facts = set.facts(&case.kind, &case.facts, case.today).expect("valid facts");
    let mut scope = Scope::new();
    scope.push_constant_dynamic("facts", Dynamic::from(facts));
    let _ = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs");
    ops.load(Ordering::Relaxed)
}

/// A protobuf request (as a boxed conversion) carrying a case's facts, for the RPCs the bench
/// builds requests for (plan type and complaint eligibility).
type ProtoConversion = Box<dyn Fn(ProtoRequest) -> Result<EdgeRequest, Vec<cpc_rules::facts::FieldViolation>>>;

#[derive(Clone)]
enum ProtoRequest {
    Plan(pb::DeterminePlanTypeRequest),
    Complaint(pb::CheckComplaintEligibilityRequest),
}

fn proto_request(id: &str, case: &Case) -> Option<(ProtoRequest, ProtoConversion)> {
    let convert: ProtoConversion = Box::new(|r| match r {
        ProtoRequest::Plan(p) => EdgeRequest::try_from(p),
        ProtoRequest::Complaint(c) => EdgeRequest::try_from(c),
    });
    match case.kind.as_str() {
        "plan_type" => Some((ProtoRequest::Plan(common::plan_type_request(id, &case.facts)), convert)),
        "complaint_eligibility" => Some((ProtoRequest::Complaint(common::complaint_request(id, &case.facts)), convert)),
        _ => None,
    }
}

fn complaint_policy(c: &mut Criterion, store: &cpc_rules::store::RuleStore, root: &Path) {
    let Some(loaded) = store.get(COMPARED) else {
        eprintln!("WARNING: {COMPARED} is not loaded; the Rhai/Rego comparison is skipped");
        return;
    };
    let set = &loaded.set;
    if !set.kinds().any(|k| k.name == "complaint_eligibility") {
        eprintln!("WARNING: {COMPARED} has no complaint_eligibility script; the Rhai/Rego comparison is skipped");
        return;
    }
    // The facts: Central Bedfordshire's complaint cases; any partnership's while it has none
    // (the facts of a kind are the same everywhere).
    let mut cases = common::decision_cases(root, COMPARED).remove("complaint_eligibility").unwrap_or_default();
    let mut source = COMPARED.to_string();
    if cases.is_empty() {
        for id in store.ids() {
            let other = common::decision_cases(root, &id).remove("complaint_eligibility").unwrap_or_default();
            cases.extend(other.into_iter().filter(|c| set.decide(&request(COMPARED, c)).is_ok()));
        }
        source = "every partnership's complaint cases".into();
    }
    assert!(!cases.is_empty(), "no complaint-eligibility case to benchmark");

    let mut engine = regorus::Engine::new();
    engine.add_policy("benches/complaint.rego".into(), REGO_POLICY.into()).expect("complaint.rego parses");
    let compiled = engine.compile_with_entrypoint(&regorus::Rc::from(REGO_ENTRY)).expect("complaint.rego compiles");
    let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(&compiled, &[REGO_ENTRY]);
    let mut vm = match &program {
        Ok(p) => {
            let mut vm = regorus::rvm::vm::RegoVM::new();
            vm.load_program(p.clone());
            Some(vm)
        }
        Err(e) => {
            eprintln!("WARNING: regorus's RVM cannot compile complaint.rego ({e}); regorus_rvm is skipped");
            None
        }
    };

    // Equivalence, once, before measuring: every case, by every evaluation path.
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut wording_differs = 0;
    for case in &cases {
        let d = set.decide(&request(COMPARED, case)).unwrap_or_else(|e| panic!("`{}`: {e}", case.name));
        let want = decision_as_json(&d);
        engine.set_input(regorus::Value::from(case.facts.clone()));
        let mut got = vec![("regorus_engine", rego_json(&engine.eval_rule(REGO_ENTRY.into()).expect("rego evaluates")))];
        got.push((
            "regorus_compiled",
            rego_json(&compiled.eval_with_input(regorus::Value::from(case.facts.clone())).expect("compiled evaluates")),
        ));
        if let Some(vm) = vm.as_mut() {
            vm.set_input(regorus::Value::from(case.facts.clone()));
            got.push(("regorus_rvm", rego_json(&vm.execute().expect("rvm evaluates"))));
        }
        for (how, g) in &got {
            assert_eq!(
                structure(g),
                structure(&want),
                "{how} and the Rhai script disagree on case `{}` ({}:{})",
                case.name,
                case.file,
                case.line
            );
            if *g != want {
                wording_differs += 1;
            }
        }
        *outcomes.entry(d.outcome).or_default() += 1;
    }
    println!(
        "complaint_policy: Rego (engine, compiled{}) and Rhai agree on all {} complaint cases ({source}): {:?}",
        if vm.is_some() { ", RVM" } else { "" },
        cases.len(),
        outcomes
    );
    if wording_differs > 0 {
        println!("WARNING: complaint.rego's wording differs from the script's in {wording_differs} result(s); update its text so the outputs are the same size");
    }

    let rep = common::representative(&cases).expect("a case").clone();
    println!("complaint_policy: representative case `{}` -> {}", rep.name, rep.expect.outcome.as_deref().unwrap_or("?"));
    let mut group = c.benchmark_group("complaint_policy");
    let rep_req = request(COMPARED, &rep);
    group.bench_function("rhai_decide", |b| b.iter(|| counted(set.decide(black_box(&rep_req)))));
    group.bench_function("regorus_engine", |b| {
        b.iter(|| {
            engine.set_input(regorus::Value::from(black_box(&rep.facts).clone()));
            engine.eval_rule(REGO_ENTRY.into()).expect("evaluates")
        })
    });
    group.bench_function("regorus_compiled", |b| {
        b.iter(|| compiled.eval_with_input(regorus::Value::from(black_box(&rep.facts).clone())).expect("evaluates"))
    });
    if let Some(vm) = vm.as_mut() {
        group.bench_function("regorus_rvm", |b| {
            b.iter(|| {
                vm.set_input(regorus::Value::from(black_box(&rep.facts).clone()));
                vm.execute().expect("evaluates")
            })
        });
    }
    // The input conversion regorus pays inside the figures above (Rhai's is inside rhai_decide).
    group.bench_function("regorus_input_from_json", |b| b.iter(|| regorus::Value::from(black_box(&rep.facts).clone())));
    group.finish();

    let mut group = c.benchmark_group("complaint_policy_all_cases");
    group.throughput(Throughput::Elements(cases.len() as u64));
    let reqs: Vec<DecisionRequest> = cases.iter().map(|c| request(COMPARED, c)).collect();
    group.bench_function("rhai_decide", |b| {
        b.iter(|| {
            for req in &reqs {
                black_box(counted(set.decide(black_box(req))));
            }
        })
    });
    group.bench_function("regorus_engine", |b| {
        b.iter(|| {
            for case in &cases {
                engine.set_input(regorus::Value::from(black_box(&case.facts).clone()));
                black_box(engine.eval_rule(REGO_ENTRY.into()).expect("evaluates"));
            }
        })
    });
    if let Some(vm) = vm.as_mut() {
        group.bench_function("regorus_rvm", |b| {
            b.iter(|| {
                for case in &cases {
                    vm.set_input(regorus::Value::from(black_box(&case.facts).clone()));
                    black_box(vm.execute().expect("evaluates"));
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = decisions;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = benches
}
criterion_main!(decisions);
