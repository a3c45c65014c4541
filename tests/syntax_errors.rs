//! The table of common mistakes (`tests/syntax_errors.toml`): each script, compiled with York's
//! real rules around it through `RuleSet::compile`, must produce a first problem at the line,
//! with the message and help, the table gives. A policy lead reads these messages; they must
//! point to the fix, not to where the parser happened to give up.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::path::Path;

use cpc_rules::engine::{Limits, RuleSet, SourceFile};
use cpc_rules::store::read_sources;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    mistake: Vec<Mistake>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mistake {
    name: String,
    script: String,
    line: usize,
    message: String,
    help: String,
    #[serde(default)]
    source: Option<String>,
}

#[test]
fn every_common_mistake_gets_a_message_that_points_to_the_fix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table: Table = toml::from_str(&std::fs::read_to_string(root.join("tests/syntax_errors.toml")).expect("read the table")).expect("parse the table");
    let sources = read_sources(&root.join("rules"), "york").expect("York's sources");
    let mut failures = Vec::new();
    for m in &table.mistake {
        let mut src = sources.clone();
        let path = "york/child_invitation.rhai";
        src.scripts.retain(|f| f.path != path);
        src.scripts.push(SourceFile { path: path.into(), text: m.script.clone() });
        let diags = match RuleSet::compile(&src, &Limits::default()) {
            Ok(_) => {
                failures.push(format!("{}: compiled without a problem", m.name));
                continue;
            }
            Err(d) => d,
        };
        let Some(d) = diags.iter().find(|d| d.location.file == path) else {
            failures.push(format!("{}: no problem in the script; got {:?}", m.name, diags.iter().map(|d| d.one_line()).collect::<Vec<_>>()));
            continue;
        };
        let mut wrong = Vec::new();
        if d.location.line != Some(m.line) {
            wrong.push(format!("line {:?}, not {}", d.location.line, m.line));
        }
        if !d.message.contains(&m.message) {
            wrong.push(format!("message lacks {:?}", m.message));
        }
        if !d.help.as_deref().unwrap_or_default().contains(&m.help) {
            wrong.push(format!("help lacks {:?}", m.help));
        }
        if let Some(s) = &m.source {
            if !d.source_line.as_deref().unwrap_or_default().contains(s.as_str()) {
                wrong.push(format!("source line {:?} lacks {s:?}", d.source_line));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}\n    got: {}", m.name, wrong.join("; "), d.one_line()));
        }
    }
    assert!(failures.is_empty(), "{} of {} mistakes get the wrong message:\n{}", failures.len(), table.mistake.len(), failures.join("\n"));
}
