//! The script sandbox: an allow-listed language and a budget that does not depend on load.
//!
//! Rule scripts are untrusted: anyone with write access to the rules folder can edit one. So the
//! engine is built from [`Engine::new_raw`] — no standard packages at all — and given back only
//! what the bundled rules use ([`ALLOWED`]): operators, string interpolation, `for` over lists,
//! and a handful of methods (`push`, `len`, `is_empty`, `contains`, `trim`, `to_string`). Nothing
//! that can make a large value out of a small one (`replace`, `pad`, `*` on strings, `split`,
//! `join`, ranges, …) exists, and every allowed function whose output can grow checks the limit
//! *before* it allocates.
//!
//! **One data limit.** Every value a decision builds is measured in bytes by [`data_size`]:
//! string bytes, map keys, and a fixed cost per list element and map entry, nested values
//! included. No value may exceed [`Limits::max_data_bytes`]. Rhai's own checks on literals and
//! operators use the same number for strings; map keys can only come from the script's source
//! text (indexing `x[…]` is not part of the language, see [`check_ast`]) or from the caller's
//! facts, so nothing a script runs can make an unbounded key.
//!
//! **A budget that does not depend on load.** A decision may take [`Limits::max_operations`]
//! Rhai operations (deterministic) and [`Limits::cpu_budget`] of CPU time *of the thread
//! running it* (`CLOCK_THREAD_CPUTIME_ID`), checked from `on_progress`. Time spent waiting for a
//! core while other decisions run does not count, so a script that needs 40 ms decides the same
//! alone or with eight others. Wall-clock time is only the caller's deadline, at the gRPC edge.

use std::cell::Cell;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use super::Limits;
use super::diagnostics::Diagnostic;
use super::sources::SourceFile;

/// Bytes charged for each list element or map entry, on top of its contents (the size of a
/// Rhai value).
pub const ENTRY_BYTES: usize = std::mem::size_of::<Dynamic>();

/// The value a script's evaluation is terminated with when its CPU budget runs out.
pub(crate) const CPU_BUDGET_TOKEN: &str = "cpc-rules: CPU budget exceeded";

/// One entry of the allow-list: what scripts may use beyond the helpers.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// The syntax or method as a script writes it.
    pub name: &'static str,
    /// What it does and how it is bounded.
    pub doc: &'static str,
    /// The native functions it registers (checked against the engine by a test).
    pub functions: &'static [&'static str],
}

/// Everything a script may use besides the helpers of [`super::helpers::HELPERS`] and the
/// functions in `rules/shared/`. Anything else is refused when the rules are checked.
pub const ALLOWED: &[Allowed] = &[
    Allowed { name: "let, const, if/else, switch, while, loop, for … in list, fn, return", doc: "Statements. `for` runs over lists only; every statement counts against the operation budget.", functions: &[] },
    Allowed { name: "`+ - * / %`, `== != < <= > >=`, `&&`, `\\|\\|`, `!`, `+= -=`", doc: "Operators on whole numbers, decimals, booleans and text. Joining text with `+`/`+=` is refused *before* the result is built if it would pass the data limit.", functions: &[] },
    Allowed { name: "`\"…${value}…\"` (back-ticks)", doc: "String interpolation; the text is checked against the data limit after each piece.", functions: &[] },
    Allowed { name: "`[a, b]`, `#{ key: value }`, `x.field`, `x.field = v`", doc: "List and map literals and field access. Map keys are written in the script; indexing `x[…]` is not part of the language.", functions: &[] },
    Allowed { name: "`x in list`, `\"name\" in map`, `\"part\" in text`", doc: "Membership (`contains`).", functions: &[] },
    Allowed { name: "list + list", doc: "A new list of both lists' elements; refused before it is built if it would pass the element or data limit.", functions: &["+"] },
    Allowed { name: "list.push(value)", doc: "Appends to a list; refused before appending if the list would pass the element or data limit.", functions: &["push"] },
    Allowed { name: "list.len(), text.len(), map.len()", doc: "Number of elements, bytes or entries.", functions: &["len"] },
    Allowed { name: "list.is_empty(), text.is_empty(), map.is_empty()", doc: "Whether there is nothing in it.", functions: &["is_empty"] },
    Allowed { name: "list.contains(v), map.contains(key), text.contains(part)", doc: "Membership.", functions: &["contains"] },
    Allowed { name: "text.trim()", doc: "Removes surrounding spaces in place (returns nothing).", functions: &["trim"] },
    Allowed { name: "to_string(value), to_debug(value)", doc: "Text of a value; refused before it is built if it would pass the data limit.", functions: &["to_string", "to_debug"] },
    Allowed { name: "type_of(value), throw", doc: "Rhai intrinsics.", functions: &[] },
];

