// SPDX-License-Identifier: GPL-2.0-only
//! The engines' state: one block layer per process (controllers, bdevs, buffers), and
//! per fio thread its channels, its I/O buffer and its completed I/Os.

use crate::log;
use nvme_bdev::layer::Connector;
use nvme_bdev::mpath::PathIoStats;
use nvme_bdev::{Bdev, BdevIo, BlockLayer, Channel, Error, IoBuf, LayerOptions};
use nvme_driver::bus::Bus;
use nvme_driver::dma::Iova;
use nvme_driver::{DmaSlice, QpairOptions, Status};
use nvme_spdk_config::{self as config, Hotplug, MultipathMode};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which engine a call comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `spdk`: files are NVMe namespaces (transport IDs).
    Nvme,
    /// `spdk_bdev`: files are bdevs of the JSON config.
    Bdev,
}

impl Kind {
    /// The engine's name, as fio knows it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nvme => "spdk",
            Kind::Bdev => "spdk_bdev",
        }
    }
}

/// Queue entries per queue pair: deep enough for fio's usual depths (QD 128 and more
/// in flight), capped by the controller's MQES; deeper waits on the pending ring.
const QUEUE_ENTRIES: u16 = 1024;

/// The hot-plug scan when the config does not say (`bdev_nvme_set_hotplug`): the
/// layer looks for NVMe controllers that appeared (or came back) once a second.
const HOTPLUG_DEFAULT: Hotplug = Hotplug {
    enable: true,
    period_ms: 1_000,
};

/// A file fio may open: a bdev of the layer, under the name fio knows it by.
struct Target {
    bdev: Bdev,
}

/// The process-wide state, made by the first job's setup.
struct Global {
    layer: BlockLayer,
    /// Controllers attached, by layer name (the PCI address), with the bdev names
    /// `attach` returned for them.
    attached: Vec<(String, Vec<String>)>,
    targets: Vec<Target>,
    /// `spdk_bdev`: the config file read, and SPDK bdev name -> layer bdev name.
    json_conf: Option<String>,
    bdev_names: Vec<(String, String)>,
    /// The hot-plug scan to run while VFIO controllers are attached.
    hotplug: Hotplug,
}

impl Global {
    fn new(opts: LayerOptions) -> Result<Global, String> {
        Ok(Global {
            layer: BlockLayer::new(opts).map_err(|e| e.to_string())?,
            attached: Vec::new(),
            targets: Vec::new(),
            json_conf: None,
            bdev_names: Vec::new(),
            hotplug: HOTPLUG_DEFAULT,
        })
    }

