//! Documentation that is generated from, or must agree with, the code and rules: a test fails
//! the moment one drifts. Regenerate with `cpc-rules matrix` and `cpc-rules helpers`.

use std::path::Path;

use cpc_rules::facts::Kind;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn readme_partnership_table_matches_the_rules() {
    let readme = read("README.md");
    let begin = readme.find("<!-- matrix:begin -->\n").expect("README has the matrix markers") + "<!-- matrix:begin -->\n".len();
    let end = readme.find("<!-- matrix:end -->").expect("end marker");
    let generated = cpc_rules::matrix::render_from_disk(&root().join("rules")).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(
        readme[begin..end] == generated,
        "README's partnership table is out of date: run `cargo run -- matrix` and paste it between the markers\n{generated}"
    );
}

#[test]
fn helper_reference_is_generated_from_the_engine() {
    assert!(
        read("docs/helpers.md") == cpc_rules::engine::helpers::reference_markdown(),
        "docs/helpers.md is out of date: run `cargo run -- helpers > docs/helpers.md`"
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
