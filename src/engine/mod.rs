//! The pure decision core: compiled rule scripts in, decisions out.
//!
//! Nothing here touches files, the network, the clock or gRPC. [`RuleSet::compile`] takes a
//! partnership's sources as text ([`RuleSources`]), compiles every script to an AST once, checks
//! it statically against the vocabulary, and holds the result in memory; [`RuleSet::decide`]
//! validates facts once into typed values, runs the kind's AST on the hardened engine and moves
//! what the script built into a [`crate::model::Decision`] — or an error, never a guess.
//!
//! One room per job: [`sources`] (what a rule set is built from, its revision), [`compile`]
//! (building a rule set), [`check`] (static checks), [`script_types`] (the types scripts read
//! and build), [`result`] (from a script's result or error to the core's answer),
//! [`diagnostics`] (the one diagnostic type), [`helpers`] (the documented helper functions).
//!
//! [`build_engine`] is the one place the Rhai engine is configured: strict variables, limits
//! on operations, call depth, expression depth, string, array and map sizes, a CPU-time budget
//! per decision via `on_progress`, no module loading (so no file access), no `eval`, and
//! `print`/`debug` silenced.

mod check;
mod compile;
pub mod diagnostics;
pub mod helpers;
mod result;
mod ruleset;
pub mod script_types;
pub mod sources;
mod syntax_help;

use std::cell::Cell;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine};

pub use diagnostics::{Diagnostic, Location};
pub use ruleset::{KindInfo, RuleSet};
pub use sources::{ActionCatalogue, Metadata, RuleSources, SourceFile};


/// The limits every script runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most Rhai operations one decision may take.
    pub max_operations: u64,
    /// Deepest function-call nesting.
    pub max_call_depth: usize,
    /// Deepest expression nesting at global level.
    pub max_expr_depth: usize,
    /// Deepest expression nesting inside functions.
    pub max_fn_expr_depth: usize,
    /// Longest string a script may build (bytes).
    pub max_string_size: usize,
    /// Largest array a script may build.
    pub max_array_size: usize,
    /// Largest map a script may build.
    pub max_map_size: usize,
    /// Budget for one decision.
    pub cpu_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 200_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_fn_expr_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 1024,
            max_map_size: 256,
            cpu_budget: Duration::from_millis(50),
        }
    }
}

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The value a script's evaluation is terminated with when its wall-clock budget runs out.
pub(crate) const TIMEOUT_TOKEN: &str = "cpc-rules: time budget exceeded";

/// Whether a termination token is the budget's.
pub(crate) fn is_budget_token(token: &Dynamic) -> bool {
    token.clone().into_string().is_ok_and(|s| s == TIMEOUT_TOKEN)
}

/// Runs one script evaluation within the limits' budget.
pub(crate) fn run_budgeted<T>(limits: &Limits, f: impl FnOnce() -> T) -> T {
    with_deadline(limits.cpu_budget, f)
}

/// Runs `f` with the current thread's script deadline set to `budget` from now.
fn with_deadline<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let previous = DEADLINE.with(|d| d.replace(Instant::now().checked_add(budget)));
    let _reset = Reset(previous);
    f()
}

/// Builds the hardened engine every rule set runs on. The only place limits are set. The rule
/// set then installs its helpers ([`helpers::register`], [`script_types::register`]).
pub fn build_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_strict_variables(true)
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_fn_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(256)
        .set_max_functions(256)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .on_print(|_| {})
        .on_debug(|_, _, _| {})
        // No string interner: with `sync`, Rhai guards it with a lock every thread running this
        // engine takes, and a thread that finds it held sleeps 10 ms (see docs/performance.md).
        .set_max_strings_interned(0);
    engine.disable_symbol("eval");
    // A script must not catch the error that refuses a missing fact and carry on with a guess.
    engine.disable_symbol("try");
    engine.disable_symbol("catch");
    engine.on_progress(|ops| {
        // Checking the clock every 128 operations keeps the cost negligible.
        if ops % 128 != 0 {
            return None;
        }
        match DEADLINE.with(Cell::get) {
            Some(deadline) if Instant::now() >= deadline => Some(Dynamic::from(TIMEOUT_TOKEN)),
            _ => None,
        }
    });
    engine
}

#[cfg(test)]
mod tests;
