// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Reactors: one run-to-completion loop per core.
//!
//! Each reactor is a thread pinned to its core (pinning failure is tolerated and
//! reported in [`ReactorStats::pinned`]) that, every turn:
//! 1. runs up to [`INBOX_BATCH`] messages from its inbox (a bounded [`Ring`] other
//!    cores push closures onto; a full inbox hands the message back, nobody waits);
//! 2. runs every poller (channels' completions and pending queues live there);
//! 3. fires expired timers (retry delays, periodic work), kept in a small sorted list;
//! 4. announces a quiescent state to the QSBR domain.
//!
//! Stopping: the reactor tells each poller to stop ([`Poller::stop`]) and keeps turning
//! until every poller says it has drained (every I/O delivered exactly once, failed
//! or done) or the stop deadline passes.

use crate::qsbr::{Qsbr, QsbrReader};
use crate::ring::Ring;
use crate::{Error, Result};
use nvme_driver::clock;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages one turn runs at most.
pub const INBOX_BATCH: usize = 32;
/// Timers one reactor can hold.
pub const MAX_TIMERS: usize = 256;

/// Work a reactor runs every turn.
pub trait Poller: Send {
    /// Does a bounded amount of work; returns how much (0 when idle).
    fn poll(&mut self, ctx: &mut ReactorCtx) -> usize;
    /// Called every turn once the reactor is stopping: stop starting new work, fail
    /// what waits, keep completing what is in flight. Return true once drained.
    fn stop(&mut self, ctx: &mut ReactorCtx) -> bool {
        let _ = ctx;
        true
    }
}

/// A message: a closure run on the target reactor.
pub type Message = Box<dyn FnOnce(&mut ReactorCtx) + Send>;
/// A timer callback: returns `Some(period_ticks)` to fire again after that long.
pub type TimerFn = Box<dyn FnMut(&mut ReactorCtx) -> Option<u64> + Send>;

/// Timers due at TSC deadlines, kept sorted (latest first, so the next one pops off
/// the end).
#[derive(Default)]
pub struct Timers {
    list: Vec<(u64, TimerFn)>,
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("armed", &self.list.len())
            .finish()
    }
}

impl Timers {
    /// Arms `f` at `deadline` (ticks). Bounded: fails when [`MAX_TIMERS`] are armed.
    pub fn add(&mut self, deadline: u64, f: TimerFn) -> Result<()> {
        if self.list.len() >= MAX_TIMERS {
            return Err(Error::Exhausted(format!(
                "{MAX_TIMERS} timers armed on this reactor"
            )));
        }
        let pos = self.list.partition_point(|(d, _)| *d > deadline);
        self.list.insert(pos, (deadline, f));
        Ok(())
    }
    /// Timers armed.
    pub fn len(&self) -> usize {
        self.list.len()
    }
    /// True when none is armed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    fn pop_due(&mut self, now: u64) -> Option<TimerFn> {
        if self.list.last().is_some_and(|(d, _)| *d <= now) {
            return self.list.pop().map(|(_, f)| f);
        }
        None
    }
}

/// What pollers, messages and timers see of their reactor.
pub struct ReactorCtx {
    /// Index of this reactor.
    pub id: usize,
    /// The TSC at the start of this turn.
    pub now: u64,
    /// This reactor's timers.
    pub timers: Timers,
    new_pollers: Vec<Box<dyn Poller>>,
    stopping: bool,
}

impl fmt::Debug for ReactorCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorCtx")
            .field("id", &self.id)
            .field("stopping", &self.stopping)
            .finish()
    }
}

impl ReactorCtx {
    /// Adds a poller to this reactor (from a message or another poller).
    pub fn add_poller(&mut self, p: Box<dyn Poller>) {
        self.new_pollers.push(p);
    }
    /// True once the reactor is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping
    }
}

/// Counters of one reactor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReactorStats {
    /// Loop turns.
    pub turns: u64,
    /// Turns that did no work.
    pub idle_turns: u64,
    /// Messages run.
    pub messages: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Whether the thread was pinned to its core.
    pub pinned: bool,
    /// Pollers that had not drained when the stop deadline passed.
    pub undrained: u64,
}

struct Shared {
    inbox: Ring<Message>,
    stop: AtomicBool,
    turns: AtomicU64,
}

