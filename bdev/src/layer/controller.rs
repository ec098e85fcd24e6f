// SPDX-License-Identifier: Apache-2.0 OR MIT
//! One attached controller: its record, its link state, and its controller thread.
//!
//! The controller thread (never a reactor: resets block for their duration) calls
//! `process_admin` every `admin_poll_us`, follows ANA changes (events, and channels'
//! reports of ANA error statuses), performs requested resets (path out of the set
//! first, reset, path back), and reconnects a lost controller every
//! `reconnect_delay_ms` until `ctrl_loss_timeout_ms`, after which its paths are
//! removed. The link moves `Live` -> `Lost` (the controller failed) -> `Live` (a
//! reconnect: a new controller instance, its paths new path instances) or `Gone` (the
//! loss timeout passed, or it is 0: the paths are removed for good).

use super::{Bdev, Connector, ControllerStats, Inner, NvmeQueue};
use crate::mpath::{Multipath, PathShared, PathState};
use crate::sync::lock_std as lock;
use crate::Result;
use nvme_driver::spec::AnaState;
use nvme_driver::{Controller, CtrlState, IoQpair};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a controller's link stands.
#[derive(Clone, Debug)]
pub(super) enum LinkState {
    /// Connected: this controller instance serves the paths.
    Live(Controller),
    /// The controller failed at `since`; the next reconnect attempt is due at
    /// `next_attempt`. Its paths stay in their sets, unusable, until the loss timeout.
    Lost {
        since: Instant,
        next_attempt: Instant,
    },
    /// Given up (loss timeout): no controller and no paths.
    Gone,
}

/// Which [`LinkState`] a link is in, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkKind {
    /// [`LinkState::Live`].
    Live,
    /// [`LinkState::Lost`].
    Lost,
    /// [`LinkState::Gone`].
    Gone,
}

/// A path one controller provides: the multipath bdev, the path, the NSID.
pub(super) struct CtrlPath {
    mp: Arc<Multipath<NvmeQueue>>,
    path: Arc<PathShared>,
    nsid: u32,
}

/// An attached controller, shared by the layer, its namespace bdevs and its thread.
pub(crate) struct CtrlRecord {
    pub(super) name: String,
    connector: Connector,
    link: Mutex<LinkState>,
    /// The fan-out mapper key of the current instance's address space.
    space: AtomicU64,
    pub(super) reset_requested: AtomicBool,
    /// Set by the hot-plug thread when the controller's address reappeared: the next
    /// reconnect attempt (the current one, if the link is lost) is made at once.
    pub(super) reconnect_now: AtomicBool,
    stop: AtomicBool,
    pub(super) resets: AtomicU64,
    pub(super) reconnects: AtomicU64,
    /// Resets completed by earlier instances and by the current one up to
    /// `instance_resets` (see [`CtrlRecord::count_resets`]).
    resets_all: AtomicU64,
    /// The current instance's reset count already added to `resets_all`.
    instance_resets: AtomicU64,
    /// Times a live instance failed.
    failures: AtomicU64,
    paths: Mutex<Vec<CtrlPath>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// When the controller thread last read the ANA log unasked (see `ANA_RECHECK`).
    ana_rechecked: Mutex<Instant>,
    /// Queue pairs of closed namespace-bdev channels, dropped by the controller
    /// thread (see [`CtrlRecord::retire`]).
    retired: Mutex<Vec<IoQpair>>,
    /// The live instance's `namespace_changes` when its sizes were last followed
    /// (`u64::MAX`: a new instance, not looked at yet; see [`follow_sizes`]).
    ns_changes_seen: AtomicU64,
}

/// How often a controller with a path that is not accessible re-reads its ANA log
/// unasked. The change notice that would bring the path back can be lost (an
/// Asynchronous Event completion the host never sees), and no I/O goes down an
/// inaccessible path to learn of the change from its status. One Get Log Page a
/// second, only while degraded; if the admin queue itself is stuck, the read times
/// out and the driver resets the controller, which reads the log again.
const ANA_RECHECK: Duration = Duration::from_secs(1);

impl CtrlRecord {
    /// The record of controller `name`, live as `ctrl` in address space `space`, with no
    /// paths and no thread yet.
    pub(super) fn new(name: &str, connector: Connector, ctrl: Controller, space: u64) -> Self {
        CtrlRecord {
            name: name.to_string(),
            connector,
            link: Mutex::new(LinkState::Live(ctrl)),
            space: AtomicU64::new(space),
            reset_requested: AtomicBool::new(false),
            reconnect_now: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            resets_all: AtomicU64::new(0),
            instance_resets: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
            thread: Mutex::new(None),
            ana_rechecked: Mutex::new(Instant::now()),
            retired: Mutex::new(Vec::new()),
            ns_changes_seen: AtomicU64::new(0),
        }
    }

