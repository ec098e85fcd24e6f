// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Opens an NVMe controller through VFIO, prints its registers, maps DMA memory, and
//! optionally waits for a hot-unplug request and lets the device go.
//!
//! ```text
//! vfio_probe BDF [WAIT_SECONDS]
//! vfio_probe --list
//! ```

use nvme_driver::bus::Bus;
use nvme_driver::dma::DmaPool;
use nvme_driver::regs;
use nvme_driver::vfio::{list_nvme_controllers, VfioBus};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for c in list_nvme_controllers() {
            println!("{c}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(bdf) = args.first() else {
        eprintln!("usage: vfio_probe BDF [WAIT_SECONDS] | vfio_probe --list");
        return ExitCode::from(2);
    };
    let wait_s: u64 = match args.get(1).map(|s| s.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("vfio_probe: WAIT_SECONDS must be a whole number");
            return ExitCode::from(2);
        }
    };
    match run(bdf, wait_s) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfio_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(bdf: &str, wait_s: u64) -> nvme_driver::Result<()> {
    let bus = VfioBus::open(bdf)?;
    println!(
        "{}: opened, IOMMU group {}, request IRQ {}",
        bus.bdf(),
        bus.iommu_group(),
        if bus.has_request_irq() {
            "armed"
        } else {
            "not offered"
        }
    );
    let bar = bus.bar0();
    println!("BAR0 {} bytes", bar.len());
    println!("CAP  {:#018x}", bar.read64(regs::CAP));
    println!("VS   {:#010x}", bar.read32(regs::VS));
    println!("CSTS {:#010x}", bar.read32(regs::CSTS));

    let pool = DmaPool::new(bus.bdf(), bus.mapper())?;
    let mut buf = pool.alloc(2 << 20)?;
    buf.fill(0xa5);
    let stats = pool.stats();
    println!(
        "DMA: {} bytes at IOVA {:#x}, mapped {} bytes, huge chunks {}",
        buf.len(),
        buf.iova().0,
        stats.mapped_bytes,
        stats.huge_chunks
    );

    if wait_s > 0 {
        println!("waiting up to {wait_s} s for a removal request");
        // A thread keeps reading CSTS through BAR0, as a poller would, across the
        // release: it must see the device and then all ones, never a fault.
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (bus, stop) = (bus.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut reads, mut ones) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    reads += 1;
                    ones += u64::from(bus.bar0().read32(regs::CSTS) == u32::MAX);
                }
                (reads, ones)
            })
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs(wait_s);
        while Instant::now() < deadline {
            if bus.removal_requested() {
                println!(
                    "removal requested after {:.1} s: releasing",
                    start.elapsed().as_secs_f64()
                );
                bus.release();
                println!(
                    "released; CSTS now reads {:#010x}; removal_requested {}",
                    bar.read32(regs::CSTS),
                    bus.removal_requested()
                );
                // The pool and buffer outlive the device: freeing them must not fail.
                drop(buf);
                let late = pool.alloc(4 << 20);
                println!("new 4 MiB DMA mapping after release: {}", describe(&late));
                // Stay alive while vfio-pci finishes the unplug, to show it does not
                // wait for this process to exit.
                let released_at = Instant::now();
                stop.store(true, Ordering::Relaxed);
                if let Ok((reads, ones)) = poller.join() {
                    println!("poller thread: {reads} CSTS reads, {ones} of them all ones");
                }
                let node = std::path::Path::new("/sys/bus/pci/devices").join(bus.bdf());
                while node.exists() && released_at.elapsed() < Duration::from_secs(15) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                println!(
                    "{} {} /sys/bus/pci/devices {:.2} s after release (process still running)",
                    bus.bdf(),
                    if node.exists() { "is still in" } else { "left" },
                    released_at.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("no removal request within {wait_s} s");
        stop.store(true, Ordering::Relaxed);
        let _ = poller.join();
    }
    bus.release();
    println!("released; CSTS now reads {:#010x}", bar.read32(regs::CSTS));
    // Release closed the group: this process can open the device again at once.
    let again = VfioBus::open(bus.bdf())?;
    println!(
        "reopened in the same process: CSTS {:#010x}",
        again.bar0().read32(regs::CSTS)
    );
    Ok(())
}

fn describe<T>(r: &nvme_driver::Result<T>) -> String {
    match r {
        Ok(_) => "succeeded".into(),
        Err(e) => format!("refused: {e}"),
    }
}
