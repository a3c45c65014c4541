//! `cpc-rules impact`: what a rule change would do, before it goes live.
//!
//! Why this exists: a policy lead who changes a rule needs to see every decision that would come
//! out differently — outcome, reasons or dates — not only the cases that now fail. This replays
//! a set of facts through two rule sets and lists the differences: the working copy (`--rules`)
//! against the live rules, which are either a running server (asked over gRPC `Evaluate`, one
//! call per input) or another rules folder or git revision (compiled here).
//!
//! The two halves are traits so more can be plugged in: a [`FactSource`] yields the inputs to
//! replay (every test case, every scenario of `scenarios.toml`, and with `--record` the real
//! decisions recorded in the last `--days` days), and a [`Decider`] answers them. A recorded
//! decision is compared with what was recorded (the decision the caller really got), so
//! `--record` alone needs no server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use cpc_rules::cases::{CASE_TODAY, read_case_file};
use cpc_rules::engine::{Limits, RuleSet};
use cpc_rules::grpc::pb;
use cpc_rules::model::{Decision, DecisionRequest};
use cpc_rules::store::read_sources;
use cpc_rules::vocabulary::FactDefault;
use serde::Serialize;
use serde_json::Value;

use super::status::{Client, Connection};
use super::{OK, RULE_PROBLEMS, RulesArg};

/// `cpc-rules impact` arguments.
#[derive(clap::Args, Clone)]
pub(super) struct ImpactArgs {
    /// Your working copy of the rules.
    #[command(flatten)]
    rules: RulesArg,
    /// Compare with this rules folder, or this git revision of the rules folder (e.g. `HEAD`,
    /// `main`), instead of a running server.
    #[arg(long, value_name = "FOLDER_OR_REVISION")]
    against: Option<String>,
    /// The live server to compare with (when --against is not given).
    #[command(flatten)]
    conn: Connection,
    /// Only these partnerships (default: all).
    partnerships: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also replay the decisions recorded in this decision record (SQLite file or
    /// `postgres://…`); alone (without --against), only those are compared, with what was
    /// recorded.
    #[arg(long, value_name = "SQLITE_OR_URL")]
    record: Option<String>,
    /// With --record: how many days of recorded decisions to replay.
    #[arg(long, default_value_t = 30)]
    days: u32,
}

/// One set of facts to replay through both rule sets.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Input {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind.
    pub kind: String,
    /// The facts.
    pub facts: Value,
    /// Today's date for the decision.
    pub today: NaiveDate,
    /// Where the input came from (`case`, `scenario`, later `recorded`).
    pub source: &'static str,
    /// Where, for people: `file:line` of a case, or the scenario's label.
    pub origin: String,
    /// What it is about.
    pub label: String,
    /// For a recorded decision: the decision as recorded (the answer to compare with).
    #[serde(skip)]
    pub recorded: Option<Decision>,
}

/// Yields inputs to replay. Test cases and scenarios today; recorded decisions later.
pub(super) trait FactSource {
    /// The inputs for these partnerships.
    fn inputs(&self, partnerships: &[String]) -> Result<Vec<Input>, String>;
}

/// Every test case of the working copy.
pub(super) struct Cases<'a>(pub &'a Path);

