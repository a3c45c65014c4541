//! `cpc-rules assumptions`: the register of every assumption the rules make, for sign-off.
//!
//! Why this exists: where a partnership's guide is silent the scripts state what they assume
//! (`assumption(…)` instead of `reason(…)`), and the partnership must confirm or correct each.
//! This lists them all — rule id, text, the guide section cited, and every place in the scripts
//! that gives it (file:line) — found statically from each script's syntax tree, so an
//! assumption no test reaches is listed too. Texts worked out at run time (with `${…}`) are
//! taken from running every test case and scenario, which also shows which of them meet it.

use std::collections::BTreeMap;
use std::path::Path;

use rhai::{ASTNode, Expr};
use serde::Serialize;

use super::impact::{Answer, Decider, FactSource, Folder};
use super::{OK, RULE_PROBLEMS, RulesArg};

/// `cpc-rules assumptions` arguments.
#[derive(clap::Args, Clone)]
pub(super) struct AssumptionsArgs {
    #[command(flatten)]
    rules: RulesArg,
    /// Only these partnerships (default: all).
    partnerships: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One assumption of one partnership.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Assumption {
    /// Partnership id.
    pub partnership: String,
    /// Rule id.
    pub rule_id: String,
    /// What is assumed (the text as written, or as the rules produced it).
    pub text: String,
    /// The guide section cited.
    pub section: String,
    /// The guide that section belongs to.
    pub document: String,
    /// Every place in the scripts that gives it: `file:line`.
    pub used_at: Vec<String>,
    /// Test cases and scenarios whose decision carries it.
    pub seen_in: Vec<String>,
}

/// An `assumption(id, section, text)` call found in a script.
struct Site {
    rule_id: String,
    section: Option<String>,
    text: Option<String>,
    at: String,
}

fn literal(e: &Expr) -> Option<String> {
    match e {
        Expr::StringConstant(s, _) => Some(s.to_string()),
        _ => None,
    }
}

/// Every `assumption(…)` call with a literal rule id in `text`.
fn sites(path: &str, text: &str) -> Result<Vec<Site>, String> {
    let engine = rhai::Engine::new_raw();
    let ast = engine.compile(text).map_err(|e| format!("{path}: {e} (run `cpc-rules check`)"))?;
    let mut out = Vec::new();
    ast.walk(&mut |nodes: &[ASTNode]| {
        let call = match nodes.last() {
            Some(ASTNode::Expr(Expr::FnCall(c, pos))) => Some((c, *pos)),
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(c, pos))) => Some((c, *pos)),
            _ => None,
        };
        if let Some((c, pos)) = call {
            if c.name.as_str() == "assumption" {
                if let Some(rule_id) = c.args.first().and_then(literal) {
                    out.push(Site {
                        rule_id,
                        section: c.args.get(1).and_then(literal),
                        text: c.args.get(2).and_then(literal),
                        at: format!("{path}:{}", pos.line().unwrap_or(0)),
                    });
                }
            }
        }
        true
    });
    Ok(out)
}

/// The register for the `only` partnerships (all when empty).
pub(super) fn register(root: &Path, ids: &[String]) -> Result<Vec<Assumption>, String> {
    let mut out = Vec::new();
    let mut folder = Folder::new(root);
    let inputs: Vec<super::impact::Input> = {
        let cases = super::impact::Cases(root).inputs(ids)?;
        let scenarios = super::impact::Scenarios(root).inputs(ids)?;
        cases.into_iter().chain(scenarios).collect()
    };
    for id in ids {
        let sources = cpc_rules::store::read_sources(root, id).map_err(|d| d.iter().map(|d| d.one_line()).collect::<Vec<_>>().join("\n"))?;
        let meta: cpc_rules::engine::Metadata = toml::from_str(&sources.metadata.text).map_err(|e| format!("{}: {e}", sources.metadata.path))?;
        let document_of = |section: &str| meta.documents.iter().find(|d| d.sections.iter().any(|s| s == section)).map(|d| d.title.clone()).unwrap_or_default();
        // Statically: every call site, grouped by rule id in the order first met.
        let mut by_id: BTreeMap<String, Assumption> = BTreeMap::new();
        let mut order = Vec::new();
        for f in sources.scripts.iter().chain(&sources.shared) {
            for s in sites(&f.path, &f.text)? {
                let entry = by_id.entry(s.rule_id.clone()).or_insert_with(|| {
                    order.push(s.rule_id.clone());
                    Assumption {
                        partnership: id.clone(),
                        rule_id: s.rule_id.clone(),
                        text: String::new(),
                        section: String::new(),
                        document: String::new(),
                        used_at: Vec::new(),
                        seen_in: Vec::new(),
                    }
                });
                if entry.text.is_empty() {
                    entry.text = s.text.clone().unwrap_or_default();
                }
                if entry.section.is_empty() {
                    if let Some(sec) = &s.section {
                        entry.section = sec.clone();
                        entry.document = document_of(sec);
                    }
                }
                entry.used_at.push(s.at);
            }
        }
        // Dynamically: which cases and scenarios meet each one, and texts worked out at run time.
        if folder.set(id).is_err() {
            return Err(format!("{id}'s rules do not compile; run `cpc-rules check {id}`"));
        }
        for input in inputs.iter().filter(|i| &i.partnership == id) {
            let Answer::Decided(d) = folder.decide(input) else { continue };
            for (rule_id, _, text) in d.reasons.iter().filter(|r| r.1) {
                let entry = by_id.entry(rule_id.clone()).or_insert_with(|| {
                    order.push(rule_id.clone());
                    Assumption {
                        partnership: id.clone(),
                        rule_id: rule_id.clone(),
                        text: String::new(),
                        section: String::new(),
                        document: String::new(),
                        used_at: vec!["(built at run time; not found as a literal `assumption(\"…\")` call)".into()],
                        seen_in: Vec::new(),
                    }
                });
                if entry.text.is_empty() {
                    entry.text = text.clone();
                }
                let seen = if input.source == "case" { format!("case {} ({})", input.origin, input.label) } else { format!("scenario \"{}\"", input.label) };
                if !entry.seen_in.contains(&seen) {
                    entry.seen_in.push(seen);
                }
            }
        }
        for rid in order {
            if let Some(mut a) = by_id.remove(&rid) {
                if a.text.is_empty() {
                    a.text = "(worked out when the rule runs, and no test case or scenario reaches it: see the script)".into();
                }
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// Prints the register.
pub(super) fn run(args: &AssumptionsArgs) -> u8 {
    let root = &args.rules.rules;
    let ids = match super::selected(root, &args.partnerships) {
        Ok(ids) => ids,
        Err(e) => return super::usage(e),
    };
    let register = match register(root, &ids) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return RULE_PROBLEMS;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&register).unwrap_or_default());
        return OK;
    }
    for id in &ids {
        let mine: Vec<&Assumption> = register.iter().filter(|a| &a.partnership == id).collect();
        println!("{id} — {} assumption(s) for the partnership to confirm or correct\n", mine.len());
        for a in mine {
            println!("  {}", a.rule_id);
            println!("    {}", a.text);
            println!("    cites: \"{}\" ({})", a.section, a.document);
            println!("    given at: {}", a.used_at.join(", "));
            match a.seen_in.len() {
                0 => println!("    no test case or scenario reaches it"),
                n => println!("    reached by {n} test case(s)/scenario(s), e.g. {}", a.seen_in[0]),
            }
            println!();
        }
    }
    OK
}