/// Options for starting reactors.
#[derive(Clone, Debug)]
pub struct ReactorOptions {
    /// Core IDs to run on, one reactor each.
    pub cores: Vec<usize>,
    /// Pin each reactor to its core (failure is tolerated and reported).
    pub pin: bool,
    /// Inbox slots per reactor.
    pub inbox: usize,
    /// How long stopping may take for pollers to drain.
    pub stop_timeout: Duration,
}

impl ReactorOptions {
    /// `n` reactors on cores 0..n.
    pub fn cores(n: usize) -> Self {
        ReactorOptions {
            cores: (0..n).collect(),
            pin: true,
            inbox: 1024,
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// The running reactors.
pub struct Reactors {
    shared: Vec<Arc<Shared>>,
    threads: Vec<JoinHandle<ReactorStats>>,
    qsbr: Arc<Qsbr>,
}

impl fmt::Debug for Reactors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactors")
            .field("count", &self.shared.len())
            .finish()
    }
}

impl Reactors {
    /// Starts one reactor per core in `opts`, registered as readers of `qsbr`.
    pub fn start(opts: ReactorOptions, qsbr: Arc<Qsbr>) -> Result<Reactors> {
        if opts.cores.is_empty() {
            return Err(Error::InvalidOption("no cores given for reactors".into()));
        }
        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let mut r = Reactors {
            shared: Vec::new(),
            threads: Vec::new(),
            qsbr: qsbr.clone(),
        };
        for (id, &core) in opts.cores.iter().enumerate() {
            let shared = Arc::new(Shared {
                inbox: Ring::new(opts.inbox),
                stop: AtomicBool::new(false),
                turns: AtomicU64::new(0),
            });
            let reader = qsbr.register()?;
            let s = shared.clone();
            let pin = opts
                .pin
                .then(|| core_ids.iter().copied().find(|c| c.id == core))
                .flatten();
            let timeout = opts.stop_timeout;
            let t = std::thread::Builder::new()
                .name(format!("reactor{id}"))
                .spawn(move || run(id, s, reader, pin, timeout))
                .map_err(|source| Error::Io {
                    what: format!("spawning reactor {id}"),
                    source,
                })?;
            r.shared.push(shared);
            r.threads.push(t);
        }
        Ok(r)
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Never true: at least one reactor runs.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }

    /// The QSBR domain the reactors announce to.
    pub fn qsbr(&self) -> &Arc<Qsbr> {
        &self.qsbr
    }

    /// Sends a closure to reactor `id`; a full inbox hands it back as an error.
    pub fn send(&self, id: usize, msg: Message) -> std::result::Result<(), (Error, Message)> {
        let Some(s) = self.shared.get(id) else {
            return Err((
                Error::InvalidOption(format!("no reactor {id}; there are {}", self.len())),
                msg,
            ));
        };
        if s.stop.load(Ordering::Acquire) {
            return Err((Error::Stopped(format!("reactor {id} is stopping")), msg));
        }
        s.inbox.push(msg).map_err(|m| {
            (
                Error::Exhausted(format!(
                    "reactor {id}'s inbox is full ({} messages)",
                    s.inbox.capacity()
                )),
                m,
            )
        })
    }

    /// Adds a poller to reactor `id`.
    pub fn add_poller(&self, id: usize, p: Box<dyn Poller>) -> Result<()> {
        self.send(id, Box::new(move |ctx: &mut ReactorCtx| ctx.add_poller(p)))
            .map_err(|(e, _)| e)
    }

    /// Loop turns reactor `id` has made (for tests and progress checks).
    pub fn turns(&self, id: usize) -> u64 {
        self.shared
            .get(id)
            .map_or(0, |s| s.turns.load(Ordering::Relaxed))
    }

