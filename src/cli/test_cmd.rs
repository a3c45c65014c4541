//! `cpc-rules test`: run each partnership's cases; report one line per mismatch; `--update`.
//!
//! Why this exists: a deliberate rule change can fail many cases at once, and a policy lead
//! needs to see each difference on one line (`file:line: case: outcome: expected X, got Y`),
//! the full story only when asking for it (`-v`), and a way to accept the new answers without
//! editing dates by hand (`--update`, which shows each difference and asks first).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use cpc_rules::cases::{CaseResult, read_case_file};
use cpc_rules::engine::Limits;
use cpc_rules::store::{gate, read_sources};

use super::case_edit;
use super::{Format, OK, RULE_PROBLEMS, USAGE, render, selected};

/// Options of `cpc-rules test`.
pub(super) struct TestOptions {
    /// Output format.
    pub format: Format,
    /// Everything about each failure (facts, expected, the whole decision).
    pub verbose: bool,
    /// Offer to rewrite the expected values of failing cases.
    pub update: bool,
    /// With `update`: rewrite without asking.
    pub yes: bool,
}

/// Runs the cases of the `only` partnerships (all when empty) in `root`.
pub(super) fn run(root: &Path, only: &[String], opts: &TestOptions) -> u8 {
    let ids = match selected(root, only) {
        Ok(ids) => ids,
        Err(e) => return super::usage(e),
    };
    let limits = Limits::default();
    let mut failed = false;
    let mut json = Vec::new();
    let mut to_update: Vec<CaseResult> = Vec::new();
    for id in &ids {
        let sources = match read_sources(root, id) {
            Ok(s) => s,
            Err(diags) => {
                for d in &diags {
                    print!("{}", render::diagnostic(d));
                }
                failed = true;
                continue;
            }
        };
        // Every `[[case]]` counts, well formed or not, so none can silently drop out.
        let total: usize = sources.cases.iter().map(|f| read_case_file(f).total).sum();
        let b = gate(&sources, &limits);
        let passed = b.results.iter().filter(|r| r.passed()).count();
        let failures: Vec<&CaseResult> = b.results.iter().filter(|r| !r.passed()).collect();
        let not_run = total.saturating_sub(b.results.len());
        failed |= !b.diagnostics.is_empty() || !failures.is_empty() || not_run > 0;
        match opts.format {
            Format::Json => json.push(serde_json::json!({
                "partnership": id, "cases": total, "passed": passed, "not_run": not_run,
                "diagnostics": b.diagnostics, "failures": failures,
            })),
            Format::Human => {
                for d in &b.diagnostics {
                    print!("{}", render::diagnostic(d));
                }
                for f in &failures {
                    if opts.verbose {
                        print!("{}", render::case_failure(f));
                    } else if !opts.update {
                        // With --update each failure is shown below as a difference instead.
                        for m in &f.mismatches {
                            println!("{}:{}: {}: {m}", f.case.file, f.case.line, f.case.name);
                        }
                    }
                }
                if b.set.is_none() {
                    println!("✘ {id}: the rules did not compile, so none of its {total} cases ran ({} problem(s) above)", b.diagnostics.len());
                } else if failed_here(&b.diagnostics, &failures, not_run) {
                    let mut parts = vec![format!("{passed} of {total} cases passed")];
                    if !failures.is_empty() {
                        parts.push(format!("{} failed", failures.len()));
                    }
                    if not_run > 0 {
                        parts.push(format!("{not_run} not run (malformed, see above)"));
                    }
                    println!("✘ {id}: {}", parts.join(", "));
                } else {
                    println!("✔ {id}: {passed} of {total} cases passed");
                }
            }
        }
        if opts.update && b.set.is_some() {
            to_update.extend(failures.into_iter().cloned());
        }
    }
    if opts.format == Format::Json {
        println!("{}", serde_json::json!({ "ok": !failed, "partnerships": json }));
    }
    if opts.update {
        return update(root, &to_update, opts.yes, failed);
    }
    if failed {
        if opts.format == Format::Human && !opts.verbose {
            println!("(run with -v for the facts and whole decision of each failure, or --update to accept the new answers)");
        }
        RULE_PROBLEMS
    } else {
        OK
    }
}

fn failed_here(diags: &[cpc_rules::engine::Diagnostic], failures: &[&CaseResult], not_run: usize) -> bool {
    !diags.is_empty() || !failures.is_empty() || not_run > 0
}

/// Shows each failing case's differences and, when confirmed, writes the new expected values.
fn update(root: &Path, failures: &[CaseResult], yes: bool, failed: bool) -> u8 {
    if failures.is_empty() {
        println!("{}", if failed { "nothing to update: fix the problems above first" } else { "nothing to update: every case passes" });
        return if failed { RULE_PROBLEMS } else { OK };
    }
    let mut by_file: BTreeMap<String, Vec<(&CaseResult, Vec<case_edit::Change>)>> = BTreeMap::new();
    let mut manual = 0;
    println!();
    for f in failures {
        let Some(d) = f.decision.as_ref().filter(|_| f.case.expect.invalid_field.is_none()) else {
            println!("{}\n  cannot be updated automatically: {}\n", case_edit::label(&f.case), f.mismatches.join("; "));
            manual += 1;
            continue;
        };
        let changes = case_edit::changes(&f.case.expect, d);
        if changes.is_empty() {
            manual += 1;
            continue;
        }
        println!("{}", case_edit::label(&f.case));
        for c in &changes {
            if let Some(s) = &c.summary {
                println!("  {}: {s}", c.key);
            }
            println!("    - {} = {}", c.key, c.old);
            println!("    + {} = {}", c.key, c.new.to_string().trim());
        }
        by_file.entry(f.case.file.clone()).or_default().push((f, changes));
    }
    let mut stdin = std::io::stdin().lock();
    let mut all = yes;
    let mut updated = 0;
    let mut skipped = 0;
    for (file, cases) in by_file {
        let path = root.join(&file);
        let mut text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return USAGE;
            }
        };
        let mut changed = 0;
        for (f, changes) in cases {
            if !all {
                print!("update `{}` ({}:{})? [y]es / [n]o / [a]ll / [q]uit: ", f.case.name, file, f.case.line);
                let _ = std::io::stdout().flush();
                let mut answer = String::new();
                if stdin.read_line(&mut answer).unwrap_or(0) == 0 {
                    answer = "q".into();
                }
                match answer.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => {}
                    "a" | "all" => all = true,
                    "q" | "quit" => {
                        skipped += 1;
                        break;
                    }
                    _ => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            match case_edit::apply(&text, f.case.index, &changes) {
                Ok(t) => {
                    text = t;
                    changed += 1;
                }
                Err(e) => eprintln!("error: cannot update {}: {e}", case_edit::label(&f.case)),
            }
        }
        if changed > 0 {
            if let Err(e) = std::fs::write(&path, &text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return RULE_PROBLEMS;
            }
            println!("updated {changed} case(s) in {}", path.display());
            updated += changed;
        }
    }
    println!("{updated} case(s) updated, {skipped} skipped, {manual} need a manual fix; run `cpc-rules test` again to confirm");
    if skipped + manual > 0 { RULE_PROBLEMS } else { OK }
}
