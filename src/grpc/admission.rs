//! Admission control for decisions: who runs now, who waits, who is told to come back.
//!
//! One mechanism serves bursts and overload alike, and it decides by *time*, not by count:
//!
//! - **Slots.** At most [`AdmissionConfig::slots`] scripts run at once. A call that finds a free
//!   slot (within its partnership's share, below) runs at once.
//! - **Queue by expected wait.** Otherwise the call waits in its partnership's queue if its
//!   *expected* wait — the calls ahead of it times the partnership's recent time per decision,
//!   over the slots it may use — is within the server's queue-delay bound
//!   ([`AdmissionConfig::max_queue_delay`]) and leaves it time to finish before its own
//!   deadline. A burst the server can clear in a second is therefore queued, not shed. A call
//!   that would wait too long is shed at once with `RESOURCE_EXHAUSTED` and a `RetryInfo` delay.
//! - **CoDel.** Each partnership's queue watches the *sojourn time* of the calls it hands a slot
//!   to. When it has stayed above [`AdmissionConfig::target`] for a whole
//!   [`AdmissionConfig::interval`] the partnership is *overloaded*: its bound shrinks to the
//!   target, so a standing queue drains to a short one and new work past that is shed early. A
//!   call served within the target (or an empty queue) ends it. A burst that drains within the
//!   interval never trips it.
//! - **Hard bounds.** At most [`AdmissionConfig::max_queued`] calls wait in all (far above any
//!   normal burst; each waiter costs a queue entry and a one-shot channel, about 100 bytes). A
//!   call still waiting when its deadline passes, or after `max_queue_delay`, leaves the queue
//!   without being decided.
//! - **Bulkheads.** While more than one partnership is active (running, queued, or called in
//!   the last [`ACTIVE_WINDOW`]), each may hold at most its share — the *cores* divided among
//!   the active partnerships (at least one each), or [`AdmissionConfig::partnership_slots`] —
//!   and a freed slot goes to the waiting partnership holding the fewest. A partnership alone
//!   borrows every idle slot. The share is of cores, not slots, because scripts are CPU-bound:
//!   a flooded partnership holding more running scripts than its share of the cores takes CPU
//!   from its neighbours' decisions even when they never wait for a slot.
//! - **Early shedding.** When every active partnership is saturated (a new call would be shed)
//!   or the queue is at its hard cap, [`Admission::early_shed`] says so from two atomics, so the
//!   guard layer sheds the next decision call before its request is even decoded.
//!
//! The logic is [`Core`], pure and driven by an injected clock (unit-tested below);
//! [`Admission`] wraps it in a mutex with one-shot channels for the async service.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::status::Shed;

/// How long after its last call a partnership still counts as active for the fair share.
pub const ACTIVE_WINDOW: Duration = Duration::from_millis(500);

/// The time per decision assumed for a partnership before any of its decisions has finished.
const INITIAL_SERVICE_TIME: Duration = Duration::from_millis(2);

/// The shortest and longest `RetryInfo` delay given.
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The partnership key used for a partnership the rules do not know (its call fails fast with
/// `NOT_FOUND`); keeps caller-chosen strings out of the table.
pub const UNKNOWN_PARTNERSHIP: &str = "?";

/// Most partnership entries kept; later keys share the [`UNKNOWN_PARTNERSHIP`] entry.
const MAX_PARTNERSHIPS: usize = 256;

/// How decisions are admitted. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Most scripts running at once (at least 1).
    pub slots: usize,
    /// Most calls waiting in all (the hard cap; one more is shed with `DECISION_QUEUE_FULL`).
    pub max_queued: usize,
    /// Longest expected wait a call is queued with, and longest it then waits.
    pub max_queue_delay: Duration,
    /// CoDel's target sojourn time: the bound of an overloaded partnership.
    pub target: Duration,
    /// CoDel's interval: how long sojourns must stay above target to mean overload.
    pub interval: Duration,
    /// Most slots one partnership holds while others are active (`None`: a fair share of
    /// [`AdmissionConfig::cores`]).
    pub partnership_slots: Option<usize>,
    /// The cores scripts run on: what the fair share divides among active partnerships.
    pub cores: usize,
}

