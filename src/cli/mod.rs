//! Command-line interface: argument parsing and human/JSON output.
//!
//! Policy leads are the main readers of this output, so every problem is printed with its file,
//! line, column, the offending source line and a hint; `--format json` / `--json` gives the same
//! information to machines. Exit codes: 0 success, 1 rule problems (a check error, a failing
//! case, a refused decision), 2 usage errors (bad arguments, unreadable facts).

mod assumptions;
mod case_edit;
mod docs;
mod folder;
mod health;
mod impact;
mod matrix;
mod record;
mod render;
mod status;
mod test_cmd;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use cpc_rules::engine::Limits;
use cpc_rules::facts::Kind;
use std::sync::Arc;

use cpc_rules::grpc::auth::{AccessPolicy, Secret};
use cpc_rules::grpc::limits::RateLimit;
use cpc_rules::grpc::server::ServerOptions;
use cpc_rules::grpc::transport::TlsSettings;
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
    Serve(Box<ServeArgs>),
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
    /// Run each partnership's test cases: one line per mismatch (`-v` for everything).
    Test {
        #[command(flatten)]
        rules: RulesArg,
        /// Only these partnerships (default: all).
        partnerships: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Show each failing case in full: its facts, what was expected and the whole decision.
        #[arg(long, short)]
        verbose: bool,
        /// Show the difference for each failing case and rewrite its expected values when you
        /// confirm (comments and layout of the file are kept).
        #[arg(long)]
        update: bool,
        /// With --update: rewrite every failing case without asking (for scripts).
        #[arg(long, requires = "update")]
        yes: bool,
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
        /// Facts file (JSON or TOML, a bare table or a case copied from a case file), or `-`
        /// for standard input.
        facts: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Append this decision as a new test case called NAME to the partnership's
        /// `tests/<kind>.toml` (a refusal is saved as an `invalid_field` case).
        #[arg(long, value_name = "NAME")]
        save_case: Option<String>,
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
    /// Print the README's table of how the partnerships differ, generated from the rules.
    Matrix {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Print the README's table of the facts each decision kind takes and which rules read them.
    Facts {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Check (or with --write, regenerate) every generated document: the README's tables and
    /// docs/helpers.md. Run from the project folder.
    Docs {
        #[command(flatten)]
        rules: RulesArg,
        /// Rewrite the out-of-date documents instead of only listing them.
        #[arg(long)]
        write: bool,
    },
    /// Ask a running server's gRPC health service whether it is serving (exit 0 if so).
    Health(health::HealthArgs),
    /// Before publishing: which decisions would change (outcome, reasons or dates) between the
    /// live rules and your working copy, over every test case and scenario.
    Impact(impact::ImpactArgs),
    /// Ask a running server which revision each partnership has live, since when, and the
    /// last refused reload with its problems.
    Status(status::StatusArgs),
    /// List every reason marked as an assumption (the guide is silent), for sign-off.
    Assumptions(assumptions::AssumptionsArgs),
    /// The decision record: get, list and replay recorded decisions, list archived revisions,
    /// count refusals, purge what is past the retention period.
    Record(record::RecordArgs),
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CPC_ADDR", default_value = "127.0.0.1:50051")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    rules: RulesArg,
    /// CPU time of the thread running one decision (not wall-clock time, so load does not change answers).
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
    /// Log each request's facts and case_ref (debugging only: they may identify a child).
    #[arg(long, env = "CPC_LOG_FACTS")]
    log_facts: bool,

    /// Server certificate chain (PEM) for TLS; needs --tls-key.
    #[arg(long, env = "CPC_TLS_CERT", requires = "tls_key", help_heading = "Transport security")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM) for TLS; needs --tls-cert.
    #[arg(long, env = "CPC_TLS_KEY", requires = "tls_cert", help_heading = "Transport security")]
    tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify client certificates against: mutual TLS.
    #[arg(long, env = "CPC_TLS_CLIENT_CA", requires = "tls_cert", help_heading = "Transport security")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: also accept clients without a certificate (they need a token).
    #[arg(long, env = "CPC_TLS_CLIENT_CERT_OPTIONAL", requires = "tls_client_ca", help_heading = "Transport security")]
    tls_client_cert_optional: bool,
    /// Serve plaintext gRPC on a non-loopback address (only behind a TLS-terminating proxy).
    #[arg(long, env = "CPC_ALLOW_PLAINTEXT", help_heading = "Transport security")]
    allow_plaintext: bool,
    /// File holding the admin bearer token (or set CPC_ADMIN_TOKEN); needed for ReloadRules.
    #[arg(long, env = "CPC_ADMIN_TOKEN_FILE", help_heading = "Access")]
    admin_token_file: Option<PathBuf>,
    /// File holding the caller bearer token (or set CPC_CALLER_TOKEN); when set, decision RPCs need it.
    #[arg(long, env = "CPC_CALLER_TOKEN_FILE", help_heading = "Access")]
    caller_token_file: Option<PathBuf>,
    /// Client-certificate subject CN or SAN that is an admin (mutual TLS); repeat or comma-separate.
    #[arg(long = "admin-client-cn", env = "CPC_ADMIN_CLIENT_CN", value_delimiter = ',', help_heading = "Access")]
    admin_client_cn: Vec<String>,
    /// File holding the auditor bearer token (or set CPC_AUDITOR_TOKEN); needed for RecordService (an admin credential also works).
    #[arg(long, env = "CPC_AUDITOR_TOKEN_FILE", help_heading = "Access")]
    auditor_token_file: Option<PathBuf>,
    /// Client-certificate subject CN or SAN that is an auditor (mutual TLS); repeat or comma-separate.
    #[arg(long = "auditor-client-cn", env = "CPC_AUDITOR_CLIENT_CN", value_delimiter = ',', help_heading = "Access")]
    auditor_client_cn: Vec<String>,

    /// The decision record: a SQLite file (created on first start, WAL), a `postgres://…` URL
    /// (several replicas), or `off`. Every decision is recorded before it is returned.
    #[arg(long, env = "CPC_RECORD", default_value = cpc_rules::record::DEFAULT_SQLITE, help_heading = "Decision record")]
    record: String,
    /// File holding the record's target (a `postgres://…` URL with its password), instead of
    /// --record: keeps the password out of the process's arguments and environment.
    #[arg(long, env = "CPC_RECORD_URL_FILE", help_heading = "Decision record")]
    record_url_file: Option<PathBuf>,
    /// File holding the key case_refs are hashed with (HMAC-SHA256). Default for SQLite:
    /// `<record file>.key`, created (mode 0600) on first start; PostgreSQL needs one, shared by every replica.
    #[arg(long, env = "CPC_RECORD_KEY_FILE", help_heading = "Decision record")]
    record_key_file: Option<PathBuf>,
    /// When a decision cannot be recorded: `refuse` the call with UNAVAILABLE and report
    /// NOT_SERVING (no unrecorded decision is ever handed out), or `serve` it anyway and log the failure.
    #[arg(long, env = "CPC_RECORD_FAILURE", value_enum, default_value_t, help_heading = "Decision record")]
    record_failure: RecordFailure,
    /// Recorded decisions older than this many days are purged (checked daily). Default: 25 years (see the README).
    #[arg(long, env = "CPC_RETENTION_DAYS", default_value_t = cpc_rules::record::DEFAULT_RETENTION_DAYS, help_heading = "Decision record")]
    retention_days: u32,
    /// When a new revision goes live, replay the recorded decisions of this many days against it and log how many would change (0: off).
    #[arg(long, env = "CPC_RELOAD_IMPACT_DAYS", default_value_t = 30, help_heading = "Decision record")]
    reload_impact_days: u32,
    /// Under load, start a record commit at most this often, so more decisions share one fsync
    /// (an idle record commits at once; 0: commit whatever is queued as soon as the last commit ends).
    #[arg(long, env = "CPC_RECORD_COMMIT_INTERVAL", default_value = "2ms", value_parser = humantime::parse_duration, help_heading = "Decision record")]
    record_commit_interval: std::time::Duration,

    /// Most rule scripts running at once (default: 4 per core).
    #[arg(long, env = "CPC_MAX_CONCURRENT_DECISIONS", help_heading = "Load")]
    max_concurrent_decisions: Option<usize>,
    /// Hard cap on decisions waiting for a script slot; more are shed with RESOURCE_EXHAUSTED (default: 16384).
    #[arg(long, env = "CPC_MAX_QUEUED_DECISIONS", help_heading = "Load")]
    max_queued_decisions: Option<usize>,
    /// Queue-delay bound: longest expected wait a decision is queued with (and longest it waits) before RESOURCE_EXHAUSTED.
    #[arg(long, env = "CPC_MAX_QUEUE_WAIT", default_value = "2s", value_parser = humantime::parse_duration, help_heading = "Load")]
    max_queue_wait: std::time::Duration,
    /// Most script slots one partnership holds while others are active (default: the cores shared among the active partnerships, at least one each; idle slots are lent).
    #[arg(long, env = "CPC_PARTNERSHIP_SLOTS", help_heading = "Load")]
    partnership_slots: Option<usize>,
    /// Longest any call may take (a shorter grpc-timeout from the caller wins).
    #[arg(long, env = "CPC_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, help_heading = "Load")]
    request_timeout: std::time::Duration,
    /// Most calls in progress on one connection.
    #[arg(long, env = "CPC_MAX_CALLS_PER_CONNECTION", default_value_t = 4096, help_heading = "Load")]
    max_calls_per_connection: usize,
    /// Calls a second the whole server takes (0: no limit).
    #[arg(long, env = "CPC_RATE_LIMIT", default_value_t = 0, help_heading = "Load")]
    rate_limit: u32,
    /// Calls a second one connection may make (0: no limit).
    #[arg(long, env = "CPC_RATE_LIMIT_PER_CONNECTION", default_value_t = 0, help_heading = "Load")]
    rate_limit_per_connection: u32,
    /// Most connections open at once (0: no limit).
    #[arg(long, env = "CPC_MAX_CONNECTIONS", default_value_t = 1024, help_heading = "Load")]
    max_connections: usize,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "CPC_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024, help_heading = "Load")]
    max_request_bytes: usize,
    /// How long shutdown waits for in-flight calls.
    #[arg(long, env = "CPC_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration, help_heading = "Load")]
    shutdown_grace: std::time::Duration,

    /// Serve Prometheus metrics (GET /metrics, plain HTTP) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "CPC_METRICS_ADDR", help_heading = "Observability")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Export traces over OTLP/gRPC to this collector, e.g. http://otel-collector:4317.
    #[arg(long, env = "CPC_OTLP_ENDPOINT", help_heading = "Observability")]
    otlp_endpoint: Option<String>,
    /// Serve metrics on a non-loopback --metrics-addr (the endpoint has no credentials).
    #[arg(long, env = "CPC_METRICS_ALLOW_REMOTE", help_heading = "Observability")]
    metrics_allow_remote: bool,

    /// Serve the web console and the JSON API on this address (alone: 127.0.0.1:8080). Off
    /// loopback it needs TLS (--tls-cert/--tls-key) and a caller or admin token to sign in with.
    #[arg(long, env = "CPC_CONSOLE_ADDR", num_args = 0..=1, default_missing_value = cpc_rules::http::DEFAULT_CONSOLE_ADDR, help_heading = "Console")]
    console_addr: Option<std::net::SocketAddr>,
}

/// `--record-failure`.
#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
enum RecordFailure {
    /// Refuse the call with UNAVAILABLE; health NOT_SERVING.
    #[default]
    Refuse,
    /// Return the decision anyway; log the failure.
    Serve,
}

#[derive(Clone, Copy, ValueEnum, Default)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Parses arguments and runs the command.
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { OK });
        }
    };
    let command = cli.command.unwrap_or_else(|| {
        Command::Serve(Box::new(ServeArgs::parse_from_env()))
    });
    let code = match command {
        Command::Serve(args) => serve(*args),
        Command::Check { rules, partnerships, format } => check(&rules.rules, &partnerships, format),
        Command::Test { rules, partnerships, format, verbose, update, yes } => {
            test_cmd::run(&rules.rules, &partnerships, &test_cmd::TestOptions { format, verbose, update, yes })
        }
        Command::Eval { rules, partnership, kind, facts, json, save_case } => {
            eval(&rules.rules, &partnership, &kind, facts.as_deref(), json, save_case.as_deref())
        }
        Command::Impact(args) => impact::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Assumptions(args) => assumptions::run(&args),
        Command::Record(args) => record::run(&args),
        Command::Compare { rules, kind, facts, json } => compare(&rules.rules, &kind, facts.as_deref(), json),
        Command::Matrix { rules } => match matrix::render_from_disk(&rules.rules) {
            Ok(md) => {
                print!("{md}");
                OK
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                RULE_PROBLEMS
            }
        },
        Command::Health(args) => health::run(&args),
        Command::Facts { rules } => match docs::facts_markdown(&rules.rules) {
            Ok(text) => {
                print!("{text}");
                OK
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                RULE_PROBLEMS
            }
        },
        Command::Docs { rules, write } => match docs::docs(&rules.rules, Path::new("."), write) {
            Ok(stale) if stale.is_empty() => {
                println!("every generated document is up to date");
                OK
            }
            Ok(stale) if write => {
                println!("rewrote: {}", stale.join(", "));
                OK
            }
            Ok(stale) => {
                println!("out of date: {} (run `cpc-rules docs --write`)", stale.join(", "));
                RULE_PROBLEMS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                RULE_PROBLEMS
            }
        },
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
    if let Some(problem) = folder::problem(root) {
        return Err(problem);
    }
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
    parse_facts(&text)
}

