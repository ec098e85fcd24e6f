//! I/O queue pairs: the data path.
//!
//! One [`IoQpair`] is one I/O submission queue and its completion queue, owned and
//! polled by one thread (`Send`, not `Sync`, `&mut self` everywhere). Nothing here
//! allocates, locks, sleeps or makes a system call per I/O: trackers, parents of split
//! requests, the pending ring and the PRP list pages are sized when the queue pair is
//! created.
//!
//! - Command identifiers index trackers. When none is free, or the controller is
//!   being reset, a request waits on the bounded pending ring and is issued, in order,
//!   as completions free identifiers; when the ring is full, `submit` hands the request
//!   back with [`Error::Busy`].
//! - Requests larger than the controller's maximum data transfer size (MDTS) are split
//!   into several commands and complete once, as one request.
//! - The SQ tail doorbell is written once per batch ([`IoQpair::flush`], or at the
//!   start of each poll). The CQ is twice the SQ's size when CAP.MQES allows, so
//!   the CQ head doorbell is written only once the completions consumed since the
//!   last write could otherwise fill the device's view of the CQ: about once per SQ's
//!   worth of completions instead of once per poll. Under emulation each doorbell
//!   write is a trap into the device model, so this halves the MMIO at depth 1.
//! - Every completion's identifier, SQ head and SQ identifier is checked; a bad one
//!   (a stray or duplicated completion, an impossible SQ head) is counted in
//!   [`QpairStats`], never delivered, and fails the controller rather than corrupting
//!   state.
//! - The controller signals resets and failure through one atomic control word that
//!   each poll reads once (see [`QpairShared`]).

use crate::clock;
use crate::ctrlr::CtrlInner;
use crate::dma::{DmaBuf, DmaSlice, Iova};
use crate::error::{Error, Result};
use crate::mmio::Doorbell;
use crate::prp::{self, PAGE_SIZE};
use crate::spec::{io_opc, Sqe, Status, CQE_SIZE, SQE_SIZE};
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

/// The operation of an I/O request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Read `nlb` blocks at `slba` into the buffer.
    Read,
    /// Write `nlb` blocks at `slba` from the buffer.
    Write,
    /// Flush the volatile write cache (no range, no buffer).
    Flush,
    /// Write zeroes to `nlb` blocks at `slba` (no buffer).
    WriteZeroes,
    /// Deallocate (unmap) `nlb` blocks at `slba` with Dataset Management (no buffer).
    Deallocate,
}

/// An I/O request. `ctx` is the caller's: it comes back with the completion.
#[derive(Clone, Copy, Debug)]
pub struct IoRequest {
    /// Operation.
    pub op: IoOp,
    /// Namespace.
    pub nsid: u32,
    /// Starting block.
    pub slba: u64,
    /// Number of blocks (a count, at least 1 except for flush).
    pub nlb: u32,
    /// Data buffer for read and write; ignored otherwise.
    pub buf: DmaSlice,
    /// Caller's context.
    pub ctx: u64,
}

impl IoRequest {
    /// A read of `nlb` blocks at `slba` into `buf`.
    pub fn read(nsid: u32, slba: u64, nlb: u32, buf: DmaSlice, ctx: u64) -> Self {
        IoRequest {
            op: IoOp::Read,
            nsid,
            slba,
            nlb,
            buf,
            ctx,
        }
    }
    /// A write of `nlb` blocks at `slba` from `buf`.
    pub fn write(nsid: u32, slba: u64, nlb: u32, buf: DmaSlice, ctx: u64) -> Self {
        IoRequest {
            op: IoOp::Write,
            nsid,
            slba,
            nlb,
            buf,
            ctx,
        }
    }
    /// A flush of namespace `nsid`.
    pub fn flush(nsid: u32, ctx: u64) -> Self {
        IoRequest {
            op: IoOp::Flush,
            nsid,
            slba: 0,
            nlb: 0,
            buf: DmaSlice::default(),
            ctx,
        }
    }
    /// A write zeroes or deallocate of `nlb` blocks at `slba`.
    pub fn no_data(op: IoOp, nsid: u32, slba: u64, nlb: u32, ctx: u64) -> Self {
        IoRequest {
            op,
            nsid,
            slba,
            nlb,
            buf: DmaSlice::default(),
            ctx,
        }
    }
}

/// A finished request: the caller's context and the NVMe status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCompletion {
    /// The request's `ctx`.
    pub ctx: u64,
    /// Its status (of the first failed command, for split requests).
    pub status: Status,
}

/// Why [`IoQpair::try_submit`] refused a request; [`IoQpair::explain`] turns it into
/// the full [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Bad arguments: no such namespace, a range past its end, or a buffer that is too
    /// short, misaligned or not this device's DMA memory. Not worth retrying.
    Invalid,
    /// The pending ring is full: retry after a poll has completed something.
    Busy,
    /// The controller failed or was removed: try another path.
    Failed,
}

