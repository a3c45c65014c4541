//! Service load benchmark (own harness): `cargo bench --bench load`.
//!
//! Everything runs on loopback (127.0.0.1) and stops by itself. In order:
//!
//! 1. **Cold start**: `RuleStore::load` of every partnership, then the real server
//!    (`cpc_rules::grpc::server::serve_with`) on `127.0.0.1:0` until the standard health service
//!    answers `SERVING` to a fresh client — in-process (first and median of several), and as a
//!    child process (`cpc-rules serve`, from spawn to `SERVING`).
//! 2. **Hot reload** of one partnership on a copy of the rules: `RuleStore::reload(&["york"])`
//!    after touching a file (same content: rebuilt, found unchanged) and after editing one
//!    (new revision swapped in).
//! 3. **Load**: a tonic client with `LOAD_CONCURRENCY` requests in flight over
//!    `LOAD_CONNECTIONS` HTTP/2 connections drives `DeterminePlanType` and
//!    `CheckComplaintEligibility` (alternately, with the facts of every partnership's
//!    decision-producing test cases of those kinds) for `LOAD_SECS` after `LOAD_WARMUP_SECS`:
//!    - `ceiling`: an empty handler — a trivial `DecisionService` defined here that returns a
//!      constant, real-sized `Decision`, on a tonic server built with the same settings;
//!    - `service`: the real server, no log subscriber;
//!    - `service+logs`: the real server with the `info` text log every decision writes in
//!      production (`cpc-rules serve`), written to /dev/null;
//!    - `ceiling@50%`, `service@50%`, `service+logs@50%`: open-loop, rate-limited to half the
//!      ceiling's throughput; latency is measured from each request's scheduled send time when
//!      the client was held up by the previous response (no coordinated omission);
//!    - `child`: the real `cpc-rules serve` binary as a child process (its own logs to
//!      /dev/null), closed loop: its peak RSS is the server's alone.
//!
//! Peak RSS in-process is `VmHWM` of this process (server *and* client), reset before each run
//! through `/proc/self/clear_refs`.
//!
//! Knobs (environment): `LOAD_SECS` (10), `LOAD_WARMUP_SECS` (2), `LOAD_CONNECTIONS` (4),
//! `LOAD_CONCURRENCY` (64), `LOAD_SERVER_THREADS` (2), `LOAD_CLIENT_THREADS` (2),
//! `LOAD_COLD_RUNS` (10), `LOAD_RELOAD_RUNS` (10), `LOAD_DECIDE_THREADS` (`1,2`), `LOAD_ONLY`
//! (comma-separated run names: cold, reload, threads, ceiling, direct-inline, direct-blocking,
//! service, service+logs, ceiling@50%, service@50%, service+logs@50%, service@50%svc, child).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::pb::decision_service_server::{DecisionService, DecisionServiceServer};
use cpc_rules::grpc::server::{ServerOptions, serve_with};
use cpc_rules::store::{RuleStore, build};
use hdrhistogram::Histogram;
use prost::Message as _;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

// ---------------------------------------------------------------------------------------------
// configuration and small helpers

#[derive(Debug, Clone)]
struct Config {
    secs: f64,
    warmup: f64,
    connections: usize,
    concurrency: usize,
    server_threads: usize,
    client_threads: usize,
    cold_runs: usize,
    reload_runs: usize,
    only: Option<Vec<String>>,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    fn from_env() -> Self {
        Config {
            secs: env("LOAD_SECS", 10.0),
            warmup: env("LOAD_WARMUP_SECS", 2.0),
            connections: env("LOAD_CONNECTIONS", 4usize).max(1),
            concurrency: env("LOAD_CONCURRENCY", 64usize).max(1),
            server_threads: env("LOAD_SERVER_THREADS", 2usize).max(1),
            client_threads: env("LOAD_CLIENT_THREADS", 2usize).max(1),
            cold_runs: env("LOAD_COLD_RUNS", 10usize).max(1),
            reload_runs: env("LOAD_RELOAD_RUNS", 10usize).max(1),
            only: std::env::var("LOAD_ONLY").ok().map(|s| s.split(',').map(|x| x.trim().to_string()).collect()),
        }
    }

    fn wants(&self, run: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == run))
    }
}

fn proc_status(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok() // kB
}