impl FactSource for Cases<'_> {
    fn inputs(&self, partnerships: &[String]) -> Result<Vec<Input>, String> {
        let mut out = Vec::new();
        for id in partnerships {
            let sources = read_sources(self.0, id).map_err(|d| d.iter().map(|d| d.one_line()).collect::<Vec<_>>().join("\n"))?;
            for f in &sources.cases {
                for c in read_case_file(f).cases {
                    out.push(Input {
                        partnership: id.clone(),
                        kind: c.kind,
                        facts: c.facts,
                        today: c.today,
                        source: "case",
                        origin: format!("{}:{}", c.file, c.line),
                        label: c.name,
                        recorded: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Every scenario of `scenarios.toml`, for every partnership.
pub(super) struct Scenarios<'a>(pub &'a Path);

impl FactSource for Scenarios<'_> {
    fn inputs(&self, partnerships: &[String]) -> Result<Vec<Input>, String> {
        let path = self.0.join("scenarios.toml");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Vec::new()) };
        let scenarios = super::matrix::parse_scenarios(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(partnerships
            .iter()
            .flat_map(|id| {
                scenarios.iter().map(move |s| Input {
                    partnership: id.clone(),
                    kind: s.kind.clone(),
                    facts: cpc_rules::cases::toml_to_json(s.facts.clone()),
                    today: CASE_TODAY,
                    source: "scenario",
                    origin: "scenarios.toml".into(),
                    label: s.label.clone(),
                    recorded: None,
                })
            })
            .collect())
    }
}

/// The decisions recorded in the last `days` days, with what was decided.
pub(super) struct Recorded<'a> {
    /// The record (`serve --record`).
    pub target: &'a str,
    /// How many days back.
    pub days: u32,
}

impl FactSource for Recorded<'_> {
    fn inputs(&self, partnerships: &[String]) -> Result<Vec<Input>, String> {
        let target = cpc_rules::record::Target::parse(self.target).ok_or("--record off: there is no record to replay")?;
        let mut db = cpc_rules::record::Db::open(&target).map_err(|e| e.to_string())?;
        let since = cpc_rules::clock::now() - chrono::Duration::days(i64::from(self.days));
        let records = db.since(None, since, cpc_rules::record::replay::MAX_IMPACT).map_err(|e| e.to_string())?;
        Ok(records
            .into_iter()
            .filter(|r| partnerships.contains(&r.decision.partnership))
            .map(|r| Input {
                partnership: r.decision.partnership.clone(),
                kind: r.decision.kind.clone(),
                facts: r.facts,
                today: r.today,
                source: "recorded",
                origin: format!("decided {} with {}", r.decided_at.format("%Y-%m-%dT%H:%M:%SZ"), r.decision.rules_revision),
                label: r.decision_id,
                recorded: Some(r.decision),
            })
            .collect())
    }
}

/// What a decision says, as far as impact compares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Summary {
    /// Outcome code.
    pub outcome: String,
    /// Rule ids, in order, with whether each is an assumption and its text.
    pub reasons: Vec<(String, bool, String)>,
    /// Action codes with due dates.
    pub actions: Vec<(String, Option<String>)>,
}

impl From<&Decision> for Summary {
    fn from(d: &Decision) -> Self {
        Summary {
            outcome: d.outcome.clone(),
            reasons: d.reasons.iter().map(|r| (r.rule_id.clone(), r.citation.assumption, r.text.clone())).collect(),
            actions: d.actions.iter().map(|a| (a.code.clone(), a.due_date.map(|x| x.format("%Y-%m-%d").to_string()))).collect(),
        }
    }
}

impl From<&pb::Decision> for Summary {
    fn from(d: &pb::Decision) -> Self {
        Summary {
            outcome: d.outcome.clone(),
            reasons: d.reasons.iter().map(|r| (r.rule_id.clone(), r.citation.as_ref().is_some_and(|c| c.assumption), r.text.clone())).collect(),
            actions: d.actions.iter().map(|a| (a.code.clone(), Some(a.due_date.clone()).filter(|s| !s.is_empty()))).collect(),
        }
    }
}

/// One rule set's answer to an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "answer")]
pub(super) enum Answer {
    /// A decision.
    Decided(Summary),
    /// No decision: the error.
    Refused { error: String },
    /// That rule set has no such partnership.
    NoPartnership,
}

/// Answers inputs with one rule set.
pub(super) trait Decider {
    /// The answer to `input`.
    fn decide(&mut self, input: &Input) -> Answer;
}

/// Rule sets compiled from a rules folder on disk.
pub(super) struct Folder {
    root: PathBuf,
    sets: BTreeMap<String, Result<RuleSet, String>>,
}

impl Folder {
    /// The rules in `root`, compiled when first asked for.
    pub(super) fn new(root: &Path) -> Self {
        Folder { root: root.to_path_buf(), sets: BTreeMap::new() }
    }