/// The allow-list as Markdown, for `docs/helpers.md` (appended after the helpers).
pub fn allow_list_markdown(limits: &Limits) -> String {
    let mut s = String::from(
        "## The script language (allow-list)\n\n\
         Scripts run on an engine built from Rhai's raw engine with only what the bundled rules use. \
         Anything not listed here or under Helpers is refused when the rules are checked.\n\n\
         | what | notes |\n|---|---|\n",
    );
    for a in ALLOWED {
        s.push_str(&format!("| {} | {} |\n", a.name, a.doc));
    }
    s.push_str(&format!(
        "\n### Limits (per decision)\n\n\
         | limit | default |\n|---|---|\n\
         | operations | {} |\n| CPU time of the thread running the script | {} ms |\n\
         | data: bytes of any value a script builds (text, map keys and values, {ENTRY_BYTES} bytes per list element or map entry, nested) | {} |\n\
         | list elements (nested included) | {} |\n| map entries (nested included) | {} |\n\
         | function-call depth | {} |\n| expression depth (top level / in functions) | {} / {} |\n\n",
        limits.max_operations,
        limits.cpu_budget.as_millis(),
        limits.max_data_bytes,
        limits.max_array_size,
        limits.max_map_size,
        limits.max_call_depth,
        limits.max_expr_depth,
        limits.max_fn_expr_depth,
    ));
    s
}

/// Bytes a value occupies by the data limit's measure: text bytes, map keys, and
/// [`ENTRY_BYTES`] per list element or map entry, nested values included.
pub fn data_size(v: &Dynamic) -> usize {
    if let Ok(s) = v.as_immutable_string_ref() {
        return s.len();
    }
    if let Ok(a) = v.as_array_ref() {
        return a.iter().map(|e| ENTRY_BYTES + data_size(e)).sum();
    }
    if let Ok(m) = v.as_map_ref() {
        return map_size(&m);
    }
    0
}

fn map_size(m: &Map) -> usize {
    m.iter().map(|(k, v)| ENTRY_BYTES + k.len() + data_size(v)).sum()
}

fn too_large(limits_bytes: usize, what: &str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge(format!("{what} would pass the data limit of {limits_bytes} bytes"), Position::NONE).into()
}

fn over_limit(max_bytes: usize) -> ImmutableString {
    " ".repeat(max_bytes.saturating_add(1)).into()
}

fn dyn_eq(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Ok(x), Ok(y)) = (a.as_immutable_string_ref(), b.as_immutable_string_ref()) {
        return *x == *y;
    }
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_float(), b.as_float()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_char(), b.as_char()) {
        return x == y;
    }
    if a.is_unit() && b.is_unit() {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| dyn_eq(p, q));
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        return x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| dyn_eq(v, w)));
    }
    false
}

thread_local! {
    /// Thread CPU time at which the running decision must stop.
    static CPU_DEADLINE: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// CPU time used so far by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on every
    // platform the service runs on (Linux, macOS).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Runs `f` with the current thread's script CPU budget set to `budget` of this thread's CPU
/// time from now (restored afterwards, so nested runs are safe).
pub(crate) fn with_cpu_budget<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Duration>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CPU_DEADLINE.with(|d| d.set(self.0));
        }
    }
    let previous = CPU_DEADLINE.with(|d| d.replace(thread_cpu_time().checked_add(budget)));
    let _reset = Reset(previous);
    f()
}

