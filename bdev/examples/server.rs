// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A storage server's I/O loop over the block layer, as an embedder writes it: the
//! multipath bdev over every controller given, a reactor per core each driving its own
//! channel with verified traffic (write a pattern, read it back, compare), the bdev's
//! events taken on the main thread, figures from `Bdev::iostat` once a second, and an
//! orderly stop (the controllers get the shutdown notification). Writes come from the
//! layer's buffers (`alloc_buffer`); reads land in memory the server allocated itself
//! and registered with every controller (`register_memory`), as a server with its own
//! buffer pool would.
//!
//! ```text
//! server [--bdf BDF]... [--seconds N] [--cores N] [--hotplug]
//! ```
//!
//! With `--bdf` (each a controller bound to vfio-pci, e.g. `nvme-setup config`), the
//! controllers are attached through VFIO; `--hotplug` turns on the layer's hot-plug
//! scan of vfio-pci controllers, so a controller unplugged and plugged back (bound to
//! vfio-pci by `nvme-setup keep-vfio on`) is reconnected. Without `--bdf`, two software
//! controllers that share a namespace stand in (`cargo run -p nvme-bdev --example
//! server`). Exits 1 if any I/O failed or read back other data than was written.

use nvme_bdev::layer::{vfio_connector, VfioHotplug};
use nvme_bdev::reactor::{Poller, ReactorCtx, ReactorOptions, Reactors};
use nvme_bdev::{
    BdevEvent, BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MemRegion, MpathOptions, Policy,
    EVENT_QUEUE_DEFAULT,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// I/Os each core keeps in flight, and the blocks each one covers.
const DEPTH: usize = 8;
const NLB: u32 = 8;

/// What every core adds to as it goes.
#[derive(Default)]
struct Tally {
    verified: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
}

/// One I/O slot of a core: a block range of its own, written with a pattern and read
/// back, over and over.
struct Slot {
    slba: u64,
    seq: u64,
    wbuf: IoBuf,
    /// Where its reads land: `NLB` blocks at this offset of the server's own memory.
    rbuf: (Arc<MemRegion>, usize),
    reading: bool,
}

/// Bytes one I/O moves.
const IO_BYTES: usize = NLB as usize * 512;

/// A core's share of the server: its channel and its slots.
struct Client {
    ch: Channel,
    slots: Vec<Slot>,
    tally: Arc<Tally>,
    core: usize,
}

impl Client {
    fn pattern(&self, slot: usize, seq: u64) -> u8 {
        (self.core * 31 + slot * 7) as u8 ^ seq as u8
    }

    /// Sends slot `i`'s next step: a write of its new pattern, or the read back.
    fn start(&mut self, i: usize) {
        let s = &self.slots[i];
        let io = if s.reading {
            let (region, off) = &s.rbuf;
            match region.slice(*off, IO_BYTES) {
                Ok(buf) => BdevIo::read(s.slba, NLB, buf, i as u64),
                Err(e) => unreachable!("slot {i}'s read buffer is inside the region: {e}"),
            }
        } else {
            BdevIo::write(s.slba, NLB, s.wbuf.whole(), i as u64)
        };
        // Busy cannot happen (DEPTH is far below the channel's depth); a channel that
        // is stopping refuses, and the slot rests.
        if let Err((e, _)) = self.ch.submit(io) {
            if !matches!(e, nvme_bdev::Error::Stopped(_)) {
                eprintln!("core {}: submit refused: {e}", self.core);
                self.tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Slot `i`'s I/O completed: check a read, move on to the next step.
    fn finish(&mut self, i: usize, ok: bool, stopping: bool) {
        if !ok {
            self.tally.errors.fetch_add(1, Ordering::Relaxed);
        } else if self.slots[i].reading {
            let want = self.pattern(i, self.slots[i].seq);
            let (region, off) = &self.slots[i].rbuf;
            // SAFETY: the read completed, so the device no longer writes these bytes;
            // they lie inside the region (made in `main`), which the Arc keeps
            // registered and allocated.
            let back = unsafe { std::slice::from_raw_parts(region.as_ptr().add(*off), IO_BYTES) };
            if back.iter().all(|&b| b == want) {
                self.tally.verified.fetch_add(1, Ordering::Relaxed);
            } else {
                self.tally.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
        let next_seq = self.slots[i].seq + 1;
        let fill = self.pattern(i, next_seq);
        let s = &mut self.slots[i];
        if s.reading {
            s.seq = next_seq;
            s.wbuf.fill(fill);
        }
        s.reading = !s.reading;
        if !stopping {
            self.start(i);
        }
    }

    fn poll_once(&mut self, stopping: bool) -> usize {
        let mut done = [(0usize, false); DEPTH * 2];
        let mut n = 0;
        let got = self.ch.poll(&mut |c| {
            if n < done.len() {
                done[n] = (c.ctx as usize, c.status.is_success());
                n += 1;
            }
        });
        for &(i, ok) in &done[..n] {
            self.finish(i, ok, stopping);
        }
        got
    }
}

impl Poller for Client {
    fn poll(&mut self, _ctx: &mut ReactorCtx) -> usize {
        self.poll_once(false)
    }

    fn stop(&mut self, _ctx: &mut ReactorCtx) -> bool {
        self.poll_once(true);
        self.ch.outstanding() == 0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut bdfs, mut seconds, mut cores, mut hotplug) = (Vec::new(), 5u64, 2usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bdf" => bdfs.push(value()?),
            "--seconds" => seconds = value()?.parse()?,
            "--cores" => cores = value()?.parse()?,
            "--hotplug" => hotplug = true,
            _ => return Err(format!("unknown argument {a}; see the example's header").into()),
        }
    }
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy: Policy::RoundRobin,
            // A controller that is unplugged stays a path for a minute: plugged back
            // in time, it is reconnected rather than removed.
            ctrl_loss_timeout_ms: 60_000,
            ..MpathOptions::default()
        },
        ..LayerOptions::default()
    })?;
    let mut names = Vec::new();
    if bdfs.is_empty() {
        let ns = Arc::new(Namespace::new(1, 1 << 16, 512)?);
        for (i, name) in ["soft0", "soft1"].into_iter().enumerate() {
            let ctrl = SoftController::start(SoftConfig {
                name: name.into(),
                subnqn: "nqn.2024-01.org.example:server".into(),
                cntlid: i as u16 + 1,
                namespaces: vec![ns.clone()],
                multi_controller: true,
                ..SoftConfig::default()
            });
            names = layer.attach_bus(name, ctrl)?;
        }
    } else {
        for bdf in &bdfs {
            names = layer.attach(bdf, vfio_connector(bdf))?;
        }
    }
    if hotplug {
        layer.enable_hotplug(Arc::new(VfioHotplug), 200)?;
    }
    // Per namespace: the namespace bdev, then the multipath bdev.
    let mp = names.get(1).ok_or("no multipath bdev")?.clone();
    let bdev = layer.open(&mp)?;
    let events = layer.subscribe(&mp, EVENT_QUEUE_DEFAULT)?;
    println!(
        "server: {mp}, {} blocks of {} bytes, {} path(s), {cores} core(s)",
        bdev.num_blocks(),
        bdev.block_size(),
        bdev.multipath().map_or(0, |m| m.paths().len())
    );

    // The server's own memory for reads, registered with every controller: page
    // aligned, as `register_memory` asks.
    let pool_len = cores * DEPTH * IO_BYTES;
    let layout = Layout::from_size_align(pool_len.next_multiple_of(4096), 4096)?;
    // SAFETY: the layout's size is not zero (at least one core and slot).
    let pool = unsafe { alloc_zeroed(layout) };
    if pool.is_null() {
        return Err("out of memory for the read buffers".into());
    }
    // SAFETY: `pool` stays allocated until after the region is dropped (below), and no
    // I/O is in flight on it then (the reactors have stopped).
    let region = Arc::new(unsafe { layer.register_memory(pool, layout.size()) }?);
    println!(
        "server: reads land in {} KiB of the server's own memory, registered at IOVA {:#x}",
        layout.size() / 1024,
        region.iova()
    );

    // A reactor per core, each given its channel (made here, off the reactors).
    let tally = Arc::new(Tally::default());
    let reactors = Reactors::start(
        ReactorOptions {
            pin: false,
            ..ReactorOptions::cores(cores)
        },
        layer.qsbr().clone(),
    )?;
    for core in 0..cores {
        let mut slots = Vec::new();
        for i in 0..DEPTH {
            let mut wbuf = layer.alloc_buffer(IO_BYTES)?;
            wbuf.fill((core * 31 + i * 7) as u8);
            slots.push(Slot {
                slba: ((core * DEPTH + i) as u64) * NLB as u64,
                seq: 0,
                wbuf,
                rbuf: (region.clone(), (core * DEPTH + i) * IO_BYTES),
                reading: false,
            });
        }
        let mut client = Client {
            ch: bdev.channel()?,
            slots,
            tally: tally.clone(),
            core,
        };
        reactors
            .send(
                core,
                Box::new(move |ctx: &mut ReactorCtx| {
                    for i in 0..DEPTH {
                        client.start(i);
                    }
                    ctx.add_poller(Box::new(client));
                }),
            )
            .map_err(|(e, _)| e)?;
    }

    // The main thread: events as they come, figures once a second.
    let start = Instant::now();
    let mut next_report = Duration::from_secs(1);
    while start.elapsed() < Duration::from_secs(seconds) {
        events.drain(|ev| match ev {
            BdevEvent::Dropped { count } => println!("event: {count} dropped"),
            ev => println!("event: {ev:?}"),
        });
        if start.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let st = bdev.iostat();
            let paths: Vec<String> = st
                .paths
                .iter()
                .map(|p| format!("{} {}", p.controller, p.submitted))
                .collect();
            println!(
                "server: {:>3} s: {} verified, per path: {}",
                start.elapsed().as_secs(),
                tally.verified.load(Ordering::Relaxed),
                paths.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reactors.stop()?;
    events.drain(|ev| println!("event: {ev:?}"));
    // The reactors dropped their slots: this is the region's last handle. Dropping it
    // unregisters the memory, which may then be freed.
    drop(Arc::into_inner(region).ok_or("a slot still holds the read region")?);
    // SAFETY: allocated above with `layout`; no longer registered or used.
    unsafe { dealloc(pool, layout) };
    layer.shutdown();
    let (verified, errors, mismatches) = (
        tally.verified.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.mismatches.load(Ordering::Relaxed),
    );
    println!("server: {verified} reads verified, {errors} errors, {mismatches} mismatches");
    if errors + mismatches > 0 || verified == 0 {
        std::process::exit(1);
    }
    Ok(())
}