/// Counters that explain performance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QpairStats {
    /// Requests accepted by `submit`.
    pub submitted: u64,
    /// Requests completed (delivered to the caller).
    pub completed: u64,
    /// NVMe commands issued (more than requests when requests are split).
    pub commands: u64,
    /// Calls to `poll`.
    pub polls: u64,
    /// Polls that found no completion.
    pub idle_polls: u64,
    /// SQ tail doorbell writes.
    pub sq_doorbell_writes: u64,
    /// CQ head doorbell writes.
    pub cq_doorbell_writes: u64,
    /// Requests that went through the pending ring.
    pub pended: u64,
    /// Most requests ever waiting on the pending ring at once.
    pub pending_high_water: u64,
    /// Requests refused because the pending ring was full.
    pub busy: u64,
    /// Commands that passed their deadline.
    pub timeouts: u64,
    /// Commands aborted by controller resets.
    pub reset_aborts: u64,
    /// Completions whose command identifier matched no command in flight: out of
    /// range, never issued, or already completed (a duplicate). Each is counted once
    /// and never delivered; the controller is failed, as the device misbehaved.
    /// Zero on a healthy device: tests assert it, in release builds too.
    pub stray_completions: u64,
    /// Completions for a command in flight that carried an SQ head or SQ identifier
    /// out of range. Counted once each, not delivered (the command completes when the
    /// controller is failed); zero on a healthy device.
    pub malformed_completions: u64,
}

impl QpairStats {
    /// The counts since `before` (an earlier snapshot of the same queue pair); the
    /// high-water mark stays the current one.
    pub fn since(&self, before: &QpairStats) -> QpairStats {
        QpairStats {
            submitted: self.submitted - before.submitted,
            completed: self.completed - before.completed,
            commands: self.commands - before.commands,
            polls: self.polls - before.polls,
            idle_polls: self.idle_polls - before.idle_polls,
            sq_doorbell_writes: self.sq_doorbell_writes - before.sq_doorbell_writes,
            cq_doorbell_writes: self.cq_doorbell_writes - before.cq_doorbell_writes,
            pended: self.pended - before.pended,
            pending_high_water: self.pending_high_water,
            busy: self.busy - before.busy,
            timeouts: self.timeouts - before.timeouts,
            reset_aborts: self.reset_aborts - before.reset_aborts,
            stray_completions: self.stray_completions - before.stray_completions,
            malformed_completions: self.malformed_completions - before.malformed_completions,
        }
    }
}

/// Control word phases (low two bits of [`QpairShared::control`]).
pub(crate) const CTL_LIVE: u64 = 0;
pub(crate) const CTL_RESET: u64 = 1;
pub(crate) const CTL_FAILED: u64 = 2;

/// The part of a queue pair the controller (admin side) shares with its owner.
///
/// `control` is `(epoch << 2) | phase`, written only by the controller:
/// - `RESET` at epoch e: the controller is disabled (the device no longer touches
///   the queues); the owner completes every command in flight with "aborted: SQ
///   deletion", rewinds its rings, holds new requests on the pending ring, and stores
///   e into `ack`.
/// - `LIVE` at epoch e: the queues exist on the device again; requests flow.
/// - `FAILED`: the controller is gone; everything completes with a path error.
#[derive(Debug)]
pub(crate) struct QpairShared {
    pub qid: u16,
    pub entries: u16,
    /// Completion queue entries: larger than the SQ when the controller allows, so
    /// the CQ head doorbell can be written lazily (see `IoQpair::poll`).
    pub cq_entries: u16,
    pub sq_iova: Iova,
    pub cq_iova: Iova,
    pub control: AtomicU64,
    pub ack: AtomicU64,
}

const NO_PARENT: u16 = u16::MAX;
/// IOVA windows a queue pair accepts buffers from.
pub(crate) const MAX_DMA_WINDOWS: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Tracker {
    active: bool,
    abort_sent: bool,
    parent: u16,
    ctx: u64,
    deadline: u64,
}

#[derive(Clone, Copy, Debug)]
struct Parent {
    req: IoRequest,
    /// Blocks issued so far.
    issued: u32,
    /// Commands in flight.
    inflight: u32,
    status: Status,
    /// The namespace's block size (log2) and largest command, in blocks.
    block_shift: u32,
    max_blocks: u32,
}

#[derive(Clone, Copy, Debug)]
struct NsInfo {
    nsid: u32,
    nsze: u64,
    block_shift: u32,
    /// Largest read/write command, in blocks.
    max_rw_blocks: u32,
}

/// Options for a new queue pair.
#[derive(Clone, Copy, Debug)]
pub struct QpairOptions {
    /// Entries in the SQ and CQ (capped by CAP.MQES). Commands in flight are one fewer.
    pub entries: u16,
    /// Requests that may wait on the pending ring.
    pub pending_max: usize,
    /// Per-command deadline; an expired command is aborted, then the controller reset.
    pub timeout_ms: u64,
}

impl Default for QpairOptions {
    fn default() -> Self {
        QpairOptions {
            entries: 256,
            pending_max: 4096,
            timeout_ms: 30_000,
        }
    }
}

