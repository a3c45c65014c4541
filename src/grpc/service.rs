//! The `cpc.v1.DecisionService` and `cpc.v1.RulesService` implementations.
//!
//! Both are thin: each RPC converts its request at the edge ([`super::convert`]), and every
//! decision — typed or `Evaluate` — goes through [`Decider::decide`], the one function that runs
//! the engine. It runs each script on tokio's blocking pool (a script may use its whole time
//! budget, and must not hold up the async executor threads that serve other calls), maps errors
//! through [`super::status`] and logs the outcome.
//!
//! **Load.** Each decision takes a script slot from [`super::admission`], which runs it at once,
//! queues it by expected wait (per partnership, fair shares of the slots) or sheds it with
//! `RESOURCE_EXHAUSTED` and a retry delay. The call's [`Deadline`] is checked before queueing,
//! bounds the wait, is checked again once a slot is free, and bounds the wait for the script: a
//! call whose deadline passes gets `DEADLINE_EXCEEDED` and is not decided. A script already running when its caller gives up finishes within its
//! own time budget, keeping its slot until then, so the server never runs more than its limit.
//!
//! **Record.** With a decision record ([`crate::record`]), a decision is written to it — durably,
//! by group commit — before the call gets it; if it cannot be written the call fails with
//! `UNAVAILABLE` (unless the record's policy is to serve anyway). Refusals are counted, never
//! stored with their facts.
//!
//! **Privacy.** Logs carry the partnership, kind, outcome, revision and latency — never the
//! facts, the caller's `case_ref`, a script's error message (it may quote facts) or field names
//! the caller made up, unless the server was started with `--log-facts` (a debugging aid).

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::admission::{self, Admission, Permit, Refused};
use super::convert::{self, EdgeRequest};
use super::limits::Deadline;
use super::metrics::{DecisionLabels, FailureLabels, KindLabels, Metrics};
use super::pb;
use super::pb::decision_service_server::DecisionService;
use super::pb::rules_service_server::RulesService;
use super::status;
use crate::error::DecisionError;
use crate::facts::FieldViolation;
use crate::model::IssuedDecision;
use crate::record::{DecisionRecord, FailurePolicy, Record, RefusalKey};
use crate::store::RuleStore;
use crate::telemetry::{CallTrace, Telemetry};

/// How decisions are admitted: slots, queue bounds and shares ([`super::admission`]).
pub use super::admission::AdmissionConfig as DecisionLimits;

/// Runs decisions against the live rules: the single path every decision RPC takes.
#[derive(Debug, Clone)]
pub struct Decider {
    store: Arc<RuleStore>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    log_facts: bool,
    telemetry: Option<Arc<Telemetry>>,
    record: Option<Arc<Record>>,
}

impl Decider {
    /// A decider over `store` running at most `max_concurrent` scripts at once (at least one),
    /// with the default queue ([`DecisionLimits::with_slots`]) and metrics of its own.
    pub fn new(store: Arc<RuleStore>, max_concurrent: usize) -> Self {
        Self::with_limits(store, DecisionLimits::with_slots(max_concurrent), Arc::new(Metrics::new()), false)
    }

    /// A decider over `store` with `limits`, counting in `metrics`; `log_facts` logs each
    /// request's facts and `case_ref` (debugging only: they may identify a child).
    pub fn with_limits(store: Arc<RuleStore>, limits: DecisionLimits, metrics: Arc<Metrics>, log_facts: bool) -> Self {
        let admission = Admission::new(limits, Arc::clone(&metrics));
        Self::with_admission(store, admission, metrics, log_facts)
    }

    /// A decider over `store` admitting decisions through `admission` (shared with the guard
    /// layer, which sheds early when it is saturated).
    pub fn with_admission(store: Arc<RuleStore>, admission: Arc<Admission>, metrics: Arc<Metrics>, log_facts: bool) -> Self {
        Self { store, admission, metrics, log_facts, telemetry: None, record: None }
    }

