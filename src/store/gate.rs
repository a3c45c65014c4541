//! The gate a rule set passes before it may go live: compile, check, and run every test case.
//!
//! Pure: it takes sources already read ([`RuleSources`]) and returns a [`Build`], so the CLI's
//! `check` and `test`, the store's reload and the tests all apply exactly the same gate, under
//! the same limits.

use super::Build;
use crate::cases::{parse_cases, run_case};
use crate::engine::{Limits, RuleSet, RuleSources};

/// Compiles `sources`, and when they compile, runs every test case against them.
pub fn gate(sources: &RuleSources, limits: &Limits) -> Build {
    let mut diagnostics = Vec::new();
    let mut cases = Vec::new();
    for f in &sources.cases {
        match parse_cases(f) {
            Ok(c) => cases.extend(c),
            Err(d) => diagnostics.extend(d),
        }
    }
    match RuleSet::compile(sources, limits) {
        Ok(set) => {
            let results = cases.iter().map(|c| run_case(&set, c)).collect();
            Build { id: sources.id.clone(), set: Some(set), diagnostics, results, cases }
        }
        Err(d) => {
            diagnostics.extend(d);
            Build { id: sources.id.clone(), set: None, diagnostics, results: Vec::new(), cases }
        }
    }
}
