//! OpenTelemetry traces of each decision call, exported over OTLP/gRPC.
//!
//! Why this exists: a hosting provider running several replicas for several partnerships needs
//! to see where a slow or refused call spent its time — waiting to be admitted, queued for a
//! script slot, or inside the rules — across the fleet, in the tracing backend it already has.
//!
//! **Off unless asked for.** Nothing is built or exported unless the server is started with
//! `--otlp-endpoint`; without it [`CallTrace`] is a no-op that costs one branch per phase.
//!
//! **Spans.** Each decision call is one `cpc.decision` span (kind `SERVER`) with a child per
//! phase: [`span::ADMISSION`] (from the call reaching the decider until it either holds a script
//! slot, joins the queue or is refused), [`span::QUEUE_WAIT`] (only for a call that had to wait
//! for a slot), [`span::SCRIPT`] (the rules running on the blocking pool) and, when the server
//! keeps a decision record, [`span::RECORD_WRITE`] (waiting for the decision to be durable).
//!
//! **Privacy.** The spans are built here from timestamps and a closed set of attributes
//! ([`attr`]): partnership and kind (only when the live rules know them, so a caller cannot
//! smuggle text into a trace through an unknown id), outcome, rules revision and the gRPC status
//! code. Never the facts, the `case_ref`, a script's error message or any caller-chosen text.
//! This is why the spans are made with the OpenTelemetry API directly rather than by bridging
//! the `tracing` logs: a bridge would also export log events as span events, and with
//! `--log-facts` those carry the facts.
//!
//! **Export.** Spans go through the SDK's batch processor (its own thread, a bounded queue that
//! drops rather than blocks when the collector is slow or away) to the OTLP gRPC exporter.
//! [`Telemetry::shutdown`] flushes what is queued when the server stops.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::store::RuleStore;

/// Span names, one per phase of a decision call.
pub mod span {
    /// The whole call inside the decider (the parent of the others).
    pub const DECISION: &str = "cpc.decision";
    /// Admission: from the call reaching the decider until it holds a slot, queues or is refused.
    pub const ADMISSION: &str = "cpc.admission";
    /// Waiting in the bounded queue for a script slot (only when every slot was busy).
    pub const QUEUE_WAIT: &str = "cpc.queue_wait";
    /// The partnership's script running.
    pub const SCRIPT: &str = "cpc.script";
    /// Writing the decision to the decision record (waiting for its group commit).
    pub const RECORD_WRITE: &str = "cpc.record_write";
}

/// Attribute keys: the only attributes any span carries.
pub mod attr {
    /// Partnership id (only when the live rules know it).
    pub const PARTNERSHIP: &str = "cpc.partnership";
    /// Decision kind (only when the partnership's live rules answer it).
    pub const KIND: &str = "cpc.kind";
    /// The decision's outcome code (successful calls only).
    pub const OUTCOME: &str = "cpc.outcome";
    /// The revision of the rules that decided (successful calls only).
    pub const REVISION: &str = "cpc.rules_revision";
    /// The gRPC status code name the call ended with (`OK`, `INVALID_ARGUMENT`, …).
    pub const STATUS_CODE: &str = "rpc.grpc.status_code";
    /// Whether the call had to queue for a script slot.
    pub const QUEUED: &str = "cpc.queued";
}

/// The instrumentation scope name spans are reported under.
pub const SCOPE: &str = "cpc-rules";

/// A tracer exporting to an OTLP collector; shared by every call of one server.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Exports spans over OTLP/gRPC to `endpoint` (e.g. `http://otel-collector:4317`). Must be
    /// called inside a Tokio runtime (the exporter's channel lives on it). The collector is
    /// connected lazily: one that is down does not stop the server, its spans are dropped.
    pub fn otlp(endpoint: &str) -> Result<Telemetry, crate::error::ServeError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| crate::error::ServeError::failed(format!("cannot set up the OTLP exporter for --otlp-endpoint {endpoint}"), e))?;
        let resource = Resource::builder().with_service_name(SCOPE).with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
        let provider = SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build();
        let tracer = provider.tracer(SCOPE);
        tracing::info!(endpoint, "exporting traces over OTLP");
        Ok(Telemetry { provider, tracer })
    }

    /// Flushes queued spans and stops the exporter. Blocks: call it off the async executor.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces could not all be exported at shutdown");
        }
    }
}

/// Whether `partnership` and `kind` are known to the live rules (so may appear in a trace).
fn known(store: &RuleStore, partnership: &str, kind: &str) -> (bool, bool) {
    match store.get(partnership) {
        Some(loaded) => (true, loaded.set.kinds().any(|k| k.name == kind)),
        None => (false, false),
    }
}

/// The phases of one decision call, recorded as timestamps and turned into spans when the call
/// ends (when this is dropped, whichever way the call returned). A no-op without telemetry.
#[derive(Debug)]
pub struct CallTrace {
    inner: Option<Box<Phases>>,
}

#[derive(Debug)]
struct Phases {
    tracer: SdkTracer,
    attributes: Vec<KeyValue>,
    started: SystemTime,
    queued_at: Option<SystemTime>,
    slot_at: Option<SystemTime>,
    script: Option<(SystemTime, Option<SystemTime>)>,
    record: Option<(SystemTime, Option<(SystemTime, bool)>)>,
    code: &'static str,
}

