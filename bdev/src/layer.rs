//! The block layer over the driver: controllers, their threads, and the bdevs they
//! provide.
//!
//! [`BlockLayer::attach`] brings up a controller and gives it a controller thread
//! (never a reactor: resets block for their duration) that calls `process_admin`
//! every `admin_poll_us`, follows ANA changes (events, and channels' reports of ANA
//! error statuses), performs requested resets (path out of the set first, reset,
//! path back), and reconnects a lost controller every `reconnect_delay_ms` until
//! `ctrl_loss_timeout_ms`, after which its paths are removed. Each namespace becomes
//! a namespace bdev `"<controller>n<nsid>"` and a path of the multipath bdev
//! `"<subnqn>:n<nsid>"`, shared with every controller that reaches the same namespace
//! (same subsystem NQN and NGUID, EUI-64 or UUID; for a shared namespace without
//! identifiers, same subsystem NQN and NSID).

use crate::dma::IoBufPool;
use crate::io::{BdevCompletion, BdevIo};
use crate::mpath::{BdevInfo, MpathChannel, MpathOptions, Multipath, PathShared, PathState};
use crate::qsbr::Qsbr;
use crate::sync::lock_std as lock;
use crate::{Error, IoBuf, Result};
use nvme_driver::bus::Bus;
use nvme_driver::spec::AnaState;
use nvme_driver::{
    Controller, ControllerOptions, CtrlState, DmaSlice, IoOp, IoQpair, Namespace, QpairOptions,
    Refused,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Produces the bus of a controller, at attach time and on every reconnect attempt
/// (for VFIO: open the PCI device again; for the software controller: hand back the
/// same one).
pub type Connector = Arc<dyn Fn() -> nvme_driver::Result<Arc<dyn Bus>> + Send + Sync>;

/// Options of a [`BlockLayer`].
#[derive(Clone, Debug)]
pub struct LayerOptions {
    /// Multipath behaviour of every multipath bdev.
    pub mpath: MpathOptions,
    /// Queue pairs created for channels.
    pub qpair: QpairOptions,
    /// Controller bring-up options.
    pub ctrl: ControllerOptions,
    /// How often controller threads do housekeeping.
    pub admin_poll_us: u64,
    /// QSBR reader slots (reactors plus channels).
    pub readers: usize,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mpath: MpathOptions::default(),
            qpair: QpairOptions::default(),
            ctrl: ControllerOptions::default(),
            admin_poll_us: 1000,
            readers: crate::qsbr::MAX_READERS,
        }
    }
}

/// A path this controller provides: the bdev, the path, the NSID.
type CtrlPath = (Arc<Multipath<IoQpair>>, Arc<PathShared>, u32);

struct CtrlSlot {
    name: String,
    connector: Connector,
    ctrl: Mutex<Option<Controller>>,
    /// Fan-out mapper key of the current instance.
    space: AtomicU64,
    reset_requested: AtomicBool,
    stop: AtomicBool,
    resets: AtomicU64,
    reconnects: AtomicU64,
    paths: Mutex<Vec<CtrlPath>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    opts: LayerOptions,
    qsbr: Arc<Qsbr>,
    bufs: IoBufPool,
    bdevs: Mutex<Vec<Bdev>>,
    ctrls: Mutex<Vec<Arc<CtrlSlot>>>,
}

/// The block layer: controllers, bdevs, I/O buffers.
pub struct BlockLayer {
    inner: Arc<Inner>,
}

impl fmt::Debug for BlockLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockLayer")
            .field("bdevs", &self.bdev_names())
            .finish()
    }
}

/// A bdev for one namespace of one controller (no failover).
pub struct NsBdev {
    info: BdevInfo,
    nsid: u32,
    slot: Arc<CtrlSlot>,
    qpair: QpairOptions,
}

impl fmt::Debug for NsBdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsBdev").field("info", &self.info).finish()
    }
}

/// A block device, opened by name.
#[derive(Clone, Debug)]
pub enum Bdev {
    /// One namespace through one controller.
    Nvme(Arc<NsBdev>),
    /// One namespace through every controller that reaches it.
    Mpath(Arc<Multipath<IoQpair>>),
}