    /// Stops every reactor: pollers drain (see [`Poller::stop`]) and the threads end.
    pub fn stop(mut self) -> Result<Vec<ReactorStats>> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<Vec<ReactorStats>> {
        for s in &self.shared {
            s.stop.store(true, Ordering::Release);
        }
        let mut out = Vec::new();
        for t in self.threads.drain(..) {
            out.push(
                t.join()
                    .map_err(|_| Error::Stopped("a reactor panicked".into()))?,
            );
        }
        Ok(out)
    }
}

impl Drop for Reactors {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

fn run(
    id: usize,
    shared: Arc<Shared>,
    mut reader: QsbrReader,
    pin: Option<core_affinity::CoreId>,
    stop_timeout: Duration,
) -> ReactorStats {
    let mut stats = ReactorStats {
        pinned: pin.is_some_and(core_affinity::set_for_current),
        ..Default::default()
    };
    let mut ctx = ReactorCtx {
        id,
        now: clock::ticks(),
        timers: Timers::default(),
        new_pollers: Vec::new(),
        stopping: false,
    };
    let mut pollers: Vec<Box<dyn Poller>> = Vec::new();
    let mut drained: Vec<bool> = Vec::new();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        ctx.now = clock::ticks();
        let mut work = 0;
        for _ in 0..INBOX_BATCH {
            let Some(m) = shared.inbox.pop() else { break };
            m(&mut ctx);
            stats.messages += 1;
            work += 1;
        }
        if !ctx.new_pollers.is_empty() {
            drained.resize(pollers.len() + ctx.new_pollers.len(), false);
            pollers.append(&mut ctx.new_pollers);
        }
        for p in pollers.iter_mut() {
            work += p.poll(&mut ctx);
        }
        while let Some(mut f) = ctx.timers.pop_due(ctx.now) {
            stats.timers_fired += 1;
            work += 1;
            if let Some(period) = f(&mut ctx) {
                let _ = ctx.timers.add(ctx.now.saturating_add(period.max(1)), f);
            }
        }
        reader.quiescent();
        stats.turns += 1;
        if work == 0 {
            stats.idle_turns += 1;
            std::hint::spin_loop();
        }
        shared.turns.store(stats.turns, Ordering::Relaxed);
        if shared.stop.load(Ordering::Acquire) {
            ctx.stopping = true;
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + stop_timeout);
            for (p, d) in pollers.iter_mut().zip(drained.iter_mut()) {
                if !*d {
                    *d = p.stop(&mut ctx);
                }
            }
            // Messages still queued run once more before the end (they may carry
            // work to fail); then the loop ends when everything drained.
            if shared.inbox.is_empty() && drained.iter().all(|d| *d) {
                break;
            }
            if Instant::now() > deadline {
                stats.undrained = drained.iter().filter(|d| !**d).count() as u64;
                break;
            }
        }
    }
    stats
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counter(Arc<AtomicUsize>, usize);
    impl Poller for Counter {
        fn poll(&mut self, _ctx: &mut ReactorCtx) -> usize {
            self.0.fetch_add(1, Ordering::Relaxed);
            0
        }
        fn stop(&mut self, _ctx: &mut ReactorCtx) -> bool {
            self.1 = self.1.saturating_sub(1);
            self.1 == 0
        }
    }

    #[test]
    fn messages_pollers_timers_and_clean_stop() {
        let q = Qsbr::new(8);
        let r = Reactors::start(
            ReactorOptions {
                pin: false,
                ..ReactorOptions::cores(2)
            },
            q.clone(),
        )
        .unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        r.add_poller(1, Box::new(Counter(polls.clone(), 10)))
            .unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let f2 = fired.clone();
        r.send(
            0,
            Box::new(move |ctx: &mut ReactorCtx| {
                let period = clock::ms_to_ticks(1);
                let f3 = f2.clone();
                ctx.timers
                    .add(
                        ctx.now + period,
                        Box::new(move |_ctx: &mut ReactorCtx| {
                            let n = f3.fetch_add(1, Ordering::Relaxed);
                            (n < 4).then_some(period)
                        }),
                    )
                    .unwrap();
            }),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        let t0 = Instant::now();
        while fired.load(Ordering::Relaxed) < 5 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            fired.load(Ordering::Relaxed),
            5,
            "periodic timer fired 5 times and stopped"
        );
        assert!(polls.load(Ordering::Relaxed) > 0);
        assert!(r.turns(0) > 0 && r.turns(1) > 0);
        let stats = r.stop().unwrap();
        assert_eq!(stats.len(), 2);
        assert!(stats.iter().all(|s| s.undrained == 0));
        // Both reactors announced: nothing is held back.
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn timers_sort_by_deadline() {
        let mut t = Timers::default();
        for d in [30u64, 10, 20] {
            t.add(d, Box::new(|_| None)).unwrap();
        }
        assert!(t.pop_due(5).is_none());
        assert!(t.pop_due(15).is_some());
        assert!(t.pop_due(15).is_none());
        assert!(t.pop_due(100).is_some() && t.pop_due(100).is_some());
        assert!(t.is_empty());
    }
}
