//! Finding the rules folder, and saying how to fix it when `--rules` points elsewhere.
//!
//! Why this exists: a policy lead naturally opens a terminal in the folder of the partnership
//! they are editing (`rules/barnsley`) and runs `cpc-rules test` there, where the default
//! `--rules rules` names nothing. Instead of "cannot read rules folder rules", the message says
//! where they are (a partnership folder, the rules folder itself, a partnership's tests folder)
//! and gives the exact `--rules` to pass.

use std::path::{Path, PathBuf};

/// Whether `dir` looks like a rules folder: it holds `vocabulary.toml`, or a partnership folder.
pub fn is_rules_folder(dir: &Path) -> bool {
    dir.join("vocabulary.toml").is_file()
        || std::fs::read_dir(dir).is_ok_and(|rd| rd.filter_map(Result::ok).any(|e| e.path().join("partnership.toml").is_file()))
}

/// Why `root` is not a usable rules folder, with the fix; `None` when it is one.
pub fn problem(root: &Path) -> Option<String> {
    if is_rules_folder(root) {
        return None;
    }
    let shown = root.display();
    // `--rules` names a partnership folder (or something inside one).
    if let Some((up, partnership)) = enclosing(root, "partnership.toml") {
        let fix = if root.is_absolute() { up.display().to_string() } else { root.join(relative_up(&up, root)).display().to_string() };
        return Some(format!(
            "`{shown}` is the partnership folder `{partnership}`, not the rules folder; pass the folder that holds vocabulary.toml and every partnership: --rules {fix}"
        ));
    }
    let cwd = std::env::current_dir().ok()?;
    // The current folder is the rules folder, a partnership folder, or inside one.
    if is_rules_folder(&cwd) {
        return Some(format!("`{shown}` is not a rules folder, but you are inside the rules folder itself: pass --rules . (or run from the project folder, one level up)"));
    }
    for (depth, dir) in cwd.ancestors().enumerate().skip(1).take(3) {
        if is_rules_folder(dir) {
            let ups = vec![".."; depth].join("/");
            let here = cwd.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let what = if cwd.join("partnership.toml").is_file() {
                format!("you are inside the partnership folder `{here}`")
            } else {
                format!("you are in `{here}`, inside the rules folder")
            };
            return Some(format!("`{shown}` is not a rules folder: {what}. Run from the project folder, or pass --rules {ups}"));
        }
    }
    if !root.exists() {
        return Some(format!(
            "`{shown}` is not a rules folder (there is no such folder here): run from the project folder (the one holding `rules/`), or pass --rules <path to the rules folder>"
        ));
    }
    Some(format!(
        "`{shown}` is not a rules folder (it has no vocabulary.toml and no partnership folders): run from the project folder, or pass --rules <path to the rules folder>"
    ))
}

/// The nearest folder (of `dir` and its parents) holding `marker`, as (its parent, its name).
fn enclosing(dir: &Path, marker: &str) -> Option<(PathBuf, String)> {
    let abs = std::fs::canonicalize(dir).ok()?;
    abs.ancestors().take(3).find(|d| d.join(marker).is_file()).and_then(|d| Some((d.parent()?.to_path_buf(), d.file_name()?.to_string_lossy().to_string())))
}

/// `../..` from `from` up to `to` (an ancestor of it).
fn relative_up(to: &Path, from: &Path) -> PathBuf {
    let from = std::fs::canonicalize(from).unwrap_or_else(|_| from.to_path_buf());
    let depth = from.ancestors().position(|a| a == to).unwrap_or(1);
    (0..depth).map(|_| "..").collect()
}
