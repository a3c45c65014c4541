//! The `cpc.v1.RecordService` implementation: the decision record over gRPC.
//!
//! Why a service of its own: auditors, complaints officers and operators look decisions up by
//! id or `case_ref`, replay them with the exact archived rules, and see which revisions were
//! live when — without database access and behind their own credential (the guard's
//! `Auditor` level: the auditor token or any admin credential). Thin, like the other services:
//! each RPC runs its database work on the blocking pool ([`crate::record::Record`]) and maps
//! errors through [`super::status::record_error`]. A `case_ref` filter is hashed on the way in
//! and never logged.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::pb;
use super::pb::record_service_server::RecordService;
use super::status;
use crate::model::IssuedDecision;
use crate::record::{DecisionRecord, Filter, Record, RecordError};

/// `cpc.v1.RecordService` over an optional record (`None`: every RPC is
/// `FAILED_PRECONDITION`).
#[derive(Debug, Clone)]
pub struct RecordApi {
    record: Option<Arc<Record>>,
}

impl RecordApi {
    /// The record service over `record`.
    pub fn new(record: Option<Arc<Record>>) -> Self {
        Self { record }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Record) -> Result<T, RecordError> + Send + 'static) -> Result<T, Status> {
        let record = self.record.clone().ok_or_else(status::record_off)?;
        tokio::task::spawn_blocking(move || f(&record)).await.map_err(|_| status::worker_failed())?.map_err(|e| status::record_error(&e))
    }
}

fn to_pb(r: DecisionRecord) -> pb::RecordedDecision {
    let facts = r.facts.as_object().map(super::convert::json_to_struct);
    pb::RecordedDecision {
        facts,
        today: r.today.format("%Y-%m-%d").to_string(),
        caller: r.caller,
        has_case_ref: r.case_ref_hash.is_some(),
        decision: Some(IssuedDecision { decision_id: r.decision_id, decided_at: r.decided_at, decision: r.decision }.into()),
    }
}

fn time(t: Option<prost_types::Timestamp>, field: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    match t {
        None => Ok(None),
        Some(t) => chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            .map(Some)
            .ok_or_else(|| status::record_error(&RecordError::InvalidArgument(format!("{field} is not a valid time")))),
    }
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl RecordService for RecordApi {
    async fn get_decision(&self, request: Request<pb::GetDecisionRequest>) -> Result<Response<pb::RecordedDecision>, Status> {
        let id = request.into_inner().decision_id;
        let found = self.run(move |r| r.with_db(|db| db.get(&id))).await?;
        found.map(|r| Response::new(to_pb(r))).ok_or_else(|| status::record_error(&RecordError::NotFound("no recorded decision with that id".into())))
    }

    async fn list_decisions(&self, request: Request<pb::ListDecisionsRequest>) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let req = request.into_inner();
        let record = self.record.as_ref().ok_or_else(status::record_off)?;
        let filter = Filter {
            partnership: nonempty(req.partnership),
            kind: nonempty(req.kind),
            outcome: nonempty(req.outcome),
            case_ref_hash: record.hash_case_ref(&req.case_ref),
            after: time(req.decided_after, "decided_after")?,
            before: time(req.decided_before, "decided_before")?,
        };
        let size = if req.page_size <= 0 { 100 } else { usize::try_from(req.page_size).unwrap_or(100) };
        let token = req.page_token;
        let page = self.run(move |r| r.with_db(|db| db.list(&filter, size, Some(&token)))).await?;
        Ok(Response::new(pb::ListDecisionsResponse { decisions: page.records.into_iter().map(to_pb).collect(), next_page_token: page.next.unwrap_or_default() }))
    }

    async fn replay_decision(&self, request: Request<pb::ReplayDecisionRequest>) -> Result<Response<pb::ReplayDecisionResponse>, Status> {
        let req = request.into_inner();
        let id = req.decision_id.clone();
        let replay = self.run(move |r| r.replay(&req.decision_id, Some(&req.revision))).await?;
        let now = crate::clock::now();
        let identical = replay.identical();
        Ok(Response::new(pb::ReplayDecisionResponse {
            identical,
            differences: replay.differences,
            revision: replay.revision,
            recorded: Some(IssuedDecision { decision_id: id, decided_at: replay.decided_at, decision: replay.recorded }.into()),
            replayed: Some(IssuedDecision { decision_id: String::new(), decided_at: now, decision: replay.replayed }.into()),
        }))
    }

    async fn list_revisions(&self, request: Request<pb::ListRevisionsRequest>) -> Result<Response<pb::ListRevisionsResponse>, Status> {
        let partnership = request.into_inner().partnership;
        let periods = self.run(move |r| r.with_db(|db| crate::record::archive::revisions(db, &partnership))).await?;
        Ok(Response::new(pb::ListRevisionsResponse {
            revisions: periods
                .into_iter()
                .map(|p| pb::RevisionLifetime {
                    revision: p.revision,
                    live_from: Some(timestamp(p.live_from)),
                    replaced_at: p.replaced_at.map(timestamp),
                    added: p.added,
                    removed: p.removed,
                    changed: p.changed,
                    decisions: p.decisions,
                })
                .collect(),
        }))
    }
}
