//! Configuration of the load benchmark (environment knobs) and small helpers shared by the
//! servers and drivers: runtimes, logs, connecting, waiting for health, peak RSS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) secs: f64,
    pub(crate) warmup: f64,
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
    pub(crate) server_threads: usize,
    pub(crate) client_threads: usize,
    pub(crate) cold_runs: usize,
    pub(crate) reload_runs: usize,
    pub(crate) only: Option<Vec<String>>,
}

pub(crate) fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    pub(crate) fn from_env() -> Self {
        Config {
            secs: env("LOAD_SECS", 10.0),
            warmup: env("LOAD_WARMUP_SECS", 2.0),
            connections: env("LOAD_CONNECTIONS", 4usize).max(1),
            concurrency: env("LOAD_CONCURRENCY", 64usize).max(1),
            server_threads: env("LOAD_SERVER_THREADS", 2usize).max(1),
            client_threads: env("LOAD_CLIENT_THREADS", 2usize).max(1),
            cold_runs: env("LOAD_COLD_RUNS", 10usize).max(1),
            reload_runs: env("LOAD_RELOAD_RUNS", 10usize).max(1),
            // Run names as arguments (`cargo bench --bench load -- burst overload`) or LOAD_ONLY.
            only: {
                let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
                if args.is_empty() {
                    std::env::var("LOAD_ONLY").ok().map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
                } else {
                    Some(args)
                }
            },
        }
    }

    pub(crate) fn wants(&self, run: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == run))
    }

    /// Whether `run` was named (the overload runs only run when named: they take minutes).
    pub(crate) fn named(&self, run: &str) -> bool {
        self.only.as_ref().is_some_and(|o| o.iter().any(|x| x == run))
    }
}

pub(crate) fn proc_status(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok() // kB
}

/// Resets this process's peak RSS (VmHWM) to its current RSS.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub(crate) fn mib(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn runtime(name: &str, threads: usize, logs: Option<tracing::Dispatch>) -> Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads).enable_all().thread_name(name.to_string());
    if let Some(dispatch) = logs {
        // A thread-local default subscriber on every thread of this runtime (workers and the
        // blocking pool), so each run can have logging on or off in the same process.
        b.on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&dispatch)));
    }
    b.build().expect("tokio runtime")
}

/// The log `cpc-rules serve` writes by default (text, `info`: one line per decision), sent to
/// /dev/null.
pub(crate) fn production_logs() -> tracing::Dispatch {
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").expect("/dev/null");
    let sub = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::sync::Mutex::new(devnull))
        .finish();
    tracing::Dispatch::new(sub)
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
}

/// Polls the health service at `addr` until it reports SERVING (or `limit` passes).
pub(crate) async fn wait_serving(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(ch) = connect(addr).await {
            let mut h = HealthClient::new(ch);
            loop {
                match h.check(HealthCheckRequest { service: String::new() }).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Some(started.elapsed()),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(_) => break,
                }
                if started.elapsed() >= limit {
                    return None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