impl Bdev {
    /// Geometry and identifiers.
    pub fn info(&self) -> &BdevInfo {
        match self {
            Bdev::Nvme(b) => &b.info,
            Bdev::Mpath(m) => m.info(),
        }
    }
    /// Name.
    pub fn name(&self) -> &str {
        &self.info().name
    }
    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.info().block_size
    }
    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.info().num_blocks
    }
    /// Opens a channel for one core. Set-up work (creates queue pairs, may wait for
    /// a controller's admin queue): call it off the reactors, then move the channel
    /// to its core.
    pub fn channel(&self) -> Result<Channel> {
        match self {
            Bdev::Nvme(b) => {
                let ctrl = lock(&b.slot.ctrl).clone().ok_or_else(|| {
                    Error::Stopped(format!(
                        "{}: controller {} is not connected",
                        b.info.name, b.slot.name
                    ))
                })?;
                Ok(Channel::Nvme(NsChannel {
                    qpair: ctrl.create_io_qpair(b.qpair)?,
                    nsid: b.nsid,
                    num_blocks: b.info.num_blocks,
                    block_shift: b.info.block_size.trailing_zeros(),
                }))
            }
            Bdev::Mpath(m) => {
                // Queue pairs come from the controller currently behind each path.
                let ch = m.channel(&mut |p: &PathShared| queue_for(p))?;
                Ok(Channel::Mpath(ch))
            }
        }
    }
    /// The multipath core, if this is a multipath bdev.
    pub fn multipath(&self) -> Option<&Arc<Multipath<IoQpair>>> {
        match self {
            Bdev::Mpath(m) => Some(m),
            Bdev::Nvme(_) => None,
        }
    }
}

/// Where a path's queue pairs come from: registered per path instance.
struct QueueSource {
    id: u64,
    ctrl: Controller,
    opts: QpairOptions,
}

/// Path instance and address-space identifiers, unique in the process (paths of
/// several layers share the queue-source registry below).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static SOURCES: Mutex<Vec<QueueSource>> = Mutex::new(Vec::new());

fn queue_for(p: &PathShared) -> Result<IoQpair> {
    let (ctrl, opts) = {
        let g = lock(&SOURCES);
        let s = g.iter().find(|s| s.id == p.id).ok_or_else(|| {
            Error::Stopped(format!("path {} ({}) has no controller", p.id, p.name))
        })?;
        (s.ctrl.clone(), s.opts)
    };
    Ok(ctrl.create_io_qpair(opts)?)
}

fn register_source(id: u64, ctrl: &Controller, opts: QpairOptions) {
    lock(&SOURCES).push(QueueSource {
        id,
        ctrl: ctrl.clone(),
        opts,
    });
}

fn unregister_source(id: u64) {
    lock(&SOURCES).retain(|s| s.id != id);
}

/// A channel of a namespace bdev: the queue pair itself.
#[derive(Debug)]
pub struct NsChannel {
    qpair: IoQpair,
    nsid: u32,
    num_blocks: u64,
    block_shift: u32,
}

impl NsChannel {
    /// The queue pair checks range and buffer against this namespace, the bdev's
    /// geometry: a refusal is explained by `refused`, off the fast path.
    #[inline]
    fn submit(&mut self, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        match self.qpair.try_submit(&io.to_request(self.nsid, io.ctx)) {
            Ok(()) => Ok(()),
            Err(why) => Err(self.refused(why, io.op, io.slba, io.nlb, io.buf, io.ctx)),
        }
    }

    /// The error for a refused I/O, in the bdev's terms when the I/O itself is bad.
    /// (In pieces, so the fast path need not keep the I/O in memory.)
    #[cold]
    #[inline(never)]
    fn refused(
        &self,
        why: Refused,
        op: IoOp,
        slba: u64,
        nlb: u32,
        buf: DmaSlice,
        ctx: u64,
    ) -> (Error, BdevIo) {
        let io = BdevIo {
            op,
            slba,
            nlb,
            buf,
            ctx,
        };
        if let Err(e) = io.validate(self.num_blocks, self.block_shift) {
            return (e, io);
        }
        let e = self.qpair.explain(why, io.to_request(self.nsid, ctx));
        (e.into(), io)
    }
}

