//! Assembling and running the gRPC server.
//!
//! One tonic server carries the two `cpc.v1` services, the standard health service
//! (`grpc.health.v1.Health`) and server reflection in both the `v1` and `v1alpha` protocols, so
//! `grpcurl` and any gRPC client can discover and call it. Health reports `SERVING` for the
//! server as a whole (`""`) and for each `cpc.v1` service from the start (the rules are loaded
//! before the server is built) and `NOT_SERVING` as soon as shutdown begins, before in-flight
//! calls drain, so load balancers stop sending work first. Draining is bounded by
//! [`ServerOptions::shutdown_grace`].
//!
//! Every call passes the [`super::guard`] layer (credentials, rate and per-connection limits,
//! deadline, metrics); every connection carries its own state ([`super::transport`]) and
//! beyond [`ServerOptions::max_connections`] is closed at once. With [`ServerOptions::tls`] the
//! server speaks TLS (mutual TLS with a client CA); without it, it refuses to listen on a
//! non-loopback address unless [`ServerOptions::allow_plaintext`]. Prometheus metrics are
//! served on a second listener when one is given ([`serve_on`]); [`run`] binds it only on a
//! loopback address unless [`ServerOptions::metrics_allow_remote`].
//!
//! With [`ServerOptions::record`], every decision is written to the decision record before it is
//! returned, `cpc.v1.RecordService` serves it, and (unless the record's failure policy is to
//! serve anyway) health reports `NOT_SERVING` while the record cannot be written.
//!
//! Decisions are admitted by [`super::admission`]; the same admission state is shared with the
//! guard, which sheds a decision call before decoding it when every queue is saturated.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt as _;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use super::auth::AccessPolicy;
use super::guard::{GuardConfig, GuardLayer, LogLimiter};
use super::limits::{ConnLimits, RateLimit, SharedBucket};
use super::metrics::Metrics;
use super::pb::decision_service_server::DecisionServiceServer;
use super::pb::record_service_server::RecordServiceServer;
use super::pb::rules_service_server::RulesServiceServer;
use super::record::RecordApi;
use super::admission::{Admission, AdmissionConfig};
use super::service::{DecisionApi, Decider, RulesApi};
use super::transport::{ConnIo, TlsSettings, check_plaintext};
use crate::store::RuleStore;

/// The port the server listens on by default.
pub const DEFAULT_PORT: u16 = 50051;

/// The gRPC service names this server reports health for (besides the overall `""`).
pub const SERVICE_NAMES: [&str; 2] = [
    <DecisionServiceServer<DecisionApi> as NamedService>::NAME,
    <RulesServiceServer<RulesApi> as NamedService>::NAME,
];

