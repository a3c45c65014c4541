//! Documentation generated from the rules: the facts each decision needs, and the one command
//! that rewrites every generated block (`cpc-rules docs --write`) so the README and
//! `docs/helpers.md` never drift silently (a test names this command when they do).

use std::collections::BTreeMap;
use std::path::Path;

use cpc_rules::engine::Limits;
use cpc_rules::facts::Kind;
use cpc_rules::store::{build, partnership_ids};

/// The README's table of the facts each decision kind takes, and which partnerships' rules read
/// each one (a call needs a fact only when the rules read it on the way to its decision).
pub(super) fn facts_markdown(root: &Path) -> Result<String, Vec<String>> {
    let limits = Limits::default();
    let ids = partnership_ids(root).map_err(|e| vec![format!("cannot read the rules folder {}: {e}", root.display())])?;
    let builds: Vec<_> = ids.iter().map(|id| build(root, id, &limits)).collect();
    let problems: Vec<String> = builds.iter().flat_map(|b| b.diagnostics.iter().map(cpc_rules::engine::Diagnostic::one_line)).collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let sets: Vec<_> = builds.iter().filter_map(|b| b.set.as_ref()).collect();
    let Some(first) = sets.first() else { return Err(vec!["no partnerships".into()]) };
    let mut s = String::from(
        "A call carries a fact only when the partnership's rules read it on the way to the decision; a fact that \
         is given is always checked in full. **all** means every partnership's rules read the fact (on some path); \
         otherwise the partnerships whose rules read it are named. A fact no rules read is accepted and checked, \
         but never needed.\n\n",
    );
    for kind in Kind::ALL {
        let Some(schema) = first.vocabulary().kind(kind.as_str()) else { continue };
        s.push_str(&format!("**`{}`**\n\n| fact | type | read by |\n|---|---|---|\n", kind.as_str()));
        for f in &schema.facts {
            let readers: Vec<&str> = sets
                .iter()
                .filter(|set| set.kind(kind.as_str()).is_some_and(|k| k.reads.iter().any(|r| *r == f.name)))
                .map(|set| set.id())
                .collect();
            let by = match readers.len() {
                0 => "none (accepted, never needed)".to_string(),
                n if n == sets.len() => "all".to_string(),
                _ => readers.join(", "),
            };
            let default = if f.default.is_some() { "; defaults to today in England" } else { "" };
            s.push_str(&format!("| `{}` | {}{default} | {by} |\n", f.name, f.ty.describe()));
        }
        s.push('\n');
    }
    Ok(s)
}

fn replace_block(doc: &str, name: &str, content: &str) -> Result<String, String> {
    let open = format!("<!-- {name}:begin -->\n");
    let close = format!("<!-- {name}:end -->");
    let begin = doc.find(&open).ok_or_else(|| format!("README.md has no `{}` marker", open.trim()))? + open.len();
    let end = doc.find(&close).ok_or_else(|| format!("README.md has no `{close}` marker"))?;
    Ok(format!("{}{}{}", &doc[..begin], content, &doc[end..]))
}

/// Regenerates every generated block: the README's partnership and facts tables, and
/// `docs/helpers.md`. With `write` false, reports which are out of date (exit 1 if any).
pub(super) fn docs(root: &Path, project: &Path, write: bool) -> Result<Vec<String>, Vec<String>> {
    let mut generated: BTreeMap<&str, String> = BTreeMap::new();
    generated.insert("matrix", super::matrix::render_from_disk(root)?);
    generated.insert("facts", facts_markdown(root)?);
    let readme_path = project.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).map_err(|e| vec![format!("{}: {e}", readme_path.display())])?;
    let mut updated = readme.clone();
    for (name, content) in &generated {
        updated = replace_block(&updated, name, content).map_err(|e| vec![e])?;
    }
    let helpers_path = project.join("docs").join("helpers.md");
    let helpers = super::render::helpers_markdown();
    let mut stale = Vec::new();
    if updated != readme {
        stale.push("README.md".to_string());
        if write {
            std::fs::write(&readme_path, &updated).map_err(|e| vec![format!("{}: {e}", readme_path.display())])?;
        }
    }
    if std::fs::read_to_string(&helpers_path).ok().as_deref() != Some(helpers.as_str()) {
        stale.push("docs/helpers.md".to_string());
        if write {
            std::fs::write(&helpers_path, &helpers).map_err(|e| vec![format!("{}: {e}", helpers_path.display())])?;
        }
    }
    Ok(stale)
}
