//! `cpc-rules health`: ask a running server's standard gRPC health service whether it serves.
//!
//! Why this exists: the container image's `HEALTHCHECK` and Kubernetes `exec` probes need a
//! client for `grpc.health.v1.Health/Check`, and the image has no shell or other tools. The
//! kubelet's own gRPC probe cannot speak TLS, so when the server serves TLS this is the probe.
//! Exit codes: 0 `SERVING`, 1 anything else (not serving, unreachable, TLS failure, timeout),
//! 2 usage errors (an unreadable CA file).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `cpc-rules health` arguments.
#[derive(clap::Args, Clone)]
pub(super) struct HealthArgs {
    /// Address of the server to check.
    #[arg(long, env = "CPC_HEALTH_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Service to ask about (empty: the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// Longest the whole check may take.
    #[arg(long, env = "CPC_HEALTH_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// CA certificate(s) (PEM) to verify the server with: connect over TLS.
    #[arg(long, env = "CPC_HEALTH_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host in --addr).
    #[arg(long, env = "CPC_HEALTH_TLS_DOMAIN", requires = "tls_ca")]
    tls_domain: Option<String>,
}

/// Runs the check and prints the status; returns the exit code.
pub(super) fn run(args: &HealthArgs) -> u8 {
    let endpoint = match endpoint(args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    let check = async {
        let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.addr))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest { service: args.service.clone() })
            .await
            .with_context(|| format!("{} answered the health check with an error", args.addr))?;
        anyhow::Ok(response.into_inner().status())
    };
    match runtime.block_on(async { tokio::time::timeout(args.timeout, check).await }) {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            0
        }
        Ok(Ok(status)) => {
            println!("{}", status.as_str_name());
            1
        }
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            1
        }
        Err(_) => {
            eprintln!("error: no answer from {} within {:?}", args.addr, args.timeout);
            1
        }
    }
}

fn endpoint(args: &HealthArgs) -> anyhow::Result<Endpoint> {
    let scheme = if args.tls_ca.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", args.addr))
        .with_context(|| format!("--addr {} is not a host:port", args.addr))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    if let Some(ca) = &args.tls_ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(domain) = &args.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(tls).context("invalid TLS settings for the health check")?;
    }
    Ok(endpoint)
}