/// Resets this process's peak RSS (VmHWM) to its current RSS.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn runtime(name: &str, threads: usize, logs: Option<tracing::Dispatch>) -> Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads).enable_all().thread_name(name.to_string());
    if let Some(dispatch) = logs {
        // A thread-local default subscriber on every thread of this runtime (workers and the
        // blocking pool), so each run can have logging on or off in the same process.
        b.on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&dispatch)));
    }
    b.build().expect("tokio runtime")
}

/// The log `cpc-rules serve` writes by default (text, `info`: one line per decision), sent to
/// /dev/null.
fn production_logs() -> tracing::Dispatch {
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").expect("/dev/null");
    let sub = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::sync::Mutex::new(devnull))
        .finish();
    tracing::Dispatch::new(sub)
}

async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
}

/// Polls the health service at `addr` until it reports SERVING (or `limit` passes).
async fn wait_serving(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(ch) = connect(addr).await {
            let mut h = HealthClient::new(ch);
            loop {
                match h.check(HealthCheckRequest { service: String::new() }).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Some(started.elapsed()),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(_) => break,
                }
                if started.elapsed() >= limit {
                    return None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// the request mix

#[derive(Clone)]
enum Req {
    Plan(pb::DeterminePlanTypeRequest, String),
    Complaint(pb::CheckComplaintEligibilityRequest, String),
}

impl Req {
    fn expected(&self) -> &str {
        match self {
            Req::Plan(_, o) | Req::Complaint(_, o) => o,
        }
    }

    async fn call(&self, client: &mut DecisionServiceClient<Channel>) -> Result<Response<pb::Decision>, Status> {
        match self {
            Req::Plan(r, _) => client.determine_plan_type(r.clone()).await,
            Req::Complaint(r, _) => client.check_complaint_eligibility(r.clone()).await,
        }
    }
}

/// Alternating plan-type and complaint requests with the facts of every partnership's
/// decision-producing cases of those kinds.
fn request_mix(store: &RuleStore, root: &Path) -> Vec<Req> {
    let mut plans = Vec::new();
    let mut complaints = Vec::new();
    for id in store.ids() {
        let loaded = store.get(&id).expect("live");
        let mut cases = common::decision_cases(root, &id);
        let has = |k: &str| loaded.set.kinds().any(|i| i.name == k);
        if has("plan_type") {
            for c in cases.remove("plan_type").unwrap_or_default() {
                plans.push(Req::Plan(common::plan_type_request(&id, &c.facts), c.expect.outcome.clone().unwrap_or_default()));
            }
        }
        if has("complaint_eligibility") {
            for c in cases.remove("complaint_eligibility").unwrap_or_default() {
                complaints.push(Req::Complaint(common::complaint_request(&id, &c.facts), c.expect.outcome.clone().unwrap_or_default()));
            }
        }
    }
    assert!(!plans.is_empty() || !complaints.is_empty(), "no plan-type or complaint cases to send");
    let n = plans.len().max(complaints.len());
    let mut mix = Vec::new();
    for i in 0..n {
        if !plans.is_empty() {
            mix.push(plans[i % plans.len()].clone());
        }
        if !complaints.is_empty() {
            mix.push(complaints[i % complaints.len()].clone());
        }
    }
    println!(
        "request mix: {} requests ({} plan-type cases, {} complaint cases, alternating)",
        mix.len(),
        plans.len(),
        complaints.len()
    );
    mix
}

// ---------------------------------------------------------------------------------------------
// the empty handler: the ceiling

#[derive(Clone)]
struct Empty {
    plan: pb::Decision,
    complaint: pb::Decision,
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
struct Direct {
    store: Arc<RuleStore>,
    blocking: bool,
}

impl Direct {
    async fn decide(&self, req: Result<cpc_rules::grpc::convert::DecisionRequest, Vec<cpc_rules::facts::FieldViolation>>) -> Result<Response<pb::Decision>, Status> {
        let req = req.map_err(|v| Status::invalid_argument(format!("{v:?}")))?;
        let decided = if self.blocking {
            let store = Arc::clone(&self.store);
            let (p, k, f) = (req.partnership.clone(), req.kind.clone(), req.facts);
            tokio::task::spawn_blocking(move || store.decide(&p, &k, &f)).await.map_err(|e| Status::internal(e.to_string()))?
        } else {
            self.store.decide(&req.partnership, &req.kind, &req.facts)
        };
        let mut d = pb::Decision::from(decided.map_err(|e| Status::internal(e.to_string()))?);
        d.case_ref = req.case_ref;
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
        self.decide(cpc_rules::grpc::convert::DecisionRequest::try_from(r.into_inner())).await
    }
    async fn check_complaint_eligibility(
        &self,
        r: Request<pb::CheckComplaintEligibilityRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        self.decide(cpc_rules::grpc::convert::DecisionRequest::try_from(r.into_inner())).await
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
fn constant_decisions(store: &RuleStore, mix: &[Req]) -> (pb::Decision, pb::Decision, f64) {
    let decide = |r: &Req| -> pb::Decision {
        let req = match r {
            Req::Plan(p, _) => cpc_rules::grpc::convert::DecisionRequest::try_from(p.clone()),
            Req::Complaint(c, _) => cpc_rules::grpc::convert::DecisionRequest::try_from(c.clone()),
        }
        .expect("valid request");
        let mut d = pb::Decision::from(store.decide(&req.partnership, &req.kind, &req.facts).expect("decides"));
        d.case_ref = req.case_ref;
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

struct RunningServer {
    addr: SocketAddr,
    rt: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    fn shutdown(mut self) {
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

fn options() -> ServerOptions {
    ServerOptions { addr: SocketAddr::from(([127, 0, 0, 1], 0)), ..ServerOptions::default() }
}

fn start_service(store: Arc<RuleStore>, threads: usize, logs: Option<tracing::Dispatch>) -> RunningServer {
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
fn plain_builder(o: &ServerOptions) -> Server {
    let streams = u32::try_from(o.concurrency_limit_per_connection.saturating_mul(2).max(1)).unwrap_or(u32::MAX);
    Server::builder()
        .max_concurrent_streams(Some(streams))
        .http2_max_header_list_size(Some(16 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// The empty handler on a plain tonic server ([`plain_builder`], TCP_NODELAY).
fn start_empty(empty: Empty, threads: usize) -> RunningServer {
    start_plain(DecisionServiceServer::new(empty), threads)
}

/// [`Direct`] on a plain tonic server.
fn start_direct(direct: Direct, threads: usize) -> RunningServer {
    start_plain(DecisionServiceServer::new(direct), threads)
}

fn start_plain<T: DecisionService>(svc: DecisionServiceServer<T>, threads: usize) -> RunningServer {
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

struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn spawn(root: &Path) -> Option<ChildServer> {
        let bin = env!("CARGO_BIN_EXE_cpc-rules");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(bin)
            .args(["serve", "--addr", &addr.to_string(), "--no-watch", "--rules"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("WARNING: cannot start {bin}: {e}"))
            .ok()?;
        Some(ChildServer { child, addr })
    }

    fn stop(mut self) {
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

// ---------------------------------------------------------------------------------------------
// load runs

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// As fast as responses come back.
    Closed,
    /// Open loop at this many requests per second in total.
    Rate(f64),
}

struct RunResult {
    name: String,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    hist: Histogram<u64>,
    peak_rss_kb: Option<u64>,
}

impl RunResult {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn q_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    fn line(&self, ceiling: Option<f64>) -> String {
        let ratio = ceiling.map_or(String::new(), |c| format!("  ({:.0}% of ceiling)", 100.0 * self.rps() / c));
        format!(
            "{:<22} {:>9.0} req/s{ratio}  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  errors {}  peak RSS {}",
            self.name,
            self.rps(),
            self.q_ms(0.50),
            self.q_ms(0.99),
            self.q_ms(0.999),
            self.hist.max() as f64 / 1000.0,
            self.errors,
            mib(self.peak_rss_kb),
        )
    }
}

struct TaskResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram") // µs, up to 2 minutes
}

/// Drives `mix` at `addr` for the configured time and returns what it measured.
fn drive(client_rt: &Runtime, cfg: &Config, name: &str, addr: SocketAddr, mix: Arc<Vec<Req>>, mode: Mode, child_pid: Option<u32>) -> RunResult {
    let conc = cfg.concurrency;
    // The empty handler answers every request with the same constant decision: only the real
    // servers' outcomes are checked against the cases.
    let check_outcome = !name.starts_with("ceiling");
    let (warmup, secs) = (Duration::from_secs_f64(cfg.warmup), Duration::from_secs_f64(cfg.secs));
    let tasks = client_rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..cfg.connections {
            channels.push(connect(addr).await.expect("connect to the server under test"));
        }
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + warmup;
        let end = measure_from + secs;
        let mut handles = Vec::new();
        for t in 0..conc {
            let mut client = DecisionServiceClient::new(channels[t % channels.len()].clone());
            let mix = Arc::clone(&mix);
            handles.push(tokio::spawn(async move {
                let mut r = TaskResult { ok: 0, errors: 0, first_error: None, hist: histogram() };
                let mut i = t * 7 % mix.len();
                let interval = match mode {
                    Mode::Rate(rate) => Some(Duration::from_secs_f64(conc as f64 / rate)),
                    Mode::Closed => None,
                };
                // Open loop: task t's k-th request is due at start + (t/conc + k) * interval.
                let mut due = start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(t as f64 / conc as f64));
                let mut prev_done = Instant::now();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let sent_from = match interval {
                        Some(iv) => {
                            if due >= end {
                                break;
                            }
                            if Instant::now() < due {
                                tokio::time::sleep_until(due.into()).await;
                            }
                            // Held up by our own previous response: count from when it was due.
                            // Only woken late by the timer: count from the actual send.
                            let from = if prev_done > due { due } else { Instant::now() };
                            due += iv;
                            from
                        }
                        None => {
                            let now = Instant::now();
                            if now >= end {
                                break;
                            }
                            now
                        }
                    };
                    let req = &mix[i % mix.len()];
                    i += 1;
                    let result = req.call(&mut client).await;
                    let done = Instant::now();
                    prev_done = done;
                    if sent_from < measure_from || done > end + Duration::from_secs(1) {
                        continue;
                    }
                    match result {
                        Ok(d) if !check_outcome || d.get_ref().outcome == req.expected() => {
                            r.ok += 1;
                            let us = (done - sent_from).as_micros().max(1) as u64;
                            r.hist.saturating_record(us);
                        }
                        Ok(d) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| format!("unexpected outcome {} (want {})", d.get_ref().outcome, req.expected()));
                        }
                        Err(s) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
                        }
                    }
                }
                r
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("client task"));
        }
        out
    });
    let mut hist = histogram();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        ok += t.ok;
        errors += t.errors;
        if first_error.is_none() {
            first_error = t.first_error;
        }
        hist.add(&t.hist).expect("merge histograms");
    }
    let peak_rss_kb = proc_status(child_pid, "VmHWM:");
    RunResult { name: name.to_string(), ok, errors, first_error, secs: secs.as_secs_f64(), hist, peak_rss_kb }
}

// ---------------------------------------------------------------------------------------------
// cold start and hot reload

fn cold_start(cfg: &Config, root: &Path, client_rt: &Runtime) {
    println!("\n== cold start: RuleStore::load (all partnerships) + server up to health SERVING ==");
    let mut loads = Vec::new();
    let mut totals = Vec::new();
    for i in 0..cfg.cold_runs {
        let t0 = Instant::now();
        let store = Arc::new(RuleStore::load(root, Limits::default()).unwrap_or_else(|r| {
            panic!("rules do not load: {:?}", r.iter().flat_map(|r| r.lines()).collect::<Vec<_>>())
        }));
        let loaded = t0.elapsed();
        let server = start_service(store, cfg.server_threads, None);
        let serving = client_rt.block_on(wait_serving(server.addr, Duration::from_secs(10))).expect("server reports SERVING");
        let total = t0.elapsed();
        let _ = serving;
        server.shutdown();
        if i == 0 {
            println!("  in-process, first run:  load {:.1} ms, to SERVING {:.1} ms", ms(loaded), ms(total));
        }
        loads.push(ms(loaded));
        totals.push(ms(total));
    }
    let (max_l, max_t) = (loads.iter().copied().fold(0.0, f64::max), totals.iter().copied().fold(0.0, f64::max));
    println!(
        "  in-process, {} runs:     load median {:.1} ms (max {:.1}), to SERVING median {:.1} ms (max {:.1})",
        cfg.cold_runs,
        common::median(&mut loads),
        max_l,
        common::median(&mut totals),
        max_t
    );

    // What the load is made of: each partnership's build (read, compile, check, run its cases).
    let mut parts = Vec::new();
    for id in cpc_rules::store::partnership_ids(root).unwrap_or_default() {
        let t = Instant::now();
        let b = build(root, &id, &Limits::default());
        parts.push(format!("{id} {:.1} ms ({} cases)", ms(t.elapsed()), b.cases.len()));
    }
    println!("  per partnership build:  {}", parts.join(", "));

    // As a child process: spawn `cpc-rules serve` to SERVING (process start included).
    let mut child_times = Vec::new();
    for _ in 0..cfg.cold_runs.min(5) {
        let t0 = Instant::now();
        let Some(child) = ChildServer::spawn(root) else { break };
        let serving = client_rt.block_on(wait_serving(child.addr, Duration::from_secs(20)));
        let total = t0.elapsed();
        child.stop();
        match serving {
            Some(_) => child_times.push(ms(total)),
            None => {
                eprintln!("WARNING: the child server did not report SERVING within 20 s");
                break;
            }
        }
    }
    if !child_times.is_empty() {
        let first = child_times[0];
        let n = child_times.len();
        println!(
            "  child process `cpc-rules serve`, {n} runs: spawn to SERVING first {first:.1} ms, median {:.1} ms",
            common::median(&mut child_times)
        );
    }
}

fn hot_reload(cfg: &Config, left_out: &[String]) {
    println!("\n== hot reload: RuleStore::reload(&[\"york\"]) on a copy of the rules ==");
    let tmp = tempfile::tempdir().expect("temp dir");
    common::copy_dir(&common::bundled_rules(), tmp.path(), left_out);
    let store = RuleStore::load(tmp.path(), Limits::default()).expect("copy loads");
    let id = if store.get("york").is_some() { "york".to_string() } else { store.ids()[0].clone() };
    let dir = tmp.path().join(&id);
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("partnership dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    scripts.sort();
    let file = scripts.first().expect("a script").clone();
    let original = std::fs::read_to_string(&file).expect("read script");
    let ids = vec![id.clone()];

    let mut touched = Vec::new();
    for _ in 0..cfg.reload_runs {
        std::fs::write(&file, &original).expect("touch"); // new mtime, same content
        let t = Instant::now();
        let report = store.reload(&ids);
        touched.push(ms(t.elapsed()));
        assert_eq!(report.unchanged, ids, "a touched file changes nothing");
    }
    let mut edited = Vec::new();
    for i in 0..cfg.reload_runs {
        std::fs::write(&file, format!("{original}\n// benchmark edit {i}\n")).expect("edit");
        let t = Instant::now();
        let report = store.reload(&ids);
        edited.push(ms(t.elapsed()));
        assert_eq!(report.swapped.len(), 1, "an edited file swaps in a new revision: {report:?}");
    }
    let name = file.file_name().unwrap_or_default().to_string_lossy().to_string();
    let (mt, me) = (touched.iter().copied().fold(0.0, f64::max), edited.iter().copied().fold(0.0, f64::max));
    println!(
        "  {id}/{name} touched (unchanged): median {:.1} ms, max {mt:.1} ms; edited (swapped): median {:.1} ms, max {me:.1} ms ({} runs each)",
        common::median(&mut touched),
        common::median(&mut edited),
        cfg.reload_runs
    );
    println!("  (the watcher adds its debounce, 250 ms by default, between the save and the reload)");
}

/// `RuleStore::decide` on the request mix with no transport, on 1 and 2 threads at once: how
/// the decision work itself scales across the machine's cores.
fn decide_threads(store: &Arc<RuleStore>, mix: &[Req]) {
    println!("\n== RuleStore::decide on the request mix, no transport ==");
    let facts: Arc<Vec<(String, String, serde_json::Value)>> = Arc::new(
        mix.iter()
            .map(|r| {
                let d = match r {
                    Req::Plan(p, _) => cpc_rules::grpc::convert::DecisionRequest::try_from(p.clone()),
                    Req::Complaint(c, _) => cpc_rules::grpc::convert::DecisionRequest::try_from(c.clone()),
                }
                .expect("valid request");
                (d.partnership, d.kind, d.facts)
            })
            .collect(),
    );
    let counts: Vec<usize> = std::env::var("LOAD_DECIDE_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    for threads in counts.iter().copied() {
        let store = Arc::clone(store);
        let facts = Arc::clone(&facts);
        let rate = per_second_on_threads(threads, 3.0, move |i| {
            let (p, k, f) = &facts[i % facts.len()];
            std::hint::black_box(store.decide(p, k, f).ok());
        });
        println!(
            "  RuleStore::decide, {threads} thread(s): {rate:.0} decisions/s in total, {:.1} µs per decision per thread",
            threads as f64 * 1e6 / rate
        );
    }

    // The scripts alone on engines shared by the threads, as `RuleSet` shares its engine: as
    // configured (`hardened`) and explicitly without Rhai's string interner (`no_interner`).
    // Since the engine builder turned the interner off, the two should match; a gap between
    // them would mean the interner's lock is back.
    let root = common::bundled_rules();
    for variant in ["hardened", "no_interner"] {
        let mut engines: std::collections::BTreeMap<(String, String), Arc<(rhai::Engine, rhai::AST)>> = Default::default();
        for (p, k, _) in facts.iter() {
            engines
                .entry((p.clone(), k.clone()))
                .or_insert_with(|| Arc::new(common::bare_engine_variant(&root, p, k, variant)));
        }
        let work: Arc<Vec<(Arc<(rhai::Engine, rhai::AST)>, serde_json::Value)>> =
            Arc::new(facts.iter().map(|(p, k, f)| (Arc::clone(&engines[&(p.clone(), k.clone())]), f.clone())).collect());
        for threads in counts.iter().copied() {
            let work = Arc::clone(&work);
            let rate = per_second_on_threads(threads, 3.0, move |i| {
                let (engine_ast, f) = &work[i % work.len()];
                let mut scope = rhai::Scope::new();
                scope.push_constant_dynamic("facts", common::to_dynamic(f));
                std::hint::black_box(engine_ast.0.eval_ast_with_scope::<rhai::Dynamic>(&mut scope, &engine_ast.1).ok());
            });
            println!(
                "  scripts only, engine {variant}, {threads} thread(s): {rate:.0} evaluations/s in total, {:.1} µs per evaluation per thread",
                threads as f64 * 1e6 / rate
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let cfg = Config::from_env();
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    let rules = common::load_rules();
    if !rules.left_out.is_empty() {
        println!("LEFT OUT (rules refused): {}", rules.left_out.join(", "));
    }
    println!("machine: {} cores; config: {cfg:?}", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let client_rt = runtime("load-client", cfg.client_threads, None);

    if cfg.wants("cold") {
        cold_start(&cfg, &rules.root, &client_rt);
    }
    if cfg.wants("reload") {
        hot_reload(&cfg, &rules.left_out);
    }

    let mix = Arc::new(request_mix(&rules.store, &rules.root));
    if cfg.wants("threads") {
        decide_threads(&rules.store, &mix);
    }
    let (plan, complaint, mean_size) = constant_decisions(&rules.store, &mix);
    println!(
        "responses: real decisions average {mean_size:.0} bytes encoded; the empty handler returns {} (plan) and {} (complaint) bytes",
        plan.encoded_len(),
        complaint.encoded_len()
    );
    let empty = Empty { plan, complaint };

    // Sanity: every request of the mix gets its expected outcome from the real server.
    {
        let server = start_service(Arc::clone(&rules.store), cfg.server_threads, None);
        let bad = client_rt.block_on(async {
            let mut client = DecisionServiceClient::new(connect(server.addr).await.expect("connect"));
            let mut bad = Vec::new();
            for r in mix.iter() {
                match r.call(&mut client).await {
                    Ok(d) if d.get_ref().outcome == r.expected() => {}
                    Ok(d) => bad.push(format!("got {} want {}", d.get_ref().outcome, r.expected())),
                    Err(s) => bad.push(format!("{:?} {}", s.code(), s.message())),
                }
            }
            bad
        });
        server.shutdown();
        assert!(bad.is_empty(), "the server does not answer the mix as the cases expect: {bad:?}");
    }

    println!(
        "\n== load: {} connections, {} in flight, {} s measured after {} s warm-up, server {} threads, client {} threads ==",
        cfg.connections, cfg.concurrency, cfg.secs, cfg.warmup, cfg.server_threads, cfg.client_threads
    );
    let mut results: Vec<RunResult> = Vec::new();
    let report = |r: &RunResult, ceiling: Option<f64>| {
        println!("{}", r.line(ceiling));
        if let Some(e) = &r.first_error {
            println!("    first error: {e}");
        }
    };
    let run_inproc = |name: &str, server: RunningServer, mode: Mode| -> RunResult {
        reset_peak_rss();
        let r = drive(&client_rt, &cfg, name, server.addr, Arc::clone(&mix), mode, None);
        server.shutdown();
        r
    };

    let mut ceiling = None;
    if cfg.wants("ceiling") || cfg.wants("ceiling@50%") || cfg.only.as_ref().is_some_and(|o| o.iter().any(|x| x.ends_with("@50%"))) {
        let r = run_inproc("ceiling", start_empty(empty.clone(), cfg.server_threads), Mode::Closed);
        report(&r, None);
        ceiling = Some(r.rps());
        results.push(r);
    }
    let c = ceiling;
    for (name, blocking) in [("direct-inline", false), ("direct-blocking", true)] {
        if cfg.wants(name) {
            let direct = Direct { store: Arc::clone(&rules.store), blocking };
            let r = run_inproc(name, start_direct(direct, cfg.server_threads), Mode::Closed);
            report(&r, c);
            results.push(r);
        }
    }
    let mut service_max = None;
    if cfg.wants("service") || cfg.wants("service@50%svc") {
        let r = run_inproc("service", start_service(Arc::clone(&rules.store), cfg.server_threads, None), Mode::Closed);
        report(&r, c);
        service_max = Some(r.rps());
        results.push(r);
    }
    if cfg.wants("service+logs") {
        let r = run_inproc(
            "service+logs",
            start_service(Arc::clone(&rules.store), cfg.server_threads, Some(production_logs())),
            Mode::Closed,
        );
        report(&r, c);
        results.push(r);
    }
    if let Some(ceil) = ceiling {
        let half = ceil / 2.0;
        println!("-- rate-limited to half the ceiling: {half:.0} req/s --");
        if cfg.wants("ceiling@50%") {
            let r = run_inproc("ceiling@50%", start_empty(empty.clone(), cfg.server_threads), Mode::Rate(half));
            report(&r, None);
            results.push(r);
        }
        if cfg.wants("service@50%") {
            let r = run_inproc("service@50%", start_service(Arc::clone(&rules.store), cfg.server_threads, None), Mode::Rate(half));
            report(&r, None);
            results.push(r);
        }
        if cfg.wants("service+logs@50%") {
            let r = run_inproc(
                "service+logs@50%",
                start_service(Arc::clone(&rules.store), cfg.server_threads, Some(production_logs())),
                Mode::Rate(half),
            );
            report(&r, None);
            results.push(r);
        }
    }
    if let (Some(max), true) = (service_max, cfg.wants("service@50%svc")) {
        let half = max / 2.0;
        println!("-- rate-limited to half the service's own throughput: {half:.0} req/s --");
        let r = run_inproc("service@50%svc", start_service(Arc::clone(&rules.store), cfg.server_threads, None), Mode::Rate(half));
        report(&r, None);
        results.push(r);
    }
    if cfg.wants("child") {
        if let Some(child) = ChildServer::spawn(&rules.root) {
            let pid = child.child.id();
            if client_rt.block_on(wait_serving(child.addr, Duration::from_secs(20))).is_some() {
                let r = drive(&client_rt, &cfg, "child (cpc-rules serve)", child.addr, Arc::clone(&mix), Mode::Closed, Some(pid));
                report(&r, c);
                results.push(r);
            } else {
                eprintln!("WARNING: the child server did not report SERVING");
            }
            child.stop();
        }
    }
    println!("\n(in-process peak RSS is VmHWM of the whole benchmark process: server and client together)");
}

/// Runs `work(i)` in a loop on `threads` threads for `secs` seconds (thread `t` starting at
/// `i = 13 t`, so threads do not walk the requests in step) and returns calls per second in all.
fn per_second_on_threads(threads: usize, secs: f64, work: impl Fn(usize) + Send + Sync + 'static) -> f64 {
    let work = Arc::new(work);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let work = Arc::clone(&work);
            std::thread::spawn(move || {
                let (mut n, mut i) = (0u64, t * 13);
                while Instant::now() < end {
                    work(i);
                    i += 1;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    total as f64 / secs
}
