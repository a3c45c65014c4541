//! The console and the JSON API through a real HTTP client (reqwest) against a real server on
//! 127.0.0.1:0: decisions and their errors in the protobuf JSON mapping, checked against the
//! served OpenAPI document with `jsonschema`; the console's forms, CSRF protection, login,
//! security headers, and errors tied to their fields; TLS with a certificate made here.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use cpc_rules::engine::Limits;
use cpc_rules::grpc::auth::{AccessPolicy, Secret};
use cpc_rules::grpc::service::Decider;
use cpc_rules::http::ConsoleConfig;
use cpc_rules::store::RuleStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CALLER_TOKEN: &str = "caller-token-0123456789abcdef";

fn store() -> Arc<RuleStore> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    Arc::new(RuleStore::load(root, Limits::default()).unwrap_or_else(|r| panic!("bundled rules refused: {:?}", r.iter().map(|x| x.lines()).collect::<Vec<_>>())))
}

/// A console on 127.0.0.1:0; the server stops when the returned sender is dropped.
async fn start(config: ConsoleConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let scheme = if config.tls.is_some() { "https://localhost" } else { "http://127.0.0.1" };
    tokio::spawn(cpc_rules::http::serve(listener, Decider::new(store(), 4), config, async move {
        let _ = rx.await;
    }));
    (format!("{scheme}:{}", addr.port()), tx)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// A validator for one schema of the served OpenAPI document.
fn validator(doc: &Value, schema: &str) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{schema}"),
        "components": doc["components"].clone(),
    });
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