/// Builds the sandboxed engine: the raw engine, the limits, the CPU budget and the allow-list.
/// The rule helpers are registered by the caller ([`super::build_engine`]).
pub fn engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine
        .set_strict_variables(true)
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_fn_expr_depth)
        // Rhai's own checks (literals, operators, interpolation, assignments) count text bytes
        // of a whole value, nested included: the same number as the data limit.
        .set_max_string_size(limits.max_data_bytes)
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
    engine.on_progress(|ops| {
        // Reading the thread's CPU clock every 256 operations keeps the cost negligible.
        if ops % 256 != 0 {
            return None;
        }
        match CPU_DEADLINE.with(Cell::get) {
            Some(deadline) if thread_cpu_time() >= deadline => Some(Dynamic::from(CPU_BUDGET_TOKEN)),
            _ => None,
        }
    });
    register_allowed(&mut engine, limits);
    engine
}

fn register_allowed(engine: &mut Engine, limits: &Limits) {
    engine.register_iterator::<Array>();

    let (max_bytes, max_items) = (limits.max_data_bytes, limits.max_array_size);
    engine.register_fn("push", move |list: &mut Array, item: Dynamic| -> Result<(), Box<EvalAltResult>> {
        if list.len() + 1 > max_items {
            return Err(EvalAltResult::ErrorDataTooLarge(format!("a list would pass the limit of {max_items} elements"), Position::NONE).into());
        }
        let size = list.iter().map(|e| ENTRY_BYTES + data_size(e)).sum::<usize>() + ENTRY_BYTES + data_size(&item);
        if size > max_bytes {
            return Err(too_large(max_bytes, "a list"));
        }
        list.push(item);
        Ok(())
    });

    // Joining two lists: refused before the new list is built if it would pass a limit.
    engine.register_fn("+", move |a: Array, b: Array| -> Result<Array, Box<EvalAltResult>> {
        if a.len() + b.len() > max_items {
            return Err(EvalAltResult::ErrorDataTooLarge(format!("a list would pass the limit of {max_items} elements"), Position::NONE).into());
        }
        let size = a.iter().chain(&b).map(|e| ENTRY_BYTES + data_size(e)).sum::<usize>();
        if size > max_bytes {
            return Err(too_large(max_bytes, "a list"));
        }
        let mut out = a;
        out.extend(b);
        Ok(out)
    });
    engine.register_fn("len", |list: &mut Array| list.len() as i64);
    engine.register_fn("len", |text: &mut ImmutableString| text.len() as i64);
    engine.register_fn("len", |map: &mut Map| map.len() as i64);
    engine.register_fn("is_empty", |list: &mut Array| list.is_empty());
    engine.register_fn("is_empty", |text: &mut ImmutableString| text.is_empty());
    engine.register_fn("is_empty", |map: &mut Map| map.is_empty());
    engine.register_fn("contains", |list: &mut Array, item: Dynamic| list.iter().any(|e| dyn_eq(e, &item)));
    engine.register_fn("contains", |map: &mut Map, key: ImmutableString| map.contains_key(key.as_str()));
    engine.register_fn("contains", |text: &mut ImmutableString, part: ImmutableString| text.contains(part.as_str()));
    engine.register_fn("contains", |text: &mut ImmutableString, c: char| text.contains(c));
    engine.register_fn("trim", |text: &mut ImmutableString| {
        let trimmed = text.trim();
        if trimmed.len() != text.len() {
            *text = trimmed.to_string().into();
        }
    });

    // Text of a list or map: the largest it can be is bounded from its data size before it is
    // built (quotes, escapes and separators at most multiply text by 6 and add 8 per entry).
    // Past the limit the answer is a text just over it, which Rhai's own check refuses wherever
    // it lands: an error here would make string interpolation fall back to formatting the whole
    // value anyway.
    for name in ["to_string", "to_debug"] {
        engine.register_fn(name, move |list: &mut Array| -> Result<ImmutableString, Box<EvalAltResult>> {
            let bound = list.iter().map(|e| 8 + 6 * data_size(e)).sum::<usize>() + 2;
            if bound > max_bytes {
                return Ok(over_limit(max_bytes));
            }
            Ok(format!("{:?}", Dynamic::from_array(list.clone())).into())
        });
        engine.register_fn(name, move |map: &mut Map| -> Result<ImmutableString, Box<EvalAltResult>> {
            let bound = map.iter().map(|(k, v)| 8 + 6 * k.len() + 6 * data_size(v)).sum::<usize>() + 3;
            if bound > max_bytes {
                return Ok(over_limit(max_bytes));
            }
            Ok(format!("{:?}", Dynamic::from_map(map.clone())).into())
        });
        engine.register_fn(name, |text: &mut ImmutableString| text.clone());
        engine.register_fn(name, |n: i64| n.to_string());
        engine.register_fn(name, |b: bool| b.to_string());
        engine.register_fn(name, |x: f64| x.to_string());
    }
}

