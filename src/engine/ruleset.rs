//! One partnership's compiled rules, and how a decision is made from them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rhai::{AST, ASTNode, Dynamic, Engine, EvalAltResult, Expr, Map, Position, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{CPU_BUDGET_TOKEN, Limits, build_engine, with_cpu_budget};
use crate::calendar::Calendar;
use crate::error::{DecisionError, ScriptFailure, ScriptLocation};
use crate::facts::Kind;
use crate::model::{Action, Citation, Decision, Details, GroundRoute, GuidanceDocument, Reason};
use crate::suggest::did_you_mean;

/// One source file of a rule set, already read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the rules folder, with `/` separators (e.g. `york/plan_type.rhai`).
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// Everything one partnership's rule set is built from.
#[derive(Debug, Clone)]
pub struct RuleSources {
    /// Partnership id (its folder name).
    pub id: String,
    /// `<id>/partnership.toml`.
    pub metadata: SourceFile,
    /// `<id>/<kind>.rhai`, one per decision kind.
    pub scripts: Vec<SourceFile>,
    /// `shared/*.rhai`: functions every partnership may call.
    pub shared: Vec<SourceFile>,
    /// `calendar/bank-holidays.toml`.
    pub calendar: SourceFile,
    /// `actions.toml`: the action codes scripts may use.
    pub actions: SourceFile,
}

impl RuleSources {
    /// Content hash of every file the rule set is built from: the rule set's revision.
    pub fn revision(&self) -> String {
        let mut files: Vec<&SourceFile> = self.scripts.iter().chain(&self.shared).collect();
        files.extend([&self.metadata, &self.calendar, &self.actions]);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = Sha256::new();
        for f in files {
            h.update(f.path.as_bytes());
            h.update([0]);
            h.update(f.text.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// A partnership's `partnership.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Partnership id; must match the folder name.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The guidance documents the rules cite.
    pub documents: Vec<GuidanceDocument>,
    /// Decision kinds beyond the specification's six, with their outcome codes.
    #[serde(default)]
    pub custom_kinds: BTreeMap<String, CustomKind>,
}

/// A decision kind a partnership adds with a script and test cases alone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomKind {
    /// The outcome codes its script may return.
    pub outcomes: Vec<String>,
}

/// The action codes scripts may use (`rules/actions.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionCatalogue {
    /// code → what it means.
    pub codes: BTreeMap<String, ActionCode>,
}

/// One action code.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionCode {
    /// What the action means, for the README and the proto.
    pub description: String,
}

impl ActionCatalogue {
    /// Parses `actions.toml`.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticSeverity {
    /// The rule set cannot go live.
    Error,
}

/// One problem found while compiling or checking a rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How serious.
    pub severity: DiagnosticSeverity,
    /// A stable code for the kind of problem (`syntax`, `unknown-helper`, `unknown-outcome`, …).
    pub code: &'static str,
    /// File, relative to the rules folder.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it ("did you mean …").
    pub help: Option<String>,
    /// The offending source line.
    pub source_line: Option<String>,
}

impl Diagnostic {
    fn new(code: &'static str, file: &SourceFile, pos: Position, message: impl Into<String>, help: Option<String>) -> Self {
        let line = pos.line();
        Diagnostic {
            severity: DiagnosticSeverity::Error,
            code,
            file: file.path.clone(),
            line,
            column: pos.position(),
            message: message.into(),
            help,
            source_line: line.and_then(|l| file.text.lines().nth(l.saturating_sub(1))).map(str::to_string),
        }
    }

    fn whole_file(code: &'static str, file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: DiagnosticSeverity::Error,
            code,
            file: file.to_string(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
            source_line: None,
        }
    }

    /// `file:line:col: message`, for logs and status messages.
    pub fn one_line(&self) -> String {
        let loc = ScriptLocation { file: self.file.clone(), line: self.line, column: self.column };
        match &self.help {
            Some(h) => format!("{loc}: {} ({h})", self.message),
            None => format!("{loc}: {}", self.message),
        }
    }
}

/// What a rule set says about one of its decision kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindInfo {
    /// Kind name.
    pub name: String,
    /// Script file.
    pub file: String,
    /// Outcome codes its script may return.
    pub outcomes: Vec<String>,
    /// The built-in kind, when it is one of the specification's six.
    pub builtin: Option<Kind>,
}

struct CompiledKind {
    info: KindInfo,
    ast: AST,
}

