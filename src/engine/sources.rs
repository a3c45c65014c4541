//! What a rule set is built from, as text already in memory, and the revision that names it.
//!
//! The core never reads files: the store (or a test, or a benchmark) reads a partnership's
//! files and hands them over as [`RuleSources`]. The revision is a content hash of exactly these
//! files, so the same sources always have the same revision and a decision can be traced back
//! to the text that made it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::GuidanceDocument;
use crate::vocabulary::{CodeValue, KindDe};

/// One source file of a rule set, already read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the rules folder, with `/` separators (e.g. `york/plan_type.rhai`).
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// Everything one partnership's rule set is built from.
#[derive(Debug, Clone)]
pub struct RuleSources {
    /// Partnership id (its folder name).
    pub id: String,
    /// `<id>/partnership.toml`.
    pub metadata: SourceFile,
    /// `<id>/<kind>.rhai`, one per decision kind.
    pub scripts: Vec<SourceFile>,
    /// `shared/*.rhai`: functions every partnership may call.
    pub shared: Vec<SourceFile>,
    /// `calendar/bank-holidays.toml`.
    pub calendar: SourceFile,
    /// `actions.toml`: the action codes and responsible parties scripts may use.
    pub actions: SourceFile,
    /// `vocabulary.toml`: every kind's facts and codes.
    pub vocabulary: SourceFile,
    /// `<id>/tests/*.toml`: the test cases (part of the revision: a revision is what was tested).
    pub cases: Vec<SourceFile>,
}

impl RuleSources {
    /// Every file, in a stable order.
    pub fn files(&self) -> Vec<&SourceFile> {
        let mut files: Vec<&SourceFile> = self.scripts.iter().chain(&self.shared).chain(&self.cases).collect();
        files.extend([&self.metadata, &self.calendar, &self.actions, &self.vocabulary]);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Content hash of every file the rule set is built from: the rule set's revision.
    pub fn revision(&self) -> String {
        let mut h = Sha256::new();
        for f in self.files() {
            h.update(f.path.as_bytes());
            h.update([0]);
            h.update(f.text.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// A partnership's `partnership.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Partnership id; must match the folder name.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The guidance documents the rules cite.
    pub documents: Vec<GuidanceDocument>,
    /// Codes this partnership adds to the shared vocabulary's lists.
    #[serde(default)]
    pub codes: BTreeMap<String, Vec<CodeValue>>,
    /// Decision kinds beyond the specification's six, with their outcomes and facts.
    #[serde(default)]
    pub custom_kinds: BTreeMap<String, KindDe>,
}

/// The action codes and responsible parties scripts may use (`rules/actions.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionCatalogue {
    /// code → what it means.
    pub codes: BTreeMap<String, Described>,
    /// Who may be responsible for an action: code → who that is.
    #[serde(default)]
    pub responsible: BTreeMap<String, Described>,
}

/// A code with its meaning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    /// What it means, for the README and the proto.
    pub description: String,
}
