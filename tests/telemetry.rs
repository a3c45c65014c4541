//! Traces (`--otlp-endpoint`): a real server exports its decision spans over OTLP/gRPC to an
//! in-process collector on `127.0.0.1:0`, and the spans carry partnership, kind, outcome and
//! revision — never the `case_ref` or any fact.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpc_rules::grpc::server::ServerOptions;
use cpc_rules::telemetry::{attr, span};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost_types::value::Kind;
use tokio_stream::wrappers::TcpListenerStream;

/// A collector that keeps every span (and the resource attributes) it is sent.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    resource: Arc<Mutex<Vec<KeyValue>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            if let Some(r) = rs.resource {
                self.resource.lock().unwrap().extend(r.attributes);
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).map(|kv| text(&kv.value))
}

const CASE_REF: &str = "CASE-TRACE-7f3a9c";
const CHILD_NAME: &str = "Ariadne Fotheringay-Phipps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_spans_reach_the_collector_without_personal_data() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let served = collector.clone();
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(served))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
    });

    let rules = support::fixture();
    let store = support::load(rules.path(), support::slow_limits());
    let record_dir = tempfile::tempdir().expect("tmp");
    let record = cpc_rules::record::Record::open(cpc_rules::record::RecordConfig::new(cpc_rules::record::Target::Sqlite(record_dir.path().join("record.sqlite")))).expect("record");
    let options = ServerOptions { otlp_endpoint: Some(format!("http://{collector_addr}")), record: Some(record), ..ServerOptions::default() };
    let server = support::start(Arc::clone(&store), options, false).await;

    // A typed decision, an Evaluate whose facts hold a name, and a refusal for an unknown
    // partnership whose id is personal data (a caller's mistake must not reach a trace).
    let mut client = server.decisions().await;
    let mut typed = support::child("good", 14);
    typed.case_ref = CASE_REF.into();
    let decided = client.check_child_invitation(typed).await.expect("a decision").into_inner();
    let mut evaluate = support::evaluate(
        "good",
        "slow",
        support::facts(&[("ms", Kind::NumberValue(1.0)), ("child_name", Kind::StringValue(CHILD_NAME.into()))]),
    );
    evaluate.case_ref = CASE_REF.into();
    let slow = client.evaluate(evaluate).await.expect("a custom-kind decision").into_inner();
    assert_eq!(slow.outcome, "done");
    let mut unknown = support::child(CHILD_NAME, 14);
    unknown.case_ref = CASE_REF.into();
    let refused = client.check_child_invitation(unknown).await.expect_err("unknown partnership");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    // Stopping the server flushes the batch exporter.
    server.stop().await.expect("server stops cleanly");
    let spans = collector.spans.lock().unwrap().clone();
    let _ = stop_collector.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), collector_task).await;

    let roots: Vec<&Span> = spans.iter().filter(|s| s.name == span::DECISION).collect();
    assert_eq!(roots.len(), 3, "one decision span per call; got {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());

    let ok = roots.iter().find(|s| attribute(s, attr::OUTCOME).as_deref() == Some(decided.outcome.as_str())).expect("the typed decision's span");
    assert_eq!(attribute(ok, attr::PARTNERSHIP).as_deref(), Some("good"));
    assert_eq!(attribute(ok, attr::KIND).as_deref(), Some("child_invitation"));
    assert_eq!(attribute(ok, attr::REVISION).as_deref(), Some(decided.rules_revision.as_str()));
    assert_eq!(attribute(ok, attr::STATUS_CODE).as_deref(), Some("OK"));
    for phase in [span::ADMISSION, span::SCRIPT, span::RECORD_WRITE] {
        let child = spans
            .iter()
            .find(|s| s.name == phase && s.trace_id == ok.trace_id && s.parent_span_id == ok.span_id)
            .unwrap_or_else(|| panic!("no {phase} span under the decision"));
        assert!(child.start_time_unix_nano >= ok.start_time_unix_nano && child.end_time_unix_nano <= ok.end_time_unix_nano, "{phase} lies within the call");
        assert_eq!(attribute(child, attr::PARTNERSHIP).as_deref(), Some("good"));
    }

    let unknown = roots.iter().find(|s| attribute(s, attr::STATUS_CODE).as_deref() == Some("NOT_FOUND")).expect("the refused call's span");
    assert_eq!(attribute(unknown, attr::PARTNERSHIP), None, "an unknown partnership id is caller text: not traced");
    assert_eq!(attribute(unknown, attr::KIND), None);

    // Nothing anywhere in what was exported carries the case reference or a fact value.
    let resource = collector.resource.lock().unwrap().clone();
    assert!(resource.iter().any(|kv| kv.key == "service.name" && text(&kv.value) == "cpc-rules"));
    let everything = format!("{spans:?}{resource:?}");
    for secret in [CASE_REF, CHILD_NAME] {
        assert!(!everything.contains(secret), "`{secret}` reached the collector");
    }
    for s in &spans {
        assert!(s.events.is_empty(), "no span events (log lines) are exported: {:?}", s.events);
        for kv in &s.attributes {
            let allowed = [attr::PARTNERSHIP, attr::KIND, attr::OUTCOME, attr::REVISION, attr::STATUS_CODE, attr::QUEUED];
            assert!(allowed.contains(&kv.key.as_str()), "unexpected attribute `{}` on {}", kv.key, s.name);
        }
    }
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_set_up() {
    assert_eq!(ServerOptions::default().otlp_endpoint, None);
    let rules = support::fixture();
    let store = support::load(rules.path(), cpc_rules::engine::Limits::default());
    let server = support::start(store, ServerOptions::default(), false).await;
    let mut client = server.decisions().await;
    client.check_child_invitation(support::child("good", 14)).await.expect("decides without telemetry");
    server.stop().await.expect("stops");
}