impl AdmissionConfig {
    /// `slots` slots with the default bounds: 16,384 waiting, 2 s queue delay, 100 ms target
    /// over a 1 s interval, fair shares of as many cores as slots.
    pub fn with_slots(slots: usize) -> Self {
        AdmissionConfig {
            slots,
            max_queued: 16_384,
            max_queue_delay: Duration::from_secs(2),
            target: Duration::from_millis(100),
            interval: Duration::from_secs(1),
            partnership_slots: None,
            cores: slots,
        }
    }
}

/// What happened to an arriving call.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// It holds a slot now.
    Run(usize),
    /// It waits in its partnership's queue (index given) for a grant.
    Queued(usize),
    /// It was shed: why, and when to retry.
    Shed(Shed, Duration),
}

struct Waiter<T> {
    enqueued: Instant,
    ticket: T,
}

struct Part<T> {
    running: usize,
    /// Live waiters (the deque may also hold cancelled ones, skipped when reached).
    live: usize,
    queue: VecDeque<Waiter<T>>,
    service_secs: f64,
    last_arrival: Option<Instant>,
    above_since: Option<Instant>,
    overloaded: bool,
}

impl<T> Part<T> {
    fn new() -> Self {
        Part {
            running: 0,
            live: 0,
            queue: VecDeque::new(),
            service_secs: INITIAL_SERVICE_TIME.as_secs_f64(),
            last_arrival: None,
            above_since: None,
            overloaded: false,
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.running > 0 || self.live > 0 || self.last_arrival.is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_WINDOW)
    }
}

/// The admission state machine, with time passed in. `T` is what a waiter is woken through.
pub struct Core<T> {
    cfg: AdmissionConfig,
    index: HashMap<String, usize>,
    parts: Vec<Part<T>>,
    running: usize,
    queued: usize,
}

impl<T> Core<T> {
    /// An idle core.
    pub fn new(mut cfg: AdmissionConfig) -> Self {
        cfg.slots = cfg.slots.max(1);
        Core { cfg, index: HashMap::new(), parts: Vec::new(), running: 0, queued: 0 }
    }

    /// Scripts running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether `partnership` is in CoDel's overloaded state.
    pub fn overloaded(&self, partnership: &str) -> bool {
        self.index.get(partnership).is_some_and(|&i| self.parts[i].overloaded)
    }

    fn part(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let name = if self.index.len() >= MAX_PARTNERSHIPS { UNKNOWN_PARTNERSHIP } else { name };
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.parts.push(Part::new());
        self.index.insert(name.to_string(), self.parts.len() - 1);
        self.parts.len() - 1
    }

    /// Most slots partnership `p` may hold now.
    fn cap(&self, p: usize, now: Instant) -> usize {
        let others = self.parts.iter().enumerate().filter(|(i, q)| *i != p && q.active(now)).count();
        if others == 0 {
            return self.cfg.slots;
        }
        let share = match self.cfg.partnership_slots {
            Some(n) => n,
            None => self.cfg.cores.max(1).div_ceil(others + 1),
        };
        share.clamp(1, self.cfg.slots)
    }

    /// The wait a call joining `p`'s queue now can expect.
    fn expected_wait(&self, p: usize, now: Instant) -> Duration {
        let part = &self.parts[p];
        let share = self.cap(p, now).max(1) as f64;
        Duration::from_secs_f64(((part.live + 1) as f64 * part.service_secs / share).min(3600.0))
    }

    fn bound(&self, p: usize) -> Duration {
        if self.parts[p].overloaded { self.cfg.target.min(self.cfg.max_queue_delay) } else { self.cfg.max_queue_delay }
    }

    fn retry_after(wait: Duration) -> Duration {
        wait.clamp(RETRY_MIN, RETRY_MAX)
    }