/// One partnership's rules, compiled and ready to decide.
pub struct RuleSet {
    meta: Metadata,
    revision: String,
    engine: Engine,
    kinds: BTreeMap<String, CompiledKind>,
    /// section heading → document title
    sections: HashMap<String, String>,
    actions: ActionCatalogue,
    limits: Limits,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet").field("id", &self.meta.id).field("revision", &self.revision).finish_non_exhaustive()
    }
}

/// Names callable from any script without being helpers (Rhai's intrinsics).
const INTRINSICS: &[&str] = &["print", "debug", "type_of", "Fn", "call", "curry", "is_def_var", "is_def_fn", "is_shared", "throw"];

impl RuleSet {
    /// Compiles and checks a partnership's sources. Returns every problem found, not just the
    /// first: syntax errors in each script, unknown helpers, outcome codes, sections, facts and
    /// action codes, and malformed metadata.
    pub fn compile(src: &RuleSources, limits: &Limits) -> Result<RuleSet, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let meta = match toml::from_str::<Metadata>(&src.metadata.text) {
            Ok(m) => Some(m),
            Err(e) => {
                diags.push(toml_diag(&src.metadata, &e));
                None
            }
        };
        if let Some(m) = &meta {
            if m.id != src.id {
                diags.push(Diagnostic::whole_file("metadata", &src.metadata.path, format!("id `{}` does not match the folder name `{}`", m.id, src.id)));
            }
            if m.documents.is_empty() || m.documents.iter().any(|d| d.sections.is_empty()) {
                diags.push(Diagnostic::whole_file("metadata", &src.metadata.path, "every partnership needs at least one document with its section headings"));
            }
        }
        let calendar = match Calendar::from_toml(&src.calendar.text) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                diags.push(Diagnostic::whole_file("calendar", &src.calendar.path, e.to_string()));
                None
            }
        };
        let actions = match ActionCatalogue::from_toml(&src.actions.text) {
            Ok(a) => Some(a),
            Err(e) => {
                diags.push(Diagnostic::whole_file("actions", &src.actions.path, e));
                None
            }
        };
        let (Some(meta), Some(calendar), Some(actions)) = (meta, calendar, actions) else {
            return Err(diags);
        };

        let mut engine = build_engine(limits, calendar);
        let mut compile_scope = Scope::new();
        compile_scope.push("facts", Map::new());

        // Shared functions: compiled once into a global module every script can call.
        let mut shared_fns = BTreeSet::new();
        let mut shared_ast: Option<AST> = None;
        for file in &src.shared {
            match engine.compile(&file.text) {
                Ok(mut ast) => {
                    if let Some(stmt) = ast.statements().first() {
                        diags.push(Diagnostic::new("shared-statement", file, stmt.position(), "shared files may only define functions (`fn name(…) { … }`)", None));
                    }
                    ast.set_source(file.path.as_str());
                    diags.extend(super::sandbox::check_ast(&file.path, &file.text, &ast));
                    shared_fns.extend(ast.iter_functions().map(|f| f.name.to_string()));
                    shared_ast = Some(match shared_ast {
                        Some(acc) => acc.merge(&ast),
                        None => ast,
                    });
                }
                Err(e) => diags.push(parse_diag(file, &e)),
            }
        }
        if let Some(ast) = &shared_ast {
            match rhai::Module::eval_ast_as_new(Scope::new(), ast, &engine) {
                Ok(mut module) => {
                    module.set_id("shared");
                    engine.register_global_module(module.into());
                }
                Err(e) => diags.push(Diagnostic::whole_file("shared", "shared", e.to_string())),
            }
        }

        let mut known_fns: BTreeSet<String> = engine
            .gen_fn_signatures(true)
            .into_iter()
            .filter_map(|s| s.split('(').next().map(|n| n.trim().to_string()))
            .collect();
        known_fns.extend(shared_fns);
        known_fns.extend(INTRINSICS.iter().map(|s| s.to_string()));

        let mut sections = HashMap::new();
        for d in &meta.documents {
            for s in &d.sections {
                sections.insert(s.clone(), d.title.clone());
            }
        }

        let mut kinds = BTreeMap::new();
        for file in &src.scripts {
            let name = file.path.rsplit('/').next().unwrap_or(&file.path).trim_end_matches(".rhai").to_string();
            let builtin = Kind::parse(&name);
            let outcomes: Vec<String> = match (builtin, meta.custom_kinds.get(&name)) {
                (Some(k), _) => k.outcomes().iter().map(|s| s.to_string()).collect(),
                (None, Some(c)) => c.outcomes.clone(),
                (None, None) => {
                    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    diags.push(Diagnostic::whole_file(
                        "unknown-kind",
                        &file.path,
                        format!(
                            "`{name}` is not a decision kind{}; declare a new kind under [custom_kinds.{name}] in partnership.toml",
                            did_you_mean(&name, known.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
                        ),
                    ));
                    continue;
                }
            };
            match engine.compile_with_scope(&compile_scope, &file.text) {
                Ok(mut ast) => {
                    ast.set_source(file.path.as_str());
                    let info = KindInfo { name: name.clone(), file: file.path.clone(), outcomes, builtin };
                    let ctx = CheckContext { file, info: &info, known_fns: &known_fns, sections: &sections, actions: &actions };
                    let before = diags.len();
                    ctx.check(&ast, &mut diags);
                    diags.extend(super::sandbox::check_ast(&file.path, &file.text, &ast));
                    if diags.len() == before {
                        // Checked as written; run with constants folded and the pure helpers'
                        // calls on constant arguments made once, here, rather than per decision.
                        // Every test case still runs against this AST before the set goes live.
                        let mut ast = engine.optimize_ast(&compile_scope, ast, rhai::OptimizationLevel::Full);
                        ast.set_source(file.path.as_str());
                        kinds.insert(name, CompiledKind { info, ast });
                    }
                }
                Err(e) => diags.push(parse_diag(file, &e)),
            }
        }
        for custom in meta.custom_kinds.keys() {
            if Kind::parse(custom).is_some() {
                diags.push(Diagnostic::whole_file("metadata", &src.metadata.path, format!("`{custom}` is a built-in kind; it cannot be redeclared")));
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(RuleSet { revision: src.revision(), meta, engine, kinds, sections, actions, limits: limits.clone() })
    }

    /// Partnership id.
    pub fn id(&self) -> &str {
        &self.meta.id
    }
    /// The partnership's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }
    /// Content hash of the sources this set was compiled from.
    pub fn revision(&self) -> &str {
        &self.revision
    }
    /// The kinds this partnership answers, by name.
    pub fn kinds(&self) -> impl Iterator<Item = &KindInfo> {
        self.kinds.values().map(|k| &k.info)
    }
    /// The action codes scripts may use.
    pub fn actions(&self) -> &ActionCatalogue {
        &self.actions
    }

    /// Makes one decision: validates `facts` against the kind's schema, runs the kind's script
    /// within its limits and budget, and checks what it returns.
    pub fn decide(&self, kind: &str, facts: &Value) -> Result<Decision, DecisionError> {
        let ck = self.kinds.get(kind).ok_or_else(|| DecisionError::UnknownKind {
            partnership: self.meta.id.clone(),
            kind: kind.to_string(),
        })?;
        match ck.info.builtin {
            Some(k) => crate::facts::validate(k, facts).map_err(DecisionError::InvalidFacts)?,
            None if facts.is_object() => {}
            None => {
                return Err(DecisionError::InvalidFacts(vec![crate::facts::FieldViolation::new("facts", "must be an object of named facts")]));
            }
        }
        let mut scope = Scope::new();
        scope.push_constant_dynamic("facts", to_dynamic(facts));
        let value = with_cpu_budget(self.limits.time_budget, || self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ck.ast))
            .map_err(|e| script_error(&ck.info.file, &self.limits, &e))?;
        self.to_decision(ck, value).map_err(|message| DecisionError::Script {
            failure: ScriptFailure::BadResult,
            location: ScriptLocation { file: ck.info.file.clone(), line: None, column: None },
            message,
        })
    }

    fn to_decision(&self, ck: &CompiledKind, value: Dynamic) -> Result<Decision, String> {
        let mut map = value
            .try_cast::<Map>()
            .ok_or("the script did not return a decision; end it with `return decide(outcome, summary, reasons, actions);`")?;
        let outcome = take_string(&mut map, "outcome", "decision")?;
        if !ck.info.outcomes.iter().any(|o| *o == outcome) {
            return Err(format!("returned outcome `{outcome}`, which is not a `{}` outcome ({})", ck.info.name, ck.info.outcomes.join(", ")));
        }
        let summary = take_string(&mut map, "summary", "decision")?;
        if summary.trim().is_empty() {
            return Err("the decision's summary is empty".into());
        }
        let reasons = take_array(&mut map, "reasons", "decision")?
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.to_reason(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        if reasons.is_empty() {
            return Err("a decision needs at least one reason".into());
        }
        let actions = take_array(&mut map, "actions", "decision")?
            .into_iter()
            .enumerate()
            .map(|(i, a)| self.to_action(i, a))
            .collect::<Result<Vec<_>, _>>()?;
        let details = match map.remove("details") {
            None => Details::default(),
            Some(d) if d.is_unit() => Details::default(),
            Some(d) => to_details(d)?,
        };
        if let Some(extra) = map.keys().next() {
            return Err(format!("the decision has an unexpected field `{extra}`"));
        }
        Ok(Decision {
            decision_id: uuid::Uuid::new_v4().to_string(),
            partnership: self.meta.id.clone(),
            kind: ck.info.name.clone(),
            outcome,
            summary,
            reasons,
            actions,
            rules_revision: self.revision.clone(),
            decided_at: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            details,
        })
    }

    fn to_reason(&self, i: usize, r: Dynamic) -> Result<Reason, String> {
        let what = format!("reasons[{i}]");
        let mut m = r.try_cast::<Map>().ok_or_else(|| format!("{what} is not a reason; build it with reason(…) or assumption(…)"))?;
        let rule_id = take_string(&mut m, "rule_id", &what)?;
        let section = take_string(&mut m, "section", &what)?;
        let text = take_string(&mut m, "text", &what)?;
        let assumption = m.remove("assumption").and_then(|v| v.as_bool().ok()).unwrap_or(false);
        if rule_id.trim().is_empty() || text.trim().is_empty() {
            return Err(format!("{what} needs a rule id and text"));
        }
        let document = self.sections.get(&section).ok_or_else(|| {
            format!("{what} cites section `{section}`, which is not listed in partnership.toml")
        })?;
        Ok(Reason { rule_id, text, citation: Citation { document: document.clone(), section, assumption } })
    }

    fn to_action(&self, i: usize, a: Dynamic) -> Result<Action, String> {
        let what = format!("actions[{i}]");
        let mut m = a.try_cast::<Map>().ok_or_else(|| format!("{what} is not an action; build it with action(…)"))?;
        let code = take_string(&mut m, "code", &what)?;
        if !self.actions.codes.contains_key(&code) {
            return Err(format!("{what} has action code `{code}`, which is not listed in actions.toml"));
        }
        let description = take_string(&mut m, "description", &what)?;
        let responsible = take_string(&mut m, "responsible", &what)?;
        let due_date = match m.remove("due_date") {
            None => None,
            Some(d) if d.is_unit() => None,
            Some(d) => {
                let s = d.into_string().map_err(|t| format!("{what}.due_date is a {t}, not a date"))?;
                if crate::facts::parse_date(&s).is_none() {
                    return Err(format!("{what}.due_date `{s}` is not a YYYY-MM-DD date"));
                }
                Some(s)
            }
        };
        Ok(Action { code, description, due_date, responsible })
    }
}

fn take_string(m: &mut Map, key: &str, what: &str) -> Result<String, String> {
    match m.remove(key) {
        None => Err(format!("the {what} has no `{key}`")),
        Some(v) => v.into_string().map_err(|t| format!("the {what}'s `{key}` is a {t}, not text")),
    }
}

fn take_array(m: &mut Map, key: &str, what: &str) -> Result<rhai::Array, String> {
    match m.remove(key) {
        None => Err(format!("the {what} has no `{key}`")),
        Some(v) => v.into_array().map_err(|t| format!("the {what}'s `{key}` is a {t}, not a list")),
    }
}

fn strings(v: Dynamic, what: &str) -> Result<Vec<String>, String> {
    v.into_array()
        .map_err(|t| format!("details.{what} is a {t}, not a list"))?
        .into_iter()
        .map(|s| s.into_string().map_err(|t| format!("details.{what} holds a {t}, not text")))
        .collect()
}

fn to_details(d: Dynamic) -> Result<Details, String> {
    let mut m = d.try_cast::<Map>().ok_or("details must be a map")?;
    let mut out = Details::default();
    if let Some(c) = m.remove("categories") {
        out.categories = strings(c, "categories")?;
    }
    if let Some(p) = m.remove("panel_recommendations") {
        out.panel_recommendations = strings(p, "panel_recommendations")?;
    }
    if let Some(g) = m.remove("grounds") {
        for (i, item) in g.into_array().map_err(|_| "details.grounds must be a list")?.into_iter().enumerate() {
            let what = format!("details.grounds[{i}]");
            let mut gm = item.try_cast::<Map>().ok_or_else(|| format!("{what} must be a map"))?;
            let index = gm.remove("index").and_then(|v| v.as_int().ok()).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("{what} needs a whole-number index"))?;
            let category = take_string(&mut gm, "category", &what)?;
            let route = take_string(&mut gm, "route", &what)?;
            if route != "stage2_panel" && route != "agency_complaints_procedure" {
                return Err(format!("{what}.route `{route}` must be stage2_panel or agency_complaints_procedure"));
            }
            out.grounds.push(GroundRoute { index, category, route });
        }
    }
    if let Some(extra) = m.keys().next() {
        return Err(format!("details has an unexpected field `{extra}`"));
    }
    Ok(out)
}

