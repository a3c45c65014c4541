//! Loading rule sets from the rules folder, and swapping them atomically.
//!
//! This is the only module that reads rule files. A partnership's rule set goes live only when
//! every file compiles, every static check passes and every test case passes; then it replaces
//! the old set in one atomic swap ([`arc_swap::ArcSwap`]). A request that started on the old set
//! finishes on it, because it holds its own `Arc`. A failed attempt leaves the last good set
//! serving and is kept, with its diagnostics, for `ListPartnerships` and the logs.
//!
//! Layout of the rules folder:
//!
//! ```text
//! rules/
//!   actions.toml                 action codes scripts may use
//!   calendar/bank-holidays.toml  England and Wales bank holidays
//!   shared/*.rhai                functions every partnership may call
//!   <partnership>/partnership.toml, <kind>.rhai, tests/*.toml
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::cases::{Case, CaseResult};
use crate::engine::{Diagnostic, Limits, RuleSet, RuleSources};
use crate::error::DecisionError;
use crate::model::{Decision, DecisionRequest, PartnershipInfo, ReloadFailure};

/// A live rule set with what it was checked against.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled rules.
    pub set: RuleSet,
    /// Its test cases (all of which passed when it went live).
    pub cases: Vec<Case>,
    /// When it went live.
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    /// The files it was compiled from (for the decision record's revision archive).
    pub sources: Arc<RuleSources>,
}

/// Why a partnership's rule set was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// Partnership id.
    pub partnership: String,
    /// Compile and check problems.
    pub diagnostics: Vec<Diagnostic>,
    /// Failed test cases, as readable lines.
    pub failed_cases: Vec<String>,
}

impl Refusal {
    /// Every problem as one line each.
    pub fn lines(&self) -> Vec<String> {
        self.diagnostics.iter().map(Diagnostic::one_line).chain(self.failed_cases.iter().cloned()).collect()
    }
}

/// Everything a build of one partnership produced, pass or fail.
#[derive(Debug)]
pub struct Build {
    /// Partnership id.
    pub id: String,
    /// The compiled set, if it compiled.
    pub set: Option<RuleSet>,
    /// Compile and check problems.
    pub diagnostics: Vec<Diagnostic>,
    /// Every case result (when it compiled).
    pub results: Vec<CaseResult>,
    /// Cases parsed (even if the set did not compile).
    pub cases: Vec<Case>,
    /// The files it was built from (when they could be read).
    pub sources: Option<Arc<RuleSources>>,
}

impl Build {
    /// Whether the build may go live.
    pub fn ok(&self) -> bool {
        self.set.is_some() && self.diagnostics.is_empty() && self.results.iter().all(CaseResult::passed)
    }

    fn refusal(&self) -> Refusal {
        Refusal {
            partnership: self.id.clone(),
            diagnostics: self.diagnostics.clone(),
            failed_cases: self
                .results
                .iter()
                .filter(|r| !r.passed())
                .map(|r| format!("{}:{}: case `{}` failed: {}", r.case.file, r.case.line, r.case.name, r.mismatches.join("; ")))
                .collect(),
        }
    }
}

/// The partnership ids in a rules folder: every sub-folder with a `partnership.toml` (or that
/// cannot be read, so the problem is reported). See [`source::scan`].
pub fn partnership_ids(root: &Path) -> std::io::Result<Vec<String>> {
    source::scan(root).map(|s| s.ids)
}

/// Reads one partnership's sources from disk (see [`source::read_partnership`]).
pub fn read_sources(root: &Path, id: &str) -> Result<RuleSources, Vec<Diagnostic>> {
    source::read_partnership(root, id)
}

/// Reads, compiles, checks and tests one partnership from disk.
pub fn build(root: &Path, id: &str, limits: &Limits) -> Build {
    match read_sources(root, id) {
        Ok(sources) => Build { sources: Some(Arc::new(sources.clone())), ..gate::gate(&sources, limits) },
        Err(diagnostics) => Build { id: id.to_string(), set: None, diagnostics, results: Vec::new(), cases: Vec::new(), sources: None },
    }
}

