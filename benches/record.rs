//! What recording every decision costs: the real gRPC server, in process, driven by concurrent
//! tonic clients three ways — no record, the embedded SQLite record (WAL, synchronous=FULL) and
//! a PostgreSQL record — and the throughput of each as a share of the unrecorded one.
//!
//! ```sh
//! cargo bench -p cpc-rules-bench --bench record
//! CPC_BENCH_SECONDS=10 CPC_BENCH_CLIENTS=64 CPC_BENCH_ROUNDS=9 cargo bench -p cpc-rules-bench --bench record
//! ```
//!
//! Calls with a `case_ref` spread over `CPC_BENCH_CASE_REFS` cases (default 100,000), as a real
//! record's would, so the `case_ref` index is exercised as in production.
//! `CPC_BENCH_COMMIT_INTERVAL_US` sets the record's commit interval (default: the server's).
//! `CPC_BENCH_WAYS=off,sqlite` (any of `off`, `sqlite`, `postgres`) measures only those, for a
//! profiler. The three ways are run in rounds (off, SQLite, PostgreSQL, off, …) and each way's median is
//! reported, so a change in the machine's other load during the run does not favour one way.
//!
//! PostgreSQL: `CPC_BENCH_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`); the bench
//! makes a database of its own with `psql` and drops it. Without PostgreSQL the row says so.
//! Self-contained on purpose (no shared bench code): see docs/record.md for the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::server::{ServerOptions, serve_with};
use cpc_rules::record::{Record, RecordConfig, Target};
use cpc_rules::store::RuleStore;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A mix of the kinds of decision a case system asks for, for two partnerships.
fn requests() -> Vec<pb::EvaluateRequest> {
    use prost_types::value::Kind;
    let v = |k: Kind| prost_types::Value { kind: Some(k) };
    let s = |x: &str| v(Kind::StringValue(x.into()));
    let b = |x: bool| v(Kind::BoolValue(x));
    let n = |x: f64| v(Kind::NumberValue(x));
    let facts = |f: Vec<(&str, prost_types::Value)>| prost_types::Struct { fields: f.into_iter().map(|(k, v)| (k.to_string(), v)).collect() };
    let mut out = Vec::new();
    for p in ["york", "barnsley"] {
        out.push(pb::EvaluateRequest {
            partnership: p.into(),
            kind: "child_invitation".into(),
            facts: Some(facts(vec![("age", n(14.0)), ("sufficient_understanding", b(true)), ("wishes_to_attend", s("yes")), ("sensitive_information", b(true))])),
            case_ref: "BENCH-CASE-1".into(),
        });
        out.push(pb::EvaluateRequest {
            partnership: p.into(),
            kind: "exclusion".into(),
            facts: Some(facts(vec![("role", s("parent")), ("grounds", v(Kind::ListValue(prost_types::ListValue { values: vec![s("likely_to_disrupt")] })))])),
            case_ref: "BENCH-CASE-2".into(),
        });
        out.push(pb::EvaluateRequest {
            partnership: p.into(),
            kind: "timescales".into(),
            facts: Some(facts(vec![("strategy_discussion_date", s("2025-03-31")), ("as_of", s("2025-04-10"))])),
            case_ref: String::new(),
        });
    }
    out
}

struct Run {
    name: &'static str,
    per_second: Option<f64>,
    note: String,
}

fn psql(db: &str, sql: &str) -> bool {
    let base = env_or("CPC_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432".to_string());
    std::process::Command::new("psql")
        .arg(format!("{}/{db}", base.trim_end_matches('/')))
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn measure(rules: &std::path::Path, record: Option<Arc<Record>>, seconds: u64, clients: usize, case_refs: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let store = Arc::new(RuleStore::load(rules, Limits::default()).expect("the bundled rules load"));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = ServerOptions { record, ..ServerOptions::default() };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve_with(listener, store, &options, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let reqs = Arc::new(requests());
        let channels: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect"));
            }
            v
        };
        let done = Arc::new(AtomicU64::new(0));
        let counting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut client = DecisionServiceClient::new(channels[c % channels.len()].clone());
            let (reqs, done, counting, stop) = (Arc::clone(&reqs), Arc::clone(&done), Arc::clone(&counting), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let mut r = reqs[i % reqs.len()].clone();
                    if !r.case_ref.is_empty() {
                        // Cases spread as in a real partnership's record, not two hot keys.
                        r.case_ref = format!("CASE-{}", (i.wrapping_mul(2_654_435_761)) % case_refs);
                    }
                    i += 1;
                    client.evaluate(r).await.expect("every call is decided (and recorded)");
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
        counting.store(true, Ordering::SeqCst);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let n = done.load(Ordering::SeqCst);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let _ = t.await;
        }
        let _ = stop_tx.send(());
        let _ = server.await;
        n as f64 / elapsed
    })
}

