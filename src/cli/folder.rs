//! Finding the rules folder, and saying how to fix it when `--rules` points elsewhere.
//!
//! Why this exists: a policy lead naturally opens a terminal in the folder of the partnership
//! they are editing (`rules/barnsley`) and runs `cpc-rules test` there, where the default
//! `--rules rules` names nothing. Instead of "cannot read rules folder rules", the message says
//! where they are (a partnership folder, the rules folder itself, a partnership's tests folder)
//! and gives the exact `--rules` to pass.

use std::path::{Path, PathBuf};

/// Whether `dir` looks like a rules folder: it holds `vocabulary.toml`, or a partnership folder.
pub(super) fn is_rules_folder(dir: &Path) -> bool {
    dir.join("vocabulary.toml").is_file()
        || std::fs::read_dir(dir).is_ok_and(|rd| rd.filter_map(Result::ok).any(|e| e.path().join("partnership.toml").is_file()))
}

/// Why `root` is not a usable rules folder, with the fix; `None` when it is one.
pub(super) fn problem(root: &Path) -> Option<String> {
    if is_rules_folder(root) {
        return None;
    }
    let shown = root.display();
    // `--rules` names a partnership folder (or something inside one).
    if let Some((up, partnership)) = enclosing(root, "partnership.toml") {
        let fix = shown_from_cwd(&up);
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

/// `dir` as a person in the current folder would type it: relative when it is below or above
/// the current folder, absolute otherwise.
fn shown_from_cwd(dir: &Path) -> String {
    let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) else { return dir.display().to_string() };
    if let Ok(rel) = dir.strip_prefix(&cwd) {
        return if rel.as_os_str().is_empty() { ".".into() } else { rel.display().to_string() };
    }
    if let Some(depth) = cwd.ancestors().position(|a| a == dir) {
        return vec![".."; depth].join("/");
    }
    dir.display().to_string()
}
