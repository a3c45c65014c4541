//! Finding a decision again by its id, for the console's "Look up a decision" page.
//!
//! The decision record (`src/record/`) is being built separately. The console is written
//! against this small trait so the record can be plugged in when it exists; until then the
//! server uses [`NoRecord`], and the page says plainly that no record is configured.

use serde_json::Value;

/// A decision as the record keeps it: enough to show it and to replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    /// The decision as it was issued (`pb::Decision` in its JSON mapping).
    pub decision: crate::http::json::Decision,
    /// The facts it was made from.
    pub facts: Value,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// This server keeps no decision record.
    #[error("no decision record is configured on this server, so decisions cannot be looked up")]
    NotConfigured,
    /// The record could not be read.
    #[error("the decision record could not be read: {0}")]
    Unavailable(String),
}

/// Where decisions are found again by id.
pub trait DecisionLookup: Send + Sync + std::fmt::Debug {
    /// The decision with `id`, `Ok(None)` if the record has none.
    fn find(&self, id: &str) -> Result<Option<RecordedDecision>, LookupError>;
}

/// No record: every lookup says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecord;

impl DecisionLookup for NoRecord {
    fn find(&self, _id: &str) -> Result<Option<RecordedDecision>, LookupError> {
        Err(LookupError::NotConfigured)
    }
}
