//! Transport security and access: TLS, mutual TLS, bearer tokens and admin credentials.

use super::*;
#[allow(unused_imports)]
use crate::{load::scrape, scripts::hostile_request};

mod pki {
    //! A throw-away PKI made at test time: a CA, a server certificate for `localhost` and
    //! 127.0.0.1, client certificates, and a second ("rogue") CA the server does not trust.

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

    pub struct Ca {
        pub pem: String,
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
    }

    pub fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { pem: issuer.pem(), issuer }
    }

    fn leaf(ca: &Ca, cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.issuer).expect("sign");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    pub fn server(ca: &Ca) -> Leaf {
        leaf(
            ca,
            "cpc-rules test server",
            vec![SanType::DnsName("localhost".try_into().expect("dns")), SanType::IpAddress([127, 0, 0, 1].into())],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client(ca: &Ca, cn: &str) -> Leaf {
        leaf(ca, cn, vec![], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Pki {
    ca: pki::Ca,
    server: pki::Leaf,
    admin: pki::Leaf,
    caller: pki::Leaf,
    rogue: pki::Leaf,
}

fn make_pki() -> Pki {
    let ca = pki::ca("cpc-rules test CA");
    let rogue_ca = pki::ca("rogue CA");
    Pki {
        server: pki::server(&ca),
        admin: pki::client(&ca, "ops.example"),
        caller: pki::client(&ca, "case-system.example"),
        rogue: pki::client(&rogue_ca, "ops.example"),
        ca,
    }
}

fn tls_settings(p: &Pki, mutual: bool, optional: bool) -> cpc_rules::grpc::transport::TlsSettings {
    cpc_rules::grpc::transport::TlsSettings {
        cert_pem: p.server.cert_pem.clone().into_bytes(),
        key_pem: p.server.key_pem.clone().into_bytes(),
        client_ca_pem: mutual.then(|| p.ca.pem.clone().into_bytes()),
        client_cert_optional: optional,
    }
}

/// A TLS connection to `server` trusting the test CA, with an optional client certificate.
async fn tls_channel(server: &support::TestServer, p: &Pki, identity: Option<&pki::Leaf>) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&p.ca.pem)).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Endpoint::from_shared(format!("https://{}", server.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Whether a decision can be made over `channel` (a failed handshake may surface at connect or
/// at the first call).
async fn decides(channel: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
    let ch = channel.map_err(|e| format!("connect: {e}"))?;
    DecisionServiceClient::new(ch).check_child_invitation(child("good", 14)).await.map(|_| ()).map_err(|s| format!("call: {s:?}"))
}

#[tokio::test]
async fn tls_serves_decisions_and_refuses_plaintext_clients() {
    let p = make_pki();
    let rules = fixture();
    let options = ServerOptions { tls: Some(tls_settings(&p, false, false)), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    decides(tls_channel(&server, &p, None).await).await.expect("TLS client decides");
    // Health and reflection work over TLS too.
    let ch = tls_channel(&server, &p, None).await.expect("connect");
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health over TLS");
    // A plaintext client cannot talk to a TLS server.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(decides(plain).await.is_err(), "plaintext to a TLS port must fail");
    // A client that does not trust the server's CA refuses it.
    let other = pki::ca("some other CA");
    let untrusting = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("endpoint")
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&other.pem)).domain_name("localhost"))
        .expect("tls")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(decides(untrusting).await.is_err(), "a client that does not trust the CA must fail");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let p = make_pki();
    let rules = fixture();
    let options = ServerOptions { tls: Some(tls_settings(&p, true, false)), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    decides(tls_channel(&server, &p, Some(&p.caller)).await).await.expect("a client certificate from the CA is accepted");
    let without = decides(tls_channel(&server, &p, None).await).await;
    assert!(without.is_err(), "no client certificate must be refused: {without:?}");
    let rogue = decides(tls_channel(&server, &p, Some(&p.rogue)).await).await;
    assert!(rogue.is_err(), "a certificate from another CA must be refused: {rogue:?}");
}

#[tokio::test]
async fn admin_client_certificates_may_reload_and_others_may_not() {
    let p = make_pki();
    let rules = fixture();
    let options = ServerOptions {
        tls: Some(tls_settings(&p, true, true)),
        access: cpc_rules::grpc::auth::AccessPolicy { admin_client_names: vec!["ops.example".into()], ..Default::default() },
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let reload = |ch: Channel| async move { RulesServiceClient::new(ch).reload_rules(pb::ReloadRulesRequest { partnerships: vec![] }).await };

    // With the client certificate optional, a client without one may decide (no caller token
    // is configured) but not reload.
    let anonymous = tls_channel(&server, &p, None).await.expect("connect without a certificate");
    decides(Ok(anonymous.clone())).await.expect("decides without a certificate");
    assert_eq!(reload(anonymous).await.expect_err("no credential").code(), Code::Unauthenticated);
    // A certificate from the CA that is not an admin: PERMISSION_DENIED.
    let caller = tls_channel(&server, &p, Some(&p.caller)).await.expect("connect");
    assert_eq!(reload(caller).await.expect_err("not an admin").code(), Code::PermissionDenied);
    // The admin certificate (CN ops.example) may reload.
    let admin = tls_channel(&server, &p, Some(&p.admin)).await.expect("connect");
    let r = reload(admin).await.expect("the admin reloads").into_inner();
    assert_eq!(r.unchanged.len(), 2, "{r:?}");
}

#[tokio::test]
async fn bearer_tokens_guard_decisions_and_reloads() {
    use cpc_rules::grpc::auth::{AccessPolicy, Secret};
    const ADMIN: &str = "admin-token-for-tests-0123456789";
    const CALLER: &str = "caller-token-for-tests-0123456789";
    let rules = fixture();
    let options = ServerOptions {
        access: AccessPolicy { admin_token: Some(Secret::new(ADMIN).expect("admin")), caller_token: Some(Secret::new(CALLER).expect("caller")), ..Default::default() },
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, true).await;
    let mut d = server.decisions().await;
    let mut r = server.rules().await;

    // Decisions need the caller token (or the admin one).
    let status = d.check_child_invitation(child("good", 14)).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = d.check_child_invitation(with_token(child("good", 14), "wrong-token-0123456789abcdef")).await.expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!status.message().contains("wrong-token"), "the token is not echoed: {}", status.message());
    d.check_child_invitation(with_token(child("good", 14), CALLER)).await.expect("the caller token decides");
    d.check_child_invitation(with_token(child("good", 14), ADMIN)).await.expect("the admin token decides");
    r.list_partnerships(with_token(pb::ListPartnershipsRequest {}, CALLER)).await.expect("the caller token lists");
    assert_eq!(r.list_partnerships(pb::ListPartnershipsRequest {}).await.expect_err("no token").code(), Code::Unauthenticated);

    // Reloads need the admin token: a caller token is PERMISSION_DENIED.
    let reload = || pb::ReloadRulesRequest { partnerships: vec!["good".into()] };
    assert_eq!(r.reload_rules(reload()).await.expect_err("no token").code(), Code::Unauthenticated);
    assert_eq!(r.reload_rules(with_token(reload(), CALLER)).await.expect_err("caller token").code(), Code::PermissionDenied);
    r.reload_rules(with_token(reload(), ADMIN)).await.expect("the admin token reloads");

    // Health and reflection stay open.
    tonic_health::pb::health_client::HealthClient::new(server.channel().await)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health needs no token");
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut stream = ServerReflectionClient::new(server.channel().await)
            .server_reflection_info(tokio_stream::once(req))
            .await
            .expect("reflection needs no token")
            .into_inner();
        stream.message().await.expect("reflection answer").expect("one answer");
    }
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains(r#"cpc_rpc_errors_total{method="ReloadRules",code="PERMISSION_DENIED"} 1"#), "{text}");
    assert!(!text.contains(CALLER) && !text.contains(ADMIN));
}

#[tokio::test]
async fn plaintext_on_a_public_address_is_refused_unless_allowed() {
    let rules = fixture();
    let store = load(rules.path(), Limits::default());
    // Bound but never connected to: no traffic leaves the machine.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = cpc_rules::grpc::server::serve_with(listener, Arc::clone(&store), &ServerOptions::default(), std::future::ready(()))
        .await
        .expect_err("plaintext on 0.0.0.0 is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("--tls-cert") && msg.contains("--allow-plaintext"), "{msg}");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let allowed = ServerOptions { allow_plaintext: true, ..ServerOptions::default() };
    cpc_rules::grpc::server::serve_with(listener, store, &allowed, std::future::ready(())).await.expect("allowed explicitly");
}

#[test]
fn the_serve_command_refuses_plaintext_on_a_public_address() {
    let rules = fixture();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(["serve", "--addr", "0.0.0.0:0", "--record", "off", "--rules"])
        .arg(rules.path())
        .env_remove("CPC_ALLOW_PLAINTEXT")
        .env_remove("CPC_TLS_CERT")
        .env_remove("CPC_TLS_KEY")
        .output()
        .expect("run cpc-rules serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plaintext gRPC on 0.0.0.0:0"), "{stderr}");
    // A short token is refused too, naming the problem but not the token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpc-rules"))
        .args(["serve", "--addr", "127.0.0.1:0", "--record", "off", "--rules"])
        .arg(rules.path())
        .env("CPC_ADMIN_TOKEN", "short")
        .env_remove("CPC_ADMIN_TOKEN_FILE")
        .output()
        .expect("run cpc-rules serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin token is shorter than 16"), "{stderr}");
}
