//! Group commit: one thread writes the record, a batch per transaction, and only then answers.
//!
//! Why: "in the record before the caller gets it" means a durable commit per decision, and a
//! commit (an fsync, or a round trip to PostgreSQL) costs far more than a decision. So calls do
//! not commit one by one: each hands its record to this thread and waits. The thread takes
//! whatever is queued (up to [`MAX_BATCH`]), writes it all in one transaction, commits, and then
//! wakes every waiter with the result. Under load many decisions share one commit; when idle a
//! lone decision is committed at once.
//!
//! Commit pacing: a commit costs a fsync whatever it holds (and, in SQLite's WAL, a write of
//! every page it touched, so the table's last page and each index's last page once per commit,
//! not once per decision). Committing the moment the last commit ends makes batches as small as
//! the fsync is quick: measured, four or five decisions a commit at saturation. So a commit
//! starts no sooner than `commit_interval` after the previous one started; the decisions that
//! arrive meanwhile join it. A decision that finds the record idle (the last commit began at
//! least an interval ago) is committed at once, so pacing adds no latency at low load and at
//! most one interval under load.
//!
//! Archive jobs go through the same queue, ahead of the decisions made with the revision they
//! archive, so a decision never reaches the record before its rules. Refusal counts are kept in
//! memory and added with the next batch (or within a second when idle).
//!
//! A failed write answers every waiter of that batch with the error, marks the record unhealthy
//! (the server then reports `NOT_SERVING`) and drops the connection; the next batch reconnects,
//! and a successful write marks the record healthy again.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};

use super::store::{Db, Row};
use super::{DecisionRecord, RecordError, RefusalKey, Target, archive};
use crate::engine::RuleSources;

/// Most decisions written in one transaction.
pub const MAX_BATCH: usize = 512;

/// How often refusal counts are written when no decision comes.
const IDLE_FLUSH: Duration = Duration::from_secs(1);

enum Job {
    Decision(Arc<Row>, oneshot::Sender<Result<(), RecordError>>),
    Archive(Arc<RuleSources>, String, DateTime<Utc>),
    Refusal(RefusalKey),
}

/// The handle calls use to reach the writer thread.
pub struct Writer {
    tx: Sender<Job>,
    health: watch::Receiver<bool>,
}

impl Writer {
    /// Starts the writer thread on its own connection to `target`. `archived` is the set of
    /// revisions believed archived; a failed archive write takes its revision out again.
    pub fn start(target: Target, commit_interval: Duration, archived: Arc<Mutex<HashSet<(String, String)>>>) -> Result<Writer, RecordError> {
        let db = Db::open(&target)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (health_tx, health) = watch::channel(true);
        std::thread::Builder::new()
            .name("cpc-record-writer".into())
            .spawn(move || run(target, commit_interval, Some(db), &rx, &health_tx, &archived))
            .map_err(|e| RecordError::Unavailable(format!("cannot start the record writer: {e}")))?;
        Ok(Writer { tx, health })
    }

    fn send(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }

    /// Queues `record` and waits until it is committed (or the write failed).
    ///
    /// The record is encoded (JSON) here, on the calling task, so that work is spread over the
    /// server's threads and the one writing thread only inserts and commits.
    pub async fn write(&self, record: &DecisionRecord) -> Result<(), RecordError> {
        // The caller keeps a handle on the row, and the writer drops its own before answering,
        // so the row's memory is freed here, on the thread that allocated it: a free from the
        // writer thread would contend for the allocating thread's heap lock.
        let row = Arc::new(Row::encode(record)?);
        let (done, wait) = oneshot::channel();
        if !self.send(Job::Decision(Arc::clone(&row), done)) {
            return Err(RecordError::Unavailable("the record writer has stopped".into()));
        }
        wait.await.unwrap_or_else(|_| Err(RecordError::Unavailable("the record writer stopped before answering".into())))
    }

    /// Queues an archive of `sources` (written with the next batch).
    pub fn archive(&self, sources: Arc<RuleSources>, revision: String, live_from: DateTime<Utc>) {
        self.send(Job::Archive(sources, revision, live_from));
    }

    /// Counts a refusal (written with the next batch).
    pub fn count_refusal(&self, key: RefusalKey) {
        self.send(Job::Refusal(key));
    }

    /// Whether the last write succeeded.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.clone()
    }
}

/// Runs one write, turning a panic in it (a bug in a database driver, say) into an error for
/// that batch, so its callers are answered, health turns NOT_SERVING and the next batch starts
/// on a fresh connection, instead of the writer thread dying with every later call refused
/// while health still said SERVING.
fn guarded(write: impl FnOnce() -> Result<(), RecordError>) -> Result<(), RecordError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(write)).unwrap_or_else(|panic| {
        let what = panic.downcast_ref::<&str>().map(|s| (*s).to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        Err(RecordError::Unavailable(format!("the record writer failed unexpectedly (a bug: please report it): {what}")))
    })
}