/// Largest HTTP/2 header block accepted from a client (bytes): metadata is small.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How the server runs. See `docs/reliability.md` for what each limit guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Address to listen on (used by [`run`]; [`serve_with`] takes a bound listener).
    pub addr: SocketAddr,
    /// Most scripts running at once.
    pub max_concurrent_decisions: usize,
    /// Most decisions waiting for a script slot in all (a hard cap on the queue's memory, far
    /// above any normal burst); one more is shed with `RESOURCE_EXHAUSTED`.
    pub max_queued_decisions: usize,
    /// The queue-delay bound: longest expected wait a decision is queued with, and longest it
    /// then waits for a slot, before it is shed with `RESOURCE_EXHAUSTED`.
    pub max_queue_wait: Duration,
    /// CoDel's target sojourn time: when a partnership's queued calls have waited longer than
    /// this for a whole second, its queue is overloaded and its bound shrinks to this.
    pub queue_target: Duration,
    /// Most script slots one partnership holds while others are active (`None`: a fair share
    /// of [`ServerOptions::max_concurrent_decisions`] among the active partnerships). Idle
    /// slots are always lent.
    pub partnership_slots: Option<usize>,
    /// Longest time one call may take before the server answers `DEADLINE_EXCEEDED`; a shorter
    /// `grpc-timeout` from the client wins.
    pub request_timeout: Duration,
    /// Most calls in progress on one connection; one more is shed with `RESOURCE_EXHAUSTED`.
    /// (HTTP/2 streams per connection are capped at twice this.)
    pub concurrency_limit_per_connection: usize,
    /// Calls a second the whole server takes (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Calls a second one connection may make (`None`: no limit).
    pub rate_limit_per_connection: Option<RateLimit>,
    /// Most connections open at once; a new one beyond this is closed at once (0: no limit).
    pub max_connections: usize,
    /// Largest request message accepted (bytes); tonic refuses a larger one with `OUT_OF_RANGE`
    /// naming the limit, before decoding it.
    pub max_request_bytes: usize,
    /// How long shutdown waits for in-flight calls to finish before returning anyway.
    pub shutdown_grace: Duration,
    /// Serve TLS (and mutual TLS with a client CA). `None`: plaintext.
    pub tls: Option<TlsSettings>,
    /// Serve plaintext on a non-loopback address (behind a TLS-terminating proxy).
    pub allow_plaintext: bool,
    /// Who may call what.
    pub access: AccessPolicy,
    /// Log each request's facts and `case_ref` (debugging only: they may identify a child).
    pub log_facts: bool,
    /// Address to serve Prometheus metrics on (used by [`run`]; `None`: no metrics endpoint).
    /// Only a loopback address unless [`ServerOptions::metrics_allow_remote`].
    pub metrics_addr: Option<SocketAddr>,
    /// OTLP/gRPC collector to export traces to, e.g. `http://otel-collector:4317` (`None`: no
    /// traces). See [`crate::telemetry`].
    pub otlp_endpoint: Option<String>,
    /// Serve metrics on a non-loopback address (they show partnerships, load and errors).
    pub metrics_allow_remote: bool,
    /// Address to serve the web console and the JSON API on (used by [`run`]; `None`: none).
    /// It shares this server's decider, tokens and TLS settings; see [`crate::http`].
    pub console_addr: Option<SocketAddr>,
    /// The decision record every decision is written to before it is returned (`None`: no
    /// record). With [`crate::record::FailurePolicy::Refuse`], health reports `NOT_SERVING`
    /// while the record cannot be written.
    pub record: Option<Arc<crate::record::Record>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        ServerOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            max_concurrent_decisions: cores * 4,
            max_queued_decisions: 16_384,
            max_queue_wait: Duration::from_secs(2),
            queue_target: Duration::from_millis(100),
            partnership_slots: None,
            request_timeout: Duration::from_secs(10),
            concurrency_limit_per_connection: 4096,
            rate_limit: None,
            rate_limit_per_connection: None,
            max_connections: 1024,
            max_request_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            allow_plaintext: false,
            access: AccessPolicy::default(),
            log_facts: false,
            metrics_addr: None,
            otlp_endpoint: None,
            metrics_allow_remote: false,
            console_addr: None,
            record: None,
        }
    }
}

impl ServerOptions {
    /// The decision admission settings these options give.
    pub fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            slots: self.max_concurrent_decisions.max(1),
            max_queued: self.max_queued_decisions,
            max_queue_delay: self.max_queue_wait,
            target: self.queue_target,
            interval: Duration::from_secs(1),
            partnership_slots: self.partnership_slots,
            cores: std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        }
    }
}

/// Serves on `listener` with default options until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    store: Arc<RuleStore>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_with(listener, store, &ServerOptions::default(), shutdown).await
}

/// Serves on `listener` (options' `addr` and `metrics_addr` are not used) until `shutdown`
/// resolves; then reports `NOT_SERVING`, stops accepting connections, and waits up to
/// `shutdown_grace` for in-flight calls to finish.
pub async fn serve_with(
    listener: TcpListener,
    store: Arc<RuleStore>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_on(listener, None, store, options, shutdown).await
}

/// As [`serve_with`], also serving Prometheus metrics (`GET /metrics`, plain HTTP) on
/// `metrics_listener` when given, until the same shutdown.
pub async fn serve_on(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    store: Arc<RuleStore>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_all(listener, metrics_listener, None, store, options, shutdown).await
}