    /// Attaches a controller under `name` (its PCI address) and records the bdev names
    /// `attach` returned.
    fn attach(&mut self, name: &str, connector: Connector) -> Result<Vec<String>, String> {
        let names = self
            .layer
            .attach(name, connector)
            .map_err(|e| e.to_string())?;
        self.attached.push((name.to_string(), names.clone()));
        Ok(names)
    }
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

fn global() -> MutexGuard<'static, Option<Global>> {
    GLOBAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn layer_options(cfg: Option<&config::BdevConfig>) -> LayerOptions {
    let mut o = LayerOptions {
        qpair: QpairOptions {
            entries: QUEUE_ENTRIES,
            ..QpairOptions::default()
        },
        ..LayerOptions::default()
    };
    if let Some(c) = cfg {
        c.apply(&mut o);
    }
    o
}

/// `NVME_FIO_SOFTCTRL=1`: every controller a job names is an in-process software
/// controller (one namespace of 64 MiB, no data kept beyond it), for measuring fio and
/// the engine on a machine without NVMe devices (`docs/BENCHMARKS.md`: where fio's
/// time goes, under callgrind on the host). Never set in production use.
const SOFTCTRL_ENV: &str = "NVME_FIO_SOFTCTRL";

fn soft_controller(traddr: &str) -> Result<Arc<dyn Bus>, String> {
    use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
    let ns = Namespace::new(1, 1 << 17, 512).map_err(|e| e.to_string())?;
    log::err(&format!(
        "nvme-fio: {SOFTCTRL_ENV} is set: {traddr} is a software controller in this process, not a device"
    ));
    Ok(SoftController::start(SoftConfig {
        name: traddr.to_string(),
        namespaces: vec![Arc::new(ns)],
        ..SoftConfig::default()
    }))
}

fn attach_pcie(g: &mut Global, traddr: &str) -> Result<Vec<String>, String> {
    if let Some((_, names)) = g.attached.iter().find(|(n, _)| n == traddr) {
        return Ok(names.clone());
    }
    let connector: Connector = if std::env::var_os(SOFTCTRL_ENV).is_some_and(|v| v == "1") {
        let bus = soft_controller(traddr)?;
        Arc::new(move || Ok(bus.clone()))
    } else {
        // Controllers that come back (or appear) while fio runs are noticed by a sysfs
        // scan (once a second unless the config's bdev_nvme_set_hotplug says): a
        // returning one reconnects at once, one back after the loss timeout is attached
        // again under its address. Off, a leaving controller is still released at once
        // (VFIO's request interrupt) and a lost one reconnected every reconnect delay.
        if g.hotplug.enable && !g.layer.hotplug_enabled() {
            g.layer
                .enable_hotplug(Arc::new(nvme_bdev::layer::VfioHotplug), g.hotplug.period_ms)
                .map_err(|e| format!("enabling hot-plug: {e}"))?;
        }
        nvme_bdev::layer::vfio_connector(traddr)
    };
    g.attach(traddr, connector)
        .map_err(|e| format!("cannot attach {traddr}: {e}"))
}

/// Attaches an already-open controller (a software one) under `name` as if it were the
/// PCIe controller of that address: for benchmarks and tests that drive the engine
/// without VFIO (`examples/engine_cost.rs`). Makes the block layer when needed.
pub fn attach_bus(name: &str, bus: Arc<dyn Bus>) -> Result<(), String> {
    let mut g = global();
    if g.is_none() {
        *g = Some(Global::new(layer_options(None))?);
    }
    let g = g.as_mut().expect("made above");
    g.attach(name, Arc::new(move || Ok(bus.clone())))?;
    Ok(())
}

/// First call of a job's setup: makes the block layer (once per process) and, for the
/// bdev engine, attaches what the config names.
pub fn global_setup(kind: Kind, json_conf: Option<&str>, mem_mb: u32) -> Result<(), String> {
    let mut g = global();
    let cfg = match (kind, json_conf) {
        (Kind::Bdev, Some(path)) => {
            if let Some(old) = g.as_ref().and_then(|g| g.json_conf.clone()) {
                if old != path {
                    return Err(format!(
                        "spdk_bdev: spdk_json_conf={path}, but this process already runs {old}; every job of one fio run must name the same config"
                    ));
                }
                return Ok(());
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("spdk_bdev: cannot read spdk_json_conf={path}: {e}"))?;
            Some(config::parse(&text, path).map_err(|e| format!("spdk_bdev: {e}"))?)
        }
        _ => None,
    };
    if g.is_none() {
        let made = Global::new(layer_options(cfg.as_ref()))
            .map_err(|e| format!("{}: {e}", kind.name()))?;
        if mem_mb > 0 {
            reserve(&made.layer, mem_mb).map_err(|e| format!("{}: {e}", kind.name()))?;
        }
        *g = Some(made);
    }
    let g = g.as_mut().expect("made above");
    if let Some(cfg) = cfg {
        for n in &cfg.notes {
            log::err(&format!("spdk_bdev: {n}"));
        }
        if let Some(h) = cfg.hotplug {
            g.hotplug = h;
        }
        attach_config(g, &cfg)?;
        g.json_conf = json_conf.map(str::to_string);
    }
    Ok(())
}

/// `mem_size_mb` / `spdk_mem`: maps that much DMA memory up front, in 2 MiB chunks
/// that buffers of up to 2 MiB reuse (the pool keeps freed chunks mapped).
fn reserve(layer: &BlockLayer, mem_mb: u32) -> nvme_bdev::Result<()> {
    let chunk = nvme_driver::dma::CHUNK_SIZE;
    let n = (mem_mb as usize * (1 << 20)).div_ceil(chunk);
    let bufs = (0..n)
        .map(|_| layer.alloc_buffer(chunk))
        .collect::<nvme_bdev::Result<Vec<_>>>()?;
    drop(bufs);
    Ok(())
}

fn attach_config(g: &mut Global, cfg: &config::BdevConfig) -> Result<(), String> {
    for a in &cfg.attach {
        let names = attach_pcie(g, &a.traddr).map_err(|e| {
            format!(
                "spdk_bdev: bdev_nvme_attach_controller {} ({}): {e}",
                a.name, a.traddr
            )
        })?;
        // `attach` returns, per namespace, its namespace bdev "<traddr>n<nsid>" and
        // its multipath bdev.
        for pair in names.chunks(2) {
            let [ns_bdev, mp_bdev] = pair else { continue };
            let nsid = ns_bdev.rsplit('n').next().unwrap_or("?");
            let spdk = format!("{}n{nsid}", a.name);
            let layer_name = if a.mode == MultipathMode::Disable {
                ns_bdev.clone()
            } else {
                mp_bdev.clone()
            };
            match g.bdev_names.iter().find(|(s, _)| *s == spdk) {
                Some((_, l)) if *l != layer_name => {
                    return Err(format!(
                        "spdk_bdev: {} at {} does not reach the same namespace as the other controllers named {} (namespace {nsid}); give it a name of its own",
                        a.name, a.traddr, a.name
                    ))
                }
                Some(_) => {}
                None => g.bdev_names.push((spdk, layer_name)),
            }
        }
    }
    // A multipath bdev must hold the paths of its name only: controllers under other
    // names that reach the same namespace would carry its I/O too.
    for (spdk, layer_name) in &g.bdev_names {
        let Ok(Bdev::Mpath(m)) = g.layer.open(layer_name) else {
            continue;
        };
        let ctrl_name = spdk.rsplit_once('n').map_or(spdk.as_str(), |(c, _)| c);
        let mine: Vec<&str> = cfg
            .attach
            .iter()
            .filter(|a| a.name == ctrl_name)
            .map(|a| a.traddr.as_str())
            .collect();
        if let Some(other) = m.paths().iter().find(|p| !mine.contains(&p.name.as_str())) {
            return Err(format!(
                "spdk_bdev: {} is reached through {} (attached under another name) as well as {}: attach both under one name with multipath \"multipath\", or keep them apart with multipath \"disable\"",
                spdk,
                other.name,
                mine.join(", ")
            ));
        }
    }
    Ok(())
}

/// The end of the process (the glue's destructor): the block layer shuts its
/// controllers down in order (a flush of a volatile write cache, the normal shutdown
/// notification). Every job thread has ended by then; a later setup would make a new
/// layer.
pub fn global_shutdown() {
    let g = global().take();
    if let Some(g) = g {
        g.layer.shutdown();
    }
}

/// The bdev names of the config, in order (`filename=*`).
pub fn bdev_names() -> Vec<String> {
    global()
        .as_ref()
        .map(|g| g.bdev_names.iter().map(|(s, _)| s.clone()).collect())
        .unwrap_or_default()
}

/// A file of a job: its target index and size in bytes.
pub fn resolve(kind: Kind, filename: &str) -> Result<(u32, u64), String> {
    let mut guard = global();
    let g = guard
        .as_mut()
        .ok_or_else(|| format!("{}: setup did not run", kind.name()))?;
    let bdev = match kind {
        Kind::Nvme => {
            let t = crate::filename::parse(filename)?;
            let names = attach_pcie(g, &t.traddr)
                .map_err(|e| format!("spdk: filename '{filename}': {e}"))?;
            let nsids: Vec<&str> = names
                .chunks(2)
                .filter_map(|p| p[0].rsplit('n').next())
                .collect();
            let nsid = match t.nsid {
                Some(n) => n.to_string(),
                None => nsids.first().map(|s| s.to_string()).ok_or_else(|| {
                    format!(
                        "spdk: filename '{filename}': {} has no active namespace",
                        t.traddr
                    )
                })?,
            };
            if !nsids.contains(&nsid.as_str()) {
                return Err(format!(
                    "spdk: filename '{filename}': {} has no active namespace {nsid} (active: {})",
                    t.traddr,
                    nsids.join(", ")
                ));
            }
            g.layer
                .open(&format!("{}n{nsid}", t.traddr))
                .map_err(|e| format!("spdk: filename '{filename}': {e}"))?
        }
        Kind::Bdev => {
            let Some((_, layer_name)) = g.bdev_names.iter().find(|(s, _)| s == filename) else {
                let known: Vec<&str> = g.bdev_names.iter().map(|(s, _)| s.as_str()).collect();
                return Err(format!(
                    "spdk_bdev: Unable to find bdev with name {filename}; the config has: {} (or filename=* for all)",
                    known.join(", ")
                ));
            };
            g.layer
                .open(layer_name)
                .map_err(|e| format!("spdk_bdev: {filename}: {e}"))?
        }
    };
    let size = bdev.num_blocks() * bdev.block_size() as u64;
    g.targets.push(Target { bdev });
    Ok(((g.targets.len() - 1) as u32, size))
}

/// One open file of a fio thread.
struct File {
    name: String,
    ch: Channel,
    bdev: Bdev,
    block_shift: u32,
    /// I/Os this thread queued on it.
    queued: u64,
    /// Multipath: I/Os per path seen so far (path id, count), kept across a path's
    /// removal; refreshed every `PATH_SAMPLE` `getevents` calls and at the end.
    paths: Vec<(u64, u64)>,
    /// Multipath: path id -> controller name, as seen when opened and at the end.
    path_names: Vec<(u64, String)>,
}

/// `getevents` calls between samples of the per-path counters.
const PATH_SAMPLE: u32 = 1024;

/// A fio thread's state (fio's `td->io_ops_data`). Used only by its own thread.
pub struct Thread {
    kind: Kind,
    job: String,
    print_qid: bool,
    stats: bool,
    files: Vec<File>,
    /// fio's I/O memory (kept alive here) and where it is: host address, length and
    /// device address (the same in every controller).
    buf: Option<IoBuf>,
    mem_addr: usize,
    mem_len: usize,
    mem_iova: u64,
    /// Completed I/Os: fio's `io_u` pointer and the NVMe status (0 for success).
    ready: Vec<(u64, u16)>,
    /// How many of `ready` the last `getevents` handed to fio.
    handed: usize,
    /// Error kinds (status without the DNR and More bits) already printed.
    seen_errors: Vec<u16>,
    errors: u64,
    refusal_printed: bool,
    polls: u32,
    spins: u32,
    scratch: Vec<PathIoStats>,
    /// `getevents` hands back every completed I/O, not at most fio's `max`.
    reap_all: bool,
    /// `getevents` calls, the events they handed to fio, and the passes over the
    /// files' channels they made (`nvme_stats` prints them).
    calls: u64,
    events: u64,
    passes: u64,
}

impl std::fmt::Debug for Thread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thread")
            .field("job", &self.job)
            .field("files", &self.files.len())
            .finish()
    }
}