/// Reports NOT_SERVING if the writer thread ends by a panic outside [`guarded`]: with no writer,
/// no decision can be recorded.
struct ExitGuard<'a>(&'a watch::Sender<bool>);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the decision record writer stopped; decisions cannot be recorded until the server restarts");
            self.0.send_replace(false);
        }
    }
}

fn run(
    target: Target,
    commit_interval: Duration,
    mut db: Option<Db>,
    rx: &Receiver<Job>,
    health: &watch::Sender<bool>,
    archived: &Mutex<HashSet<(String, String)>>,
) {
    let _exit = ExitGuard(health);
    let mut refusals: BTreeMap<RefusalKey, u64> = BTreeMap::new();
    let mut last_write = Instant::now();
    loop {
        let first = match rx.recv_timeout(IDLE_FLUSH) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                if !refusals.is_empty() {
                    let _ = write(&target, &mut db, &[], &[], &refusals);
                }
                return;
            }
        };
        let mut rows = Vec::new();
        let mut waiters = Vec::new();
        let mut archives = Vec::new();
        let mut take = |job: Job, rows: &mut Vec<Arc<Row>>, waiters: &mut Vec<_>, archives: &mut Vec<_>| match job {
            Job::Decision(row, done) => {
                rows.push(row);
                waiters.push(done);
            }
            Job::Archive(s, rev, at) => archives.push((s, rev, at)),
            Job::Refusal(k) => *refusals.entry(k).or_default() += 1,
        };
        if let Some(job) = first {
            take(job, &mut rows, &mut waiters, &mut archives);
        }
        // Pacing: with a decision waiting, sleep out the rest of the interval since the last
        // commit began, then take everything that arrived. Sleeping (rather than waiting on the
        // queue) means arrivals do not wake this thread one by one: one wake-up a commit, not
        // one a decision.
        if !waiters.is_empty()
            && let Some(wait) = (last_write + commit_interval).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        while waiters.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => take(job, &mut rows, &mut waiters, &mut archives),
                Err(_) => break,
            }
        }
        if waiters.is_empty() && archives.is_empty() && (refusals.is_empty() || last_write.elapsed() < IDLE_FLUSH) {
            continue;
        }
        last_write = Instant::now();
        let result = guarded(|| write(&target, &mut db, &archives, &rows, &refusals));
        if result.is_err() {
            db = None; // reconnect for the next batch
        }
        match &result {
            Ok(()) => {
                refusals.clear();
                health.send_if_modified(|ok| !std::mem::replace(ok, true));
            }
            Err(e) => {
                tracing::error!(error = %e, decisions = rows.len(), "the decision record could not be written; these calls fail (unless --record-failure serve)");
                health.send_if_modified(|ok| std::mem::replace(ok, false));
                if let Ok(mut a) = archived.lock() {
                    for (s, rev, _) in &archives {
                        a.remove(&(s.id.clone(), rev.clone()));
                    }
                }
                // Keep counting, but do not grow without bound while the database is away.
                if refusals.len() > 10_000 {
                    refusals.clear();
                }
            }
        }
        drop(rows);
        for done in waiters {
            let _ = done.send(result.clone());
        }
    }
}

fn write(
    target: &Target,
    db: &mut Option<Db>,
    archives: &[(Arc<RuleSources>, String, DateTime<Utc>)],
    rows: &[Arc<Row>],
    refusals: &BTreeMap<RefusalKey, u64>,
) -> Result<(), RecordError> {
    if db.is_none() {
        *db = Some(Db::open(target)?);
    }
    let Some(conn) = db.as_mut() else { return Err(RecordError::Unavailable("no connection".into())) };
    let refusals: Vec<(RefusalKey, u64)> = refusals.iter().map(|(k, n)| (k.clone(), *n)).collect();
    conn.transaction(|db| {
        for (sources, revision, at) in archives {
            archive::archive(db, sources, revision, *at)?;
        }
        db.insert_rows(rows, &refusals)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_write_is_an_error_for_its_batch_not_a_dead_writer() {
        let err = guarded(|| panic!("driver bug")).expect_err("a panic is an error");
        assert!(err.to_string().contains("driver bug"), "{err}");
        assert_eq!(guarded(|| Ok(())), Ok(()));
    }

    #[test]
    fn a_writer_that_dies_reports_not_serving() {
        let (tx, rx) = watch::channel(true);
        let tx = Arc::new(tx);
        let t = Arc::clone(&tx);
        let died = std::thread::spawn(move || {
            let _exit = ExitGuard(&t);
            panic!("outside a write");
        })
        .join();
        assert!(died.is_err());
        assert!(!*rx.borrow(), "health turned NOT_SERVING");
        // A writer that stops normally (the server shutting down) does not.
        let (tx, rx) = watch::channel(true);
        drop(ExitGuard(&tx));
        assert!(*rx.borrow());
    }
}
