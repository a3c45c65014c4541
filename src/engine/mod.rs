//! The pure decision core: compiled rule scripts in, decisions out.
//!
//! Nothing here touches files, the network or gRPC. [`RuleSet::compile`] takes a partnership's
//! sources as text (see [`RuleSources`]), compiles every script to an AST once, checks it
//! statically, and holds the result in memory; [`RuleSet::decide`] validates facts, runs the
//! kind's AST on the hardened engine and turns what the script returns into a
//! [`crate::model::Decision`] — or an error, never a guess.
//!
//! [`build_engine`] is the one place the Rhai engine is configured: the allow-listed language and
//! the limits of [`sandbox`] (operations, CPU time of the running thread, one data limit in
//! bytes, call and expression depth), then the rule helpers. No module loading (so no file
//! access), no `eval`, and `print`/`debug` silenced.

pub mod helpers;
mod ruleset;
pub mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use rhai::Engine;

pub use ruleset::{
    ActionCatalogue, Diagnostic, DiagnosticSeverity, KindInfo, Metadata, RuleSet, RuleSources,
    SourceFile, to_dynamic,
};

use crate::calendar::Calendar;

pub(crate) use sandbox::{CPU_BUDGET_TOKEN, with_cpu_budget};

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
    pub time_budget: Duration,
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
            // to trim it (2,732 for the test cases)
            max_data_bytes: 32 * 1024,
            // needs 76
            max_array_size: 256,
            // needs 243 (64 complaint grounds routed, three fields each)
            max_map_size: 512,
            // the most CPU any bundled case takes is about 0.3 ms (debug build)
            time_budget: Duration::from_millis(50),
        }
    }
}

/// Builds the hardened engine every rule set runs on: the sandbox (allow-list and limits), then
/// the rule helpers. The only place limits are set.
pub fn build_engine(limits: &Limits, calendar: Arc<Calendar>) -> Engine {
    let mut engine = sandbox::engine(limits);
    helpers::register(&mut engine, calendar);
    engine
}

#[cfg(test)]
mod tests;
