//! What both benchmarks share: the bundled rules, realistic facts taken from the partnerships'
//! own test cases, and the conversion of those facts into core requests ([`DecisionRequest`])
//! and gRPC requests. Decisions are made through the library's own API only.
//!
//! Nothing here names a partnership or a kind: the benchmarks iterate over whatever each
//! partnership's `RuleSet::kinds()` lists and over the decision-producing cases in
//! `rules/<id>/tests/*.toml` (parsed with `cpc_rules::cases::parse_cases`), so a new kind or a
//! new partnership is covered without touching the benchmarks.

#![allow(dead_code)] // each bench uses a different part of this module

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cpc_rules::calendar::Calendar;
use cpc_rules::cases::{Case, parse_cases};
use cpc_rules::engine::script_types::{ResultContext, register as register_results};
use cpc_rules::engine::{Limits, RuleSet, SourceFile, build_engine};
use cpc_rules::facts::FieldViolation;
use cpc_rules::grpc::convert::EdgeRequest;
use cpc_rules::grpc::pb;
use cpc_rules::model::DecisionRequest;
use cpc_rules::store::{RuleStore, partnership_ids};
use rhai::{AST, Engine, Map, Scope};
use serde_json::Value;

/// The bundled rules folder.
pub fn bundled_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// The rule store the benchmarks run on, and the folder it was loaded from.
pub struct Rules {
    /// The live store.
    pub store: Arc<RuleStore>,
    /// The folder it was loaded from (the bundled one, or a copy without refused partnerships).
    pub root: PathBuf,
    /// Partnerships left out because their rules did not build (should be empty).
    pub left_out: Vec<String>,
    /// Keeps a temporary copy alive.
    _tmp: Option<tempfile::TempDir>,
}

/// Loads every bundled partnership. If a partnership's rules are refused (they are edited by
/// others while the benchmarks are written), it is reported and left out, so the others can
/// still be measured: the store is then loaded from a temporary copy without it.
pub fn load_rules() -> Rules {
    let root = bundled_rules();
    match RuleStore::load(&root, Limits::default()) {
        Ok(store) => Rules { store: Arc::new(store), root, left_out: Vec::new(), _tmp: None },
        Err(refusals) => {
            let mut left_out = Vec::new();
            for r in &refusals {
                eprintln!("WARNING: partnership `{}` is refused and left out of the benchmark:", r.partnership);
                for l in r.lines().iter().take(5) {
                    eprintln!("    {l}");
                }
                left_out.push(r.partnership.clone());
            }
            let tmp = tempfile::tempdir().expect("temp dir");
            copy_dir(&root, tmp.path(), &left_out);
            let store = RuleStore::load(tmp.path(), Limits::default()).unwrap_or_else(|r| {
                panic!("no partnership loads: {:?}", r.iter().flat_map(|r| r.lines()).collect::<Vec<_>>())
            });
            Rules { store: Arc::new(store), root: tmp.path().to_path_buf(), left_out, _tmp: Some(tmp) }
        }
    }
}

/// Copies a rules folder, leaving out the top-level folders named in `skip`.
pub fn copy_dir(from: &Path, to: &Path, skip: &[String]) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().to_string();
        if skip.contains(&name) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name), &[]);
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy file");
        }
    }
}

/// The partnerships' ids in the bundled folder (including any left out of the store).
pub fn all_ids() -> Vec<String> {
    partnership_ids(&bundled_rules()).expect("rules folder is readable")
}

/// Every case of a partnership that expects a decision (not a refusal), by kind, in file order:
/// parsed from `<root>/<id>/tests/*.toml` with `parse_cases`.
pub fn decision_cases(root: &Path, id: &str) -> BTreeMap<String, Vec<Case>> {
    let dir = root.join(id).join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect())
        .unwrap_or_default();
    files.sort();
    let mut out: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for p in files {
        let text = std::fs::read_to_string(&p).expect("read case file");
        let file = SourceFile { path: p.display().to_string(), text };
        let Ok(cases) = parse_cases(&file) else {
            eprintln!("WARNING: {} does not parse; its cases are left out", p.display());
            continue;
        };
        for c in cases {
            if c.expect.invalid_field.is_none() && c.expect.outcome.is_some() {
                out.entry(c.kind.clone()).or_default().push(c);
            }
        }
    }
    out
}

/// The representative case of a kind: of the cases that expect a decision, the one whose
/// expected decision has the most reasons and actions (the most rules firing), first on ties.
/// That is the upper end of realistic work per decision; the `all_cases` benchmarks give the
/// mean over every case.
pub fn representative(cases: &[Case]) -> Option<&Case> {
    let weight = |c: &Case| {
        c.expect.reasons.as_ref().map_or(0, Vec::len) + c.expect.actions.as_ref().map_or(0, Vec::len)
    };
    let mut best: Option<&Case> = None;
    for c in cases {
        if best.is_none_or(|b| weight(c) > weight(b)) {
            best = Some(c);
        }
    }
    best
}

/// One representative decision-producing case per kind the rule set answers. Kinds without a
/// decision-producing case are reported and skipped.
pub fn representatives(root: &Path, set: &RuleSet) -> Vec<(String, Case)> {
    let cases = decision_cases(root, set.id());
    let mut out = Vec::new();
    for k in set.kinds() {
        match cases.get(&k.name).and_then(|c| representative(c)) {
            Some(c) => out.push((k.name.clone(), c.clone())),
            None => eprintln!("WARNING: {}/{} has no decision-producing test case; not benchmarked", set.id(), k.name),
        }
    }
    out
}

fn enum_value(prefix: &str, code: &str, parse: impl Fn(&str) -> Option<i32>) -> i32 {
    let name = format!("{prefix}{}", code.to_ascii_uppercase());
    parse(&name).unwrap_or_else(|| panic!("no protobuf enum value {name}"))
}