/// What `queue` did with an I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// In flight; it comes back from `getevents`.
    InFlight,
    /// Nothing free: fio should reap completions and try again (`FIO_Q_BUSY`).
    Busy,
    /// Refused: completed at once with this errno.
    Failed(i32),
}

/// The operations fio asks for, numbered as the glue passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Op {
    /// Read.
    Read = 0,
    /// Write.
    Write = 1,
    /// Trim: Dataset Management, deallocate.
    Trim = 2,
    /// fsync/fdatasync: Flush.
    Flush = 3,
}

impl Thread {
    /// State for a new fio thread of `job`, with up to `iodepth` I/Os in flight.
    pub fn new(kind: Kind, job: &str, iodepth: u32, print_qid: bool, stats: bool) -> Thread {
        let depth = iodepth.max(1) as usize;
        Thread {
            kind,
            job: job.to_string(),
            print_qid,
            stats,
            files: Vec::new(),
            buf: None,
            mem_addr: 0,
            mem_len: 0,
            mem_iova: 0,
            ready: Vec::with_capacity(depth + 256),
            handed: 0,
            seen_errors: Vec::with_capacity(8),
            errors: 0,
            refusal_printed: false,
            polls: 0,
            spins: 0,
            scratch: Vec::with_capacity(16),
            reap_all: false,
            calls: 0,
            events: 0,
            passes: 0,
        }
    }

