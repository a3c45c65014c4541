//! `cpc-rules record …`: the decision record from the command line.
//!
//! Why: the same questions an auditor asks over gRPC (`RecordService`) — find a decision, list
//! them, replay one with its archived rules, see which revisions were live — answered straight
//! from the record's database, for operators and for a complaints officer's investigation,
//! plus `purge` for the retention period (a dry run unless `--yes`). Reads SQLite or
//! PostgreSQL (`--record`, as `serve` takes it).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use cpc_rules::engine::Limits;
use cpc_rules::record::{self, Db, Filter, RecordError, Target, archive, replay};

use super::{OK, RULE_PROBLEMS, USAGE};

/// Where the record is, as `serve` takes it.
#[derive(clap::Args, Clone, Debug)]
pub(super) struct RecordArg {
    /// The decision record: a SQLite file, or a `postgres://…` URL.
    #[arg(long = "record", env = "CPC_RECORD", default_value = record::DEFAULT_SQLITE, global = true)]
    pub target: String,
    /// File holding the case_ref key (default for SQLite: `<record file>.key`).
    #[arg(long = "record-key-file", env = "CPC_RECORD_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
}

impl RecordArg {
    /// The parsed target (`off` is a usage error here).
    pub(super) fn target(&self) -> Result<Target, String> {
        Target::parse(&self.target).ok_or_else(|| "--record off: there is no record to read".to_string())
    }

    /// Opens the record (a SQLite file must already exist: reading tools do not create one).
    pub(super) fn open(&self) -> Result<Db, String> {
        let target = self.target()?;
        if let Target::Sqlite(p) = &target {
            if !p.is_file() {
                return Err(format!("no decision record at {} (start `serve` to create it, or pass --record)", p.display()));
            }
        }
        Db::open(&target).map_err(|e| e.to_string())
    }
}

/// `cpc-rules record` arguments.
#[derive(clap::Args, Clone, Debug)]
pub(super) struct RecordArgs {
    #[command(subcommand)]
    command: RecordCommand,
    #[command(flatten)]
    record: RecordArg,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Clone, Debug)]
