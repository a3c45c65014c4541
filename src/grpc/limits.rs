//! Admission control: rate limits, per-connection limits and call deadlines.
//!
//! Every limit here sheds rather than queues: a call over a limit is answered at once with
//! `RESOURCE_EXHAUSTED` (see [`super::status::overloaded`]) and costs the server almost nothing.
//! The one queue in the service is the decision queue in [`super::service::Decider`], and it is
//! bounded in length and in waiting time.
//!
//! - [`RateLimit`] is a token bucket: `per_second` calls a second on average, bursts of up to
//!   `burst`. One bucket is shared by the whole server, and each connection has its own.
//! - [`ConnState`] is what one connection carries: its rate bucket, its count of calls in
//!   progress, and the slot it holds among the server's maximum number of connections.
//! - [`Deadline`] is when a call must be answered by: the caller's `grpc-timeout` or the
//!   server's request timeout, whichever is sooner, less [`DEADLINE_MARGIN`] so that the
//!   `DEADLINE_EXCEEDED` answer reaches the caller while it still waits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls a second, on average (at least 1).
    pub per_second: u32,
    /// Most calls accepted at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` calls a second with bursts of one second's worth; `None` when
    /// `per_second` is 0 (no limit).
    pub fn per_second(per_second: u32) -> Option<RateLimit> {
        (per_second > 0).then_some(RateLimit { per_second, burst: per_second })
    }
}

/// A token bucket for one [`RateLimit`].
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        let capacity = f64::from(limit.burst.max(1));
        TokenBucket { capacity, tokens: capacity, per_second: f64::from(limit.per_second.max(1)), last: Instant::now() }
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_second;
            Err(Duration::from_secs_f64(wait.clamp(0.001, 60.0)))
        }
    }
}

/// A shared token bucket (a poisoned lock is still used: the bucket's state is always valid).
#[derive(Debug)]
pub struct SharedBucket(Mutex<TokenBucket>);

impl SharedBucket {
    /// A full shared bucket.
    pub fn new(limit: RateLimit) -> Self {
        SharedBucket(Mutex::new(TokenBucket::new(limit)))
    }

    /// Takes one token now, or says how long until one is there.
    pub fn try_take(&self) -> Result<(), Duration> {
        let mut bucket = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket.try_take(Instant::now())
    }
}

/// What one connection carries. It lives as long as the connection and its calls: dropping the
/// last reference gives the connection's slot back.
#[derive(Debug)]
pub struct ConnState {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// This end's address.
    pub local_addr: Option<SocketAddr>,
    rate: Option<SharedBucket>,
    in_flight: Arc<Semaphore>,
    /// The client certificate's names, worked out once per connection (TLS only).
    pub(crate) peer_names: OnceLock<Vec<String>>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl ConnState {
    /// A connection allowed `max_in_flight` calls at once and `rate` calls a second, holding
    /// `slot` among the server's connections.
    pub fn new(
        remote_addr: Option<SocketAddr>,
        local_addr: Option<SocketAddr>,
        max_in_flight: usize,
        rate: Option<RateLimit>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        ConnState {
            remote_addr,
            local_addr,
            rate: rate.map(SharedBucket::new),
            in_flight: Arc::new(Semaphore::new(max_in_flight.clamp(1, Semaphore::MAX_PERMITS))),
            peer_names: OnceLock::new(),
            _slot: slot,
        }
    }

    /// Takes a token from the connection's rate bucket (always succeeds without a limit).
    pub fn try_rate(&self) -> Result<(), Duration> {
        self.rate.as_ref().map_or(Ok(()), SharedBucket::try_take)
    }

    /// Takes one of the connection's in-progress slots, if one is free.
    pub fn try_start(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }
}

/// The server's connection-level limits, shared by every connection.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Most calls one connection may have in progress.
    pub max_in_flight: usize,
    /// Each connection's own rate limit.
    pub rate: Option<RateLimit>,
    /// Slots for open connections (`None`: no limit).
    pub connections: Option<Arc<Semaphore>>,
}

impl ConnLimits {
    /// A new connection's state, or `None` when the server already has as many connections
    /// open as it takes.
    pub fn admit(&self, remote_addr: Option<SocketAddr>, local_addr: Option<SocketAddr>) -> Option<Arc<ConnState>> {
        let slot = match &self.connections {
            Some(s) => Some(Arc::clone(s).try_acquire_owned().ok()?),
            None => None,
        };
        Some(Arc::new(ConnState::new(remote_addr, local_addr, self.max_in_flight, self.rate, slot)))
    }
}

/// Time kept back from the caller's deadline, so that a `DEADLINE_EXCEEDED` answer is sent
/// before the caller stops listening (and before tonic's own timer, which would say
/// `CANCELLED`).
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

/// When a call must be answered by; set on each call's extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline for a call received at `received` with the caller's `timeout` (if any)
    /// under the server's `server_timeout`.
    pub fn for_call(received: Instant, timeout: Option<Duration>, server_timeout: Duration) -> Deadline {
        let budget = timeout.map_or(server_timeout, |t| t.min(server_timeout));
        Deadline(received + budget.saturating_sub(DEADLINE_MARGIN))
    }

    /// Time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn passed(self) -> bool {
        Instant::now() >= self.0
    }
}

/// Parses a `grpc-timeout` header value (`1S`, `250m`, …, at most 8 digits), per the gRPC over
/// HTTP/2 protocol. `None` for a malformed value, which is then ignored (as tonic does).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(parse_grpc_timeout("0n"), Some(Duration::ZERO));
        for bad in ["", "S", "1", "123456789S", "-1S", "1s", "1.5S", "+1S", "1 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn buckets_allow_bursts_then_refill() {
        let mut b = TokenBucket::new(RateLimit { per_second: 10, burst: 3 });
        let t0 = Instant::now();
        assert!(b.try_take(t0).is_ok() && b.try_take(t0).is_ok() && b.try_take(t0).is_ok());
        let wait = b.try_take(t0).expect_err("empty after the burst");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok(), "one token after 1/10 s");
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_err());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| b.try_take(later).is_ok()).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn connections_are_capped_and_slots_come_back() {
        let limits = ConnLimits { max_in_flight: 1, rate: None, connections: Some(Arc::new(Semaphore::new(1))) };
        let first = limits.admit(None, None).expect("first connection");
        assert!(limits.admit(None, None).is_none(), "second connection is refused");
        let call = first.try_start().expect("one call");
        assert!(first.try_start().is_none(), "a second call on the connection is refused");
        drop(call);
        assert!(first.try_start().is_some());
        drop(first);
        assert!(limits.admit(None, None).is_some(), "the slot came back");
    }

    #[test]
    fn deadlines_take_the_sooner_and_keep_a_margin() {
        let t = Instant::now();
        let d = Deadline::for_call(t, Some(Duration::from_millis(100)), Duration::from_secs(10));
        assert_eq!(d.0, t + Duration::from_millis(100) - DEADLINE_MARGIN);
        let d = Deadline::for_call(t, Some(Duration::from_secs(100)), Duration::from_secs(10));
        assert_eq!(d.0, t + Duration::from_secs(10) - DEADLINE_MARGIN);
        let d = Deadline::for_call(t, Some(Duration::ZERO), Duration::from_secs(10));
        assert!(d.passed());
    }
}
