//! Hot reload: watch the rules folder and reload what changed.
//!
//! Editors save a file in several steps (write a temporary file, rename, touch), so events are
//! debounced: a reload starts only once the folder has been quiet for the debounce interval.
//! A change inside `rules/<partnership>/` reloads that partnership; a change to shared files
//! (`shared/`, `calendar/`, `actions.toml`) reloads every partnership. A half-written file simply
//! fails to compile or test and is refused, leaving the last good set serving, and the next save
//! triggers another attempt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{ReloadReport, RuleStore};

/// Keeps the file watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
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

fn scope_of(root: &Path, path: &Path) -> Option<Scope> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel.components().filter_map(|c| c.as_os_str().to_str());
    let first = parts.next()?;
    let file = rel.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    if is_noise(file) || is_noise(first) {
        return None;
    }
    match first {
        "shared" | "calendar" | "actions.toml" => Some(Scope::All),
        _ if parts.next().is_some() => Some(Scope::One(first.to_string())),
        _ => None,
    }
}

/// Starts watching `store`'s rules folder; changes are reloaded after `debounce` of quiet.
/// Must be called inside a Tokio runtime.
pub fn spawn(store: Arc<RuleStore>, debounce: Duration) -> notify::Result<WatchHandle> {
    let root: PathBuf = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if event.kind.is_access() {
                return;
            }
            for p in event.paths {
                let _ = tx.send(p);
            }
        }
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut scopes = BTreeSet::new();
            scopes.extend(scope_of(&root, &first));
            // Debounce: keep collecting until the folder is quiet.
            while let Ok(Some(p)) = tokio::time::timeout(debounce, rx.recv()).await {
                scopes.extend(scope_of(&root, &p));
            }
            if scopes.is_empty() {
                continue;
            }
            let ids: Vec<String> = if scopes.contains(&Scope::All) {
                Vec::new()
            } else {
                scopes.into_iter().filter_map(|s| if let Scope::One(id) = s { Some(id) } else { None }).collect()
            };
            let store = Arc::clone(&store);
            let report = tokio::task::spawn_blocking(move || store.reload(&ids)).await;
            if let Ok(report) = report {
                log_report("file change", &report);
            }
        }
    });
    Ok(WatchHandle { _watcher: watcher, task })
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
        assert_eq!(scope_of(root, Path::new("/r/york/plan_type.rhai")), Some(Scope::One("york".into())));
        assert_eq!(scope_of(root, Path::new("/r/york/tests/a.toml")), Some(Scope::One("york".into())));
        assert_eq!(scope_of(root, Path::new("/r/shared/complaints.rhai")), Some(Scope::All));
        assert_eq!(scope_of(root, Path::new("/r/actions.toml")), Some(Scope::All));
        assert_eq!(scope_of(root, Path::new("/r/york/.plan_type.rhai.swp")), None);
        assert_eq!(scope_of(root, Path::new("/r/README.md")), None);
        assert_eq!(scope_of(root, Path::new("/elsewhere/x")), None);
    }
}
