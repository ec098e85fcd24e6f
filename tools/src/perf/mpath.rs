// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme-perf --multipath`: the same workload through the block layer's multipath
//! bdevs instead of the controllers' queue pairs.
//!
//! Every controller is attached to one [`BlockLayer`] (named by its PCI address);
//! controllers that reach the same namespace (same subsystem NQN and namespace
//! identifier) become the paths of one multipath bdev. Each core opens a channel to
//! every selected bdev and runs the workload through it with the direct mode's
//! worker ([`super::engine::run_worker`] over [`BdevChannel`]): buffers from the
//! layer (one per outstanding I/O, made before the clock starts), latencies from the
//! TSC, no allocation, lock or system call per I/O. The controller threads of the layer do
//! the admin work (resets, ANA, reconnects). Besides the usual table each row
//! reports per-path I/O counts, failovers and retries, the longest submit call and
//! the longest pause between completions on its core. Hot-plug is on: a controller
//! that appears during the run (a new address bound to vfio-pci, or one coming back)
//! is attached or reconnected by the layer, and rows name every path by its
//! controller's PCI address, a path that came back included.

use super::engine::{Backend, NsJob, NsResult, Submission, WorkerJob};
use super::opts::PerfOptions;
use super::IO_TIMEOUT_MS;
use crate::attach::Wanted;
use crate::{usage, UsageError};
use nvme_bdev::mpath::ChannelStats;
use nvme_bdev::{Bdev, BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions, Policy};
use nvme_driver::{clock, ControllerOptions, IoCompletion, QpairOptions};
use std::sync::Arc;

/// I/Os one path carried from one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCount {
    /// Controller name (PCI address).
    pub name: String,
    /// I/Os dispatched on it during the measured phase (retries and failovers count
    /// on the path that took them).
    pub ios: u64,
    /// Path errors it returned (measured phase).
    pub path_errors: u64,
}

/// A multipath row's counters (measured phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpathRowStats {
    /// Policy.
    pub policy: Policy,
    /// Per path, in the order paths were added; a path removed during the run is
    /// no longer listed.
    pub paths: Vec<PathCount>,
    /// The channel's counters over the measured phase (failovers, retries, the retry
    /// ring, fast fails, path-set changes; the high-water mark is the whole run's).
    pub channel: ChannelStats,
    /// Longest submit call, ns.
    pub longest_submit_ns: u64,
    /// Longest time between two completions on this core while I/O was outstanding.
    pub longest_gap_ns: u64,
}

/// How often the multipath mode looks for controllers that appeared (a sysfs scan).
pub const HOTPLUG_PERIOD_MS: u64 = 1_000;

/// The block layer options for a run: policy, queue sizes for the depth.
pub fn layer_options(opts: &PerfOptions, policy: Policy) -> LayerOptions {
    let depth = opts.queue_depth;
    let entries = opts
        .io_queue_size
        .unwrap_or_else(|| super::default_queue_size(depth))
        .min(4096);
    LayerOptions {
        mpath: MpathOptions {
            policy,
            channel_depth: depth as usize,
            ..MpathOptions::default()
        },
        qpair: QpairOptions {
            entries: entries as u16,
            // What does not fit the queue waits on the driver's pending ring.
            pending_max: depth as usize,
            timeout_ms: IO_TIMEOUT_MS,
        },
        // -N: the layer's shutdown disables the controllers without the flush and the
        // shutdown notification, as without --multipath.
        ctrl: ControllerOptions {
            no_shn_notification: opts.no_shutdown_notification,
            shadow_doorbells: !opts.no_shadow_doorbells,
            ..ControllerOptions::default()
        },
        ..LayerOptions::default()
    }
}