/// Converts JSON facts to the values scripts see (public for the benchmarks).
pub fn to_dynamic(v: &Value) -> Dynamic {
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

fn script_error(file: &str, limits: &Limits, err: &EvalAltResult) -> DecisionError {
    let mut file = file.to_string();
    let mut e = err;
    let mut pos = err.position();
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(_, src, inner, p) => {
                if !src.is_empty() {
                    file = src.clone();
                }
                pos = if inner.position().is_none() { *p } else { inner.position() };
                e = inner;
            }
            EvalAltResult::ErrorInModule(_, inner, p) => {
                pos = if inner.position().is_none() { *p } else { inner.position() };
                e = inner;
            }
            _ => break,
        }
    }
    let (failure, message) = match e {
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == CPU_BUDGET_TOKEN => (
            ScriptFailure::Timeout,
            format!("the script used more than its CPU budget of {} ms and was stopped", limits.time_budget.as_millis()),
        ),
        EvalAltResult::ErrorTooManyOperations(_) => (
            ScriptFailure::Limit,
            format!("the script took more than {} operations and was stopped (an endless loop?)", limits.max_operations),
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            ScriptFailure::Limit,
            format!("functions called each other more than {} deep and were stopped (endless recursion?)", limits.max_call_depth),
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => (ScriptFailure::Limit, format!("the script built a value too large: {what} (limits: {} bytes of data, {} list elements, {} map entries)", limits.max_data_bytes, limits.max_array_size, limits.max_map_size)),
        EvalAltResult::ErrorTooManyVariables(_) | EvalAltResult::ErrorTooManyModules(_) => (ScriptFailure::Limit, strip_position(e)),
        EvalAltResult::ErrorRuntime(v, _) => (ScriptFailure::Runtime, format!("the script stopped with an error: {v}")),
        _ => (ScriptFailure::Runtime, strip_position(e)),
    };
    DecisionError::Script { failure, location: ScriptLocation { file, line: pos.line(), column: pos.position() }, message }
}

