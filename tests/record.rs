//! The decision record (issue 13), through real clients against real servers.
//!
//! - SQLite, in process: decide → `GetDecision` / `ListDecisions` by `case_ref` → replay
//!   identical; a rule edit and reload → two revisions with lifetimes, replay at the old one
//!   identical and at the new one different; refusals counted, not stored; `case_ref` never in
//!   the database in the clear; a record that cannot be written → `UNAVAILABLE` and health
//!   `NOT_SERVING` (or served anyway with `--record-failure serve`).
//! - The `serve` binary, killed with SIGKILL under load, on SQLite and on PostgreSQL: every
//!   acknowledged decision is in the record.
//! - Three `serve` replicas on one PostgreSQL record, one killed and restarted mid-load: every
//!   acknowledged decision is in the record exactly once, and a rules change reaches all three.
//!
//! PostgreSQL is expected on 127.0.0.1:5432 (user `postgres`, trust authentication; override with
//! `CPC_TEST_POSTGRES=postgres://…/`). Each test makes a database of its own and drops it. If
//! PostgreSQL is not reachable these tests FAIL, unless `CPC_SKIP_POSTGRES=1`, when they print a
//! loud `SKIPPED` line instead.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpc_rules::grpc::auth::{AccessPolicy, Secret};
use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::pb::record_service_client::RecordServiceClient;
use cpc_rules::grpc::server::ServerOptions;
use cpc_rules::record::{Db, FailurePolicy, Record, RecordConfig, Target};
use support::{child, fixture, load, start};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const ADMIN: &str = "admin-token-0123456789abcdef";
const AUDITOR: &str = "auditor-token-0123456789abcdef";
const CALLER: &str = "caller-token-0123456789abcdef";
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    r
}

fn access() -> AccessPolicy {
    AccessPolicy {
        admin_token: Some(Secret::new(ADMIN).expect("admin")),
        caller_token: Some(Secret::new(CALLER).expect("caller")),
        auditor_token: Some(Secret::new(AUDITOR).expect("auditor")),
        ..AccessPolicy::default()
    }
}

fn sqlite_config(dir: &Path, on_failure: FailurePolicy) -> RecordConfig {
    RecordConfig { on_failure, ..RecordConfig::new(Target::Sqlite(dir.join("record.sqlite"))) }
}

