// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Memory of a process driving one controller with two queue pairs at queue depth
//! 256 (issue 3's memory benchmark): DMA memory mapped and the resident set, printed
//! at the start and every few seconds of a run, to show they do not grow.
//!
//! ```text
//! qemu/run --backing null --include target/release/examples/mem_soak -- mem_soak 0000:01:00.0 60
//! ```

use nvme_driver::vfio::VfioBus;
use nvme_driver::{Controller, ControllerOptions, IoRequest, QpairOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bdf = args
        .get(1)
        .map_or("0000:01:00.0", String::as_str)
        .to_string();
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let depth = 256usize;
    let bus = VfioBus::open(&bdf).unwrap_or_else(|e| panic!("{e}"));
    let ctrl =
        Controller::init(bus, ControllerOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let ios = Arc::new(AtomicU64::new(0));
    // Prints one sample and returns what it printed: (DMA mapped bytes, RSS in KiB).
    let report = |what: &str, ctrl: &Controller| {
        let st = ctrl.dma_pool().stats();
        let rss = rss_kib();
        println!(
            "{what}: DMA mapped {:.1} MiB in {} chunks ({} on huge pages), in use {:.1} MiB; RSS {:.1} MiB",
            st.mapped_bytes as f64 / 1048576.0,
            st.chunks,
            st.huge_chunks,
            st.in_use_bytes as f64 / 1048576.0,
            rss as f64 / 1024.0
        );
        (st.mapped_bytes, rss)
    };
    report("after init", &ctrl);
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let (c, s, n) = (ctrl.clone(), stop.clone(), ios.clone());
        threads.push(std::thread::spawn(move || {
            let mut qp = c
                .create_io_qpair(QpairOptions {
                    entries: (depth + 1) as u16,
                    ..QpairOptions::default()
                })
                .unwrap_or_else(|e| panic!("{e}"));
            let bufs: Vec<_> = (0..depth)
                .map(|_| c.alloc_buffer(4096).unwrap_or_else(|e| panic!("{e}")))
                .collect();
            let nsze = c.namespace(1).map(|n| n.nsze).unwrap_or(8);
            let mut lba = t * 4096;
            let mut done = Vec::with_capacity(depth);
            for (i, b) in bufs.iter().enumerate() {
                lba = (lba + 8) % (nsze - 8);
                qp.submit(IoRequest::read(1, lba, 8, b.whole(), i as u64))
                    .unwrap_or_else(|(e, _)| panic!("{e}"));
            }
            while !s.load(Ordering::Relaxed) {
                done.clear();
                qp.poll(depth, &mut |c| done.push(c.ctx));
                for &i in &done {
                    lba = (lba + 8) % (nsze - 8);
                    let _ = qp.submit(IoRequest::read(1, lba, 8, bufs[i as usize].whole(), i));
                }
                n.fetch_add(done.len() as u64, Ordering::Relaxed);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while qp.outstanding() > 0 && Instant::now() < deadline {
                qp.poll(depth, &mut |_| {});
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    report("queue pairs running", &ctrl);
    let mut first = None;
    let mut last = (0, 0);
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(5).min(Duration::from_secs(secs).saturating_sub(start.elapsed())),
        );
        ctrl.process_admin();
        let now = report(
            &format!(
                "t={:>3}s ios={}",
                start.elapsed().as_secs(),
                ios.load(Ordering::Relaxed)
            ),
            &ctrl,
        );
        first.get_or_insert(now);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Some((dma0, rss0)) = first {
        println!(
            "growth from the first to the last sample under load: DMA {:+} bytes, RSS {:+} KiB",
            last.0 as i64 - dma0 as i64,
            last.1 as i64 - rss0 as i64
        );
    }
}