/// A per-core channel to a bdev. Submit never waits; poll delivers each I/O's
/// completion exactly once.
#[derive(Debug)]
// One channel per core and bdev: its size does not matter, a box would cost a pointer
// chase on every I/O.
#[allow(clippy::large_enum_variant)]
// An explicit one-byte tag: the match on every call is then a byte compare, not a
// test of a niche inside one of the variants.
#[repr(u8)]
pub enum Channel {
    /// Namespace bdev channel.
    Nvme(NsChannel),
    /// Multipath bdev channel.
    Mpath(MpathChannel<IoQpair>),
}

impl Channel {
    /// Submits an I/O, or hands it back with the reason. Never waits.
    #[inline]
    pub fn submit(&mut self, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        match self {
            Channel::Mpath(c) => c.submit(io),
            Channel::Nvme(c) => c.submit(io),
        }
    }
    /// Polls for completions, delivering each to `cb`; returns how many.
    #[inline]
    pub fn poll(&mut self, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        match self {
            Channel::Mpath(c) => c.poll(cb),
            Channel::Nvme(c) => c.qpair.poll(256, &mut |x| {
                cb(BdevCompletion {
                    ctx: x.ctx,
                    status: x.status,
                })
            }),
        }
    }
    /// Rings the doorbells for I/O submitted since the last poll (poll does it too).
    #[inline]
    pub fn flush(&mut self) {
        match self {
            Channel::Mpath(c) => c.flush(),
            Channel::Nvme(c) => c.qpair.flush(),
        }
    }
    /// I/Os submitted and not yet delivered.
    pub fn outstanding(&self) -> usize {
        match self {
            Channel::Mpath(c) => c.outstanding(),
            Channel::Nvme(c) => c.qpair.outstanding(),
        }
    }
    /// The queue pair's ID for a namespace bdev's channel (one queue pair); `None` for
    /// a multipath channel, which drives one queue pair per path.
    pub fn qid(&self) -> Option<u16> {
        match self {
            Channel::Mpath(_) => None,
            Channel::Nvme(c) => Some(c.qpair.qid()),
        }
    }
    /// Stop mode (see [`MpathChannel::shutdown`]); poll until `outstanding() == 0`.
    pub fn shutdown(&mut self) {
        if let Channel::Mpath(c) = self {
            c.shutdown();
        }
    }
}

fn ns_info(ctrl: &Controller, ns: &Namespace, name: String) -> BdevInfo {
    BdevInfo {
        name,
        block_size: ns.block_size,
        num_blocks: ns.nsze,
        subnqn: ctrl.identify().subnqn.clone(),
        nguid: ns.nguid(),
        eui64: ns.eui64(),
        uuid: ns.ids.uuid.filter(|u| u.iter().any(|&b| b != 0)),
    }
}

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

fn path_state(ctrl: &Controller, nsid: u32) -> PathState {
    PathState {
        connected: ctrl.state() == CtrlState::Live,
        ana: ana_of(ctrl, nsid),
    }
}