fn strip_position(e: &EvalAltResult) -> String {
    let s = e.to_string();
    match s.rfind(" (line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn parse_diag(file: &SourceFile, e: &rhai::ParseError) -> Diagnostic {
    let message = strip_position(&EvalAltResult::ErrorParsing(e.err_type().clone(), Position::NONE));
    let help = match e.err_type() {
        rhai::ParseErrorType::VariableUndefined(v) if v != "facts" => {
            Some(format!("`{v}` is not defined here; define it with `let {v} = …;` first, or use `facts.{v}` for a fact"))
        }
        rhai::ParseErrorType::MissingToken(t, _) => Some(format!("add the missing `{t}`")),
        _ => None,
    };
    Diagnostic::new("syntax", file, e.position(), message, help)
}

fn toml_diag(file: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &file.text[..span.start.min(file.text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    Diagnostic {
        severity: DiagnosticSeverity::Error,
        code: "toml",
        file: file.path.clone(),
        line,
        column,
        message: e.message().to_string(),
        help: None,
        source_line: line.and_then(|l| file.text.lines().nth(l - 1)).map(str::to_string),
    }
}

struct CheckContext<'a> {
    file: &'a SourceFile,
    info: &'a KindInfo,
    known_fns: &'a BTreeSet<String>,
    sections: &'a HashMap<String, String>,
    actions: &'a ActionCatalogue,
}

impl CheckContext<'_> {
    /// Static checks: every helper exists, every literal outcome, section, action code and fact
    /// name is one the rule set knows.
    fn check(&self, ast: &AST, diags: &mut Vec<Diagnostic>) {
        let local_fns: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        ast.walk(&mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Expr(Expr::FnCall(call, pos))) if call.op_token.is_none() && call.namespace.is_empty() => {
                    self.check_call(call.name.as_str(), &call.args, *pos, &local_fns, diags);
                }
                Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, pos))) if call.op_token.is_none() && call.namespace.is_empty() => {
                    self.check_call(call.name.as_str(), &call.args, *pos, &local_fns, diags);
                }
                Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => {
                    if !self.known_fns.contains(call.name.as_str()) && !local_fns.contains(call.name.as_str()) {
                        self.unknown_fn(call.name.as_str(), *pos, &local_fns, diags);
                    }
                }
                Some(ASTNode::Expr(Expr::Dot(bin, _, _))) => self.check_fact(&bin.lhs, &bin.rhs, diags),
                _ => {}
            }
            true
        });
    }

    fn unknown_fn(&self, name: &str, pos: Position, local: &BTreeSet<String>, diags: &mut Vec<Diagnostic>) {
        let candidates = crate::engine::helpers::HELPERS.iter().map(|h| h.name).chain(local.iter().map(String::as_str)).chain(self.known_fns.iter().map(String::as_str));
        let help = did_you_mean(name, candidates).map(|s| format!("did you mean `{s}`?"));
        diags.push(Diagnostic::new("unknown-helper", self.file, pos, format!("there is no helper or function called `{name}`"), help));
    }

    fn check_call(&self, name: &str, args: &[Expr], pos: Position, local: &BTreeSet<String>, diags: &mut Vec<Diagnostic>) {
        if name.chars().next().is_some_and(|c| !c.is_alphabetic() && c != '_') {
            return;
        }
        if !self.known_fns.contains(name) && !local.contains(name) {
            self.unknown_fn(name, pos, local, diags);
            return;
        }
        match (name, args) {
            ("decide", [Expr::StringConstant(outcome, p), ..]) if !self.info.outcomes.iter().any(|o| o == outcome.as_str()) => {
                let help = did_you_mean(outcome, self.info.outcomes.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some(format!("`{}` outcomes are: {}", self.info.name, self.info.outcomes.join(", "))));
                diags.push(Diagnostic::new("unknown-outcome", self.file, *p, format!("`{outcome}` is not an outcome of `{}`", self.info.name), help));
            }
            ("reason" | "assumption", [_, Expr::StringConstant(section, p), ..]) if !self.sections.contains_key(section.as_str()) => {
                let help = did_you_mean(section, self.sections.keys().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some("cite a section heading listed under [[documents]] in partnership.toml".into()));
                diags.push(Diagnostic::new("unknown-section", self.file, *p, format!("section `{section}` is not listed in partnership.toml"), help));
            }
            ("action", [Expr::StringConstant(code, p), ..]) if !self.actions.codes.contains_key(code.as_str()) => {
                let help = did_you_mean(code, self.actions.codes.keys().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some("add new action codes to rules/actions.toml".into()));
                diags.push(Diagnostic::new("unknown-action", self.file, *p, format!("action code `{code}` is not listed in actions.toml"), help));
            }
            _ => {}
        }
    }

    fn check_fact(&self, lhs: &Expr, rhs: &Expr, diags: &mut Vec<Diagnostic>) {
        let Some(kind) = self.info.builtin else { return };
        let Expr::Variable(v, _, _) = lhs else { return };
        if v.1.as_str() != "facts" {
            return;
        }
        let prop = match rhs {
            Expr::Property(p, pos) => Some((p.2.clone(), *pos)),
            Expr::Index(b, _, _) | Expr::Dot(b, _, _) => match &b.lhs {
                Expr::Property(p, pos) => Some((p.2.clone(), *pos)),
                _ => None,
            },
            _ => None,
        };
        let Some((name, pos)) = prop else { return };
        let schema = kind.schema();
        if !schema.iter().any(|s| s.name == name.as_str()) {
            let help = did_you_mean(&name, schema.iter().map(|s| s.name)).map(|s| format!("did you mean `facts.{s}`?")).or_else(|| {
                Some(format!("`{}` facts are: {}", kind.as_str(), schema.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")))
            });
            diags.push(Diagnostic::new("unknown-fact", self.file, pos, format!("`{name}` is not a fact of `{}`", kind.as_str()), help));
        }
    }
}