async fn health(channel: Channel) -> i32 {
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_record_round_trip_replay_revisions_and_refusals() {
    let rules = fixture();
    let data = tempfile::tempdir().expect("tmp");
    let store = load(rules.path(), support::slow_limits());
    let record = Record::open(sqlite_config(data.path(), FailurePolicy::Refuse)).expect("open the record");
    let options = ServerOptions { access: access(), record: Some(Arc::clone(&record)), ..ServerOptions::default() };
    let server = start(store, options, false).await;
    let channel = server.channel().await;
    let mut decisions = DecisionServiceClient::new(channel.clone());
    let mut rec = RecordServiceClient::new(channel.clone());

    let first = decisions.check_child_invitation(with_token(CALLER, child("good", 12))).await.expect("decide").into_inner();
    assert_eq!(first.outcome, "invite");

    // Get it back, as an auditor: facts, who asked, the whole decision.
    let got = rec.get_decision(with_token(AUDITOR, pb::GetDecisionRequest { decision_id: first.decision_id.clone() })).await.expect("get").into_inner();
    let d = got.decision.clone().expect("decision");
    assert_eq!(d.decision_id, first.decision_id);
    assert_eq!(d.outcome, "invite");
    assert_eq!(d.rules_revision, first.rules_revision);
    assert_eq!(d.reasons, first.reasons);
    assert_eq!(d.decided_at, first.decided_at, "the caller's time and the record's agree");
    assert_eq!(got.caller, "caller-token");
    assert!(got.has_case_ref);
    assert!(got.facts.expect("facts").fields.contains_key("age"));
    // A caller token may not read the record; nothing at all is unauthenticated.
    let denied = rec.get_decision(with_token(CALLER, pb::GetDecisionRequest { decision_id: first.decision_id.clone() })).await.expect_err("caller");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = rec.get_decision(pb::GetDecisionRequest { decision_id: first.decision_id.clone() }).await.expect_err("nobody");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let missing = rec.get_decision(with_token(ADMIN, pb::GetDecisionRequest { decision_id: "nope".into() })).await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);

    // Found by case_ref (hashed on the way in), and only by the right one.
    let by_case = |case_ref: &str| pb::ListDecisionsRequest { case_ref: case_ref.into(), ..Default::default() };
    let listed = rec.list_decisions(with_token(AUDITOR, by_case("CASE-0001"))).await.expect("list").into_inner();
    assert_eq!(listed.decisions.len(), 1);
    let none = rec.list_decisions(with_token(AUDITOR, by_case("CASE-0002"))).await.expect("list").into_inner();
    assert!(none.decisions.is_empty());

    // Replayed with the revision that made it: identical.
    let replay = rec.replay_decision(with_token(AUDITOR, pb::ReplayDecisionRequest { decision_id: first.decision_id.clone(), revision: String::new() })).await.expect("replay").into_inner();
    assert!(replay.identical, "{:?}", replay.differences);
    assert_eq!(replay.revision, first.rules_revision);

    // A refusal is counted, not stored.
    let refused = decisions.check_child_invitation(with_token(CALLER, pb::CheckChildInvitationRequest { age: Some(-3), ..child("good", 12) })).await.expect_err("bad age");
    assert_eq!(refused.code(), Code::InvalidArgument);

    // A rule change goes live: a 12-year-old is no longer invited.
    let script = rules.path().join("good/child_invitation.rhai");
    let text = std::fs::read_to_string(&script).expect("read");
    std::fs::write(&script, text.replace("facts.age >= 12", "facts.age >= 13")).expect("write");
    let mut admin_rules = cpc_rules::grpc::pb::rules_service_client::RulesServiceClient::new(channel.clone());
    let reload = admin_rules.reload_rules(with_token(ADMIN, pb::ReloadRulesRequest { partnerships: vec!["good".into()] })).await.expect("reload").into_inner();
    assert_eq!(reload.swapped.len(), 1, "{reload:?}");
    // The reply says what the change does to the decisions already recorded: the one made so
    // far would now be decided differently.
    let impact = reload.swapped[0].record_impact.clone().expect("the reload reply carries the impact on recorded decisions");
    assert_eq!((impact.days, impact.replayed, impact.changed, impact.refused), (30, 1, 1, 0), "{impact:?}");
    assert_eq!(impact.outcome_changes.get("invite → represent_views"), Some(&1), "{impact:?}");
    assert!(impact.examples.first().is_some_and(|e| e.starts_with(&first.decision_id)), "{impact:?}");
    assert!(impact.unavailable.is_empty());
    let second = decisions.check_child_invitation(with_token(CALLER, child("good", 12))).await.expect("decide").into_inner();
    assert_eq!(second.outcome, "represent_views");
    assert_ne!(second.rules_revision, first.rules_revision);

    // Two revisions, with lifetimes and what changed.
    let revs = rec.list_revisions(with_token(AUDITOR, pb::ListRevisionsRequest { partnership: "good".into() })).await.expect("revisions").into_inner().revisions;
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert_eq!(revs[0].revision, first.rules_revision);
    assert!(revs[0].replaced_at.is_some());
    assert_eq!(revs[1].revision, second.rules_revision);
    assert!(revs[1].replaced_at.is_none());
    assert_eq!(revs[1].changed, vec!["good/child_invitation.rhai".to_string()]);
    assert_eq!(revs[0].decisions, 1);

    // The first decision replays identically with its own (archived, no longer on disk) rules,
    // and differently with the new ones.
    let old = rec.replay_decision(with_token(AUDITOR, pb::ReplayDecisionRequest { decision_id: first.decision_id.clone(), revision: String::new() })).await.expect("replay").into_inner();
    assert!(old.identical, "{:?}", old.differences);
    let new = rec.replay_decision(with_token(AUDITOR, pb::ReplayDecisionRequest { decision_id: first.decision_id.clone(), revision: second.rules_revision.clone() })).await.expect("replay").into_inner();
    assert!(!new.identical);
    assert!(new.differences.iter().any(|d| d.contains("outcome") && d.contains("represent_views")), "{:?}", new.differences);
    let unknown = rec.replay_decision(with_token(AUDITOR, pb::ReplayDecisionRequest { decision_id: first.decision_id.clone(), revision: "0000".into() })).await.expect_err("unknown revision");
    assert_eq!(unknown.code(), Code::NotFound);

    // Filters and pages.
    let page1 = rec.list_decisions(with_token(AUDITOR, pb::ListDecisionsRequest { partnership: "good".into(), page_size: 1, ..Default::default() })).await.expect("page").into_inner();
    assert_eq!(page1.decisions.len(), 1);
    assert_eq!(page1.decisions[0].decision.as_ref().map(|d| d.decision_id.clone()), Some(second.decision_id.clone()), "newest first");
    let page2 = rec
        .list_decisions(with_token(AUDITOR, pb::ListDecisionsRequest { partnership: "good".into(), page_size: 1, page_token: page1.next_page_token.clone(), ..Default::default() }))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page2.decisions.len(), 1);
    assert_eq!(page2.decisions[0].decision.as_ref().map(|d| d.decision_id.clone()), Some(first.decision_id.clone()));
    assert!(page2.next_page_token.is_empty());
    let by_outcome = rec.list_decisions(with_token(AUDITOR, pb::ListDecisionsRequest { outcome: "represent_views".into(), ..Default::default() })).await.expect("list").into_inner();
    assert_eq!(by_outcome.decisions.len(), 1);

    server.stop().await.expect("stop");
    drop(record);

    // Straight from the database: two decisions (the refusal is not one), the refusal
    // counted, and no case_ref in the clear anywhere in the files.
    let mut db = Db::open(&Target::Sqlite(data.path().join("record.sqlite"))).expect("open");
    assert_eq!(db.all_ids().expect("ids").len(), 2);
    let refusals = db.refusals().expect("refusals");
    assert!(refusals.iter().any(|(k, n)| k.partnership == "good" && k.kind == "child_invitation" && k.code == "INVALID_ARGUMENT" && *n >= 1), "{refusals:?}");
    for entry in std::fs::read_dir(data.path()).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(!bytes.windows(9).any(|w| w == b"CASE-0001"), "a case_ref is stored in the clear");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_written_fails_calls_and_health_unless_told_to_serve() {
    for policy in [FailurePolicy::Refuse, FailurePolicy::Serve] {
        let rules = fixture();
        let data = tempfile::tempdir().expect("tmp");
        let store = load(rules.path(), support::slow_limits());
        let record = Record::open(sqlite_config(data.path(), policy)).expect("open the record");
        let options = ServerOptions { record: Some(Arc::clone(&record)), ..ServerOptions::default() };
        let server = start(store, options, false).await;
        let channel = server.channel().await;
        let mut decisions = DecisionServiceClient::new(channel.clone());
        decisions.check_child_invitation(child("good", 14)).await.expect("recorded");
        assert_eq!(health(channel.clone()).await, ServingStatus::Serving as i32);

        // Take the table away from under the server.
        let path = data.path().join("record.sqlite");
        rename_table(&path, "decisions", "decisions_away");
        let result = decisions.check_child_invitation(child("good", 14)).await;
        match policy {
            FailurePolicy::Refuse => {
                let status = result.expect_err("not recorded, so not returned");
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains("could not be recorded"), "{}", status.message());
                wait_for(|| async { health(channel.clone()).await == ServingStatus::NotServing as i32 }).await;
            }
            FailurePolicy::Serve => {
                result.expect("served anyway");
                assert_eq!(health(channel.clone()).await, ServingStatus::Serving as i32);
            }
        }
        // Put it back: recording (and health) recover.
        rename_table(&path, "decisions_away", "decisions");
        decisions.check_child_invitation(child("good", 14)).await.expect("recorded again");
        wait_for(|| async { health(channel.clone()).await == ServingStatus::Serving as i32 }).await;
        server.stop().await.expect("stop");
    }
}

