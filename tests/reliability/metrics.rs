//! Metrics: scraped over HTTP.

use super::*;
#[allow(unused_imports)]
use crate::{load::scrape, scripts::hostile_request};

#[tokio::test]
async fn metrics_are_scraped_over_http() {
    use cpc_rules::grpc::auth::{AccessPolicy, Secret};
    const ADMIN: &str = "admin-token-for-tests-0123456789";
    let rules = fixture();
    let options = ServerOptions { access: AccessPolicy { admin_token: Some(Secret::new(ADMIN).expect("token")), ..Default::default() }, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, true).await;
    let mut c = server.decisions().await;
    c.check_child_invitation(child("good", 14)).await.expect("invite");
    c.check_child_invitation(child("good", 14)).await.expect("invite");
    c.check_child_invitation(child("good", 8)).await.expect("represent views");
    c.check_child_invitation(child("good", 30)).await.expect_err("bad age");
    c.evaluate(hostile_request("throws")).await.expect_err("script fails");
    let mut r = server.rules().await;
    r.reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec![] }, ADMIN)).await.expect("reload");
    // A broken edit: the reload is refused and counted.
    std::fs::write(rules.path().join("good").join("child_invitation.rhai"), "let x = ;\n").expect("break");
    let refused = r.reload_rules(with_token(pb::ReloadRulesRequest { partnerships: vec!["good".into()] }, ADMIN)).await.expect("reload").into_inner();
    assert_eq!(refused.refused.len(), 1);

    let (status_line, text) = scrape(&server, "/metrics").await;
    assert!(status_line.contains("200"), "{status_line}");
    let revision = server.store.get("good").expect("good is live").set.revision().to_string();
    for expected in [
        r#"cpc_decisions_total{partnership="good",kind="child_invitation",outcome="invite"} 2"#.to_string(),
        r#"cpc_decisions_total{partnership="good",kind="child_invitation",outcome="represent_views"} 1"#.to_string(),
        r#"cpc_decision_failures_total{partnership="hostile",kind="throws",reason="SCRIPT_RUNTIME"} 1"#.to_string(),
        r#"cpc_rpc_errors_total{method="CheckChildInvitation",code="INVALID_ARGUMENT"} 1"#.to_string(),
        r#"cpc_rpc_errors_total{method="Evaluate",code="INTERNAL"} 1"#.to_string(),
        r#"cpc_decision_duration_seconds_count{partnership="good",kind="child_invitation"} 3"#.to_string(),
        r#"cpc_rpc_duration_seconds_bucket{le="#.to_string(),
        r#"cpc_rule_reloads_total{partnership="good",result="unchanged"} 1"#.to_string(),
        r#"cpc_rule_reloads_total{partnership="hostile",result="unchanged"} 1"#.to_string(),
        r#"cpc_rule_reloads_total{partnership="good",result="refused"} 1"#.to_string(),
        format!(r#"cpc_rules_revision_info{{partnership="good",revision="{revision}"}} 1"#),
        r#"cpc_rules_last_reload_refused{partnership="good"} 1"#.to_string(),
        r#"cpc_rules_last_reload_refused{partnership="hostile"} 0"#.to_string(),
        "cpc_connections_open ".to_string(),
        "cpc_rules_watch_failed 0".to_string(),
        "# EOF".to_string(),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("CASE-0001"), "no case reference in metrics");
    // A watcher that stops working shows in the metrics: hot reload is never silently off.
    server.store.set_watch_problem(Some("inotify queue overflow".into()));
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains("cpc_rules_watch_failed 1"), "{text}");
    let (status_line, _) = scrape(&server, "/other").await;
    assert!(status_line.contains("404"), "{status_line}");
}
