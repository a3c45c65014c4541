//! The `cpc.v1.DecisionService` and `cpc.v1.RulesService` implementations.
//!
//! Both are thin: each RPC converts its request at the edge ([`super::convert`]), and every
//! decision — typed or `Evaluate` — goes through [`Decider::decide`], the one function that runs
//! the engine. It runs each script on tokio's blocking pool (a script may use its whole time
//! budget, and must not hold up the async executor threads that serve other calls), bounds how
//! many run at once, maps errors through [`super::status`] and logs the outcome. Logs carry the
//! partnership, kind, outcome, revision and latency — never the facts or the caller's
//! `case_ref`, which may identify a child.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::convert::{self, DecisionRequest};
use super::pb;
use super::pb::decision_service_server::DecisionService;
use super::pb::rules_service_server::RulesService;
use super::status;
use crate::error::DecisionError;
use crate::facts::FieldViolation;
use crate::store::RuleStore;

/// Runs decisions against the live rules: the single path every decision RPC takes.
#[derive(Debug, Clone)]
pub struct Decider {
    store: Arc<RuleStore>,
    permits: Arc<Semaphore>,
}

impl Decider {
    /// A decider over `store` running at most `max_concurrent` scripts at once (at least one);
    /// further decisions wait their turn.
    pub fn new(store: Arc<RuleStore>, max_concurrent: usize) -> Self {
        Self { store, permits: Arc::new(Semaphore::new(max_concurrent.clamp(1, Semaphore::MAX_PERMITS))) }
    }

    /// The rules this decider runs.
    pub fn store(&self) -> &Arc<RuleStore> {
        &self.store
    }

    /// Makes one decision with the partnership's live rule set, off the async executor.
    ///
    /// `facts_field` is where the facts sit in the request: `None` when they are the request's
    /// own fields (typed RPCs), `Some("facts")` for `Evaluate`, so that field violations name
    /// the request's path (`facts.age`).
    pub async fn decide(&self, req: DecisionRequest, facts_field: Option<&'static str>) -> Result<pb::Decision, Status> {
        let started = Instant::now();
        let DecisionRequest { partnership, kind, facts, case_ref } = req;
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| status::worker_failed())?;
        let store = Arc::clone(&self.store);
        let (p, k) = (partnership.clone(), kind.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.decide(&p, &k, &facts)
        })
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let partnership = partnership.escape_debug().to_string();
        let kind = kind.escape_debug().to_string();
        match joined {
            Ok(Ok(decision)) => {
                tracing::info!(
                    %partnership,
                    %kind,
                    outcome = %decision.outcome,
                    revision = %decision.rules_revision,
                    decision_id = %decision.decision_id,
                    latency_ms,
                    "decision made"
                );
                let mut out = pb::Decision::from(decision);
                out.case_ref = case_ref;
                Ok(out)
            }
            Ok(Err(err)) => {
                log_refusal(&partnership, &kind, &err, latency_ms);
                let err = match (err, facts_field) {
                    (DecisionError::InvalidFacts(v), Some(prefix)) => {
                        DecisionError::InvalidFacts(v.into_iter().map(|f| convert::prefix_violation(prefix, f)).collect())
                    }
                    (err, _) => err,
                };
                Err(status::to_status(&err))
            }
            Err(join) => {
                tracing::error!(%partnership, %kind, latency_ms, error = %join, "decision task failed; no decision was made");
                Err(status::worker_failed())
            }
        }
    }
}

fn log_refusal(partnership: &str, kind: &str, err: &DecisionError, latency_ms: f64) {
    match err {
        DecisionError::InvalidFacts(v) => {
            // Field names only: the descriptions may quote the facts.
            let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
            tracing::info!(%partnership, %kind, ?fields, latency_ms, "request refused: invalid facts");
        }
        DecisionError::UnknownPartnership(_) => tracing::info!(%partnership, %kind, latency_ms, "request refused: unknown partnership"),
        DecisionError::UnknownKind { .. } => tracing::info!(%partnership, %kind, latency_ms, "request refused: unknown decision kind"),
        DecisionError::Script { failure, location, message } => tracing::error!(
            %partnership,
            %kind,
            reason = status::script_reason(*failure),
            %location,
            %message,
            latency_ms,
            "the rules failed; no decision was made"
        ),
    }
}

