//! Policy-lead flows end to end: with a real server running on a copy of York's rules and the
//! file watcher on, a good edit goes live (new revision) within two seconds, and an edit with a
//! syntax error, a misspelt helper, an unknown outcome code or a failing test case is reported
//! with file and line by `cpc-rules check`/`test`, refused by the running server (shown in
//! `ListPartnerships`), and the old revision keeps answering.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::pb::rules_service_client::RulesServiceClient;
use cpc_rules::store::{RuleStore, watch};
use tonic::transport::Channel;

mod support;
use support::copy_dir;

fn york_rules() -> (tempfile::TempDir, PathBuf) {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rules");
    for part in ["calendar", "shared", "york"] {
        copy_dir(&bundled.join(part), &root.join(part));
    }
    std::fs::copy(bundled.join("actions.toml"), root.join("actions.toml")).expect("copy actions");
    std::fs::copy(bundled.join("vocabulary.toml"), root.join("vocabulary.toml")).expect("copy vocabulary");
    (dir, root)
}

fn request(age: i32, wish: pb::ChildWish) -> pb::CheckChildInvitationRequest {
    pb::CheckChildInvitationRequest {
        partnership: "york".into(),
        case_ref: String::new(),
        age: Some(age),
        sufficient_understanding: Some(true),
        wishes_to_attend: wish as i32,
        sensitive_information: Some(false),
    }
}

struct Harness {
    root: PathBuf,
    decisions: DecisionServiceClient<Channel>,
    rules: RulesServiceClient<Channel>,
}

impl Harness {
    fn script(&self) -> PathBuf {
        self.root.join("york/child_invitation.rhai")
    }

    async fn outcome(&mut self) -> (String, String) {
        let d = self.decisions.check_child_invitation(request(17, pb::ChildWish::No)).await.expect("decision").into_inner();
        (d.outcome, d.rules_revision)
    }

    async fn york(&mut self) -> pb::PartnershipInfo {
        let list = self.rules.list_partnerships(pb::ListPartnershipsRequest {}).await.expect("list").into_inner();
        list.partnerships.into_iter().find(|p| p.id == "york").expect("york listed")
    }

    /// Waits (up to 5 s) until York reports a failed attempt newer than `after`.
    async fn wait_for_failure(&mut self, after: (i64, i32)) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(f) = self.york().await.last_failure {
                if stamp(&f) > after {
                    return f.diagnostics;
                }
            }
            assert!(Instant::now() < deadline, "the bad edit was not reported within 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn stamp(f: &pb::ReloadFailure) -> (i64, i32) {
    f.at.as_ref().map_or((0, 0), |t| (t.seconds, t.nanos))
}

fn cli(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpc-rules")).args(args).arg("--rules").arg(root).arg("york").output().expect("run cpc-rules");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A rule a policy lead adds at the top of York's child invitation script, with its test case.
const OVERRIDE_RULE: &str = r#"if facts.age == 17 && facts.wishes_to_attend == "no" {
    return decide("invite", "Your child will be invited.", [reason("york.child.test-override", "Who is involved?", "A test rule.")], []);
}
"#;
const OVERRIDE_CASE: &str = r#"kind = "child_invitation"
[[case]]
name = "the override rule invites a 17-year-old"
facts = { age = 17, sufficient_understanding = true, wishes_to_attend = "no", sensitive_information = false }
expect = { outcome = "invite", reasons = ["york.child.test-override"] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_go_live_or_are_refused_while_the_old_revision_keeps_answering() {
    let (_dir, root) = york_rules();
    let store = Arc::new(RuleStore::load(&root, Limits::default()).unwrap_or_else(|r| panic!("{r:?}")));
    let _watch = watch::spawn(Arc::clone(&store), Duration::from_millis(100)).expect("watch");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cpc_rules::grpc::server::serve(listener, Arc::clone(&store), async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut h = Harness { root: root.clone(), decisions: DecisionServiceClient::new(channel.clone()), rules: RulesServiceClient::new(channel) };

    let (before, rev1) = h.outcome().await;
    assert_eq!(before, "represent_views");
    let original = std::fs::read_to_string(h.script()).expect("read script");

    // 1. A good edit (script and its test case) is live within two seconds, with a new revision.
    std::fs::write(root.join("york/tests/zz_override.toml"), OVERRIDE_CASE).expect("write case");
    std::fs::write(h.script(), format!("{OVERRIDE_RULE}{original}")).expect("write script");
    let edited_at = Instant::now();
    let rev2 = loop {
        let (outcome, rev) = h.outcome().await;
        if outcome == "invite" {
            break rev;
        }
        assert!(edited_at.elapsed() < Duration::from_secs(2), "the edit was not live within 2 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_ne!(rev2, rev1);
    assert_eq!(h.york().await.revision, rev2);
    let good = std::fs::read_to_string(h.script()).expect("read");
    let mut last_failure_at = (0, 0);

    // 2. Broken edits: each is reported by check/test with file and line, refused by the
    //    server, and the last good revision keeps answering.
    let cases: [(&str, String, &str); 3] = [
        ("syntax error", format!("{good}\nlet = ;\n"), "york/child_invitation.rhai:"),
        ("misspelt helper", format!("let r0 = reasn(\"a\", \"Who is involved?\", \"b\");\n{good}"), "did you mean `reason`?"),
        ("unknown outcome", format!("if facts.age == 16 {{ return decide(\"invitee\", \"S.\", [], []); }}\n{good}"), "did you mean `invite`?"),
    ];
    for (what, text, needle) in cases {
        std::fs::write(h.script(), &text).expect("write");
        let (code, out) = cli(&root, &["check"]);
        assert_eq!(code, 1, "{what}: check exits 1\n{out}");
        assert!(out.contains("york/child_invitation.rhai:") && out.contains(needle), "{what}: check names file and line\n{out}");
        let diagnostics = h.wait_for_failure(last_failure_at).await;
        assert!(diagnostics.iter().any(|d| d.contains("york/child_invitation.rhai:") && d.contains(needle)), "{what}: {diagnostics:?}");
        last_failure_at = stamp(&h.york().await.last_failure.expect("failure"));
        assert_eq!(h.outcome().await, ("invite".to_string(), rev2.clone()), "{what}: old revision keeps answering");
    }

    // 3. A failing test case: `test` names the case file and line; the server refuses it.
    std::fs::write(h.script(), &good).expect("restore");
    std::fs::write(root.join("york/tests/zz_override.toml"), OVERRIDE_CASE.replace("outcome = \"invite\"", "outcome = \"invite_part\"")).expect("write case");
    let (code, out) = cli(&root, &["test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("york/tests/zz_override.toml:2") && out.contains("expected `invite_part`, got `invite`"), "{out}");
    let diagnostics = h.wait_for_failure(last_failure_at).await;
    assert!(diagnostics.iter().any(|d| d.contains("zz_override.toml:2")), "{diagnostics:?}");
    assert_eq!(h.outcome().await, ("invite".to_string(), rev2.clone()));

    // 4. Putting it right goes live again, and the failure is cleared.
    std::fs::write(root.join("york/tests/zz_override.toml"), OVERRIDE_CASE).expect("write case");
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.york().await.last_failure.is_some() {
        assert!(Instant::now() < deadline, "the fix did not clear the failure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out) = cli(&root, &["test"]);
    assert_eq!(code, 0, "{out}");

    let _ = stop.send(());
    let _ = server.await;
}