/// Facts as JSON or TOML — a bare table of facts, or a case (`facts = { … }`) copied from a
/// case file — with gRPC enum names (`CONFERENCE_TYPE_INITIAL`) accepted for codes.
fn parse_facts(text: &str) -> Result<serde_json::Value, String> {
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v,
        Err(json_err) => match toml::from_str::<toml::Table>(text) {
            Ok(t) => cpc_rules::cases::toml_to_json(toml::Value::Table(t)),
            Err(toml_err) => {
                return Err(format!(
                    "the facts are neither JSON nor TOML.\n  as JSON: {json_err}\n  as TOML: {}",
                    toml_err.message()
                ));
            }
        },
    };
    // A whole case pasted in: take its facts.
    let value = match value {
        serde_json::Value::Object(mut m) if m.get("facts").is_some_and(serde_json::Value::is_object) && !m.contains_key("role") => {
            m.remove("facts").unwrap_or_default()
        }
        v => v,
    };
    Ok(with_code_aliases(value))
}

fn with_code_aliases(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(cpc_rules::grpc::convert::code_alias(&s).unwrap_or(s)),
        Value::Array(a) => Value::Array(a.into_iter().map(with_code_aliases).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, with_code_aliases(v))).collect()),
        other => other,
    }
}

fn eval(root: &Path, partnership: &str, kind: &str, facts: Option<&Path>, json: bool, save_case: Option<&str>) -> u8 {
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
    let req = cpc_rules::model::DecisionRequest {
        partnership: set.id().to_string(),
        kind: kind.to_string(),
        facts,
        today: cpc_rules::clock::today_in_england(),
    };
    let result = set.decide(&req);
    if let Some(name) = save_case {
        let saved = match &result {
            Ok(d) => case_edit::Saved::Decision(d),
            Err(e) => match e.violations().first() {
                Some(v) => case_edit::Saved::Invalid(v.field.clone()),
                None => {
                    eprintln!("no decision, and no fact to name as invalid: {e}; nothing saved");
                    return RULE_PROBLEMS;
                }
            },
        };
        let today = result.as_ref().ok().and_then(|d| d.as_of_defaulted);
        match save_new_case(root, set.id(), kind, name, today, &req.facts, &saved) {
            Ok(msg) => eprintln!("{msg}"),
            Err(e) => return usage(e),
        }
    }
    match result {
        Ok(d) => {
            if json {
                let issued = cpc_rules::model::IssuedDecision::stamp(d, cpc_rules::clock::now());
                println!("{}", serde_json::to_string_pretty(&issued).unwrap_or_default());
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

/// Appends a new case to `<root>/<id>/tests/<kind>.toml` (creating it with `kind = …`).
fn save_new_case(
    root: &Path,
    id: &str,
    kind: &str,
    name: &str,
    today: Option<chrono::NaiveDate>,
    facts: &serde_json::Value,
    saved: &case_edit::Saved<'_>,
) -> Result<String, String> {
    let dir = root.join(id).join("tests");
    let path = dir.join(format!("{kind}.toml"));
    let existing = if path.is_file() { std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))? } else { String::new() };
    let file_kind = existing.parse::<toml::Table>().ok().and_then(|t| t.get("kind").and_then(|k| k.as_str().map(str::to_string)));
    let dup = cpc_rules::cases::read_case_file(&cpc_rules::engine::SourceFile { path: String::new(), text: existing.clone() })
        .cases
        .iter()
        .any(|c| c.name == name);
    if dup {
        return Err(format!("{} already has a case called `{name}`; choose another name", path.display()));
    }
    let mut text = existing.clone();
    if text.is_empty() {
        text = format!("# {id} — {kind} cases.\nkind = \"{kind}\"\n");
    }
    // A new file says its kind once at the top; an existing one may already.
    let case_kind = if existing.is_empty() || file_kind.as_deref() == Some(kind) { None } else { Some(kind) };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&case_edit::new_case_text(name, case_kind, today, facts, saved));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let line = text.lines().enumerate().filter(|(_, l)| l.trim() == "[[case]]").last().map_or(1, |(i, _)| i + 1);
    // Name the folder when it is not the default, or the hint would test the live rules instead.
    let rules = if root == Path::new("rules") { String::new() } else { format!("--rules {} ", root.display()) };
    Ok(format!("saved as case `{name}` at {}:{line}; run `cpc-rules test {rules}{id}` to check it", path.display()))
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
        let req = cpc_rules::model::DecisionRequest {
            partnership: id.clone(),
            kind: kind.to_string(),
            facts: facts.clone(),
            today: cpc_rules::clock::today_in_england(),
        };
        let row = match b.set.as_ref().map(|s| s.decide(&req)) {
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
    // Configuration problems (unreadable TLS or token files, plaintext on a public address)
    // stop the server before it loads anything.
    let options = match server_options(&args)
        .and_then(|o| cpc_rules::grpc::transport::check_plaintext(o.addr, o.tls.is_some(), o.allow_plaintext).map(|()| o).map_err(anyhow::Error::from))
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return USAGE;
        }
    };
    // The record is opened before the runtime starts (the PostgreSQL client runs its own).
    let options = match open_record(&args) {
        Ok(record) => ServerOptions { record, ..options },
        Err(e) => {
            eprintln!("error: {e}");
            return RULE_PROBLEMS;
        }
    };
    if options.log_facts {
        tracing::warn!("--log-facts is on: request facts and case references will be logged; they may identify a child");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return RULE_PROBLEMS;
        }
    };
    runtime.block_on(async move {
        let limits = Limits { cpu_budget: args.decision_budget, ..Limits::default() };
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
                    eprintln!("error: cannot watch the rules folder ({e}); fix it, or pass --no-watch to reload only with SIGHUP or ReloadRules");
                    return RULE_PROBLEMS;
                }
            }
        };
        #[cfg(unix)]
        let _hup = watch::spawn_sighup(Arc::clone(&store)).map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP")).ok();
        match cpc_rules::grpc::server::run(store, options).await {
            Ok(()) => OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                RULE_PROBLEMS
            }
        }
    })
}

