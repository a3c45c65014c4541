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

use cpc_rules::calendar::Calendar;
use cpc_rules::cases::Case;
use cpc_rules::engine::{Limits, build_engine};
use cpc_rules::facts::{Kind, validate};
use cpc_rules::grpc::convert::DecisionRequest;
use cpc_rules::grpc::pb;
use cpc_rules::model::Decision;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rhai::{AST, Dynamic, Engine, Map, Scope};
use serde_json::{Value, json};

/// The partnership whose complaint policy is written in Rego for the comparison.
const COMPARED: &str = "central-bedfordshire";
/// The Rego rule that builds the decision.
const REGO_ENTRY: &str = "data.cpc.complaint.decision";
const REGO_POLICY: &str = include_str!("complaint.rego");

/// A copy of `cpc_rules::engine::ruleset::to_dynamic` (crate-private): JSON facts → Rhai values.
fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(o) => Dynamic::from_map(o.iter().map(|(k, v)| (k.as_str().into(), to_dynamic(v))).collect()),
    }
}

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

/// A bare engine running one kind's script exactly as `RuleSet::compile` sets it up (hardened
/// engine, helpers, shared functions as a global module), for the `parts/script_only` benchmark.
fn bare_engine(root: &Path, id: &str, kind: &str) -> (Engine, AST) {
    bare_engine_variant(root, id, kind, "hardened")
}

/// [`bare_engine`] with one setting changed, to measure what it costs:
/// `hardened` (as the service runs), `no_size_limits` (no string/array/map size checks),
/// `no_limits` (no size, operation or depth limits), `optimize_full` (constant folding).
fn bare_engine_variant(root: &Path, id: &str, kind: &str, variant: &str) -> (Engine, AST) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let calendar = Calendar::from_toml(&read(&root.join("calendar/bank-holidays.toml"))).expect("calendar");
    let mut engine = build_engine(&Limits::default(), Arc::new(calendar));
    match variant {
        "hardened" => {}
        "no_size_limits" => {
            engine.set_max_string_size(0).set_max_array_size(0).set_max_map_size(0);
        }
        "no_limits" => {
            engine
                .set_max_string_size(0)
                .set_max_array_size(0)
                .set_max_map_size(0)
                .set_max_operations(0)
                .set_max_call_levels(usize::MAX)
                .set_max_expr_depths(0, 0);
        }
        "optimize_full" => {
            engine.set_optimization_level(rhai::OptimizationLevel::Full);
        }
        other => panic!("unknown engine variant {other}"),
    }
    let mut shared_files: Vec<_> = std::fs::read_dir(root.join("shared"))
        .expect("shared folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    shared_files.sort();
    let mut shared: Option<AST> = None;
    for p in shared_files {
        let ast = engine.compile(read(&p)).expect("shared script compiles");
        shared = Some(match shared {
            Some(acc) => acc.merge(&ast),
            None => ast,
        });
    }
    if let Some(ast) = &shared {
        let mut module = rhai::Module::eval_ast_as_new(Scope::new(), ast, &engine).expect("shared module");
        module.set_id("shared");
        engine.register_global_module(module.into());
    }
    let mut scope = Scope::new();
    scope.push("facts", Map::new());
    let ast = engine.compile_with_scope(&scope, read(&root.join(id).join(format!("{kind}.rhai")))).expect("script compiles");
    (engine, ast)
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
            group.bench_function(format!("{id} ({} cases)", cases.len()), |b| {
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
            for variant in ["hardened", "no_size_limits", "no_limits", "optimize_full"] {
                let (engine, ast) = bare_engine_variant(&root, id, kind, variant);
                group.bench_function(format!("{variant}/{id}/{kind}"), |b| {
                    b.iter(|| {
                        let mut scope = Scope::new();
                        scope.push_constant_dynamic("facts", to_dynamic(black_box(&case.facts)));
                        engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast).expect("script runs")
                    })
                });
            }
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

    let failed = FAILED.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        println!(
            "WARNING: {failed} decision(s) failed while being measured; the first: {}",
            FIRST_FAILURE.get().map_or("?", String::as_str)
        );
    }
}

/// The `YYYY-MM-DD` parser proposed for `cpc_rules::facts::parse_date` (same acceptance: exactly
/// ten characters, four-digit year, two-digit month and day, a real date).
fn parse_date_by_hand(s: &str) -> Option<chrono::NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)
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
