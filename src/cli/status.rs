//! `cpc-rules status`: which revision each partnership has live on a running server.
//!
//! Why this exists: after saving a rule change (publishing), a policy lead needs to know whether
//! the service took it — the revision now live, since when, and if the reload was refused, why —
//! without writing a gRPC client. It calls `RulesService.ListPartnerships` and, when the rules
//! folder is at hand, says whether each live revision is the one on disk.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cpc_rules::grpc::pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::{OK, RULE_PROBLEMS, RulesArg, USAGE};

/// How to reach a running server: address, bearer token and TLS.
#[derive(clap::Args, Clone)]
pub(super) struct Connection {
    /// The running server, e.g. http://127.0.0.1:50051 (https:// with --tls-ca).
    #[arg(long, env = "CPC_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// File holding a bearer token (or set CPC_ADMIN_TOKEN); needed when the server requires one.
    #[arg(long, env = "CPC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify the server with: connect over TLS.
    #[arg(long, env = "CPC_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host in --server).
    #[arg(long, requires = "tls_ca")]
    pub tls_domain: Option<String>,
    /// Longest each call may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A connected client's channel and the `authorization` value to send.
pub(super) struct Client {
    /// The channel.
    pub channel: Channel,
    /// `Bearer <token>`, when a token was given.
    pub authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Connection {
    /// The server's address as shown to people.
    pub(super) fn shown(&self) -> &str {
        &self.server
    }

    fn token(&self) -> anyhow::Result<Option<String>> {
        let from_env = ["CPC_ADMIN_TOKEN", "CPC_CALLER_TOKEN"].iter().find_map(|v| std::env::var(v).ok()).filter(|t| !t.trim().is_empty());
        Ok(match (&self.token_file, from_env) {
            (Some(p), _) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read --token-file {}", p.display()))?.trim().to_string()),
            (None, t) => t.map(|t| t.trim().to_string()),
        })
    }

    /// Connects (TLS when `--tls-ca` is given).
    pub(super) async fn connect(&self) -> anyhow::Result<Client> {
        let mut url = self.server.clone();
        if !url.contains("://") {
            url = format!("{}://{url}", if self.tls_ca.is_some() { "https" } else { "http" });
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("--server {} is not an address like http://127.0.0.1:50051", self.server))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            endpoint = endpoint.tls_config(tls).context("invalid TLS settings")?;
        }
        let authorization = match self.token()? {
            Some(t) => Some(format!("Bearer {t}").parse().context("the token cannot be sent in a header (control characters?)")?),
            None => None,
        };
        let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {url}: is the server running? (start it with `cpc-rules serve`)"))?;
        Ok(Client { channel, authorization })
    }
}

impl Client {
    /// A request carrying the bearer token, if any.
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(a) = &self.authorization {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }
}

/// `cpc-rules status` arguments.
#[derive(clap::Args, Clone)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    conn: Connection,
    /// The rules folder, to say whether each live revision is the one on disk.
    #[command(flatten)]
    rules: RulesArg,
    /// Only these partnerships (default: all).
    partnerships: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn ago(t: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (cpc_rules::clock::now() - t).num_seconds().max(0);
    let d = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    format!("{} ago", humantime::format_duration(d))
}

/// Asks the server and prints what is live; exit 1 when a partnership's last reload was refused
/// or a live revision differs from the rules on disk.
pub(super) fn run(args: &StatusArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return RULE_PROBLEMS;
        }
    };
    let listed = runtime.block_on(async {
        let client = args.conn.connect().await?;
        let mut rules = pb::rules_service_client::RulesServiceClient::new(client.channel.clone());
        let response = rules.list_partnerships(client.request(pb::ListPartnershipsRequest {})).await.map_err(|s| {
            anyhow::anyhow!("{} refused ListPartnerships: {} ({:?}){}", args.conn.shown(), s.message(), s.code(), if s.code() == tonic::Code::Unauthenticated || s.code() == tonic::Code::PermissionDenied {
                "; pass --token-file or set CPC_ADMIN_TOKEN"
            } else {
                ""
            })
        })?;
        anyhow::Ok(response.into_inner().partnerships)
    });
    let partnerships = match listed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return USAGE;
        }
    };
    let on_disk = |id: &str| cpc_rules::store::read_sources(&args.rules.rules, id).ok().map(|s| s.revision());
    let mut trouble = false;
    let mut rows = Vec::new();
    for p in partnerships.iter().filter(|p| args.partnerships.is_empty() || args.partnerships.contains(&p.id)) {
        let disk = on_disk(&p.id);
        let loaded = time(p.loaded_at.as_ref());
        let failure = p.last_failure.as_ref();
        trouble |= failure.is_some() || disk.as_ref().is_some_and(|d| *d != p.revision);
        rows.push(serde_json::json!({
            "id": p.id, "name": p.name, "revision": p.revision, "loaded_at": loaded,
            "on_disk": disk, "matches_disk": disk.as_ref().map(|d| *d == p.revision),
            "last_failure": failure.map(|f| serde_json::json!({ "at": time(f.at.as_ref()), "problems": f.diagnostics })),
        }));
        if args.json {
            continue;
        }
        let since = loaded.map(|t| format!("live since {} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), ago(t))).unwrap_or_default();
        // Saved but not (yet) live: not a tick, whatever the service says of the revision it has.
        let pending = failure.is_none() && disk.as_ref().is_some_and(|d| *d != p.revision);
        let mark = if failure.is_some() { "✘" } else if pending { "…" } else { "✔" };
        println!("{mark} {}: revision {} {since}", p.id, p.revision);
        match &disk {
            Some(d) if *d == p.revision => println!("    the rules on disk ({}) are the ones live", args.rules.rules.join(&p.id).display()),
            Some(d) => println!(
                "    the rules on disk are revision {d}, not yet live{}",
                if failure.is_some() { " (refused: see below)" } else { " (the service reloads within a second of a save; run status again)" }
            ),
            None => {}
        }
        if let Some(f) = failure {
            let at = time(f.at.as_ref()).map(|t| format!(" at {} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), ago(t))).unwrap_or_default();
            println!("    last reload refused{at}; the revision above keeps serving. Problems:");
            for d in &f.diagnostics {
                println!("      {d}");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "server": args.conn.shown(), "partnerships": rows })).unwrap_or_default());
    }
    if trouble { RULE_PROBLEMS } else { OK }
}
