//! Group commit: one thread writes the record, a batch per transaction, and only then answers.
//!
//! Why: "in the record before the caller gets it" means a durable commit per decision, and a
//! commit (an fsync, or a round trip to PostgreSQL) costs far more than a decision. So calls do
//! not commit one by one: each hands its record to this thread and waits. The thread takes
//! whatever is queued (up to [`MAX_BATCH`]), writes it all in one transaction, commits, and then
//! wakes every waiter with the result. Under load many decisions share one commit; when idle a
//! lone decision is committed at once (no linger).
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
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};

use super::store::Db;
use super::{DecisionRecord, RecordError, RefusalKey, Target, archive};
use crate::engine::RuleSources;

/// Most decisions written in one transaction.
pub const MAX_BATCH: usize = 512;

/// How often refusal counts are written when no decision comes.
const IDLE_FLUSH: Duration = Duration::from_secs(1);

enum Job {
    Decision(Box<DecisionRecord>, oneshot::Sender<Result<(), RecordError>>),
    Archive(Arc<RuleSources>, String, DateTime<Utc>),
    Refusal(RefusalKey),
}

/// The handle calls use to reach the writer thread.
pub struct Writer {
    tx: Mutex<Sender<Job>>,
    health: watch::Receiver<bool>,
}

impl Writer {
    /// Starts the writer thread on its own connection to `target`. `archived` is the set of
    /// revisions believed archived; a failed archive write takes its revision out again.
    pub fn start(target: Target, archived: Arc<Mutex<HashSet<(String, String)>>>) -> Result<Writer, RecordError> {
        let db = Db::open(&target)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (health_tx, health) = watch::channel(true);
        std::thread::Builder::new()
            .name("cpc-record-writer".into())
            .spawn(move || run(target, Some(db), &rx, &health_tx, &archived))
            .map_err(|e| RecordError::Unavailable(format!("cannot start the record writer: {e}")))?;
        Ok(Writer { tx: Mutex::new(tx), health })
    }

    fn send(&self, job: Job) -> bool {
        self.tx.lock().map(|tx| tx.send(job).is_ok()).unwrap_or(false)
    }

    /// Queues `record` and waits until it is committed (or the write failed).
    pub async fn write(&self, record: DecisionRecord) -> Result<(), RecordError> {
        let (done, wait) = oneshot::channel();
        if !self.send(Job::Decision(Box::new(record), done)) {
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

fn run(target: Target, mut db: Option<Db>, rx: &Receiver<Job>, health: &watch::Sender<bool>, archived: &Mutex<HashSet<(String, String)>>) {
    let mut refusals: BTreeMap<RefusalKey, u64> = BTreeMap::new();
    let mut last_write = std::time::Instant::now();
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
        let mut decisions = Vec::new();
        let mut archives = Vec::new();
        let mut take = |job: Job, decisions: &mut Vec<_>, archives: &mut Vec<_>| match job {
            Job::Decision(r, done) => decisions.push((r, done)),
            Job::Archive(s, rev, at) => archives.push((s, rev, at)),
            Job::Refusal(k) => *refusals.entry(k).or_default() += 1,
        };
        if let Some(job) = first {
            take(job, &mut decisions, &mut archives);
        }
        while decisions.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => take(job, &mut decisions, &mut archives),
                Err(_) => break,
            }
        }
        if decisions.is_empty() && archives.is_empty() && (refusals.is_empty() || last_write.elapsed() < IDLE_FLUSH) {
            continue;
        }
        last_write = std::time::Instant::now();
        let records: Vec<&DecisionRecord> = decisions.iter().map(|(r, _)| r.as_ref()).collect();
        let result = write(&target, &mut db, &archives, &records, &refusals);
        match &result {
            Ok(()) => {
                refusals.clear();
                health.send_if_modified(|ok| !std::mem::replace(ok, true));
            }
            Err(e) => {
                tracing::error!(error = %e, decisions = decisions.len(), "the decision record could not be written; these calls fail (unless --record-failure serve)");
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
        for (_, done) in decisions {
            let _ = done.send(result.clone());
        }
    }
}

fn write(
    target: &Target,
    db: &mut Option<Db>,
    archives: &[(Arc<RuleSources>, String, DateTime<Utc>)],
    records: &[&DecisionRecord],
    refusals: &BTreeMap<RefusalKey, u64>,
) -> Result<(), RecordError> {
    if db.is_none() {
        *db = Some(Db::open(target)?);
    }
    let Some(conn) = db.as_mut() else { return Err(RecordError::Unavailable("no connection".into())) };
    let refusals: Vec<(RefusalKey, u64)> = refusals.iter().map(|(k, n)| (k.clone(), *n)).collect();
    let result = conn.transaction(|db| {
        for (sources, revision, at) in archives {
            archive::archive(db, sources, revision, *at)?;
        }
        db.insert(records, &refusals)
    });
    if result.is_err() {
        *db = None;
    }
    result
}
