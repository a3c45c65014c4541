//! Overload, deadlines and draining: admission, shedding, deadlines, connection limits, graceful shutdown.

use super::*;

fn assert_shed(status: &tonic::Status, why: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some(why), "{status:?}");
    let retry = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(60), "{retry:?}");
}

fn assert_deadline(status: &tonic::Status) {
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

/// Waits until the server reports `n` scripts running (via its metrics), so tests do not race.
async fn until_running(server: &support::TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(server, "/metrics").await.1;
        let running = text.lines().find_map(|l| l.strip_prefix("cpc_decisions_running ")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
        if running >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} scripts never ran:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server reports `n` decisions queued.
async fn until_queued(server: &support::TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(server, "/metrics").await.1;
        let queued = text.lines().find_map(|l| l.strip_prefix("cpc_decisions_queued ")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
        if queued >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} decisions never queued:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET path` on the metrics port: (status line, body).
pub(crate) async fn scrape(server: &support::TestServer, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.metrics_addr.expect("the server serves metrics");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("metrics answer in time").expect("read");
    let text = String::from_utf8(buf).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_decision_queue_sheds_with_resource_exhausted() {
    let rules = fixture();
    let options = ServerOptions {
        max_concurrent_decisions: 1,
        max_queued_decisions: 1,
        max_queue_wait: Duration::from_secs(10),
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), slow_limits()), options, true).await;
    let ch = server.channel().await;
    let mut a = DecisionServiceClient::new(ch.clone());
    let running = tokio::spawn(async move { a.evaluate(slow(700)).await });
    until_running(&server, 1).await;
    let mut b = DecisionServiceClient::new(ch.clone());
    let queued = tokio::spawn(async move { b.check_child_invitation(child("good", 14)).await });
    until_queued(&server, 1).await;

    let mut c = DecisionServiceClient::new(ch.clone());
    for _ in 0..3 {
        let started = Instant::now();
        let status = c.check_child_invitation(child("good", 14)).await.expect_err("the queue is full");
        assert_shed(&status, "DECISION_QUEUE_FULL");
        assert!(started.elapsed() < Duration::from_millis(500), "shed at once, not after waiting: {:?}", started.elapsed());
    }
    assert_eq!(running.await.expect("task").expect("the running decision completes").into_inner().outcome, "done");
    assert_eq!(queued.await.expect("task").expect("the queued decision completes").into_inner().outcome, "invite");
    // With the slot free again, decisions are made.
    assert_eq!(c.check_child_invitation(child("good", 14)).await.expect("decides").into_inner().outcome, "invite");
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains(r#"cpc_shed_total{reason="DECISION_QUEUE_FULL"} 3"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_waits_too_long_for_a_slot_is_shed() {
    let rules = fixture();
    let options = ServerOptions {
        max_concurrent_decisions: 1,
        max_queued_decisions: 10,
        max_queue_wait: Duration::from_millis(150),
        ..ServerOptions::default()
    };
    let server = start(load(rules.path(), slow_limits()), options, true).await;
    let mut a = server.decisions().await;
    let running = tokio::spawn(async move { a.evaluate(slow(1000)).await });
    until_running(&server, 1).await;
    let mut c = server.decisions().await;
    let started = Instant::now();
    let status = c.check_child_invitation(child("good", 14)).await.expect_err("no slot in time");
    let waited = started.elapsed();
    assert_shed(&status, "DECISION_QUEUE_WAIT");
    assert!(waited >= Duration::from_millis(140) && waited < Duration::from_millis(900), "waited {waited:?}");
    running.await.expect("task").expect("the running decision completes");
}

/// Calls `path` with `message` over a raw HTTP/2 connection carrying `grpc-timeout: timeout`.
/// Unlike tonic's client, this one does not enforce the deadline itself, so what comes back is
/// the server's own answer. Returns the status code, message and the time it took.
async fn raw_call(addr: std::net::SocketAddr, path: &str, message: &impl prost::Message, timeout: &str) -> (Code, String, Duration) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let started = Instant::now();
    let (response, mut body) = client.send_request(request, false).expect("send");
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend(u32::try_from(encoded.len()).expect("small").to_be_bytes());
    frame.extend(encoded);
    // The server may answer (and close the stream) before reading the body, e.g. for a
    // deadline that has already passed.
    let _ = body.send_data(frame.into(), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer within 10 s").expect("response");
    let status_of = |headers: &http::HeaderMap| {
        headers.get("grpc-status").map(|v| (Code::from_bytes(v.as_bytes()), headers.get("grpc-message").map(|m| m.to_str().unwrap_or_default().to_string()).unwrap_or_default()))
    };
    if let Some((code, message)) = status_of(response.headers()) {
        return (code, message, started.elapsed());
    }
    let mut stream = response.into_body();
    while let Some(chunk) = stream.data().await {
        chunk.expect("data");
    }
    let trailers = stream.trailers().await.expect("trailers").expect("grpc trailers");
    let (code, message) = status_of(&trailers).expect("grpc-status");
    (code, message, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured_before_while_queued_and_while_running() {
    const EVALUATE: &str = "/cpc.v1.DecisionService/Evaluate";
    const CHILD: &str = "/cpc.v1.DecisionService/CheckChildInvitation";
    let rules = fixture();
    let options = ServerOptions { max_concurrent_decisions: 1, max_queue_wait: Duration::from_secs(10), ..ServerOptions::default() };
    let server = start(load(rules.path(), slow_limits()), options, true).await;

    // A deadline already passed: refused before anything runs.
    let (code, _, _) = raw_call(server.addr, CHILD, &child("good", 14), "0n").await;
    assert_eq!(code, Code::DeadlineExceeded);

    // While running: a 1.5 s script under a 200 ms deadline.
    let (code, message, took) = raw_call(server.addr, EVALUATE, &slow(1500), "200m").await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(1200), "answered after {took:?}");

    // While queued: the abandoned script keeps its slot until its own end (the server never runs
    // more than its limit), so a call with a short deadline waits in the queue and times out.
    let (code, message, took) = raw_call(server.addr, CHILD, &child("good", 14), "150m").await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took < Duration::from_millis(1000), "answered after {took:?}");
    assert!(message.contains("waiting"), "{message}");

    // Once the slot is free, a call with a generous deadline decides; tonic's own client
    // deadlines work too.
    let mut c = server.decisions().await;
    let d = c.check_child_invitation(with_timeout(child("good", 14), Duration::from_secs(10))).await.expect("decides");
    assert_eq!(d.into_inner().outcome, "invite");
    let (code, _, _) = raw_call(server.addr, CHILD, &child("good", 14), "5S").await;
    assert_eq!(code, Code::Ok);
    let (_, text) = scrape(&server, "/metrics").await;
    assert!(text.contains(r#"cpc_rpc_errors_total{method="Evaluate",code="DEADLINE_EXCEEDED"} 1"#), "{text}");
    assert!(text.contains(r#"cpc_rpc_errors_total{method="CheckChildInvitation",code="DEADLINE_EXCEEDED"} 2"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_request_timeout_applies_without_a_client_deadline() {
    let rules = fixture();
    let options = ServerOptions { request_timeout: Duration::from_millis(300), ..ServerOptions::default() };
    let server = start(load(rules.path(), slow_limits()), options, false).await;
    let mut c = server.decisions().await;
    let started = Instant::now();
    let status = c.evaluate(slow(2000)).await.expect_err("over the server's timeout");
    assert_deadline(&status);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_has_its_own_limit_on_calls_in_progress() {
    let rules = fixture();
    let options = ServerOptions { concurrency_limit_per_connection: 2, max_concurrent_decisions: 8, ..ServerOptions::default() };
    let server = start(load(rules.path(), slow_limits()), options, true).await;
    let busy = server.channel().await;
    let mut slow_calls = Vec::new();
    for _ in 0..2 {
        let mut c = DecisionServiceClient::new(busy.clone());
        slow_calls.push(tokio::spawn(async move { c.evaluate(slow(800)).await }));
    }
    until_running(&server, 2).await;
    let status = DecisionServiceClient::new(busy.clone()).check_child_invitation(child("good", 14)).await.expect_err("third call on the connection");
    assert_shed(&status, "CONNECTION_CONCURRENCY_LIMITED");
    // Another connection is not affected.
    let d = server.decisions().await.check_child_invitation(child("good", 14)).await.expect("another connection decides");
    assert_eq!(d.into_inner().outcome, "invite");
    for call in slow_calls {
        call.await.expect("task").expect("the slow calls complete");
    }
}

#[tokio::test]
async fn rate_limits_apply_per_connection_and_overall_but_not_to_health() {
    use cpc_rules::grpc::limits::RateLimit;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let rules = fixture();
    // Per connection: bursts of 3, then 1 a second.
    let options = ServerOptions { rate_limit_per_connection: Some(RateLimit { per_second: 1, burst: 3 }), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let a = server.channel().await;
    let mut ca = DecisionServiceClient::new(a.clone());
    for _ in 0..3 {
        ca.check_child_invitation(child("good", 14)).await.expect("within the burst");
    }
    let status = ca.check_child_invitation(child("good", 14)).await.expect_err("over the connection's rate");
    assert_shed(&status, "CONNECTION_RATE_LIMITED");
    let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("retry delay");
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    let health = HealthClient::new(a.clone()).check(HealthCheckRequest { service: String::new() }).await.expect("health is not rate limited");
    assert_eq!(health.into_inner().status, 1);
    server.decisions().await.check_child_invitation(child("good", 14)).await.expect("another connection has its own budget");
    drop(server);

    // Overall: bursts of 3 across every connection.
    let options = ServerOptions { rate_limit: Some(RateLimit { per_second: 1, burst: 3 }), ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let mut c1 = server.decisions().await;
    let mut c2 = server.decisions().await;
    c1.check_child_invitation(child("good", 14)).await.expect("1");
    c2.check_child_invitation(child("good", 14)).await.expect("2");
    c1.check_child_invitation(child("good", 14)).await.expect("3");
    let status = c2.check_child_invitation(child("good", 14)).await.expect_err("over the server's rate");
    assert_shed(&status, "RATE_LIMITED");
}

#[tokio::test]
async fn connections_beyond_the_maximum_are_closed_and_slots_come_back() {
    let rules = fixture();
    let options = ServerOptions { max_connections: 1, ..ServerOptions::default() };
    let server = start(load(rules.path(), Limits::default()), options, false).await;
    let first = server.channel().await;
    DecisionServiceClient::new(first.clone()).check_child_invitation(child("good", 14)).await.expect("the first connection decides");

    let second = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    match second {
        Err(_) => {}
        Ok(ch) => {
            let status = DecisionServiceClient::new(ch).check_child_invitation(child("good", 14)).await.expect_err("the second connection is closed");
            assert!(matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{status:?}");
        }
    }
    // The first connection is unaffected.
    DecisionServiceClient::new(first.clone()).check_child_invitation(child("good", 14)).await.expect("still decides");
    drop(first);
    // Once it closes, its slot comes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).ok()?.connect().await.ok()?;
            DecisionServiceClient::new(ch).check_child_invitation(child("good", 14)).await.ok()
        };
        if attempt.await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the connection slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn scripts_run_off_the_async_executor() {
    // The server gets a runtime with ONE worker thread. If scripts ran on it, two busy scripts
    // would stall every other call until they finished.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("client runtime");
    let rules = fixture();
    let store = load(rules.path(), slow_limits());
    let server = server_rt.block_on(start(store, ServerOptions { max_concurrent_decisions: 4, ..ServerOptions::default() }, true));
    client_rt.block_on(async {
        let ch = server.channel().await;
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut c = DecisionServiceClient::new(ch.clone());
            busy.push(tokio::spawn(async move { c.evaluate(slow(1500)).await }));
        }
        until_running(&server, 2).await;
        let mut c = DecisionServiceClient::new(ch.clone());
        let started = Instant::now();
        c.check_child_invitation(child("good", 14)).await.expect("decides");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(700), "a quick decision waited {took:?} behind busy scripts");
        let started = Instant::now();
        tonic_health::pb::health_client::HealthClient::new(ch.clone())
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .expect("health");
        assert!(started.elapsed() < Duration::from_millis(700), "health waited {:?}", started.elapsed());
        for b in busy {
            b.await.expect("task").expect("busy scripts complete");
        }
    });
    drop(server);
    drop(server_rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_reports_not_serving_and_lets_in_flight_calls_finish() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let rules = fixture();
    let options = ServerOptions { shutdown_grace: Duration::from_secs(10), ..ServerOptions::default() };
    let mut server = start(load(rules.path(), slow_limits()), options, true).await;
    let ch = server.channel().await;
    let mut watch = HealthClient::new(ch.clone()).watch(HealthCheckRequest { service: "cpc.v1.DecisionService".into() }).await.expect("watch").into_inner();
    assert_eq!(watch.message().await.expect("status").expect("a status").status(), ServingStatus::Serving);

    let mut c = DecisionServiceClient::new(ch.clone());
    let in_flight = tokio::spawn(async move { c.evaluate(slow(800)).await });
    until_running(&server, 1).await;
    server.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("a status change").expect("watch").expect("status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    let d = in_flight.await.expect("task").expect("the in-flight call finishes during draining").into_inner();
    assert_eq!(d.outcome, "done");
    let addr = server.addr;
    drop(ch);
    server.stop().await.expect("clean shutdown");
    let after = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_timeout(Duration::from_secs(1)).connect().await;
    assert!(after.is_err(), "no new connections after shutdown");
}
