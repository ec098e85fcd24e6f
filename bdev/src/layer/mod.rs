// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The block layer over the driver: controllers, their threads, and the bdevs they
//! provide.
//!
//! [`BlockLayer::attach`] brings up a controller and gives it a controller thread
//! (`layer/controller.rs`: admin housekeeping, ANA, resets, the link state and
//! reconnects). Each namespace becomes a namespace bdev `"<controller>n<nsid>"`
//! (`layer/ns.rs`) and a path of the multipath bdev `"<subnqn>:n<nsid>"`, shared
//! with every controller that reaches the same namespace (same subsystem NQN and
//! NGUID, EUI-64 or UUID; for a shared namespace without identifiers, same subsystem
//! NQN and NSID). Each path's record in its multipath bdev keeps the factory that
//! makes a channel's queue pair on the path's controller.

mod attach;
mod controller;
mod group;
mod hotplug;
mod ns;
mod subscribe;

pub use group::PollGroup;
pub use hotplug::{
    vfio_connector, HotplugSource, HotplugStats, VfioHotplug, ATTACH_ATTEMPTS, PERIOD_MIN_MS,
};
pub use ns::{NsBdev, NsChannel};

/// The queue a multipath channel drives on an NVMe path: its membership of an I/O
/// queue pair that the channels of its poll group share (`crate::share`).
pub type NvmeQueue = crate::share::QueueShare<IoQpair>;

use crate::dma::{IoBufPool, MemRegion};
use crate::io::{BdevCompletion, BdevIo};
use crate::iostat::{BdevIoStat, IoStat};
use crate::mpath::{BdevInfo, MpathChannel, MpathOptions, Multipath};
use crate::qsbr::Qsbr;
use crate::sync::lock_std as lock;
use crate::{Error, IoBuf, Result};
use controller::{CtrlRecord, StopMode};
use hotplug::{HotplugCounters, HotplugThread};
use nvme_driver::bus::Bus;
use nvme_driver::{Controller, ControllerOptions, IoQpair, Namespace, QpairOptions};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Produces the bus of a controller, at attach time and on every reconnect attempt
/// (for VFIO: open the PCI device again; for the software controller: hand back the
/// same one).
pub type Connector = Arc<dyn Fn() -> nvme_driver::Result<Arc<dyn Bus>> + Send + Sync>;

/// What was done to one attached controller, over all its instances: read by tests
/// and tools to explain every reset and failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControllerStats {
    /// Resets asked for through [`BlockLayer::request_reset`] and completed.
    pub resets_requested: u64,
    /// Resets completed, by whoever started them: those asked for, and those the
    /// driver started itself (fatal status, a command that an Abort did not bring
    /// back, an Abort that got no answer).
    pub resets: u64,
    /// Times a live instance failed (the link went to lost, or gone).
    pub failures: u64,
    /// Reconnects that brought a new instance up.
    pub reconnects: u64,
}

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
    /// QSBR reader slots: each reactor and each multipath channel takes one, for as
    /// long as it lives. 1 to [`MAX_READERS`](crate::qsbr::MAX_READERS) (4096);
    /// default [`DEFAULT_READERS`](crate::qsbr::DEFAULT_READERS) (128).
    pub readers: usize,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mpath: MpathOptions::default(),
            qpair: QpairOptions::default(),
            ctrl: ControllerOptions::default(),
            admin_poll_us: 1000,
            readers: crate::qsbr::DEFAULT_READERS,
        }
    }
}

struct Inner {
    opts: LayerOptions,
    qsbr: Arc<Qsbr>,
    bufs: IoBufPool,
    /// The registration window's regions (`register_memory`).
    registered: Arc<crate::dma::RegisteredSpace>,
    bdevs: Mutex<Vec<Bdev>>,
    ctrls: Mutex<Vec<Arc<CtrlRecord>>>,
    /// Path instance and address-space identifiers, unique in this layer.
    next_id: AtomicU64,
    /// Held for the whole of an attach (see `attach.rs`).
    attaching: Mutex<()>,
    /// The hot-plug thread, while hot-plug is enabled.
    hotplug_thread: Mutex<Option<HotplugThread>>,
    /// What the hot-plug thread did.
    hotplug: HotplugCounters,
    /// Subscribers to bdev events (`layer/subscribe.rs`).
    events: Arc<crate::events::EventHub>,
}