fn str_of<'a>(facts: &'a Value, key: &str) -> &'a str {
    facts.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("fact `{key}` is not text"))
}

fn opt_string(facts: &Value, key: &str) -> Option<String> {
    facts.get(key).and_then(Value::as_str).map(str::to_string)
}

fn opt_bool(facts: &Value, key: &str) -> Option<bool> {
    facts.get(key).and_then(Value::as_bool)
}

/// A `DeterminePlanType` request carrying a case's facts.
pub fn plan_type_request(partnership: &str, facts: &Value) -> pb::DeterminePlanTypeRequest {
    pb::DeterminePlanTypeRequest {
        partnership: partnership.to_string(),
        case_ref: "bench".into(),
        conference_type: enum_value("CONFERENCE_TYPE_", str_of(facts, "conference_type"), |n| {
            pb::ConferenceType::from_str_name(n).map(|v| v as i32)
        }),
        significant_harm: enum_value("SIGNIFICANT_HARM_", str_of(facts, "significant_harm"), |n| {
            pb::SignificantHarm::from_str_name(n).map(|v| v as i32)
        }),
        categories: facts
            .get("categories")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                enum_value("ABUSE_CATEGORY_", c.as_str().expect("category"), |n| {
                    pb::AbuseCategory::from_str_name(n).map(|v| v as i32)
                })
            })
            .collect(),
        needs_support: opt_bool(facts, "needs_support"),
        early_help_appropriate: opt_bool(facts, "early_help_appropriate"),
        conference_date: opt_string(facts, "conference_date"),
        first_review: opt_bool(facts, "first_review"),
        safety_scores: facts
            .get("safety_scores")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|s| i32::try_from(s.as_i64().expect("score")).expect("score"))
            .collect(),
        first_language_english: opt_bool(facts, "first_language_english"),
        needs_other_format: opt_bool(facts, "needs_other_format"),
    }
}

/// A `CheckComplaintEligibility` request carrying a case's facts.
pub fn complaint_request(partnership: &str, facts: &Value) -> pb::CheckComplaintEligibilityRequest {
    pb::CheckComplaintEligibilityRequest {
        partnership: partnership.to_string(),
        case_ref: "bench".into(),
        complainant: enum_value("COMPLAINANT_", str_of(facts, "complainant"), |n| {
            pb::Complainant::from_str_name(n).map(|v| v as i32)
        }),
        grounds: facts
            .get("grounds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|g| pb::ComplaintGround {
                category: enum_value("GROUND_CATEGORY_", str_of(g, "category"), |n| {
                    pb::GroundCategory::from_str_name(n).map(|v| v as i32)
                }),
                description: str_of(g, "description").to_string(),
            })
            .collect(),
        stage1_completed: opt_bool(facts, "stage1_completed"),
        states_criteria_aspects: opt_bool(facts, "states_criteria_aspects"),
        still_dissatisfied: opt_string(facts, "still_dissatisfied"),
        solution_sought: opt_string(facts, "solution_sought"),
    }
}

/// Median of a list of durations (in whatever unit), for the one-shot timings.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// The request a case makes: its partnership, kind, facts and the case's own `today`, as every
/// edge builds it.
pub fn request(partnership: &str, case: &Case) -> DecisionRequest {
    DecisionRequest { partnership: partnership.to_string(), kind: case.kind.clone(), facts: case.facts.clone(), today: case.today }
}

/// The core's request for what a gRPC request converted to at the edge (`today` as the
/// service stamps it), or the edge's problems.
pub fn edge_request(edge: EdgeRequest) -> Result<DecisionRequest, Vec<FieldViolation>> {
    if !edge.problems.is_empty() {
        return Err(edge.problems);
    }
    Ok(DecisionRequest { partnership: edge.partnership, kind: edge.kind, facts: edge.facts, today: cpc_rules::clock::today_in_england() })
}

/// A bare engine running one kind's script as `RuleSet::compile` sets it up (hardened engine,
/// helpers, result types, shared functions as global modules, the AST optimised in full), built
/// from the library's public parts. Used to count the Rhai operations a decision takes
/// (`on_progress`), which `RuleSet` does not expose.
pub fn bare_engine(root: &Path, set: &RuleSet, kind: &str) -> (Engine, AST) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let calendar = Calendar::from_toml(&read(&root.join("calendar/bank-holidays.toml"))).expect("calendar");
    let mut engine = build_engine(set.limits());
    engine.set_optimization_level(rhai::OptimizationLevel::None);
    cpc_rules::engine::helpers::register(&mut engine, Arc::new(calendar));
    let sections: HashMap<String, String> = set
        .metadata()
        .documents
        .iter()
        .flat_map(|d| d.sections.iter().map(move |s| (s.clone(), d.title.clone())))
        .collect();
    register_results(&mut engine, ResultContext { sections: Arc::new(sections), actions: Arc::new(set.actions().clone()) });
    let mut shared_files: Vec<_> = std::fs::read_dir(root.join("shared"))
        .expect("shared folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    shared_files.sort();
    for p in shared_files {
        let ast = engine.compile(read(&p)).expect("shared script compiles");
        let mut module = rhai::Module::eval_ast_as_new(Scope::new(), &ast, &engine).expect("shared module");
        module.set_id(p.display().to_string());
        engine.register_global_module(module.into());
    }
    let mut scope = Scope::new();
    scope.push("facts", Map::new());
    let ast = engine.compile_with_scope(&scope, read(&root.join(set.id()).join(format!("{kind}.rhai")))).expect("script compiles");
    let ast = engine.optimize_ast(&scope, ast, rhai::OptimizationLevel::Full);
    (engine, ast)
}