/// What a reload did for each partnership it looked at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Partnerships whose new revision went live: (id, revision).
    pub swapped: Vec<(String, String)>,
    /// Partnerships whose sources had not changed.
    pub unchanged: Vec<String>,
    /// Partnerships whose new sources were refused.
    pub refused: Vec<Refusal>,
    /// Top-level entries of the rules folder neither loaded nor watched, each with why (a
    /// symlink leading outside the folder, say).
    pub skipped: Vec<String>,
}

/// A function told of every reload's report, whatever triggered it (the file watcher, SIGHUP or
/// `ReloadRules`): how the service counts reloads in its metrics without the store knowing.
pub type ReloadObserver = Arc<dyn Fn(&ReloadReport) + Send + Sync>;

/// The live rule sets of every partnership.
pub struct RuleStore {
    root: PathBuf,
    limits: Limits,
    sets: ArcSwap<BTreeMap<String, Arc<Loaded>>>,
    failures: Mutex<BTreeMap<String, ReloadFailure>>,
    reload_lock: Mutex<()>,
    observers: Mutex<Vec<ReloadObserver>>,
    watch_problem: Mutex<Option<String>>,
}

impl std::fmt::Debug for RuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleStore").field("root", &self.root).finish_non_exhaustive()
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
}

impl RuleStore {
    /// Loads every partnership in `root`. Fails, naming every problem, if any partnership does
    /// not compile or pass its test cases: the service never starts on rules it cannot trust.
    pub fn load(root: impl Into<PathBuf>, limits: Limits) -> Result<RuleStore, Vec<Refusal>> {
        let root = root.into();
        let ids = partnership_ids(&root).map_err(|e| {
            vec![Refusal {
                partnership: "*".into(),
                diagnostics: vec![Diagnostic::whole_file("io", root.display().to_string(), format!("cannot read the rules folder: {e}"))
                    .with_help("run from the project folder, or pass the rules folder with --rules <path>")],
                failed_cases: Vec::new(),
            }]
        })?;
        let mut sets = BTreeMap::new();
        let mut refused = Vec::new();
        for id in ids {
            let b = build(&root, &id, &limits);
            if b.ok() {
                if let (Some(set), Some(sources)) = (b.set, b.sources) {
                    sets.insert(id, Arc::new(Loaded { set, cases: b.cases, loaded_at: now(), sources }));
                }
            } else {
                refused.push(b.refusal());
            }
        }
        if !refused.is_empty() {
            return Err(refused);
        }
        if sets.is_empty() {
            return Err(vec![Refusal {
                partnership: "*".into(),
                diagnostics: vec![Diagnostic::whole_file("empty", root.display().to_string(), "no partnership folders (with a partnership.toml) were found")
                    .with_help("pass the rules folder (the one holding vocabulary.toml and a folder per partnership) with --rules <path>")],
                failed_cases: Vec::new(),
            }]);
        }
        Ok(RuleStore { root, limits, sets: ArcSwap::from_pointee(sets), failures: Mutex::new(BTreeMap::new()), reload_lock: Mutex::new(()), observers: Mutex::new(Vec::new()), watch_problem: Mutex::new(None) })
    }

    /// Records that the folder watcher has stopped working (`Some(why)`) or works again
    /// (`None`), so the metrics can say so: hot reload is never silently off.
    pub fn set_watch_problem(&self, problem: Option<String>) {
        *self.watch_problem.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = problem;
    }

