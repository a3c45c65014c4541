//! Rate limits for the HTTP port, the same as the gRPC port's.
//!
//! A system or a person that sends decisions over HTTP must not get round the limits a gRPC
//! caller has. Every `POST` (a decision, an admissibility check, a replay, a sign-in) takes a
//! token from the server-wide bucket — the very bucket the gRPC guard uses, so the two ports
//! share one overall limit — and from a bucket for its client address (HTTP/1.1 clients open
//! and close connections freely, so the per-connection limit of gRPC is applied per address
//! here). A refused request gets `429 Too Many Requests` with `Retry-After`, as JSON on `/v1/`
//! and as a page in the console, and is counted like a shed gRPC call. Pages that only read
//! (`GET`) are not limited: they make no decision.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::serve::IncomingStream;
use axum::http::Method;

use crate::grpc::limits::{RateLimit, SharedBucket, TokenBucket};
use crate::grpc::status::Shed;

/// Client addresses tracked at most; past this, buckets idle for [`IDLE`] are forgotten (a full
/// bucket is what a new client gets anyway, so forgetting one loses nothing).
const MAX_CLIENTS: usize = 4096;
/// How long a client's bucket is kept after its last request.
const IDLE: Duration = Duration::from_secs(60);

/// The client's address, as the console's listeners (plain TCP or TLS) report it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The HTTP port's rate limits.
#[derive(Debug, Default)]
pub struct HttpLimits {
    /// The server-wide bucket, shared with the gRPC guard.
    pub global: Option<Arc<SharedBucket>>,
    /// The limit for each client address.
    pub per_client: Option<RateLimit>,
    clients: Mutex<HashMap<IpAddr, (TokenBucket, Instant)>>,
}

impl HttpLimits {
    /// Limits with a shared server-wide bucket and a limit for each client address.
    pub fn new(global: Option<Arc<SharedBucket>>, per_client: Option<RateLimit>) -> Self {
        HttpLimits { global, per_client, clients: Mutex::new(HashMap::new()) }
    }

    /// Whether `request` may go on, or why not and how long to wait.
    pub fn check(&self, request: &Request) -> Result<(), (Shed, Duration)> {
        if request.method() != Method::POST {
            return Ok(());
        }
        let peer = request.extensions().get::<ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip());
        self.admit(peer, Instant::now())
    }

    fn admit(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), (Shed, Duration)> {
        if let (Some(limit), Some(ip)) = (self.per_client, peer) {
            let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(&ip) {
                clients.retain(|_, (_, last)| now.saturating_duration_since(*last) < IDLE);
            }
            if clients.len() < MAX_CLIENTS || clients.contains_key(&ip) {
                let (bucket, last) = clients.entry(ip).or_insert_with(|| (TokenBucket::new(limit), now));
                *last = now;
                bucket.try_take(now).map_err(|wait| (Shed::ConnectionRate, wait))?;
            } else {
                // Every tracked client is active: an untracked one is held to the overall limit only.
                tracing::debug!("HTTP rate limits: client table full");
            }
        }
        if let Some(global) = &self.global {
            global.try_take().map_err(|wait| (Shed::GlobalRate, wait))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_bucket_and_all_share_the_global_one() {
        let limits = HttpLimits::new(RateLimit::per_second(3).map(|l| Arc::new(SharedBucket::new(l))), RateLimit::per_second(2));
        let now = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(limits.admit(a, now).is_ok());
        assert!(limits.admit(a, now).is_ok());
        assert_eq!(limits.admit(a, now).map_err(|e| e.0), Err(Shed::ConnectionRate), "a's own limit");
        assert!(limits.admit(b, now).is_ok(), "b has its own bucket");
        assert_eq!(limits.admit(b, now).map_err(|e| e.0), Err(Shed::GlobalRate), "but the server-wide one is spent");
    }

    #[test]
    fn without_limits_everything_passes() {
        let limits = HttpLimits::default();
        for _ in 0..1000 {
            assert!(limits.admit(Some(IpAddr::from([127, 0, 0, 1])), Instant::now()).is_ok());
        }
    }
}
