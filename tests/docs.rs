//! Documentation that is generated from, or must agree with, the code and rules: a test fails
//! the moment one drifts. Regenerate with `cpc-rules matrix` and `cpc-rules helpers`.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::path::Path;

use cpc_rules::facts::Kind;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// What `cpc-rules <args>` prints on the bundled rules.
fn generated(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cpc-rules {args:?}: {e}"));
    assert!(out.status.success(), "cpc-rules {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text between `<!-- name:begin -->` and `<!-- name:end -->` in `doc`.
fn between<'a>(doc: &'a str, name: &str) -> &'a str {
    let open = format!("<!-- {name}:begin -->\n");
    let begin = doc.find(&open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let end = doc.find(&format!("<!-- {name}:end -->")).unwrap_or_else(|| panic!("no {name}:end"));
    &doc[begin..end]
}

#[test]
fn readme_partnership_table_matches_the_rules() {
    let readme = read("README.md");
    let generated = generated(&["matrix"]);
    assert!(
        between(&readme, "matrix") == generated,
        "README's partnership table is out of date: run `cargo run -- docs --write` (or `cpc-rules docs --write`)\n{generated}"
    );
}

#[test]
fn readme_facts_contract_matches_the_rules() {
    let readme = read("README.md");
    let generated = generated(&["facts"]);
    assert!(
        between(&readme, "facts") == generated,
        "README's table of the facts each decision needs is out of date: run `cargo run -- docs --write`\n{generated}"
    );
}

#[test]
fn helper_reference_is_generated_from_the_engine() {
    assert!(
        read("docs/helpers.md") == generated(&["helpers"]),
        "docs/helpers.md is out of date: run `cargo run -- docs --write`"
    );
}

#[test]
fn readme_and_proto_document_every_outcome_and_action_code() {
    let readme = read("README.md");
    let proto = read("proto/cpc/v1/cpc.proto");
    let actions: toml::Table = toml::from_str(&read("rules/actions.toml")).expect("actions.toml");
    let codes = actions["codes"].as_table().expect("codes table");
    assert!(!codes.is_empty());
    for code in codes.keys() {
        assert!(readme.contains(&format!("`{code}`")), "README does not document action code `{code}`");
        assert!(proto.contains(&format!("`{code}`")), "the proto does not document action code `{code}`");
    }
    for kind in Kind::ALL {
        for outcome in kind.outcomes() {
            assert!(readme.contains(&format!("`{outcome}`")), "README does not document outcome `{outcome}`");
            assert!(proto.contains(&format!("`{outcome}`")), "the proto does not document outcome `{outcome}`");
        }
    }
}

#[test]
fn authoring_guide_covers_every_helper() {
    let guide = read("rules/README.md");
    for h in cpc_rules::engine::helpers::HELPERS {
        assert!(guide.contains(h.name), "rules/README.md does not mention helper `{}`", h.name);
    }
}

/// The Kubernetes rules volume lists every file of `rules/`: a rules file added without
/// regenerating it would be missing from a deployed pod.
#[test]
fn kubernetes_rules_volume_lists_every_rules_file() {
    let out = std::process::Command::new("python3")
        .arg(root().join("deploy/kubernetes/gen-rules.py"))
        .arg("--check")
        .output()
        .expect("python3 runs deploy/kubernetes/gen-rules.py");
    assert!(
        out.status.success(),
        "{}{}run `python3 deploy/kubernetes/gen-rules.py`",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