    /// The compiled rules of `id`, or why there are none.
    pub(super) fn set(&mut self, id: &str) -> &Result<RuleSet, String> {
        let root = self.root.clone();
        self.sets.entry(id.to_string()).or_insert_with(|| {
            let sources = read_sources(&root, id).map_err(|d| d.iter().map(|d| d.one_line()).collect::<Vec<_>>().join("; "))?;
            RuleSet::compile(&sources, &Limits::default()).map_err(|d| d.iter().map(|d| d.one_line()).collect::<Vec<_>>().join("; "))
        })
    }
}

impl Decider for Folder {
    fn decide(&mut self, input: &Input) -> Answer {
        if !self.root.join(&input.partnership).join("partnership.toml").is_file() {
            return Answer::NoPartnership;
        }
        match self.set(&input.partnership) {
            Err(e) => Answer::Refused { error: format!("the rules do not compile: {e}") },
            Ok(set) => {
                let req = DecisionRequest { partnership: input.partnership.clone(), kind: input.kind.clone(), facts: input.facts.clone(), today: input.today };
                match set.decide(&req) {
                    Ok(d) => Answer::Decided(Summary::from(&d)),
                    Err(e) => Answer::Refused { error: e.to_string() },
                }
            }
        }
    }
}

/// A running server, asked over gRPC `Evaluate`.
struct Server {
    runtime: tokio::runtime::Runtime,
    client: Client,
    known: Vec<String>,
}

impl Decider for Server {
    fn decide(&mut self, input: &Input) -> Answer {
        if !self.known.contains(&input.partnership) {
            return Answer::NoPartnership;
        }
        let facts = input.facts.as_object().map(cpc_rules::grpc::convert::json_to_struct).unwrap_or_default();
        let req = pb::EvaluateRequest { partnership: input.partnership.clone(), kind: input.kind.clone(), facts: Some(facts), case_ref: String::new() };
        let request = self.client.request(req);
        let mut client = pb::decision_service_client::DecisionServiceClient::new(self.client.channel.clone());
        match self.runtime.block_on(client.evaluate(request)) {
            Ok(d) => Answer::Decided(Summary::from(&d.into_inner())),
            Err(s) => Answer::Refused { error: format!("{:?}: {}", s.code(), s.message()) },
        }
    }
}

impl Server {
    fn connect(conn: &Connection) -> anyhow::Result<Server> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (client, known) = runtime.block_on(async {
            let client = conn.connect().await?;
            let mut rules = pb::rules_service_client::RulesServiceClient::new(client.channel.clone());
            let list = rules
                .list_partnerships(client.request(pb::ListPartnershipsRequest {}))
                .await
                .map_err(|s| anyhow::anyhow!("{} refused ListPartnerships: {}", conn.shown(), s.message()))?;
            let known = list.into_inner().partnerships.into_iter().map(|p| p.id).collect();
            anyhow::Ok((client, known))
        })?;
        Ok(Server { runtime, client, known })
    }
}

/// One input whose answer would change.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Changed {
    /// The input.
    #[serde(flatten)]
    pub input: Input,
    /// Each difference in words.
    pub changes: Vec<String>,
    /// The live answer.
    pub live: Answer,
    /// The working copy's answer.
    pub working: Answer,
}

