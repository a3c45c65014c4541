//! Bursts, overload and the noisy neighbour, against `cpc-rules serve` (a child process with
//! default options unless said otherwise, its log to /dev/null), every call with a 5 s deadline:
//!
//! - `burst`: one channel, `LOAD_BURSTS` (`500,2000`) concurrent `CheckChildInvitation` calls
//!   sent at once, `LOAD_BURST_RUNS` (3) times each: served, shed (`RESOURCE_EXHAUSTED`), other
//!   errors, the time the whole burst took, p99, and the server's peak RSS (`VmHWM`).
//! - `overload`: goodput (decisions answered OK per second) closed loop at 64 streams (the
//!   peak), then 256, 1,024 and 4,096 streams over 4 connections — closed-loop callers honour
//!   the `RetryInfo` delay with jitter, as `docs/reliability.md` asks — and open loop (a new call
//!   at fixed intervals, whatever came back) at 1×, 4× and 10× the peak's rate.
//! - `neighbour`: on a copy of the rules where Norfolk's child-invitation script first spins
//!   through a loop (a slow script, several ms), York's p50 with 4 streams alone, then beside 64
//!   streams flooding Norfolk.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::common;
use crate::config::{connect, env, mib, proc_status, wait_serving};
use crate::drivers::histogram;
use crate::servers::ChildServer;

/// Every call's deadline.
const DEADLINE: Duration = Duration::from_secs(5);

fn child_request(partnership: &str, i: usize) -> pb::CheckChildInvitationRequest {
    pb::CheckChildInvitationRequest {
        partnership: partnership.to_string(),
        case_ref: format!("BURST-{i}"),
        age: Some((i % 18) as i32),
        sufficient_understanding: Some(i % 3 != 0),
        wishes_to_attend: pb::ChildWish::Yes as i32,
        sensitive_information: Some(false),
    }
}

/// What one run saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    shed: u64,
    deadline: u64,
    other: u64,
    first_other: Option<String>,
}

impl Tally {
    fn count(&mut self, result: &Result<tonic::Response<pb::Decision>, tonic::Status>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => self.shed += 1,
            Err(s) if s.code() == Code::DeadlineExceeded => self.deadline += 1,
            Err(s) => {
                self.other += 1;
                self.first_other.get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
            }
        }
    }

    fn add(&mut self, o: Tally) {
        self.ok += o.ok;
        self.shed += o.shed;
        self.deadline += o.deadline;
        self.other += o.other;
        if self.first_other.is_none() {
            self.first_other = o.first_other;
        }
    }
}

fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

fn start_child(client_rt: &Runtime, root: &Path, extra: &[&str]) -> Option<ChildServer> {
    let child = ChildServer::spawn_with(root, extra)?;
    if client_rt.block_on(wait_serving(child.addr, Duration::from_secs(20))).is_none() {
        eprintln!("WARNING: the child server did not report SERVING");
        child.stop();
        return None;
    }
    Some(child)
}