impl CallTrace {
    /// Starts tracing a call for `partnership` and `kind` (each kept only if the live rules in
    /// `store` know it); `None` telemetry gives a trace that records nothing.
    pub fn start(telemetry: Option<&Telemetry>, store: &RuleStore, partnership: &str, kind: &str) -> CallTrace {
        let inner = telemetry.map(|t| {
            let (known_partnership, known_kind) = known(store, partnership, kind);
            let mut attributes = Vec::with_capacity(5);
            if known_partnership {
                attributes.push(KeyValue::new(attr::PARTNERSHIP, partnership.to_string()));
            }
            if known_kind {
                attributes.push(KeyValue::new(attr::KIND, kind.to_string()));
            }
            Box::new(Phases {
                tracer: t.tracer.clone(),
                attributes,
                started: SystemTime::now(),
                queued_at: None,
                slot_at: None,
                script: None,
                record: None,
                code: "UNKNOWN",
            })
        });
        CallTrace { inner }
    }

    /// Every slot was busy: admission ends and the wait in the queue begins.
    pub fn queued(&mut self) {
        if let Some(p) = &mut self.inner {
            p.queued_at = Some(SystemTime::now());
        }
    }

    /// The call holds a script slot.
    pub fn slot(&mut self) {
        if let Some(p) = &mut self.inner {
            p.slot_at = Some(SystemTime::now());
        }
    }

    /// The script was handed to the blocking pool.
    pub fn script_started(&mut self) {
        if let Some(p) = &mut self.inner {
            p.script = Some((SystemTime::now(), None));
        }
    }

    /// The script returned (or the call stopped waiting for it).
    pub fn script_ended(&mut self) {
        if let Some(Phases { script: Some((_, end)), .. }) = self.inner.as_deref_mut() {
            *end = Some(SystemTime::now());
        }
    }

    /// The decision is handed to the decision record.
    pub fn record_started(&mut self) {
        if let Some(p) = &mut self.inner {
            p.record = Some((SystemTime::now(), None));
        }
    }

    /// The record's write returned: `ok` if the decision is durable.
    pub fn record_ended(&mut self, ok: bool) {
        if let Some(Phases { record: Some((_, end)), .. }) = self.inner.as_deref_mut() {
            *end = Some((SystemTime::now(), ok));
        }
    }

    /// The call ends with a decision: `outcome` made by rules `revision`.
    pub fn decided(&mut self, outcome: &str, revision: &str) {
        if let Some(p) = &mut self.inner {
            p.code = "OK";
            p.attributes.push(KeyValue::new(attr::OUTCOME, outcome.to_string()));
            p.attributes.push(KeyValue::new(attr::REVISION, revision.to_string()));
        }
    }

    /// The call ends without a decision, with gRPC status `code`.
    pub fn failed(&mut self, code: tonic::Code) {
        if let Some(p) = &mut self.inner {
            p.code = crate::grpc::status::code_name(code);
        }
    }
}

impl Drop for CallTrace {
    fn drop(&mut self) {
        let Some(p) = self.inner.take() else { return };
        let ended = SystemTime::now();
        let mut attributes = p.attributes;
        attributes.push(KeyValue::new(attr::STATUS_CODE, p.code));
        attributes.push(KeyValue::new(attr::QUEUED, p.queued_at.is_some()));
        let status = if p.code == "OK" { Status::Ok } else { Status::error(Cow::Borrowed(p.code)) };

        let mut root = p
            .tracer
            .span_builder(span::DECISION)
            .with_kind(SpanKind::Server)
            .with_start_time(p.started)
            .with_attributes(attributes.clone())
            .start_with_context(&p.tracer, &Context::new());
        root.set_status(status.clone());
        let parent = Context::new().with_span(root);
        let child = |name: &'static str, from: SystemTime, to: SystemTime, status: Status| {
            let mut s = p
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(from)
                .with_attributes(attributes.clone())
                .start_with_context(&p.tracer, &parent);
            s.set_status(status);
            s.end_with_timestamp(to.max(from));
        };

        // Admission ends when the call queues, gets a slot, or (neither) is refused.
        let admission_end = p.queued_at.or(p.slot_at).unwrap_or(ended);
        let admitted = p.queued_at.is_some() || p.slot_at.is_some();
        child(span::ADMISSION, p.started, admission_end, if admitted { Status::Ok } else { status.clone() });
        if let Some(queued_at) = p.queued_at {
            let waited = p.slot_at.is_some();
            child(span::QUEUE_WAIT, queued_at, p.slot_at.unwrap_or(ended), if waited { Status::Ok } else { status.clone() });
        }
        if let Some((from, to)) = p.script {
            child(span::SCRIPT, from, to.unwrap_or(ended), status.clone());
        }
        if let Some((from, to)) = p.record {
            let (to, ok) = to.unwrap_or((ended, false));
            child(span::RECORD_WRITE, from, to, if ok { Status::Ok } else { Status::error(Cow::Borrowed("UNAVAILABLE")) });
        }
        parent.span().end_with_timestamp(ended);
    }
}
