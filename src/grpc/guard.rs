//! The per-call guard: one tower layer in front of every service.
//!
//! For each call, in this order (each step cheap, and each refusal immediate):
//!
//! 1. classify the method ([`super::auth::method_access`]); health checks pass straight
//!    through — no credential, no limit, so a busy server is never taken for a dead one;
//! 2. the connection's rate limit → `RESOURCE_EXHAUSTED`;
//! 3. the access policy → `UNAUTHENTICATED` / `PERMISSION_DENIED` (before the server-wide rate
//!    limit, so unauthenticated floods do not use up the legitimate callers' budget);
//! 4. the server-wide rate limit → `RESOURCE_EXHAUSTED`;
//! 5. for decision calls, the admission state ([`super::admission`]): while every active
//!    partnership's queue is saturated (or the queue is at its hard cap) the call is shed here,
//!    before its request is read or decoded → `RESOURCE_EXHAUSTED` with a retry delay;
//! 6. the connection's limit on calls in progress → `RESOURCE_EXHAUSTED`;
//! 7. the call's [`Deadline`] (caller's `grpc-timeout` or the server's request timeout) is set
//!    on the request for the service to honour, and enforced here too → `DEADLINE_EXCEEDED`;
//! 8. an answer tonic gives a request it cannot decode (`INTERNAL`) becomes
//!    `INVALID_ARGUMENT` with details — the request was the caller's mistake;
//! 9. the answer's status code and the time taken go to the metrics.
//!
//! A call let through carries its [`auth::CallerIdentity`] (who asked, for the decision record).
//!
//! Refusals are logged without personal data: the method, the peer address and why.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TlsConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

use super::admission::Admission;
use super::auth::{self, AccessPolicy, MethodInfo};
use super::limits::{ConnState, Deadline, SharedBucket, parse_grpc_timeout};
use super::metrics::{ErrorLabels, Metrics, MethodLabels};
use super::status::{self, Shed};
use super::transport::ConnInfo;

/// The path prefix of decision calls (the ones admission applies to).
const DECISION_SERVICE: &str = "/cpc.v1.DecisionService/";

/// How long a caller shed for having too many calls in progress is told to wait.
const CONCURRENCY_RETRY: Duration = Duration::from_millis(50);

/// What the guard enforces.
#[derive(Debug)]
pub struct GuardConfig {
    /// Who may call what.
    pub policy: AccessPolicy,
    /// The server-wide rate limit (shared with the HTTP port).
    pub global_rate: Option<Arc<SharedBucket>>,
    /// Longest any call may take (a shorter `grpc-timeout` wins).
    pub request_timeout: Duration,
    /// Where the answers are counted.
    pub metrics: Arc<Metrics>,
    /// The decision admission state: decision calls are shed before they are decoded while it
    /// is saturated.
    pub admission: Option<Arc<Admission>>,
    /// Limits the access-policy warnings to one per [`AUTH_WARNING_EVERY`].
    pub auth_warnings: LogLimiter,
}

/// At most one access-policy warning is logged per this time; the rest are counted and the
/// count is logged with the next one. A flood of bad credentials cannot flood the log.
pub const AUTH_WARNING_EVERY: Duration = Duration::from_secs(1);

/// Lets one log line through per period and counts the ones held back.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimiter { every, state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(lines held back since the last one let through)` if a line may be logged at
    /// `now`; `None` (and one more held back) if not.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held) = &mut *state;
        if last.is_some_and(|t| now.saturating_duration_since(t) < self.every) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(AUTH_WARNING_EVERY)
    }
}

/// Longest caller-chosen text (a partnership or kind id the server does not know) written to a
/// log, in characters; longer text is cut and marked with `…`.
pub const MAX_LOGGED_TEXT: usize = 64;

/// A caller-chosen string made safe for a log line: control and non-ASCII characters escaped
/// (no forged lines, no terminal escapes) and cut to [`MAX_LOGGED_TEXT`] characters.
pub fn loggable(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_LOGGED_TEXT).flat_map(char::escape_default).collect();
    if text.chars().nth(MAX_LOGGED_TEXT).is_some() {
        out.push('…');
    }
    out
}

/// The layer: wraps the server's routes in a [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    config: Arc<GuardConfig>,
}

impl GuardLayer {
    /// A guard enforcing `config`.
    pub fn new(config: GuardConfig) -> Self {
        GuardLayer { config: Arc::new(config) }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, config: Arc::clone(&self.config) }
    }
}

/// The guard service (see the module documentation).
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    config: Arc<GuardConfig>,
}

/// A call let through: it holds one of its connection's in-progress slots until answered.
struct Admitted {
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    deadline: Deadline,
}

/// The connection a call came on and, over mutual TLS, its client certificate's names.
fn connection(req: &http::Request<Body>) -> (Option<Arc<ConnState>>, Option<Vec<String>>) {
    if let Some(tls) = req.extensions().get::<TlsConnectInfo<ConnInfo>>() {
        let state = Arc::clone(&tls.get_ref().state);
        let names = tls.peer_certs().map(|certs| {
            state.peer_names.get_or_init(|| certs.first().map(|c| auth::certificate_names(c.as_ref())).unwrap_or_default()).clone()
        });
        return (Some(state), names);
    }
    (req.extensions().get::<ConnInfo>().map(|i| Arc::clone(&i.state)), None)
}

