//! Reading a partnership's files from the rules folder into [`RuleSources`], under the folder
//! policy.
//!
//! This is the only code that reads rule files. The policy (issue 11 §7):
//!
//! * **Nothing outside the rules folder.** Every file and folder is resolved (symlinks followed)
//!   and must stay inside the resolved rules folder. A symlink that leads outside — to `/`,
//!   `/usr`, `/etc/passwd` — is neither loaded nor watched: inside a partnership it refuses that
//!   partnership with an `outside-rules-folder` diagnostic; at the top level it is listed in
//!   [`Scan::skipped`] and logged.
//! * **Symlinks inside are fine.** Kubernetes mounts a ConfigMap as `<dir>/..data ->
//!   ..2026_12_02_…/` with every entry a symlink `name -> ..data/name`, and swaps `..data`
//!   atomically; everything resolves inside the folder, so it loads, and the watcher follows the
//!   swap. Names starting with `.` are never partnerships.
//! * **Unreadable is a refusal, not an absence.** A partnership folder (or file) that cannot be
//!   read is reported with the error, so a reload is refused and shown in `ListPartnerships`, the
//!   metrics and the log — never skipped silently.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::engine::{Diagnostic, RuleSources, SourceFile};

/// Top-level folders that are not partnerships.
const NOT_PARTNERSHIPS: &[&str] = &["shared", "calendar"];

/// What is in a rules folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Partnership ids: sub-folders with a `partnership.toml`, or that could not be read.
    pub ids: Vec<String>,
    /// Top-level entries neither loaded nor watched, each with the reason.
    pub skipped: Vec<String>,
}


fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).to_string_lossy().replace('\\', "/")
}

fn io_diag(code: &'static str, file: String, message: String) -> Diagnostic {
    Diagnostic::whole_file(code, file, message)
}

/// The resolved rules folder (symlinks followed), or the folder as given if it cannot be.
pub fn resolved_root(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// Where `p` really is, if that is inside `real_root`. `Ok(None)` when it does not exist; the
/// error is a diagnostic code (`outside-rules-folder` or `io`) and a message.
pub fn resolve_inside(real_root: &Path, p: &Path) -> Result<Option<PathBuf>, (&'static str, String)> {
    match std::fs::canonicalize(p) {
        Ok(real) if real.starts_with(real_root) => Ok(Some(real)),
        Ok(real) => Err(("outside-rules-folder", format!("resolves to {}, outside the rules folder; it is neither loaded nor watched", real.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(("io", format!("cannot read: {e}"))),
    }
}

fn read(root: &Path, real_root: &Path, p: &Path) -> Result<SourceFile, Diagnostic> {
    let path = rel(root, p);
    match resolve_inside(real_root, p) {
        Err((code, m)) => return Err(io_diag(code, path, m)),
        Ok(None) => return Err(io_diag("io", path, "cannot read: the file does not exist".into())),
        Ok(Some(_)) => {}
    }
    std::fs::read_to_string(p).map(|text| SourceFile { path: path.clone(), text }).map_err(|e| io_diag("io", path, format!("cannot read: {e}")))
}

/// The files in `dir` ending `.ext`, sorted. A missing folder is empty; an unreadable one, or one
/// that resolves outside the rules folder, is a diagnostic.
fn list(root: &Path, real_root: &Path, dir: &Path, ext: &str, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    match resolve_inside(real_root, dir) {
        Err((code, m)) => {
            diags.push(io_diag(code, rel(root, dir), m));
            return Vec::new();
        }
        Ok(None) => return Vec::new(),
        Ok(Some(_)) => {}
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            diags.push(io_diag("io", rel(root, dir), format!("cannot read the folder: {e}")));
            return Vec::new();
        }
    };
    let mut v = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => {
                let p = e.path();
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || !p.extension().is_some_and(|x| x == ext) {
                    continue;
                }
                // Whether it is a file is decided by `read`, which also checks where it leads.
                if !p.is_dir() {
                    v.push(p);
                }
            }
            Err(e) => diags.push(io_diag("io", rel(root, dir), format!("cannot read the folder: {e}"))),
        }
    }
    v.sort();
    v
}

/// What is in a rules folder: its partnerships, and the top-level entries skipped and why.
pub fn scan(root: &Path) -> std::io::Result<Scan> {
    let real_root = resolved_root(root);
    let mut scan = Scan::default();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if name.starts_with('.') || NOT_PARTNERSHIPS.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        match resolve_inside(&real_root, &path) {
            Err(("outside-rules-folder", m)) => {
                // One that looks like a partnership is refused by its build (so the refusal is
                // shown where that partnership's failures are); anything else is skipped. Either
                // way nothing is read from or watched there.
                if path.join("partnership.toml").is_file() {
                    scan.ids.push(name.clone());
                }
                scan.skipped.push(format!("{name}: {m}"));
                continue;
            }
            // Unreadable: a partnership we cannot see into is reported, not skipped.
            Err(_) => {
                scan.ids.push(name);
                continue;
            }
            Ok(None) => continue, // a dangling symlink, mid-swap
            Ok(Some(real)) if !real.is_dir() => continue,
            Ok(Some(_)) => {}
        }
        match std::fs::metadata(path.join("partnership.toml")) {
            Ok(m) if m.is_file() => scan.ids.push(name),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // Unreadable: a partnership we cannot see into is reported, not skipped.
            Err(_) => scan.ids.push(name),
        }
    }
    scan.ids.sort();
    scan.skipped.sort();
    for s in &scan.skipped {
        tracing::warn!(entry = %s, "rules folder entry skipped");
    }
    Ok(scan)
}

