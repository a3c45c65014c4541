//! The `cpc-rules` command line as a policy lead uses it: `check`, `test` (one line per
//! mismatch, `-v`, `--update`), `eval` (and `--save-case`), `compare`, `impact`, `status` and
//! `assumptions`, on the bundled rules or temporary copies of them, human and JSON output, and
//! the documented exit codes; and the messages for case-file mistakes and a wrong rules folder.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    run_in(Path::new(env!("CARGO_MANIFEST_DIR")), args, stdin)
}

fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(args)
        .current_dir(dir)
        .env_remove("CPC_RULES")
        .env_remove("CPC_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cpc-rules");
    if let Some(input) = stdin {
        // The command may exit (say, on a usage error) before it reads its input: a broken pipe
        // here is not a failure.
        let _ = child.stdin.take().expect("stdin").write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const EXCLUSION: &str = r#"{"role": "parent", "grounds": ["confidential_police_information"]}"#;

#[test]
fn compare_shows_every_partnership_side_by_side() {
    let o = run(&["compare", "--kind", "exclusion", "-"], Some(EXCLUSION));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    for p in ["north-yorkshire", "central-bedfordshire", "york", "barnsley", "norfolk"] {
        assert!(out.contains(p), "{p} missing:\n{out}");
    }
    let o = run(&["compare", "--kind", "exclusion", "--json", "-"], Some(EXCLUSION));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 5);
    let barnsley = rows.iter().find(|r| r["partnership"] == "barnsley").expect("barnsley row");
    assert_eq!(barnsley["outcome"], "exclude_part");
    assert_eq!(barnsley["assumption"], false, "Barnsley's guide names the police slot itself");
    assert!(barnsley["citation"].as_str().unwrap_or_default().contains("Barnsley"), "{barnsley}");
}

#[test]
fn eval_prints_a_readable_decision_and_json() {
    let facts = r#"{"conference_type": "initial", "significant_harm": "likely", "categories": ["neglect"],
        "needs_support": true, "early_help_appropriate": false, "conference_date": "2025-04-17"}"#;
    let o = run(&["eval", "--partnership", "york", "--kind", "plan_type", "-"], Some(facts));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("child_protection_plan") && out.contains("[send_plan]") && out.contains("by 2025-04-22"), "{out}");
    let o = run(&["eval", "-p", "york", "-k", "plan_type", "--json", "-"], Some(facts));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json decision");
    assert_eq!(d["outcome"], "child_protection_plan");
    assert_eq!(d["details"]["categories"][0], "neglect");
}

