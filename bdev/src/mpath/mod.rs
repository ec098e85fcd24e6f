// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The multipath core: the path set, its writers, and the per-core channels.
//!
//! The path set is an immutable [`PathSet`] snapshot in a [`QsbrCell`]. Channels load it
//! without locks; writers (controller threads, the API) build a new one under the
//! writer lock, publish it with one swap, and leave the old one to QSBR reclamation.
//! No writer ever waits for a channel: queue pairs for a new path are handed to each
//! channel through its mailbox (a bounded ring; when full, the message waits on the
//! writer's side and is retried at the next [`Multipath::tick`]), and queue pairs a
//! channel no longer needs come back through a graveyard that `tick` empties.
//!
//! [`Multipath`] is generic over the per-path queue ([`PathQueue`]) so the failover
//! logic runs against models in unit, `shuttle` and `loom` tests;
//! [`BlockLayer`](crate::BlockLayer) instantiates it with NVMe queue pairs and drives it
//! from controller threads.

mod channel;
mod options;
mod size;

pub use channel::{ChannelStats, MpathChannel, PathIoStats};
pub use options::{MpathOptions, Policy};

use crate::events::EventHub;
use crate::io::PathQueue;
use crate::iostat::{BdevIoStat, StatRegistry};
use crate::qsbr::{Qsbr, QsbrCell};
use crate::ring::Ring;
use crate::share::QueueGroup;
use crate::sync::lock_std as lock;
use crate::{Error, Result};
use nvme_driver::spec::AnaState;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Paths one multipath bdev can have at once.
pub const MAX_PATHS: usize = 16;
/// Messages a channel's mailbox holds.
const MAILBOX: usize = 64;

/// What a bdev is: its geometry and identifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BdevInfo {
    /// Name to open it by.
    pub name: String,
    /// Block size in bytes (a power of two).
    pub block_size: u32,
    /// Number of blocks when the bdev was made. The namespace may be resized since:
    /// the current count is [`Bdev::num_blocks`](crate::Bdev::num_blocks).
    pub num_blocks: u64,
    /// NVM subsystem NQN.
    pub subnqn: String,
    /// Namespace Globally Unique Identifier.
    pub nguid: Option<[u8; 16]>,
    /// IEEE EUI-64.
    pub eui64: Option<[u8; 8]>,
    /// UUID.
    pub uuid: Option<[u8; 16]>,
}

impl BdevInfo {
    /// True if `other` is the same namespace: same subsystem and a shared identifier.
    pub fn same_namespace(&self, other: &BdevInfo) -> bool {
        self.subnqn == other.subnqn
            && ((self.nguid.is_some() && self.nguid == other.nguid)
                || (self.eui64.is_some() && self.eui64 == other.eui64)
                || (self.uuid.is_some() && self.uuid == other.uuid))
    }
}

/// The state of one path as its controller thread sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathState {
    /// Controller live and its queue pairs connected (false while resetting, lost).
    pub connected: bool,
    /// ANA state of the namespace's group through this controller (`Optimized` for
    /// controllers without ANA).
    pub ana: AnaState,
}

impl PathState {
    /// I/O may go this way.
    pub fn usable(&self) -> bool {
        self.connected && self.ana.is_usable()
    }
}

/// One path in a published [`PathSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathView {
    /// Path instance identifier (a reconnected controller is a new instance).
    pub id: u64,
    /// Its state when the set was published.
    pub state: PathState,
}

/// An immutable snapshot of a bdev's paths.
#[derive(Clone, Debug, Default)]
pub struct PathSet {
    /// Increases with every publication.
    pub generation: u64,
    /// Every path, in the order they were added.
    pub paths: Vec<PathView>,
    /// While some path is in ANA transition, I/O without a usable path is not failed
    /// before this time (TSC ticks): the ANA transition time is honoured.
    pub hold_until: u64,
}

/// What channels share about one path instance.
#[derive(Debug)]
pub struct PathShared {
    /// Instance identifier.
    pub id: u64,
    /// The controller's name.
    pub name: String,
    /// Namespace ID on that controller.
    pub nsid: u32,
    /// Set by a channel that saw an ANA error status: re-read the ANA log, then
    /// publish a new path set even if nothing changed ([`Multipath::ana_log_read`]):
    /// channels avoid the path until that set (or the ANA transition time) passes.
    pub ana_stale: AtomicBool,
    /// I/Os moved off this path after a path error (all cores).
    pub failovers: AtomicU64,
}

impl PathShared {
    /// A path instance with no flags set and nothing counted yet.
    pub fn new(id: u64, name: String, nsid: u32) -> Self {
        PathShared {
            id,
            name,
            nsid,
            ana_stale: AtomicBool::new(false),
            failovers: AtomicU64::new(0),
        }
    }
}

