//! Hostile or broken scripts: every failure is a named error within its budget, and good requests keep being served.

use super::*;

/// What each hostile kind must be answered with: the `ErrorInfo` reasons allowed, and whether
/// the engine knows the line (then `file:line:col` is in the message).
fn expected(kind: &str) -> (&'static [&'static str], Option<usize>) {
    match kind {
        "endless_loop" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(3)),
        "deep_recursion" => (&["SCRIPT_LIMIT"], Some(3)),
        "huge_string" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(3)),
        "huge_array" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(3)),
        "huge_map" => (&["SCRIPT_LIMIT", "SCRIPT_TIMEOUT"], Some(4)),
        "throws" => (&["SCRIPT_RUNTIME"], Some(3)),
        "throws_facts" => (&["SCRIPT_RUNTIME"], Some(2)),
        "wrong_shape" | "unknown_outcome" => (&["SCRIPT_BAD_RESULT"], None),
        "dynamic_call" => (&["SCRIPT_RUNTIME"], Some(3)),
        other => panic!("no expectation for {other}"),
    }
}

pub(crate) fn hostile_request(kind: &str) -> pb::EvaluateRequest {
    evaluate("hostile", kind, facts(&[("name", V::StringValue("read_file".into()))]))
}

fn assert_script_failure(kind: &str, status: &tonic::Status) {
    assert_eq!(status.code(), Code::Internal, "{kind}: {status:?}");
    let (reasons, line) = expected(kind);
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("{kind}: ErrorInfo: {status:?}"));
    assert!(reasons.contains(&info.reason.as_str()), "{kind}: reason {} not in {reasons:?}: {}", info.reason, status.message());
    let file = format!("hostile/{kind}.rhai");
    assert_eq!(info.metadata.get("file"), Some(&file), "{kind}: {status:?}");
    match line {
        Some(line) => {
            assert_eq!(info.metadata.get("line").map(String::as_str), Some(line.to_string().as_str()), "{kind}: {}", status.message());
            let column = info.metadata.get("column").unwrap_or_else(|| panic!("{kind}: a column: {status:?}"));
            assert!(status.message().contains(&format!("{file}:{line}:{column}")), "{kind}: {}", status.message());
        }
        None => assert!(status.message().contains(&file), "{kind}: {}", status.message()),
    }
}

#[tokio::test]
async fn every_hostile_script_is_internal_naming_file_and_position_within_its_budget() {
    let rules = fixture();
    let server = start(load(rules.path(), Limits::default()), ServerOptions::default(), false).await;
    let mut client = server.decisions().await;
    for (kind, _) in HOSTILE {
        let started = Instant::now();
        let status = client.evaluate(hostile_request(kind)).await.expect_err(&format!("{kind} must not decide"));
        let took = started.elapsed();
        assert_script_failure(kind, &status);
        // The budget is 50 ms; allow for a slow CI machine, but never a hang.
        assert!(took < Duration::from_secs(2), "{kind} took {took:?}");
        eprintln!("{kind:>16}: {} in {took:?}: {}", reason(&status), status.message());
    }
    // The unknown outcome is named in the message.
    let status = client.evaluate(hostile_request("unknown_outcome")).await.expect_err("no decision");
    assert!(status.message().contains("maybe"), "{}", status.message());
    // The same partnership's well-behaved kind still decides.
    let d = client.check_child_invitation(child("hostile", 14)).await.expect("hostile/child_invitation decides").into_inner();
    assert_eq!(d.outcome, "invite");
}

#[tokio::test]
async fn the_wall_clock_budget_stops_a_loop_even_without_an_operations_limit() {
    let rules = fixture();
    let limits = Limits { max_operations: 0, ..Limits::default() };
    let budget = limits.cpu_budget;
    let server = start(load(rules.path(), limits), ServerOptions::default(), false).await;
    let mut client = server.decisions().await;
    let started = Instant::now();
    let status = client.evaluate(hostile_request("endless_loop")).await.expect_err("the loop is stopped");
    let took = started.elapsed();
    assert_eq!(reason(&status), "SCRIPT_TIMEOUT", "{status:?}");
    assert!(status.message().contains("hostile/endless_loop.rhai:3:"), "{}", status.message());
    assert!(took >= budget, "stopped after {took:?}, before its budget");
    assert!(took < budget + Duration::from_secs(2), "stopped after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_requests_are_served_while_hostile_scripts_run() {
    let rules = fixture();
    let options = ServerOptions { max_queue_wait: Duration::from_secs(10), max_queued_decisions: 1000, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let bad_channel = server.channel().await;
    let good_channel = server.channel().await;

    let mut bad = Vec::new();
    for round in 0..4 {
        for (kind, _) in HOSTILE {
            let mut c = DecisionServiceClient::new(bad_channel.clone());
            let kind = *kind;
            bad.push(tokio::spawn(async move {
                let _ = round;
                (kind, c.evaluate(hostile_request(kind)).await)
            }));
        }
    }
    let mut good = Vec::new();
    for i in 0..40 {
        // Both partnerships: `good`, and the hostile partnership's own well-behaved kind.
        let partnership = if i % 2 == 0 { "good" } else { "hostile" };
        let age = 8 + (i % 8);
        let mut c = DecisionServiceClient::new(good_channel.clone());
        good.push(tokio::spawn(async move { (age, c.check_child_invitation(child(partnership, age)).await) }));
    }
    for g in good {
        let (age, result) = g.await.expect("task");
        let d = result.unwrap_or_else(|s| panic!("a good request failed while hostile scripts ran: {s:?}")).into_inner();
        assert_eq!(d.outcome, if age >= 12 { "invite" } else { "represent_views" }, "age {age}");
    }
    for b in bad {
        let (kind, result) = b.await.expect("task");
        assert_script_failure(kind, &result.expect_err("no decision"));
    }
}

/// Writes `script` as `hostile/<kind>.rhai` (declaring the kind) and asks the running server to
/// reload: the set must be refused naming the file and line, and the old revision keep serving.
async fn refused_on_reload(server: &support::TestServer, root: &std::path::Path, kind: &str, script: &str, admin: &str) -> Vec<String> {
    let toml = root.join("hostile").join("partnership.toml");
    let meta = std::fs::read_to_string(&toml).expect("read partnership.toml");
    if !meta.contains(&format!("[custom_kinds.{kind}]")) {
        std::fs::write(&toml, format!("{meta}\n[custom_kinds.{kind}]\noutcomes = [\"ok\"]\n")).expect("declare kind");
    }
    let file = root.join("hostile").join(format!("{kind}.rhai"));
    std::fs::write(&file, script).expect("write script");
    let mut rules = server.rules().await;
    let r = rules
        .reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec!["hostile".into()] }, admin))
        .await
        .expect("ReloadRules")
        .into_inner();
    std::fs::remove_file(&file).expect("remove script");
    assert_eq!(r.refused.len(), 1, "{kind}: {r:?}");
    r.refused[0].problems.clone()
}