/// An I/O queue pair, owned by one thread.
pub struct IoQpair {
    ctrl: Arc<CtrlInner>,
    shared: Arc<QpairShared>,
    sq_mem: DmaBuf,
    cq_mem: DmaBuf,
    prp_mem: DmaBuf,
    sq_db: Doorbell,
    cq_db: Doorbell,
    entries: u16,
    cq_entries: u16,
    /// Completions consumed since the CQ head doorbell was last written.
    cq_unreported: usize,
    /// Write the CQ head doorbell once `cq_unreported` exceeds this.
    cq_db_threshold: usize,
    /// `shared.qid`, at hand for checking completions.
    qid: u16,
    sq_tail: u16,
    sq_dirty: bool,
    cq_head: u16,
    phase: bool,
    trackers: Box<[Tracker]>,
    free_cids: Box<[u16]>,
    free_len: usize,
    parents: Box<[Parent]>,
    free_parents: Vec<u16>,
    /// A split request still being issued; it goes before the pending ring.
    partial: Option<u16>,
    pending: VecDeque<IoRequest>,
    pending_max: usize,
    ns: Box<[NsInfo]>,
    /// `ns[0]` and its identifier widened (`u64::MAX` when there is none): almost
    /// every queue pair serves one namespace, checked without following a pointer.
    ns0: NsInfo,
    ns0_key: u64,
    /// (base, length) of the IOVA windows buffers may come from; unused ones are (0, 0).
    windows: [(u64, u64); MAX_DMA_WINDOWS],
    control_seen: u64,
    held: bool,
    /// `held`, or a split request part-issued, or requests pending: new requests must
    /// queue behind them. One flag keeps the submit fast path to one test.
    slow: bool,
    failed: bool,
    timeout_ticks: u64,
    next_timeout_scan: u64,
    /// Where the last invalid completion sat (`cq_head | phase << 16 | 1 << 17`, 0 for
    /// none): the queue pair stops at it until the controller fails, and polls that
    /// find it again must not count it again.
    bad_at: u32,
    stats: QpairStats,
}

impl std::fmt::Debug for IoQpair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQpair")
            .field("device", &self.ctrl.name)
            .field("qid", &self.shared.qid)
            .field("entries", &self.entries)
            .field("outstanding", &self.outstanding())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Maximum blocks in one read, write or write zeroes command (CDW12 NLB is 16 bits).
const MAX_NLB: u32 = 1 << 16;
/// How often (in polls) trackers are checked for deadlines.
const TIMEOUT_SCAN_POLLS: u64 = 1024;