/// The block layer: controllers, bdevs, I/O buffers.
///
/// Attach controllers (by PCI address with [`vfio_connector`], or a software
/// controller with [`attach_bus`](Self::attach_bus)), open a bdev by name, make a
/// [`Channel`] per core, submit and poll; stop with [`shutdown`](Self::shutdown)
/// (dropping the layer does the same), which sends every controller the normal
/// shutdown notification. Here a software controller stands in for an SSD:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nvme_bdev::{BlockLayer, LayerOptions};
/// use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
/// use std::sync::Arc;
///
/// let ns = Arc::new(Namespace::new(1, 1 << 12, 512)?);
/// let ssd = SoftController::start(SoftConfig {
///     namespaces: vec![ns],
///     ..SoftConfig::default()
/// });
/// let layer = BlockLayer::new(LayerOptions::default())?;
/// // Per namespace: the namespace bdev, then the multipath bdev.
/// let names = layer.attach_bus("c0", ssd)?;
/// assert_eq!(names[0], "c0n1");
/// let bdev = layer.open(&names[1])?;
/// assert_eq!((bdev.block_size(), bdev.num_blocks()), (512, 1 << 12));
/// layer.shutdown();
/// # Ok(())
/// # }
/// ```
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

/// A block device, opened by name.
#[derive(Clone, Debug)]
pub enum Bdev {
    /// One namespace through one controller.
    Nvme(Arc<NsBdev>),
    /// One namespace through every controller that reaches it.
    Mpath(Arc<Multipath<NvmeQueue>>),
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
    /// Number of blocks now: it follows the namespace's resizes (reported as
    /// [`BdevEvent::Resized`](crate::BdevEvent::Resized)).
    pub fn num_blocks(&self) -> u64 {
        match self {
            Bdev::Nvme(b) => b.num_blocks(),
            Bdev::Mpath(m) => m.num_blocks(),
        }
    }
    /// Opens a channel for one core. Set-up work (creates queue pairs, may wait for
    /// a controller's admin queue): call it off the reactors, then move the channel
    /// to its core.
    pub fn channel(&self) -> Result<Channel> {
        match self {
            Bdev::Nvme(b) => Ok(Channel::Nvme(b.channel()?)),
            // Each path's record makes a queue pair on the controller behind it.
            Bdev::Mpath(m) => Ok(Channel::Mpath(m.channel()?)),
        }
    }
    /// I/O statistics, total and per path, over every channel this bdev has had,
    /// readable from any thread while I/O runs (SPDK's `bdev_get_iostat`; see
    /// [`crate::iostat`] for how fresh an open channel's figures are).
    pub fn iostat(&self) -> BdevIoStat {
        match self {
            Bdev::Nvme(b) => b.iostat(),
            Bdev::Mpath(m) => m.iostat(),
        }
    }
    /// Starts (or stops) the latency histogram of [`iostat`](Self::iostat): each I/O
    /// timed from submit to delivery (SPDK's `bdev_enable_histogram`; off by
    /// default, as timing reads the time-stamp counter twice per I/O). Multipath bdevs
    /// only: a namespace bdev's channel is the driver's queue pair, which does not
    /// time its commands.
    pub fn enable_latency_histogram(&self, on: bool) -> Result<()> {
        match self {
            Bdev::Mpath(m) => {
                m.enable_latency_histogram(on);
                Ok(())
            }
            Bdev::Nvme(b) => Err(Error::InvalidOption(format!(
                "{}: latency histograms are kept by multipath bdevs; use the multipath \
                 bdev over this namespace",
                b.info.name
            ))),
        }
    }
    /// The multipath core, if this is a multipath bdev.
    pub fn multipath(&self) -> Option<&Arc<Multipath<NvmeQueue>>> {
        match self {
            Bdev::Mpath(m) => Some(m),
            Bdev::Nvme(_) => None,
        }
    }
}

