//! One partnership's compiled rules, and how a decision is made from them.
//!
//! [`RuleSet::decide`] is the whole decision path: look up the kind, validate the facts once
//! into [`Facts`], run the kind's compiled script on the rule set's engine, and move what the
//! script built into a [`Decision`]. It reads no clock and draws no random numbers — the caller
//! supplies today's date and stamps the id and time — so the same revision, facts and date
//! always give the same decision.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use rhai::{AST, Caches, Dynamic, Engine, EvalAltResult, ImmutableString, Scope};

use super::Limits;
use super::result::{into_decision, script_error};
use super::sources::{ActionCatalogue, Metadata};
use crate::error::DecisionError;
use crate::facts::{Context, Facts};
use crate::model::{Decision, DecisionRequest};
use crate::suggest::did_you_mean;
use crate::vocabulary::{KindSchema, Vocabulary};

/// What a rule set says about one of its decision kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindInfo {
    /// Kind name.
    pub name: String,
    /// Script file.
    pub file: String,
    /// The kind's declaration: outcomes and facts.
    pub schema: Arc<KindSchema>,
    /// The facts the script reads somewhere (a call needs one only on a path that reads it).
    pub reads: Vec<String>,
}

impl KindInfo {
    /// Outcome codes its script may return.
    pub fn outcomes(&self) -> &[String] {
        &self.schema.outcomes
    }
}

pub(super) struct CompiledKind {
    pub(super) info: KindInfo,
    pub(super) ast: AST,
    /// The script's name for error positions, made once rather than per run.
    source: Option<ImmutableString>,
    /// Function-resolution caches left by earlier runs of this script, one taken per run.
    caches: Mutex<Vec<Caches>>,
}

/// Most function-resolution caches kept per kind: one per thread running it at once is enough.
const POOLED_CACHES: usize = 16;

impl CompiledKind {
    pub(super) fn new(info: KindInfo, ast: AST) -> Self {
        let source = ast.source().map(ImmutableString::from);
        CompiledKind { info, ast, source, caches: Mutex::new(Vec::new()) }
    }

    /// Runs the script as [`Engine::eval_ast_with_scope`] does, except that Rhai's
    /// function-resolution cache (which call resolves to which function) is kept from one run
    /// to the next instead of being rebuilt on every decision: resolving every call afresh took
    /// 13% of a decision's instructions (docs/performance.md). A cache is only valid for
    /// the engine and AST it was filled on, and both are fixed for the life of the rule set.
    fn eval(&self, engine: &Engine, scope: &mut Scope) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut caches = self.caches.lock().ok().and_then(|mut pool| pool.pop()).unwrap_or_default();
        let mut global = engine.new_global_runtime_state();
        global.source.clone_from(&self.source);
        global.lib.push(self.ast.shared_lib().clone());
        // The one entry point that takes a caller's caches (`internals`); it is what
        // `eval_ast_with_scope` runs once it has set up the same global state as above.
        #[allow(deprecated)]
        let result = engine.eval_statements_raw(&mut global, &mut caches, scope, self.ast.statements());
        // Only a cache back at its base level is reused (a run stopped inside a function may
        // leave a function's own level behind).
        if caches.fn_resolution_caches_len() <= 1 {
            if let Ok(mut pool) = self.caches.lock() {
                if pool.len() < POOLED_CACHES {
                    pool.push(caches);
                }
            }
        }
        result
    }
}

/// One partnership's rules, compiled and ready to decide.
pub struct RuleSet {
    pub(super) meta: Metadata,
    pub(super) revision: String,
    pub(super) engine: Engine,
    pub(super) kinds: BTreeMap<String, CompiledKind>,
    pub(super) actions: Arc<ActionCatalogue>,
    pub(super) vocabulary: Arc<Vocabulary>,
    pub(super) dates: RangeInclusive<NaiveDate>,
    pub(super) limits: Limits,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet").field("id", &self.meta.id).field("revision", &self.revision).finish_non_exhaustive()
    }
}

impl RuleSet {
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
    /// The kind called `name`.
    pub fn kind(&self, name: &str) -> Option<&KindInfo> {
        self.kinds.get(name).map(|k| &k.info)
    }
    /// The action codes scripts may use.
    pub fn actions(&self) -> &ActionCatalogue {
        &self.actions
    }
    /// This partnership's vocabulary (the shared one with its additions).
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }
    /// The dates the bank-holiday calendar covers.
    pub fn dates(&self) -> &RangeInclusive<NaiveDate> {
        &self.dates
    }
    /// The limits its scripts run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The unknown-kind error for `kind`, with a did-you-mean and the kinds there are.
    pub fn unknown_kind(&self, kind: &str) -> DecisionError {
        let known: Vec<String> = self.kinds.keys().cloned().collect();
        DecisionError::UnknownKind {
            partnership: self.meta.id.clone(),
            kind: kind.to_string(),
            suggestion: did_you_mean(kind, known.iter().map(String::as_str)).map(str::to_string),
            known,
        }
    }

    /// Validates `facts` for `kind` into typed [`Facts`], or lists every problem.
    pub fn facts(&self, kind: &str, facts: &serde_json::Value, today: NaiveDate) -> Result<Facts, DecisionError> {
        let ck = self.kinds.get(kind).ok_or_else(|| self.unknown_kind(kind))?;
        let ctx = Context { today, dates: self.dates.clone() };
        Facts::validate(&ck.info.schema, facts, &ctx).map_err(DecisionError::InvalidFacts)
    }

    /// Makes one decision: finds the kind (`NotFound` before any fact is looked at), validates
    /// the facts once, runs the kind's script within its limits, and checks what it returns.
    pub fn decide(&self, req: &DecisionRequest) -> Result<Decision, DecisionError> {
        let facts = self.facts(&req.kind, &req.facts, req.today)?;
        self.decide_facts(&facts)
    }

    /// Makes one decision on facts already validated for one of this set's kinds.
    pub fn decide_facts(&self, facts: &Facts) -> Result<Decision, DecisionError> {
        let kind = &facts.kind().name;
        let ck = self.kinds.get(kind).ok_or_else(|| self.unknown_kind(kind))?;
        let mut scope = Scope::new();
        scope.push_constant_dynamic("facts", Dynamic::from(facts.clone()));
        let value = super::run_budgeted(&self.limits, || ck.eval(&self.engine, &mut scope))
            .map_err(|e| script_error(&ck.info.file, &self.limits, &e))?;
        // The script's variables share the reasons and actions it returns: let them go first,
        // so the decision takes their text without copying it.
        drop(scope);
        let mut decision = into_decision(&ck.info, &self.meta.id, &self.revision, value)?;
        decision.as_of_defaulted = facts.defaulted_date().map(|(_, d)| d);
        Ok(decision)
    }
}
