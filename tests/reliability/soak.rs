//! Soak: a sustained mixed load with no wrong answers and bounded memory.

use super::*;
#[allow(unused_imports)]
use crate::{load::scrape, scripts::hostile_request};

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Drives the server past its capacity for `duration` from many connections and asserts every
/// answer is either the right decision (same facts, same outcome) or the documented shedding.
async fn soak(duration: Duration) {
    let rules = fixture();
    let options = ServerOptions {
        max_concurrent_decisions: 4,
        max_queued_decisions: 16,
        max_queue_wait: Duration::from_millis(100),
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), Limits::default()), options, true).await;
    let rss_before = resident_kib();
    let ok = Arc::new(AtomicUsize::new(0));
    let shed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + duration;
    const MAX_CALLS: usize = 500_000;
    let mut workers = Vec::new();
    for conn in 0..8 {
        let ch = server.channel().await;
        for w in 0..8 {
            let (ch, ok, shed, sent) = (ch.clone(), Arc::clone(&ok), Arc::clone(&shed), Arc::clone(&sent));
            workers.push(tokio::spawn(async move {
                let mut c = DecisionServiceClient::new(ch);
                let mut outcomes: BTreeMap<(i32, bool), String> = BTreeMap::new();
                let mut i: i32 = conn * 8 + w;
                while Instant::now() < stop_at && sent.fetch_add(1, Ordering::Relaxed) < MAX_CALLS {
                    i += 1;
                    let age = i % 18;
                    let understanding = i % 3 != 0;
                    let mut req = child("good", age);
                    req.sufficient_understanding = Some(understanding);
                    match c.check_child_invitation(req).await {
                        Ok(d) => {
                            let d = d.into_inner();
                            let expected = if age >= 12 && understanding { "invite" } else { "represent_views" };
                            assert_eq!(d.outcome, expected, "wrong decision for age {age}");
                            let first = outcomes.entry((age, understanding)).or_insert_with(|| d.outcome.clone());
                            assert_eq!(*first, d.outcome, "same facts, different outcome");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            shed.fetch_add(1, Ordering::Relaxed);
                            // Back off as a well-behaved client does.
                            let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay).unwrap_or(Duration::from_millis(10));
                            tokio::time::sleep(retry.min(Duration::from_millis(20))).await;
                        }
                        Err(status) => panic!("an undocumented error under load: {status:?}"),
                    }
                }
            }));
        }
    }
    for w in workers {
        w.await.expect("worker");
    }
    let rss_after = resident_kib();
    let (ok, shed) = (ok.load(Ordering::Relaxed), shed.load(Ordering::Relaxed));
    let (_, metrics) = scrape(&server, "/metrics").await;
    eprintln!(
        "soak {duration:?}: {ok} decisions, {shed} shed (RESOURCE_EXHAUSTED); resident memory before {} KiB, after {} KiB",
        rss_before.map_or("?".into(), |v| v.to_string()),
        rss_after.map_or("?".into(), |v| v.to_string()),
    );
    for line in metrics.lines().filter(|l| l.starts_with("cpc_shed_total") || l.starts_with("cpc_decisions_total")) {
        eprintln!("  {line}");
    }
    assert!(ok > 0, "some decisions were made");
    // Nothing is left running or queued once the load stops.
    assert!(metrics.contains("cpc_decisions_queued 0") && metrics.contains("cpc_decisions_running 0"), "{metrics}");
    server.stop().await.expect("clean shutdown after the soak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak(Duration::from_secs(3)).await;
}

/// The long soak: `cargo test --test reliability soak_long -- --ignored --nocapture`
/// (`CPC_SOAK_SECS` sets the length; 60 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run explicitly"]
async fn soak_long() {
    let secs = std::env::var("CPC_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    soak(Duration::from_secs(secs)).await;
}

/// Sends `bytes` as one gRPC message to `path` over a raw HTTP/2 connection (no protobuf
/// encoding on this side, so the bytes can be anything) and returns the server's status.
async fn raw_bytes_call(addr: std::net::SocketAddr, path: &str, bytes: &[u8]) -> tonic::Status {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    let mut frame = vec![0u8];
    frame.extend(u32::try_from(bytes.len()).expect("small").to_be_bytes());
    frame.extend(bytes);
    let _ = body.send_data(frame.into(), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer within 10 s").expect("response");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut stream = response.into_body();
    while let Some(chunk) = stream.data().await {
        chunk.expect("data");
    }
    let trailers = stream.trailers().await.expect("trailers").expect("grpc trailers");
    tonic::Status::from_header_map(&trailers).expect("grpc-status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument_with_details_never_internal() {
    use prost::Message as _;
    let rules = fixture();
    let server = start(load(rules.path(), Limits::default()), ServerOptions::default(), true).await;
    let mut deep = facts(&[("leaf", V::BoolValue(true))]);
    for _ in 0..40 {
        deep = facts(&[("nested", V::StructValue(deep))]);
    }
    let too_deep = evaluate("good", "child_invitation", deep).encode_to_vec();
    // Field 1 (partnership), length 2, bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    let garbage = vec![0xff; 24];
    let truncated = child("good", 14).encode_to_vec()[..3].to_vec();
    for (what, path, bytes) in [
        ("a Struct nested 40 deep", "/cpc.v1.DecisionService/Evaluate", too_deep),
        ("invalid UTF-8", "/cpc.v1.DecisionService/CheckChildInvitation", not_utf8),
        ("garbage bytes", "/cpc.v1.DecisionService/CheckChildInvitation", garbage),
        ("a truncated message", "/cpc.v1.DecisionService/CheckChildInvitation", truncated),
        ("garbage bytes to the rules service", "/cpc.v1.RulesService/ListPartnerships", vec![0xff; 8]),
    ] {
        let status = raw_bytes_call(server.addr, path, &bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let details = status.get_error_details();
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("MALFORMED_REQUEST"), "{what}: {status:?}");
        assert!(details.bad_request().is_some_and(|b| !b.field_violations.is_empty()), "{what}: {status:?}");
    }
    // The server carries on.
    let d = server.decisions().await.check_child_invitation(child("good", 14)).await.expect("still serving").into_inner();
    assert_eq!(d.outcome, "invite");
}
