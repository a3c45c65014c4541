//! The pure decision core: compiled rule scripts in, decisions out.
//!
//! Nothing here touches files, the network, the clock or gRPC. [`RuleSet::compile`] takes a
//! partnership's sources as text ([`RuleSources`]), compiles every script to an AST once, checks
//! it statically against the vocabulary, and holds the result in memory; [`RuleSet::decide`]
//! validates facts once into typed values, runs the kind's AST on the hardened engine and moves
//! what the script built into a [`crate::model::Decision`] — or an error, never a guess.
//!
//! One room per job: [`sources`] (what a rule set is built from, its revision), `compile`
//! (building a rule set), `check` (static checks), [`script_types`] (the types scripts read and
//! build), `result` (from a script's result or error to the core's answer), [`diagnostics`]
//! (the one diagnostic type), [`helpers`] (the documented helper functions), [`sandbox`] (the
//! allow-listed language and its limits).
//!
//! [`build_engine`] is the one place the Rhai engine is configured: the allow-listed language and
//! the limits of [`sandbox`] (operations, CPU time of the running thread, one data limit in
//! bytes, call and expression depth). No module loading (so no file access), no `eval`, no
//! `try`/`catch`, and `print`/`debug` silenced. The rule set then installs its helpers.

mod check;
mod compile;
pub mod diagnostics;
pub mod helpers;
mod result;
mod ruleset;
pub mod sandbox;
pub mod script_types;
pub mod sources;
mod syntax_help;

use std::time::Duration;

use rhai::{Dynamic, Engine};

pub use diagnostics::{Diagnostic, Location};
pub use ruleset::{KindInfo, RuleSet};
pub use sources::{ActionCatalogue, Metadata, RuleSources, SourceFile};

/// The limits every script runs under — when serving, and in `cpc-rules test`/`check` and every
/// reload, so what passes the gate runs the same way live. The defaults come from measuring the
/// bundled rules (`docs/reliability.md`), with headroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most Rhai operations one decision may take (deterministic).
    pub max_operations: u64,
    /// Deepest function-call nesting.
    pub max_call_depth: usize,
    /// Deepest expression nesting at global level.
    pub max_expr_depth: usize,
    /// Deepest expression nesting inside functions.
    pub max_fn_expr_depth: usize,
    /// The data limit: the most bytes any value a script builds may hold, by
    /// [`sandbox::data_size`] — text bytes, map keys, and a fixed cost per list element and map
    /// entry, nested values included.
    pub max_data_bytes: usize,
    /// Most elements in a list (nested lists included).
    pub max_array_size: usize,
    /// Most entries in a map (nested maps included).
    pub max_map_size: usize,
    /// CPU time of the thread running one decision (not wall-clock time: waiting for a core
    /// while other decisions run does not count).
    pub cpu_budget: Duration,
}

impl Default for Limits {
    /// Measured (`measure_bundled_rules` in `sandbox.rs`, figures in `docs/reliability.md`): the
    /// least each limit can be for every bundled case *and* the largest valid request of every
    /// kind (64-item lists, 4,000-character texts) to decide, then doubled or more.
    fn default() -> Self {
        Limits {
            // needs 3,953 (largest requests; 449 for the test cases)
            max_operations: 50_000,
            // needs 2
            max_call_depth: 16,
            // needs 20 and 15
            max_expr_depth: 64,
            max_fn_expr_depth: 32,
            // needs 15,992 bytes: a 4,000-character text fact of four-byte characters, copied
            // to trim it (2,732 for the test cases). Lists of objects from the facts (complaint
            // grounds) reach scripts as typed read-only values and do not count.
            max_data_bytes: 32 * 1024,
            // needs 76
            max_array_size: 256,
            // needs 243 (64 complaint grounds routed, three fields each)
            max_map_size: 512,
            // the most CPU any bundled case takes is about 0.3 ms (debug build)
            cpu_budget: Duration::from_millis(50),
        }
    }
}

/// Whether a termination token is the CPU budget's.
pub(crate) fn is_budget_token(token: &Dynamic) -> bool {
    token.clone().into_string().is_ok_and(|s| s == sandbox::CPU_BUDGET_TOKEN)
}

/// Runs one script evaluation within the limits' CPU budget.
pub(crate) fn run_budgeted<T>(limits: &Limits, f: impl FnOnce() -> T) -> T {
    sandbox::with_cpu_budget(limits.cpu_budget, f)
}

/// Builds the hardened engine every rule set runs on: the sandbox (allow-list and limits). The
/// only place limits are set. The rule set then installs its helpers ([`helpers::register`],
/// [`script_types::register`]).
pub fn build_engine(limits: &Limits) -> Engine {
    let mut engine = sandbox::engine(limits);
    // A script must not catch the error that refuses a missing fact and carry on with a guess.
    engine.disable_symbol("try");
    engine.disable_symbol("catch");
    engine
}

#[cfg(test)]
mod tests;