    /// From now on `getevents` hands back every I/O that completed, whatever fio's
    /// `max`: for jobs that left `iodepth_batch_complete_max` at fio's default of 1.
    pub fn reap_all(&mut self) {
        self.reap_all = true;
    }

    /// Opens a channel to `target` for this thread; returns its slot.
    pub fn open(&mut self, target: u32, filename: &str) -> Result<u32, String> {
        let bdev = {
            let g = global();
            let g = g.as_ref().ok_or("setup did not run")?;
            g.targets
                .get(target as usize)
                .ok_or_else(|| format!("no target {target}"))?
                .bdev
                .clone()
        };
        let ch = bdev
            .channel()
            .map_err(|e| format!("{}: cannot open {filename}: {e}", self.kind.name()))?;
        if self.print_qid {
            if let Some(qid) = ch.qid() {
                log::info(&format!("job {}: {filename} qid {qid}", self.job));
            }
        }
        let path_names = bdev
            .multipath()
            .map(|m| m.paths().into_iter().map(|p| (p.id, p.name)).collect())
            .unwrap_or_default();
        self.files.push(File {
            name: filename.to_string(),
            ch,
            block_shift: bdev.block_size().trailing_zeros(),
            bdev,
            queued: 0,
            paths: Vec::with_capacity(16),
            path_names,
        });
        Ok((self.files.len() - 1) as u32)
    }

