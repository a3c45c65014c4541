//! A profiling helper, not a benchmark: makes one representative decision in a loop so a
//! profiler or an instruction counter sees nothing else.
//!
//! Criterion's figures move with the load of a shared machine; instruction counts do not. So
//! the hot path is studied with this loop under `perf record` or `valgrind --tool=callgrind`:
//!
//! ```text
//! cargo bench -p cpc-rules-bench --bench profile --no-run      # prints the binary's path
//! valgrind --tool=callgrind <binary> york plan_type 2000
//! perf record -g <binary> york plan_type 200000
//! ```
//!
//! Arguments: partnership (or `all`), kind (or `all`), iterations (default 10,000). It prints
//! the wall-clock time per decision, which is only indicative.

mod common;

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    let only_id = args.first().cloned().unwrap_or_else(|| "all".into());
    let only_kind = args.get(1).cloned().unwrap_or_else(|| "all".into());
    let iterations: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rules = common::load_rules();
    let mut reqs = Vec::new();
    for id in rules.store.ids() {
        if only_id != "all" && only_id != id {
            continue;
        }
        let loaded = rules.store.get(&id).expect("live set");
        for (kind, case) in common::representatives(&rules.root, &loaded.set) {
            if only_kind == "all" || only_kind == kind {
                reqs.push(common::request(&id, &case));
            }
        }
    }
    assert!(!reqs.is_empty(), "no representative case for {only_id}/{only_kind}");
    let t = Instant::now();
    let mut failed = 0usize;
    for i in 0..iterations {
        let req = &reqs[i % reqs.len()];
        if black_box(rules.store.decide(black_box(req))).is_err() {
            failed += 1;
        }
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!("{iterations} decisions over {} request(s): {per:.2} µs per decision, {failed} failed", reqs.len());
}