/// The multipath bdevs of the attached controllers that cover the wanted
/// namespaces, in order. `attached` lists, per controller, the names
/// [`BlockLayer::attach`] returned (namespace bdev, multipath bdev, ...).
pub fn select_bdevs(
    wanted: &Wanted,
    attached: &[Vec<String>],
) -> Result<Vec<(String, u32)>, UsageError> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for ((bdf, nsids), names) in wanted.iter().zip(attached) {
        let mut found = Vec::new();
        for pair in names.chunks(2) {
            let [ns_name, mp_name] = pair else { continue };
            let Some(nsid) = ns_name
                .strip_prefix(bdf.as_str())
                .and_then(|r| r.strip_prefix('n'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            found.push(nsid);
            if nsids.as_ref().is_none_or(|l| l.contains(&nsid))
                && !out.iter().any(|(n, _)| n == mp_name)
            {
                out.push((mp_name.clone(), nsid));
            }
        }
        if let Some(list) = nsids {
            for ns in list {
                if !found.contains(ns) {
                    return Err(usage!(
                        "-r ... ns:{ns}: {bdf} has no active namespace {ns} (active: {found:?})"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The multipath mode's backend: one core's channel to one bdev, with the counters
/// its rows report.
pub struct BdevChannel {
    ch: Channel,
    /// Path id to controller name, for the report: the paths at the start, and those
    /// the bdev has when the row is made (a controller that came back, reconnected or
    /// hot-plugged, is a new path instance with a new id and the same name).
    path_names: Vec<(u64, String)>,
    /// The multipath bdev, to learn the names of paths added during the run.
    mp: Option<Arc<nvme_bdev::Multipath<nvme_bdev::NvmeQueue>>>,
    policy: Policy,
    snap: Vec<nvme_bdev::mpath::PathIoStats>,
    snap_ch: ChannelStats,
    longest_submit: u64,
    /// When the last poll that brought completions returned.
    last_completion: u64,
    longest_gap: u64,
}

impl std::fmt::Debug for BdevChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevChannel")
            .field("policy", &self.policy)
            .finish()
    }
}

/// One bdev's work on one core.
pub type MpathJob = NsJob<BdevChannel>;
/// The work of one core.
pub type MpathWorker = WorkerJob<BdevChannel>;

impl BdevChannel {
    fn mpath_channel(&self) -> Option<&nvme_bdev::MpathChannel<nvme_bdev::NvmeQueue>> {
        match &self.ch {
            Channel::Mpath(c) => Some(c),
            Channel::Nvme(_) => None,
        }
    }
}

impl Backend for BdevChannel {
    type Buf = IoBuf;
    type Error = nvme_bdev::Error;
    const IN_FLIGHT: &'static str = "outstanding";

    #[inline]
    fn queues(&self) -> usize {
        1
    }

    #[inline]
    fn submit(&mut self, s: Submission, buf: &IoBuf) -> Result<(), Self::Error> {
        let io = if s.write {
            BdevIo::write(s.lba, s.nlb, buf.whole(), s.slot as u64)
        } else {
            BdevIo::read(s.lba, s.nlb, buf.whole(), s.slot as u64)
        };
        let r = self.ch.submit(io);
        let took = clock::ticks().wrapping_sub(s.start);
        if took > self.longest_submit {
            self.longest_submit = took;
        }
        r.map_err(|(e, _)| e)
    }

    #[inline]
    fn poll(&mut self, _q: usize, out: &mut Vec<IoCompletion>) {
        self.ch.poll(&mut |c| {
            out.push(IoCompletion {
                ctx: c.ctx,
                status: c.status,
            })
        });
        if !out.is_empty() {
            let now = clock::ticks();
            let gap = now.wrapping_sub(self.last_completion);
            if gap > self.longest_gap {
                self.longest_gap = gap;
            }
            self.last_completion = now;
        }
    }

    /// One time for the whole batch: when the poll returned.
    #[inline]
    fn completion_time(&self) -> u64 {
        self.last_completion
    }

    #[inline]
    fn flush(&mut self, _q: usize) {
        self.ch.flush();
    }

    fn start_measurement(&mut self) {
        self.longest_submit = 0;
        self.longest_gap = 0;
        self.last_completion = clock::ticks();
        if let Some((paths, st)) = self.mpath_channel().map(|c| (c.path_stats(), c.stats())) {
            self.snap = paths;
            self.snap_ch = st;
        }
    }

    fn finish(&mut self, r: &mut NsResult) {
        let Some(c) = self.mpath_channel() else {
            return;
        };
        let now = c.path_stats();
        let st = c.stats();
        if let Some(m) = &self.mp {
            for p in m.paths() {
                if !self.path_names.iter().any(|(id, _)| *id == p.id) {
                    self.path_names.push((p.id, p.name));
                }
            }
        }
        // One entry per controller: the instances of a path that came back (the one
        // still draining and the new one) count under its name.
        let mut paths: Vec<PathCount> = Vec::new();
        for ps in &now {
            let before = self.snap.iter().find(|b| b.id == ps.id);
            let name = self
                .path_names
                .iter()
                .find(|(id, _)| *id == ps.id)
                .map_or_else(|| format!("path {}", ps.id), |(_, n)| n.clone());
            let ios = ps.submitted - before.map_or(0, |b| b.submitted);
            let path_errors = ps.path_errors - before.map_or(0, |b| b.path_errors);
            match paths.iter_mut().find(|p| p.name == name) {
                Some(p) => {
                    p.ios += ios;
                    p.path_errors += path_errors;
                }
                None => paths.push(PathCount {
                    name,
                    ios,
                    path_errors,
                }),
            }
        }
        let b = self.snap_ch;
        r.mpath = Some(MpathRowStats {
            policy: self.policy,
            paths,
            channel: st.since(&b),
            longest_submit_ns: clock::ticks_to_ns(self.longest_submit),
            longest_gap_ns: clock::ticks_to_ns(self.longest_gap),
        });
    }
}

/// Checks the options against a bdev.
pub fn check_bdev(opts: &PerfOptions, bdev: &Bdev) -> Result<(), UsageError> {
    super::check_io_size(opts, bdev.block_size(), bdev.num_blocks(), bdev.name())
}

/// Builds every core's channels and buffers.
pub fn build_workers(
    opts: &PerfOptions,
    layer: &BlockLayer,
    bdevs: &[(Bdev, u32)],
    policy: Policy,
) -> Result<Vec<MpathWorker>, String> {
    let mut out = Vec::new();
    for (ci, &core) in opts.cores.iter().enumerate() {
        let mut jobs = Vec::new();
        for (bdev, nsid) in bdevs {
            let (nlb, slots) = super::io_slots(opts, bdev.block_size(), bdev.num_blocks());
            let ch = bdev.channel().map_err(|e| {
                format!("opening a channel of {} for core {core}: {e}", bdev.name())
            })?;
            let bufs = super::alloc_buffers(opts, |len| layer.alloc_buffer(len))?;
            let mp = bdev.multipath().cloned();
            let path_names = mp
                .as_ref()
                .map(|m| m.paths().into_iter().map(|p| (p.id, p.name)).collect())
                .unwrap_or_default();
            jobs.push(MpathJob {
                device: bdev.name().to_string(),
                nsid: *nsid,
                block_size: bdev.block_size(),
                nlb,
                slots,
                fill: super::fill_range(opts, ci, slots),
                limit: super::io_limit(opts, slots),
                backend: BdevChannel {
                    ch,
                    path_names,
                    mp,
                    policy,
                    snap: Vec::new(),
                    snap_ch: Default::default(),
                    longest_submit: 0,
                    last_completion: 0,
                    longest_gap: 0,
                },
                bufs,
            });
        }
        out.push(MpathWorker { core, ns: jobs });
    }
    Ok(out)
}

/// Attaches the wanted controllers to a new block layer (each named by its PCI
/// address, reopened through VFIO on reconnect) and opens the multipath bdevs that
/// cover the wanted namespaces.
pub fn open_vfio(
    wanted: &Wanted,
    lopts: LayerOptions,
    note: &mut dyn FnMut(String),
) -> Result<(BlockLayer, Vec<(Bdev, u32)>), crate::attach::OpenError> {
    use crate::attach::OpenError;
    let layer = BlockLayer::new(lopts).map_err(|e| OpenError::Device(e.to_string()))?;
    let mut attached = Vec::new();
    for (bdf, _) in wanted {
        let names = layer
            .attach(bdf, nvme_bdev::layer::vfio_connector(bdf))
            .map_err(|e| OpenError::Device(format!("{bdf}: {e}")))?;
        note(format!(
            "Attached {bdf} to the block layer: {}",
            names.join(", ")
        ));
        attached.push(names);
    }
    // Controllers that appear during the run (a new address, or one that comes back
    // after the loss timeout) join the bdevs they reach; one that comes back while
    // the layer waits for it reconnects at once.
    layer
        .enable_hotplug(Arc::new(nvme_bdev::layer::VfioHotplug), HOTPLUG_PERIOD_MS)
        .map_err(|e| OpenError::Device(format!("enabling hot-plug: {e}")))?;
    let picked = select_bdevs(wanted, &attached)?;
    let mut out = Vec::new();
    for (name, nsid) in picked {
        let bdev = layer
            .open(&name)
            .map_err(|e| OpenError::Device(e.to_string()))?;
        out.push((bdev, nsid));
    }
    Ok((layer, out))
}

/// One line per bdev: its paths, their states and failovers, and each controller's
/// resets and reconnects (whole run, every core).
pub fn path_summary(layer: &BlockLayer, bdevs: &[(Bdev, u32)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (b, _) in bdevs {
        let Some(m) = b.multipath() else { continue };
        let _ = write!(
            out,
            "Paths of {} ({}):",
            b.name(),
            m.options().policy.name()
        );
        let paths = m.paths();
        if paths.is_empty() {
            out.push_str(" none left");
        }
        for (k, p) in paths.iter().enumerate() {
            let (resets, reconnects) = layer.controller_counts(&p.name).unwrap_or((0, 0));
            let _ = write!(
                out,
                "{} {} {:?}{}, {} failovers, {} resets, {} reconnects",
                if k == 0 { "" } else { ";" },
                p.name,
                p.state.ana,
                if p.state.connected {
                    ""
                } else {
                    " (disconnected)"
                },
                p.failovers,
                resets,
                reconnects
            );
        }
        let _ = writeln!(
            out,
            "; longest path-set publication {:.1} us",
            m.longest_publish_ns() as f64 / 1000.0
        );
    }
    let hp = layer.hotplug_stats();
    if hp.appeared > 0 || hp.attach_failures > 0 {
        let _ = writeln!(
            out,
            "Hot-plug: {} controllers appeared, {} attached, {} attached again, {} reconnects \
             brought forward, {} failed attach attempts",
            hp.appeared, hp.attached, hp.reattached, hp.reconnects_prompted, hp.attach_failures
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::test_opts as opts;
    use crate::perf::{report, run_mpath, with_quiet_ui};
    use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};

    #[test]
    fn bdevs_are_picked_by_namespace() {
        let wanted: Wanted = vec![
            ("0000:01:00.0".into(), None),
            ("0000:02:00.0".into(), Some(vec![1])),
        ];
        let attached = vec![
            vec![
                "0000:01:00.0n1".to_string(),
                "nqn.x:n1".to_string(),
                "0000:01:00.0n2".to_string(),
                "nqn.x:n2".to_string(),
            ],
            vec![
                "0000:02:00.0n1".to_string(),
                "nqn.x:n1".to_string(),
                "0000:02:00.0n2".to_string(),
                "nqn.x:n2".to_string(),
            ],
        ];
        assert_eq!(
            select_bdevs(&wanted, &attached).unwrap(),
            vec![("nqn.x:n1".to_string(), 1), ("nqn.x:n2".to_string(), 2)]
        );
        let wanted: Wanted = vec![("0000:01:00.0".into(), Some(vec![3]))];
        assert!(select_bdevs(&wanted, &attached[..1])
            .unwrap_err()
            .0
            .contains("no active namespace 3"));
    }

    #[test]
    fn multipath_run_on_software_controllers_counts_paths_and_failovers() {
        let ns = Arc::new(Namespace::new(1, 8192, 512).unwrap());
        let soft = |name: &str, cntlid| {
            SoftController::start(SoftConfig {
                name: name.into(),
                subnqn: "nqn.2024-01.org.nvme-tools:perf".into(),
                cntlid,
                namespaces: vec![ns.clone()],
                ..SoftConfig::default()
            })
        };
        let (a, b) = (soft("softA", 1), soft("softB", 2));
        const HELD: u32 = 4;
        let o = opts(
            "-q 8 -o 4096 -w randrw -M 50 -t 2 -c 0x3 --verify --multipath --policy round-robin",
        );
        let policy = o.multipath.unwrap();
        let layer = BlockLayer::new(layer_options(&o, policy)).unwrap();
        layer.attach_bus("softA", a.clone()).unwrap();
        let names = layer.attach_bus("softB", b.clone()).unwrap();
        let mp = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
        let bdevs = vec![(layer.open(mp).unwrap(), 1)];
        check_bdev(&o, &bdevs[0].0).unwrap();
        let workers = build_workers(&o, &layer, &bdevs, policy).unwrap();
        let rows = std::thread::scope(|s| {
            let h = s.spawn(|| with_quiet_ui(|ui| run_mpath(&o, workers, ui)));
            // Reset path A under load: its I/O fails over to B. A's device first holds
            // the completions of its next commands, so they are in flight when the
            // reset deletes A's queues (they come back "aborted: SQ deletion", a
            // path error): without the hold the device may have finished them all
            // by then and nothing would fail over.
            std::thread::sleep(std::time::Duration::from_millis(500));
            a.faults().drop_io_completions(HELD);
            let t0 = std::time::Instant::now();
            while a.counters().held_commands() < HELD as u64 {
                assert!(t0.elapsed().as_secs() < 10, "A never held {HELD} commands");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            layer.request_reset("softA").unwrap();
            h.join().unwrap()
        });
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert_eq!(r.errors, 0, "{:?}", r.first_error);
            assert_eq!(r.mismatches, 0);
            let m = r.mpath.as_ref().unwrap();
            assert_eq!(m.paths.len(), 2, "{m:?}");
            assert!(
                m.paths.iter().all(|p| p.ios > 0),
                "round robin uses both: {m:?}"
            );
            assert_eq!(m.paths[0].name, "softA");
            assert_eq!(m.channel.stray_completions, 0, "{m:?}");
        }
        assert_eq!(layer.controller_counts("softA").unwrap().0, 1);
        // The held commands failed over: counted by the channels (measured phase =
        // whole run here) and on path A.
        let failovers: u64 = rows
            .iter()
            .map(|r| r.mpath.as_ref().unwrap().channel.failovers)
            .sum();
        let per_core: Vec<_> = rows.iter().map(|r| r.mpath.as_ref().unwrap()).collect();
        assert!(
            failovers >= HELD as u64,
            "{failovers} failovers: {per_core:?}"
        );
        let paths = bdevs[0].0.multipath().unwrap().paths();
        assert!(
            paths[0].name == "softA" && paths[0].failovers >= HELD as u64,
            "{paths:?}"
        );
        let text = report::text(&o, &rows);
        assert!(
            text.contains("MPATH (nqn.2024-01.org.nvme-tools:perf:n1) from core  1"),
            "{text}"
        );
        assert!(text.contains("softA "), "{text}");
        assert!(text.contains("longest submit"), "{text}");
        let summary = path_summary(&layer, &bdevs);
        assert!(summary.contains("softA Optimized"), "{summary}");
        assert!(summary.contains("1 resets"), "{summary}");
        assert!(
            !summary.contains("softA Optimized, 0 failovers"),
            "{summary}"
        );
        eprintln!("{summary}");
        let json = report::to_json(&o, &rows);
        assert_eq!(json["config"]["multipath"], "round-robin");
        assert!(
            json["namespaces"][0]["multipath"]["paths"][0]["ios"]
                .as_u64()
                .unwrap()
                > 0
        );
        drop(bdevs);
        layer.shutdown();
        a.stop();
        b.stop();
    }
}
