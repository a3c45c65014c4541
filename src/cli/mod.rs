//! Command-line interface: argument parsing and human/JSON output.
//!
//! Policy leads are the main readers of this output, so every problem is printed with its file,
//! line, column, the offending source line and a hint; `--format json` / `--json` gives the same
//! information to machines. Exit codes: 0 success, 1 rule problems (a check error, a failing
//! case, a refused decision), 2 usage errors (bad arguments, unreadable facts).

mod render;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use cpc_rules::engine::Limits;
use cpc_rules::facts::Kind;
use std::sync::Arc;

use cpc_rules::grpc::server::ServerOptions;
use cpc_rules::store::{RuleStore, build, partnership_ids, watch};

/// Exit code: everything passed.
const OK: u8 = 0;
/// Exit code: the rules have problems (or a decision was refused).
const RULE_PROBLEMS: u8 = 1;
/// Exit code: the command was used wrongly.
const USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "cpc-rules", version, about = "Child protection conference decisions from each partnership's published rules")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
enum Format {
    #[default]
    Human,
    Json,
}

#[derive(clap::Args, Clone)]
struct RulesArg {
    /// The rules folder.
    #[arg(long, env = "CPC_RULES", default_value = "rules")]
    rules: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve decisions over gRPC (the default command).
    Serve(ServeArgs),
    /// Compile and check every script; report all problems.
    Check {
        #[command(flatten)]
        rules: RulesArg,
        /// Only these partnerships (default: all).
        partnerships: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run each partnership's test cases.
    Test {
        #[command(flatten)]
        rules: RulesArg,
        /// Only these partnerships (default: all).
        partnerships: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Make one decision from a facts file (JSON object; `-` or nothing for standard input).
    Eval {
        #[command(flatten)]
        rules: RulesArg,
        /// Partnership id.
        #[arg(long, short)]
        partnership: String,
        /// Decision kind.
        #[arg(long, short)]
        kind: String,
        /// Facts file (JSON), or `-` for standard input.
        facts: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show each partnership's outcome and first reason for the same facts, side by side.
    Compare {
        #[command(flatten)]
        rules: RulesArg,
        /// Decision kind.
        #[arg(long, short)]
        kind: String,
        /// Facts file (JSON), or `-` for standard input.
        facts: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the reference of helpers scripts can call (Markdown).
    Helpers,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CPC_ADDR", default_value = "127.0.0.1:50051")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    rules: RulesArg,
    /// Wall-clock budget per decision.
    #[arg(long, env = "CPC_DECISION_BUDGET", default_value = "50ms", value_parser = humantime::parse_duration)]
    decision_budget: std::time::Duration,
    /// Do not watch the rules folder (reload only on SIGHUP or ReloadRules).
    #[arg(long, env = "CPC_NO_WATCH")]
    no_watch: bool,
    /// Quiet time after a file change before reloading.
    #[arg(long, env = "CPC_RELOAD_DEBOUNCE", default_value = "250ms", value_parser = humantime::parse_duration)]
    debounce: std::time::Duration,
    /// Log format.
    #[arg(long, env = "CPC_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum, Default)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { OK });
        }
    };
    let command = cli.command.unwrap_or_else(|| {
        Command::Serve(ServeArgs::parse_from_env())
    });
    let code = match command {
        Command::Serve(args) => serve(args),
        Command::Check { rules, partnerships, format } => check(&rules.rules, &partnerships, format),
        Command::Test { rules, partnerships, format } => test(&rules.rules, &partnerships, format),
        Command::Eval { rules, partnership, kind, facts, json } => eval(&rules.rules, &partnership, &kind, facts.as_deref(), json),
        Command::Compare { rules, kind, facts, json } => compare(&rules.rules, &kind, facts.as_deref(), json),
        Command::Helpers => {
            print!("{}", render::helpers_markdown());
            OK
        }
    };
    ExitCode::from(code)
}

impl ServeArgs {
    fn parse_from_env() -> ServeArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        Only::parse_from(["cpc-rules"]).args
    }
}

fn selected(root: &Path, only: &[String]) -> Result<Vec<String>, String> {
    let all = partnership_ids(root).map_err(|e| format!("cannot read rules folder {}: {e}", root.display()))?;
    if all.is_empty() {
        return Err(format!("no partnership folders (with a partnership.toml) in {}", root.display()));
    }
    for p in only {
        if !all.contains(p) {
            let hint = cpc_rules::suggest::did_you_mean(p, all.iter().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!("unknown partnership `{p}`{hint}; known: {}", all.join(", ")));
        }
    }
    Ok(if only.is_empty() { all } else { only.to_vec() })
}

fn usage(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    USAGE
}

fn check(root: &Path, only: &[String], format: Format) -> u8 {
    let ids = match selected(root, only) {
        Ok(ids) => ids,
        Err(e) => return usage(e),
    };
    let limits = Limits::default();
    let mut all = Vec::new();
    let mut summary = Vec::new();
    for id in &ids {
        let b = build(root, id, &limits);
        summary.push((id.clone(), b.diagnostics.len(), b.set.as_ref().map(|s| s.revision().to_string())));
        all.extend(b.diagnostics);
    }
    match format {
        Format::Json => println!("{}", serde_json::json!({ "ok": all.is_empty(), "diagnostics": all, "partnerships": summary.iter().map(|(id, n, rev)| serde_json::json!({"id": id, "problems": n, "revision": rev})).collect::<Vec<_>>() })),
        Format::Human => {
            for d in &all {
                print!("{}", render::diagnostic(d));
            }
            for (id, n, rev) in &summary {
                match (n, rev) {
                    (0, Some(rev)) => println!("✔ {id}: no problems (revision {rev})"),
                    _ => println!("✘ {id}: {n} problem(s)"),
                }
            }
        }
    }
    if all.is_empty() { OK } else { RULE_PROBLEMS }
}

fn test(root: &Path, only: &[String], format: Format) -> u8 {
    let ids = match selected(root, only) {
        Ok(ids) => ids,
        Err(e) => return usage(e),
    };
    let limits = Limits::default();
    let mut failed = false;
    let mut json = Vec::new();
    for id in &ids {
        let b = build(root, id, &limits);
        let passed = b.results.iter().filter(|r| r.passed()).count();
        let failures: Vec<_> = b.results.iter().filter(|r| !r.passed()).collect();
        failed |= !b.diagnostics.is_empty() || !failures.is_empty();
        match format {
            Format::Json => json.push(serde_json::json!({
                "partnership": id, "cases": b.cases.len(), "passed": passed,
                "diagnostics": b.diagnostics, "failures": failures,
            })),
            Format::Human => {
                for d in &b.diagnostics {
                    print!("{}", render::diagnostic(d));
                }
                for f in &failures {
                    print!("{}", render::case_failure(f));
                }
                if b.set.is_none() {
                    println!("✘ {id}: the rules did not compile, so no case ran ({} problem(s) above)\n", b.diagnostics.len());
                } else if failures.is_empty() && b.diagnostics.is_empty() {
                    println!("✔ {id}: {passed} of {} cases passed", b.cases.len());
                } else {
                    println!("✘ {id}: {passed} of {} cases passed, {} failed", b.cases.len(), failures.len());
                }
            }
        }
    }
    if format == Format::Json {
        println!("{}", serde_json::json!({ "ok": !failed, "partnerships": json }));
    }
    if failed { RULE_PROBLEMS } else { OK }
}

fn read_facts(path: Option<&Path>) -> Result<serde_json::Value, String> {
    let text = match path {
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| format!("cannot read facts from standard input: {e}"))?;
            s
        }
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| format!("cannot read facts from standard input: {e}"))?;
            s
        }
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
    };
    serde_json::from_str(&text).map_err(|e| format!("facts are not valid JSON: {e}"))
}

