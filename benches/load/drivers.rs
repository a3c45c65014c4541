//! The request mix and the drivers: closed and open loops over a tonic client, measuring
//! goodput, latency and errors.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::store::RuleStore;
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::common;
use crate::config::{Config, connect, mib, proc_status};

// ---------------------------------------------------------------------------------------------
// the request mix

#[derive(Clone)]
pub(crate) enum Req {
    Plan(pb::DeterminePlanTypeRequest, String),
    Complaint(pb::CheckComplaintEligibilityRequest, String),
}

impl Req {
    pub(crate) fn expected(&self) -> &str {
        match self {
            Req::Plan(_, o) | Req::Complaint(_, o) => o,
        }
    }

    /// The request as the gRPC edge converts it (valid by construction: from a passing case).
    pub(crate) fn edge_request(&self) -> cpc_rules::grpc::convert::EdgeRequest {
        match self {
            Req::Plan(p, _) => cpc_rules::grpc::convert::EdgeRequest::try_from(p.clone()),
            Req::Complaint(c, _) => cpc_rules::grpc::convert::EdgeRequest::try_from(c.clone()),
        }
        .expect("valid request")
    }

    pub(crate) async fn call(&self, client: &mut DecisionServiceClient<Channel>) -> Result<Response<pb::Decision>, Status> {
        match self {
            Req::Plan(r, _) => client.determine_plan_type(r.clone()).await,
            Req::Complaint(r, _) => client.check_complaint_eligibility(r.clone()).await,
        }
    }
}

/// Alternating plan-type and complaint requests with the facts of every partnership's
/// decision-producing cases of those kinds.
pub(crate) fn request_mix(store: &RuleStore, root: &Path) -> Vec<Req> {
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
// load runs

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// As fast as responses come back.
    Closed,
    /// Open loop at this many requests per second in total.
    Rate(f64),
}

pub(crate) struct RunResult {
    pub(crate) name: String,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) secs: f64,
    pub(crate) hist: Histogram<u64>,
    pub(crate) peak_rss_kb: Option<u64>,
}

impl RunResult {
    pub(crate) fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    pub(crate) fn q_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    pub(crate) fn line(&self, ceiling: Option<f64>) -> String {
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

pub(crate) struct TaskResult {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) hist: Histogram<u64>,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram") // µs, up to 2 minutes
}

/// Drives `mix` at `addr` for the configured time and returns what it measured.
pub(crate) fn drive(client_rt: &Runtime, cfg: &Config, name: &str, addr: SocketAddr, mix: Arc<Vec<Req>>, mode: Mode, child_pid: Option<u32>) -> RunResult {
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

