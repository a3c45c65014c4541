//! Assembling and running the gRPC server.
//!
//! One tonic server carries the two `cpc.v1` services, the standard health service
//! (`grpc.health.v1.Health`) and server reflection in both the `v1` and `v1alpha` protocols, so
//! `grpcurl` and any gRPC client can discover and call it. Health reports `SERVING` for the
//! server as a whole (`""`) and for each `cpc.v1` service from the start (the rules are loaded
//! before the server is built) and `NOT_SERVING` as soon as shutdown begins, before in-flight
//! calls drain, so load balancers stop sending work first. Draining is bounded by
//! [`ServerOptions::shutdown_grace`].

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use super::pb::decision_service_server::DecisionServiceServer;
use super::pb::rules_service_server::RulesServiceServer;
use super::service::{DecisionApi, Decider, RulesApi};
use crate::store::RuleStore;

/// The port the server listens on by default.
pub const DEFAULT_PORT: u16 = 50051;

/// The gRPC service names this server reports health for (besides the overall `""`).
pub const SERVICE_NAMES: [&str; 2] = [
    <DecisionServiceServer<DecisionApi> as NamedService>::NAME,
    <RulesServiceServer<RulesApi> as NamedService>::NAME,
];

/// How the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Address to listen on (used by [`run`]; [`serve_with`] takes a bound listener).
    pub addr: SocketAddr,
    /// Most scripts running at once; further decisions wait their turn.
    pub max_concurrent_decisions: usize,
    /// Longest time one call may take before the server gives up on it (tonic reports this as
    /// `CANCELLED`); a shorter `grpc-timeout` from the client wins.
    pub request_timeout: Duration,
    /// Most concurrent calls on one connection.
    pub concurrency_limit_per_connection: usize,
    /// Largest request message accepted (bytes).
    pub max_request_bytes: usize,
    /// How long shutdown waits for in-flight calls to finish before returning anyway.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        ServerOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            max_concurrent_decisions: cores * 4,
            request_timeout: Duration::from_secs(10),
            concurrency_limit_per_connection: 256,
            max_request_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
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

/// Serves on `listener` (options' `addr` is not used) until `shutdown` resolves; then reports
/// `NOT_SERVING`, stops accepting connections, and waits up to `shutdown_grace` for in-flight
/// calls to finish.
pub async fn serve_with(
    listener: TcpListener,
    store: Arc<RuleStore>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
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

    let decider = Decider::new(Arc::clone(&store), options.max_concurrent_decisions);
    let decisions = DecisionServiceServer::new(DecisionApi::new(decider)).max_decoding_message_size(options.max_request_bytes);
    let rules = RulesServiceServer::new(RulesApi::new(store)).max_decoding_message_size(options.max_request_bytes);

    let local = listener.local_addr().ok();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60)));

    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let reporter = health.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested: reporting NOT_SERVING and draining in-flight calls");
        reporter.set_service_status("", ServingStatus::NotServing).await;
        for name in SERVICE_NAMES {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        let _ = began_tx.send(());
    };

    let server = Server::builder()
        .timeout(options.request_timeout)
        .concurrency_limit_per_connection(options.concurrency_limit_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(decisions)
        .add_service(rules)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);

    if let Some(addr) = local {
        tracing::info!(%addr, "gRPC server listening");
    }
    tokio::select! {
        biased;
        result = &mut server => result.context("gRPC server failed")?,
        Ok(()) = began_rx => {
            match tokio::time::timeout(options.shutdown_grace, &mut server).await {
                Ok(result) => result.context("gRPC server failed while draining")?,
                Err(_) => tracing::warn!(grace = ?options.shutdown_grace, "in-flight calls did not finish within the shutdown grace period; stopping anyway"),
            }
        }
    }
    tracing::info!("gRPC server stopped");
    Ok(())
}

/// Binds `options.addr` and serves until SIGINT or SIGTERM: what `cpc-rules serve` runs.
pub async fn run(store: Arc<RuleStore>, options: ServerOptions) -> anyhow::Result<()> {
    let listener = bind(options.addr).await?;
    serve_with(listener, store, &options, shutdown_signal()).await
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