fn refused(violations: Vec<FieldViolation>) -> Status {
    let fields: Vec<&str> = violations.iter().map(|f| f.field.as_str()).collect();
    tracing::info!(?fields, "request refused: invalid request");
    status::invalid_argument(&violations)
}

/// `cpc.v1.DecisionService`.
#[derive(Debug, Clone)]
pub struct DecisionApi {
    decider: Decider,
}

impl DecisionApi {
    /// The decision service over `decider`.
    pub fn new(decider: Decider) -> Self {
        Self { decider }
    }

    async fn typed<R>(&self, request: Request<R>) -> Result<Response<pb::Decision>, Status>
    where
        DecisionRequest: TryFrom<R, Error = Vec<FieldViolation>>,
    {
        let req = DecisionRequest::try_from(request.into_inner()).map_err(refused)?;
        self.decider.decide(req, None).await.map(Response::new)
    }
}

#[tonic::async_trait]
impl DecisionService for DecisionApi {
    async fn check_attendance(&self, request: Request<pb::CheckAttendanceRequest>) -> Result<Response<pb::Decision>, Status> {
        self.typed(request).await
    }

    async fn check_exclusion(&self, request: Request<pb::CheckExclusionRequest>) -> Result<Response<pb::Decision>, Status> {
        self.typed(request).await
    }

    async fn check_child_invitation(
        &self,
        request: Request<pb::CheckChildInvitationRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        self.typed(request).await
    }

    async fn determine_plan_type(&self, request: Request<pb::DeterminePlanTypeRequest>) -> Result<Response<pb::Decision>, Status> {
        self.typed(request).await
    }

    async fn check_complaint_eligibility(
        &self,
        request: Request<pb::CheckComplaintEligibilityRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        self.typed(request).await
    }

    async fn compute_timescales(&self, request: Request<pb::ComputeTimescalesRequest>) -> Result<Response<pb::Decision>, Status> {
        self.typed(request).await
    }

    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<pb::Decision>, Status> {
        let req = DecisionRequest::try_from(request.into_inner()).map_err(refused)?;
        self.decider.decide(req, Some("facts")).await.map(Response::new)
    }
}

/// `cpc.v1.RulesService`.
#[derive(Debug, Clone)]
pub struct RulesApi {
    store: Arc<RuleStore>,
}

impl RulesApi {
    /// The rules service over `store`.
    pub fn new(store: Arc<RuleStore>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl RulesService for RulesApi {
    async fn list_partnerships(
        &self,
        _request: Request<pb::ListPartnershipsRequest>,
    ) -> Result<Response<pb::ListPartnershipsResponse>, Status> {
        let partnerships = self
            .store
            .partnerships()
            .into_iter()
            .map(|info| {
                // The live set's own kinds carry the outcomes of partnership-defined kinds too.
                let kinds = self
                    .store
                    .get(&info.id)
                    .filter(|l| l.set.revision() == info.revision)
                    .map(|l| l.set.kinds().map(pb::DecisionKind::from).collect());
                convert::partnership_info(info, kinds)
            })
            .collect();
        Ok(Response::new(pb::ListPartnershipsResponse { partnerships }))
    }

    async fn reload_rules(&self, request: Request<pb::ReloadRulesRequest>) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let ids = request.into_inner().partnerships;
        convert::reload_ids(&ids).map_err(refused)?;
        let store = Arc::clone(&self.store);
        let started = Instant::now();
        let report = tokio::task::spawn_blocking(move || store.reload(&ids)).await.map_err(|join| {
            tracing::error!(error = %join, "reload task failed");
            status::worker_failed()
        })?;
        tracing::info!(
            swapped = report.swapped.len(),
            unchanged = report.unchanged.len(),
            refused = report.refused.len(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "rules reloaded on request"
        );
        Ok(Response::new(report.into()))
    }
}