fn assert_valid(doc: &Value, schema: &str, instance: &Value) {
    let v = validator(doc, schema);
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{schema} does not describe the real response:\n{}\n{instance:#}", errors.join("\n"));
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("the page has a CSRF field") + "name=\"_csrf\" value=\"".len();
    html[at..].split('"').next().expect("value").to_string()
}

async fn openapi(base: &str) -> Value {
    let r = client().get(format!("{base}/v1/openapi.json")).send().await.expect("openapi");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("openapi json")
}

#[tokio::test]
async fn json_decisions_and_errors_match_the_openapi_document() {
    let (base, _stop) = start(ConsoleConfig::default()).await;
    let doc = openapi(&base).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/partnerships/york/decisions/attendance"]["post"].is_object());
    let http = client();

    // A decision: the protobuf JSON mapping, every field of pb::Decision.
    let facts = json!({"role": "parent", "session": "whole", "wishes_to_give_views": true, "intends_to_attend": false});
    assert_valid(&doc, "Facts.attendance", &facts);
    let r = http.post(format!("{base}/v1/partnerships/york/decisions/attendance")).json(&facts).send().await.expect("decide");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let d: Value = r.json().await.expect("json");
    assert_valid(&doc, "Decision", &d);
    let mut wrong = d.clone();
    wrong.as_object_mut().expect("object").remove("decisionId");
    assert!(!validator(&doc, "Decision").is_valid(&wrong), "the schema check is real: a decision without its id fails it");
    assert_eq!(d["partnership"], "york");
    assert!(d["decisionId"].as_str().is_some_and(|s| s.len() == 36));
    assert!(d["decidedAt"].as_str().is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()));
    assert!(d["rulesRevision"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(d["reasons"][0]["citation"]["document"].is_string());

    // Every test case of every partnership: its facts fit the kind's schema in the document.
    let s = store();
    for id in s.ids() {
        let loaded = s.get(&id).expect("loaded");
        for case in loaded.cases.iter().filter(|c| c.expect.invalid_field.is_none()) {
            let path = format!("/v1/partnerships/{id}/decisions/{}", case.kind);
            let reference = doc["paths"][&path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap_or_else(|| panic!("{path} is not in the document"));
            let name = reference.rsplit('/').next().expect("name");
            let v = validator(&doc, name);
            assert!(v.is_valid(&case.facts), "{id} case “{}”: facts do not fit {name}", case.name);
        }
    }

    // A complaint: ground routes in the JSON mapping.
    let complaint = json!({"complainant": "parent", "grounds": [{"category": "plan_decision", "description": "The plan was made without hearing me."}], "stage1_completed": true, "states_criteria_aspects": true, "still_dissatisfied": "The plan.", "solution_sought": "A new conference."});
    let d: Value = http.post(format!("{base}/v1/partnerships/york/decisions/complaint_eligibility")).json(&complaint).send().await.expect("decide").json().await.expect("json");
    assert_valid(&doc, "Decision", &d);
    assert_eq!(d["groundRoutes"][0], json!({"index": 0, "category": "plan_decision", "route": "stage2_panel"}));

    // 404 with did-you-mean and the known ids, as over gRPC.
    let r = http.post(format!("{base}/v1/partnerships/yrok/decisions/attendance")).json(&json!({})).send().await.expect("404");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let e: Value = r.json().await.expect("json");
    assert_valid(&doc, "Error", &e);
    assert_eq!(e["error"]["status"], "NOT_FOUND");
    let info = e["error"]["details"].as_array().expect("details").iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo").expect("ErrorInfo").clone();
    assert_eq!(info["metadata"]["did_you_mean"], "york");
    assert!(info["metadata"]["known"].as_str().expect("known").contains("north-yorkshire"));
    let r = http.post(format!("{base}/v1/partnerships/york/decisions/weather")).json(&json!({})).send().await.expect("404");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // 400 naming the fact the rules read and did not get.
    let r = http.post(format!("{base}/v1/partnerships/york/decisions/attendance")).json(&json!({"role": "parent"})).send().await.expect("400");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.expect("json");
    assert_valid(&doc, "Error", &e);
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(e["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
    assert_eq!(e["error"]["details"][0]["fieldViolations"][0]["field"], "session");

    // 400 for a bad value and for a body that is not a JSON object.
    let r = http.post(format!("{base}/v1/partnerships/york/decisions/child_invitation")).json(&json!({"age": 99})).send().await.expect("400");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["details"][0]["fieldViolations"][0]["field"], "age");
    let r = http.post(format!("{base}/v1/partnerships/york/decisions/attendance")).body("[1,2").send().await.expect("400");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_valid(&doc, "Error", &r.json().await.expect("json"));

    // The partnership list.
    let list: Value = http.get(format!("{base}/v1/partnerships")).send().await.expect("list").json().await.expect("json");
    assert_valid(&doc, "PartnershipList", &list);
    assert_eq!(list["partnerships"].as_array().map(Vec::len), Some(5));
    assert!(list["partnerships"][0]["loadedAt"].as_str().is_some_and(|s| s.ends_with('Z')));
}

#[tokio::test]
async fn console_pages_are_served_with_strict_headers() {
    let (base, _stop) = start(ConsoleConfig::default()).await;
    let http = client();
    for (path, expect) in [
        ("/", "City of York"),
        ("/decide", "Make a decision"),
        ("/decide/york/attendance", "Attendance"),
        ("/admissibility", "Stage 2 admissibility"),
        ("/compare", "Parent will not attend"),
        ("/assumptions", "What the rules assume"),
        ("/decisions", "No decision record is configured"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("page");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().expect("csp").to_string();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let html = r.text().await.expect("html");
        assert!(html.contains(expect), "{path} lacks {expect:?}");
        assert!(html.contains("class=\"skip-link\" href=\"#main\""), "{path} has no skip link");
        assert!(!html.contains("style=") && !html.contains("<style") && !html.contains("<script>"), "{path} has inline style or script");
    }
    let r = http.get(format!("{base}/no/such/page")).send().await.expect("404");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http.get(format!("{base}/static/console.css")).send().await.expect("css");
    assert!(r.headers()["content-type"].to_str().expect("ct").starts_with("text/css"));
}

#[tokio::test]
async fn decision_forms_need_the_csrf_token_and_tie_errors_to_fields() {
    let (base, _stop) = start(ConsoleConfig::default()).await;
    let http = client();
    let page = http.get(format!("{base}/decide/york/attendance")).send().await.expect("form");
    let cookie = page.headers()["set-cookie"].to_str().expect("cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let token = csrf(&page.text().await.expect("html"));

    // Without the token (or with another), nothing is decided.
    let r = http.post(format!("{base}/decide/york/attendance")).form(&[("role", "parent")]).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http.post(format!("{base}/decide/york/attendance")).form(&[("_csrf", "0000"), ("role", "parent")]).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A fact the rules read and were not given: an error tied to its field.
    let r = http.post(format!("{base}/decide/york/attendance")).form(&[("_csrf", token.as_str()), ("role", "parent"), ("session", "")]).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.expect("html");
    assert!(html.contains("There is a problem"), "{html}");
    assert!(html.contains("href=\"#f-session\""), "the summary links to the field");
    assert!(html.contains("id=\"f-session-error\""), "the error sits at the field");
    assert!(html.contains("aria-describedby=\"f-session-hint f-session-error\""), "the field is described by its error");

    // A full form: the decision as a person reads it.
    let r = http
        .post(format!("{base}/decide/york/attendance"))
        .form(&[("_csrf", token.as_str()), ("role", "parent"), ("session", "whole"), ("wishes_to_give_views", "true"), ("intends_to_attend", "false"), ("_action", "decide")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("html");
    assert!(html.contains("Outcome: <strong>Proceed without</strong>"), "{html}");
    assert!(html.contains("Assumption"), "assumptions are marked");
    assert!(html.contains("Rests on: <cite>CYSCP One Minute Guide"), "reasons cite their guide");
}

#[tokio::test]
async fn admissibility_echoes_each_ground_in_the_complainants_words_numbered_from_one() {
    let (base, _stop) = start(ConsoleConfig::default()).await;
    let http = client();
    let page = http.get(format!("{base}/admissibility")).send().await.expect("form").text().await.expect("html");
    assert!(page.contains("name=\"grounds[1].description\""), "two ground rows to start with");
    let token = csrf(&page);
    // A blank first row is dropped; an add-row press keeps what was typed.
    let added = http
        .post(format!("{base}/admissibility"))
        .form(&[("_csrf", token.as_str()), ("_partnership", "york"), ("grounds[0].description", "They shouted <b>at me</b>."), ("_action", "add:grounds")])
        .send()
        .await
        .expect("add")
        .text()
        .await
        .expect("html");
    assert!(added.contains("name=\"grounds[2].description\""));
    assert!(added.contains("They shouted &lt;b&gt;at me&lt;/b&gt;."), "typed words are kept, escaped");
    let r = http
        .post(format!("{base}/admissibility"))
        .form(&[
            ("_csrf", token.as_str()),
            ("_partnership", "york"),
            ("complainant", "parent"),
            ("grounds[0].category", ""),
            ("grounds[0].description", ""),
            ("grounds[1].category", "plan_decision"),
            ("grounds[1].description", "The plan was made without hearing me."),
            ("grounds[2].category", "professional_conduct"),
            ("grounds[2].description", "The social worker was rude to my mother."),
            ("stage1_completed", "true"),
            ("states_criteria_aspects", "true"),
            ("still_dissatisfied", "The plan decision."),
            ("_action", "decide"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("html");
    assert!(html.contains("Stage 2 admissibility: Incomplete"), "{html}");
    assert!(html.contains("<th scope=\"row\">1</th><td><blockquote>The plan was made without hearing me.</blockquote></td>"), "{html}");
    assert!(html.contains("<th scope=\"row\">2</th><td><blockquote>The social worker was rude to my mother.</blockquote></td>"));
    assert!(html.contains("To the Stage 2 complaints panel") && html.contains("To the agency&#39;s own complaints procedure") || html.contains("To the agency's own complaints procedure"));
    assert!(html.contains("A professional&#39;s conduct") || html.contains("A professional's conduct"));
    assert!(html.contains("What the panel may recommend"));
    assert!(html.contains("Solution sought: not given."), "what is missing is listed");
    assert!(html.contains("Complainant</dt><dd>Parent"));
    assert_eq!(html.matches("class=\"outcome outcome-").count(), 1, "the outcome is said once, at the top: {html}");
}

#[tokio::test]
async fn a_caller_token_means_signing_in_and_bearer_tokens_for_the_api() {
    let access = AccessPolicy { caller_token: Some(Secret::new(CALLER_TOKEN).expect("token")), ..AccessPolicy::default() };
    let (base, _stop) = start(ConsoleConfig { access, ..ConsoleConfig::default() }).await;
    let http = client();
    let r = http.get(format!("{base}/")).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");
    let login = http.get(format!("{base}/login")).send().await.expect("login").text().await.expect("html");
    let token = csrf(&login);
    let r = http.post(format!("{base}/login")).form(&[("_csrf", token.as_str()), ("token", "wrong-token-0000000000")]).send().await.expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.post(format!("{base}/login")).form(&[("_csrf", token.as_str()), ("token", CALLER_TOKEN)]).send().await.expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http.get(format!("{base}/")).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("html").contains("Sign out"));

    // The API ignores the session cookie: it needs the bearer token.
    let r = http.get(format!("{base}/v1/partnerships")).send().await.expect("api");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["status"], "UNAUTHENTICATED");
    let r = http.get(format!("{base}/v1/partnerships")).bearer_auth(CALLER_TOKEN).send().await.expect("api");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let tls = cpc_rules::grpc::transport::TlsSettings {
        cert_pem: cert.cert.pem().into_bytes(),
        key_pem: cert.signing_key.serialize_pem().into_bytes(),
        client_ca_pem: None,
        client_cert_optional: false,
    };
    let (base, _stop) = start(ConsoleConfig { tls: Some(tls), ..ConsoleConfig::default() }).await;
    let port = base.rsplit(':').next().expect("port").parse::<u16>().expect("port");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("ca"))
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = http.get(format!("{base}/")).send().await.expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().expect("cookie").to_string();
    assert!(cookie.starts_with("__Host-cpc_session=") && cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn the_console_refuses_to_listen_off_loopback_without_tls_and_a_login() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = cpc_rules::http::serve(listener, Decider::new(store(), 1), ConsoleConfig::default(), async {}).await.expect_err("refused");
    assert!(err.to_string().contains("without TLS"), "{err}");
}

#[tokio::test]
async fn serve_all_runs_the_console_beside_grpc_and_looks_decisions_up_in_the_record() {
    use cpc_rules::grpc::server::{ServerOptions, serve_all};
    use cpc_rules::record::{Record, RecordConfig, Target};
    let dir = tempfile::tempdir().expect("tmp");
    let record = Record::open(RecordConfig::new(Target::Sqlite(dir.path().join("record.sqlite")))).expect("record");
    let options = ServerOptions { record: Some(record), ..ServerOptions::default() };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let console = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = console.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_all(grpc, None, Some(console), store(), &options, async move {
            let _ = rx.await;
        })
        .await
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let r = http.get(format!("{base}/v1/partnerships")).send().await.expect("api");
    assert_eq!(r.status(), StatusCode::OK);

    // A decision over HTTP is in the record: the console finds it by id and replays it.
    let facts = json!({"role": "parent", "session": "whole", "wishes_to_give_views": true, "intends_to_attend": false});
    let d: Value = http.post(format!("{base}/v1/partnerships/york/decisions/attendance")).json(&facts).send().await.expect("decide").json().await.expect("json");
    let id = d["decisionId"].as_str().expect("id").to_string();
    let page = http.get(format!("{base}/decisions?id={id}")).send().await.expect("lookup");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains(&id) && html.contains("Replay with today"), "{html}");
    let r = http.post(format!("{base}/decisions/replay")).form(&[("_csrf", csrf(&html).as_str()), ("id", id.as_str())]).send().await.expect("replay");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("html");
    assert!(html.contains("rules make the same decision"), "replayed: {html}");
    let missing = http.get(format!("{base}/decisions?id=00000000-0000-4000-8000-000000000000")).send().await.expect("lookup");
    assert!(missing.text().await.expect("html").contains("No decision with that id"), "an unknown id is said to be unknown");
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(15), server).await.expect("stops").expect("joins").expect("serves");
}

#[tokio::test]
async fn posts_beyond_the_rate_limits_get_429_with_retry_after() {
    use cpc_rules::grpc::limits::{RateLimit, SharedBucket};
    use cpc_rules::http::limits::HttpLimits;
    let limits = HttpLimits::new(RateLimit::per_second(1000).map(|l| Arc::new(SharedBucket::new(l))), Some(RateLimit { per_second: 1, burst: 2 }));
    let (base, _stop) = start(ConsoleConfig { limits: Arc::new(limits), ..ConsoleConfig::default() }).await;
    let http = client();
    let facts = json!({"role": "parent", "session": "whole", "wishes_to_give_views": true, "intends_to_attend": false});
    let url = format!("{base}/v1/partnerships/york/decisions/attendance");
    for _ in 0..2 {
        assert_eq!(http.post(&url).json(&facts).send().await.expect("decide").status(), StatusCode::OK);
    }
    let r = http.post(&url).json(&facts).send().await.expect("decide");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some(), "Retry-After is set");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    // Reading pages is not limited.
    assert_eq!(http.get(format!("{base}/v1/partnerships")).send().await.expect("list").status(), StatusCode::OK);
    // A console form over the limit gets a page, not JSON.
    let r = http.post(format!("{base}/decide/york/attendance")).form(&[("role", "parent")]).send().await.expect("form");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.expect("html").contains("Too many requests"));
}
