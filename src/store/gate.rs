//! The gate a rule set passes before it may go live: compile, check, and run every test case.
//!
//! Pure: it takes sources already read ([`RuleSources`]) and returns a [`Build`], so the CLI's
//! `check` and `test`, the store's reload and the tests all apply exactly the same gate, under
//! the same limits.

use super::Build;
use crate::cases::{check_cases, read_case_file, run_case};
use crate::engine::{Limits, RuleSet, RuleSources};

/// Compiles `sources`, and when they compile, runs every test case against them.
pub fn gate(sources: &RuleSources, limits: &Limits) -> Build {
    let mut diagnostics = Vec::new();
    let mut cases = Vec::new();
    for f in &sources.cases {
        let file = read_case_file(f);
        cases.extend(file.cases);
        diagnostics.extend(file.problems);
    }
    match RuleSet::compile(sources, limits) {
        Ok(set) => {
            // A case asking for a kind or outcome the rules do not have is refused before any runs.
            let (runnable, problems) = check_cases(&set, cases, &sources.cases);
            diagnostics.extend(problems);
            let cases = runnable;
            let results = cases.iter().map(|c| run_case(&set, c)).collect();
            Build { id: sources.id.clone(), set: Some(set), diagnostics, results, cases, sources: None }
        }
        Err(d) => {
            diagnostics.extend(d);
            Build { id: sources.id.clone(), set: None, diagnostics, results: Vec::new(), cases, sources: None }
        }
    }
}