#[test]
fn eval_refuses_bad_facts_with_the_field() {
    let o = run(&["eval", "-p", "york", "-k", "child_invitation", "--json", "-"], Some(r#"{"age": -3}"#));
    assert_eq!(o.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json error");
    let fields: Vec<&str> = e["violations"].as_array().expect("violations").iter().filter_map(|v| v["field"].as_str()).collect();
    assert_eq!(fields, ["age"]);
    // A fact the rules read but the call left out is refused, naming it and where it is read.
    let o = run(&["eval", "-p", "york", "-k", "child_invitation", "--json", "-"], Some(r#"{"age": 14}"#));
    assert_eq!(o.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json error");
    assert_eq!(e["violations"][0]["field"], "sufficient_understanding", "{e}");
    // York's child invitation runs the shared tree, which is where the fact is read.
    assert!(e["error"].as_str().is_some_and(|m| m.contains("shared/child_invitation.rhai:")), "{e}");
}

#[test]
fn check_and_test_pass_on_the_bundled_rules_with_json() {
    let o = run(&["check", "--format", "json"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["partnerships"].as_array().map(Vec::len), Some(5));
    let o = run(&["test", "york"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("✔ york"), "{}", text(&o));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let o = run(&["test", "yrok"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("did you mean `york`?"), "{}", text(&o));
    let o = run(&["compare", "--kind", "plan_typ", "-"], Some("{}"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("did you mean `plan_type`?"), "{}", text(&o));
    let o = run(&["eval", "-p", "york", "-k", "plan_type", "-"], Some("not json"));
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["frobnicate"], None);
    assert_eq!(o.status.code(), Some(2));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// A temporary copy of the bundled rules: (the guard, the rules folder's path as text).
fn scratch_rules() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"), &rules);
    let shown = rules.display().to_string();
    (dir, shown)
}

fn edit(path: impl AsRef<Path>, from: &str, to: &str) {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

/// Barnsley's family meetings monthly-ish (every 30 days): the first edit of rules/README.md.
const MONTHLY: (&str, &str) = ("const FAMILY_MEETING_EVERY_DAYS = 28;", "const FAMILY_MEETING_EVERY_DAYS = 30;");

#[test]
fn case_file_mistakes_are_reported_at_file_and_line_and_every_case_is_counted() {
    let (_tmp, rules) = scratch_rules();
    let plan = Path::new(&rules).join("barnsley/tests/plan_type.toml");
    edit(&plan, "expect = { outcome", "expect = { outcom");
    edit(Path::new(&rules).join("barnsley/tests/exclusion.toml"), "outcome = \"do_not_exclude\"", "outcome = \"attend\"");
    let o = run(&["test", "--rules", &rules, "barnsley"], None);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("barnsley/tests/plan_type.toml:9:12: unknown key `outcom` in `expect`"), "{out}");
    assert!(out.contains("did you mean `outcome`?"), "{out}");
    assert!(out.contains("expects outcome `attend`, which `exclusion` does not have"), "{out}");
    // Both malformed cases are counted, not dropped.
    assert!(out.contains("of 93 cases passed") && out.contains("2 not run"), "{out}");
    // An unknown key at the top of the file and inside a case.
    let (_tmp2, rules2) = scratch_rules();
    edit(Path::new(&rules2).join("york/tests/exclusion.toml"), "[[case]]", "kinds = \"x\"\n\n[[case]]\nwhy = \"typo\"");
    let o = run(&["check", "--rules", &rules2, "york"], None);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("unknown key `kinds`") && out.contains("did you mean `kind`?"), "{out}");
    assert!(out.contains("unknown key `why` in case"), "{out}");
}

#[test]
fn test_prints_one_line_per_mismatch_and_update_rewrites_the_expectations() {
    let (_tmp, rules) = scratch_rules();
    let plan = Path::new(&rules).join("barnsley/plan_type.rhai");
    edit(&plan, MONTHLY.0, MONTHLY.1);
    let cases = Path::new(&rules).join("barnsley/tests/plan_type.toml");
    let before = std::fs::read_to_string(&cases).expect("read");

    let o = run(&["test", "--rules", &rules, "barnsley"], None);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{out}");
    let failures: Vec<&str> = out.lines().filter(|l| l.starts_with("barnsley/tests/")).collect();
    assert_eq!(failures.len(), 6, "{out}");
    assert!(out.contains("barnsley/tests/plan_type.toml:5: initial, likely harm, over Easter 2025: plan with visits, meetings, core group and 3-month review: action `core_group_meeting`: expected due 2025-06-03, got 2025-06-05"), "{out}");
    assert!(out.lines().count() <= 8, "one line per mismatch, not a page per case:\n{out}");
    let o = run(&["test", "--rules", &rules, "barnsley", "-v"], None);
    assert!(text(&o).contains("actual decision:"), "{}", text(&o));

    // Declining leaves the file alone.
    let o = run(&["test", "--rules", &rules, "barnsley", "--update"], Some("n\nn\nn\nn\n"));
    assert!(text(&o).contains("core_group_meeting due 2025-06-03 → 2025-06-05"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&cases).expect("read"), before);
    // Accepting one, then all the rest.
    let o = run(&["test", "--rules", &rules, "barnsley", "--update"], Some("y\na\n"));
    assert!(text(&o).contains("5 case(s) updated"), "{}", text(&o));
    let after = std::fs::read_to_string(&cases).expect("read");
    assert_eq!(before.lines().take(3).collect::<Vec<_>>(), after.lines().take(3).collect::<Vec<_>>(), "comments are kept");
    assert_eq!(before.lines().count(), after.lines().count(), "layout is kept");
    assert!(after.contains("{ code = \"core_group_meeting\", due_date = \"2025-06-05\" }"), "{after}");
    let o = run(&["test", "--rules", &rules, "barnsley"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // --yes for scripts.
    edit(&plan, "const FAMILY_MEETING_EVERY_DAYS = 30;", "const FAMILY_MEETING_EVERY_DAYS = 28;");
    let o = run(&["test", "--rules", &rules, "barnsley", "--update", "--yes"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&cases).expect("read"), before, "back to the original, byte for byte");
}

#[test]
fn eval_save_case_appends_a_case_that_then_passes() {
    let (_tmp, rules) = scratch_rules();
    let facts = "age = 13\nsufficient_understanding = true\nwishes_to_attend = \"CHILD_WISH_YES\"\nsensitive_information = false\n";
    let o = run(&["eval", "--rules", &rules, "-p", "york", "-k", "child_invitation", "--save-case", "a 13-year-old who wants to come", "-"], Some(facts));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("saved as case `a 13-year-old who wants to come`"), "{}", text(&o));
    let file = std::fs::read_to_string(Path::new(&rules).join("york/tests/child_invitation.toml")).expect("read");
    assert!(file.contains("name = \"a 13-year-old who wants to come\""), "{file}");
    assert!(file.contains("wishes_to_attend = \"yes\""), "enum names are saved as codes: {file}");
    let o = run(&["test", "--rules", &rules, "york"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("97 of 97"), "{}", text(&o));
    // A refusal is saved as an invalid_field case; a duplicate name is refused.
    let o = run(&["eval", "--rules", &rules, "-p", "york", "-k", "child_invitation", "--save-case", "too old", "-"], Some("age = 30\n"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let file = std::fs::read_to_string(Path::new(&rules).join("york/tests/child_invitation.toml")).expect("read");
    assert!(file.contains("invalid_field = \"age\""), "{file}");
    let o = run(&["eval", "--rules", &rules, "-p", "york", "-k", "child_invitation", "--save-case", "too old", "-"], Some("age = 30\n"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already has a case called `too old`"), "{}", text(&o));
}

#[test]
fn check_points_a_syntax_error_to_the_fix() {
    let (_tmp, rules) = scratch_rules();
    // The child-invitation tree every partnership uses lives in rules/shared/; checking one
    // partnership reports a mistake there at its own file, line and column.
    edit(Path::new(&rules).join("shared/child_invitation.rhai"), "if facts.age < child.old_enough_age || !facts", "if facts.age < child.old_enough_age or !facts");
    let o = run(&["check", "--rules", &rules, "york"], None);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("shared/child_invitation.rhai:39:41") && out.contains("write `||` instead of `or`"), "{out}");
}

#[test]
fn impact_lists_the_decisions_that_would_change() {
    let (_tmp, rules) = scratch_rules();
    edit(Path::new(&rules).join("barnsley/plan_type.rhai"), MONTHLY.0, MONTHLY.1);
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").display().to_string();
    let o = run(&["impact", "--rules", &rules, "--against", &bundled], None);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("6 would change"), "{out}");
    assert!(out.contains("date: core_group_meeting 2025-06-03 → 2025-06-05"), "{out}");
    assert!(out.contains("scenario scenarios.toml: Initial conference"), "scenarios are compared too: {out}");
    let o = run(&["impact", "--rules", &rules, "--against", &bundled, "--json", "barnsley"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["changed"].as_array().map(Vec::len), Some(6), "{v}");
    assert_eq!(v["changed"][0]["partnership"], "barnsley");
    assert_eq!(v["changed"][0]["source"], "case");
    // Nothing changes against itself.
    let o = run(&["impact", "--rules", &rules, "--against", &rules, "york"], None);
    assert!(text(&o).contains("0 would change"), "{}", text(&o));
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn status_and_impact_ask_a_running_server() {
    let (_tmp, rules) = scratch_rules();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}");
    let token = Path::new(&rules).parent().expect("parent").join("admin-token");
    std::fs::write(&token, "s3cret-admin-token-for-the-test").expect("token");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
            .args(["serve", "--addr", &addr, "--rules", &rules, "--debounce", "50ms", "--record", "off", "--caller-token-file"])
            .arg(&token)
            .env_remove("CPC_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let token_s = token.display().to_string();
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--server", &url, "--rules", &rules, "--token-file", &token_s];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let mut up = false;
    for _ in 0..100 {
        if status(&[]).status.code() == Some(0) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "the server did not come up: {}", text(&status(&[])));
    let out = text(&status(&["barnsley"]));
    assert!(out.contains("✔ barnsley: revision") && out.contains("are the ones live"), "{out}");
    // Without the token the server refuses, and the message says how to give one.
    let o = run(&["status", "--server", &url], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--token-file"), "{}", text(&o));

    // A change whose cases now fail: impact shows it; the reload is refused; status says why.
    edit(Path::new(&rules).join("barnsley/plan_type.rhai"), MONTHLY.0, MONTHLY.1);
    let o = run(&["impact", "--rules", &rules, "--server", &url, "--token-file", &token_s, "barnsley"], None);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("6 would change") && out.contains("date: core_group_meeting 2025-06-03 → 2025-06-05"), "{out}");
    let mut refused = String::new();
    for _ in 0..100 {
        let o = status(&["barnsley", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if !v["partnerships"][0]["last_failure"].is_null() {
            refused = text(&status(&["barnsley"]));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(refused.contains("last reload refused") && refused.contains("not yet live"), "{refused}");
    assert!(refused.contains("expected due 2025-06-03, got 2025-06-05"), "{refused}");
}

#[test]
fn a_wrong_rules_folder_says_how_to_fix_it() {
    let (tmp, rules) = scratch_rules();
    let o = run_in(&Path::new(&rules).join("barnsley"), &["test"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("inside the partnership folder `barnsley`") && text(&o).contains("--rules .."), "{}", text(&o));
    let o = run_in(Path::new(&rules), &["check"], None);
    assert!(text(&o).contains("inside the rules folder itself: pass --rules ."), "{}", text(&o));
    let o = run_in(tmp.path(), &["test", "--rules", "rules/barnsley"], None);
    assert!(text(&o).contains("is the partnership folder `barnsley`") && text(&o).contains("--rules rules"), "{}", text(&o));
    let empty = tempfile::tempdir().expect("temp");
    let o = run_in(empty.path(), &["test"], None);
    assert!(text(&o).contains("run from the project folder"), "{}", text(&o));
    let _: PathBuf = tmp.path().to_path_buf();
}

#[test]
fn assumptions_lists_each_with_where_it_is_given() {
    let o = run(&["assumptions", "barnsley", "--json"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let all = v.as_array().expect("array");
    assert!(all.iter().all(|a| a["partnership"] == "barnsley"));
    let first = all.iter().find(|a| a["rule_id"] == "barnsley.plan.first-core-group").expect("first core group assumption");
    assert_eq!(first["section"], "What kind of decisions are made?");
    assert!(first["text"].as_str().unwrap_or_default().contains("Barnsley should confirm"), "{first}");
    assert!(first["used_at"][0].as_str().unwrap_or_default().starts_with("barnsley/plan_type.rhai:"), "{first}");
    assert!(!first["seen_in"].as_array().expect("seen_in").is_empty(), "{first}");
    let o = run(&["assumptions", "york"], None);
    assert!(text(&o).contains("york.child.age-assumption") && text(&o).contains("given at: york/child_invitation.rhai:"), "{}", text(&o));
}