    /// A call for `partnership` arrives at `now` with `deadline`: it runs, waits (holding
    /// `ticket` in the queue) or is shed.
    pub fn arrive(&mut self, now: Instant, partnership: &str, deadline: Option<Instant>, ticket: T) -> Arrival {
        let p = self.part(partnership);
        self.parts[p].last_arrival = Some(now);
        let cap = self.cap(p, now);
        if self.parts[p].live == 0 && self.running < self.cfg.slots && self.parts[p].running < cap {
            self.start(p);
            return Arrival::Run(p);
        }
        let wait = self.expected_wait(p, now);
        if self.queued >= self.cfg.max_queued {
            return Arrival::Shed(Shed::QueueFull, Self::retry_after(wait));
        }
        if wait > self.bound(p) {
            // Come back when the queue should have drained to its bound, not after the whole
            // wait: retries then find room, and the slots do not idle while callers sleep.
            return Arrival::Shed(Shed::QueueDelay, Self::retry_after(wait.saturating_sub(self.bound(p))));
        }
        let service = Duration::from_secs_f64(self.parts[p].service_secs);
        if deadline.is_some_and(|d| now + wait + service > d) {
            return Arrival::Shed(Shed::WouldMissDeadline, Self::retry_after(wait));
        }
        let part = &mut self.parts[p];
        part.queue.push_back(Waiter { enqueued: now, ticket });
        part.live += 1;
        self.queued += 1;
        Arrival::Queued(p)
    }

    fn start(&mut self, p: usize) {
        self.running += 1;
        self.parts[p].running += 1;
    }

    /// A waiter of partnership `p` left the queue without a grant (its deadline passed, it
    /// waited too long, or its caller went away). Its entry is skipped when reached.
    /// When cancelled entries outnumber live ones by far, `still_waiting` sorts them out, so the
    /// queue's memory stays bounded by its live length.
    pub fn cancel(&mut self, p: usize, still_waiting: impl Fn(&T) -> bool) {
        let part = &mut self.parts[p];
        part.live = part.live.saturating_sub(1);
        self.queued = self.queued.saturating_sub(1);
        if part.live == 0 {
            part.queue.clear();
            part.above_since = None;
            part.overloaded = false;
        } else if part.queue.len() > 2 * part.live + 1024 {
            part.queue.retain(|w| still_waiting(&w.ticket));
        }
    }

    /// Partnership `p`'s call that held a slot for `held` finished at `now`: the slot is handed
    /// on. `grant` wakes a waiter and says whether it was still there.
    pub fn release(&mut self, now: Instant, p: usize, held: Duration, grant: impl FnMut(T) -> bool) {
        self.running = self.running.saturating_sub(1);
        let part = &mut self.parts[p];
        part.running = part.running.saturating_sub(1);
        part.service_secs = 0.8 * part.service_secs + 0.2 * held.as_secs_f64();
        self.dispatch(now, grant);
    }

    /// Hands free slots to waiters: each to the waiting partnership holding the fewest slots
    /// and below its share (the oldest waiter first on a tie), FIFO within a partnership.
    pub fn dispatch(&mut self, now: Instant, mut grant: impl FnMut(T) -> bool) {
        while self.running < self.cfg.slots {
            let pick = (0..self.parts.len())
                .filter(|&i| self.parts[i].live > 0 && self.parts[i].running < self.cap(i, now))
                .min_by_key(|&i| (self.parts[i].running, self.parts[i].queue.front().map(|w| w.enqueued)));
            let Some(p) = pick else { return };
            let mut granted = false;
            while let Some(w) = self.parts[p].queue.pop_front() {
                let sojourn = now.saturating_duration_since(w.enqueued);
                if grant(w.ticket) {
                    let (target, interval) = (self.cfg.target, self.cfg.interval);
                    let part = &mut self.parts[p];
                    part.live -= 1;
                    self.queued -= 1;
                    if sojourn < target || part.live == 0 {
                        part.above_since = None;
                        part.overloaded = false;
                    } else {
                        let since = *part.above_since.get_or_insert(now);
                        if now.saturating_duration_since(since) >= interval {
                            part.overloaded = true;
                        }
                    }
                    self.start(p);
                    granted = true;
                    break;
                }
            }
            if !granted {
                // Only cancelled entries were left (cannot happen while counts are kept right);
                // never spin on them.
                let part = &mut self.parts[p];
                self.queued = self.queued.saturating_sub(part.live);
                part.live = 0;
            }
        }
    }

