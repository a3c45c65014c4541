//! The rules folder as an attacker or an orchestrator shapes it (issue 11 §3, §7): a Kubernetes
//! ConfigMap mount (every entry a symlink through `..data`, swapped atomically) loads and hot
//! reload follows the swap; symlinks to `/` and `/usr` are neither loaded nor watched and hot
//! reload stays on; a folder that cannot be read is a refused reload shown in the partnership's
//! last failure; and reloading each hostile probe is refused without raising peak memory by more
//! than 64 MiB.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::store::{RuleStore, watch};

mod support;
use support::copy_dir;

fn copy_york_rules(to: &Path) {
    let bundled = support::bundled_rules();
    for part in ["calendar", "shared", "york"] {
        copy_dir(&bundled.join(part), &to.join(part));
    }
    std::fs::copy(bundled.join("actions.toml"), to.join("actions.toml")).expect("copy actions");
    std::fs::copy(bundled.join("vocabulary.toml"), to.join("vocabulary.toml")).expect("copy vocabulary");
}

fn revision(store: &RuleStore) -> String {
    store.get("york").expect("york live").set.revision().to_string()
}

async fn wait_for_new_revision(store: &RuleStore, old: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = revision(store);
        if now != old {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: no new revision within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a ConfigMap payload folder `..<stamp>` holding York's rules with `marker` appended to
/// the child invitation script.
fn payload(mount: &Path, stamp: &str, marker: &str) -> String {
    let name = format!("..{stamp}");
    copy_york_rules(&mount.join(&name));
    let script = mount.join(&name).join("york/child_invitation.rhai");
    let text = std::fs::read_to_string(&script).expect("read");
    std::fs::write(&script, format!("{text}\n// {marker}\n")).expect("write");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_mount_loads_and_its_atomic_swap_is_hot_reloaded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mount = tmp.path().join("rules");
    std::fs::create_dir_all(&mount).expect("mkdir");
    let first = payload(&mount, "2026_12_02_10_00_00.000000001", "first");
    symlink(&first, mount.join("..data")).expect("..data");
    for entry in ["york", "shared", "calendar", "actions.toml", "vocabulary.toml"] {
        symlink(format!("..data/{entry}"), mount.join(entry)).expect("entry symlink");
    }
    let store = Arc::new(RuleStore::load(&mount, Limits::default()).unwrap_or_else(|r| panic!("{r:?}")));
    let handle = watch::spawn(Arc::clone(&store), Duration::from_millis(100)).expect("watch");
    let real_mount = std::fs::canonicalize(&mount).expect("canonical");
    assert!(handle.watched().iter().all(|p| p.starts_with(&real_mount)), "{:?}", handle.watched());
    let mut rev = revision(&store);

    for (i, stamp) in ["2026_12_02_10_05_00.000000002", "2026_12_02_10_10_00.000000003"].iter().enumerate() {
        // What the kubelet does: a new timestamped folder, `..data_tmp` pointing at it, renamed
        // over `..data` in one step, then the old folder removed.
        let old_target = std::fs::read_link(mount.join("..data")).expect("readlink");
        let next = payload(&mount, stamp, &format!("swap {i}"));
        symlink(&next, mount.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("atomic swap");
        std::fs::remove_dir_all(mount.join(old_target)).expect("remove old payload");
        rev = wait_for_new_revision(&store, &rev, &format!("swap {i}")).await;
        assert!(store.partnerships().iter().all(|p| p.last_failure.is_none()), "{:?}", store.partnerships());
        // The watches followed the swap: they are on the new payload, all inside the mount.
        let watched = handle.watched();
        assert!(watched.iter().all(|p| p.starts_with(&real_mount)), "{watched:?}");
        assert!(watched.iter().any(|p| p.to_string_lossy().contains(stamp)), "{watched:?}");
    }

    // An edit inside the live payload (not how the kubelet works, but an operator might) is
    // seen too, through the resolved watch.
    let script = mount.join("york/child_invitation.rhai");
    let text = std::fs::read_to_string(&script).expect("read");
    std::fs::write(&script, format!("{text}\n// in place\n")).expect("write");
    wait_for_new_revision(&store, &rev, "edit in place").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_outside_the_folder_are_not_followed_and_hot_reload_stays_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("rules");
    copy_york_rules(&root);
    symlink("/", root.join("everything")).expect("symlink /");
    symlink("/usr", root.join("usr")).expect("symlink /usr");
    symlink("/etc", root.join("york/tests-elsewhere")).expect("symlink /etc");
    let store = Arc::new(RuleStore::load(&root, Limits::default()).unwrap_or_else(|r| panic!("{r:?}")));
    assert_eq!(store.ids(), vec!["york".to_string()]);
    let started = Instant::now();
    let handle = watch::spawn(Arc::clone(&store), Duration::from_millis(100)).expect("watch");
    let real_root = std::fs::canonicalize(&root).expect("canonical");
    let watched = handle.watched();
    assert!(watched.len() <= 6 && watched.iter().all(|p| p.starts_with(&real_root)), "{watched:?} after {:?}", started.elapsed());
    let report = store.reload(&[]);
    assert!(
        report.skipped.iter().any(|s| s.starts_with("everything:") && s.contains("outside the rules folder"))
            && report.skipped.iter().any(|s| s.starts_with("usr:")),
        "the reload report says what it skipped: {:?}",
        report.skipped
    );

    let rev = revision(&store);
    let script = root.join("york/child_invitation.rhai");
    let text = std::fs::read_to_string(&script).expect("read");
    std::fs::write(&script, format!("{text}\n// edited\n")).expect("write");
    wait_for_new_revision(&store, &rev, "edit").await;

    // A script symlinked outside is refused with a reason, and the last good set keeps serving.
    let rev = revision(&store);
    symlink("/etc/hostname", root.join("york/zz_stolen.rhai")).expect("symlink");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        if let Some(f) = store.partnerships().into_iter().find(|p| p.id == "york").and_then(|p| p.last_failure) {
            break f;
        }
        assert!(Instant::now() < deadline, "the outside symlink was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failure.diagnostics.iter().any(|d| d.contains("york/zz_stolen.rhai") && d.contains("outside the rules folder")), "{failure:?}");
    assert_eq!(revision(&store), rev);
}

#[test]
fn a_partnership_folder_that_cannot_be_read_is_a_refused_reload() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("rules");
    copy_york_rules(&root);
    let store = RuleStore::load(&root, Limits::default()).unwrap_or_else(|r| panic!("{r:?}"));
    // Replaced by a symlink loop: unreadable even for root, unlike a `chmod 000`.
    let aside = tmp.path().join("york-aside");
    std::fs::rename(root.join("york"), &aside).expect("move aside");
    symlink("york", root.join("york")).expect("loop");
    let report = store.reload(&[]);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].partnership, "york");
    let failure = store.partnerships().into_iter().find(|p| p.id == "york").and_then(|p| p.last_failure).expect("last failure shown");
    assert!(failure.diagnostics.iter().any(|d| d.contains("cannot read")), "{failure:?}");
}

fn peak_rss_kib() -> i64 {
    // SAFETY: a zeroed rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss
}

#[derive(serde::Deserialize)]
struct Corpus {
    probe: Vec<toml::Value>,
}

#[test]
fn reloading_each_hostile_probe_is_refused_within_64_mib_of_peak_memory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("rules");
    copy_york_rules(&root);
    let store = RuleStore::load(&root, Limits::default()).unwrap_or_else(|r| panic!("{r:?}"));
    let rev = revision(&store);
    let hostile = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let corpus: Corpus = toml::from_str(&std::fs::read_to_string(hostile.join("probes.toml")).expect("probes")).expect("parse");
    let script = root.join("york/child_invitation.rhai");
    let original = std::fs::read_to_string(&script).expect("read");
    let before = peak_rss_kib();
    for p in &corpus.probe {
        let file = p.get("file").and_then(toml::Value::as_str).expect("file");
        let snippet = std::fs::read_to_string(hostile.join(file)).expect("probe");
        std::fs::write(&script, format!("{}\n{original}", snippet.trim_end())).expect("write");
        let report = store.reload(&["york".to_string()]);
        assert_eq!(report.refused.len(), 1, "{file}: {report:?}");
        assert_eq!(revision(&store), rev, "{file}: the last good revision keeps serving");
    }
    let grew = (peak_rss_kib() - before) / 1024;
    eprintln!("peak RSS before the hostile reloads {} MiB, grew by {grew} MiB", before / 1024);
    assert!(grew <= 64, "reloading the hostile probes raised peak RSS by {grew} MiB");
}
