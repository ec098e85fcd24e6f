// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O queue pairs: the data path, and its NVMe logic written once over a
//! [`Transport`] ([`Qpair<T>`](Qpair), one copy per transport; callers hold the
//! [`IoQpair`](crate::IoQpair) that chose one at run time).
//!
//! One [`Qpair`] is one I/O submission queue and its completion queue, owned and
//! polled by one thread (`Send`, not `Sync`, `&mut self` everywhere). Nothing here
//! allocates, locks, sleeps or makes a system call per I/O: trackers, parents of split
//! requests, the pending queue and the transport's buffers are sized when the queue
//! pair is created.
//!
//! Where each step lives:
//! - [`request`]: what callers hand in and get back; [`stats`]: the counters.
//! - `submit`: checks a request (`namespaces` holds what it is checked against),
//!   takes a command identifier (`tracker`) and builds the command; the transport
//!   describes its data and posts it; [`Qpair::flush`] rings the doorbell once per
//!   batch.
//! - `split`: requests larger than the controller's maximum data transfer size
//!   (MDTS) go out as several commands and complete once, as one request.
//! - `pending`: when no identifier is free, or the controller is being reset, a
//!   request waits on the bounded pending queue and is issued, in order, as
//!   completions free identifiers; when the queue is full, `submit` hands the
//!   request back with [`Error::Busy`].
//! - `complete`: [`Qpair::poll`] reaps completions, checks each one's identifier,
//!   SQ head and SQ identifier (a bad one is counted in [`QpairStats`], never
//!   delivered, and fails the controller), delivers finished requests, and checks
//!   deadlines.
//! - `handshake`: the queue pair's side of a controller reset or failure, learnt
//!   from one atomic control word that each poll reads once (the whole handshake:
//!   [`crate::control`]).
//!
//! A queue pair knows its controller only as an `AdminSide`: the reports it sends
//! to the controller's admin side (a failure, an Abort or a reset wanted, its own
//! end). This module imports nothing from the controller (`crate::ctrlr`).

mod complete;
mod handshake;
mod namespaces;
mod pending;
pub mod request;
mod split;
pub mod stats;
mod submit;
mod tracker;
mod vectored;

use crate::clock;
use crate::control::{ControlWord, Handshake, Phase};
use crate::error::{Error, Result};
use crate::transport::Transport;
use crossbeam_queue::ArrayQueue;
pub(crate) use namespaces::Namespaces;
use pending::Pending;
use split::Parents;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tracker::Trackers;

pub use request::{IoCompletion, IoOp, IoRequest, QpairOptions, Refused};
pub use stats::QpairStats;

pub(crate) use namespaces::MAX_DMA_WINDOWS;

/// What a queue pair asks of its controller's admin side, which acts at its next
/// `process_admin`. Implemented by the controller; every call is off the fast path.
pub(crate) trait AdminSide: Send + Sync {
    /// The controller's name (PCI address), for messages.
    fn name(&self) -> &str;
    /// What requests are checked against: the controller's namespaces with their
    /// current sizes, the largest transfer, the DMA windows.
    fn namespace_table(&self) -> Namespaces;
    /// The current size in blocks of each namespace, in the table's order (a
    /// namespace resized: see `namespaces`).
    fn namespace_sizes(&self) -> &[AtomicU64];
    /// The error for a request to the controller once it failed.
    fn failed_error(&self) -> Error;
    /// The queue pair saw something impossible: the controller is to be failed;
    /// until then the queue pair stops.
    fn request_failure(&self, reason: String);
    /// Command `cid` of `qpair` passed its deadline: an Abort is to be sent, and its
    /// end reported in `qpair.aborts_ended`.
    fn request_abort(&self, qpair: &Arc<QpairShared>, cid: u16);
    /// The controller is to be reset (a command outlived its Abort too).
    fn request_reset(&self);
    /// The queue pair is gone: its queues are to be deleted on the device.
    fn release_qpair(&self, qpair: &Arc<QpairShared>);
}

/// The part of a queue pair the controller (admin side) shares with its owner: its
/// identity, and the reset handshake.
#[derive(Debug)]
pub(crate) struct QpairShared {
    pub qid: u16,
    /// Submission queue entries.
    pub entries: u16,
    pub handshake: Handshake,
    /// CIDs whose Abort ended (sent and answered, or dropped at a reset), reported by
    /// the admin side; the owner frees their trackers at its next timeout scan.
    pub aborts_ended: ArrayQueue<u16>,
}

/// How often (in polls) trackers are checked for deadlines.
const TIMEOUT_SCAN_POLLS: u64 = 1024;