    /// Whether a decision call should be shed before it is decoded: the queue is at its hard
    /// cap, or every active partnership would shed a new call. With the delay to retry after.
    pub fn saturated(&self, now: Instant) -> Option<(Shed, Duration)> {
        let waits = (0..self.parts.len()).filter(|&p| self.parts[p].active(now)).map(|p| (p, self.expected_wait(p, now)));
        if self.queued >= self.cfg.max_queued {
            let longest = waits.map(|(_, w)| w).max().unwrap_or(RETRY_MIN);
            return Some((Shed::QueueFull, Self::retry_after(longest)));
        }
        let mut longest = None;
        for (p, wait) in waits {
            if self.parts[p].live == 0 || wait <= self.bound(p) {
                return None;
            }
            longest = longest.max(Some(wait.saturating_sub(self.bound(p))));
        }
        longest.map(|w| (Shed::Overloaded, Self::retry_after(w)))
    }
}

/// Why a call was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shed with `RESOURCE_EXHAUSTED`, retry after the delay.
    Shed(Shed, Duration),
    /// Its deadline passed while it waited: `DEADLINE_EXCEEDED`, not decided.
    DeadlinePassed,
}

/// The shared admission state of one server: [`Core`] under a mutex, with the early-shedding
/// flag the guard layer reads.
pub struct Admission {
    core: Mutex<Core<oneshot::Sender<()>>>,
    saturated: AtomicBool,
    full: AtomicBool,
    retry_ms: AtomicU64,
    max_queue_delay: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("saturated", &self.saturated).finish_non_exhaustive()
    }
}

/// A script slot; handed on when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    part: usize,
    since: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut core = self.admission.lock();
        core.release(now, self.part, now.saturating_duration_since(self.since), |tx| tx.send(()).is_ok());
        self.admission.publish(&core, now);
    }
}

/// Leaves the queue if dropped before being granted (deadline, queue wait, or the caller gone).
struct Waiting<'a> {
    admission: &'a Arc<Admission>,
    part: usize,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let now = Instant::now();
        let mut core = self.admission.lock();
        rx.close();
        if rx.try_recv().is_ok() {
            // Granted just now: give the slot straight back.
            core.release(now, self.part, Duration::ZERO, |tx| tx.send(()).is_ok());
        } else {
            core.cancel(self.part, |tx| !tx.is_closed());
        }
        self.admission.publish(&core, now);
    }
}

impl Admission {
    /// Admission under `cfg`, keeping the running and queued gauges of `metrics`.
    pub fn new(cfg: AdmissionConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let max_queue_delay = cfg.max_queue_delay;
        Arc::new(Admission { core: Mutex::new(Core::new(cfg)), saturated: AtomicBool::new(false), full: AtomicBool::new(false), retry_ms: AtomicU64::new(0), max_queue_delay, metrics })
    }