    /// fio's I/O memory: one buffer from the block layer, mapped into every
    /// controller, so any file's I/O can use any part of it.
    pub fn iomem_alloc(&mut self, len: usize) -> Result<*mut u8, String> {
        let g = global();
        let g = g.as_ref().ok_or("setup did not run")?;
        let buf = g.layer.alloc_buffer(len.max(4096)).map_err(|e| {
            format!(
                "{}: cannot allocate {len} bytes of I/O memory: {e}",
                self.kind.name()
            )
        })?;
        let p = buf.as_ptr();
        (self.mem_addr, self.mem_len, self.mem_iova) = (p as usize, buf.len(), buf.whole().iova.0);
        self.buf = Some(buf);
        Ok(p)
    }

    /// Queues one I/O; `ctx` (fio's `io_u`) comes back with its completion.
    #[inline]
    pub fn queue(
        &mut self,
        slot: u32,
        op: Op,
        offset: u64,
        len: u64,
        data: *const u8,
        ctx: u64,
    ) -> Queued {
        let Some(file) = self.files.get_mut(slot as usize) else {
            return Queued::Failed(libc::EBADF);
        };
        let shift = file.block_shift;
        let mask = (1u64 << shift) - 1;
        let io = match op {
            Op::Flush => BdevIo::flush(ctx),
            // Whole blocks; the queue pair checks the range and the length (nlb >= 1).
            _ if (offset | len) & mask != 0 => {
                return self.refuse(slot, format!(
                    "offset {offset} and length {len} must be whole blocks of {} bytes (set bs and offset to multiples of it)",
                    1u64 << shift
                ));
            }
            Op::Trim => BdevIo::unmap(offset >> shift, (len >> shift) as u32, ctx),
            Op::Read | Op::Write => {
                // Where in the I/O memory (one buffer, mapped into every controller).
                let off = (data as usize).wrapping_sub(self.mem_addr);
                if off > self.mem_len || len as usize > self.mem_len - off {
                    return self.refuse(slot, "the I/O buffer is not the engine's I/O memory (do not set mem/iomem with this engine)".into());
                }
                let slice = DmaSlice {
                    iova: Iova(self.mem_iova + off as u64),
                    len: len as u32,
                };
                let (slba, nlb) = (offset >> shift, (len >> shift) as u32);
                if op == Op::Read {
                    BdevIo::read(slba, nlb, slice, ctx)
                } else {
                    BdevIo::write(slba, nlb, slice, ctx)
                }
            }
        };
        let file = &mut self.files[slot as usize];
        match file.ch.submit(io) {
            Ok(()) => {
                file.queued += 1;
                Queued::InFlight
            }
            Err((Error::Busy(_), _)) | Err((Error::Driver(nvme_driver::Error::Busy(_)), _)) => {
                Queued::Busy
            }
            Err((e, _)) => self.refuse(slot, e.to_string()),
        }
    }