impl IoQpair {
    /// Builds the host side of a queue pair. The controller creates the device side.
    pub(crate) fn new(
        ctrl: Arc<CtrlInner>,
        shared: Arc<QpairShared>,
        sq_mem: DmaBuf,
        cq_mem: DmaBuf,
        opts: &QpairOptions,
    ) -> Result<Self> {
        let entries = shared.entries;
        let ntrackers = entries as usize - 1;
        let prp_mem = ctrl.pool.alloc(ntrackers * PAGE_SIZE as usize)?;
        let bar = ctrl.bus.bar0();
        let dstrd = ctrl.cap.dstrd();
        let doorbell = |off| {
            bar.doorbell(off).ok_or_else(|| Error::ControllerFailed {
                device: ctrl.name.clone(),
                reason: format!(
                    "doorbell offset {off:#x} is outside BAR0 ({} bytes)",
                    bar.len()
                ),
            })
        };
        let sq_db = doorbell(crate::regs::sq_tail_doorbell(shared.qid, dstrd))?;
        let cq_db = doorbell(crate::regs::cq_head_doorbell(shared.qid, dstrd))?;
        let max_xfer = ctrl.max_xfer_bytes as u64;
        let ns: Box<[NsInfo]> = ctrl
            .namespaces
            .iter()
            .map(|n| {
                let block_shift = n.block_size.trailing_zeros();
                NsInfo {
                    nsid: n.nsid,
                    nsze: n.nsze,
                    block_shift,
                    max_rw_blocks: ((max_xfer >> block_shift) as u32).clamp(1, MAX_NLB),
                }
            })
            .collect();
        let empty_req = IoRequest::flush(0, 0);
        // Newest window first: a controller driven through a layer that registered
        // its own buffer window (the block layer) gets that window's buffers on
        // every I/O; one driven directly has only its pool's window.
        let mut windows = [(0u64, 0u64); MAX_DMA_WINDOWS];
        for (w, &r) in windows
            .iter_mut()
            .zip(crate::lock(&ctrl.dma_windows).iter().rev())
        {
            *w = r;
        }
        let control_seen = shared.control.load(Ordering::Acquire);
        Ok(IoQpair {
            sq_db,
            cq_db,
            entries,
            cq_entries: shared.cq_entries,
            cq_unreported: 0,
            // The device can post at most `ntrackers` completions we have not seen;
            // as long as those plus the ones we consumed but did not report fit in
            // the CQ, the device never finds it full (section 4.1: a full CQ is
            // head == tail + 1), so the doorbell write can wait.
            cq_db_threshold: shared.cq_entries as usize - 1 - ntrackers,
            qid: shared.qid,
            sq_tail: 0,
            sq_dirty: false,
            cq_head: 0,
            phase: true,
            trackers: vec![
                Tracker {
                    active: false,
                    abort_sent: false,
                    parent: NO_PARENT,
                    ctx: 0,
                    deadline: 0,
                };
                ntrackers
            ]
            .into_boxed_slice(),
            free_cids: (0..ntrackers as u16).rev().collect(),
            free_len: ntrackers,
            parents: vec![
                Parent {
                    req: empty_req,
                    issued: 0,
                    inflight: 0,
                    status: Status::SUCCESS,
                    block_shift: 0,
                    max_blocks: 0,
                };
                ntrackers + 1
            ]
            .into_boxed_slice(),
            free_parents: (0..=ntrackers as u16).rev().collect(),
            partial: None,
            pending: VecDeque::with_capacity(opts.pending_max),
            pending_max: opts.pending_max,
            ns0: ns.first().copied().unwrap_or(NsInfo {
                nsid: 0,
                nsze: 0,
                block_shift: 0,
                max_rw_blocks: 0,
            }),
            ns0_key: ns.first().map_or(u64::MAX, |n| n.nsid as u64),
            ns,
            windows,
            held: control_seen & 3 != CTL_LIVE,
            slow: control_seen & 3 != CTL_LIVE,
            failed: control_seen & 3 == CTL_FAILED,
            control_seen,
            timeout_ticks: clock::ms_to_ticks(opts.timeout_ms.max(1)),
            next_timeout_scan: TIMEOUT_SCAN_POLLS,
            bad_at: 0,
            stats: QpairStats::default(),
            ctrl,
            shared,
            sq_mem,
            cq_mem,
            prp_mem,
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
            || self.shared.control.load(Ordering::Relaxed) != self.control_seen
    }

    /// Requests waiting on the pending ring.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Counters.
    pub fn stats(&self) -> QpairStats {
        self.stats
    }

    /// The controller's name (PCI address).
    pub fn device(&self) -> &str {
        &self.ctrl.name
    }

    /// True once the controller failed: submits are refused, nothing is in flight.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    #[inline]
    fn ns_info(&self, nsid: u32) -> Option<&NsInfo> {
        // Almost always one namespace: check the first before searching.
        if nsid as u64 == self.ns0_key {
            return Some(&self.ns0);
        }
        self.ns.iter().find(|n| n.nsid == nsid)
    }

    /// True if `len` bytes at `iova` lie in one of the device's DMA windows. The
    /// windows are ordered newest first (see `new`), so the first test is the one that
    /// matches for the usual caller.
    #[inline(always)]
    fn in_window(&self, iova: u64, len: u64) -> bool {
        let inside = |&(b, l): &(u64, u64)| iova.wrapping_sub(b) < l && iova - b + len <= l;
        if inside(&self.windows[0]) {
            return true;
        }
        self.windows[1..].iter().any(inside)
    }

    /// True if `nlb` (at least one) blocks at `slba` lie inside a namespace of `nsze`
    /// blocks.
    #[inline(always)]
    fn range_ok(slba: u64, nlb: u32, nsze: u64) -> bool {
        let end = slba.wrapping_add(nlb as u64);
        nlb != 0 && end >= slba && end <= nsze
    }

    /// The checks every request passes, branch-light; the reasons are worked out
    /// by `invalid` only when one fails.
    #[inline]
    fn valid(&self, req: &IoRequest, ns: &NsInfo) -> bool {
        match req.op {
            IoOp::Flush => true,
            IoOp::Read | IoOp::Write => self.valid_rw(req, ns),
            _ => Self::range_ok(req.slba, req.nlb, ns.nsze),
        }
    }

    /// The checks of a read or write: a range inside the namespace, and a buffer
    /// long enough, 4-byte aligned (PRP rule) and in one of the device's windows.
    #[inline(always)]
    fn valid_rw(&self, req: &IoRequest, ns: &NsInfo) -> bool {
        Self::range_ok(req.slba, req.nlb, ns.nsze)
            && (req.buf.len as u64) >= (req.nlb as u64) << ns.block_shift
            && req.buf.iova.0 & 3 == 0
            && self.in_window(req.buf.iova.0, req.buf.len as u64)
    }

    #[cold]
    #[inline(never)]
    fn invalid(&self, req: &IoRequest) -> Error {
        let Some(ns) = self.ns_info(req.nsid) else {
            return self.ctrl.no_such_namespace(req.nsid);
        };
        if !Self::range_ok(req.slba, req.nlb, ns.nsze) {
            return Error::LbaOutOfRange {
                nsid: req.nsid,
                slba: req.slba,
                nlb: req.nlb,
                nsze: ns.nsze,
            };
        }
        let need = (req.nlb as u64) << ns.block_shift;
        if (req.buf.len as u64) < need {
            return Error::BadBuffer(format!(
                "{} blocks of {} bytes need {need} bytes, the buffer has {}",
                req.nlb,
                1u32 << ns.block_shift,
                req.buf.len
            ));
        }
        if req.buf.iova.0 & 3 != 0 {
            return Error::BadBuffer(format!(
                "buffer address {:#x} is not 4-byte aligned (NVMe PRP rule); use an offset that is a multiple of 4",
                req.buf.iova.0
            ));
        }
        Error::BadBuffer(format!(
            "{}: the buffer at IOVA {:#x} ({} bytes) is not DMA memory of this device (from another \
             controller's pool, or none); allocate it with this controller's alloc_buffer, or \
             register its window with add_dma_window",
            self.ctrl.name, req.buf.iova.0, req.buf.len
        ))
    }

    /// Submits a request. It is in the submission queue (the doorbell follows at the
    /// next [`flush`](Self::flush) or poll), or waiting on the pending ring; or it is
    /// handed back with the reason: bad arguments, [`Error::Busy`] when the pending
    /// ring is full, [`Error::ControllerFailed`] when the controller is gone.
    ///
    /// Callers on a data path that handle refusals themselves may prefer
    /// [`try_submit`](Self::try_submit), whose refusal is one byte.
    #[inline]
    pub fn submit(&mut self, req: IoRequest) -> std::result::Result<(), (Error, IoRequest)> {
        match self.try_submit(&req) {
            Ok(()) => Ok(()),
            Err(why) => Err((self.explain(why, req), req)),
        }
    }

    /// [`submit`](Self::submit) with a compact refusal: nothing is built or moved
    /// when a request is refused (the caller still has it, `IoRequest` is `Copy`), and
    /// [`explain`](Self::explain) gives the full error when one is wanted.
    #[inline(always)]
    pub fn try_submit(&mut self, req: &IoRequest) -> std::result::Result<(), Refused> {
        // The data path: a read or write that fits one command, on a queue pair with
        // nothing waiting and an identifier free. The operation is tested first so
        // the rest is straight-line code for it; anything else takes `submit_general`.
        if let (IoOp::Read | IoOp::Write, Some(ns)) = (req.op, self.ns_info(req.nsid)) {
            if self.valid_rw(req, ns) && !self.slow && req.nlb <= ns.max_rw_blocks {
                let block_shift = ns.block_shift;
                if let Some(cid) = self.pop_cid() {
                    self.stats.submitted += 1;
                    let opc = if req.op == IoOp::Read {
                        io_opc::READ
                    } else {
                        io_opc::WRITE
                    };
                    let sqe = self.rw_sqe(
                        cid,
                        opc,
                        req.nsid,
                        req.slba,
                        req.nlb,
                        req.buf.iova.0,
                        block_shift,
                    );
                    self.post(cid, sqe, NO_PARENT, req.ctx);
                    return Ok(());
                }
            }
        }
        self.submit_general(req.op, req.nsid, req.slba, req.nlb, req.buf, req.ctx)
    }

    /// Everything `try_submit`'s fast path leaves: other operations, split requests,
    /// the pending ring, refusals. The request comes in pieces: passing it whole, or
    /// its address, makes every caller build it in memory, on the fast path too.
    #[inline(never)]
    fn submit_general(
        &mut self,
        op: IoOp,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: DmaSlice,
        ctx: u64,
    ) -> std::result::Result<(), Refused> {
        let req = IoRequest {
            op,
            nsid,
            slba,
            nlb,
            buf,
            ctx,
        };
        let ns = match self.ns_info(nsid) {
            Some(ns) if self.valid(&req, ns) => *ns,
            _ => return Err(Refused::Invalid),
        };
        if self.slow || self.free_len == 0 {
            return self.pend(req);
        }
        self.stats.submitted += 1;
        self.start(&req, ns);
        Ok(())
    }

    /// The full error for a request [`try_submit`](Self::try_submit) refused: what is
    /// wrong and how to fix it, naming the device.
    #[cold]
    #[inline(never)]
    pub fn explain(&self, why: Refused, req: IoRequest) -> Error {
        match why {
            Refused::Invalid => self.invalid(&req),
            Refused::Busy => Error::Busy(self.pending_max),
            Refused::Failed => self.ctrl.failed_error(),
        }
    }

    /// A request that cannot go to the device now: refused when failed or when the
    /// pending ring is full, else onto the ring (its room was reserved when the queue
    /// pair was made: no allocation).
    #[cold]
    #[inline(never)]
    fn pend(&mut self, req: IoRequest) -> std::result::Result<(), Refused> {
        if self.failed {
            return Err(Refused::Failed);
        }
        let depth = self.pending.len() + 1;
        if depth > self.pending_max {
            self.stats.busy += 1;
            return Err(Refused::Busy);
        }
        self.pending.push_back(req);
        self.slow = true;
        self.stats.submitted += 1;
        self.stats.pended += 1;
        self.stats.pending_high_water = self.stats.pending_high_water.max(depth as u64);
        Ok(())
    }

    #[inline(always)]
    fn pop_cid(&mut self) -> Option<u16> {
        if self.free_len == 0 {
            return None;
        }
        self.free_len -= 1;
        // SAFETY: `free_len <= free_cids.len()` always (it starts there, `push_cid`
        // never goes past it), so after the decrement it is in bounds.
        Some(unsafe { *self.free_cids.get_unchecked(self.free_len) })
    }

    #[inline(always)]
    fn push_cid(&mut self, cid: u16) {
        // Never more than `ntrackers` free identifiers: each was popped first.
        if let Some(slot) = self.free_cids.get_mut(self.free_len) {
            *slot = cid;
            self.free_len += 1;
        }
    }

    fn max_blocks(op: IoOp, ns: &NsInfo) -> u32 {
        match op {
            IoOp::Read | IoOp::Write => ns.max_rw_blocks,
            IoOp::WriteZeroes => MAX_NLB,
            IoOp::Deallocate => u32::MAX,
            IoOp::Flush => u32::MAX,
        }
    }

    /// Issues a request that may need several commands. Needs at least one free cid.
    #[inline(always)]
    fn start(&mut self, req: &IoRequest, ns: NsInfo) {
        if req.nlb <= Self::max_blocks(req.op, &ns) {
            let Some(cid) = self.pop_cid() else { return };
            self.issue(
                cid,
                req,
                req.slba,
                req.nlb,
                req.buf.iova.0,
                NO_PARENT,
                ns.block_shift,
            );
            return;
        }
        // Larger than one command allows (MDTS, or the 16-bit block count): a parent
        // whose commands go out as identifiers allow. There are as many parents as
        // trackers and each holds at least one, so one is free.
        let Some(p) = self.free_parents.pop() else {
            return;
        };
        self.parents[p as usize] = Parent {
            req: *req,
            issued: 0,
            inflight: 0,
            status: Status::SUCCESS,
            block_shift: ns.block_shift,
            max_blocks: Self::max_blocks(req.op, &ns),
        };
        self.continue_parent(p);
    }

    /// Issues more commands of a split request while cids are free.
    #[cold]
    #[inline(never)]
    fn continue_parent(&mut self, p: u16) {
        self.continue_parent_inner(p);
        self.update_slow();
    }

    fn continue_parent_inner(&mut self, p: u16) {
        let Parent {
            max_blocks: max,
            block_shift,
            ..
        } = self.parents[p as usize];
        loop {
            let par = self.parents[p as usize];
            if par.issued >= par.req.nlb {
                self.partial = None;
                return;
            }
            let Some(cid) = self.pop_cid() else {
                self.partial = Some(p);
                return;
            };
            let nlb = max.min(par.req.nlb - par.issued);
            let iova = par.req.buf.iova.0 + ((par.issued as u64) << block_shift);
            self.issue(
                cid,
                &par.req,
                par.req.slba + par.issued as u64,
                nlb,
                iova,
                p,
                block_shift,
            );
            let par = &mut self.parents[p as usize];
            par.issued += nlb;
            par.inflight += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn issue(
        &mut self,
        cid: u16,
        req: &IoRequest,
        slba: u64,
        nlb: u32,
        iova: u64,
        parent: u16,
        block_shift: u32,
    ) {
        let sqe = match req.op {
            IoOp::Read => self.rw_sqe(cid, io_opc::READ, req.nsid, slba, nlb, iova, block_shift),
            IoOp::Write => self.rw_sqe(cid, io_opc::WRITE, req.nsid, slba, nlb, iova, block_shift),
            IoOp::WriteZeroes => Sqe::rw(io_opc::WRITE_ZEROES, req.nsid, slba, nlb),
            IoOp::Flush => {
                let mut sqe = Sqe::new(io_opc::FLUSH);
                sqe.nsid = req.nsid;
                sqe
            }
            IoOp::Deallocate => {
                let list_off = cid as usize * PAGE_SIZE as usize;
                let list_ptr = self.prp_mem.as_ptr().wrapping_add(list_off).cast::<u64>();
                // One range (section 7.x of the NVM command set, Dataset Management):
                // context attributes, length in blocks, starting LBA.
                // SAFETY: the list page is this free cid's and 16 bytes fit in it.
                unsafe {
                    list_ptr.cast::<u32>().write_volatile(0);
                    list_ptr.cast::<u32>().add(1).write_volatile(nlb);
                    list_ptr.add(1).write_volatile(slba);
                }
                let mut sqe = Sqe::new(io_opc::DATASET_MANAGEMENT);
                sqe.nsid = req.nsid;
                sqe.prp1 = self.prp_mem.iova().0 + list_off as u64;
                sqe.cdw10 = 0; // one range, zero based
                sqe.cdw11 = 1 << 2; // AD: deallocate
                sqe
            }
        };
        self.post(cid, sqe, parent, req.ctx);
    }

    /// A read or write command with its data pointers.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn rw_sqe(
        &mut self,
        cid: u16,
        opc: u8,
        nsid: u32,
        slba: u64,
        nlb: u32,
        iova: u64,
        block_shift: u32,
    ) -> Sqe {
        let mut sqe = Sqe::rw(opc, nsid, slba, nlb);
        // Section 4.1.1: PRP2 is unused, the second page, or a list (this cid's page).
        let list = || {
            let off = cid as usize * PAGE_SIZE as usize;
            (
                self.prp_mem.as_ptr().wrapping_add(off).cast::<u64>(),
                self.prp_mem.iova().0 + off as u64,
            )
        };
        // SAFETY: alignment and length were checked on submit; the list page belongs
        // to this cid, which is free, so the device is not reading it.
        match unsafe { prp::prp2(iova, (nlb as u64) << block_shift, list) } {
            Some(p) => {
                sqe.prp1 = iova;
                sqe.prp2 = p;
            }
            // Unreachable: requests are split at MDTS and MAX_PRP_PAGES. A zero PRP1
            // makes the device fail the command rather than touch memory.
            None => sqe.prp1 = 0,
        }
        sqe
    }

    /// Puts a command in the SQ for identifier `cid` and arms its tracker.
    #[inline(always)]
    fn post(&mut self, cid: u16, mut sqe: Sqe, parent: u16, ctx: u64) {
        sqe.set_cid(cid);
        // SAFETY: identifiers on the free list are indexes of `trackers` (made as
        // `0..trackers.len()`, and only popped identifiers are pushed back).
        let t = unsafe { self.trackers.get_unchecked_mut(cid as usize) };
        t.active = true;
        t.abort_sent = false;
        t.parent = parent;
        t.ctx = ctx;
        t.deadline = clock::ticks().wrapping_add(self.timeout_ticks);
        let slot = self
            .sq_mem
            .as_ptr()
            .wrapping_add(self.sq_tail as usize * SQE_SIZE)
            .cast::<Sqe>();
        // SAFETY: `sq_tail < entries` and the SQ buffer holds `entries` 64-byte slots;
        // the slot is free because at most entries - 1 commands are in flight. An Sqe
        // is 64 bytes of plain integers, so it may be viewed as eight u64 words, and
        // the slot is 64-byte aligned (the queue is page aligned).
        unsafe {
            let words = (&sqe as *const Sqe).cast::<[u64; 8]>().read();
            let dst = slot.cast::<u64>();
            for (i, w) in words.iter().enumerate() {
                dst.add(i).write_volatile(*w);
            }
        }
        self.sq_tail += 1;
        if self.sq_tail == self.entries {
            self.sq_tail = 0;
        }
        self.sq_dirty = true;
        self.stats.commands += 1;
    }

    /// Writes the SQ tail doorbell if commands were queued since the last write.
    #[inline]
    pub fn flush(&mut self) {
        // Never while held (reset or failed): a hold clears `sq_dirty` as it rewinds
        // the rings, and nothing is issued while held (new requests pend).
        debug_assert!(!(self.sq_dirty && self.held));
        if self.sq_dirty {
            // The entries must be visible to the device before the doorbell.
            fence(Ordering::Release);
            self.sq_db.write(self.sq_tail as u32);
            self.sq_dirty = false;
            self.stats.sq_doorbell_writes += 1;
        }
    }

    /// Polls for up to `max` completions, delivering each finished request to `cb`
    /// exactly once. Also rings the SQ doorbell for queued commands, issues pending
    /// requests as identifiers free up, reacts to controller resets and failure, and
    /// checks deadlines. Returns the number of requests delivered.
    #[inline]
    pub fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        self.stats.polls += 1;
        let ctl = self.shared.control.load(Ordering::Acquire);
        let mut delivered = 0;
        if ctl != self.control_seen {
            delivered += self.handle_control(ctl, cb);
        }
        if self.failed {
            return delivered;
        }
        self.flush();
        let mut consumed = 0;
        while consumed < max {
            let entry = self
                .cq_mem
                .as_ptr()
                .wrapping_add(self.cq_head as usize * CQE_SIZE);
            // SAFETY: `cq_head < cq_entries` and the CQ buffer holds that many entries;
            // the status word is the last 2 bytes of the 16-byte entry.
            let status = unsafe { entry.add(14).cast::<u16>().read_volatile() };
            if (status & 1 == 1) != self.phase {
                break;
            }
            // Read the rest of the entry only after seeing its phase tag: dwords 2
            // (SQ head, SQ identifier) and 3 (command identifier, status); dwords 0
            // and 1 are command specific and I/O commands here do not use them
            // (figure 90).
            fence(Ordering::Acquire);
            // SAFETY: as above; the entry's 16 bytes are in bounds and 4-byte aligned.
            let (dw2, dw3) = unsafe {
                (
                    entry.add(8).cast::<u32>().read_volatile(),
                    entry.add(12).cast::<u32>().read_volatile(),
                )
            };
            let cid = dw3 as u16;
            if cid as usize >= self.trackers.len()
                || !self.trackers[cid as usize].active
                || dw2 as u16 >= self.entries
                || (dw2 >> 16) as u16 != self.qid
            {
                self.bad_completion(dw2, dw3);
                break;
            }
            self.cq_head += 1;
            if self.cq_head == self.cq_entries {
                self.cq_head = 0;
                self.phase = !self.phase;
            }
            consumed += 1;
            let status = Status::from_field((dw3 >> 17) as u16);
            delivered += self.complete_tracker(cid, status, cb);
        }
        if consumed > 0 {
            self.cq_unreported += consumed;
            if self.cq_unreported > self.cq_db_threshold {
                self.cq_db.write(self.cq_head as u32);
                self.cq_unreported = 0;
                self.stats.cq_doorbell_writes += 1;
            }
            // Identifiers were freed: requests waiting behind the pending ring or a
            // split request go now (`slow` is also set while held, when
            // `drain_pending` does nothing). Only they can have dirtied the SQ since
            // the flush above: the callback cannot reach this queue pair.
            if self.slow {
                self.drain_pending();
                self.flush();
            }
        } else {
            self.stats.idle_polls += 1;
        }
        if self.stats.polls >= self.next_timeout_scan {
            self.next_timeout_scan = self.stats.polls + TIMEOUT_SCAN_POLLS;
            self.scan_timeouts();
        }
        delivered
    }

    /// A completion that does not match a command in flight, or names one with an
    /// impossible SQ head or SQ identifier: it is counted (once, however many polls
    /// find it) and never delivered, and the controller is failed (by its owner)
    /// rather than trusted with this queue's state. The queue pair consumes nothing
    /// past it; the failure completes what is in flight.
    #[cold]
    #[inline(never)]
    fn bad_completion(&mut self, dw2: u32, dw3: u32) {
        let at = self.cq_head as u32 | (self.phase as u32) << 16 | 1 << 17;
        if self.bad_at == at {
            return;
        }
        self.bad_at = at;
        let cid = dw3 as u16;
        let stray = self.trackers.get(cid as usize).is_none_or(|t| !t.active);
        let what = if stray {
            self.stats.stray_completions += 1;
            "no command in flight has this identifier (unknown, or a duplicate)"
        } else {
            self.stats.malformed_completions += 1;
            "the SQ head or SQ identifier is out of range"
        };
        let reason = format!(
            "queue {}: invalid completion (cid {cid}, sq_head {}, sq_id {}) with {} trackers and {} entries: {what}",
            self.qid,
            dw2 as u16,
            dw2 >> 16,
            self.trackers.len(),
            self.entries
        );
        self.ctrl.request_failure(reason);
    }

    #[inline]
    fn complete_tracker(
        &mut self,
        cid: u16,
        status: Status,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        let t = &mut self.trackers[cid as usize];
        t.active = false;
        let (parent, ctx) = (t.parent, t.ctx);
        self.push_cid(cid);
        if parent == NO_PARENT {
            self.stats.completed += 1;
            cb(IoCompletion { ctx, status });
            return 1;
        }
        let p = &mut self.parents[parent as usize];
        p.inflight -= 1;
        if !status.is_success() && p.status.is_success() {
            p.status = status;
        }
        if p.inflight == 0 && p.issued >= p.req.nlb {
            self.finish_parent(parent, cb);
            return 1;
        }
        0
    }

    /// Delivers split request `p` with its status and frees it.
    fn finish_parent(&mut self, p: u16, cb: &mut impl FnMut(IoCompletion)) {
        let par = &self.parents[p as usize];
        let done = IoCompletion {
            ctx: par.req.ctx,
            status: par.status,
        };
        self.free_parents.push(p);
        self.stats.completed += 1;
        cb(done);
    }

    #[inline(always)]
    fn update_slow(&mut self) {
        self.slow = self.held || self.partial.is_some() || !self.pending.is_empty();
    }

    /// Issues waiting requests, oldest first, while identifiers are free.
    #[inline(never)]
    fn drain_pending(&mut self) {
        self.drain_pending_inner();
        self.update_slow();
    }

    fn drain_pending_inner(&mut self) {
        if self.held || self.failed {
            return;
        }
        if let Some(p) = self.partial {
            // `drain_pending` brings `slow` up to date after.
            self.continue_parent_inner(p);
            if self.partial.is_some() {
                return;
            }
        }
        while self.free_len > 0 && self.partial.is_none() {
            let Some(req) = self.pending.pop_front() else {
                break;
            };
            // Validated on submit; the namespace table does not change.
            let Some(&ns) = self.ns_info(req.nsid) else {
                continue;
            };
            self.start(&req, ns);
        }
    }

    fn scan_timeouts(&mut self) {
        let now = clock::ticks();
        for cid in 0..self.trackers.len() {
            let t = &mut self.trackers[cid];
            if !t.active || (now.wrapping_sub(t.deadline) as i64) < 0 {
                continue;
            }
            if !t.abort_sent {
                // First expiry: ask the controller's admin side to abort it, and give
                // the abort one more timeout period.
                t.abort_sent = true;
                t.deadline = now.wrapping_add(self.timeout_ticks);
                self.stats.timeouts += 1;
                self.ctrl.request_abort(self.shared.qid, cid as u16);
            } else {
                // The abort did not bring it back either: reset the controller.
                self.ctrl.request_reset();
            }
        }
    }

    /// Completes everything in flight (and, when failing, everything pending) with
    /// `status`. Returns the number delivered.
    fn abort_all(
        &mut self,
        status: Status,
        include_pending: bool,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        let mut n = 0;
        for cid in 0..self.trackers.len() {
            if self.trackers[cid].active {
                self.stats.reset_aborts += 1;
                n += self.complete_tracker(cid as u16, status, cb);
            }
        }
        // A split request with blocks not yet issued: its commands in flight were
        // completed just above, so it ends here, with its first error or `status`.
        if let Some(p) = self.partial.take() {
            let par = &mut self.parents[p as usize];
            debug_assert_eq!(par.inflight, 0);
            if par.status.is_success() {
                par.status = status;
            }
            self.finish_parent(p, cb);
            n += 1;
        }
        if include_pending {
            while let Some(req) = self.pending.pop_front() {
                self.stats.completed += 1;
                cb(IoCompletion {
                    ctx: req.ctx,
                    status,
                });
                n += 1;
            }
        }
        n
    }

    fn rewind_rings(&mut self) {
        // SAFETY: the controller is disabled (RESET phase), so the device no longer
        // writes the CQ; the buffer is `cq_mem.len()` bytes of our memory.
        unsafe { std::ptr::write_bytes(self.cq_mem.as_ptr(), 0, self.cq_mem.len()) };
        self.sq_tail = 0;
        self.cq_head = 0;
        self.cq_unreported = 0;
        self.phase = true;
        self.sq_dirty = false;
        self.bad_at = 0;
    }

    #[cold]
    fn handle_control(&mut self, ctl: u64, cb: &mut impl FnMut(IoCompletion)) -> usize {
        self.control_seen = ctl;
        let epoch = ctl >> 2;
        match ctl & 3 {
            CTL_RESET => {
                // The device is disabled: nothing in flight will complete. Each request
                // completes once, with a status that says it may be retried.
                let n = self.abort_all(Status::ABORTED_SQ_DELETION, false, cb);
                self.rewind_rings();
                self.held = true;
                self.update_slow();
                self.shared.ack.store(epoch, Ordering::Release);
                n
            }
            CTL_LIVE => {
                self.held = false;
                // Also brings `slow` up to date.
                self.drain_pending();
                self.flush();
                0
            }
            _ => {
                let n = self.abort_all(Status::ABORTED_BY_HOST, true, cb);
                self.failed = true;
                self.held = true;
                // Queued commands are never announced to a failed controller.
                self.sq_dirty = false;
                self.update_slow();
                self.shared.ack.store(epoch, Ordering::Release);
                n
            }
        }
    }
}

impl Drop for IoQpair {
    fn drop(&mut self) {
        self.ctrl.destroy_qpair(&self.shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_constructors() {
        let r = IoRequest::flush(3, 9);
        assert_eq!((r.op, r.nsid, r.ctx), (IoOp::Flush, 3, 9));
        let r = IoRequest::no_data(IoOp::Deallocate, 1, 10, 20, 0);
        assert_eq!((r.slba, r.nlb), (10, 20));
    }

    #[test]
    fn since_subtracts_every_count() {
        let before = QpairStats {
            completed: 5,
            stray_completions: 1,
            malformed_completions: 2,
            pending_high_water: 9,
            ..QpairStats::default()
        };
        let now = QpairStats {
            completed: 8,
            stray_completions: 4,
            malformed_completions: 2,
            pending_high_water: 3,
            ..QpairStats::default()
        };
        let d = now.since(&before);
        assert_eq!(
            (d.completed, d.stray_completions, d.malformed_completions),
            (3, 3, 0)
        );
        assert_eq!(d.pending_high_water, 3, "the high-water mark stays current");
    }
}
