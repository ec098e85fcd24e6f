// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Caller memory registered for DMA (issue 23, item 4), against software controllers:
//! I/O from a region the caller allocated itself reaches every path of a multipath
//! bdev (round robin over two controllers) and reads back intact; a controller
//! attached after the registration reaches it too; a region that is dropped is
//! unmapped (an I/O that still names it fails instead of touching the memory); bad
//! regions are refused with the rule they break.

mod common;

use nvme_bdev::{BdevIo, BlockLayer, Channel, LayerOptions, MpathOptions, Policy};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{DmaSlice, Status};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:memreg";
const LIMIT: Duration = Duration::from_secs(10);
const REGION: usize = 1 << 20;

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        multi_controller: true,
        ..common::config(name, SUBNQN, cntlid, ns)
    })
}

/// Memory the caller owns: page-aligned, zeroed, freed on drop.
struct CallerMemory {
    ptr: *mut u8,
    layout: Layout,
}

impl CallerMemory {
    fn new(len: usize) -> CallerMemory {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        CallerMemory { ptr, layout }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` bytes allocated above; callers use this
        // only while no I/O on the memory is in flight.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for CallerMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Submits `io` and waits for its completion; returns its status.
fn run(ch: &mut Channel, io: BdevIo) -> Status {
    if let Err((e, _)) = ch.submit(io) {
        panic!("refused: {e}");
    }
    let start = Instant::now();
    let mut status = None;
    while status.is_none() {
        ch.poll(&mut |c| status = Some(c.status));
        assert!(start.elapsed() < LIMIT, "no completion in {LIMIT:?}");
    }
    status.unwrap()
}

fn slice(s: nvme_bdev::Result<DmaSlice>) -> DmaSlice {
    s.unwrap()
}

#[test]
fn registered_caller_memory_serves_io_on_every_path() {
    let ns = Arc::new(Namespace::new(1, 1 << 14, 512).unwrap());
    let d0 = soft("mr0", 1, &ns);
    let d1 = soft("mr1", 2, &ns);
    let d2 = soft("mr2", 3, &ns);
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy: Policy::RoundRobin,
            ..MpathOptions::default()
        },
        qpair: nvme_driver::QpairOptions {
            entries: 64,
            ..nvme_driver::QpairOptions::default()
        },
        ..LayerOptions::default()
    })
    .unwrap();
    layer.attach_bus("c0", d0).unwrap();
    let names = layer.attach_bus("c1", d1).unwrap();
    let mpath = names
        .iter()
        .find(|n| n.starts_with(SUBNQN))
        .unwrap()
        .clone();
    let bdev = layer.open(&mpath).unwrap();

    let mut mem = CallerMemory::new(REGION);
    for (i, b) in mem.bytes().iter_mut().enumerate() {
        *b = (i * 7 + i / 4096) as u8;
    }
    // SAFETY: `mem` outlives the region (dropped below, before `mem`), and no I/O on
    // it is in flight when the region is dropped.
    let region = unsafe { layer.register_memory(mem.ptr, REGION) }.unwrap();
    assert_eq!(region.len(), REGION);

    // Eight 64 KiB writes from the first half, round robin over both paths, then
    // reads into the second half: the data comes back through the caller's memory.
    let mut ch = bdev.channel().unwrap();
    let half = REGION / 2;
    for i in 0..8usize {
        let src = slice(region.slice(i * 65536, 65536));
        assert!(run(&mut ch, BdevIo::write(i as u64 * 128, 128, src, 0)).is_success());
    }
    for i in 0..8usize {
        let dst = slice(region.slice(half + i * 65536, 65536));
        assert!(run(&mut ch, BdevIo::read(i as u64 * 128, 128, dst, 0)).is_success());
    }
    let (a, b) = mem.bytes().split_at(half);
    assert!(a == b, "what was read back differs from what was written");
    let st = ch.iostat();
    assert_eq!((st.write_ops, st.read_ops), (8, 8));
    drop(ch);
    let paths = bdev.iostat().paths;
    assert!(
        paths.len() == 2 && paths.iter().all(|p| p.submitted == 8),
        "both paths carried I/O from the region: {paths:?}"
    );

    // A controller attached after the registration reaches the region too: with c0
    // and c1 gone, c2 carries every I/O.
    layer.attach_bus("c2", d2).unwrap();
    layer.detach("c0").unwrap();
    layer.detach("c1").unwrap();
    let mut ch = bdev.channel().unwrap();
    mem.bytes()[half..].fill(0);
    let dst = slice(region.slice(half, 65536));
    assert!(run(&mut ch, BdevIo::read(0, 128, dst, 0)).is_success());
    let (a, b) = mem.bytes().split_at(half);
    assert!(a[..65536] == b[..65536], "c2 read back other data");

    // Dropped: unmapped from every controller. A request that still names it fails
    // instead of reading or writing memory the caller may have freed.
    let stale = slice(region.slice(0, 4096));
    drop(region);
    let st = run(&mut ch, BdevIo::write(0, 8, stale, 0));
    assert!(
        !st.is_success(),
        "a write from unregistered memory succeeded"
    );
    drop(ch);

    // Refusals name the rule.
    // SAFETY: refused before anything is mapped.
    let e = unsafe { layer.register_memory(mem.ptr.add(100), 8192) }
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 4096"), "{e}");
    // SAFETY: as above.
    let e = unsafe { layer.register_memory(mem.ptr, 1000) }
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 4096"), "{e}");
    // SAFETY: as above.
    let e = unsafe { layer.register_memory(std::ptr::null_mut(), 4096) }
        .unwrap_err()
        .to_string();
    assert!(e.contains("null"), "{e}");
    // The window is reused once regions are dropped.
    // SAFETY: `mem` outlives the region, nothing is in flight when it drops.
    let again = unsafe { layer.register_memory(mem.ptr, REGION) }.unwrap();
    assert_eq!(again.iova(), nvme_bdev::REGISTERED_BASE);
}