/// Renames a table through a connection of the test's own (the server's connections see it).
fn rename_table(path: &Path, from: &str, to: &str) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}")).expect("rename");
}

async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < until, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------------------
// The serve binary: SIGKILL under load, and three replicas on PostgreSQL
// ------------------------------------------------------------------------------------------

/// A database of the test's own on the local PostgreSQL, dropped at the end.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// A fresh database, or `None` (after a loud SKIPPED line) when PostgreSQL is not
    /// reachable and `CPC_SKIP_POSTGRES=1`. Panics with how to fix it otherwise.
    fn create(test: &str) -> Option<PgDatabase> {
        let base = std::env::var("CPC_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/".into());
        let base = if base.ends_with('/') { base } else { format!("{base}/") };
        let admin_url = format!("{base}test");
        let mut client = match postgres::Client::connect(&admin_url, postgres::NoTls) {
            Ok(c) => c,
            Err(e) if std::env::var("CPC_SKIP_POSTGRES").is_ok_and(|v| v == "1") => {
                eprintln!("\n*** SKIPPED: {test}: PostgreSQL is not reachable at {admin_url} ({e}) and CPC_SKIP_POSTGRES=1 ***\n");
                return None;
            }
            Err(e) => panic!(
                "{test} needs PostgreSQL at {admin_url} ({e}). Start it (`pg_ctlcluster 15 main start`, see .ci/run), point CPC_TEST_POSTGRES at one, \
                 or set CPC_SKIP_POSTGRES=1 to skip the PostgreSQL tests (loudly)"
            ),
        };
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("random");
        let name = format!("cpc_record_test_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        Some(PgDatabase { url: format!("{base}{name}"), admin_url, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// A `serve` process, killed when dropped.
struct Served {
    child: Child,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Served {
    fn spawn(port: u16, args: Vec<String>, log: PathBuf) -> Served {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
            .arg("serve")
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(&args)
            .env("CPC_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn serve");
        Served { child, port, args, log }
    }

    fn restart(&mut self) {
        *self = Served::spawn(self.port, self.args.clone(), self.log.clone());
    }

    fn kill9(&mut self) {
        // std's kill is SIGKILL on Unix: no shutdown, no flush.
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    async fn channel(&self) -> Channel {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(ch) = Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port)).expect("endpoint").connect().await {
                if HealthClient::new(ch.clone()).check(HealthCheckRequest { service: String::new() }).await.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                    return ch;
                }
            }
            assert!(Instant::now() < until, "serve on port {} did not become SERVING; log: {}", self.port, std::fs::read_to_string(&self.log).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `targets` (round robin) from `clients` tasks until `stop`, collecting every
/// acknowledged decision id. Errors (a killed server) are counted, not fatal.
async fn hammer(ports: Vec<u16>, clients: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> (Vec<String>, usize) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (acked, failed, stop, ports) = (Arc::clone(&acked), Arc::clone(&failed), Arc::clone(&stop), ports.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let port = ports[n % ports.len()];
                n += 1;
                let Ok(ch) = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("endpoint").connect_timeout(Duration::from_millis(500)).connect().await else {
                    failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut client = DecisionServiceClient::new(ch);
                for _ in 0..20 {
                    match client.check_child_invitation(child("good", 14)).await {
                        Ok(d) => acked.lock().expect("lock").push(d.into_inner().decision_id),
                        Err(_) => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            break;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let ids = std::mem::take(&mut *acked.lock().expect("lock"));
    (ids, failed.load(std::sync::atomic::Ordering::SeqCst))
}

/// Every acknowledged id is in the record exactly once.
fn assert_all_recorded_once(target: &Target, acked: &[String]) {
    let mut db = Db::open(target).expect("open the record");
    let counts = db.count_ids(acked).expect("count");
    let missing: Vec<&String> = acked.iter().zip(&counts).filter(|(_, n)| **n == 0).map(|(id, _)| id).collect();
    let doubled: Vec<&String> = acked.iter().zip(&counts).filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged decisions are not in the record: {:?}", missing.len(), acked.len(), &missing[..missing.len().min(5)]);
    assert!(doubled.is_empty(), "recorded more than once: {doubled:?}");
    let mut unique = acked.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), acked.len(), "a decision id was handed out twice");
    // Read back whole from this database (SQLite or PostgreSQL): the wording, stored once and
    // referred to, is put back in every decision.
    let recent = db.since(None, chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, 1000).expect("read the record back");
    assert!(!recent.is_empty());
    assert!(recent.iter().all(|r| !r.decision.summary.is_empty() && !r.decision.reasons.is_empty()), "a decision came back without its wording");
}

fn kill9_under_load(target_arg: &str, target: &Target, data: &Path) {
    let rules = fixture();
    let key = data.join("record.key");
    std::fs::write(&key, KEY).expect("key");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let port = free_port();
    let args = vec!["--rules".into(), rules.path().display().to_string(), "--no-watch".into(), "--record".into(), target_arg.into(), "--record-key-file".into(), key.display().to_string()];
    let mut server = Served::spawn(port, args, data.join("serve.log"));
    rt.block_on(server.channel());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = rt.spawn(hammer(vec![port], 8, Arc::clone(&stop)));
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, failed) = rt.block_on(load).expect("load");
    assert!(acked.len() > 20, "too few decisions before the kill to mean anything: {}", acked.len());
    assert!(failed > 0, "the kill happened after the load ended");
    eprintln!("kill -9 under load ({target_arg}): {} acknowledged, {failed} calls failed after the kill", acked.len());
    assert_all_recorded_once(target, &acked);
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_decision_sqlite() {
    let data = tempfile::tempdir().expect("tmp");
    let path = data.path().join("record.sqlite");
    kill9_under_load(&path.display().to_string(), &Target::Sqlite(path.clone()), data.path());
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_decision_postgres() {
    let Some(pg) = PgDatabase::create("sigkill_under_load_loses_no_acknowledged_decision_postgres") else { return };
    let data = tempfile::tempdir().expect("tmp");
    kill9_under_load(&pg.url, &Target::Postgres(pg.url.clone()), data.path());
}

#[test]
fn three_replicas_on_one_postgres_record() {
    let Some(pg) = PgDatabase::create("three_replicas_on_one_postgres_record") else { return };
    let data = tempfile::tempdir().expect("tmp");
    let rules = fixture();
    let key = data.path().join("record.key");
    std::fs::write(&key, KEY).expect("key");
    let args = vec![
        "--rules".to_string(),
        rules.path().display().to_string(),
        "--debounce".into(),
        "100ms".into(),
        "--record".into(),
        pg.url.clone(),
        "--record-key-file".into(),
        key.display().to_string(),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut replicas: Vec<Served> = (0..3).map(|i| Served::spawn(free_port(), args.clone(), data.path().join(format!("replica{i}.log")))).collect();
    for r in &replicas {
        rt.block_on(r.channel());
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = rt.spawn(hammer(ports, 6, Arc::clone(&stop)));
    std::thread::sleep(Duration::from_millis(1500));
    replicas[1].kill9();
    std::thread::sleep(Duration::from_millis(500));
    replicas[1].restart();
    rt.block_on(replicas[1].channel());
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, failed) = rt.block_on(load).expect("load");
    eprintln!("three replicas: {} acknowledged, {failed} calls failed around the kill", acked.len());
    assert!(acked.len() > 30, "too few decisions: {}", acked.len());
    let target = Target::Postgres(pg.url.clone());
    assert_all_recorded_once(&target, &acked);

    // A rules change reaches all three (each watches the same folder).
    let script = rules.path().join("good/child_invitation.rhai");
    let text = std::fs::read_to_string(&script).expect("read");
    std::fs::write(&script, text.replace("facts.age >= 12", "facts.age >= 13")).expect("write");
    let new_revision = cpc_rules::store::read_sources(rules.path(), "good").expect("sources").revision();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let revisions: Vec<String> = replicas
            .iter()
            .map(|r| {
                rt.block_on(async {
                    let mut rules = cpc_rules::grpc::pb::rules_service_client::RulesServiceClient::new(r.channel().await);
                    let list = rules.list_partnerships(pb::ListPartnershipsRequest {}).await.expect("list").into_inner();
                    list.partnerships.into_iter().find(|p| p.id == "good").map(|p| p.revision).unwrap_or_default()
                })
            })
            .collect();
        if revisions.iter().all(|r| *r == new_revision) {
            break;
        }
        assert!(Instant::now() < until, "not every replica serves {new_revision}: {revisions:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The archive agrees: two revisions of `good`, the first replaced, the second live.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut db = Db::open(&target).expect("open");
        let periods = cpc_rules::record::archive::revisions(&mut db, "good").expect("revisions");
        if periods.len() == 2 && periods[1].revision == new_revision {
            assert!(periods[0].replaced_at.is_some() && periods[1].replaced_at.is_none(), "{periods:?}");
            break;
        }
        assert!(Instant::now() < until, "the archive does not show the change once: {periods:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