    /// Takes the queue pair of a closed channel, to be dropped on the controller
    /// thread: dropping one deletes its queues on the device, an admin command that
    /// a device in trouble may leave unanswered for the admin timeout, which must not
    /// hold the embedder's thread (the multipath bdev's channels return theirs the
    /// same way). Once the thread has stopped, the queue pair is dropped here: the
    /// controller is then failed or shut down, and deletes nothing.
    pub(super) fn retire(&self, qpair: IoQpair) {
        if self.stop.load(Ordering::Acquire) {
            drop(qpair);
        } else {
            lock(&self.retired).push(qpair);
        }
    }

    /// Drops the queue pairs [`CtrlRecord::retire`] took.
    fn drop_retired(&self) {
        let dead = std::mem::take(&mut *lock(&self.retired));
        drop(dead);
    }

    /// The controller, while the link is live.
    pub(super) fn live_controller(&self) -> Option<Controller> {
        match &*lock(&self.link) {
            LinkState::Live(ctrl) => Some(ctrl.clone()),
            LinkState::Lost { .. } | LinkState::Gone => None,
        }
    }

    /// Where the link stands.
    pub(super) fn link_kind(&self) -> LinkKind {
        match &*lock(&self.link) {
            LinkState::Live(_) => LinkKind::Live,
            LinkState::Lost { .. } => LinkKind::Lost,
            LinkState::Gone => LinkKind::Gone,
        }
    }

