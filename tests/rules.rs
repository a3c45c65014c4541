//! Runs every partnership's test cases (`rules/<id>/tests/*.toml`) through the real engine:
//! the same files `cpc-rules test` runs for policy leads.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::path::Path;

use cpc_rules::engine::Limits;
use cpc_rules::store::{build, partnership_ids};

#[test]
fn every_partnership_compiles_checks_and_passes_its_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let ids = partnership_ids(&root).expect("rules folder is readable");
    assert!(ids.iter().any(|id| id == "york"), "York's rules are bundled: {ids:?}");
    let mut failures = Vec::new();
    for id in &ids {
        let b = build(&root, id, &Limits::default());
        for d in &b.diagnostics {
            failures.push(d.one_line());
        }
        for r in b.results.iter().filter(|r| !r.passed()) {
            failures.push(format!("{}:{}: {}: {}", r.case.file, r.case.line, r.case.name, r.mismatches.join("; ")));
        }
        assert!(!b.cases.is_empty() || !b.diagnostics.is_empty(), "{id} has no test cases");
        println!("{id}: {} cases", b.cases.len());
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}