/// Opens the decision record `serve` was asked for (`None` for `--record off`), and starts the
/// daily retention purge.
fn open_record(args: &ServeArgs) -> Result<Option<Arc<cpc_rules::record::Record>>, String> {
    use cpc_rules::record::{FailurePolicy, Record, RecordConfig, Target};
    let given = match &args.record_url_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("cannot read --record-url-file {}: {e}", f.display()))?,
        None => args.record.clone(),
    };
    let Some(target) = Target::parse(&given) else {
        tracing::warn!("--record off: decisions are not recorded; they cannot be looked up or replayed later");
        return Ok(None);
    };
    let config = RecordConfig {
        key_file: args.record_key_file.clone(),
        on_failure: if args.record_failure == RecordFailure::Serve { FailurePolicy::Serve } else { FailurePolicy::Refuse },
        retention_days: args.retention_days,
        reload_impact_days: args.reload_impact_days,
        commit_interval: args.record_commit_interval,
        ..RecordConfig::new(target)
    };
    let record = Record::open(config).map_err(|e| format!("{e} (start with --record off to serve without a decision record)"))?;
    record.start_retention();
    Ok(Some(record))
}

/// A bearer token from `file`, or else from the environment variable `env`; both set is an
/// error (which one would win is not obvious).
fn token(file: Option<&Path>, env: &str, what: &str) -> anyhow::Result<Option<Secret>> {
    use anyhow::Context as _;
    let from_env = std::env::var(env).ok().filter(|t| !t.trim().is_empty());
    let text = match (file, from_env) {
        (Some(_), Some(_)) => anyhow::bail!("the {what} token is given both as a file and in {env}; give one"),
        (Some(path), None) => std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} token file {}", path.display()))?,
        (None, Some(t)) => t,
        (None, None) => return Ok(None),
    };
    Secret::new(&text).map(Some).map_err(|e| anyhow::anyhow!("the {what} token {e}"))
}