/// `LOAD_BURSTS` bursts on one channel.
pub(crate) fn bursts(client_rt: &Runtime, root: &Path) {
    let sizes: Vec<usize> = std::env::var("LOAD_BURSTS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![500, 2000]);
    let runs: usize = env("LOAD_BURST_RUNS", 3usize).max(1);
    println!("\n== bursts: N concurrent CheckChildInvitation calls on one channel, 5 s deadlines, `cpc-rules serve` with default options ==");
    let Some(child) = start_child(client_rt, root, &[]) else { return };
    let pid = child.child.id();
    let ids = common::all_ids();
    for &size in &sizes {
        for run in 0..runs {
            let (tally, took, hist) = client_rt.block_on(async {
                let channel = connect(child.addr).await.expect("connect");
                let mut warm = DecisionServiceClient::new(channel.clone());
                warm.check_child_invitation(child_request("york", 14)).await.expect("a first call decides");
                let started = Instant::now();
                let handles: Vec<_> = (0..size)
                    .map(|i| {
                        let mut client = DecisionServiceClient::new(channel.clone());
                        let partnership = ids[i % ids.len()].clone();
                        tokio::spawn(async move {
                            let mut req = Request::new(child_request(&partnership, i));
                            req.set_timeout(DEADLINE);
                            let sent = Instant::now();
                            let result = client.check_child_invitation(req).await;
                            (result, sent.elapsed())
                        })
                    })
                    .collect();
                let mut tally = Tally::default();
                let mut hist = histogram();
                for h in handles {
                    let (result, took) = h.await.expect("task");
                    tally.count(&result);
                    hist.saturating_record(took.as_micros().max(1) as u64);
                }
                (tally, started.elapsed(), hist)
            });
            println!(
                "  burst {size:>5} run {}: served {} shed {} deadline {} other {}  whole burst {:.0} ms  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  server peak RSS so far {}{}",
                run + 1,
                tally.ok,
                tally.shed,
                tally.deadline,
                tally.other,
                took.as_secs_f64() * 1000.0,
                q(&hist, 0.5),
                q(&hist, 0.99),
                hist.max() as f64 / 1000.0,
                mib(proc_status(Some(pid), "VmHWM:")),
                tally.first_other.map(|e| format!("  first other error: {e}")).unwrap_or_default(),
            );
        }
    }
    child.stop();
}

/// A tiny xorshift for retry jitter (no `rand` here).
fn jitter(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    0.5 + (*state % 1000) as f64 / 1000.0
}

struct LoopResult {
    tally: Tally,
    hist: Histogram<u64>,
    secs: f64,
}

impl LoopResult {
    fn goodput(&self) -> f64 {
        self.tally.ok as f64 / self.secs
    }

    fn line(&self, name: &str, peak: Option<f64>) -> String {
        let ratio = peak.map_or(String::new(), |p| format!(" ({:.0}% of peak)", 100.0 * self.goodput() / p));
        format!(
            "  {name:<28} goodput {:>7.0}/s{ratio}  shed {:>7}  deadline {:>5}  other {:>3}  p50 {:.1} ms  p99 {:.1} ms{}",
            self.goodput(),
            self.tally.shed,
            self.tally.deadline,
            self.tally.other,
            q(&self.hist, 0.5),
            q(&self.hist, 0.99),
            self.tally.first_other.as_ref().map(|e| format!("  first other error: {e}")).unwrap_or_default()
        )
    }
}

/// `streams` callers in a closed loop over `connections` connections for `secs` after `warmup`,
/// each call to `request(i)`; a shed caller waits its `RetryInfo` delay (with jitter) first.
fn closed_loop(
    client_rt: &Runtime,
    addr: SocketAddr,
    connections: usize,
    streams: usize,
    warmup: f64,
    secs: f64,
    request: Arc<dyn Fn(usize) -> pb::CheckChildInvitationRequest + Send + Sync>,
) -> LoopResult {
    let parts = client_rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..connections {
            channels.push(connect(addr).await.expect("connect"));
        }
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + Duration::from_secs_f64(warmup);
        let end = measure_from + Duration::from_secs_f64(secs);
        let handles: Vec<_> = (0..streams)
            .map(|s| {
                let mut client = DecisionServiceClient::new(channels[s % channels.len()].clone());
                let request = Arc::clone(&request);
                tokio::spawn(async move {
                    let (mut tally, mut hist) = (Tally::default(), histogram());
                    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (s as u64 + 1);
                    let mut i = s * 7;
                    tokio::time::sleep_until(start.into()).await;
                    while Instant::now() < end {
                        let mut req = Request::new(request(i));
                        i += 1;
                        req.set_timeout(DEADLINE);
                        let sent = Instant::now();
                        let result = client.check_child_invitation(req).await;
                        let done = Instant::now();
                        let retry = result.as_ref().err().filter(|s| s.code() == Code::ResourceExhausted).map(|s| {
                            s.get_error_details().retry_info().and_then(|r| r.retry_delay).unwrap_or(Duration::from_millis(50))
                        });
                        if sent >= measure_from && done <= end {
                            tally.count(&result);
                            if result.is_ok() {
                                hist.saturating_record((done - sent).as_micros().max(1) as u64);
                            }
                        }
                        if let Some(delay) = retry {
                            tokio::time::sleep(delay.mul_f64(jitter(&mut seed))).await;
                        }
                    }
                    (tally, hist)
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    });
    let mut result = LoopResult { tally: Tally::default(), hist: histogram(), secs };
    for (t, h) in parts {
        result.tally.add(t);
        result.hist.add(&h).expect("merge");
    }
    result
}

/// A new call every `1 / rate` s over `connections` connections for `secs` after `warmup`,
/// whatever came back (no retries): a true open loop. At most `max_outstanding` calls are in
/// flight on the client side; a call not sent because of that counts as `other`.
fn open_loop(
    client_rt: &Runtime,
    addr: SocketAddr,
    connections: usize,
    rate: f64,
    warmup: f64,
    secs: f64,
    request: Arc<dyn Fn(usize) -> pb::CheckChildInvitationRequest + Send + Sync>,
) -> LoopResult {
    const MAX_OUTSTANDING: u64 = 50_000;
    let (tally, hist) = client_rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..connections {
            channels.push(connect(addr).await.expect("connect"));
        }
        let outstanding = Arc::new(AtomicU64::new(0));
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + Duration::from_secs_f64(warmup);
        let end = measure_from + Duration::from_secs_f64(secs);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Result<tonic::Response<pb::Decision>, tonic::Status>, Instant, Instant)>();
        let collector = tokio::spawn(async move {
            let (mut tally, mut hist) = (Tally::default(), histogram());
            while let Some((result, due, done)) = rx.recv().await {
                if due >= measure_from && done <= end {
                    tally.count(&result);
                    if result.is_ok() {
                        hist.saturating_record((done - due).as_micros().max(1) as u64);
                    }
                }
            }
            (tally, hist)
        });
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut dropped = 0u64;
        let mut due = start;
        let mut i = 0usize;
        // Send in ticks of 1 ms: every call due by now, each on its own task.
        while due < end {
            tokio::time::sleep_until(due.into()).await;
            let now = Instant::now();
            while due <= now && due < end {
                if outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
                    if due >= measure_from {
                        dropped += 1;
                    }
                } else {
                    outstanding.fetch_add(1, Ordering::Relaxed);
                    let mut client = DecisionServiceClient::new(channels[i % channels.len()].clone());
                    let mut req = Request::new(request(i));
                    req.set_timeout(DEADLINE);
                    let (tx, outstanding) = (tx.clone(), Arc::clone(&outstanding));
                    let sent_due = due;
                    tokio::spawn(async move {
                        let result = client.check_child_invitation(req).await;
                        let _ = tx.send((result, sent_due, Instant::now()));
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                i += 1;
                due += interval;
            }
            due = due.max(now + Duration::from_millis(1)).min(due + Duration::from_millis(1));
        }
        drop(tx);
        // Calls still in flight after `end` do not count; give them their deadline to finish.
        let (mut tally, hist) = tokio::time::timeout(DEADLINE + Duration::from_secs(2), collector).await.expect("calls finish").expect("collector");
        if dropped > 0 {
            tally.other += dropped;
            tally.first_other.get_or_insert_with(|| format!("{dropped} calls not sent: {MAX_OUTSTANDING} already outstanding on the client"));
        }
        (tally, hist)
    });
    LoopResult { tally, hist, secs }
}

/// The overload curve: closed loops at 64 (the peak), 256, 1,024 and 4,096 streams, and open
/// loops at 1×, 4× and 10× the peak's rate.
pub(crate) fn overload(client_rt: &Runtime, root: &Path, left_out: &[String]) {
    // With LOAD_OVERLOAD_SPIN=n every partnership's child-invitation script first spins n loop
    // iterations: decisions then cost the server more than calls cost the client, so that 10x
    // the server's capacity is a rate the client (on the same cores) can still send.
    let spin: usize = env("LOAD_OVERLOAD_SPIN", 0usize);
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = if spin > 0 {
        common::copy_dir(root, tmp.path(), left_out);
        for id in common::all_ids() {
            let script = tmp.path().join(&id).join("child_invitation.rhai");
            if let Ok(original) = std::fs::read_to_string(&script) {
                std::fs::write(&script, format!("let spin = 0; while spin < {spin} {{ spin += 1; }}\n{original}")).expect("write");
            }
        }
        println!("\n(overload runs on a copy of the rules whose child-invitation scripts first spin {spin} loop iterations)");
        tmp.path()
    } else {
        root
    };
    let secs: f64 = env("LOAD_SECS", 10.0);
    let warmup: f64 = env("LOAD_WARMUP_SECS", 2.0);
    let connections: usize = env("LOAD_CONNECTIONS", 4usize).max(1);
    let streams: Vec<usize> = std::env::var("LOAD_OVERLOAD_STREAMS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 256, 1024, 4096]);
    let multiples: Vec<f64> = std::env::var("LOAD_OVERLOAD_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1.0, 4.0, 10.0]);
    println!("\n== overload: goodput of `cpc-rules serve` (default options), CheckChildInvitation over every partnership, {connections} connections, {secs} s after {warmup} s ==");
    let ids = common::all_ids();
    let request: Arc<dyn Fn(usize) -> pb::CheckChildInvitationRequest + Send + Sync> =
        Arc::new(move |i| child_request(&ids[i % ids.len()], i));
    let mut peak: Option<f64> = None;
    for &n in &streams {
        let Some(child) = start_child(client_rt, root, &[]) else { return };
        let r = closed_loop(client_rt, child.addr, connections, n, warmup, secs, Arc::clone(&request));
        println!("{}  server peak RSS {}", r.line(&format!("closed loop, {n} streams"), peak), mib(proc_status(Some(child.child.id()), "VmHWM:")));
        peak = Some(peak.map_or(r.goodput(), |p| p.max(r.goodput())));
        child.stop();
    }
    let Some(peak_rate) = peak else { return };
    for &m in &multiples {
        let Some(child) = start_child(client_rt, root, &[]) else { return };
        let rate = peak_rate * m;
        let r = open_loop(client_rt, child.addr, connections, rate, warmup, secs, Arc::clone(&request));
        println!(
            "{}  server peak RSS {}",
            r.line(&format!("open loop, {m}x = {rate:.0}/s"), Some(peak_rate)),
            mib(proc_status(Some(child.child.id()), "VmHWM:"))
        );
        child.stop();
    }
}

/// York beside a partnership flooded with slow scripts.
pub(crate) fn neighbour(client_rt: &Runtime, root: &Path, left_out: &[String]) {
    let secs: f64 = env("LOAD_SECS", 10.0);
    let warmup: f64 = env("LOAD_WARMUP_SECS", 2.0);
    let spin: usize = env("LOAD_SLOW_LOOP", 20_000usize);
    let flood: usize = env("LOAD_FLOOD_STREAMS", 64usize);
    let extra: Vec<String> = std::env::var("LOAD_NEIGHBOUR_ARGS").ok().map(|v| v.split_whitespace().map(String::from).collect()).unwrap_or_default();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    println!(
        "\n== neighbour: York (4 streams) alone, then beside {flood} streams of a slow Norfolk script ({spin} loop iterations first); server args {extra:?} =="
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    common::copy_dir(root, tmp.path(), left_out);
    let script = tmp.path().join("norfolk/child_invitation.rhai");
    let original = std::fs::read_to_string(&script).expect("norfolk's script");
    std::fs::write(&script, format!("let spin = 0; while spin < {spin} {{ spin += 1; }}\n{original}")).expect("write");
    let york: Arc<dyn Fn(usize) -> pb::CheckChildInvitationRequest + Send + Sync> = Arc::new(|i| child_request("york", i));
    let norfolk: Arc<dyn Fn(usize) -> pb::CheckChildInvitationRequest + Send + Sync> = Arc::new(|i| child_request("norfolk", i));

    let Some(child) = start_child(client_rt, tmp.path(), &extra) else { return };
    let alone = closed_loop(client_rt, child.addr, 1, 4, warmup, secs, Arc::clone(&york));
    println!("{}", alone.line("york alone", None));
    let slow = closed_loop(client_rt, child.addr, 1, 4, warmup.min(1.0), secs.min(3.0), Arc::clone(&norfolk));
    println!("{}", slow.line("slow norfolk alone, 4 streams", None));
    let addr = child.addr;
    let flooding = std::thread::spawn({
        let norfolk = Arc::clone(&norfolk);
        move || {
            let rt = crate::config::runtime("flood-client", 1, None);
            closed_loop(&rt, addr, 2, flood, 0.0, warmup + secs + 1.0, norfolk)
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let beside = closed_loop(client_rt, child.addr, 1, 4, warmup, secs, Arc::clone(&york));
    let flood_result = flooding.join().expect("flood thread");
    println!("{}", beside.line("york beside the flood", None));
    println!("{}", flood_result.line(&format!("norfolk flood, {flood} streams"), None));
    println!(
        "  york p50 {:.2} ms -> {:.2} ms ({:.2}x), p99 {:.2} ms -> {:.2} ms",
        q(&alone.hist, 0.5),
        q(&beside.hist, 0.5),
        q(&beside.hist, 0.5) / q(&alone.hist, 0.5),
        q(&alone.hist, 0.99),
        q(&beside.hist, 0.99)
    );
    child.stop();
}