/// How two answers differ, in words (empty when they do not).
pub(super) fn differences(live: &Answer, working: &Answer) -> Vec<String> {
    let (a, b) = match (live, working) {
        (Answer::Decided(a), Answer::Decided(b)) => (a, b),
        (x, y) if x == y => return Vec::new(),
        (Answer::NoPartnership, _) => return vec!["a partnership the live rules do not have".into()],
        (Answer::Decided(a), Answer::Refused { error }) => return vec![format!("{} → no decision: {error}", a.outcome)],
        (Answer::Refused { error }, Answer::Decided(b)) => return vec![format!("no decision ({error}) → {}", b.outcome)],
        // Refused both times: the server words its errors for gRPC callers, so only the fact of
        // the refusal is compared.
        (Answer::Refused { .. }, Answer::Refused { .. }) => return Vec::new(),
        (_, Answer::NoPartnership) => return vec!["the partnership is gone from the working copy".into()],
    };
    let mut out = Vec::new();
    if a.outcome != b.outcome {
        out.push(format!("outcome: {} → {}", a.outcome, b.outcome));
    }
    let ids = |s: &Summary| s.reasons.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    let (ra, rb) = (ids(a), ids(b));
    let added: Vec<&String> = rb.iter().filter(|r| !ra.contains(r)).collect();
    let dropped: Vec<&String> = ra.iter().filter(|r| !rb.contains(r)).collect();
    if !added.is_empty() {
        out.push(format!("reasons: adds {}", added.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
    }
    if !dropped.is_empty() {
        out.push(format!("reasons: drops {}", dropped.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
    }
    if added.is_empty() && dropped.is_empty() && ra != rb {
        out.push("reasons: same reasons in another order".into());
    }
    for (id, assumed, text) in &b.reasons {
        if let Some((_, was_assumed, was_text)) = a.reasons.iter().find(|r| &r.0 == id) {
            if was_assumed != assumed {
                out.push(format!("reason {id}: {}", if *assumed { "now marked an assumption" } else { "no longer an assumption" }));
            }
            if was_text != text {
                out.push(format!("reason {id}: wording changes"));
            }
        }
    }
    let codes = |s: &Summary| s.actions.iter().map(|a| a.0.clone()).collect::<Vec<_>>();
    if codes(a) != codes(b) {
        out.push(format!("actions: [{}] → [{}]", codes(a).join(", "), codes(b).join(", ")));
    } else {
        for ((code, da), (_, db)) in a.actions.iter().zip(&b.actions) {
            if da != db {
                out.push(format!("date: {code} {} → {}", da.as_deref().unwrap_or("none"), db.as_deref().unwrap_or("none")));
            }
        }
    }
    out
}

/// Fills facts declared `default = "today"` with the input's date, so the server (whose today
/// is its own) and the working copy decide on the same day.
fn with_today(set: Option<&RuleSet>, input: &mut Input) {
    let (Some(set), Some(m)) = (set, input.facts.as_object_mut()) else { return };
    if let Some(k) = set.kind(&input.kind) {
        for f in &k.schema.facts {
            if f.default == Some(FactDefault::Today) && !m.contains_key(&f.name) {
                m.insert(f.name.clone(), Value::String(input.today.format("%Y-%m-%d").to_string()));
            }
        }
    }
}

/// No live rules: used when only recorded decisions are compared (each carries its answer).
struct Nothing;

impl Decider for Nothing {
    fn decide(&mut self, _input: &Input) -> Answer {
        Answer::NoPartnership
    }
}

/// A git revision of the rules folder, checked out into a temporary folder.
fn checkout(rules: &Path, rev: &str) -> Result<PathBuf, String> {
    let git = |args: &[&str]| -> Result<String, String> {
        let o = std::process::Command::new("git").arg("-C").arg(rules).args(args).output().map_err(|e| format!("cannot run git: {e}"))?;
        if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()) } else { Err(String::from_utf8_lossy(&o.stderr).trim().to_string()) }
    };
    let prefix = git(&["rev-parse", "--show-prefix"]).map_err(|e| format!("`{rev}` is not a folder, and {} is not in a git repository ({e})", rules.display()))?;
    git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")]).map_err(|_| format!("`{rev}` is neither a rules folder nor a git revision"))?;
    let dir = std::env::temp_dir().join(format!("cpc-rules-impact-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let archive = std::process::Command::new("git")
        .arg("-C")
        .arg(rules)
        .args(["archive", "--format=tar", rev, "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git archive: {e}"))?;
    let status = std::process::Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&dir)
        .stdin(archive.stdout.ok_or("no output from git archive")?)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err(format!("cannot extract {rev}:{prefix}"));
    }
    Ok(dir)
}

/// Runs the comparison and prints it.
pub(super) fn run(args: &ImpactArgs) -> u8 {
    let root = &args.rules.rules;
    let ids = match super::selected(root, &args.partnerships) {
        Ok(ids) => ids,
        Err(e) => return super::usage(e),
    };
    let mut temp = None;
    let (mut live, against): (Box<dyn Decider>, String) = match &args.against {
        None if args.record.is_some() => (Box::new(Nothing), "what was recorded".to_string()),
        Some(a) if Path::new(a).is_dir() => {
            if let Some(p) = super::folder::problem(Path::new(a)) {
                return super::usage(format!("--against: {p}"));
            }
            (Box::new(Folder::new(Path::new(a))), format!("the rules in {a}"))
        }
        Some(rev) => match checkout(root, rev) {
            Ok(dir) => {
                temp = Some(dir.clone());
                (Box::new(Folder::new(&dir)), format!("revision {rev} of {}", root.display()))
            }
            Err(e) => return super::usage(e),
        },
        None => match Server::connect(&args.conn) {
            Ok(s) => (Box::new(s), format!("the live rules at {}", args.conn.shown())),
            Err(e) => return super::usage(format!("{e:#}\n(or compare with a folder or git revision: --against <rules folder or revision>)")),
        },
    };
    let mut working = Folder::new(root);
    for id in &ids {
        if let Err(e) = working.set(id) {
            eprintln!("error: your working copy of {id} does not compile: {e}\nrun `cpc-rules check {id}` and fix it first");
            return RULE_PROBLEMS;
        }
    }
    let recorded = args.record.as_deref().map(|target| Recorded { target, days: args.days });
    let (cases_source, scenarios_source) = (Cases(root), Scenarios(root));
    let mut sources: Vec<&dyn FactSource> = Vec::new();
    if args.record.is_none() || args.against.is_some() {
        sources.extend([&cases_source as &dyn FactSource, &scenarios_source]);
    }
    if let Some(r) = &recorded {
        sources.push(r);
    }
    let mut inputs = Vec::new();
    for s in sources {
        match s.inputs(&ids) {
            Ok(i) => inputs.extend(i),
            Err(e) => return super::usage(e),
        }
    }
    let mut changed = Vec::new();
    for mut input in inputs.clone() {
        with_today(working.set(&input.partnership).as_ref().ok(), &mut input);
        let before = match &input.recorded {
            Some(d) => Answer::Decided(Summary::from(d)),
            None => live.decide(&input),
        };
        let after = working.decide(&input);
        let changes = differences(&before, &after);
        if !changes.is_empty() {
            changed.push(Changed { input, changes, live: before, working: after });
        }
    }
    if let Some(dir) = temp {
        let _ = std::fs::remove_dir_all(dir);
    }
    let cases = inputs.iter().filter(|i| i.source == "case").count();
    let recorded = inputs.iter().filter(|i| i.source == "recorded").count();
    let scenarios = inputs.len() - cases - recorded;
    let mut outcome_changes: BTreeMap<String, usize> = BTreeMap::new();
    for c in changed.iter().filter(|c| c.input.source == "recorded") {
        let o = |a: &Answer| match a {
            Answer::Decided(s) => s.outcome.clone(),
            _ => "no decision".to_string(),
        };
        let (a, b) = (o(&c.live), o(&c.working));
        if a != b {
            *outcome_changes.entry(format!("{a} → {b}")).or_default() += 1;
        }
    }
    let recorded_changed = changed.iter().filter(|c| c.input.source == "recorded").count();
    if args.json {
        let v = serde_json::json!({ "working_copy": root, "against": against, "compared": inputs.len(), "cases": cases, "scenarios": scenarios,
            "recorded": { "days": args.days, "replayed": recorded, "changed": recorded_changed, "outcome_changes": outcome_changes }, "changed": changed });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return OK;
    }
    println!("Your working copy ({}) compared with {against}:", root.display());
    println!("{} decisions compared ({cases} test cases, {scenarios} scenario runs, {recorded} recorded decisions); {} would change.", inputs.len(), changed.len());
    if args.record.is_some() {
        println!("Recorded decisions of the last {} days: {recorded} replayed, {recorded_changed} would be decided differently.", args.days);
        for (change, n) in &outcome_changes {
            println!("    outcome {change}: {n}");
        }
    }
    for c in &changed {
        println!("\n{} {} — {} {}: {}", c.input.partnership, c.input.kind, c.input.source, c.input.origin, c.input.label);
        for line in &c.changes {
            println!("    {line}");
        }
    }
    if changed.is_empty() {
        println!("Nothing would change.");
    }
    OK
}