pub(crate) enum ChanMsg<Q> {
    Add(Box<channel::LocalPath<Q>>),
    Remove(u64),
}

struct ChanEntry<Q> {
    id: u64,
    /// The channel's queue group: the path factories make its queue in it.
    group: Arc<QueueGroup>,
    mailbox: Arc<Ring<ChanMsg<Q>>>,
    backlog: VecDeque<ChanMsg<Q>>,
    closed: Arc<AtomicBool>,
}

/// Makes a path's queue for one channel, in the channel's queue group (for an NVMe
/// path: a member of the group's I/O queue pair on the path's controller, made if the
/// group has none yet). A path's record keeps it for as long as the path is in the
/// set: every channel, opened before or after the path was added, gets a queue from it.
pub type QueueFactory<Q> = Box<dyn FnMut(&QueueGroup) -> Result<Q> + Send>;

struct PathRecord<Q> {
    shared: Arc<PathShared>,
    state: PathState,
    /// When the path entered ANA change (transition), in ticks.
    transition_since: Option<u64>,
    make_queue: QueueFactory<Q>,
}

struct Writer<Q> {
    paths: Vec<PathRecord<Q>>,
    channels: Vec<ChanEntry<Q>>,
    generation: u64,
    next_channel: u64,
    publish_ns_max: u64,
}

/// A multipath bdev's core, generic over the per-path queue.
pub struct Multipath<Q: PathQueue> {
    info: BdevInfo,
    block_shift: u32,
    opts: MpathOptions,
    anatt_ticks: u64,
    cell: QsbrCell<PathSet>,
    writer: Mutex<Writer<Q>>,
    graveyard: Mutex<Vec<Q>>,
    /// Its channels' I/O statistics (see [`Multipath::iostat`]).
    pub(crate) iostat: StatRegistry,
    /// Channels time their I/Os (see [`Multipath::enable_latency_histogram`]).
    pub(crate) latency_histogram: AtomicBool,
    /// Where path changes are reported, once the block layer gave it one.
    events: OnceLock<Arc<EventHub>>,
    /// Blocks now, and each path's size as its controller last reported it
    /// (`size.rs`).
    num_blocks: AtomicU64,
    path_blocks: Mutex<Vec<(u64, u64)>>,
}

impl<Q: PathQueue> fmt::Debug for Multipath<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Multipath")
            .field("info", &self.info)
            .field("policy", &self.opts.policy)
            .field("paths", &self.paths())
            .finish()
    }
}

/// A path as [`Multipath::paths`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// Instance identifier.
    pub id: u64,
    /// Controller name.
    pub name: String,
    /// Current state.
    pub state: PathState,
    /// I/Os failed over from this path so far.
    pub failovers: u64,
}

impl<Q: PathQueue> Multipath<Q> {
    /// A multipath bdev with no paths yet. `anatt_s` is the ANA transition time.
    pub fn new(
        info: BdevInfo,
        opts: MpathOptions,
        anatt_s: u8,
        qsbr: Arc<Qsbr>,
    ) -> Result<Arc<Self>> {
        opts.validate()?;
        if !info.block_size.is_power_of_two() || info.block_size < 512 {
            return Err(Error::InvalidOption(format!(
                "{}: block size {} is not a power of two of at least 512",
                info.name, info.block_size
            )));
        }
        let num_blocks = AtomicU64::new(info.num_blocks);
        Ok(Arc::new(Multipath {
            block_shift: info.block_size.trailing_zeros(),
            info,
            opts,
            anatt_ticks: nvme_driver::clock::ms_to_ticks(anatt_s as u64 * 1000),
            cell: QsbrCell::new(PathSet::default(), qsbr),
            writer: Mutex::new(Writer {
                paths: Vec::new(),
                channels: Vec::new(),
                generation: 0,
                next_channel: 0,
                publish_ns_max: 0,
            }),
            graveyard: Mutex::new(Vec::new()),
            iostat: StatRegistry::default(),
            latency_histogram: AtomicBool::new(false),
            events: OnceLock::new(),
            num_blocks,
            path_blocks: Mutex::new(Vec::new()),
        }))
    }

    /// Geometry and identifiers.
    pub fn info(&self) -> &BdevInfo {
        &self.info
    }

    /// The options it runs with.
    pub fn options(&self) -> &MpathOptions {
        &self.opts
    }

