//! The `cpc-rules` command line as a policy lead uses it: `check`, `test`, `eval` and `compare`
//! on the bundled rules, human and JSON output, and the documented exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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
    assert!(e["error"].as_str().is_some_and(|m| m.contains("york/child_invitation.rhai:")), "{e}");
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
