//! The servers under test: the real service in-process, the empty handler (the ceiling), the
//! decision work alone over the same transport (`Direct`), and `cpc-rules serve` as a child
//! process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_rules::facts::FieldViolation;
use cpc_rules::grpc::convert::EdgeRequest;
use cpc_rules::grpc::pb;
use cpc_rules::model::IssuedDecision;
use prost::Message as _;
use cpc_rules::grpc::pb::decision_service_server::{DecisionService, DecisionServiceServer};
use cpc_rules::grpc::server::{ServerOptions, serve_with};
use cpc_rules::store::RuleStore;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::common;
use crate::config::{free_port, runtime};
use crate::drivers::Req;

// ---------------------------------------------------------------------------------------------
// the empty handler: the ceiling

#[derive(Clone)]
pub(crate) struct Empty {
    pub(crate) plan: pb::Decision,
    pub(crate) complaint: pb::Decision,
}

#[tonic::async_trait]
impl DecisionService for Empty {
    async fn check_attendance(&self, _: Request<pb::CheckAttendanceRequest>) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.plan.clone()))
    }
    async fn check_exclusion(&self, _: Request<pb::CheckExclusionRequest>) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.plan.clone()))
    }
    async fn check_child_invitation(&self, _: Request<pb::CheckChildInvitationRequest>) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.plan.clone()))
    }
    async fn determine_plan_type(&self, _: Request<pb::DeterminePlanTypeRequest>) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.plan.clone()))
    }
    async fn check_complaint_eligibility(
        &self,
        _: Request<pb::CheckComplaintEligibilityRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.complaint.clone()))
    }
    async fn compute_timescales(&self, _: Request<pb::ComputeTimescalesRequest>) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.plan.clone()))
    }
    async fn evaluate(&self, _: Request<pb::EvaluateRequest>) -> Result<Response<pb::Decision>, Status> {
        Ok(Response::new(self.plan.clone()))
    }
}

/// The decision work alone over the same transport: request conversion, `RuleStore::decide` and
/// the protobuf answer — on the async worker (`inline`) or through `spawn_blocking` — with none
/// of the real service's guard layer, decision queue, metrics or logs. Between the ceiling and
/// the real service, it shows what each part costs.
#[derive(Clone)]
pub(crate) struct Direct {
    pub(crate) store: Arc<RuleStore>,
    pub(crate) blocking: bool,
}

impl Direct {
    pub(crate) async fn decide(&self, edge: Result<EdgeRequest, Vec<FieldViolation>>) -> Result<Response<pb::Decision>, Status> {
        let edge = edge.map_err(|v| Status::invalid_argument(format!("{v:?}")))?;
        let case_ref = edge.case_ref.clone();
        let req = common::edge_request(edge).map_err(|v| Status::invalid_argument(format!("{v:?}")))?;
        let decided = if self.blocking {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || store.decide(&req)).await.map_err(|e| Status::internal(e.to_string()))?
        } else {
            self.store.decide(&req)
        };
        let issued = IssuedDecision::stamp(decided.map_err(|e| Status::internal(e.to_string()))?, cpc_rules::clock::now());
        let mut d = pb::Decision::from(issued);
        d.case_ref = case_ref;
        Ok(Response::new(d))
    }
}

#[tonic::async_trait]
impl DecisionService for Direct {
    async fn check_attendance(&self, _: Request<pb::CheckAttendanceRequest>) -> Result<Response<pb::Decision>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }
    async fn check_exclusion(&self, _: Request<pb::CheckExclusionRequest>) -> Result<Response<pb::Decision>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }
    async fn check_child_invitation(&self, _: Request<pb::CheckChildInvitationRequest>) -> Result<Response<pb::Decision>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }
    async fn determine_plan_type(&self, r: Request<pb::DeterminePlanTypeRequest>) -> Result<Response<pb::Decision>, Status> {
        self.decide(EdgeRequest::try_from(r.into_inner())).await
    }
    async fn check_complaint_eligibility(
        &self,
        r: Request<pb::CheckComplaintEligibilityRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        self.decide(EdgeRequest::try_from(r.into_inner())).await
    }
    async fn compute_timescales(&self, _: Request<pb::ComputeTimescalesRequest>) -> Result<Response<pb::Decision>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }
    async fn evaluate(&self, _: Request<pb::EvaluateRequest>) -> Result<Response<pb::Decision>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }
}