    #[cold]
    fn refuse(&mut self, slot: u32, why: String) -> Queued {
        if !self.refusal_printed {
            self.refusal_printed = true;
            let name = self
                .files
                .get(slot as usize)
                .map_or("?", |f| f.name.as_str());
            log::err(&format!(
                "{}: job {}: {name}: I/O refused: {why} (further refusals are not printed)",
                self.kind.name(),
                self.job
            ));
        }
        Queued::Failed(libc::EINVAL)
    }

    /// Polls until at least `min` I/Os completed (or `timeout` passed); returns how
    /// many (at most `max`, unless [`reap_all`](Self::reap_all)) fio may take with
    /// [`event`](Self::event).
    pub fn getevents(&mut self, min: usize, max: usize, timeout: Option<Duration>) -> usize {
        let max = if self.reap_all { usize::MAX } else { max };
        // What fio took last time goes; what it could not take (more than its `max`)
        // stays, in order.
        if self.handed == self.ready.len() {
            self.ready.clear();
        } else {
            self.ready.drain(..self.handed);
        }
        let mut start = None;
        loop {
            let ready = &mut self.ready;
            self.passes += 1;
            for f in &mut self.files {
                f.ch.poll(&mut |c| ready.push((c.ctx, c.status.0)));
            }
            if self.ready.len() >= min {
                break;
            }
            // Never wait for more than can still come: fio asks for at most what it
            // has in flight, but a wait must end whatever it asks.
            if !self.more_can_come(min) {
                break;
            }
            // The clock only once a pass came up short, and then every 64 passes.
            if let Some(t) = timeout {
                let s = *start.get_or_insert_with(Instant::now);
                self.spins = self.spins.wrapping_add(1);
                if self.spins.is_multiple_of(64) && s.elapsed() >= t {
                    break;
                }
            }
        }
        if self.stats {
            self.polls = self.polls.wrapping_add(1);
            if self.polls.is_multiple_of(PATH_SAMPLE) {
                self.sample_paths();
            }
        }
        self.handed = self.ready.len().min(max);
        self.calls += 1;
        self.events += self.handed as u64;
        self.handed
    }

    /// True if the I/Os in flight could still bring the completions up to `min`.
    #[cold]
    #[inline(never)]
    fn more_can_come(&self, min: usize) -> bool {
        let coming: usize = self.files.iter().map(|f| f.ch.outstanding()).sum();
        self.ready.len() + coming >= min
    }

    /// The `i`th I/O of the last `getevents`: fio's `io_u` and its NVMe status.
    #[inline]
    pub fn event(&self, i: usize) -> (u64, u16) {
        self.ready[i]
    }

    /// A completion that failed: printed once per kind of status (SCT/SC), with where.
    pub fn report_error(&mut self, slot: u32, status: u16, offset: u64) {
        self.errors += 1;
        let st = Status(status);
        let kind = status & 0x07ff; // SCT and SC
        if self.seen_errors.contains(&kind) {
            return;
        }
        if self.seen_errors.len() < self.seen_errors.capacity() {
            self.seen_errors.push(kind);
        }
        let (name, lba) = self
            .files
            .get(slot as usize)
            .map_or(("?", 0), |f| (f.name.as_str(), offset >> f.block_shift));
        log::err(&format!(
            "{}: job {}: {name}: I/O failed: {st} (SCT {:#x}, SC {:#x}) at LBA {lba}; fio sees EIO. Further errors of this kind are counted, not printed",
            self.kind.name(),
            self.job,
            st.sct(),
            st.sc()
        ));
    }

