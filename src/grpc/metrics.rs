//! Prometheus metrics, served over plain HTTP on their own port.
//!
//! Metrics never carry personal data or caller-chosen text: every label is a partnership id,
//! decision kind or outcome that the live rules know, an RPC name from a fixed list, a status
//! code or a fixed reason. The families (all prefixed `cpc_`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpc_decisions_total` | counter | `partnership`, `kind`, `outcome` |
//! | `cpc_decision_failures_total` | counter | `partnership`, `kind`, `reason` (`SCRIPT_…`) |
//! | `cpc_decision_duration_seconds` | histogram | `partnership`, `kind` |
//! | `cpc_rpc_duration_seconds` | histogram | `method` |
//! | `cpc_rpc_errors_total` | counter | `method`, `code` (e.g. `INVALID_ARGUMENT`) |
//! | `cpc_shed_total` | counter | `reason` (e.g. `DECISION_QUEUE_FULL`) |
//! | `cpc_decisions_running`, `cpc_decisions_queued`, `cpc_connections_open` | gauge | — |
//! | `cpc_rule_reloads_total` | counter | `partnership`, `result` (`swapped`, `unchanged`, `refused`) |
//! | `cpc_rules_revision_info` | gauge (always 1) | `partnership`, `revision` |
//! | `cpc_rules_last_reload_refused` | gauge (0/1) | `partnership` |
//!
//! The two `cpc_rules_…` families are read from the store at each scrape, so they are exact
//! whatever reloaded the rules (file watcher, SIGHUP or `ReloadRules`); reload counts come from
//! the store's reload observer ([`crate::store::RuleStore::observe_reloads`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::store::{ReloadReport, RuleStore};

/// `partnership`, `kind`, `outcome`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind.
    pub kind: String,
    /// Outcome code.
    pub outcome: String,
}

/// `partnership`, `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind.
    pub kind: String,
}

/// `partnership`, `kind`, `reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind.
    pub kind: String,
    /// `SCRIPT_RUNTIME`, `SCRIPT_TIMEOUT`, `SCRIPT_LIMIT` or `SCRIPT_BAD_RESULT`.
    pub reason: String,
}

/// `method`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// RPC name from a fixed list.
    pub method: String,
}

/// `method`, `code`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// RPC name from a fixed list.
    pub method: String,
    /// gRPC status code name.
    pub code: String,
}

/// `reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// `partnership`, `result`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Partnership id.
    pub partnership: String,
    /// `swapped`, `unchanged` or `refused`.
    pub result: String,
}

/// `partnership`, `revision`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// Partnership id.
    pub partnership: String,
    /// Live rule-set revision.
    pub revision: String,
}