/// Reads one partnership's sources from disk, refusing anything that resolves outside the rules
/// folder: every problem reading them is a diagnostic, and any problem refuses the partnership.
pub fn read_partnership(root: &Path, id: &str) -> Result<RuleSources, Vec<Diagnostic>> {
    let real_root = resolved_root(root);
    let mut diagnostics = Vec::new();
    let dir = root.join(id);
    if let Err((code, m)) = resolve_inside(&real_root, &dir) {
        diagnostics.push(io_diag(code, id.to_string(), m));
        return Err(diagnostics);
    }
    let ok = |r: Result<SourceFile, Diagnostic>, diags: &mut Vec<Diagnostic>| match r {
        Ok(f) => Some(f),
        Err(d) => {
            diags.push(d);
            None
        }
    };
    let metadata = ok(read(root, &real_root, &dir.join("partnership.toml")), &mut diagnostics);
    let calendar = ok(read(root, &real_root, &root.join("calendar").join("bank-holidays.toml")), &mut diagnostics);
    let actions = ok(read(root, &real_root, &root.join("actions.toml")), &mut diagnostics);
    let vocabulary = ok(read(root, &real_root, &root.join("vocabulary.toml")), &mut diagnostics);
    let files = |dir: &Path, ext: &str, diags: &mut Vec<Diagnostic>| -> Vec<SourceFile> {
        list(root, &real_root, dir, ext, diags).iter().filter_map(|p| ok(read(root, &real_root, p), diags)).collect()
    };
    let scripts = files(&dir, "rhai", &mut diagnostics);
    let shared = files(&root.join("shared"), "rhai", &mut diagnostics);
    let cases = files(&dir.join("tests"), "toml", &mut diagnostics);
    match (metadata, calendar, actions, vocabulary) {
        (Some(metadata), Some(calendar), Some(actions), Some(vocabulary)) if diagnostics.is_empty() => {
            Ok(RuleSources { id: id.to_string(), metadata, scripts, shared, calendar, actions, vocabulary, cases })
        }
        _ => Err(diagnostics),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn bundled() -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")).to_path_buf()
    }

    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read") {
            let e = e.expect("entry");
            if e.path().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
            }
        }
    }

    #[test]
    fn symlinks_outside_are_skipped_or_refused_and_inside_are_fine() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("rules");
        for part in ["calendar", "shared", "york"] {
            copy(&bundled().join(part), &root.join(part));
        }
        std::fs::copy(bundled().join("actions.toml"), root.join("actions.toml")).expect("copy");
        symlink("/", root.join("everything")).expect("symlink");
        symlink("/usr", root.join("usr")).expect("symlink");
        symlink("york", root.join("york-alias")).expect("symlink");
        let s = scan(&root).expect("scan");
        assert_eq!(s.ids, vec!["york".to_string(), "york-alias".to_string()]);
        assert!(s.skipped.iter().any(|m| m.starts_with("everything:") && m.contains("outside the rules folder")), "{:?}", s.skipped);
        assert!(s.skipped.iter().any(|m| m.starts_with("usr:")), "{:?}", s.skipped);

        // A script symlinked outside refuses the partnership, naming the file.
        symlink("/etc/hostname", root.join("york/stolen.rhai")).expect("symlink");
        let diags = read_partnership(&root, "york").err().unwrap_or_default();
        assert!(diags.iter().any(|d| d.code == "outside-rules-folder" && d.location.file == "york/stolen.rhai"), "{diags:?}");
    }

    #[test]
    fn a_partnership_folder_that_cannot_be_resolved_is_reported_not_skipped() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("rules");
        std::fs::create_dir_all(&root).expect("mkdir");
        symlink("loop", root.join("loop")).expect("symlink");
        let s = scan(&root).expect("scan");
        assert_eq!(s.ids, vec!["loop".to_string()]);
        let diags = read_partnership(&root, "loop").err().unwrap_or_default();
        assert!(diags.iter().any(|d| d.code == "io" && d.location.file == "loop"), "{diags:?}");
    }

    #[test]
    fn a_partnership_folder_moved_outside_is_refused_not_dropped() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("rules");
        copy(&bundled().join("york"), &tmp.path().join("elsewhere"));
        std::fs::create_dir_all(&root).expect("mkdir");
        symlink(tmp.path().join("elsewhere"), root.join("york")).expect("symlink");
        let s = scan(&root).expect("scan");
        assert_eq!(s.ids, vec!["york".to_string()]);
        let diags = read_partnership(&root, "york").err().unwrap_or_default();
        assert!(diags.iter().any(|d| d.code == "outside-rules-folder"), "{diags:?}");
    }

    /// (Skipped when run as root, for whom permissions do not apply.)
    #[test]
    fn an_unreadable_partnership_folder_is_reported_not_skipped() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("rules");
        copy(&bundled().join("york"), &root.join("york"));
        let york = root.join("york");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&york, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        if std::fs::read_dir(&york).is_ok() {
            // Running as root: permissions do not apply, nothing to test.
            std::fs::set_permissions(&york, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            return;
        }
        let s = scan(&root).expect("scan");
        let r = read_partnership(&root, "york");
        std::fs::set_permissions(&york, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(s.ids, vec!["york".to_string()]);
        let diags = r.err().unwrap_or_default();
        assert!(diags.iter().any(|d| d.location.file.starts_with("york") && d.message.contains("ermission")), "{diags:?}");
    }
}
