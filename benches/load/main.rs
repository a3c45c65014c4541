//! Service load benchmark (own harness): `cargo bench -p cpc-rules-bench --bench load`.
//!
//! Modules: [`config`] (knobs and helpers), [`servers`] (what is measured), [`drivers`] (the
//! request mix and the client loops), [`overload`] (bursts, the overload curve and the
//! neighbour test).
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
//! service, service+logs, ceiling@50%, service@50%, service+logs@50%, service@50%svc, child;
//! run names may also be given as arguments after `--`).
//!
//! 4. **Overload** ([`overload`], only when named: `burst`, `overload`, `neighbour`): bursts on
//!    one channel, the goodput curve past capacity, and York beside a flooded partnership.


#[path = "../common/mod.rs"]
mod common;
mod config;
mod drivers;
mod overload;
mod servers;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::store::{RuleStore, build};
use prost::Message as _;
use tokio::runtime::Runtime;

use config::{Config, connect, ms, production_logs, reset_peak_rss, runtime, wait_serving};
use drivers::{Mode, Req, RunResult, drive, request_mix};
use servers::{ChildServer, Direct, Empty, RunningServer, constant_decisions, start_direct, start_empty, start_service};

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
    let reqs: Arc<Vec<cpc_rules::model::DecisionRequest>> =
        Arc::new(mix.iter().map(|r| common::edge_request(r.edge_request()).expect("valid request")).collect());
    let counts: Vec<usize> = std::env::var("LOAD_DECIDE_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    for threads in counts.iter().copied() {
        let store = Arc::clone(store);
        let reqs = Arc::clone(&reqs);
        let rate = per_second_on_threads(threads, 3.0, move |i| {
            std::hint::black_box(store.decide(&reqs[i % reqs.len()]).ok());
        });
        println!(
            "  RuleStore::decide, {threads} thread(s): {rate:.0} decisions/s in total, {:.1} µs per decision per thread",
            threads as f64 * 1e6 / rate
        );
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

    if cfg.named("burst") {
        overload::bursts(&client_rt, &rules.root);
    }
    if cfg.named("overload") {
        overload::overload(&client_rt, &rules.root, &rules.left_out);
    }
    if cfg.named("neighbour") {
        overload::neighbour(&client_rt, &rules.root, &rules.left_out);
    }
    const OVERLOAD_RUNS: [&str; 3] = ["burst", "overload", "neighbour"];
    if cfg.only.as_ref().is_some_and(|o| o.iter().all(|x| OVERLOAD_RUNS.contains(&x.as_str()))) {
        return;
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
