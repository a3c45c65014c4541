//! Hot reload: watch the rules folder and reload what changed.
//!
//! Editors save a file in several steps (write a temporary file, rename, touch), so events are
//! debounced: a reload starts only once the folder has been quiet for the debounce interval.
//! A change inside `rules/<partnership>/` reloads that partnership; a change to shared files
//! (`shared/`, `calendar/`, `actions.toml`) reloads every partnership. A half-written file simply
//! fails to compile or test and is refused, leaving the last good set serving, and the next save
//! triggers another attempt.
//!
//! **The watcher never walks outside the rules folder.** It does not watch recursively: it
//! resolves the folders it needs (the rules folder, each partnership folder and its `tests/`,
//! `shared/`, `calendar/`) with [`super::source::resolve_inside`] and puts a non-recursive watch
//! on each one that stays inside the rules folder. A symlink to `/` or `/usr` costs nothing and
//! is never followed. After every change at the top level the set is resolved again, which is
//! how a Kubernetes ConfigMap swap (`..data` renamed over atomically, every entry a symlink
//! through it) is followed: the swap is a change at the top level, reloads everything, and the
//! watches move to the new timestamped folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::source::{resolve_inside, resolved_root};
use super::{ReloadReport, RuleStore};

/// Keeps the file watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
    task: tokio::task::JoinHandle<()>,
    watched: Arc<Mutex<Vec<PathBuf>>>,
}

impl WatchHandle {
    /// The folders being watched now (resolved paths, all inside the rules folder).
    pub fn watched(&self) -> Vec<PathBuf> {
        self.watched.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a changed path means for reloading.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Every partnership (a shared file changed).
    All,
    /// One partnership.
    One(String),
}

fn is_noise(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp") || name.starts_with('#')
}

/// What a change to `name`, directly in the rules folder, means.
fn top_level_scope(name: &str) -> Option<Scope> {
    match name {
        // `..data` and `..2026_…`: a Kubernetes ConfigMap swap changes everything at once.
        _ if name.starts_with("..") => Some(Scope::All),
        _ if is_noise(name) => None,
        "shared" | "calendar" | "actions.toml" => Some(Scope::All),
        // A folder (partnership) appeared, went, or changed permissions; files such as
        // README.md do not matter.
        _ if !name.contains('.') => Some(Scope::One(name.to_string())),
        _ => None,
    }
}

/// The folders to watch: resolved path → what a change in it means (`None` for the rules
/// folder itself, whose entries are judged by [`top_level_scope`]).
fn folders_to_watch(root: &Path) -> BTreeMap<PathBuf, Option<Scope>> {
    let real_root = resolved_root(root);
    let mut out = BTreeMap::new();
    out.insert(real_root.clone(), None);
    let Ok(entries) = std::fs::read_dir(root) else { return out };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let scope = match name.as_str() {
            "shared" | "calendar" => Scope::All,
            _ => Scope::One(name.clone()),
        };
        let path = entry.path();
        match resolve_inside(&real_root, &path) {
            Ok(Some(real)) if real.is_dir() => {
                out.insert(real, Some(scope.clone()));
                if let Ok(Some(tests)) = resolve_inside(&real_root, &path.join("tests")) {
                    if tests.is_dir() {
                        out.insert(tests, Some(scope));
                    }
                }
            }
            Ok(_) => {}
            Err((_, why)) => tracing::warn!(entry = %name, %why, "not watching a rules folder entry"),
        }
    }
    out
}

/// What a changed path means, given the folders being watched.
fn scope_of(real_root: &Path, folders: &BTreeMap<PathBuf, Option<Scope>>, path: &Path) -> Option<Scope> {
    let name = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    if let Some(Some(scope)) = folders.get(path) {
        // The watched folder itself (its permissions changed, it was removed).
        return Some(scope.clone());
    }
    let parent = path.parent()?;
    if parent == real_root {
        return top_level_scope(name);
    }
    match folders.get(parent) {
        Some(Some(scope)) if !is_noise(name) => Some(scope.clone()),
        _ => None,
    }
}

/// Points the watcher at `wanted`, dropping watches no longer wanted. Returns the first error
/// watching the rules folder itself.
fn rewatch(watcher: &Mutex<notify::RecommendedWatcher>, current: &mut BTreeMap<PathBuf, Option<Scope>>, wanted: BTreeMap<PathBuf, Option<Scope>>, real_root: &Path) -> notify::Result<()> {
    let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
    for gone in current.keys().filter(|p| !wanted.contains_key(*p)) {
        let _ = w.unwatch(gone);
    }
    let mut result = Ok(());
    for (dir, _) in wanted.iter().filter(|(p, _)| !current.contains_key(*p)) {
        if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
            if dir == real_root {
                result = Err(e);
            } else {
                tracing::warn!(folder = %dir.display(), error = %e, "cannot watch a rules folder");
            }
        }
    }
    *current = wanted;
    result
}