fn eval(root: &Path, partnership: &str, kind: &str, facts: Option<&Path>, json: bool) -> u8 {
    let ids = match selected(root, &[partnership.to_string()]) {
        Ok(ids) => ids,
        Err(e) => return usage(e),
    };
    let facts = match read_facts(facts) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let b = build(root, &ids[0], &Limits::default());
    let Some(set) = b.set else {
        for d in &b.diagnostics {
            eprint!("{}", render::diagnostic(d));
        }
        return RULE_PROBLEMS;
    };
    match set.decide(kind, &facts) {
        Ok(d) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
            } else {
                print!("{}", render::decision(&d));
            }
            OK
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e.to_string(), "violations": e.violations() }));
            } else {
                eprintln!("no decision: {e}");
            }
            RULE_PROBLEMS
        }
    }
}

fn compare(root: &Path, kind: &str, facts: Option<&Path>, json: bool) -> u8 {
    if Kind::parse(kind).is_none() {
        let hint = cpc_rules::suggest::did_you_mean(kind, Kind::ALL.iter().map(|k| k.as_str())).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
        return usage(format!("unknown kind `{kind}`{hint}"));
    }
    let ids = match selected(root, &[]) {
        Ok(ids) => ids,
        Err(e) => return usage(e),
    };
    let facts = match read_facts(facts) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let limits = Limits::default();
    let mut rows = Vec::new();
    let mut any_error = false;
    for id in &ids {
        let b = build(root, id, &limits);
        let row = match b.set.as_ref().map(|s| s.decide(kind, &facts)) {
            None => render::CompareRow::error(id, "rules did not compile; run `cpc-rules check`"),
            Some(Ok(d)) => render::CompareRow::decision(&d),
            Some(Err(e)) => render::CompareRow::error(id, &e.to_string()),
        };
        any_error |= row.error.is_some();
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        print!("{}", render::compare_table(kind, &rows));
    }
    if any_error { RULE_PROBLEMS } else { OK }
}

fn serve(args: ServeArgs) -> u8 {
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return RULE_PROBLEMS;
        }
    };
    runtime.block_on(async move {
        let limits = Limits { time_budget: args.decision_budget, ..Limits::default() };
        let store = match RuleStore::load(&args.rules.rules, limits) {
            Ok(s) => Arc::new(s),
            Err(refusals) => {
                for r in &refusals {
                    for d in &r.diagnostics {
                        eprint!("{}", render::diagnostic(d));
                    }
                    for c in &r.failed_cases {
                        eprintln!("{c}");
                    }
                    eprintln!("✘ {}: refused", r.partnership);
                }
                eprintln!("error: the rules in {} did not load; fix them (see `cpc-rules check` and `cpc-rules test`) and start again", args.rules.rules.display());
                return RULE_PROBLEMS;
            }
        };
        for p in store.partnerships() {
            tracing::info!(partnership = %p.id, revision = %p.revision, kinds = p.kinds.len(), "rules loaded");
        }
        let _watch = if args.no_watch {
            None
        } else {
            match watch::spawn(Arc::clone(&store), args.debounce) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the rules folder; reload with SIGHUP or ReloadRules");
                    None
                }
            }
        };
        #[cfg(unix)]
        let _hup = watch::spawn_sighup(Arc::clone(&store)).map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP")).ok();
        let options = ServerOptions { addr: args.addr, ..ServerOptions::default() };
        match cpc_rules::grpc::server::run(store, options).await {
            Ok(()) => OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                RULE_PROBLEMS
            }
        }
    })
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CPC_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
