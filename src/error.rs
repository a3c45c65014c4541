//! Errors of the decision core, as data.
//!
//! Each variant says who is at fault — the caller (bad facts), the caller's addressing (unknown
//! partnership or kind), or the rules (a script that failed, ran too long or returned the wrong
//! shape) — so that the transport can map it to a status in one place and the CLI can print it
//! for a policy lead. A script error always carries the script's file and, where the engine
//! knows it, the line and column.

use crate::facts::FieldViolation;

/// Where in a script something went wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScriptLocation {
    /// Script file, relative to the rules folder (e.g. `york/plan_type.rhai`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl std::fmt::Display for ScriptLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}", self.file),
            (Some(l), None) => write!(f, "{}:{l}", self.file),
            _ => write!(f, "{}", self.file),
        }
    }
}

/// What kind of script failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScriptFailure {
    /// The script raised an error or hit a runtime fault.
    Runtime,
    /// The script exceeded its wall-clock budget.
    Timeout,
    /// The script exceeded an operations, depth or size limit.
    Limit,
    /// The script returned something that is not a well-formed decision.
    BadResult,
}

/// Why a decision could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecisionError {
    /// No partnership with that id is loaded.
    #[error("unknown partnership `{0}`")]
    UnknownPartnership(String),
    /// The partnership has no script for that kind.
    #[error("partnership `{partnership}` has no decision kind `{kind}`")]
    UnknownKind {
        /// Partnership id.
        partnership: String,
        /// Kind asked for.
        kind: String,
    },
    /// The facts are malformed or impossible.
    #[error("invalid facts: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidFacts(Vec<FieldViolation>),
    /// A script failed; no decision was made.
    #[error("{location}: {message}")]
    Script {
        /// What failed.
        failure: ScriptFailure,
        /// Where.
        location: ScriptLocation,
        /// What happened, in words.
        message: String,
    },
}

impl DecisionError {
    /// The field violations, when the error is the caller's facts.
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            DecisionError::InvalidFacts(v) => v,
            _ => &[],
        }
    }
}