impl GuardConfig {
    fn admit(&self, req: &http::Request<Body>, method: MethodInfo, conn: Option<&ConnState>, peer_names: Option<&[String]>, received: Instant) -> Result<Admitted, Status> {
        let shed = |why: Shed, retry: Duration| {
            self.metrics.shed(why.reason());
            tracing::debug!(method = method.label, peer = ?conn.and_then(|c| c.remote_addr), reason = why.reason(), "call shed");
            status::overloaded(why, retry)
        };
        if let (Some(c), true) = (conn, method.limited) {
            c.try_rate().map_err(|retry| shed(Shed::ConnectionRate, retry))?;
        }
        let authorization = req.headers().get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
        if let Err(refusal) = self.policy.check(method, authorization, peer_names) {
            if let Some(suppressed) = self.auth_warnings.allow(Instant::now()) {
                tracing::warn!(
                    method = method.label,
                    peer = ?conn.and_then(|c| c.remote_addr),
                    code = status::code_name(refusal.code()),
                    credential = if authorization.is_some() { "bearer token" } else if peer_names.is_some() { "client certificate" } else { "none" },
                    suppressed,
                    "call refused by the access policy (`suppressed`: refusals not logged since the last such warning)"
                );
            }
            return Err(refusal);
        }
        if let (Some(bucket), true) = (&self.global_rate, method.limited) {
            bucket.try_take().map_err(|retry| shed(Shed::GlobalRate, retry))?;
        }
        if let (Some(admission), true) = (&self.admission, req.uri().path().starts_with(DECISION_SERVICE)) {
            if let Some((why, retry)) = admission.early_shed() {
                return Err(shed(why, retry));
            }
        }
        let slot = match (conn, method.limited) {
            (Some(c), true) => Some(c.try_start().ok_or_else(|| shed(Shed::ConnectionConcurrency, CONCURRENCY_RETRY))?),
            _ => None,
        };
        let timeout = req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let deadline = Deadline::for_call(received, timeout, self.request_timeout);
        if deadline.passed() {
            return Err(status::deadline_exceeded("before the call started"));
        }
        Ok(Admitted { _slot: slot, deadline })
    }

    fn record(&self, method: MethodInfo, started: Instant, response: &http::Response<Body>) {
        let code = response.headers().get("grpc-status").map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
        self.metrics.rpc_duration.get_or_create(&MethodLabels { method: method.label.to_string() }).observe(started.elapsed().as_secs_f64());
        if code != tonic::Code::Ok {
            self.metrics
                .rpc_errors
                .get_or_create(&ErrorLabels { method: method.label.to_string(), code: status::code_name(code).to_string() })
                .inc();
        }
    }
}

/// Rewrites tonic's `INTERNAL` answer to a request it could not decode (deeper nesting than
/// prost allows, invalid UTF-8, garbage bytes) as `INVALID_ARGUMENT` with details
/// ([`status::decode_failure`]); any other response passes unchanged. Such an answer is always
/// trailers-only (the status is in the response headers), so only headers are looked at.
fn caller_decode_error(response: http::Response<Body>) -> http::Response<Body> {
    if response.headers().get("grpc-status").is_none_or(|v| v.as_bytes() != b"13") {
        return response;
    }
    match Status::from_header_map(response.headers()).as_ref().and_then(status::decode_failure) {
        Some(invalid) => {
            tracing::info!(reason = "MALFORMED_REQUEST", "request refused: it could not be decoded");
            invalid.into_http()
        }
        None => response,
    }
}

impl<S> Service<http::Request<Body>> for Guard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let received = Instant::now();
        let method = auth::method_access(req.uri().path());
        let config = Arc::clone(&self.config);
        // The clone that was made ready is the one to call (tower's readiness contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if !method.limited && method.access == auth::Access::Open {
                return inner.call(req).await;
            }
            let (conn, peer_names) = connection(&req);
            let response = match config.admit(&req, method, conn.as_deref(), peer_names.as_deref(), received) {
                Err(refusal) => refusal.into_http(),
                Ok(admitted) => {
                    let Admitted { _slot, deadline } = admitted;
                    let authorization = req.headers().get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
                    let who = config.policy.identify(authorization, peer_names.as_deref());
                    req.extensions_mut().insert(who);
                    req.extensions_mut().insert(deadline);
                    match tokio::time::timeout_at(deadline.0.into(), inner.call(req)).await {
                        Ok(answer) => caller_decode_error(answer?),
                        Err(_) => status::deadline_exceeded("before the answer was ready").into_http(),
                    }
                }
            };
            config.record(method, received, &response);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(limiter.allow(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(limiter.allow(t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(limiter.allow(t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn caller_text_is_escaped_and_cut() {
        assert_eq!(loggable("york"), "york");
        assert_eq!(loggable("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(loggable("a\u{1b}[31m"), "a\\u{1b}[31m");
        let long = "x".repeat(10_000);
        let logged = loggable(&long);
        assert_eq!(logged.chars().count(), MAX_LOGGED_TEXT + 1);
        assert!(logged.ends_with('…'));
    }
}