/// Real decisions for the first plan-type and complaint requests of the mix (by the same rules),
/// for the empty handler to return; and the mean encoded size of every real response.
pub(crate) fn constant_decisions(store: &RuleStore, mix: &[Req]) -> (pb::Decision, pb::Decision, f64) {
    let decide = |r: &Req| -> pb::Decision {
        let edge = r.edge_request();
        let case_ref = edge.case_ref.clone();
        let req = common::edge_request(edge).expect("valid request");
        let issued = IssuedDecision::stamp(store.decide(&req).expect("decides"), cpc_rules::clock::now());
        let mut d = pb::Decision::from(issued);
        d.case_ref = case_ref;
        d
    };
    let sizes: Vec<usize> = mix.iter().map(|r| decide(r).encoded_len()).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    // The constant: the real decision whose size is nearest the mean, per RPC.
    let nearest = |want_plan: bool| -> pb::Decision {
        mix.iter()
            .filter(|r| matches!(r, Req::Plan(..)) == want_plan)
            .map(decide)
            .min_by(|a, b| (a.encoded_len() as f64 - mean).abs().total_cmp(&(b.encoded_len() as f64 - mean).abs()))
            .unwrap_or_else(|| decide(&mix[0]))
    };
    (nearest(true), nearest(false), mean)
}

// ---------------------------------------------------------------------------------------------
// servers

pub(crate) struct RunningServer {
    pub(crate) addr: SocketAddr,
    pub(crate) rt: Option<Runtime>,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    pub(crate) fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let (Some(rt), Some(done)) = (self.rt.as_ref(), self.done.take()) {
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), done).await });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

pub(crate) fn options() -> ServerOptions {
    ServerOptions { addr: SocketAddr::from(([127, 0, 0, 1], 0)), ..ServerOptions::default() }
}

pub(crate) fn start_service(store: Arc<RuleStore>, threads: usize, logs: Option<tracing::Dispatch>) -> RunningServer {
    let rt = runtime("cpc-server", threads, logs);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let opts = options();
    let done = rt.spawn(async move {
        serve_with(listener, store, &opts, async {
            let _ = rx.await;
        })
        .await
    });
    RunningServer { addr, rt: Some(rt), stop: Some(tx), done: Some(done) }
}

/// A tonic server builder with the real server's HTTP/2 settings (streams per connection,
/// header list size, keepalives) and nothing else: no guard layer, metrics or logs.
pub(crate) fn plain_builder(o: &ServerOptions) -> Server {
    let streams = u32::try_from(o.concurrency_limit_per_connection.saturating_mul(2).max(1)).unwrap_or(u32::MAX);
    Server::builder()
        .max_concurrent_streams(Some(streams))
        .http2_max_header_list_size(Some(16 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// The empty handler on a plain tonic server ([`plain_builder`], TCP_NODELAY).
pub(crate) fn start_empty(empty: Empty, threads: usize) -> RunningServer {
    start_plain(DecisionServiceServer::new(empty), threads)
}

/// [`Direct`] on a plain tonic server.
pub(crate) fn start_direct(direct: Direct, threads: usize) -> RunningServer {
    start_plain(DecisionServiceServer::new(direct), threads)
}

pub(crate) fn start_plain<T: DecisionService>(svc: DecisionServiceServer<T>, threads: usize) -> RunningServer {
    let rt = runtime("plain-server", threads, None);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let o = options();
    let done = rt.spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let mut builder = plain_builder(&o);
        builder
            .add_service(svc.max_decoding_message_size(o.max_request_bytes))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
            .map_err(anyhow::Error::from)
    });
    RunningServer { addr, rt: Some(rt), stop: Some(tx), done: Some(done) }
}

/// The `cpc-rules` binary beside this benchmark's build (`target/release/cpc-rules`), or
/// `CPC_RULES_BIN`. The benchmarks are their own crate, so cargo does not build it for them:
/// `cargo build --release --bin cpc-rules` first.
fn server_binary() -> Option<std::path::PathBuf> {
    if let Ok(bin) = std::env::var("CPC_RULES_BIN") {
        return Some(bin.into());
    }
    let exe = std::env::current_exe().ok()?;
    // target/release/deps/load-<hash> → target/release/cpc-rules
    let bin = exe.parent()?.parent()?.join("cpc-rules");
    if bin.exists() {
        Some(bin)
    } else {
        eprintln!("WARNING: {} not found: run `cargo build --release --bin cpc-rules` first (or set CPC_RULES_BIN)", bin.display());
        None
    }
}

pub(crate) struct ChildServer {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl ChildServer {
    pub(crate) fn spawn(root: &Path) -> Option<ChildServer> {
        Self::spawn_with(root, &[])
    }

    /// `cpc-rules serve` on `root` with default options and `extra` arguments.
    pub(crate) fn spawn_with(root: &Path, extra: &[&str]) -> Option<ChildServer> {
        let bin = server_binary()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(&bin)
            .args(["serve", "--addr", &addr.to_string(), "--no-watch"])
            .args(extra)
            .arg("--rules")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("WARNING: cannot start {}: {e}", bin.display()))
            .ok()?;
        Some(ChildServer { child, addr })
    }

    pub(crate) fn stop(mut self) {
        // SIGTERM (graceful), then wait; SIGKILL only if it does not stop.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