    fn sample_paths(&mut self) {
        for f in &mut self.files {
            if let Channel::Mpath(m) = &f.ch {
                m.path_stats_into(&mut self.scratch);
                for s in &self.scratch {
                    match f.paths.iter_mut().find(|(id, _)| *id == s.id) {
                        Some(e) => e.1 = e.1.max(s.submitted),
                        None => f.paths.push((s.id, s.submitted)),
                    }
                }
            }
        }
    }

    /// The end of the thread: waits (at most 10 s) for I/O still in flight, prints the
    /// per-file (and per-path) counts when asked, and closes the channels.
    pub fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for f in &mut self.files {
            f.ch.shutdown();
            while f.ch.outstanding() > 0 && Instant::now() < deadline {
                f.ch.poll(&mut |_| {});
            }
            if f.ch.outstanding() > 0 {
                log::err(&format!(
                    "{}: job {}: {}: {} I/Os still in flight after 10 s at the end of the job",
                    self.kind.name(),
                    self.job,
                    f.name,
                    f.ch.outstanding()
                ));
            }
        }
        if self.stats {
            self.sample_paths();
            for f in &self.files {
                log::err(&self.summary(f));
            }
        }
        if self.stats {
            log::err(&self.reaping());
        }
        if self.errors > 0 {
            log::err(&format!(
                "{}: job {}: {} I/Os failed",
                self.kind.name(),
                self.job,
                self.errors
            ));
        }
    }

    /// How fio met the engine: `getevents` calls, the events they handed back and the
    /// passes over the channels they made, per call (docs/BENCHMARKS.md: how many
    /// events one call returns decides fio's speed at depth).
    fn reaping(&self) -> String {
        let per_call = |n: u64| n as f64 / self.calls.max(1) as f64;
        let mut line = format!(
            "{}: job {}: getevents {} calls, {:.2} events and {:.1} polling passes per call ({})",
            self.kind.name(),
            self.job,
            self.calls,
            per_call(self.events),
            per_call(self.passes),
            if self.reap_all {
                "every completion per call"
            } else {
                "at most fio's iodepth_batch_complete_max per call"
            }
        );
        // Namespace files: the queue pairs' doorbell writes per I/O.
        let (mut ios, mut sq, mut cq) = (0, 0, 0);
        for s in self.files.iter().filter_map(|f| f.ch.queue_stats()) {
            (ios, sq, cq) = (
                ios + s.completed,
                sq + s.sq_doorbell_writes,
                cq + s.cq_doorbell_writes,
            );
        }
        if ios > 0 {
            line += &format!(
                "; doorbell writes per I/O: SQ {:.3}, CQ {:.3}",
                sq as f64 / ios as f64,
                cq as f64 / ios as f64
            );
        }
        line
    }

    fn summary(&self, f: &File) -> String {
        let mut line = format!(
            "{}: job {}: {}: {} I/Os",
            self.kind.name(),
            self.job,
            f.name,
            f.queued
        );
        if let Some(qid) = f.ch.qid() {
            line += &format!(" (qid {qid})");
        }
        if let (Channel::Mpath(m), Some(mp)) = (&f.ch, f.bdev.multipath()) {
            let now: Vec<(u64, String)> = mp.paths().into_iter().map(|p| (p.id, p.name)).collect();
            let name_of = |id: u64| {
                now.iter()
                    .chain(f.path_names.iter())
                    .find(|(i, _)| *i == id)
                    .map_or_else(|| format!("path {id}"), |(_, n)| n.clone())
            };
            let per_path: Vec<String> = f
                .paths
                .iter()
                .map(|(id, n)| format!("{} {n}", name_of(*id)))
                .collect();
            let s = m.stats();
            line += &format!(
                "; per path: {}; failovers {}, retries {}",
                per_path.join(", "),
                s.failovers,
                s.retries
            );
        }
        line
    }
}