#[tokio::test]
async fn scripts_cannot_read_files_env_or_network_or_use_eval() {
    const ADMIN: &str = "admin-token-for-tests-0123456789";
    let rules = fixture();
    let options = ServerOptions {
        access: cpc_rules::grpc::auth::AccessPolicy { admin_token: Some(cpc_rules::grpc::auth::Secret::new(ADMIN).expect("token")), ..Default::default() },
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let mut client = server.decisions().await;

    // Calls that get past the static checks (the name is only known at run time) find nothing:
    // no function reads files, the environment or the network, and `eval` cannot be reached.
    for name in ["read_file", "open", "File", "env", "getenv", "system", "exec", "command", "http_get", "connect", "socket", "eval", "import"] {
        let req = evaluate("hostile", "dynamic_call", facts(&[("name", V::StringValue(name.into()))]));
        let status = client.evaluate(req).await.expect_err(&format!("{name} is not callable"));
        assert_eq!(status.code(), Code::Internal, "{name}: {status:?}");
        assert!(status.message().contains("hostile/dynamic_call.rhai"), "{name}: {}", status.message());
    }

    // Written directly, they are refused when the rules are loaded, with file and position, and
    // the last good revision keeps serving.
    let before = client.check_child_invitation(child("hostile", 14)).await.expect("decides").into_inner().rules_revision;
    let attempts: [(&str, &str, &str); 5] = [
        ("reads_file", "let text = read_file(\"/etc/passwd\");\ndecide(\"ok\", text, [], [])\n", "hostile/reads_file.rhai:1:"),
        ("reads_env", "let home = env(\"HOME\");\ndecide(\"ok\", home, [], [])\n", "hostile/reads_env.rhai:1:"),
        ("opens_socket", "let s = connect(\"127.0.0.1:22\");\ndecide(\"ok\", \"x\", [], [])\n", "hostile/opens_socket.rhai:1:"),
        ("uses_eval", "let x = eval(\"40 + 2\");\ndecide(\"ok\", \"x\", [], [])\n", "hostile/uses_eval.rhai:1:"),
        ("runs_process", "\nlet out = system(\"id\");\ndecide(\"ok\", out, [], [])\n", "hostile/runs_process.rhai:2:"),
    ];
    for (kind, script, position) in attempts {
        let problems = refused_on_reload(&server, rules.path(), kind, script, ADMIN).await;
        assert!(problems.iter().any(|p| p.starts_with(position)), "{kind}: {problems:?}");
    }

    // `import` either fails to load or fails at run time: the module resolver finds nothing.
    let toml = rules.path().join("hostile").join("partnership.toml");
    let meta = std::fs::read_to_string(&toml).expect("read");
    std::fs::write(&toml, format!("{meta}\n[custom_kinds.imports]\noutcomes = [\"ok\"]\n")).expect("declare");
    std::fs::write(
        rules.path().join("hostile").join("imports.rhai"),
        format!("import \"/etc/passwd\" as p;\ndecide(\"ok\", \"x\", [reason(\"hostile.imports.i\", \"{}\", \"x\")], [])\n", support::SECTION),
    )
    .expect("write");
    let mut rules_client = server.rules().await;
    let r = rules_client
        .reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec!["hostile".into()] }, ADMIN))
        .await
        .expect("reload")
        .into_inner();
    if r.refused.is_empty() {
        let status = client.evaluate(evaluate("hostile", "imports", facts(&[]))).await.expect_err("import fails");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("hostile/imports.rhai:1:"), "{}", status.message());
        eprintln!("import fails at run time: {}", status.message());
    } else {
        assert!(r.refused[0].problems.iter().any(|p| p.starts_with("hostile/imports.rhai:1:")), "{r:?}");
        eprintln!("import is refused at load: {:?}", r.refused[0].problems);
        let after = client.check_child_invitation(child("hostile", 14)).await.expect("still decides").into_inner().rules_revision;
        assert_eq!(after, before, "the last good revision keeps serving");
    }
}