    /// This decider, writing every decision to `record` before returning it.
    pub fn with_record(mut self, record: Option<Arc<Record>>) -> Self {
        self.record = record;
        self
    }

    /// The decision record, if there is one.
    pub fn record(&self) -> Option<&Arc<Record>> {
        self.record.as_ref()
    }

    /// This decider, tracing each call's phases to `telemetry` (see [`crate::telemetry`]).
    pub fn with_telemetry(mut self, telemetry: Option<Arc<Telemetry>>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The rules this decider runs.
    pub fn store(&self) -> &Arc<RuleStore> {
        &self.store
    }

    /// Where this decider's calls are counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Waits for a script slot in the partnership's queue, within the queue's bounds and the
    /// call's deadline ([`Admission::acquire`]).
    async fn slot(&self, partnership: &str, deadline: Option<Deadline>) -> Result<Permit, Status> {
        let key = if self.store.get(partnership).is_some() { partnership } else { admission::UNKNOWN_PARTNERSHIP };
        match self.admission.acquire(key, deadline.map(|d| d.0)).await {
            Ok(permit) => Ok(permit),
            Err(Refused::Shed(why, retry)) => Err(status::overloaded(why, retry)),
            Err(Refused::DeadlinePassed) => Err(status::deadline_exceeded("while waiting for a decision slot")),
        }
    }

    /// Makes one decision with the partnership's live rule set, off the async executor, within
    /// the queue's bounds and the call's `deadline`.
    ///
    /// The partnership and kind are looked up first (`NOT_FOUND` before any fact is looked at);
    /// the facts are then validated once, against the partnership's vocabulary, before the call
    /// takes a slot; the edge's own problems are reported with the core's in one reply.
    pub async fn decide(&self, req: EdgeRequest, deadline: Option<Deadline>) -> Result<pb::Decision, Status> {
        self.decide_as(req, deadline, "anonymous").await
    }

    /// As [`Decider::decide`], recording `who` asked (see [`crate::grpc::auth::CallerIdentity`]).
    pub async fn decide_as(&self, req: EdgeRequest, deadline: Option<Deadline>, who: &str) -> Result<pb::Decision, Status> {
        let started = Instant::now();
        let EdgeRequest { partnership, kind, facts, case_ref, problems, facts_field } = req;
        let log_partnership = super::guard::loggable(&partnership);
        let log_kind = super::guard::loggable(&kind);
        let mut trace = CallTrace::start(self.telemetry.as_deref(), &self.store, &partnership, &kind);
        if self.log_facts {
            tracing::info!(partnership = %log_partnership, kind = %log_kind, %case_ref, %facts, "decision requested (--log-facts)");
        }
        let (counted_partnership, counted_kind) = (partnership.clone(), kind.clone());
        let refuse = |err: DecisionError, trace: &mut CallTrace| {
            self.log_refusal(&log_partnership, &log_kind, &err, started.elapsed().as_secs_f64() * 1000.0);
            let status = status::to_status(&prefixed(err, facts_field));
            trace.failed(status.code());
            self.count_refusal(&counted_partnership, &counted_kind, status.code());
            Err(status)
        };
        let Some(loaded) = self.store.get(&partnership) else {
            return refuse(self.store.unknown_partnership(&partnership), &mut trace);
        };
        let today = crate::clock::today_in_england();
        let facts = match (loaded.set.facts(&kind, &facts, today), problems.is_empty()) {
            (Ok(f), true) => f,
            (Ok(_), false) => return refuse(DecisionError::InvalidFacts(problems), &mut trace),
            (Err(DecisionError::InvalidFacts(core)), _) => {
                let mut all = problems;
                let extra: Vec<FieldViolation> = core.into_iter().filter(|c| !all.iter().any(|v| convert::covers(&v.field, &c.field))).collect();
                all.extend(extra);
                return refuse(DecisionError::InvalidFacts(all), &mut trace);
            }
            (Err(e), _) => return refuse(e, &mut trace),
        };
        let slot = match self.slot(&partnership, deadline).await {
            Ok(slot) => slot,
            Err(refusal) => {
                trace.failed(refusal.code());
                tracing::debug!(partnership = %log_partnership, kind = %log_kind, code = status::code_name(refusal.code()), "decision not started");
                return Err(refusal);
            }
        };
        trace.slot();
        if deadline.is_some_and(Deadline::passed) {
            trace.failed(tonic::Code::DeadlineExceeded);
            return Err(status::deadline_exceeded("while waiting for a decision slot"));
        }
        trace.script_started();
        if let Some(record) = &self.record {
            record.ensure_archived(&loaded.sources, loaded.set.revision(), loaded.loaded_at);
        }
        let recorded_facts = self.record.as_ref().map(|_| {
            let mut given = facts.to_json();
            if let (Some((name, _)), Some(m)) = (facts.defaulted_date(), given.as_object_mut()) {
                m.remove(name);
            }
            given
        });
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            loaded.set.decide_facts(&facts)
        });
        let joined = match deadline {
            None => task.await,
            Some(d) => match tokio::time::timeout_at(d.0.into(), task).await {
                Ok(joined) => joined,
                Err(_) => {
                    trace.failed(tonic::Code::DeadlineExceeded);
                    tracing::info!(partnership = %log_partnership, kind = %log_kind, "deadline passed while the script ran; no decision was returned");
                    return Err(status::deadline_exceeded("while the rules were running"));
                }
            },
        };
        trace.script_ended();
        let elapsed = started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        match joined {
            Ok(Ok(decision)) => {
                // Microseconds: what the record keeps, so the caller's time and the record's agree.
                let issued = IssuedDecision::stamp(decision, chrono::SubsecRound::trunc_subsecs(crate::clock::now(), 6));
                if let (Some(record), Some(facts)) = (&self.record, recorded_facts) {
                    let entry = DecisionRecord {
                        decision_id: issued.decision_id.clone(),
                        decided_at: issued.decided_at,
                        today,
                        facts,
                        decision: issued.decision.clone(),
                        caller: who.to_string(),
                        case_ref_hash: record.hash_case_ref(&case_ref),
                    };
                    trace.record_started();
                    let written = record.write(&entry).await;
                    trace.record_ended(written.is_ok());
                    if let Err(e) = written {
                        match record.on_failure() {
                            FailurePolicy::Refuse => {
                                trace.failed(tonic::Code::Unavailable);
                                self.count_refusal(&partnership, &kind, tonic::Code::Unavailable);
                                return Err(status::not_recorded(&e));
                            }
                            FailurePolicy::Serve => {
                                tracing::error!(partnership = %log_partnership, kind = %log_kind, decision_id = %issued.decision_id, error = %e, "decision NOT recorded; returned anyway (--record-failure serve)");
                            }
                        }
                    }
                }
                let d = &issued.decision;
                trace.decided(&d.outcome, &d.rules_revision);
                tracing::info!(
                    partnership = %log_partnership,
                    kind = %log_kind,
                    outcome = %d.outcome,
                    revision = %d.rules_revision,
                    decision_id = %issued.decision_id,
                    latency_ms,
                    "decision made"
                );
                self.metrics
                    .decisions
                    .get_or_create(&DecisionLabels { partnership: partnership.clone(), kind: kind.clone(), outcome: d.outcome.clone() })
                    .inc();
                self.metrics.decision_duration.get_or_create(&KindLabels { partnership, kind }).observe(elapsed.as_secs_f64());
                let mut out = pb::Decision::from(issued);
                out.case_ref = case_ref;
                Ok(out)
            }
            Ok(Err(err)) => {
                if let DecisionError::Script { failure, .. } = &err {
                    self.metrics
                        .decision_failures
                        .get_or_create(&FailureLabels { partnership, kind, reason: status::script_reason(*failure).to_string() })
                        .inc();
                }
                refuse(err, &mut trace)
            }
            Err(join) => {
                trace.failed(tonic::Code::Internal);
                tracing::error!(partnership = %log_partnership, kind = %log_kind, latency_ms, error = %join, "decision task failed; no decision was made");
                Err(status::worker_failed())
            }
        }
    }

    /// Counts a refused call in the record (partnership and kind as given only when loaded, so
    /// callers cannot fill the record with names of their own).
    fn count_refusal(&self, partnership: &str, kind: &str, code: tonic::Code) {
        let Some(record) = &self.record else { return };
        let loaded = self.store.get(partnership);
        let known_kind = loaded.as_ref().is_some_and(|l| l.set.kind(kind).is_some());
        record.count_refusal(RefusalKey {
            day: crate::clock::now().date_naive(),
            partnership: if loaded.is_some() { partnership.to_string() } else { "<unknown>".into() },
            kind: if known_kind { kind.to_string() } else { "<unknown>".into() },
            code: status::code_name(code).to_string(),
        });
    }

    fn log_refusal(&self, partnership: &str, kind: &str, err: &DecisionError, latency_ms: f64) {
        match err {
            DecisionError::InvalidFacts(v) => {
                let fields = loggable_fields(v, self.log_facts);
                tracing::info!(%partnership, %kind, ?fields, latency_ms, "request refused: invalid facts");
            }
            DecisionError::MissingFact { fact, location, .. } => {
                tracing::info!(%partnership, %kind, fact = %loggable_name(fact), %location, latency_ms, "request refused: a fact the rules read was not given");
            }
            DecisionError::UnknownPartnership { .. } => tracing::info!(%partnership, %kind, latency_ms, "request refused: unknown partnership"),
            DecisionError::UnknownKind { .. } => tracing::info!(%partnership, %kind, latency_ms, "request refused: unknown decision kind"),
            DecisionError::Script { failure, location, message } if self.log_facts => tracing::error!(
                %partnership,
                %kind,
                reason = status::script_reason(*failure),
                %location,
                %message,
                latency_ms,
                "the rules failed; no decision was made"
            ),
            DecisionError::Script { failure, location, .. } => tracing::error!(
                %partnership,
                %kind,
                reason = status::script_reason(*failure),
                %location,
                latency_ms,
                "the rules failed; no decision was made (the message went to the caller; start with --log-facts to log it)"
            ),
        }
    }

    /// `INVALID_ARGUMENT` for a request refused at the edge, logged without personal data.
    pub fn refused(&self, violations: Vec<FieldViolation>) -> Status {
        let fields = loggable_fields(&violations, self.log_facts);
        tracing::info!(?fields, "request refused: invalid request");
        status::invalid_argument(&violations)
    }
}