    fn lock(&self) -> MutexGuard<'_, Core<oneshot::Sender<()>>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, core: &Core<oneshot::Sender<()>>, now: Instant) {
        let saturated = core.saturated(now);
        self.retry_ms.store(saturated.map_or(0, |(_, d)| d.as_millis() as u64), Ordering::Relaxed);
        self.full.store(matches!(saturated, Some((Shed::QueueFull, _))), Ordering::Relaxed);
        self.saturated.store(saturated.is_some(), Ordering::Relaxed);
        self.metrics.running.set(core.running() as i64);
        self.metrics.queued.set(core.queued() as i64);
    }

    /// `Some((why, retry delay))` when a new decision call would be shed anyway: read by the
    /// guard layer before the request is decoded. A few relaxed atomic loads.
    pub fn early_shed(&self) -> Option<(Shed, Duration)> {
        if !self.saturated.load(Ordering::Relaxed) {
            return None;
        }
        let why = if self.full.load(Ordering::Relaxed) { Shed::QueueFull } else { Shed::Overloaded };
        Some((why, Duration::from_millis(self.retry_ms.load(Ordering::Relaxed)).max(RETRY_MIN)))
    }

    /// A slot for a decision of `partnership`, waiting in its queue within the bounds and the
    /// call's `deadline`.
    pub async fn acquire(self: &Arc<Self>, partnership: &str, deadline: Option<Instant>) -> Result<Permit, Refused> {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Refused::DeadlinePassed);
        }
        let (tx, rx) = oneshot::channel();
        let arrival = {
            let mut core = self.lock();
            let a = core.arrive(now, partnership, deadline, tx);
            self.publish(&core, now);
            a
        };
        let part = match arrival {
            Arrival::Run(p) => return Ok(Permit { admission: Arc::clone(self), part: p, since: now }),
            Arrival::Shed(why, retry) => {
                self.metrics.shed(why.reason());
                return Err(Refused::Shed(why, retry));
            }
            Arrival::Queued(p) => p,
        };
        let mut waiting = Waiting { admission: self, part, rx: Some(rx) };
        let queue_bound = now + self.max_queue_delay;
        let (until, deadline_binds) = match deadline {
            Some(d) if d <= queue_bound => (d, true),
            _ => (queue_bound, false),
        };
        let rx = waiting.rx.as_mut().expect("receiver");
        match tokio::time::timeout_at(until.into(), rx).await {
            Ok(Ok(())) => {
                waiting.rx = None;
                Ok(Permit { admission: Arc::clone(self), part, since: Instant::now() })
            }
            // The sender is only dropped unsent when the queue is cleared, which needs this
            // waiter cancelled first; treat it as shedding all the same.
            Ok(Err(_)) => {
                waiting.rx = None;
                Err(Refused::Shed(Shed::QueueWait, RETRY_MIN))
            }
            Err(_) if deadline_binds => Err(Refused::DeadlinePassed),
            Err(_) => {
                self.metrics.shed(Shed::QueueWait.reason());
                Err(Refused::Shed(Shed::QueueWait, self.max_queue_delay.clamp(RETRY_MIN, RETRY_MAX)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const MS: Duration = Duration::from_millis(1);

    fn config(slots: usize) -> AdmissionConfig {
        AdmissionConfig::with_slots(slots)
    }

    /// Grants to every ticket not in `gone`, recording who got one.
    fn granter<'a>(gone: &'a HashSet<u32>, got: &'a mut Vec<u32>) -> impl FnMut(u32) -> bool + 'a {
        move |t| {
            if gone.contains(&t) {
                false
            } else {
                got.push(t);
                true
            }
        }
    }

    #[test]
    fn free_slots_run_at_once_then_calls_queue() {
        let t0 = Instant::now();
        let mut c = Core::new(config(2));
        assert_eq!(c.arrive(t0, "york", None, 1), Arrival::Run(0));
        assert_eq!(c.arrive(t0, "york", None, 2), Arrival::Run(0));
        assert_eq!(c.arrive(t0, "york", None, 3), Arrival::Queued(0));
        assert_eq!((c.running(), c.queued()), (2, 1));
        let (gone, mut got) = (HashSet::new(), Vec::new());
        c.release(t0 + MS, 0, MS, granter(&gone, &mut got));
        assert_eq!(got, vec![3]);
        assert_eq!((c.running(), c.queued()), (2, 0));
    }

    #[test]
    fn a_burst_the_server_clears_within_the_bound_is_queued_not_shed() {
        // 8 slots at 2 ms a decision clear 4,000 decisions a second: 2,000 queued calls expect
        // at most 0.5 s, within the 2 s bound and a 5 s deadline.
        let t0 = Instant::now();
        let mut c = Core::new(config(8));
        let deadline = Some(t0 + Duration::from_secs(5));
        let shed = (0..2000u32).filter(|&i| matches!(c.arrive(t0, "york", deadline, i), Arrival::Shed(..))).count();
        assert_eq!(shed, 0);
        assert_eq!((c.running(), c.queued()), (8, 1992));
    }

    #[test]
    fn a_call_whose_expected_wait_is_too_long_is_shed_with_a_retry_delay() {
        let t0 = Instant::now();
        let mut cfg = config(1);
        cfg.max_queue_delay = 10 * MS;
        let mut c = Core::new(cfg);
        assert_eq!(c.arrive(t0, "york", None, 0), Arrival::Run(0));
        // 2 ms a decision on one slot: the fifth waiter would expect 10 ms, the sixth 12 ms.
        for i in 1..=5 {
            assert_eq!(c.arrive(t0, "york", None, i), Arrival::Queued(0), "call {i}");
        }
        match c.arrive(t0, "york", None, 6) {
            Arrival::Shed(Shed::QueueDelay, retry) => assert!(retry >= RETRY_MIN, "{retry:?}"),
            other => panic!("expected shedding, got {other:?}"),
        }
    }

    #[test]
    fn a_call_that_would_miss_its_deadline_is_shed() {
        let t0 = Instant::now();
        let mut c = Core::new(config(1));
        assert_eq!(c.arrive(t0, "york", None, 0), Arrival::Run(0));
        assert!(matches!(c.arrive(t0, "york", Some(t0 + MS), 1), Arrival::Shed(Shed::WouldMissDeadline, _)));
        assert_eq!(c.arrive(t0, "york", Some(t0 + Duration::from_secs(1)), 2), Arrival::Queued(0));
    }

    #[test]
    fn the_hard_cap_bounds_the_queue() {
        let t0 = Instant::now();
        let mut cfg = config(1);
        cfg.max_queued = 3;
        let mut c = Core::new(cfg);
        assert_eq!(c.arrive(t0, "york", None, 0), Arrival::Run(0));
        for i in 1..=3 {
            assert_eq!(c.arrive(t0, "york", None, i), Arrival::Queued(0));
        }
        assert!(matches!(c.arrive(t0, "york", None, 4), Arrival::Shed(Shed::QueueFull, _)));
        assert!(c.saturated(t0).is_some(), "a full queue sheds before decoding");
    }

    #[test]
    fn cancelled_waiters_are_skipped_and_never_decided() {
        let t0 = Instant::now();
        let mut c = Core::new(config(1));
        c.arrive(t0, "york", None, 0);
        for i in 1..=3 {
            c.arrive(t0, "york", None, i);
        }
        c.cancel(0, |_| true); // ticket 1's deadline passed while it waited
        let gone = HashSet::from([1]);
        let mut got = Vec::new();
        c.release(t0 + MS, 0, MS, granter(&gone, &mut got));
        assert_eq!(got, vec![2]);
        assert_eq!((c.running(), c.queued()), (1, 1));
    }

    #[test]
    fn a_standing_queue_trips_codel_and_an_empty_one_ends_it() {
        let t0 = Instant::now();
        let mut cfg = config(1);
        cfg.target = 5 * MS;
        cfg.interval = 50 * MS;
        let mut c = Core::new(cfg);
        let (gone, mut got) = (HashSet::new(), Vec::new());
        c.arrive(t0, "york", None, 0);
        let mut next = 1;
        let mut now = t0;
        // Keep 20 waiters queued, each served 10 ms after the last: sojourns far above 5 ms.
        for _ in 0..20 {
            c.arrive(now, "york", None, next);
            next += 1;
        }
        for _ in 0..10 {
            now += 10 * MS;
            c.release(now, 0, 10 * MS, granter(&gone, &mut got));
            c.arrive(now, "york", None, next);
            next += 1;
        }
        assert!(c.overloaded("york"), "sojourn above target for an interval");
        // Overloaded, the bound is the 5 ms target: with 20 waiters at ~10 ms each, new calls are shed.
        assert!(matches!(c.arrive(now, "york", None, 999), Arrival::Shed(Shed::QueueDelay, _)));
        assert!(c.saturated(now).is_some(), "the only active partnership is saturated: shed before decoding");
        // Drain the queue: it ends.
        while c.queued() > 0 {
            now += MS;
            c.release(now, 0, MS, granter(&gone, &mut got));
        }
        assert!(!c.overloaded("york"));
        assert!(c.saturated(now).is_none());
    }

    #[test]
    fn partnerships_share_slots_and_borrow_idle_ones() {
        let t0 = Instant::now();
        let mut c = Core::new(config(4));
        // Norfolk alone borrows every slot.
        for i in 0..4 {
            assert_eq!(c.arrive(t0, "norfolk", None, i), Arrival::Run(0));
        }
        for i in 4..20 {
            assert_eq!(c.arrive(t0, "norfolk", None, i), Arrival::Queued(0));
        }
        // York arrives: it waits, but the next free slot is York's, not Norfolk's.
        assert_eq!(c.arrive(t0, "york", None, 100), Arrival::Queued(1));
        let (gone, mut got) = (HashSet::new(), Vec::new());
        c.release(t0 + MS, 0, 40 * MS, granter(&gone, &mut got));
        assert_eq!(got, vec![100]);
        // With York active, Norfolk is held to its fair share (2 of 4): freed slots stay idle for York.
        c.release(t0 + 2 * MS, 0, 40 * MS, granter(&gone, &mut got));
        assert_eq!(got, vec![100], "norfolk holds its share (2 of 4) while york is active: the slot stays free");
        c.release(t0 + 3 * MS, 0, 40 * MS, granter(&gone, &mut got));
        assert_eq!(got, vec![100, 4], "below its share, norfolk gets the next slot");
        // York's next call runs at once in the slot kept for it.
        assert_eq!(c.arrive(t0 + 4 * MS, "york", None, 101), Arrival::Run(1));
        // After York goes quiet, Norfolk borrows the idle slots again.
        let later = t0 + ACTIVE_WINDOW + Duration::from_secs(1);
        c.release(later, 1, MS, granter(&gone, &mut got));
        c.release(later, 1, MS, granter(&gone, &mut got));
        assert_eq!(c.running(), 4, "every slot busy again: {got:?}");
    }

    #[test]
    fn a_configured_share_caps_each_partnership() {
        let t0 = Instant::now();
        let mut cfg = config(8);
        cfg.partnership_slots = Some(1);
        let mut c = Core::new(cfg);
        c.arrive(t0, "york", None, 0);
        assert_eq!(c.arrive(t0, "norfolk", None, 1), Arrival::Run(1));
        assert_eq!(c.arrive(t0, "norfolk", None, 2), Arrival::Queued(1), "one slot each while both are active");
    }

    #[test]
    fn the_fair_share_is_of_cores_not_slots() {
        let t0 = Instant::now();
        let mut cfg = config(8);
        cfg.cores = 2;
        let mut c = Core::new(cfg);
        // Alone, norfolk borrows every idle slot.
        for i in 0..3 {
            assert!(matches!(c.arrive(t0, "norfolk", None, i), Arrival::Run(_)));
        }
        // With york active too, each may hold one core's worth: york runs, norfolk waits.
        assert!(matches!(c.arrive(t0, "york", None, 100), Arrival::Run(_)));
        assert!(matches!(c.arrive(t0, "norfolk", None, 3), Arrival::Queued(_)), "norfolk is over its share of the cores");
    }

    #[test]
    fn unknown_partnerships_do_not_grow_the_table() {
        let t0 = Instant::now();
        let mut c: Core<u32> = Core::new(config(1));
        for i in 0..1000u32 {
            let _ = c.arrive(t0, &format!("made-up-{i}"), None, i);
        }
        assert!(c.parts.len() <= MAX_PARTNERSHIPS + 1);
    }
}
