//! Privacy of logs: with the default settings no request facts, `case_ref`, made-up fact names
//! or script messages (which may quote facts) reach the logs; with `--log-facts` they do.
//!
//! This is its own test binary because it installs the process-wide log subscriber: a
//! per-thread subscriber misses events whose call sites other tests' threads registered first.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

mod support;

use std::sync::{Arc, OnceLock};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::server::ServerOptions;
use prost_types::value::Kind as V;
use support::{child, evaluate, facts, fixture, load, start};

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged since the last call.
    fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().expect("log buffer"));
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

const SECRET_CASE: &str = "CASE-SECRET-7731";
const SECRET_NAME: &str = "Jane-Secret-Doe";
const SECRET_KEY: &str = "Secret_Surname_Key";

/// Makes requests carrying personal data in every place it could leak from: `case_ref`, fact
/// values, a fact key the caller made up, a script error quoting a fact.
async fn leak_attempts(server: &support::TestServer) {
    let mut c = server.decisions().await;
    let mut ok = child("good", 14);
    ok.case_ref = SECRET_CASE.into();
    c.check_child_invitation(ok).await.expect("decides");
    let mut bad = evaluate(
        "good",
        "child_invitation",
        facts(&[("age", V::NumberValue(14.0)), (SECRET_KEY, V::StringValue(SECRET_NAME.into()))]),
    );
    bad.case_ref = SECRET_CASE.into();
    c.evaluate(bad).await.expect_err("unknown fact");
    let mut throws = evaluate("hostile", "throws_facts", facts(&[("name", V::StringValue(SECRET_NAME.into()))]));
    throws.case_ref = SECRET_CASE.into();
    let status = c.evaluate(throws).await.expect_err("throws");
    assert!(status.message().contains(SECRET_NAME), "the caller gets the script's message: {}", status.message());
}

fn capture() -> &'static Captured {
    static SINK: OnceLock<Captured> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Captured::default();
        let writer = sink.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,cpc_rules=debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        sink
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_personal_data_unless_log_facts_is_on() {
    let sink = capture();
    let rules = fixture();

    let server = start(load(rules.path(), Limits::default()), ServerOptions::default(), false).await;
    leak_attempts(&server).await;
    server.stop().await.expect("stop");
    let logs = sink.take();
    assert!(logs.contains("decision made") && logs.contains("the rules failed"), "logs were captured:\n{logs}");
    for secret in [SECRET_CASE, SECRET_NAME, SECRET_KEY] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs:\n{logs}");
    }

    let options = ServerOptions { log_facts: true, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    leak_attempts(&server).await;
    server.stop().await.expect("stop");
    let logs = sink.take();
    for secret in [SECRET_CASE, SECRET_NAME, SECRET_KEY] {
        assert!(logs.contains(secret), "with --log-facts, `{secret}` is logged:\n{logs}");
    }
}