/// An I/O queue pair over transport `T`, owned by one thread: the NVMe logic, built
/// once per transport with every transport call static. Callers hold an
/// [`IoQpair`](crate::IoQpair), which chooses among these at run time with one match
/// per call.
pub struct Qpair<T: Transport> {
    ctrl: Arc<dyn AdminSide>,
    shared: Arc<QpairShared>,
    transport: T,
    /// `shared.qid` and `shared.entries`, at hand for checking completions.
    qid: u16,
    sq_entries: u16,
    trackers: Trackers,
    parents: Parents,
    /// A split request still being issued; it goes before the pending queue.
    partial: Option<u16>,
    pending: Pending,
    namespaces: Namespaces,
    control_seen: ControlWord,
    /// New requests wait: the controller is being reset, or failed.
    held: bool,
    /// `held`, or a split request part-issued, or requests pending: new requests must
    /// queue behind them. One flag keeps the submit fast path to one test.
    slow: bool,
    failed: bool,
    timeout_ticks: u64,
    next_timeout_scan: u64,
    /// Where the last invalid completion sat (the transport's position with bit 17
    /// set, 0 for none): the queue pair stops at it until the controller fails, and
    /// polls that find it again must not count it again.
    bad_at: u32,
    stats: QpairStats,
}

impl<T: Transport> std::fmt::Debug for Qpair<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qpair")
            .field("device", &self.ctrl.name())
            .field("qid", &self.shared.qid)
            .field("entries", &self.sq_entries)
            .field("outstanding", &self.outstanding())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Transport> Qpair<T> {
    /// Builds the host side of a queue pair over `transport`. The controller creates
    /// the device side.
    pub(crate) fn new(
        ctrl: Arc<dyn AdminSide>,
        shared: Arc<QpairShared>,
        transport: T,
        opts: &QpairOptions,
    ) -> Result<Self> {
        let depth = transport.depth_max();
        debug_assert!(depth < shared.entries as usize);
        // The word before the table: a size change published in between is seen at
        // the first poll (see `namespaces`).
        let control_seen = shared.handshake.load();
        let namespaces = ctrl.namespace_table();
        let phase = control_seen.phase();
        Ok(Qpair {
            transport,
            qid: shared.qid,
            sq_entries: shared.entries,
            trackers: Trackers::new(depth),
            // As many parents as trackers, plus one: each parent in flight holds a
            // tracker, and one more may be part-issued holding none.
            parents: Parents::new(depth + 1),
            partial: None,
            pending: Pending::new(opts.pending_max),
            namespaces,
            held: phase != Phase::Live,
            slow: phase != Phase::Live,
            failed: phase == Phase::Failed,
            control_seen,
            timeout_ticks: clock::ms_to_ticks(opts.timeout_ms.max(1)),
            next_timeout_scan: TIMEOUT_SCAN_POLLS,
            bad_at: 0,
            stats: QpairStats::default(),
            ctrl,
            shared,
        })
    }

    /// Queue identifier.
    pub fn qid(&self) -> u16 {
        self.shared.qid
    }

    /// Commands this queue pair can have in flight.
    pub fn depth_max(&self) -> usize {
        self.trackers.len()
    }

    /// Requests accepted and not yet completed (in flight or pending).
    pub fn outstanding(&self) -> usize {
        (self.stats.submitted - self.stats.completed) as usize
    }

    /// True when a poll has work to do: requests are outstanding, or the controller
    /// changed this queue pair's state (a reset to acknowledge, a failure to report).
    /// A caller with many queue pairs may skip polling those for which this is false;
    /// it must not skip one for which it is true for long, or a reset waits for its
    /// acknowledgement (bounded: after 2 s the queue pair is failed).
    /// [`Controller::on_queue_state_change`](crate::Controller::on_queue_state_change)
    /// tells such a caller when to look again.
    #[inline]
    pub fn needs_poll(&self) -> bool {
        self.stats.submitted != self.stats.completed
            || self.shared.handshake.peek() != self.control_seen
    }

    /// Command identifiers held back because an Abort naming them is still out
    /// (their commands ended; see `tracker`): free again when the Abort ends.
    pub fn held_for_abort(&self) -> usize {
        self.trackers.parked()
    }

    /// Requests waiting on the pending queue.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Counters.
    pub fn stats(&self) -> QpairStats {
        self.stats
    }

    /// The controller's name (PCI address).
    pub fn device(&self) -> &str {
        self.ctrl.name()
    }

    /// True once the controller failed: submits are refused, nothing is in flight.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// True while this queue pair holds new requests for a controller reset (seen at a
    /// poll, until the poll that sees the reset end): they are accepted but wait for
    /// the reset, which can take up to the admin timeout. A caller with another path
    /// should send its requests there meanwhile.
    #[inline]
    pub fn is_resetting(&self) -> bool {
        self.held && !self.failed
    }

    #[inline(always)]
    fn update_slow(&mut self) {
        self.slow = self.held || self.partial.is_some() || !self.pending.is_empty();
    }
}

impl<T: Transport> Drop for Qpair<T> {
    fn drop(&mut self) {
        self.ctrl.release_qpair(&self.shared);
    }
}