/// A caller-chosen name (partnership, kind, fact) as it may appear in a log: escaped and
/// truncated, so a caller cannot forge log lines or flood them.
pub(crate) fn loggable_name(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name.chars().take(MAX).collect::<String>().escape_debug().to_string();
    if name.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A violation's field, as a log may show it: known names only. A path with any other name (an
/// `Evaluate` fact key the caller made up, which could be anything) is logged as `<redacted>`.
fn known_name(name: &str) -> bool {
    const REQUEST_FIELDS: [&str; 6] = ["partnership", "kind", "case_ref", "facts", "partnerships", "…"];
    REQUEST_FIELDS.contains(&name) || name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') && name.len() <= 40 && KNOWN_FACTS.contains(&name)
}

/// Fact names of the bundled vocabulary (and the field names of its objects).
const KNOWN_FACTS: &[&str] = &[
    "role", "session", "wishes_to_give_views", "intends_to_attend", "grounds", "age", "sufficient_understanding", "wishes_to_attend",
    "sensitive_information", "conference_type", "significant_harm", "categories", "needs_support", "early_help_appropriate",
    "conference_date", "first_review", "safety_scores", "complainant", "category", "description", "stage1_completed",
    "states_criteria_aspects", "still_dissatisfied", "solution_sought", "strategy_discussion_date", "initial_conference_date",
    "last_review_date", "as_of", "first_language_english", "needs_other_format",
];

/// The error with its violations named by their path in the request.
fn prefixed(err: DecisionError, facts_field: Option<&str>) -> DecisionError {
    match (err, facts_field) {
        (DecisionError::InvalidFacts(v), Some(prefix)) => DecisionError::InvalidFacts(v.into_iter().map(|f| convert::prefix_violation(prefix, f)).collect()),
        (DecisionError::MissingFact { fact, location, source_line }, Some(prefix)) => {
            DecisionError::MissingFact { fact: format!("{prefix}.{fact}"), location, source_line }
        }
        (err, _) => err,
    }
}

fn loggable_fields(violations: &[FieldViolation], log_facts: bool) -> Vec<String> {
    violations
        .iter()
        .map(|v| {
            let known = v.field.split('.').all(|segment| {
                let name = segment.split('[').next().unwrap_or_default();
                known_name(name) && segment[name.len()..].chars().all(|c| c.is_ascii_digit() || c == '[' || c == ']')
            });
            if known || log_facts { v.field.clone() } else { "<redacted>".to_string() }
        })
        .collect()
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
        EdgeRequest: TryFrom<R, Error = Vec<FieldViolation>>,
    {
        let deadline = request.extensions().get::<Deadline>().copied();
        let who = caller_identity(&request);
        let req = EdgeRequest::try_from(request.into_inner()).map_err(|v| self.decider.refused(v))?;
        self.decider.decide_as(req, deadline, &who).await.map(Response::new)
    }
}

/// Who asked, as the guard identified them (`anonymous` when there is no guard in front).
fn caller_identity<R>(request: &Request<R>) -> String {
    request.extensions().get::<super::auth::CallerIdentity>().map_or_else(|| "anonymous".to_string(), |c| c.0.clone())
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
        let deadline = request.extensions().get::<Deadline>().copied();
        let who = caller_identity(&request);
        let req = EdgeRequest::try_from(request.into_inner()).map_err(|v| self.decider.refused(v))?;
        self.decider.decide_as(req, deadline, &who).await.map(Response::new)
    }
}

