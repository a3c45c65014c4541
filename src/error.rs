//! Errors of the decision core, as data.
//!
//! Each variant says who is at fault — the caller (bad or missing facts), the caller's
//! addressing (unknown partnership or kind), or the rules (a script that failed, ran too long or
//! returned the wrong shape) — so that each edge maps it to a status in one place and the CLI
//! can print it for a policy lead. A script error always carries the script's file and, where
//! the engine knows it, the line and column.

use crate::engine::Location;
use crate::facts::FieldViolation;

/// What kind of script failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScriptFailure {
    /// The script raised an error or hit a runtime fault.
    Runtime,
    /// The script exceeded its CPU-time budget.
    Timeout,
    /// The script exceeded an operations, depth or size limit.
    Limit,
    /// The script returned something that is not a well-formed decision.
    BadResult,
}

/// Why a decision could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// No partnership with that id is loaded.
    #[error("unknown partnership `{id}`{}", suggestion_text(.suggestion))]
    UnknownPartnership {
        /// The id asked for.
        id: String,
        /// The closest known id, if one is close.
        suggestion: Option<String>,
        /// Every loaded partnership id.
        known: Vec<String>,
    },
    /// The partnership has no script for that kind.
    #[error("partnership `{partnership}` has no decision kind `{kind}`{}", suggestion_text(.suggestion))]
    UnknownKind {
        /// Partnership id.
        partnership: String,
        /// Kind asked for.
        kind: String,
        /// The closest known kind, if one is close.
        suggestion: Option<String>,
        /// Every kind the partnership answers.
        known: Vec<String>,
    },
    /// The facts are malformed or impossible.
    #[error("invalid facts: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidFacts(Vec<FieldViolation>),
    /// A script read a fact that the call did not give.
    #[error("`{fact}` is needed: {location} reads it on the way to this decision")]
    MissingFact {
        /// The fact.
        fact: String,
        /// Where the script read it.
        location: Location,
        /// The script line that read it.
        source_line: Option<String>,
    },
    /// A script failed; no decision was made.
    #[error("{location}: {message}")]
    Script {
        /// What failed.
        failure: ScriptFailure,
        /// Where.
        location: Location,
        /// What happened, in words.
        message: String,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

impl DecisionError {
    /// The field violations, when the error is the caller's facts (a missing fact is one too).
    pub fn violations(&self) -> Vec<FieldViolation> {
        match self {
            DecisionError::InvalidFacts(v) => v.clone(),
            DecisionError::MissingFact { fact, location, .. } => vec![FieldViolation::new(
                fact.clone(),
                format!("is required here: the rules read it at {location} on the way to this decision"),
            )],
            _ => Vec::new(),
        }
    }
}

/// Why a server (gRPC, console, metrics) or one of its parts could not start, or stopped with an
/// error. Each message names the setting or file at fault and, where there is one, the fix: the
/// `serve` command prints it as it is.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An address could not be listened on.
    #[error("cannot listen {what}on {addr}: {source}")]
    Listen {
        /// What the address was for, e.g. "for metrics " (with a trailing space), or "".
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file named on the command line could not be used.
    #[error("cannot read the {what} file {path}: {source}")]
    ReadFile {
        /// What the file is, with its flag.
        what: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is refused; the message says what to change.
    #[error("{0}")]
    Refused(String),
    /// A part of the server could not be built or failed while running.
    #[error("{context}: {source}")]
    Failed {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ServeError {
    /// A [`ServeError::Failed`] from any error, with what was being done.
    pub fn failed(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ServeError::Failed { context: context.into(), source: source.into() }
    }
}
