//! The hostile corpus (issue 11 §9), run as data: every probe in `tests/hostile/probes.toml` is
//! a script snippet put at the top of a copy of York's child invitation script, and
//! `cpc-rules test`/`check` must refuse it — exit code 1 with the file, line and the limit or
//! refusal it hit — under a 1 GiB address-space cap (`setrlimit(RLIMIT_AS)` in the child), never
//! a signal or an abort. So a sandbox regression fails the build instead of a server.
//!
//! Each run's time and peak RSS (from `wait4`) are printed (`--nocapture`) for
//! `docs/reliability.md`; they are reported, not asserted.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Deserialize;

mod support;
use support::copy_dir;

/// The address-space cap each probe runs under.
const MEMORY_CAP: u64 = 1 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    probe: Vec<Probe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    file: String,
    about: String,
    commands: Vec<String>,
    expect: String,
    line: usize,
}

struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    output: String,
    millis: u128,
    max_rss_kib: i64,
}

fn hostile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// Runs `cpc-rules <command> --rules <root> york` capped at [`MEMORY_CAP`], and reaps it with
/// `wait4` for its own peak RSS.
fn run_capped(command: &str, root: &Path) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cpc-rules"));
    cmd.arg(command).arg("--rules").arg(root).arg("york").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit { rlim_cur: MEMORY_CAP as libc::rlim_t, rlim_max: MEMORY_CAP as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("run cpc-rules");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut output = String::new();
    let _ = out.read_to_string(&mut output);
    output.push_str(&reader.join().unwrap_or_default());
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own un-reaped child; the pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    let millis = start.elapsed().as_millis();
    std::mem::forget(child); // reaped above
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Run { code, signal, output, millis, max_rss_kib: usage.ru_maxrss }
}

/// A copy of the rules needed for York, with `snippet` at the top of its child invitation script.
fn rules_with(snippet: &str) -> (tempfile::TempDir, PathBuf) {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rules");
    for part in ["calendar", "shared", "york"] {
        copy_dir(&bundled.join(part), &root.join(part));
    }
    std::fs::copy(bundled.join("actions.toml"), root.join("actions.toml")).expect("copy actions");
    std::fs::copy(bundled.join("vocabulary.toml"), root.join("vocabulary.toml")).expect("copy vocabulary");
    let script = root.join("york/child_invitation.rhai");
    let original = std::fs::read_to_string(&script).expect("read script");
    let snippet = snippet.trim_end_matches('\n');
    std::fs::write(&script, format!("{snippet}\n{original}")).expect("write probe");
    (dir, root)
}

#[test]
fn every_hostile_probe_is_refused_with_its_limit_under_a_memory_cap() {
    let corpus: Corpus = toml::from_str(&std::fs::read_to_string(hostile_dir().join("probes.toml")).expect("probes.toml")).expect("parse probes.toml");
    assert!(corpus.probe.len() >= 10, "the corpus lost its probes");
    // Every snippet in the folder is listed, so none is silently skipped.
    let mut listed: Vec<&str> = corpus.probe.iter().map(|p| p.file.as_str()).collect();
    listed.sort_unstable();
    let mut on_disk: Vec<String> = std::fs::read_dir(hostile_dir())
        .expect("tests/hostile")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".rhai"))
        .collect();
    on_disk.sort_unstable();
    assert_eq!(listed, on_disk.iter().map(String::as_str).collect::<Vec<_>>(), "probes.toml and tests/hostile/*.rhai differ");

    // The unmodified copy passes, so every refusal below is the probe's doing.
    let (_clean_dir, clean) = rules_with("");
    let baseline = run_capped("test", &clean);
    assert_eq!(baseline.code, Some(0), "the clean York rules fail under the cap:\n{}", baseline.output);

    let mut problems = Vec::new();
    eprintln!("| probe | command | exit | time (ms) | peak RSS (MiB) |\n|---|---|---|---|---|");
    eprintln!("| (none: bundled York rules) | test | 0 | {} | {:.1} |", baseline.millis, baseline.max_rss_kib as f64 / 1024.0);
    for probe in &corpus.probe {
        let snippet = std::fs::read_to_string(hostile_dir().join(&probe.file)).expect("probe file");
        let (_dir, root) = rules_with(&snippet);
        for command in &probe.commands {
            let run = run_capped(command, &root);
            eprintln!(
                "| `{}` | {command} | {} | {} | {:.1} |",
                probe.file,
                run.code.map_or_else(|| format!("signal {}", run.signal.unwrap_or(0)), |c| c.to_string()),
                run.millis,
                run.max_rss_kib as f64 / 1024.0
            );
            let place = format!("york/child_invitation.rhai:{}", probe.line);
            if run.code != Some(1) {
                problems.push(format!("{} ({}), `{command}`: expected exit 1, got {:?} / signal {:?}\n{}", probe.file, probe.about, run.code, run.signal, run.output));
            } else if !run.output.contains(&probe.expect) || !run.output.contains(&place) {
                problems.push(format!("{} ({}), `{command}`: expected `{place}` and `{}` in the report\n{}", probe.file, probe.about, probe.expect, run.output));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