    /// What was done to this controller so far (see [`ControllerStats`]).
    pub(super) fn stats(&self) -> ControllerStats {
        ControllerStats {
            resets_requested: self.resets.load(Ordering::Relaxed),
            resets: self.resets_all.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Adds the resets `ctrl` (the live instance) completed since the last call to
    /// `resets_all`: the driver counts per instance, the record over all of them.
    fn count_resets(&self, ctrl: &Controller) {
        let now = ctrl.reset_count();
        let before = self.instance_resets.swap(now, Ordering::Relaxed);
        self.resets_all
            .fetch_add(now.saturating_sub(before), Ordering::Relaxed);
    }

    /// Starts the controller thread.
    pub(super) fn start_thread(self: &Arc<Self>, inner: Arc<Inner>) -> Result<()> {
        let record = self.clone();
        let t = std::thread::Builder::new()
            .name(format!("{}-ctrl", self.name))
            .spawn(move || controller_thread(inner, record))
            .map_err(|source| crate::Error::Io {
                what: format!("spawning the controller thread of {}", self.name),
                source,
            })?;
        *lock(&self.thread) = Some(t);
        Ok(())
    }
}

/// The ANA state of namespace `nsid` through `ctrl` (`Optimized` without ANA).
fn ana_of(ctrl: &Controller, nsid: u32) -> AnaState {
    if !ctrl.identify().ana_supported() {
        return AnaState::Optimized;
    }
    let grp = ctrl.namespace(nsid).map(|n| n.id.anagrpid).unwrap_or(0);
    ctrl.ana_log()
        .and_then(|log| {
            log.groups
                .iter()
                .find(|g| g.grpid == grp || g.nsids.contains(&nsid))
                .map(|g| g.state)
        })
        .unwrap_or(AnaState::Optimized)
}

/// Adds the path to namespace `nsid` through `ctrl` to `mp`; the path's record makes
/// each channel's queue pair on `ctrl`.
pub(super) fn add_path(
    inner: &Inner,
    record: &CtrlRecord,
    mp: &Arc<Multipath<NvmeQueue>>,
    ctrl: &Controller,
    nsid: u32,
) -> Result<()> {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let path = Arc::new(PathShared::new(id, record.name.clone(), nsid));
    let state = PathState {
        connected: ctrl.state() == CtrlState::Live,
        ana: ana_of(ctrl, nsid),
    };
    let opts = inner.opts.qpair;
    let queue_ctrl = ctrl.clone();
    // The controller instance's address-space id names it in the channels' queue
    // groups: every path of this instance joins the group's one queue pair on it.
    let instance = record.space.load(Ordering::Acquire);
    let depth = inner.opts.mpath.channel_depth;
    mp.add_path(
        path.clone(),
        state,
        Box::new(move |group| {
            group.join(instance, depth, || Ok(queue_ctrl.create_io_qpair(opts)?))
        }),
    )?;
    lock(&record.paths).push(CtrlPath {
        mp: mp.clone(),
        path,
        nsid,
    });
    Ok(())
}

/// Takes every path of the controller out of its multipath bdev.
fn remove_paths(record: &CtrlRecord) {
    for p in lock(&record.paths).drain(..) {
        p.mp.remove_path(p.path.id);
    }
}

/// Publishes the state of every path of the controller: connected or not, and the
/// ANA state through `ctrl` (inaccessible without one).
fn set_connected(record: &CtrlRecord, connected: bool, ctrl: Option<&Controller>) {
    set_states(record, connected, ctrl, &[]);
}

/// As [`set_connected`], and each path in `ana_read` (ids of paths whose ANA log was
/// re-read after a channel's ANA error) is published even if its state did not
/// change ([`Multipath::ana_log_read`]).
fn set_states(record: &CtrlRecord, connected: bool, ctrl: Option<&Controller>, ana_read: &[u64]) {
    for p in lock(&record.paths).iter() {
        let ana = ctrl.map_or(AnaState::Inaccessible, |c| ana_of(c, p.nsid));
        let state = PathState { connected, ana };
        if ana_read.contains(&p.path.id) {
            p.mp.ana_log_read(p.path.id, state);
        } else {
            p.mp.set_path_state(p.path.id, state);
        }
    }
}

/// How often [`stop`] looks whether the controller thread has ended.
const STOP_POLL: Duration = Duration::from_millis(1);

/// How [`stop`] leaves a live controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopMode {
    /// Detach: the controller is failed (queues deleted, disabled).
    Detach,
    /// The layer's shutdown: the orderly stop of [`Controller::shutdown`] (a flush
    /// of a volatile write cache, then the normal shutdown notification, waited for),
    /// unless the layer's controller options say `no_shn_notification`.
    Shutdown,
}

/// Stops a controller's thread and takes its paths and namespace bdevs away. A live
/// controller is failed (detach) or shut down (`StopMode`) first, while channels may
/// still have I/O on it: the device stops touching memory before the buffer window is
/// unmapped from its address space, and what its queue pairs hold comes back to their
/// owners as path errors (retried on another path, or failed once no path is left)
/// instead of being finished against unmapped memory (a Data Transfer Error, which
/// does not retry).
pub(super) fn stop(inner: &Inner, record: &Arc<CtrlRecord>, mode: StopMode) {
    record.stop.store(true, Ordering::Release);
    if let Some(t) = lock(&record.thread).take() {
        // The thread looks at `stop` between steps, but a step may be waiting on an
        // admin command the device never answers (a lost completion; the delete of a
        // retired queue pair's queues): end such waits rather than sit out the admin
        // timeout. Again until the thread is gone, since it may begin a wait after a
        // cancel, and may replace the controller (a reconnect).
        while !t.is_finished() {
            if let Some(c) = record.live_controller() {
                c.cancel_admin_waits();
            }
            std::thread::sleep(STOP_POLL);
        }
        if t.join().is_err() {
            log::error!("{}: the controller thread panicked", record.name);
        }
    }
    // Before the shutdown, which needs their queues gone (a channel closed while the
    // thread stopped left its queue pair here).
    record.drop_retired();
    // After the thread stopped: it would take the failure for a loss and reconnect.
    if let Some(c) = record.live_controller() {
        match mode {
            StopMode::Detach => c.fail("detached"),
            StopMode::Shutdown => {
                if let Err(e) = c.shutdown() {
                    log::warn!("{}: shutdown: {e}", record.name);
                }
            }
        }
    }
    remove_paths(record);
    inner
        .bufs
        .fanout
        .detach(record.space.load(Ordering::Relaxed));
    lock(&inner.bdevs).retain(|b| !matches!(b, Bdev::Nvme(n) if Arc::ptr_eq(&n.ctrl, record)));
    inner.events.stopped(&record.name);
}

fn controller_thread(inner: Arc<Inner>, record: Arc<CtrlRecord>) {
    let poll = Duration::from_micros(inner.opts.admin_poll_us);
    while !record.stop.load(Ordering::Acquire) {
        let link = lock(&record.link).clone();
        let next = match link {
            LinkState::Live(ctrl) => tend_live(&inner, &record, &ctrl),
            LinkState::Lost {
                since,
                next_attempt,
            } => tend_lost(&inner, &record, since, next_attempt),
            LinkState::Gone => None,
        };
        if let Some(next) = next {
            let live = matches!(next, LinkState::Live(_));
            *lock(&record.link) = next;
            inner.events.link(&record.name, live);
        }
        let mps: Vec<_> = lock(&record.paths).iter().map(|p| p.mp.clone()).collect();
        for m in mps {
            m.tick();
        }
        record.drop_retired();
        std::thread::sleep(poll);
    }
}

/// One turn of a live controller's housekeeping; returns the new link state if it
/// changed.
fn tend_live(inner: &Inner, record: &CtrlRecord, ctrl: &Controller) -> Option<LinkState> {
    if record.reset_requested.swap(false, Ordering::AcqRel) {
        // Out of the path set first: no new I/O goes this way while the reset runs;
        // what is in flight comes back as path errors.
        set_connected(record, false, Some(ctrl));
        match ctrl.reset() {
            Ok(()) => {
                record.resets.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log::warn!("{}: reset failed: {e}", record.name),
        }
    }
    let state = ctrl.process_admin();
    record.count_resets(ctrl);
    if state == CtrlState::Failed {
        record.failures.fetch_add(1, Ordering::Relaxed);
        set_connected(record, false, None);
        let opts = &inner.opts.mpath;
        if opts.ctrl_loss_timeout_ms == 0 {
            log::warn!(
                "{}: controller failed; its paths are removed (ctrl_loss_timeout_ms is 0)",
                record.name
            );
            remove_paths(record);
            return Some(LinkState::Gone);
        }
        log::warn!(
            "{}: controller failed; reconnecting every {} ms",
            record.name,
            opts.reconnect_delay_ms
        );
        let now = Instant::now();
        return Some(LinkState::Lost {
            since: now,
            next_attempt: now + Duration::from_millis(opts.reconnect_delay_ms),
        });
    }
    follow_sizes(inner, record, ctrl);
    let _events = ctrl.take_events();
    // This thread alone clears its paths' flags, every one that is set (not only up
    // to the first), before the re-read: an ANA error reported after it sets its flag
    // again and gets a re-read of its own.
    let stale: Vec<u64> = lock(&record.paths)
        .iter()
        .filter(|p| p.path.ana_stale.swap(false, Ordering::AcqRel))
        .map(|p| p.path.id)
        .collect();
    let degraded = || {
        lock(&record.paths).iter().any(|p| {
            !matches!(
                ana_of(ctrl, p.nsid),
                AnaState::Optimized | AnaState::NonOptimized
            )
        })
    };
    let recheck = || {
        let mut at = lock(&record.ana_rechecked);
        let due = at.elapsed() >= ANA_RECHECK;
        if due {
            *at = Instant::now();
        }
        due
    };
    if ctrl.identify().ana_supported() && (!stale.is_empty() || (degraded() && recheck())) {
        if let Err(e) = ctrl.refresh_ana() {
            log::warn!("{}: ANA log re-read failed: {e}", record.name);
        }
    }
    // The flagged paths get a new path set even when nothing changed, and even when
    // the re-read failed or there is no log to read: their channels avoid them until
    // the next set, and a path that still returns ANA errors is flagged again by the
    // next one (a failed read is the admin queue's trouble, which ends in a reset).
    set_states(record, ctrl.state() == CtrlState::Live, Some(ctrl), &stale);
    None
}

/// One turn of a lost controller's housekeeping: a reconnect attempt when one is due,
/// or the end once the loss timeout passed.
fn tend_lost(
    inner: &Inner,
    record: &CtrlRecord,
    since: Instant,
    next_attempt: Instant,
) -> Option<LinkState> {
    let opts = &inner.opts.mpath;
    let loss = opts.ctrl_loss_timeout_ms;
    if loss > 0 && since.elapsed() > Duration::from_millis(loss as u64) {
        log::warn!(
            "{}: lost for more than {loss} ms (ctrl_loss_timeout_ms); its paths are removed",
            record.name
        );
        remove_paths(record);
        return Some(LinkState::Gone);
    }
    // The hot-plug thread saw the controller's address come back: no need to wait.
    if Instant::now() < next_attempt && !record.reconnect_now.swap(false, Ordering::AcqRel) {
        return None;
    }
    match reconnect(inner, record) {
        Ok(ctrl) => {
            record.reconnects.fetch_add(1, Ordering::Relaxed);
            record.instance_resets.store(0, Ordering::Relaxed);
            record.ns_changes_seen.store(u64::MAX, Ordering::Relaxed);
            log::info!("{}: reconnected", record.name);
            Some(LinkState::Live(ctrl))
        }
        Err(e) => {
            log::debug!("{}: reconnect attempt failed: {e}", record.name);
            Some(LinkState::Lost {
                since,
                next_attempt: Instant::now() + Duration::from_millis(opts.reconnect_delay_ms),
            })
        }
    }
}

/// Brings up the controller `connector` reaches, with the layer's buffer window
/// registered and mapped into its IOMMU domain; returns it with its address-space id.
pub(super) fn connect(inner: &Inner, connector: &Connector) -> Result<(Controller, u64)> {
    let bus = connector()?;
    let ctrl = Controller::init(bus.clone(), inner.opts.ctrl.clone())?;
    // Multipath channels poll only the queue pairs they gave I/O and look at the rest
    // when the QSBR epoch moves: a reset or failure of this controller moves it, so
    // an idle queue pair acknowledges a reset at its channel's next poll.
    let qsbr = inner.qsbr.clone();
    ctrl.on_queue_state_change(move || qsbr.bump())?;
    // The shared buffers' window last: a queue pair looks at the newest window first,
    // and most I/O comes from those buffers (registered caller memory pays one more
    // window test).
    ctrl.add_dma_window(
        nvme_driver::Iova(crate::dma::REGISTERED_BASE),
        crate::dma::REGISTERED_MAX,
    )?;
    let (base, len) = inner.bufs.window();
    ctrl.add_dma_window(base, len)?;
    let space = inner.next_id.fetch_add(1, Ordering::Relaxed);
    inner.bufs.fanout.attach(space, bus.mapper())?;
    Ok((ctrl, space))
}

/// `CtrlRecord::space` while no instance holds an address space (between a failed
/// instance's and a reconnected one's); ids are counted from 0 and never get here.
const NO_SPACE: u64 = u64::MAX;

/// A new controller instance for a lost one: its paths are replaced by new path
/// instances through it.
fn reconnect(inner: &Inner, record: &CtrlRecord) -> Result<Controller> {
    // The old instance failed: the driver deleted its queues and disabled it, so the
    // device no longer reaches the buffers. Their window leaves its IOMMU domain
    // first: the connector may hand back the same device (a controller that failed
    // but is still there), whose domain must take the window again.
    let old_space = record.space.swap(NO_SPACE, Ordering::AcqRel);
    if old_space != NO_SPACE {
        inner.bufs.fanout.detach(old_space);
    }
    let (ctrl, space) = connect(inner, &record.connector)?;
    record.space.store(space, Ordering::Release);
    let old: Vec<_> = lock(&record.paths).drain(..).collect();
    let mut result = Ok(());
    let mut not_readded = Vec::new();
    for p in old {
        if result.is_err() {
            not_readded.push(p);
            continue;
        }
        p.mp.remove_path(p.path.id);
        if let Err(e) = add_path(inner, record, &p.mp, &ctrl, p.nsid) {
            // The new instance failed already (its queues cannot be made): this path
            // and the rest stay on the record, so the next attempt adds them back
            // (their old ids are gone from the bdevs; removing them again is a no-op).
            not_readded.push(p);
            result = Err(e);
        }
    }
    lock(&record.paths).extend(not_readded);
    result.map(|()| ctrl)
}

/// Follows the sizes of the controller's namespaces: when the live instance found a
/// namespace resized since the last look (`Controller::namespace_changes`, moved by
/// its rescan after a Namespace Attribute Changed notice), or is a new instance, each
/// of the controller's namespace bdevs takes its namespace's size and each of its
/// multipath paths reports it (the multipath bdev follows the smallest,
/// `mpath/size.rs`). A change is reported as [`BdevEvent::Resized`](crate::BdevEvent),
/// once per bdev.
fn follow_sizes(inner: &Inner, record: &CtrlRecord, ctrl: &Controller) {
    let changes = ctrl.namespace_changes();
    if record.ns_changes_seen.swap(changes, Ordering::AcqRel) == changes {
        return;
    }
    let namespaces = ctrl.namespaces();
    let size_of = |nsid: u32| namespaces.iter().find(|n| n.nsid == nsid).map(|n| n.nsze);
    let ns_bdevs: Vec<_> = lock(&inner.bdevs)
        .iter()
        .filter_map(|b| match b {
            Bdev::Nvme(n) if std::ptr::eq(Arc::as_ptr(&n.ctrl), record) => Some(n.clone()),
            _ => None,
        })
        .collect();
    for b in ns_bdevs {
        if let Some(blocks) = size_of(b.nsid) {
            b.resize(blocks, &inner.events);
        }
    }
    for p in lock(&record.paths).iter() {
        if let Some(blocks) = size_of(p.nsid) {
            p.mp.set_path_blocks(p.path.id, blocks);
        }
    }
}