    /// The paths and their states.
    pub fn paths(&self) -> Vec<PathInfo> {
        lock(&self.writer)
            .paths
            .iter()
            .map(|p| PathInfo {
                id: p.shared.id,
                name: p.shared.name.clone(),
                state: p.state,
                failovers: p.shared.failovers.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Reports path changes to `hub` from now on (the block layer's, once).
    pub(crate) fn set_events(&self, hub: Arc<EventHub>) {
        let _ = self.events.set(hub);
    }

    /// Reports a path's change of state, published just now (called under the writer
    /// lock: in publication order).
    fn path_event(&self, controller: &str, old: Option<PathState>, new: Option<PathState>) {
        if let Some(hub) = self.events.get() {
            hub.path_changed(&self.info.name, controller, old, new);
        }
    }

    /// The longest path-set publication so far (building and swapping), in ns.
    pub fn longest_publish_ns(&self) -> u64 {
        lock(&self.writer).publish_ns_max
    }

    fn publish_locked(&self, w: &mut Writer<Q>) {
        let t0 = nvme_driver::clock::ticks();
        w.generation += 1;
        let now = t0;
        let hold_until = w
            .paths
            .iter()
            .filter_map(|p| p.transition_since)
            .map(|s| s.saturating_add(self.anatt_ticks))
            .max()
            .filter(|&h| h > now)
            .unwrap_or(0);
        let set = PathSet {
            generation: w.generation,
            paths: w
                .paths
                .iter()
                .map(|p| PathView {
                    id: p.shared.id,
                    state: p.state,
                })
                .collect(),
            hold_until,
        };
        self.cell.publish(set);
        let ns = nvme_driver::clock::ticks_to_ns(nvme_driver::clock::ticks().wrapping_sub(t0));
        w.publish_ns_max = w.publish_ns_max.max(ns);
    }

    fn send(entry: &mut ChanEntry<Q>, msg: ChanMsg<Q>) {
        if entry.backlog.is_empty() {
            if let Err(m) = entry.mailbox.push(msg) {
                entry.backlog.push_back(m);
            }
        } else {
            entry.backlog.push_back(msg);
        }
    }

    /// Adds a path: `make_queue` is called once per open channel for its queue (set-up
    /// work, under the writer lock), then the path is published; the path's record
    /// keeps `make_queue` for the channels opened later. Paths start in `state`.
    pub fn add_path(
        &self,
        path: Arc<PathShared>,
        state: PathState,
        mut make_queue: QueueFactory<Q>,
    ) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.paths.len() >= MAX_PATHS {
            return Err(Error::Exhausted(format!(
                "{}: already {MAX_PATHS} paths",
                self.info.name
            )));
        }
        if w.paths.iter().any(|p| p.shared.id == path.id) {
            return Err(Error::DuplicatePath(format!(
                "{}: path {} is already present",
                self.info.name, path.id
            )));
        }
        let mut queues = Vec::with_capacity(w.channels.len());
        for entry in w.channels.iter() {
            queues.push(make_queue(&entry.group)?);
        }
        for (entry, q) in w.channels.iter_mut().zip(queues) {
            Self::send(
                entry,
                ChanMsg::Add(channel::LocalPath::boxed(path.clone(), q)),
            );
        }
        let shared = path.clone();
        w.paths.push(PathRecord {
            shared: path,
            state,
            transition_since: None,
            make_queue,
        });
        self.publish_locked(&mut w);
        self.path_event(&shared.name, None, Some(state));
        Ok(())
    }

    /// Changes a path's state and publishes the new set. Returns false for an unknown
    /// path.
    pub fn set_path_state(&self, id: u64, state: PathState) -> bool {
        self.update_path_state(id, state, false)
    }

    /// The path's controller re-read its ANA log after a channel flagged the path
    /// (`PathShared::ana_stale`): sets its state and publishes a new set even when
    /// nothing changed. Channels avoid a path that returned an ANA error until the
    /// next set; this is that set. Returns false for an unknown path.
    pub fn ana_log_read(&self, id: u64, state: PathState) -> bool {
        self.update_path_state(id, state, true)
    }

    fn update_path_state(&self, id: u64, state: PathState, always_publish: bool) -> bool {
        let mut w = lock(&self.writer);
        let Some(p) = w.paths.iter_mut().find(|p| p.shared.id == id) else {
            return false;
        };
        if p.state == state {
            if always_publish {
                self.publish_locked(&mut w);
            }
            return true;
        }
        p.transition_since = match (state.ana, p.transition_since) {
            (AnaState::Change, Some(s)) => Some(s),
            (AnaState::Change, None) => Some(nvme_driver::clock::ticks()),
            _ => None,
        };
        let (old, shared) = (p.state, p.shared.clone());
        p.state = state;
        self.publish_locked(&mut w);
        self.path_event(&shared.name, Some(old), Some(state));
        true
    }

    /// Removes a path: tells every channel to finish its I/O on the path and let go of
    /// its queue, then publishes the set without it (the publication is what makes
    /// channels read their mailbox). Returns false if unknown.
    pub fn remove_path(&self, id: u64) -> bool {
        let mut w = lock(&self.writer);
        let Some(pos) = w.paths.iter().position(|p| p.shared.id == id) else {
            return false;
        };
        let gone = w.paths.remove(pos);
        // The message first: channels look at their mailbox when they see the epoch
        // move, which the publication does.
        for entry in w.channels.iter_mut() {
            Self::send(entry, ChanMsg::Remove(id));
        }
        self.publish_locked(&mut w);
        self.path_event(&gone.shared.name, Some(gone.state), None);
        self.forget_path_blocks(&w, id);
        true
    }

    /// Opens a channel for one core: each current path's record makes the channel's
    /// queue on that path (set-up work; call this off the reactors, then move the
    /// channel to its core). Registers a QSBR reader. The channel shares its queues
    /// with no other channel (see [`PollGroup`](crate::PollGroup) for sharing).
    pub fn channel(self: &Arc<Self>) -> Result<MpathChannel<Q>> {
        self.channel_in(QueueGroup::alone())
    }

    /// As [`channel`](Self::channel), with the channel's queues made in `group` (its
    /// poll group's): the caller keeps every channel of the group on one thread.
    pub(crate) fn channel_in(self: &Arc<Self>, group: Arc<QueueGroup>) -> Result<MpathChannel<Q>> {
        let reader = self.cell.domain().register()?;
        let mut w = lock(&self.writer);
        let mut paths = Vec::with_capacity(w.paths.len());
        for p in w.paths.iter_mut() {
            paths.push((p.shared.clone(), (p.make_queue)(&group)?));
        }
        let mailbox = Arc::new(Ring::new(MAILBOX));
        let closed = Arc::new(AtomicBool::new(false));
        let id = w.next_channel;
        w.next_channel += 1;
        w.channels.push(ChanEntry {
            id,
            group,
            mailbox: mailbox.clone(),
            backlog: VecDeque::new(),
            closed: closed.clone(),
        });
        drop(w);
        Ok(MpathChannel::new(
            self.clone(),
            reader,
            mailbox,
            closed,
            paths,
        ))
    }

    /// Deferred writer-side work, never waiting for a channel: retries mailbox
    /// messages that did not fit, forgets closed channels, frees snapshots every reader
    /// has moved past, and drops queues channels gave back. (A path's `ana_stale` flag
    /// is left to the owner of its controller, which re-reads the ANA log and then
    /// calls [`ana_log_read`](Self::ana_log_read).)
    pub fn tick(&self) {
        {
            let mut w = lock(&self.writer);
            w.channels.retain(|c| !c.closed.load(Ordering::Acquire));
            let mut sent = false;
            for entry in w.channels.iter_mut() {
                while let Some(m) = entry.backlog.pop_front() {
                    if let Err(m) = entry.mailbox.push(m) {
                        entry.backlog.push_front(m);
                        break;
                    }
                    sent = true;
                }
            }
            if sent {
                // Channels look at their mailbox when the epoch moves.
                self.cell.domain().bump();
            }
        }
        self.cell.domain().reclaim();
        let dead = std::mem::take(&mut *lock(&self.graveyard));
        drop(dead);
    }

    /// Channels currently open.
    pub fn channel_count(&self) -> usize {
        lock(&self.writer).channels.len()
    }

    /// Snapshots published so far.
    pub fn generation(&self) -> u64 {
        lock(&self.writer).generation
    }

    /// I/O statistics, total and per path, over every channel this bdev has had,
    /// readable from any thread while I/O runs (see [`crate::iostat`] for how fresh
    /// an open channel's figures are).
    pub fn iostat(&self) -> BdevIoStat {
        let names: Vec<(u64, String)> = lock(&self.writer)
            .paths
            .iter()
            .map(|p| (p.shared.id, p.shared.name.clone()))
            .collect();
        self.iostat.snapshot(&self.info.name, |id| {
            names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone())
        })
    }

    /// Starts (or stops) timing each I/O from submit to delivery for the latency
    /// histogram of [`Multipath::iostat`] (SPDK's `bdev_enable_histogram`). Off by
    /// default: timing reads the time-stamp counter twice per I/O. Channels take the
    /// change at their next full poll.
    pub fn enable_latency_histogram(&self, on: bool) {
        self.latency_histogram.store(on, Ordering::Relaxed);
        // Channels look at their mailbox, and do a full poll, when the epoch moves.
        self.cell.domain().bump();
    }

    pub(crate) fn bury(&self, q: Q) {
        lock(&self.graveyard).push(q);
    }

    #[allow(dead_code)]
    pub(crate) fn channel_ids(&self) -> Vec<u64> {
        lock(&self.writer).channels.iter().map(|c| c.id).collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