/// The writer's database work alone: µs per decision to insert typical decisions in batches of
/// `batch`, commit included (`CPC_BENCH_WAYS=insert`).
fn insert_only(batch: usize) {
    use cpc_rules::record::{DecisionRecord, store::Row};
    let dir = tempfile::tempdir().expect("tmp");
    let mut db = cpc_rules::record::Db::open(&Target::Sqlite(dir.path().join("insert.sqlite"))).expect("db");
    let decision: cpc_rules::model::Decision = {
        let store = RuleStore::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules")), Limits::default()).expect("rules");
        let loaded = store.get("york").expect("york");
        let set = &loaded.set;
        let facts = serde_json::json!({"age": 14, "sufficient_understanding": true, "wishes_to_attend": "yes", "sensitive_information": true});
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 3).expect("date");
        set.decide(&cpc_rules::model::DecisionRequest { partnership: "york".into(), kind: "child_invitation".into(), facts, today }).expect("decides")
    };
    let n = 20_000;
    let now = chrono::Utc::now();
    let rows: Vec<Row> = (0..n)
        .map(|i| {
            let issued = cpc_rules::model::IssuedDecision::stamp(decision.clone(), now + chrono::Duration::microseconds(i as i64));
            Row::encode(&DecisionRecord {
                decision_id: issued.decision_id,
                decided_at: issued.decided_at,
                today: now.date_naive(),
                facts: serde_json::json!({"age": 14}),
                decision: issued.decision,
                caller: "bench".into(),
                case_ref_hash: Some(format!("{:064x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) % 100_000)),
            })
            .expect("encode")
        })
        .collect();
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        db.transaction(|db| db.insert_rows(chunk, &[])).expect("insert");
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("insert only: {n} decisions in batches of {batch}: {us:.1} µs per decision (one writer thread, commit and fsync included)");
}

fn main() {
    if std::env::var("CPC_BENCH_WAYS").is_ok_and(|w| w == "insert") {
        for batch in [1, 13, 64, 512] {
            insert_only(batch);
        }
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("record: bench");
        return;
    }
    let seconds = env_or("CPC_BENCH_SECONDS", 4u64);
    let clients = env_or("CPC_BENCH_CLIENTS", 256usize);
    let case_refs = env_or("CPC_BENCH_CASE_REFS", 100_000usize).max(1);
    let commit_interval = std::env::var("CPC_BENCH_COMMIT_INTERVAL_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(cpc_rules::record::DEFAULT_COMMIT_INTERVAL, Duration::from_micros);
    let rules = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules")).to_path_buf();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "decision record overhead: {clients} concurrent clients, {seconds} s per run after 1 s warm-up, {cores} cores, Evaluate mix (3 kinds × 2 partnerships, {case_refs} case refs, record commits at most every {commit_interval:?}), median of {} rounds",
        env_or("CPC_BENCH_ROUNDS", 5usize).max(1)
    );
    let rounds = env_or("CPC_BENCH_ROUNDS", 5usize).max(1);
    let dir = tempfile::tempdir().expect("tmp");
    let db = format!("cpc_record_bench_{}", std::process::id());
    let base_url = env_or("CPC_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432".to_string());
    let pg_target = psql("postgres", &format!("CREATE DATABASE {db}")).then(|| format!("{}/{db}", base_url.trim_end_matches('/')));
    let key = dir.path().join("pg.key");
    std::fs::write(&key, "bench-key-0123456789abcdef0123456789abcdef").expect("key");
    let mut off = Vec::new();
    let mut sqlite = Vec::new();
    let mut pg = Vec::new();
    let mut pg_note = if pg_target.is_some() { String::new() } else { "NOT MEASURED: cannot create a database with psql (set CPC_BENCH_POSTGRES)".to_string() };
    let ways = env_or("CPC_BENCH_WAYS", "off,sqlite,postgres".to_string());
    let way = |w: &str| ways.split(',').any(|x| x.trim() == w);
    for round in 0..rounds {
        if way("off") {
            off.push(measure(&rules, None, seconds, clients, case_refs));
        }
        if way("sqlite") {
            let config = RecordConfig { commit_interval, ..RecordConfig::new(Target::Sqlite(dir.path().join(format!("bench-{round}.sqlite")))) };
            let record = Record::open(config).expect("SQLite record");
            sqlite.push(measure(&rules, Some(Arc::clone(&record)), seconds, clients, case_refs));
            drop(record);
        }
        if let Some(url) = pg_target.as_ref().filter(|_| way("postgres")) {
            match Record::open(RecordConfig { key_file: Some(key.clone()), commit_interval, ..RecordConfig::new(Target::Postgres(url.clone())) }) {
                Ok(record) => {
                    pg.push(measure(&rules, Some(Arc::clone(&record)), seconds, clients, case_refs));
                    drop(record);
                }
                Err(e) => pg_note = format!("not measured: {e}"),
            }
        }
        let shown = |v: &[f64]| v.get(round).map_or("—".to_string(), |p| format!("{p:.0}/s"));
        eprintln!("round {}: off {}, SQLite {}, PostgreSQL {}", round + 1, shown(&off), shown(&sqlite), shown(&pg));
    }
    std::thread::sleep(Duration::from_millis(200));
    if pg_target.is_some() {
        let _ = psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
    let median = |v: &mut Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    let runs = vec![
        Run { name: "no record (--record off)", per_second: median(&mut off), note: String::new() },
        Run { name: "SQLite (WAL, synchronous=FULL)", per_second: median(&mut sqlite), note: String::new() },
        Run { name: "PostgreSQL (local, synchronous_commit=on)", per_second: median(&mut pg), note: pg_note },
    ];
    let base = runs[0].per_second.unwrap_or(1.0);
    println!();
    println!("| record | decisions/s | share of unrecorded |");
    println!("|---|---:|---:|");
    for r in &runs {
        match r.per_second {
            Some(p) => println!("| {} | {:.0} | {:.0}% |", r.name, p, 100.0 * p / base),
            None => println!("| {} | — | {} |", r.name, r.note),
        }
    }
}