enum RecordCommand {
    /// Show one recorded decision: its facts, the whole decision and who asked.
    Get {
        /// The decision id.
        id: String,
    },
    /// List recorded decisions, newest first.
    List {
        /// Partnership id.
        #[arg(long)]
        partnership: Option<String>,
        /// Decision kind.
        #[arg(long)]
        kind: Option<String>,
        /// Outcome code.
        #[arg(long)]
        outcome: Option<String>,
        /// The caller's case_ref (hashed with the record's key; needs the key file).
        #[arg(long)]
        case_ref: Option<String>,
        /// Decided at or after (RFC 3339, e.g. 2026-01-31T00:00:00Z).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Decided before (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Most decisions to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Decide a recorded decision again with its archived rules (or another archived
    /// revision) and compare field by field. Exit 1 if it differs.
    Replay {
        /// The decision id.
        id: String,
        /// Replay with this archived revision instead of the one that decided.
        #[arg(long)]
        revision: Option<String>,
    },
    /// Every revision of a partnership's rules that went live: when, until when, what changed.
    Revisions {
        /// Partnership id.
        partnership: String,
    },
    /// Counts of refused calls per day, partnership, kind and status code.
    Refusals,
    /// Delete recorded decisions (and refusal counts) older than the retention period. A dry
    /// run that only counts unless --yes.
    Purge {
        /// Delete what is older than this many days.
        #[arg(long, env = "CPC_RETENTION_DAYS", default_value_t = record::DEFAULT_RETENTION_DAYS)]
        older_than_days: u32,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

fn fail(e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    RULE_PROBLEMS
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs `cpc-rules record …`.
pub(super) fn run(args: &RecordArgs) -> u8 {
    let mut db = match args.record.open() {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE;
        }
    };
    match &args.command {
        RecordCommand::Get { id } => match db.get(id) {
            Ok(Some(r)) if args.json => {
                print_json(&r);
                OK
            }
            Ok(Some(r)) => {
                println!("decision {} — {} {} at {} (day {}), asked by {}", r.decision_id, r.decision.partnership, r.decision.kind, r.decided_at.to_rfc3339(), r.today, r.caller);
                println!("revision {}{}", r.decision.rules_revision, if r.case_ref_hash.is_some() { "; a case_ref was given (stored hashed)" } else { "" });
                println!("facts: {}", serde_json::to_string_pretty(&r.facts).unwrap_or_default());
                print!("{}", super::render::decision(&r.decision));
                OK
            }
            Ok(None) => fail(format!("no recorded decision with id {id}")),
            Err(e) => fail(e),
        },
        RecordCommand::List { partnership, kind, outcome, case_ref, since, until, limit } => {
            let case_ref_hash = match case_ref {
                None => None,
                Some(c) => {
                    let target = match args.record.target() {
                        Ok(t) => t,
                        Err(e) => return fail(e),
                    };
                    match record::read_key(&target, args.record.key_file.as_deref()) {
                        Ok(k) => k.hash(c),
                        Err(e) => return fail(e),
                    }
                }
            };
            let filter = Filter { partnership: partnership.clone(), kind: kind.clone(), outcome: outcome.clone(), case_ref_hash, after: *since, before: *until };
            match db.list(&filter, *limit, None) {
                Ok(page) if args.json => {
                    print_json(&page.records);
                    OK
                }
                Ok(page) => {
                    for r in &page.records {
                        println!("{}  {}  {:<22} {:<22} {:<24} {}  {}", r.decided_at.format("%Y-%m-%dT%H:%M:%SZ"), r.decision_id, r.decision.partnership, r.decision.kind, r.decision.outcome, r.decision.rules_revision, r.caller);
                    }
                    println!("{} decision(s){}", page.records.len(), if page.next.is_some() { " (more: raise --limit or narrow the filter)" } else { "" });
                    OK
                }
                Err(e) => fail(e),
            }
        }
        RecordCommand::Replay { id, revision } => {
            let result = (|| -> Result<replay::Replay, RecordError> {
                let rec = db.get(id)?.ok_or_else(|| RecordError::NotFound(format!("no recorded decision with id {id}")))?;
                let rev = revision.clone().unwrap_or_else(|| rec.decision.rules_revision.clone());
                let sources = archive::sources(&mut db, &rec.decision.partnership, &rev)?
                    .ok_or_else(|| RecordError::NotFound(format!("revision {rev} of {} is not in the archive", rec.decision.partnership)))?;
                let set = replay::compile(&sources, &Limits::default())?;
                replay::replay(&rec, &set)
            })();
            match result {
                Ok(r) if args.json => {
                    print_json(&serde_json::json!({ "identical": r.identical(), "revision": r.revision, "differences": r.differences, "recorded": r.recorded, "replayed": r.replayed }));
                    if r.identical() { OK } else { RULE_PROBLEMS }
                }
                Ok(r) if r.identical() => {
                    println!("identical: revision {} decides {} exactly as recorded ({})", r.revision, id, r.recorded.outcome);
                    OK
                }
                Ok(r) => {
                    println!("revision {} decides {} differently:", r.revision, id);
                    for d in &r.differences {
                        println!("    {d}");
                    }
                    RULE_PROBLEMS
                }
                Err(e) => fail(e),
            }
        }
        RecordCommand::Revisions { partnership } => match archive::revisions(&mut db, partnership) {
            Ok(periods) if args.json => {
                print_json(&periods);
                OK
            }
            Ok(periods) => {
                if periods.is_empty() {
                    println!("no revision of {partnership} is in the archive");
                }
                for p in &periods {
                    let until = p.replaced_at.map_or_else(|| "now (live)".to_string(), |t| t.to_rfc3339());
                    println!("{}  live {} → {}  ({} decisions)", p.revision, p.live_from.to_rfc3339(), until, p.decisions);
                    for (what, list) in [("added", &p.added), ("removed", &p.removed), ("changed", &p.changed)] {
                        if !list.is_empty() {
                            println!("    {what}: {}", list.join(", "));
                        }
                    }
                }
                OK
            }
            Err(e) => fail(e),
        },
        RecordCommand::Refusals => match db.refusals() {
            Ok(rows) => {
                if args.json {
                    print_json(&rows.iter().map(|(k, n)| serde_json::json!({"day": k.day, "partnership": k.partnership, "kind": k.kind, "code": k.code, "count": n})).collect::<Vec<_>>());
                } else {
                    for (k, n) in rows {
                        println!("{}  {:<22} {:<22} {:<20} {n}", k.day, k.partnership, k.kind, k.code);
                    }
                }
                OK
            }
            Err(e) => fail(e),
        },
        RecordCommand::Purge { older_than_days, yes } => {
            let cutoff = cpc_rules::clock::now() - chrono::Duration::days(i64::from(*older_than_days));
            match db.purge(cutoff, *yes) {
                Ok((d, r)) if *yes => {
                    println!("deleted {d} decision(s) and {r} refusal count(s) decided before {}", cutoff.to_rfc3339());
                    OK
                }
                Ok((d, r)) => {
                    println!("{d} decision(s) and {r} refusal count(s) are older than {older_than_days} days (before {}); run again with --yes to delete them", cutoff.to_rfc3339());
                    OK
                }
                Err(e) => fail(e),
            }
        }
    }
}
