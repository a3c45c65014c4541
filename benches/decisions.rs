//! In-process decision benchmarks (criterion): `cargo bench --bench decisions`.
//!
//! Groups (criterion ids, filter with `cargo bench --bench decisions -- <regex>`):
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
//! - `facts/*`: facts conversion alone — schema validation, JSON → Rhai values (`to_dynamic`,
//!   a copy of the engine's private function), protobuf request → facts, decision → protobuf.
//! - `store_decide/<kind>`: a full `RuleStore::decide` (live-set lookup included).
//! - `parts/*`: what one decision is made of (the script alone on a bare engine, the decision id,
//!   the timestamp), to explain where the time goes.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpc_rules::cases::Case;
use cpc_rules::facts::{Kind, validate};
use cpc_rules::grpc::convert::DecisionRequest;
use cpc_rules::grpc::pb;
use cpc_rules::model::Decision;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use common::convert::{self, parse_date_by_hand};
use common::{bare_engine, bare_engine_variant, to_dynamic};
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
                let d = set.decide(kind, &case.facts).unwrap_or_else(|e| panic!("{id}/{kind} `{}`: {e}", case.name));
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
                group.bench_function(format!("{id}/{kind}"), |b| {
                    b.iter(|| counted(set.decide(black_box(kind), black_box(&case.facts))))
                });
            }
            reps.insert(id.clone(), these);
        }
        group.finish();
    }

    // ---- how much script each representative decision runs (Rhai operations) ---------------------
    for (id, these) in &reps {
        let mut line = Vec::new();
        for (kind, case) in these {
            line.push(format!("{kind} {}", script_operations(&root, id, kind, &case.facts)));
        }
        println!("rhai operations per decision, {id}: {}", line.join(", "));
    }

    // ---- decide_all_cases/<partnership> --------------------------------------------------------
    {
        let mut group = c.benchmark_group("decide_all_cases");
        for id in &ids {
            let loaded = store.get(id).expect("live set");
            let set = &loaded.set;
            let cases: Vec<Case> = common::decision_cases(&root, id)
                .into_values()
                .flatten()
                .filter(|c| set.kinds().any(|k| k.name == c.kind))
                .collect();
            if cases.is_empty() {
                continue;
            }
            group.throughput(Throughput::Elements(cases.len() as u64));
            println!("decide_all_cases/{id}: {} decision-producing cases", cases.len());
            group.bench_function(id.as_str(), |b| {
                b.iter(|| {
                    for case in &cases {
                        black_box(counted(set.decide(&case.kind, black_box(&case.facts))));
                    }
                })
            });
        }
        group.finish();
    }

    // ---- complaint_policy: Rhai vs regorus on the same facts -----------------------------------
    complaint_policy(c, &store, &root);

    // ---- facts conversion alone -----------------------------------------------------------------
    // One representative case per kind, from the first partnership (in id order) that has it.
    let mut per_kind: BTreeMap<String, (String, Case)> = BTreeMap::new();
    for (id, these) in &reps {
        for (kind, case) in these {
            per_kind.entry(kind.clone()).or_insert_with(|| (id.clone(), case.clone()));
        }
    }
    {
        let mut group = c.benchmark_group("facts");
        for (kind, (_, case)) in &per_kind {
            if let Some(k) = Kind::parse(kind) {
                group.bench_function(format!("validate/{kind}"), |b| b.iter(|| validate(k, black_box(&case.facts)).expect("valid")));
            }
            group.bench_function(format!("to_dynamic/{kind}"), |b| b.iter(|| to_dynamic(black_box(&case.facts))));
        }
        if let Some((id, case)) = per_kind.get("plan_type") {
            let req = common::plan_type_request(id, &case.facts);
            group.bench_function("proto_to_facts/plan_type", |b| {
                b.iter_batched(|| req.clone(), |r| DecisionRequest::try_from(r).expect("converts"), BatchSize::SmallInput)
            });
        }
        if let Some((id, case)) = per_kind.get("complaint_eligibility") {
            let req = common::complaint_request(id, &case.facts);
            group.bench_function("proto_to_facts/complaint_eligibility", |b| {
                b.iter_batched(|| req.clone(), |r| DecisionRequest::try_from(r).expect("converts"), BatchSize::SmallInput)
            });
        }
        for (kind, (id, case)) in &per_kind {
            let d = store.decide(id, kind, &case.facts).expect("decides");
            group.bench_function(format!("decision_to_proto/{kind}"), |b| {
                b.iter_batched(|| d.clone(), pb::Decision::from, BatchSize::SmallInput)
            });
        }
        group.finish();
    }

    // ---- store_decide/<kind>: full RuleStore::decide --------------------------------------------
    {
        let mut group = c.benchmark_group("store_decide");
        for (kind, (id, case)) in &per_kind {
            group.bench_function(format!("{id}/{kind}"), |b| {
                b.iter(|| counted(store.decide(black_box(id), black_box(kind), black_box(&case.facts))))
            });
        }
        group.finish();
    }

    // ---- parts: where one decision's time goes ---------------------------------------------------
    {
        let mut group = c.benchmark_group("parts");
        group.bench_function("uuid_v4_to_string", |b| b.iter(|| uuid::Uuid::new_v4().to_string()));
        group.bench_function("decided_at_rfc3339", |b| {
            b.iter(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        });
        for (kind, (id, case)) in &per_kind {
            let (engine, ast) = bare_engine(&root, id, kind);
            group.bench_function(format!("scope_with_facts/{kind}"), |b| {
                b.iter(|| {
                    let mut scope = Scope::new();
                    scope.push_constant_dynamic("facts", to_dynamic(black_box(&case.facts)));
                    scope
                })
            });
            group.bench_function(format!("script_only/{id}/{kind}"), |b| {
                b.iter(|| {
                    let mut scope = Scope::new();
                    scope.push_constant_dynamic("facts", to_dynamic(black_box(&case.facts)));
                    engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs")
                })
            });
        }
        group.finish();
    }

    // ---- engine_variants: what the hardened engine's settings cost -------------------------------
    // On the slowest representative decision of each kind's partnership set, and on the compared
    // complaint policy.
    {
        let mut group = c.benchmark_group("engine_variants");
        let mut targets: Vec<(String, String, Case)> = Vec::new();
        for (kind, (id, case)) in &per_kind {
            if kind == "plan_type" || kind == "complaint_eligibility" {
                targets.push((id.clone(), kind.clone(), case.clone()));
            }
        }
        for (id, kind, case) in &targets {
            for variant in ["hardened", "no_size_limits", "no_limits", "optimize_full", "no_interner"] {
                let (engine, ast) = bare_engine_variant(&root, id, kind, variant);
                group.bench_function(format!("{variant}/{id}/{kind}"), |b| {
                    b.iter(|| {
                        let mut scope = Scope::new();
                        scope.push_constant_dynamic("facts", to_dynamic(black_box(&case.facts)));
                        engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs")
                    })
                });
            }
            // The hardened engine, keeping Rhai's function-resolution cache from one decision to
            // the next (`eval_ast_with_scope` starts each evaluation with an empty one).
            let (engine, ast) = bare_engine_variant(&root, id, kind, "hardened");
            let mut caches = rhai::Caches::new();
            let check = {
                let mut global = engine.new_global_runtime_state();
                global.lib.push(ast.shared_lib().clone());
                let mut scope = Scope::new();
                scope.push_constant_dynamic("facts", to_dynamic(&case.facts));
                #[allow(deprecated)]
                engine.eval_statements_raw(&mut global, &mut caches, &mut scope, ast.statements()).expect("script runs")
            };
            let mut scope = Scope::new();
            scope.push_constant_dynamic("facts", to_dynamic(&case.facts));
            let plain = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs");
            assert_eq!(format!("{check:?}"), format!("{plain:?}"), "the raw evaluation gives the same result");
            group.bench_function(format!("reuse_fn_cache/{id}/{kind}"), |b| {
                b.iter(|| {
                    let mut global = engine.new_global_runtime_state();
                    global.lib.push(ast.shared_lib().clone());
                    let mut scope = Scope::new();
                    scope.push_constant_dynamic("facts", to_dynamic(black_box(&case.facts)));
                    #[allow(deprecated)]
                    engine.eval_statements_raw(&mut global, &mut caches, &mut scope, ast.statements()).expect("script runs")
                })
            });
        }
        for d in ["2025-04-17", "2024-02-29", "2025-02-29", "2025-13-01", "2025-4-17", "2025-04-1x", "２025-04-1", "0000-01-01"] {
            assert_eq!(cpc_rules::facts::parse_date(d), parse_date_by_hand(d), "the hand parser differs on {d}");
        }
        group.bench_function("parse_date/chrono_parse_from_str", |b| {
            b.iter(|| cpc_rules::facts::parse_date(black_box("2025-04-17")))
        });
        group.bench_function("parse_date/by_hand", |b| b.iter(|| parse_date_by_hand(black_box("2025-04-17"))));
        group.finish();
    }

    // ---- conversion: the script's result → Decision, as now and as proposed ----------------------
    {
        let mut group = c.benchmark_group("conversion");
        for (kind, (id, case)) in &per_kind {
            let loaded = store.get(id).expect("live set");
            let set = &loaded.set;
            let sections: std::collections::HashMap<String, String> = set
                .metadata()
                .documents
                .iter()
                .flat_map(|d| d.sections.iter().map(move |s| (s.clone(), d.title.clone())))
                .collect();
            let info = set.kinds().find(|k| &k.name == kind).expect("kind");
            let ctx = convert::Ctx {
                id,
                kind,
                outcomes: &info.outcomes,
                revision: set.revision(),
                sections: &sections,
                actions: set.actions(),
            };
            let (engine, ast) = bare_engine(&root, id, kind);
            let mut scope = Scope::new();
            scope.push_constant_dynamic("facts", to_dynamic(&case.facts));
            let out = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs");
            let same = |mut d: cpc_rules::model::Decision| {
                d.decision_id.clear();
                d.decided_at.clear();
                d
            };
            let engine_made = same(set.decide(kind, &case.facts).expect("decides"));
            let now = same(convert::current(&ctx, out.clone()).expect("converts"));
            let next = same(convert::proposed(&ctx, out.clone()).expect("converts"));
            assert_eq!(now, engine_made, "the copied conversion matches the engine's for {id}/{kind}");
            assert_eq!(next, engine_made, "the proposed conversion matches the engine's for {id}/{kind}");
            group.bench_function(format!("current/{id}/{kind}"), |b| {
                b.iter_batched(|| out.clone(), |o| convert::current(&ctx, o).expect("converts"), BatchSize::SmallInput)
            });
            group.bench_function(format!("proposed/{id}/{kind}"), |b| {
                b.iter_batched(|| out.clone(), |o| convert::proposed(&ctx, o).expect("converts"), BatchSize::SmallInput)
            });
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

/// The number of Rhai operations one evaluation of a kind's script takes on these facts.
fn script_operations(root: &Path, id: &str, kind: &str, facts: &Value) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (mut engine, ast) = bare_engine(root, id, kind);
    let ops = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&ops);
    engine.on_progress(move |n| {
        seen.fetch_max(n, Ordering::Relaxed);
        None
    });
    let mut scope = Scope::new();
    scope.push_constant_dynamic("facts", to_dynamic(facts));
    let _ = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs");
    ops.load(Ordering::Relaxed)
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
            cases.extend(other.into_iter().filter(|c| set.decide(&c.kind, &c.facts).is_ok()));
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
        let d = set.decide("complaint_eligibility", &case.facts).unwrap_or_else(|e| panic!("`{}`: {e}", case.name));
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
    group.bench_function("rhai_decide", |b| b.iter(|| counted(set.decide("complaint_eligibility", black_box(&rep.facts)))));
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
    group.bench_function("rhai_decide", |b| {
        b.iter(|| {
            for case in &cases {
                black_box(counted(set.decide("complaint_eligibility", black_box(&case.facts))));
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