/// As [`serve_on`], also serving the web console and JSON API ([`crate::http`]) on
/// `console_listener` when given, with the same decider, until the same shutdown.
pub async fn serve_all(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    console_listener: Option<TcpListener>,
    store: Arc<RuleStore>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("the listener has no local address")?;
    check_plaintext(local, options.tls.is_some(), options.allow_plaintext)?;
    if options.tls.is_none() && !local.ip().is_loopback() && (options.access.admin_token.is_some() || options.access.caller_token.is_some()) {
        tracing::warn!(%local, "serving plaintext on a non-loopback address with bearer tokens configured: tokens cross the network in clear unless a TLS-terminating proxy is in front");
    }
    if !options.access.admin_client_names.is_empty() && !options.tls.as_ref().is_some_and(TlsSettings::mutual) {
        anyhow::bail!("--admin-client-cn needs mutual TLS: give --tls-cert, --tls-key and --tls-client-ca");
    }

    let metrics = Arc::new(Metrics::new());
    metrics.observe(&store);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    for name in SERVICE_NAMES {
        health.set_service_status(name, ServingStatus::Serving).await;
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the v1 reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the v1alpha reflection service")?;

    let telemetry = options.otlp_endpoint.as_deref().map(crate::telemetry::Telemetry::otlp).transpose()?.map(Arc::new);
    let admission = Admission::new(options.admission(), Arc::clone(&metrics));
    let decider = Decider::with_admission(Arc::clone(&store), Arc::clone(&admission), Arc::clone(&metrics), options.log_facts)
        .with_telemetry(telemetry.clone());
    let decider = decider.with_record(options.record.clone());
    if let Some(record) = &options.record {
        record.attach(&store);
    }
    let console_decider = decider.clone();
    let decisions = DecisionServiceServer::new(DecisionApi::new(decider)).max_decoding_message_size(options.max_request_bytes);
    let rules = RulesServiceServer::new(RulesApi::new(Arc::clone(&store)).with_record(options.record.clone())).max_decoding_message_size(options.max_request_bytes);
    let record_api = RecordServiceServer::new(RecordApi::new(options.record.clone())).max_decoding_message_size(options.max_request_bytes);
    let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let record_health = options.record.as_ref().filter(|r| r.on_failure() == crate::record::FailurePolicy::Refuse).map(|r| {
        let mut healthy = r.health();
        let reporter = health.clone();
        let shutting_down = Arc::clone(&shutting_down);
        tokio::spawn(async move {
            while healthy.changed().await.is_ok() {
                let ok = *healthy.borrow_and_update();
                if shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
                if ok {
                    tracing::info!("the decision record can be written again: SERVING");
                } else {
                    tracing::error!("the decision record cannot be written: reporting NOT_SERVING (decisions fail with UNAVAILABLE)");
                }
                reporter.set_service_status("", status).await;
                for name in SERVICE_NAMES {
                    reporter.set_service_status(name, status).await;
                }
            }
        })
    });

    let conn_limits = ConnLimits {
        max_in_flight: options.concurrency_limit_per_connection.max(1),
        rate: options.rate_limit_per_connection,
        connections: (options.max_connections > 0).then(|| Arc::new(Semaphore::new(options.max_connections.min(Semaphore::MAX_PERMITS)))),
    };
    let conn_metrics = Arc::clone(&metrics);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60))).filter_map(
        move |accepted| match accepted {
            Ok(stream) => {
                let peer = stream.peer_addr().ok();
                match conn_limits.admit(peer, stream.local_addr().ok()) {
                    Some(state) => {
                        conn_metrics.connections.inc();
                        Some(Ok(ConnIo::new(stream, state, Arc::clone(&conn_metrics))))
                    }
                    None => {
                        conn_metrics.shed(super::status::Shed::Connections.reason());
                        tracing::warn!(?peer, "connection refused: the server has as many connections open as it takes");
                        None
                    }
                }
            }
            Err(e) => Some(Err(e)),
        },
    );

    let global_rate = options.rate_limit.map(|l| Arc::new(SharedBucket::new(l)));
    let guard = GuardLayer::new(GuardConfig {
        policy: options.access.clone(),
        global_rate: global_rate.clone(),
        request_timeout: options.request_timeout,
        metrics: Arc::clone(&metrics),
        admission: Some(admission),
        auth_warnings: LogLimiter::default(),
    });

    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let (metrics_stop_tx, metrics_stop_rx) = tokio::sync::watch::channel(false);
    let reporter = health.clone();
    let stopping = Arc::clone(&shutting_down);
    let signal = async move {
        shutdown.await;
        stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("shutdown requested: reporting NOT_SERVING and draining in-flight calls");
        reporter.set_service_status("", ServingStatus::NotServing).await;
        for name in SERVICE_NAMES {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        let _ = began_tx.send(());
    };

    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        builder = builder
            .tls_config(tls.server_config())
            .context("invalid TLS settings: check that --tls-cert and --tls-key are a PEM certificate chain and its private key")?;
    }
    let per_connection_streams = u32::try_from(options.concurrency_limit_per_connection.saturating_mul(2).max(1)).unwrap_or(u32::MAX);
    let server = builder
        .max_concurrent_streams(Some(per_connection_streams))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(guard)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(decisions)
        .add_service(rules)
        .add_service(record_api)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);

    let console_task = console_listener.map(|l| {
        let mut stop = metrics_stop_rx.clone();
        let config = crate::http::ConsoleConfig {
            tls: options.tls.clone(),
            allow_plaintext: options.allow_plaintext,
            access: options.access.clone(),
            request_timeout: options.request_timeout,
            max_request_bytes: options.max_request_bytes,
            limits: Arc::new(crate::http::limits::HttpLimits::new(global_rate, options.rate_limit_per_connection)),
            lookup: match &options.record {
                Some(record) => Arc::new(crate::http::lookup::RecordLookup(Arc::clone(record))),
                None => Arc::new(crate::http::lookup::NoRecord),
            },
        };
        tokio::spawn(crate::http::serve(l, console_decider, config, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }))
    });
    let metrics_task = metrics_listener.map(|l| {
        let mut stop = metrics_stop_rx.clone();
        tokio::spawn(super::metrics::serve(l, Arc::clone(&metrics), Arc::clone(&store), async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }))
    });

    tracing::info!(addr = %local, tls = options.tls.is_some(), mutual_tls = options.tls.as_ref().is_some_and(TlsSettings::mutual), "gRPC server listening");
    let result = tokio::select! {
        biased;
        result = &mut server => result.context("gRPC server failed"),
        Ok(()) = began_rx => {
            match tokio::time::timeout(options.shutdown_grace, &mut server).await {
                Ok(result) => result.context("gRPC server failed while draining"),
                Err(_) => {
                    tracing::warn!(grace = ?options.shutdown_grace, "in-flight calls did not finish within the shutdown grace period; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    let _ = metrics_stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Some(task) = console_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the console failed"),
            Err(e) => tracing::error!(error = %e, "the console task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(t) = telemetry {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    if let Some(task) = record_health {
        task.abort();
    }
    result?;
    tracing::info!("gRPC server stopped");
    Ok(())
}

/// Binds `options.addr` (and `options.metrics_addr`) and serves until SIGINT or SIGTERM: what
/// `cpc-rules serve` runs. Refuses to start before binding if plaintext is not allowed there.
pub async fn run(store: Arc<RuleStore>, options: ServerOptions) -> anyhow::Result<()> {
    check_plaintext(options.addr, options.tls.is_some(), options.allow_plaintext)?;
    if let Some(addr) = options.metrics_addr {
        check_metrics_addr(addr, options.metrics_allow_remote)?;
    }
    let listener = bind(options.addr).await?;
    let metrics = match options.metrics_addr {
        Some(addr) => Some(super::metrics::bind(addr).await?),
        None => None,
    };
    let console = match options.console_addr {
        Some(addr) => {
            crate::http::security::check(addr, options.tls.as_ref(), options.allow_plaintext, &options.access)?;
            Some(bind(addr).await?)
        }
        None => None,
    };
    serve_all(listener, metrics, console, store, &options, shutdown_signal()).await
}

/// Refuses a non-loopback metrics address unless explicitly allowed: the metrics name the
/// partnerships, their load and their errors, and the endpoint has no credentials.
pub fn check_metrics_addr(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve metrics on {addr}: it is not a loopback address and the metrics endpoint has no credentials; \
         use 127.0.0.1:<port> (scraped through a sidecar or port-forward), or pass --metrics-allow-remote to serve them on the network"
    )
}

/// Binds a listener on `addr`, saying which address failed if it cannot.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

/// Resolves when the process receives SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C; relying on SIGTERM");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; relying on Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_stay_on_loopback_unless_allowed() {
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert!(check_metrics_addr(local, false).is_ok());
        assert!(check_metrics_addr("[::1]:9464".parse().unwrap(), false).is_ok());
        let refused = check_metrics_addr(everywhere, false).expect_err("not loopback");
        assert!(refused.to_string().contains("--metrics-allow-remote"), "{refused}");
        assert!(check_metrics_addr(everywhere, true).is_ok());
        assert!(!ServerOptions::default().metrics_allow_remote);
    }
}