/// A per-core channel to a bdev. Submit never waits; poll delivers each I/O's
/// completion exactly once.
///
/// Make one per core and bdev ([`Bdev::channel`]: set-up work, off the reactors),
/// then use it only on that core. A write and a read back, on a software controller:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nvme_bdev::{BdevIo, BlockLayer, Error, LayerOptions};
/// # use nvme_driver::softctrl::{SoftConfig, SoftController};
/// use std::time::{Duration, Instant};
///
/// let layer = BlockLayer::new(LayerOptions::default())?;
/// # let ssd = SoftController::start(SoftConfig::default());
/// let names = layer.attach_bus("c0", ssd)?;
/// let mut ch = layer.open(&names[1])?.channel()?;
/// let mut buf = layer.alloc_buffer(4096)?;
/// buf.fill(0xa5);
/// // Never waits: a refusal hands the I/O back with the reason.
/// ch.submit(BdevIo::write(0, 8, buf.whole(), 1))
///     .map_err(|(e, _io)| e)?;
/// let deadline = Instant::now() + Duration::from_secs(5);
/// let mut done = 0;
/// while done < 1 && Instant::now() < deadline {
///     ch.poll(&mut |c| {
///         assert!(c.status.is_success(), "I/O {}: {:?}", c.ctx, c.status);
///         done += 1;
///     });
/// }
/// let back = layer.alloc_buffer(4096)?;
/// match ch.submit(BdevIo::read(0, 8, back.whole(), 2)) {
///     Ok(()) => {}
///     // Full: poll for completions, then submit again (or `notify_when_room`).
///     Err((Error::Busy(_), _io)) => unreachable!("one I/O in flight"),
///     Err((e, _io)) => return Err(e.into()),
/// }
/// while done < 2 && Instant::now() < deadline {
///     ch.poll(&mut |_| done += 1);
/// }
/// let mut bytes = [0u8; 4096];
/// back.read_at(0, &mut bytes)?;
/// assert!(bytes.iter().all(|&b| b == 0xa5));
/// # drop(ch);
/// # layer.shutdown();
/// # Ok(())
/// # }
/// ```
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
    Mpath(MpathChannel<NvmeQueue>),
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
    /// Polls for completions, delivering each to `cb`; returns how many. Then runs
    /// the waiters of [`notify_when_room`](Self::notify_when_room) if there is room.
    #[inline]
    pub fn poll(&mut self, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        let (n, waiters) = match self {
            Channel::Mpath(c) => (c.poll(cb), c.room_waiters().any()),
            Channel::Nvme(c) => (c.poll(cb), c.room_waiters().any()),
        };
        if waiters {
            self.run_room_waiters();
        }
        n
    }
    /// Rings the doorbells for I/O submitted since the last poll (poll does it too).
    #[inline]
    pub fn flush(&mut self) {
        match self {
            Channel::Mpath(c) => c.flush(),
            Channel::Nvme(c) => c.flush(),
        }
    }
    /// I/Os submitted and not yet delivered.
    pub fn outstanding(&self) -> usize {
        match self {
            Channel::Mpath(c) => c.outstanding(),
            Channel::Nvme(c) => c.outstanding(),
        }
    }
    /// This channel's I/O statistics, exact (its own core's view; other threads
    /// read the bdev's, [`Bdev::iostat`]).
    pub fn iostat(&self) -> IoStat {
        match self {
            Channel::Mpath(c) => c.iostat(),
            Channel::Nvme(c) => c.iostat(),
        }
    }
    /// The queue pair's ID for a namespace bdev's channel (one queue pair); `None` for
    /// a multipath channel, which drives one queue pair per path.
    pub fn qid(&self) -> Option<u16> {
        match self {
            Channel::Mpath(_) => None,
            Channel::Nvme(c) => Some(c.qid()),
        }
    }
    /// The queue pair's counters (submissions, polls, doorbell writes...) for a
    /// namespace bdev's channel; `None` for a multipath channel (see its path stats).
    pub fn queue_stats(&self) -> Option<nvme_driver::QpairStats> {
        match self {
            Channel::Mpath(_) => None,
            Channel::Nvme(c) => Some(c.queue_stats()),
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

impl BlockLayer {
    /// A block layer with no controllers yet. Validates the options.
    pub fn new(opts: LayerOptions) -> Result<Self> {
        opts.mpath.validate()?;
        if opts.admin_poll_us == 0 {
            return Err(Error::InvalidOption(
                "admin_poll_us must be positive".into(),
            ));
        }
        if !(1..=crate::qsbr::MAX_READERS).contains(&opts.readers) {
            return Err(Error::InvalidOption(format!(
                "LayerOptions::readers is {}: it must be 1 to {} (one per reactor and per \
                 multipath channel)",
                opts.readers,
                crate::qsbr::MAX_READERS
            )));
        }
        Ok(BlockLayer {
            inner: Arc::new(Inner {
                qsbr: Qsbr::new(opts.readers),
                opts,
                bufs: IoBufPool::new()?,
                registered: Arc::default(),
                bdevs: Mutex::new(Vec::new()),
                ctrls: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                attaching: Mutex::new(()),
                hotplug_thread: Mutex::new(None),
                hotplug: HotplugCounters::default(),
                events: Arc::default(),
            }),
        })
    }

    /// The QSBR domain (give it to [`Reactors::start`](crate::Reactors::start)).
    pub fn qsbr(&self) -> &Arc<Qsbr> {
        &self.inner.qsbr
    }

    /// A poll group: the channels one thread drives, sharing one I/O queue pair per
    /// controller ([`PollGroup`]). Make one per reactor.
    pub fn poll_group(&self) -> PollGroup {
        PollGroup::new()
    }

    /// A buffer every attached controller can reach.
    pub fn alloc_buffer(&self, len: usize) -> Result<IoBuf> {
        self.inner.bufs.alloc(len)
    }

    /// Registers memory the caller already has (a server's own buffer pool, huge
    /// pages or not) for DMA with every controller of the layer, now and attached
    /// later, so I/O from it needs no copy (SPDK's `spdk_mem_register`). Take
    /// [`DmaSlice`](nvme_driver::DmaSlice)s for requests from the returned
    /// [`MemRegion`]; dropping it unregisters the memory. Set-up time: it maps the
    /// memory into each controller's IOMMU domain (VFIO pins the pages, and counts them
    /// against the process's locked-memory limit, `ulimit -l`).
    ///
    /// Limits: the start and the length are multiples of 4096 bytes
    /// ([`REGISTER_ALIGN`](crate::REGISTER_ALIGN)); all regions together at most
    /// 64 GiB ([`REGISTERED_MAX`](crate::REGISTERED_MAX)). Each call is one
    /// mapping per controller, so a region of ordinary (4 KiB) pages costs the IOMMU
    /// one entry per page where huge pages cost one per 2 MiB.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be memory of this process that stays allocated, and is not
    /// remapped, until the region is dropped; controllers may read and write it
    /// whenever an I/O on it is in flight, and nothing may be in flight on it when the
    /// region is dropped.
    pub unsafe fn register_memory(&self, ptr: *mut u8, len: usize) -> Result<MemRegion> {
        // SAFETY: forwarded from our caller.
        unsafe { MemRegion::register(&self.inner.bufs.fanout, &self.inner.registered, ptr, len) }
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
    /// a new path) and starts its controller thread. Returns the bdev names involved:
    /// per namespace, the namespace bdev (`"<name>n<nsid>"`, this controller only),
    /// then the multipath bdev (`"<subnqn>:n<nsid>"`, every controller that reaches the
    /// namespace). `connector` makes the controller's bus, at attach and at every
    /// reconnect: [`vfio_connector`] for a PCI address.
    ///
    /// ```no_run
    /// # fn main() -> nvme_bdev::Result<()> {
    /// use nvme_bdev::{vfio_connector, BlockLayer, LayerOptions};
    ///
    /// let layer = BlockLayer::new(LayerOptions::default())?;
    /// // Two controllers of one subsystem (bound to vfio-pci: `nvme-setup bind`).
    /// layer.attach("c0", vfio_connector("0000:01:00.0"))?;
    /// let names = layer.attach("c1", vfio_connector("0000:02:00.0"))?;
    /// // names == ["c1n1", "nqn...:n1"]: the multipath bdev has two paths now.
    /// let bdev = layer.open(&names[1])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn attach(&self, name: &str, connector: Connector) -> Result<Vec<String>> {
        attach::attach(&self.inner, name, connector)
    }

    /// Turns hot-plug on (SPDK's `bdev_nvme_set_hotplug`; off until called): every
    /// `period_ms` a hot-plug thread asks `source` which controllers are present, and
    /// attaches those that appeared since the previous scan with this layer's options,
    /// or brings the reconnect of a lost one forward (see `layer/hotplug.rs`).
    /// Controllers present now count as seen. Enabling again replaces the source and
    /// period.
    pub fn enable_hotplug(&self, source: Arc<dyn HotplugSource>, period_ms: u64) -> Result<()> {
        self.disable_hotplug();
        let t = HotplugThread::start(self.inner.clone(), source, period_ms)?;
        *lock(&self.inner.hotplug_thread) = Some(t);
        Ok(())
    }

    /// Turns hot-plug off (waits for an attach in progress). Attached controllers stay.
    pub fn disable_hotplug(&self) {
        let t = lock(&self.inner.hotplug_thread).take();
        if let Some(t) = t {
            t.stop();
        }
    }

    /// True while hot-plug is on.
    pub fn hotplug_enabled(&self) -> bool {
        lock(&self.inner.hotplug_thread).is_some()
    }

    /// What the hot-plug thread did so far (all zero if it never ran).
    pub fn hotplug_stats(&self) -> HotplugStats {
        self.inner.hotplug.snapshot()
    }

    /// Names of the attached controllers, in the order they were attached.
    pub fn controller_names(&self) -> Vec<String> {
        lock(&self.inner.ctrls)
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// Asks the controller thread of `name` to reset its controller: its paths leave
    /// the path sets, the controller resets, the paths come back. Returns at once.
    pub fn request_reset(&self, name: &str) -> Result<()> {
        self.record(name)?
            .reset_requested
            .store(true, Ordering::Release);
        Ok(())
    }

    /// The record of attached controller `name`, or the error naming the attached ones.
    fn record(&self, name: &str) -> Result<Arc<CtrlRecord>> {
        let g = lock(&self.inner.ctrls);
        g.iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| Error::NoSuchController {
                name: name.to_string(),
                known: g.iter().map(|c| c.name.clone()).collect(),
            })
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

    /// What the layer and the driver did to controller `name` so far, over every
    /// instance of it (a reconnect makes a new one).
    pub fn controller_stats(&self, name: &str) -> Option<ControllerStats> {
        lock(&self.inner.ctrls)
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.stats())
    }

    /// Controller `name`'s SMART / health log page (section 5.16.1.3), read now over
    /// its admin queue (off the reactors: it waits for the device).
    pub fn smart_log(&self, name: &str) -> Result<nvme_driver::spec::SmartLog> {
        Ok(self.live_controller(name)?.smart_log()?)
    }

    /// Controller `name`'s error information log page (section 5.16.1.2), read now
    /// over its admin queue (off the reactors).
    pub fn error_log(&self, name: &str) -> Result<Vec<nvme_driver::spec::ErrorLogEntry>> {
        Ok(self.live_controller(name)?.error_log()?)
    }

    /// Controller `name`, while it is attached and live.
    fn live_controller(&self, name: &str) -> Result<Controller> {
        self.record(name)?.live_controller().ok_or_else(|| {
            Error::Stopped(format!(
                "{name}: controller is not connected (reconnecting or gone)"
            ))
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
        let record = {
            let mut g = lock(&self.inner.ctrls);
            let pos =
                g.iter()
                    .position(|c| c.name == name)
                    .ok_or_else(|| Error::NoSuchController {
                        name: name.to_string(),
                        known: g.iter().map(|c| c.name.clone()).collect(),
                    })?;
            g.remove(pos)
        };
        controller::stop(&self.inner, &record, StopMode::Detach);
        Ok(())
    }

    /// Stops every controller thread, shuts every live controller down in order and
    /// removes every path; dropping the layer does the same. The orderly stop
    /// ([`Controller::shutdown`]): a Flush to each active namespace when the
    /// controller reports a volatile write cache, the I/O queues deleted, then the
    /// normal shutdown notification (CC.SHN = 01b), waited for until CSTS.SHST = 10b or
    /// RTD3E (at least [`ControllerOptions::shutdown_timeout_ms`], 5 s by default)
    /// passes; `LayerOptions::ctrl.no_shn_notification` leaves out the flush and the
    /// notification (the controller is only disabled). Channels should be drained and
    /// dropped first: the flush needs a free I/O queue, and I/O still in flight
    /// completes once, with an error. A process that is killed sends nothing: the
    /// device is left to VFIO's reset. A second call does nothing.
    pub fn shutdown(&self) {
        // First: it would attach what is being taken away.
        self.disable_hotplug();
        let all = std::mem::take(&mut *lock(&self.inner.ctrls));
        for record in all {
            controller::stop(&self.inner, &record, StopMode::Shutdown);
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
