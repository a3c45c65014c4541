//! Finding a decision again by its id, for the console's "Look up a decision" page.
//!
//! The console is written against this small trait rather than the record itself, so it can be
//! served (and tested) without one: a server with a decision record ([`crate::record`]) looks
//! decisions up there ([`RecordLookup`]); one run with `--record off` uses [`NoRecord`], and the
//! page says plainly that no record is configured.

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

/// Decisions found in the server's decision record.
#[derive(Debug, Clone)]
pub struct RecordLookup(pub std::sync::Arc<crate::record::Record>);

impl DecisionLookup for RecordLookup {
    fn find(&self, id: &str) -> Result<Option<RecordedDecision>, LookupError> {
        let found = self.0.with_db(|db| db.get(id)).map_err(|e| LookupError::Unavailable(e.to_string()))?;
        Ok(found.map(|r| {
            let issued = crate::model::IssuedDecision { decision_id: r.decision_id, decided_at: r.decided_at, decision: r.decision };
            RecordedDecision { decision: crate::http::json::Decision::from(crate::grpc::pb::Decision::from(issued)), facts: r.facts }
        }))
    }
}