/// `cpc.v1.RulesService`.
#[derive(Debug, Clone)]
pub struct RulesApi {
    store: Arc<RuleStore>,
    record: Option<Arc<Record>>,
}

impl RulesApi {
    /// The rules service over `store`.
    pub fn new(store: Arc<RuleStore>) -> Self {
        Self { store, record: None }
    }

    /// With a decision record, a reload's reply says what each new revision changes in the
    /// recorded decisions of the last `--reload-impact-days` days.
    #[must_use]
    pub fn with_record(mut self, record: Option<Arc<Record>>) -> Self {
        self.record = record;
        self
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
                    .map(|l| l.set.kinds().map(pb::DecisionKind::from).collect())
                    .unwrap_or_default();
                convert::partnership_info(info, kinds)
            })
            .collect();
        Ok(Response::new(pb::ListPartnershipsResponse { partnerships }))
    }

    async fn reload_rules(&self, request: Request<pb::ReloadRulesRequest>) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let ids = request.into_inner().partnerships;
        convert::reload_ids(&ids).map_err(|v| {
            tracing::info!(problems = v.len(), "reload refused: invalid partnership ids");
            status::invalid_argument(&v)
        })?;
        let store = Arc::clone(&self.store);
        let record = self.record.clone();
        let started = Instant::now();
        let report = tokio::task::spawn_blocking(move || {
            let report = store.reload(&ids);
            let impacts: Vec<Option<pb::RecordImpact>> = report
                .swapped
                .iter()
                .map(|(id, revision)| {
                    let record = record.as_ref()?;
                    let days = record.config().reload_impact_days;
                    let loaded = store.get(id).filter(|l| l.set.revision() == revision && days > 0)?;
                    Some(convert::record_impact(days, record.reload_impact(id, &loaded.set)))
                })
                .collect();
            let mut reply = pb::ReloadRulesResponse::from(report);
            for (swapped, impact) in reply.swapped.iter_mut().zip(impacts) {
                swapped.record_impact = impact;
            }
            reply
        })
        .await
        .map_err(|join| {
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
        Ok(Response::new(report))
    }
}