    /// Why the folder watcher is not working, if it is not.
    pub fn watch_problem(&self) -> Option<String> {
        self.watch_problem.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The rules folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The limits scripts run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The live rule set of a partnership (hold it for the whole of a request).
    pub fn get(&self, partnership: &str) -> Option<Arc<Loaded>> {
        self.sets.load().get(partnership).cloned()
    }

    /// Ids of the live partnerships.
    pub fn ids(&self) -> Vec<String> {
        self.sets.load().keys().cloned().collect()
    }

    /// Makes a decision with the partnership's live rule set.
    pub fn decide(&self, req: &DecisionRequest) -> Result<Decision, DecisionError> {
        let loaded = self.get(&req.partnership).ok_or_else(|| self.unknown_partnership(&req.partnership))?;
        loaded.set.decide(req)
    }

    /// The unknown-partnership error for `id`, with a did-you-mean and the ids there are.
    pub fn unknown_partnership(&self, id: &str) -> DecisionError {
        let known = self.ids();
        DecisionError::UnknownPartnership {
            id: id.to_string(),
            suggestion: crate::suggest::did_you_mean(id, known.iter().map(String::as_str)).map(str::to_string),
            known,
        }
    }

    /// What `ListPartnerships` reports.
    pub fn partnerships(&self) -> Vec<PartnershipInfo> {
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        self.sets
            .load()
            .values()
            .map(|l| {
                let m = l.set.metadata();
                PartnershipInfo {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    revision: l.set.revision().to_string(),
                    kinds: l.set.kinds().map(|k| k.name.clone()).collect(),
                    documents: m.documents.clone(),
                    loaded_at: l.loaded_at,
                    last_failure: failures.get(&m.id).cloned(),
                }
            })
            .collect()
    }

    /// Adds a function to be told of every reload's report, after the reload is done.
    pub fn observe_reloads(&self, observer: ReloadObserver) {
        self.observers.lock().unwrap_or_else(|p| p.into_inner()).push(observer);
    }

    /// Rebuilds the named partnerships (all when `only` is empty) from disk and swaps in each
    /// one that compiles, checks and passes its cases. A refused one keeps its old set.
    pub fn reload(&self, only: &[String]) -> ReloadReport {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let scan = source::scan(&self.root).unwrap_or_default();
        let ids = if only.is_empty() { scan.ids } else { only.to_vec() };
        let mut report = ReloadReport { swapped: Vec::new(), unchanged: Vec::new(), refused: Vec::new(), skipped: scan.skipped };
        for id in ids {
            let b = build(&self.root, &id, &self.limits);
            let current = self.get(&id);
            if b.ok() {
                let (Some(set), Some(sources)) = (b.set, b.sources) else { continue };
                if current.as_ref().is_some_and(|c| c.set.revision() == set.revision()) {
                    // The files are back to what is live: any earlier failure no longer applies.
                    if let Ok(mut f) = self.failures.lock() {
                        f.remove(&id);
                    }
                    report.unchanged.push(id);
                    continue;
                }
                let revision = set.revision().to_string();
                let loaded = Arc::new(Loaded { set, cases: b.cases, loaded_at: now(), sources });
                self.sets.rcu(|m| {
                    let mut m = BTreeMap::clone(m);
                    m.insert(id.clone(), loaded.clone());
                    m
                });
                if let Ok(mut f) = self.failures.lock() {
                    f.remove(&id);
                }
                tracing::info!(partnership = %id, %revision, "rule set swapped in");
                report.swapped.push((id, revision));
            } else {
                let refusal = b.refusal();
                let lines = refusal.lines();
                tracing::warn!(partnership = %id, problems = lines.len(), diagnostics = ?lines, "rule set refused; the last good revision keeps serving");
                if let Ok(mut f) = self.failures.lock() {
                    f.insert(id.clone(), ReloadFailure { at: now(), diagnostics: lines });
                }
                report.refused.push(refusal);
            }
        }
        let observers = self.observers.lock().map(|o| o.clone()).unwrap_or_default();
        for observe in observers {
            observe(&report);
        }
        report
    }
}

mod gate;
pub use gate::gate;
pub mod source;
pub mod watch;
