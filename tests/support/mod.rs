//! Shared by the integration tests (grpc, reliability, privacy, reload): rules folders of their
//! own (so edits to the bundled rules cannot make them flaky) and a real server on `127.0.0.1:0`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::pb::rules_service_client::RulesServiceClient;
use cpc_rules::grpc::server::{ServerOptions, serve_on};
use cpc_rules::store::RuleStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// The section every fixture reason cites.
pub const SECTION: &str = "Who is involved?";

/// The bundled rules folder.
pub fn bundled_rules() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    std::fs::write(path, text).expect("write fixture file");
}

/// Copies a folder tree (rules folders for tests that edit or extend them).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy file");
        }
    }
}

fn partnership_toml(id: &str, custom: &[&str], outcomes: &str) -> String {
    let mut s = format!(
        "id = \"{id}\"\nname = \"{id} (test fixture)\"\n\n[[documents]]\ntitle = \"Fixture Guide\"\nsource = \"fixture.md\"\nsections = [\"{SECTION}\"]\n"
    );
    for kind in custom {
        s.push_str(&format!(
            "\n[custom_kinds.{kind}]\noutcomes = {outcomes}\nfacts = [{{ name = \"ms\", type = \"int\", min = 0, max = 100000 }}, {{ name = \"name\", type = \"text\", max_len = 200 }}, {{ name = \"child_name\", type = \"text\", max_len = 200 }}]\n"
        ));
    }
    s
}

/// `good/child_invitation.rhai`: invites children of 12 or over with understanding.
pub const GOOD_CHILD: &str = r#"// Fixture: older children with understanding are invited.
if facts.age >= 12 && facts.sufficient_understanding {
return decide("invite", "The child is invited.", [reason("good.child.older", "Who is involved?", "Older children are invited.")], []);
}
decide("represent_views", "The child's views are shared.", [reason("good.child.younger", "Who is involved?", "Younger children's views are shared.")], [])
"#;

/// `good/slow.rhai`: a custom kind that is busy for about `facts.ms` milliseconds of CPU time
/// (so at least that long in wall-clock time), then decides (for load and deadline tests; it
/// needs a store with a larger budget). Scripts cannot read a clock, so the busy loop is
/// calibrated once against this machine's engine: see [`loop_iterations_per_ms`].
pub fn good_slow() -> String {
    format!(
        "// Fixture: busy for about facts.ms milliseconds of CPU, then done.\nlet n = facts.ms * {:.1};\nlet i = 0.0;\nwhile i < n {{ i += 1.0; }}\n\
         decide(\"done\", \"Done.\", [reason(\"good.slow.done\", \"Who is involved?\", \"Fixture rule.\")], [])\n",
        loop_iterations_per_ms()
    )
}

/// Iterations of [`good_slow`]'s loop one millisecond of CPU runs, measured once per test binary.
pub fn loop_iterations_per_ms() -> f64 {
    static PER_MS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PER_MS.get_or_init(|| {
        let calendar = cpc_rules::calendar::Calendar::from_toml(&std::fs::read_to_string(bundled_rules().join("calendar/bank-holidays.toml")).expect("calendar")).expect("calendar");
        let mut engine = cpc_rules::engine::build_engine(&slow_limits());
        cpc_rules::engine::helpers::register(&mut engine, Arc::new(calendar));
        let n = 200_000;
        let started = cpc_rules::engine::sandbox::thread_cpu_time();
        engine.run(&format!("let i = 0.0; while i < {n}.0 {{ i += 1.0; }}")).expect("calibration loop");
        let ms = (cpc_rules::engine::sandbox::thread_cpu_time() - started).as_secs_f64() * 1000.0;
        f64::from(n) / ms.max(0.001)
    })
}

/// The hostile custom kinds and their scripts. Each is a whole script; where the engine
/// knows a position, the error names it (line numbers are 1-based in the file).
pub const HOSTILE: &[(&str, &str)] = &[
    ("endless_loop", "// An endless loop.\nlet n = 0;\nloop { n += 1; }\n"),
    ("deep_recursion", "// Endless recursion.\nfn down(n) { down(n + 1) }\ndown(0)\n"),
    ("huge_string", "// A string that doubles for ever.\nlet s = \"x\";\nloop { s += s; }\n"),
    ("huge_array", "// An array that grows for ever.\nlet a = [];\nloop { a.push(1); }\n"),
    ("huge_map", "// A map that grows for ever.\nlet m = #{};\nlet i = 0;\nloop { m = #{ a: m, b: i }; i += 1; }\n"),
    ("throws", "// Throws.\n\nthrow \"the rules broke\";\n"),
    ("throws_facts", "// Throws with a fact in the message.\nthrow `bad name: ${facts.name}`;\n"),
    ("wrong_shape", "// Returns a number, not a decision.\n42\n"),
    (
        "unknown_outcome",
        "// Returns an outcome built at run time, so no static check sees it.\nlet o = \"mayb\" + \"e\";\ndecide(o, \"Maybe.\", [reason(\"hostile.unknown_outcome.r\", \"Who is involved?\", \"Fixture rule.\")], [])\n",
    ),
    (
        "dynamic_call",
        "// Calls a function chosen by the request: nothing outside the helpers exists.\nlet f = Fn(facts.name);\nf.call(\"/etc/passwd\")\n",
    ),
];