/// Starts watching `store`'s rules folder; changes are reloaded after `debounce` of quiet.
/// Fails if the rules folder itself cannot be watched: hot reload is never silently off.
/// Must be called inside a Tokio runtime.
pub fn spawn(store: Arc<RuleStore>, debounce: Duration) -> notify::Result<WatchHandle> {
    let root = store.root().to_path_buf();
    let real_root = resolved_root(&root);
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let problem_store = Arc::downgrade(&store);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            if event.kind.is_access() {
                return;
            }
            for p in event.paths {
                let _ = tx.send(p);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "rules folder watcher error; reload with SIGHUP or ReloadRules");
            if let Some(store) = problem_store.upgrade() {
                store.set_watch_problem(Some(format!("the rules folder watcher failed: {e}")));
            }
        }
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    let mut folders = BTreeMap::new();
    rewatch(&watcher, &mut folders, folders_to_watch(&root), &real_root)?;
    let watched = Arc::new(Mutex::new(folders.keys().cloned().collect::<Vec<_>>()));
    let (task_watcher, task_watched) = (Arc::clone(&watcher), Arc::clone(&watched));
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut paths = vec![first];
            // Debounce: keep collecting until the folder is quiet.
            while let Ok(Some(p)) = tokio::time::timeout(debounce, rx.recv()).await {
                paths.push(p);
            }
            let scopes: BTreeSet<Scope> = paths.iter().filter_map(|p| scope_of(&real_root, &folders, p)).collect();
            // Anything at the top level may have moved a folder (or swapped them all): resolve
            // the watches again.
            if paths.iter().any(|p| p.parent() == Some(real_root.as_path())) {
                match rewatch(&task_watcher, &mut folders, folders_to_watch(&root), &real_root) {
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch the rules folder any more; reload with SIGHUP or ReloadRules");
                        store.set_watch_problem(Some(format!("cannot watch the rules folder any more: {e}")));
                    }
                    Ok(()) => store.set_watch_problem(None),
                }
                if let Ok(mut w) = task_watched.lock() {
                    *w = folders.keys().cloned().collect();
                }
            }
            if scopes.is_empty() {
                continue;
            }
            let all = scopes.contains(&Scope::All);
            let ids: Vec<String> = if all {
                Vec::new()
            } else {
                // Only partnerships: a new folder without partnership.toml is not one.
                let known: BTreeSet<String> = super::partnership_ids(&root).unwrap_or_default().into_iter().chain(store.ids()).collect();
                scopes.into_iter().filter_map(|s| if let Scope::One(id) = s { Some(id) } else { None }).filter(|id| known.contains(id)).collect()
            };
            if ids.is_empty() && !all {
                continue;
            }
            let store = Arc::clone(&store);
            let report = tokio::task::spawn_blocking(move || store.reload(&ids)).await;
            if let Ok(report) = report {
                log_report("file change", &report);
            }
        }
    });
    Ok(WatchHandle { _watcher: watcher, task, watched })
}

/// Logs what a reload did.
pub fn log_report(trigger: &str, report: &ReloadReport) {
    tracing::info!(
        trigger,
        swapped = report.swapped.len(),
        unchanged = report.unchanged.len(),
        refused = report.refused.len(),
        "rules reload finished"
    );
}

/// Reloads every partnership on each SIGHUP. Must be called inside a Tokio runtime.
#[cfg(unix)]
pub fn spawn_sighup(store: Arc<RuleStore>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            let store = Arc::clone(&store);
            if let Ok(report) = tokio::task::spawn_blocking(move || store.reload(&[])).await {
                log_report("SIGHUP", &report);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_what_must_reload() {
        let root = Path::new("/r");
        let mut folders = BTreeMap::new();
        folders.insert(PathBuf::from("/r"), None);
        folders.insert(PathBuf::from("/r/york"), Some(Scope::One("york".into())));
        folders.insert(PathBuf::from("/r/york/tests"), Some(Scope::One("york".into())));
        folders.insert(PathBuf::from("/r/shared"), Some(Scope::All));
        let scope = |p: &str| scope_of(root, &folders, Path::new(p));
        assert_eq!(scope("/r/york/plan_type.rhai"), Some(Scope::One("york".into())));
        assert_eq!(scope("/r/york/tests/a.toml"), Some(Scope::One("york".into())));
        assert_eq!(scope("/r/york"), Some(Scope::One("york".into())));
        assert_eq!(scope("/r/shared/complaints.rhai"), Some(Scope::All));
        assert_eq!(scope("/r/actions.toml"), Some(Scope::All));
        assert_eq!(scope("/r/..data"), Some(Scope::All));
        assert_eq!(scope("/r/york/.plan_type.rhai.swp"), None);
        assert_eq!(scope("/r/README.md"), None);
        assert_eq!(scope("/elsewhere/x"), None);
        assert_eq!(scope("/r/york/deeper/x.rhai"), None);
    }
}