impl BlockLayer {
    /// A block layer with no controllers yet. Validates the options.
    pub fn new(opts: LayerOptions) -> Result<Self> {
        opts.mpath.validate()?;
        if opts.admin_poll_us == 0 {
            return Err(Error::InvalidOption(
                "admin_poll_us must be positive".into(),
            ));
        }
        Ok(BlockLayer {
            inner: Arc::new(Inner {
                qsbr: Qsbr::new(opts.readers),
                opts,
                bufs: IoBufPool::new(),
                bdevs: Mutex::new(Vec::new()),
                ctrls: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The QSBR domain (give it to [`Reactors::start`](crate::Reactors::start)).
    pub fn qsbr(&self) -> &Arc<Qsbr> {
        &self.inner.qsbr
    }

    /// A buffer every attached controller can reach.
    pub fn alloc_buffer(&self, len: usize) -> Result<IoBuf> {
        self.inner.bufs.alloc(len)
    }

    /// Names of every bdev.
    pub fn bdev_names(&self) -> Vec<String> {
        lock(&self.inner.bdevs)
            .iter()
            .map(|b| b.name().to_string())
            .collect()
    }

    /// Opens a bdev by name.
    pub fn open(&self, name: &str) -> Result<Bdev> {
        let g = lock(&self.inner.bdevs);
        g.iter()
            .find(|b| b.name() == name)
            .cloned()
            .ok_or_else(|| Error::NoSuchBdev {
                name: name.to_string(),
                known: g.iter().map(|b| b.name().to_string()).collect(),
            })
    }

    /// Attaches a software or already-open controller: shorthand for [`attach`](Self::attach)
    /// with a connector that hands back `bus`.
    pub fn attach_bus(&self, name: &str, bus: Arc<dyn Bus>) -> Result<Vec<String>> {
        self.attach(name, Arc::new(move || Ok(bus.clone())))
    }

    /// Brings up a controller, creates its bdevs (or joins existing multipath bdevs as
    /// a new path) and starts its controller thread. Returns the bdev names involved.
    pub fn attach(&self, name: &str, connector: Connector) -> Result<Vec<String>> {
        if lock(&self.inner.ctrls).iter().any(|c| c.name == name) {
            return Err(Error::PathMismatch(format!(
                "a controller named {name} is already attached"
            )));
        }
        let (ctrl, space) = connect(&self.inner, &connector)?;
        let slot = Arc::new(CtrlSlot {
            name: name.to_string(),
            connector,
            ctrl: Mutex::new(Some(ctrl.clone())),
            space: AtomicU64::new(space),
            reset_requested: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
            thread: Mutex::new(None),
        });
        let mut names = Vec::new();
        for ns in ctrl.namespaces() {
            let nsb = NsBdev {
                info: ns_info(&ctrl, ns, format!("{name}n{}", ns.nsid)),
                nsid: ns.nsid,
                slot: slot.clone(),
                qpair: self.inner.opts.qpair,
            };
            names.push(nsb.info.name.clone());
            let mp = self.multipath_for(&ctrl, ns)?;
            names.push(mp.info().name.clone());
            add_path(&self.inner, &slot, &mp, &ctrl, ns.nsid)?;
            lock(&self.inner.bdevs).push(Bdev::Nvme(Arc::new(nsb)));
        }
        let inner = self.inner.clone();
        let s = slot.clone();
        let t = std::thread::Builder::new()
            .name(format!("{name}-ctrl"))
            .spawn(move || controller_thread(inner, s))
            .map_err(|source| Error::Io {
                what: format!("spawning the controller thread of {name}"),
                source,
            })?;
        *lock(&slot.thread) = Some(t);
        lock(&self.inner.ctrls).push(slot);
        Ok(names)
    }

    fn multipath_for(&self, ctrl: &Controller, ns: &Namespace) -> Result<Arc<Multipath<IoQpair>>> {
        let subnqn = &ctrl.identify().subnqn;
        let probe = ns_info(ctrl, ns, String::new());
        let has_id = probe.nguid.is_some() || probe.eui64.is_some() || probe.uuid.is_some();
        // A shared namespace (NMIC bit 0) without identifiers (QEMU's by default): in
        // one NVM subsystem an NSID names the same namespace through every
        // controller, so subsystem NQN and NSID identify it (as Linux does).
        let shared_name = (!has_id && ns.id.nmic & 1 == 1 && !subnqn.is_empty())
            .then(|| format!("{subnqn}:n{}", ns.nsid));
        let mut g = lock(&self.inner.bdevs);
        for b in g.iter() {
            if let Bdev::Mpath(m) = b {
                let same = m.info().same_namespace(&probe)
                    || shared_name.as_deref().is_some_and(|n| {
                        n == m.info().name
                            && m.info().nguid.is_none()
                            && m.info().eui64.is_none()
                            && m.info().uuid.is_none()
                    });
                if same {
                    if m.info().block_size != probe.block_size
                        || m.info().num_blocks != probe.num_blocks
                    {
                        return Err(Error::PathMismatch(format!(
                            "{}: namespace {} has {} blocks of {} bytes through {}, {} of {} elsewhere",
                            m.info().name, ns.nsid, probe.num_blocks, probe.block_size, ctrl.name(),
                            m.info().num_blocks, m.info().block_size
                        )));
                    }
                    return Ok(m.clone());
                }
            }
        }
        let name = if has_id {
            format!("{subnqn}:n{}", ns.nsid)
        } else if let Some(n) = shared_name {
            n
        } else {
            format!("{}n{}:mp", ctrl.name(), ns.nsid)
        };
        let mp = Multipath::new(
            BdevInfo { name, ..probe },
            self.inner.opts.mpath,
            ctrl.identify().anatt,
            self.inner.qsbr.clone(),
        )?;
        g.push(Bdev::Mpath(mp.clone()));
        Ok(mp)
    }

    /// Asks the controller thread of `name` to reset its controller: its paths leave
    /// the path sets, the controller resets, the paths come back. Returns at once.
    pub fn request_reset(&self, name: &str) -> Result<()> {
        let g = lock(&self.inner.ctrls);
        let s = g
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NoSuchBdev {
                name: name.to_string(),
                known: g.iter().map(|c| c.name.clone()).collect(),
            })?;
        s.reset_requested.store(true, Ordering::Release);
        Ok(())
    }

    /// Resets done by controller threads at request, and reconnects, of `name`.
    pub fn controller_counts(&self, name: &str) -> Option<(u64, u64)> {
        lock(&self.inner.ctrls)
            .iter()
            .find(|c| c.name == name)
            .map(|c| {
                (
                    c.resets.load(Ordering::Relaxed),
                    c.reconnects.load(Ordering::Relaxed),
                )
            })
    }

    /// True while a requested reset of `name` has not started yet.
    pub fn reset_pending(&self, name: &str) -> bool {
        lock(&self.inner.ctrls)
            .iter()
            .any(|c| c.name == name && c.reset_requested.load(Ordering::Acquire))
    }

    /// Detaches controller `name`: its paths leave their multipath bdevs (channels
    /// finish their I/O on them first) and its thread stops.
    pub fn detach(&self, name: &str) -> Result<()> {
        let slot = {
            let mut g = lock(&self.inner.ctrls);
            let pos = g
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| Error::NoSuchBdev {
                    name: name.to_string(),
                    known: g.iter().map(|c| c.name.clone()).collect(),
                })?;
            g.remove(pos)
        };
        stop_slot(&self.inner, &slot, true);
        Ok(())
    }

    /// Stops every controller thread and removes every path. Channels should be
    /// drained and dropped first.
    pub fn shutdown(&self) {
        let all = std::mem::take(&mut *lock(&self.inner.ctrls));
        for s in all {
            stop_slot(&self.inner, &s, false);
        }
        for b in lock(&self.inner.bdevs).iter() {
            if let Bdev::Mpath(m) = b {
                m.tick();
            }
        }
    }
}

impl Drop for BlockLayer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn add_path(
    inner: &Inner,
    slot: &Arc<CtrlSlot>,
    mp: &Arc<Multipath<IoQpair>>,
    ctrl: &Controller,
    nsid: u32,
) -> Result<()> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::new(PathShared::new(id, slot.name.clone(), nsid));
    register_source(id, ctrl, inner.opts.qpair);
    let opts = inner.opts.qpair;
    let res = mp.add_path(shared.clone(), path_state(ctrl, nsid), &mut || {
        Ok(ctrl.create_io_qpair(opts)?)
    });
    if let Err(e) = res {
        unregister_source(id);
        return Err(e);
    }
    lock(&slot.paths).push((mp.clone(), shared, nsid));
    Ok(())
}

fn remove_paths(slot: &CtrlSlot) {
    for (mp, p, _) in lock(&slot.paths).drain(..) {
        mp.remove_path(p.id);
        unregister_source(p.id);
    }
}

/// Stops a controller's thread and takes its paths and namespace bdevs away. With
/// `fail_ctrl` (detach, where channels may still have I/O on the controller) the
/// controller is failed first: the device stops touching memory before the buffer
/// window is unmapped from its address space, and what its queue pairs hold comes
/// back to their owners as path errors (retried on another path) instead of being
/// finished against unmapped memory (a Data Transfer Error, which does not retry).
fn stop_slot(inner: &Inner, slot: &Arc<CtrlSlot>, fail_ctrl: bool) {
    slot.stop.store(true, Ordering::Release);
    if let Some(t) = lock(&slot.thread).take() {
        let _ = t.join();
    }
    if fail_ctrl {
        // After the thread stopped: it would take the failure for a loss and
        // reconnect.
        if let Some(c) = lock(&slot.ctrl).as_ref() {
            c.fail("detached");
        }
    }
    remove_paths(slot);
    inner.bufs.fanout.detach(slot.space.load(Ordering::Relaxed));
    lock(&inner.bdevs).retain(|b| !matches!(b, Bdev::Nvme(n) if Arc::ptr_eq(&n.slot, slot)));
}

fn set_connected(slot: &CtrlSlot, connected: bool, ctrl: Option<&Controller>) {
    for (mp, p, nsid) in lock(&slot.paths).iter() {
        let ana = ctrl.map_or(AnaState::Inaccessible, |c| ana_of(c, *nsid));
        mp.set_path_state(p.id, PathState { connected, ana });
    }
}

fn controller_thread(inner: Arc<Inner>, slot: Arc<CtrlSlot>) {
    let opts = inner.opts.mpath;
    let poll = Duration::from_micros(inner.opts.admin_poll_us);
    let reconnect_delay = Duration::from_millis(opts.reconnect_delay_ms);
    let mut lost_since: Option<Instant> = None;
    let mut next_attempt = Instant::now();
    while !slot.stop.load(Ordering::Acquire) {
        let current = lock(&slot.ctrl).clone();
        match (current, lost_since) {
            (Some(ctrl), None) => {
                if slot.reset_requested.swap(false, Ordering::AcqRel) {
                    // Out of the path set first: no new I/O goes this way while the
                    // reset runs; what is in flight comes back as path errors.
                    set_connected(&slot, false, Some(&ctrl));
                    if ctrl.reset().is_ok() {
                        slot.resets.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let st = ctrl.process_admin();
                if st == CtrlState::Failed {
                    set_connected(&slot, false, None);
                    if opts.ctrl_loss_timeout_ms == 0 {
                        // Never reconnect: the paths go now.
                        remove_paths(&slot);
                        *lock(&slot.ctrl) = None;
                    } else {
                        lost_since = Some(Instant::now());
                        next_attempt = Instant::now() + reconnect_delay;
                    }
                } else {
                    let _ = ctrl.take_events();
                    // This thread alone clears its paths' flags, every one that is set
                    // (not only up to the first).
                    let stale = lock(&slot.paths)
                        .iter()
                        .filter(|(_, p, _)| p.ana_stale.swap(false, Ordering::AcqRel))
                        .count()
                        > 0;
                    if stale && ctrl.identify().ana_supported() {
                        let _ = ctrl.refresh_ana();
                    }
                    set_connected(&slot, ctrl.state() == CtrlState::Live, Some(&ctrl));
                }
            }
            (_, Some(since)) => {
                let loss = opts.ctrl_loss_timeout_ms;
                if loss > 0 && since.elapsed() > Duration::from_millis(loss as u64) {
                    remove_paths(&slot);
                    *lock(&slot.ctrl) = None;
                    lost_since = None;
                } else if Instant::now() >= next_attempt {
                    next_attempt = Instant::now() + reconnect_delay;
                    if reconnect(&inner, &slot).is_ok() {
                        lost_since = None;
                        slot.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (None, None) => {}
        }
        let mps: Vec<_> = lock(&slot.paths)
            .iter()
            .map(|(m, _, _)| m.clone())
            .collect();
        for m in mps {
            m.tick();
        }
        std::thread::sleep(poll);
    }
}

/// Brings up the controller `connector` reaches, with the layer's buffer window
/// registered and mapped into its IOMMU domain; returns it with its address-space id.
fn connect(inner: &Inner, connector: &Connector) -> Result<(Controller, u64)> {
    let bus = connector()?;
    let ctrl = Controller::init(bus.clone(), inner.opts.ctrl.clone())?;
    // Multipath channels poll only the queue pairs they gave I/O and look at the rest
    // when the QSBR epoch moves: a reset or failure of this controller moves it, so
    // an idle queue pair acknowledges a reset at its channel's next poll.
    let qsbr = inner.qsbr.clone();
    ctrl.on_queue_state_change(move || qsbr.bump())?;
    let (base, len) = inner.bufs.window();
    ctrl.add_dma_window(base, len)?;
    let space = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    inner.bufs.fanout.attach(space, bus.mapper())?;
    Ok((ctrl, space))
}

fn reconnect(inner: &Inner, slot: &Arc<CtrlSlot>) -> Result<()> {
    let (ctrl, space) = connect(inner, &slot.connector)?;
    let old_space = slot.space.swap(space, Ordering::AcqRel);
    inner.bufs.fanout.detach(old_space);
    let old: Vec<_> = lock(&slot.paths).drain(..).collect();
    *lock(&slot.ctrl) = Some(ctrl.clone());
    for (mp, p, nsid) in old {
        mp.remove_path(p.id);
        unregister_source(p.id);
        add_path(inner, slot, &mp, &ctrl, nsid)?;
    }
    Ok(())
}