/// Static checks of the language itself: refuses syntax outside the allow-list that the engine
/// cannot switch off on its own — indexing `x[…]` (the one way a script could make a map key out
/// of data rather than source text).
pub fn check_ast(file: &SourceFile, ast: &rhai::AST) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    ast.walk(&mut |nodes: &[rhai::ASTNode]| {
        if let Some(rhai::ASTNode::Expr(rhai::Expr::Index(_, _, pos))) = nodes.last() {
            out.push(
                Diagnostic::rhai("not-allowed", file, *pos, "indexing (`x[…]`) is not part of the rules language")
                    .with_help("loop over a list with `for x in list`, test membership with `in`, and read map fields with `map.field`"),
            );
        }
        true
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_size_counts_keys_and_nesting() {
        let mut m = Map::new();
        m.insert("k".repeat(100).into(), Dynamic::from("vv"));
        let v = Dynamic::from_array(vec![Dynamic::from_map(m), Dynamic::from(1_i64)]);
        assert_eq!(data_size(&v), ENTRY_BYTES + (ENTRY_BYTES + 100 + 2) + ENTRY_BYTES);
    }

    #[test]
    fn thread_cpu_time_moves_forward_with_work_not_sleep() {
        let t0 = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - t0;
        assert!(slept < Duration::from_millis(25), "sleep counted as CPU: {slept:?}");
    }

    fn largest(ty: &crate::vocabulary::FactType, flag: bool, i: usize) -> serde_json::Value {
        use crate::vocabulary::FactType;
        use serde_json::json;
        match ty {
            FactType::Bool => json!(flag),
            FactType::Int { min, max } => json!(if flag { *max } else { *min }),
            FactType::Date => json!(if flag { "2026-06-15" } else { "2026-01-05" }),
            // Surrounding spaces make `trim` build a copy; four-byte characters make it largest.
            FactType::Text { max_len } => json!(format!(" {} ", "\u{1D11E}".repeat(max_len - 2))),
            FactType::Code(list) => json!(list.values[i % list.values.len()].code),
            FactType::List { item, max_items } => serde_json::Value::Array((0..*max_items).map(|j| largest(item, flag, j)).collect()),
            FactType::Object(fields) => fields.iter().map(|f| (f.name.clone(), largest(&f.ty, flag, i))).collect::<serde_json::Map<_, _>>().into(),
        }
    }

    /// Decides the largest valid requests of every kind with every partnership under `limits`:
    /// how many were decided, and the first limit hit, if any.
    fn largest_requests(limits: &Limits) -> (usize, Option<String>) {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
        let mut decided = 0;
        for id in crate::store::partnership_ids(root).expect("rules folder") {
            let Some(set) = crate::store::build(root, &id, &Limits { cpu_budget: Duration::from_secs(60), ..limits.clone() }).set else {
                return (decided, Some(format!("{id} does not compile")));
            };
            for kind in crate::facts::Kind::ALL {
                for flag in [true, false] {
                    for i in 0..8 {
                        let Some(schema) = set.vocabulary().kind(kind.as_str()) else { continue };
                        let facts: serde_json::Map<String, serde_json::Value> =
                            schema.facts.iter().map(|f| (f.name.clone(), largest(&f.ty, flag, i))).collect();
                        let req = crate::model::DecisionRequest {
                            partnership: id.clone(),
                            kind: kind.as_str().to_string(),
                            facts: serde_json::Value::Object(facts),
                            today: crate::cases::CASE_TODAY,
                        };
                        let result = set.decide(&req);
                        decided += usize::from(result.is_ok());
                        if let Err(crate::error::DecisionError::Script { failure, message, location }) = result {
                            if matches!(failure, crate::error::ScriptFailure::Limit | crate::error::ScriptFailure::Timeout) {
                                return (decided, Some(format!("{id}/{}: {location}: {message}", kind.as_str())));
                            }
                        }
                    }
                }
            }
        }
        (decided, None)
    }

    /// The largest facts a caller may send never run a bundled rule into a limit: the defaults
    /// leave room for every valid request, not just the test cases.
    #[test]
    fn the_largest_valid_facts_decide_within_the_default_limits() {
        let (decided, hit) = largest_requests(&Limits::default());
        assert_eq!(hit, None);
        assert!(decided > 100, "only {decided} of the largest requests were decided");
    }

    /// Measures what the bundled rules need: for each limit, the smallest value with which every
    /// partnership still compiles and passes every case; and the most CPU one decision takes.
    /// `cargo test --release --lib measure_bundled_rules -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run by hand; figures go in docs/reliability.md"]
    fn measure_bundled_rules() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
        let ids = crate::store::partnership_ids(root).expect("rules folder");
        let all_pass = |limits: &Limits| ids.iter().all(|id| crate::store::build(root, id, limits).ok()) && largest_requests(limits).1.is_none();
        let huge = Limits {
            max_operations: 1 << 40,
            max_call_depth: 1000,
            max_expr_depth: 1000,
            max_fn_expr_depth: 1000,
            max_data_bytes: 1 << 30,
            max_array_size: 1 << 20,
            max_map_size: 1 << 20,
            cpu_budget: Duration::from_secs(60),
        };
        assert!(all_pass(&huge));
        let smallest = |name: &str, set: &dyn Fn(&mut Limits, u64)| {
            let (mut lo, mut hi) = (0_u64, 1_u64 << 30);
            while lo + 1 < hi {
                let mid = lo + (hi - lo) / 2;
                let mut l = huge.clone();
                set(&mut l, mid);
                if all_pass(&l) { hi = mid } else { lo = mid }
            }
            println!("{name}: {hi}");
        };
        smallest("max_operations", &|l, v| l.max_operations = v);
        smallest("max_data_bytes", &|l, v| l.max_data_bytes = v as usize);
        smallest("max_array_size", &|l, v| l.max_array_size = v as usize);
        smallest("max_map_size", &|l, v| l.max_map_size = v as usize);
        smallest("max_call_depth", &|l, v| l.max_call_depth = v as usize);
        smallest("max_expr_depth", &|l, v| l.max_expr_depth = v as usize);
        smallest("max_fn_expr_depth", &|l, v| l.max_fn_expr_depth = v as usize);
        let mut worst = (Duration::ZERO, String::new());
        for id in &ids {
            let b = crate::store::build(root, id, &huge);
            let set = b.set.expect("compiles");
            for c in &b.cases {
                for _ in 0..5 {
                    let t0 = thread_cpu_time();
                    let _ = set.decide(&crate::model::DecisionRequest { partnership: id.clone(), kind: c.kind.clone(), facts: c.facts.clone(), today: c.today });
                    let t = thread_cpu_time() - t0;
                    if t > worst.0 {
                        worst = (t, format!("{}:{}", c.file, c.line));
                    }
                }
            }
        }
        println!("most CPU per decision: {:?} ({})", worst.0, worst.1);
    }
}