/// `partnership`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartnershipLabels {
    /// Partnership id.
    pub partnership: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the service keeps, and the registry they are encoded from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Decisions made.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Decisions refused because the rules failed.
    pub decision_failures: Family<FailureLabels, Counter>,
    /// Time to make a decision (queue wait and script), for decisions made.
    pub decision_duration: HistogramFamily<KindLabels>,
    /// Time to answer each RPC, whatever the answer.
    pub rpc_duration: HistogramFamily<MethodLabels>,
    /// Non-OK answers by RPC and status code.
    pub rpc_errors: Family<ErrorLabels, Counter>,
    /// Calls (or connections) shed, by reason.
    pub shed: Family<ReasonLabels, Counter>,
    /// Scripts running now.
    pub running: Gauge,
    /// Decisions waiting for a script slot now.
    pub queued: Gauge,
    /// Connections open now.
    pub connections: Gauge,
    /// Reload results by partnership.
    pub reloads: Family<ReloadLabels, Counter>,
    revision: Family<RevisionLabels, Gauge>,
    refused: Family<PartnershipLabels, Gauge>,
    watch_failed: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cpc");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Decisions made, by partnership, kind and outcome", decisions.clone());
        let decision_failures = Family::<FailureLabels, Counter>::default();
        registry.register("decision_failures", "Decisions refused because the partnership's rules failed", decision_failures.clone());
        let decision_duration: HistogramFamily<KindLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("decision_duration_seconds", "Time to make a decision, queue wait included", decision_duration.clone());
        let rpc_duration: HistogramFamily<MethodLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("rpc_duration_seconds", "Time to answer an RPC, whatever the answer", rpc_duration.clone());
        let rpc_errors = Family::<ErrorLabels, Counter>::default();
        registry.register("rpc_errors", "RPCs answered with an error, by method and gRPC status code", rpc_errors.clone());
        let shed = Family::<ReasonLabels, Counter>::default();
        registry.register("shed", "Calls or connections shed under load, by reason", shed.clone());
        let running = Gauge::default();
        registry.register("decisions_running", "Rule scripts running now", running.clone());
        let queued = Gauge::default();
        registry.register("decisions_queued", "Decisions waiting for a script slot now", queued.clone());
        let connections = Gauge::default();
        registry.register("connections_open", "gRPC connections open now", connections.clone());
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("rule_reloads", "Rule reload attempts by partnership and result", reloads.clone());
        let revision = Family::<RevisionLabels, Gauge>::default();
        registry.register("rules_revision_info", "The live rule-set revision of each partnership (value 1)", revision.clone());
        let refused = Family::<PartnershipLabels, Gauge>::default();
        registry.register("rules_last_reload_refused", "1 while a partnership's last reload was refused and an older revision serves", refused.clone());
        let watch_failed = Gauge::default();
        registry.register("rules_watch_failed", "1 while the rules folder watcher has failed: edits are not picked up until SIGHUP or ReloadRules", watch_failed.clone());
        Metrics {
            registry,
            decisions,
            decision_failures,
            decision_duration,
            rpc_duration,
            rpc_errors,
            shed,
            running,
            queued,
            connections,
            reloads,
            revision,
            refused,
            watch_failed,
        }
    }

    /// Counts a shed call or connection.
    pub fn shed(&self, reason: &str) {
        self.shed.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Counts what one reload did.
    pub fn record_reload(&self, report: &ReloadReport) {
        let count = |partnership: &str, result: &str| {
            self.reloads.get_or_create(&ReloadLabels { partnership: partnership.to_string(), result: result.to_string() }).inc();
        };
        for (id, _) in &report.swapped {
            count(id, "swapped");
        }
        for id in &report.unchanged {
            count(id, "unchanged");
        }
        for refusal in &report.refused {
            count(&refusal.partnership, "refused");
        }
    }

    /// Has `store` report every reload to these metrics (for as long as they exist).
    pub fn observe(self: &Arc<Self>, store: &RuleStore) {
        let weak: Weak<Metrics> = Arc::downgrade(self);
        store.observe_reloads(Arc::new(move |report: &ReloadReport| {
            if let Some(m) = weak.upgrade() {
                m.record_reload(report);
            }
        }));
    }

    /// Reads the live revisions from `store`.
    fn refresh(&self, store: &RuleStore) {
        self.revision.clear();
        self.refused.clear();
        self.watch_failed.set(i64::from(store.watch_problem().is_some()));
        for p in store.partnerships() {
            self.revision.get_or_create(&RevisionLabels { partnership: p.id.clone(), revision: p.revision.clone() }).set(1);
            self.refused.get_or_create(&PartnershipLabels { partnership: p.id }).set(i64::from(p.last_failure.is_some()));
        }
    }

    /// The OpenMetrics text exposition, with the rules' revisions read from `store` now.
    pub fn encode(&self, store: &RuleStore) -> String {
        self.refresh(store);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most scrapes served at once; more connections wait to be accepted.
const MAX_SCRAPERS: usize = 8;

/// Serves `GET /metrics` on `listener` over plain HTTP/1.1 until `shutdown` resolves.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, store: Arc<RuleStore>, shutdown: impl std::future::Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening (GET /metrics)");
    }
    let scrapers = Arc::new(Semaphore::new(MAX_SCRAPERS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&scrapers).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics: accept failed");
                    continue;
                }
            },
        };
        let (metrics, store) = (Arc::clone(&metrics), Arc::clone(&store));
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let response = respond(&req, &metrics, &store);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(Duration::from_secs(30), conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended with an error"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed after 30 s"),
            }
        });
    }
    tracing::info!("metrics stopped");
}

fn respond(req: &hyper::Request<hyper::body::Incoming>, metrics: &Metrics, store: &RuleStore) -> hyper::Response<Full<Bytes>> {
    let plain = |status: u16, body: &'static str| {
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(404, "not found: metrics are at /metrics\n");
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return plain(405, "method not allowed: use GET\n");
    }
    let mut r = hyper::Response::new(Full::new(Bytes::from(metrics.encode(store))));
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// Binds the metrics address, saying which address failed if it cannot.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::error::ServeError> {
    TcpListener::bind(addr).await.map_err(|source| crate::error::ServeError::Listen { what: "for metrics ", addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Refusal;

    #[test]
    fn reloads_are_counted_by_result() {
        let m = Metrics::new();
        m.record_reload(&ReloadReport {
            swapped: vec![("york".into(), "abc".into())],
            unchanged: vec!["barnsley".into()],
            refused: vec![Refusal { partnership: "norfolk".into(), diagnostics: vec![], failed_cases: vec![] }],
            skipped: vec![],
        });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(out.contains(r#"cpc_rule_reloads_total{partnership="york",result="swapped"} 1"#), "{out}");
        assert!(out.contains(r#"cpc_rule_reloads_total{partnership="norfolk",result="refused"} 1"#), "{out}");
    }
}