/// A rules folder with the bundled actions and calendar (no shared helpers, which are being
/// edited elsewhere) and two partnerships:
///
/// - `good`: `child_invitation` (see [`GOOD_CHILD`]), trivial `plan_type` and `timescales`
///   (for fact validation) and the custom kind `slow` ([`good_slow`]);
/// - `hostile`: one custom kind per entry of [`HOSTILE`] (outcomes `ok`), plus a well-behaved
///   `child_invitation`, to show the rest of a partnership keeps working.
pub fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let bundled = bundled_rules();
    std::fs::copy(bundled.join("actions.toml"), root.join("actions.toml")).expect("copy actions.toml");
    std::fs::copy(bundled.join("vocabulary.toml"), root.join("vocabulary.toml")).expect("copy vocabulary.toml");
    copy_dir(&bundled.join("calendar"), &root.join("calendar"));

    let good = root.join("good");
    write(&good.join("partnership.toml"), &partnership_toml("good", &["slow"], "[\"done\"]"));
    write(&good.join("child_invitation.rhai"), GOOD_CHILD);
    write(&good.join("slow.rhai"), &good_slow());
    write(
        &good.join("plan_type.rhai"),
        &format!("decide(\"no_plan\", \"No plan follows.\", [reason(\"good.plan.fixture\", \"{SECTION}\", \"Fixture rule.\")], [])\n"),
    );
    write(
        &good.join("complaint_eligibility.rhai"),
        &format!("decide(\"eligible\", \"Eligible.\", [reason(\"good.complaint.fixture\", \"{SECTION}\", \"Fixture rule.\")], [])\n"),
    );
    write(
        &good.join("timescales.rhai"),
        &format!("decide(\"on_track\", \"On track.\", [reason(\"good.timescales.fixture\", \"{SECTION}\", \"Fixture rule.\")], [])\n"),
    );
    write(
        &good.join("tests").join("child_invitation.toml"),
        "kind = \"child_invitation\"\n\n[[case]]\nname = \"a 14-year-old is invited\"\nfacts = { age = 14, sufficient_understanding = true, wishes_to_attend = \"yes\", sensitive_information = false }\nexpect = { outcome = \"invite\", reasons = [\"good.child.older\"] }\n",
    );

    let hostile = root.join("hostile");
    let kinds: Vec<&str> = HOSTILE.iter().map(|(k, _)| *k).collect();
    write(&hostile.join("partnership.toml"), &partnership_toml("hostile", &kinds, "[\"ok\"]"));
    for (kind, script) in HOSTILE {
        write(&hostile.join(format!("{kind}.rhai")), script);
    }
    write(&hostile.join("child_invitation.rhai"), &GOOD_CHILD.replace("good.child", "hostile.child"));
    dir
}

/// Limits for load tests: the `slow` kind may run for seconds.
pub fn slow_limits() -> Limits {
    Limits { max_operations: 0, cpu_budget: Duration::from_secs(10), ..Limits::default() }
}

/// Loads `rules` under `limits`, panicking with every problem if they do not load.
pub fn load(rules: &Path, limits: Limits) -> Arc<RuleStore> {
    match RuleStore::load(rules, limits) {
        Ok(s) => Arc::new(s),
        Err(refusals) => {
            let lines: Vec<String> = refusals.iter().flat_map(|r| r.lines()).collect();
            panic!("rules at {} did not load:\n{}", rules.display(), lines.join("\n"));
        }
    }
}

/// A server running in the background, stopped by [`TestServer::stop`] (or on drop).
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub store: Arc<RuleStore>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A new plaintext connection to the server.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the test server")
    }

    pub async fn decisions(&self) -> DecisionServiceClient<Channel> {
        DecisionServiceClient::new(self.channel().await)
    }

    pub async fn rules(&self) -> RulesServiceClient<Channel> {
        RulesServiceClient::new(self.channel().await)
    }

    /// Begins shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for the server to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        match self.handle.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(15), h).await.expect("server stops within 15 s").expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Serves `store` on an ephemeral localhost port with `options` (and metrics on another
/// ephemeral port when `metrics` is set).
pub async fn start(store: Arc<RuleStore>, options: ServerOptions, metrics: bool) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    let metrics_listener = if metrics { Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind metrics")) } else { None };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr().expect("metrics address"));
    let (tx, rx) = oneshot::channel::<()>();
    let served = Arc::clone(&store);
    let handle = tokio::spawn(async move {
        serve_on(listener, metrics_listener, served, &options, async {
            let _ = rx.await;
        })
        .await
    });
    TestServer { addr, metrics_addr, store, shutdown: Some(tx), handle: Some(handle) }
}


/// A well-formed child invitation request.
pub fn child(partnership: &str, age: i32) -> cpc_rules::grpc::pb::CheckChildInvitationRequest {
    cpc_rules::grpc::pb::CheckChildInvitationRequest {
        partnership: partnership.into(),
        case_ref: "CASE-0001".into(),
        age: Some(age),
        sufficient_understanding: Some(true),
        wishes_to_attend: cpc_rules::grpc::pb::ChildWish::Yes as i32,
        sensitive_information: Some(false),
    }
}

/// A `Struct` of facts.
pub fn facts(fields: &[(&str, prost_types::value::Kind)]) -> prost_types::Struct {
    prost_types::Struct { fields: fields.iter().map(|(k, v)| (k.to_string(), prost_types::Value { kind: Some(v.clone()) })).collect() }
}

/// An `Evaluate` request.
pub fn evaluate(partnership: &str, kind: &str, f: prost_types::Struct) -> cpc_rules::grpc::pb::EvaluateRequest {
    cpc_rules::grpc::pb::EvaluateRequest { partnership: partnership.into(), kind: kind.into(), facts: Some(f), case_ref: "CASE-0001".into() }
}