/// The server's options from the `serve` flags (reading the TLS and token files).
fn server_options(args: &ServeArgs) -> anyhow::Result<ServerOptions> {
    let defaults = ServerOptions::default();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsSettings::from_files(cert, key, args.tls_client_ca.as_deref(), args.tls_client_cert_optional)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let access = AccessPolicy {
        admin_token: token(args.admin_token_file.as_deref(), "CPC_ADMIN_TOKEN", "admin")?,
        caller_token: token(args.caller_token_file.as_deref(), "CPC_CALLER_TOKEN", "caller")?,
        admin_client_names: args.admin_client_cn.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
        auditor_token: token(args.auditor_token_file.as_deref(), "CPC_AUDITOR_TOKEN", "auditor")?,
        auditor_client_names: args.auditor_client_cn.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
    };
    if access.auditor_token.is_some() && (access.auditor_token == access.caller_token || access.auditor_token == access.admin_token) {
        anyhow::bail!("the auditor token must differ from the caller and admin tokens");
    }
    if access.admin_token.is_some() && access.admin_token == access.caller_token {
        anyhow::bail!("the admin and caller tokens are the same; every caller would be an admin");
    }
    Ok(ServerOptions {
        addr: args.addr,
        max_concurrent_decisions: args.max_concurrent_decisions.unwrap_or(defaults.max_concurrent_decisions).max(1),
        max_queued_decisions: args.max_queued_decisions.unwrap_or(defaults.max_queued_decisions),
        max_queue_wait: args.max_queue_wait,
        queue_target: defaults.queue_target,
        partnership_slots: args.partnership_slots.map(|n| n.max(1)),
        request_timeout: args.request_timeout,
        concurrency_limit_per_connection: args.max_calls_per_connection.max(1),
        rate_limit: RateLimit::per_second(args.rate_limit),
        rate_limit_per_connection: RateLimit::per_second(args.rate_limit_per_connection),
        max_connections: args.max_connections,
        max_request_bytes: args.max_request_bytes.max(1024),
        shutdown_grace: args.shutdown_grace,
        tls,
        allow_plaintext: args.allow_plaintext,
        access,
        log_facts: args.log_facts,
        metrics_addr: args.metrics_addr,
        otlp_endpoint: args.otlp_endpoint.clone(),
        metrics_allow_remote: args.metrics_allow_remote,
        console_addr: args.console_addr,
        record: None,
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
