//! Guest-side scenarios for the driver's end-to-end tests. Run inside a QEMU guest
//! against controllers bound to vfio-pci:
//!
//! ```text
//! nvme-e2e-driver identify BDF
//! nvme-e2e-driver rw BDF          write then read back, 512 B to 4 MiB, PRP-list offsets
//! nvme-e2e-driver threads BDF     two threads, each with its own queue pair
//! nvme-e2e-driver reset BDF       controller resets in the middle of verified traffic
//! nvme-e2e-driver unplug BDF ID   hot-unplug (QMP device_del ID) in the middle of traffic
//! ```
//!
//! Each prints `PASS <scenario>` and exits 0, or says what failed and exits 1.
//! Every wait has a deadline.

use nvme_driver::vfio::VfioBus;
use nvme_driver::{
    Controller, ControllerOptions, CtrlState, DmaBuf, IoQpair, IoRequest, QpairOptions, Status,
};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

const DEADLINE: Duration = Duration::from_secs(60);

fn open(bdf: &str) -> R<Controller> {
    let bus = VfioBus::open(bdf).map_err(|e| e.to_string())?;
    Controller::init(bus, ControllerOptions::default()).map_err(|e| e.to_string())
}

fn fill(buf: &mut DmaBuf, seed: u64) -> R<()> {
    let mut v = vec![0u8; buf.len()];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    buf.write_at(0, &v).map_err(|e| e.to_string())
}

fn bytes(buf: &DmaBuf) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    buf.read_at(0, &mut v)
        .expect("whole-buffer read is in bounds");
    v
}

/// Submits one request and polls until it completes; returns its status.
fn sync_io(qp: &mut IoQpair, req: IoRequest) -> R<Status> {
    qp.submit(req).map_err(|(e, _)| e.to_string())?;
    let start = Instant::now();
    let mut status = None;
    while status.is_none() {
        qp.poll(16, &mut |c| status = Some(c.status));
        if start.elapsed() > DEADLINE {
            return Err(format!(
                "request {:?} did not complete within {DEADLINE:?}",
                req.op
            ));
        }
    }
    Ok(status.expect("loop ends when set"))
}

fn identify(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let id = ctrl.identify();
    println!(
        "{bdf}: vid {:#06x} sn '{}' mn '{}' fr '{}' subnqn '{}'",
        id.vid, id.sn, id.mn, id.fr, id.subnqn
    );
    println!(
        "{bdf}: CAP {:#018x} MDTS {} bytes, {} I/O queues",
        ctrl.cap().0,
        ctrl.max_transfer_bytes(),
        ctrl.io_queues()
    );
    if id.vid != 0x1b36 {
        return Err(format!("vendor {:#x} is not QEMU's 0x1b36", id.vid));
    }
    let ns = ctrl.namespace(1).map_err(|e| e.to_string())?;
    println!(
        "{bdf}: namespace 1: {} blocks of {} bytes",
        ns.nsze, ns.block_size
    );
    if ns.nsze == 0 {
        return Err("namespace 1 is empty".into());
    }
    Ok(())
}

fn rw(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let bs = ctrl.namespace(1).map_err(|e| e.to_string())?.block_size as usize;
    let mut qp = ctrl
        .create_io_qpair(QpairOptions::default())
        .map_err(|e| e.to_string())?;
    let sizes = [
        512usize,
        4096,
        8192,
        12288,
        65536,
        131072 + 512,
        1 << 20,
        4 << 20,
    ];
    let offsets = [0usize, 512, 3584];
    let mut n = 0;
    for &size in &sizes {
        if size % bs != 0 {
            continue;
        }
        for &off in &offsets {
            let mut w = ctrl.alloc_buffer(size + off).map_err(|e| e.to_string())?;
            let r = ctrl.alloc_buffer(size + off).map_err(|e| e.to_string())?;
            fill(&mut w, n + 1)?;
            let slba = n * 16;
            let nlb = (size / bs) as u32;
            let st = sync_io(
                &mut qp,
                IoRequest::write(
                    1,
                    slba,
                    nlb,
                    w.slice(off, size).map_err(|e| e.to_string())?,
                    n,
                ),
            )?;
            if !st.is_success() {
                return Err(format!("write of {size} bytes at offset {off}: {st}"));
            }
            let st = sync_io(
                &mut qp,
                IoRequest::read(
                    1,
                    slba,
                    nlb,
                    r.slice(off, size).map_err(|e| e.to_string())?,
                    n,
                ),
            )?;
            if !st.is_success() {
                return Err(format!("read of {size} bytes at offset {off}: {st}"));
            }
            if bytes(&w)[off..] != bytes(&r)[off..] {
                return Err(format!(
                    "data read back differs: {size} bytes at buffer offset {off}, LBA {slba}"
                ));
            }
            n += 1;
        }
    }
    let st = qp.stats();
    println!(
        "rw: {n} write/read pairs verified; {} requests as {} commands",
        st.submitted, st.commands
    );
    Ok(())
}

/// Runs verified traffic on its own queue pair: `slots` requests in flight, each
/// owning 8 blocks at `base + 8 * slot`, writing then reading back. Requests aborted by
/// a reset are resubmitted. Returns (completions, aborted, failed).
fn traffic(
    ctrl: &Controller,
    base: u64,
    slots: usize,
    stop: &AtomicBool,
    allow_failure: bool,
) -> R<(u64, u64, u64)> {
    let mut qp = ctrl
        .create_io_qpair(QpairOptions {
            entries: 64,
            pending_max: 1024,
            timeout_ms: 10_000,
        })
        .map_err(|e| e.to_string())?;
    let bs = ctrl.namespace(1).map_err(|e| e.to_string())?.block_size as usize;
    let len = 8 * bs;
    let mut wbufs = Vec::new();
    let mut rbufs = Vec::new();
    for _ in 0..slots {
        wbufs.push(ctrl.alloc_buffer(len).map_err(|e| e.to_string())?);
        rbufs.push(ctrl.alloc_buffer(len).map_err(|e| e.to_string())?);
    }
    // Per slot: 0 idle, 1 writing, 2 reading.
    let mut phase = vec![0u8; slots];
    let mut gen = vec![0u64; slots];
    let (mut completions, mut aborted, mut failed) = (0u64, 0u64, 0u64);
    let mut done = Vec::with_capacity(1024);
    let start = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire) || qp.is_failed();
        for s in 0..slots {
            if phase[s] == 0 && !stopping {
                gen[s] += 1;
                fill(&mut wbufs[s], gen[s] * 1000 + s as u64 + base)?;
                let lba = base + 8 * s as u64;
                match qp.submit(IoRequest::write(1, lba, 8, wbufs[s].whole(), s as u64)) {
                    Ok(()) => phase[s] = 1,
                    Err(_) if allow_failure => {}
                    Err((e, _)) => return Err(e.to_string()),
                }
            }
        }
        done.clear();
        qp.poll(256, &mut |c| done.push(c));
        for c in &done {
            let s = c.ctx as usize;
            if phase[s] == 0 {
                return Err(format!(
                    "slot {s} completed while idle: a request completed twice"
                ));
            }
            completions += 1;
            let lba = base + 8 * s as u64;
            if c.status.is_success() {
                if phase[s] == 1 {
                    phase[s] = 2;
                    rbufs[s].fill(0);
                    if let Err((e, _)) =
                        qp.submit(IoRequest::read(1, lba, 8, rbufs[s].whole(), s as u64))
                    {
                        if !allow_failure {
                            return Err(e.to_string());
                        }
                        phase[s] = 0;
                    }
                } else {
                    if bytes(&wbufs[s]) != bytes(&rbufs[s]) {
                        return Err(format!(
                            "LBA {lba}: data read back differs from what was written"
                        ));
                    }
                    phase[s] = 0;
                }
            } else if c.status.is_path_error() && !qp.is_failed() {
                // Aborted by a reset: resubmit the same step.
                aborted += 1;
                let req = if phase[s] == 1 {
                    IoRequest::write(1, lba, 8, wbufs[s].whole(), s as u64)
                } else {
                    IoRequest::read(1, lba, 8, rbufs[s].whole(), s as u64)
                };
                if let Err((e, _)) = qp.submit(req) {
                    if !allow_failure {
                        return Err(e.to_string());
                    }
                    phase[s] = 0;
                    failed += 1;
                }
            } else if allow_failure {
                failed += 1;
                phase[s] = 0;
            } else {
                return Err(format!("LBA {lba}: {}", c.status));
            }
        }
        if stopping && phase.iter().all(|&p| p == 0) {
            break;
        }
        if start.elapsed() > DEADLINE {
            let open: Vec<usize> = (0..slots).filter(|&s| phase[s] != 0).collect();
            return Err(format!(
                "traffic did not drain within {DEADLINE:?}: slots {open:?} outstanding, {:?}",
                qp.stats()
            ));
        }
    }
    if qp.outstanding() != 0 {
        return Err(format!("{} requests never completed", qp.outstanding()));
    }
    Ok((completions, aborted, failed))
}

/// [`traffic`] on a thread of its own, with its own handle to the controller.
struct TrafficThread(std::thread::JoinHandle<R<(u64, u64, u64)>>);

impl TrafficThread {
    fn spawn(
        ctrl: &Controller,
        base: u64,
        slots: usize,
        stop: &Arc<AtomicBool>,
        allow_failure: bool,
    ) -> Self {
        let (c, s) = (ctrl.clone(), stop.clone());
        TrafficThread(std::thread::spawn(move || {
            traffic(&c, base, slots, &s, allow_failure)
        }))
    }

    /// Waits for the thread and returns what [`traffic`] returned.
    fn join(self) -> R<(u64, u64, u64)> {
        self.0
            .join()
            .map_err(|_| "traffic thread panicked".to_string())?
    }
}

fn threads(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<TrafficThread> = (0..2u64)
        .map(|t| TrafficThread::spawn(&ctrl, t * 100_000, 16, &stop, false))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Release);
    for (t, h) in handles.into_iter().enumerate() {
        let (n, _, _) = h.join()?;
        println!("threads: thread {t}: {n} verified completions");
        if n == 0 {
            return Err(format!("thread {t} completed nothing"));
        }
    }
    Ok(())
}

fn reset(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let stop = Arc::new(AtomicBool::new(false));
    let h = TrafficThread::spawn(&ctrl, 0, 32, &stop, false);
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        let t = Instant::now();
        ctrl.reset().map_err(|e| format!("reset {i}: {e}"))?;
        println!("reset: reset {i} took {} ms", t.elapsed().as_millis());
        if ctrl.state() != CtrlState::Live {
            return Err(format!("controller is {:?} after reset", ctrl.state()));
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Release);
    let (n, aborted, _) = h.join()?;
    println!("reset: {n} completions, {aborted} aborted by resets and resubmitted, data verified");
    Ok(())
}

fn unplug(bdf: &str, id: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let stop = Arc::new(AtomicBool::new(false));
    let h = TrafficThread::spawn(&ctrl, 0, 32, &stop, true);
    std::thread::sleep(Duration::from_secs(1));
    println!("{}", e2e::device_del_line(id));
    let start = Instant::now();
    while ctrl.process_admin() != CtrlState::Failed {
        if start.elapsed() > DEADLINE {
            stop.store(true, Ordering::Release);
            return Err(format!(
                "controller still {:?} {DEADLINE:?} after device_del",
                ctrl.state()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "unplug: controller failed after {} ms: {}",
        start.elapsed().as_millis(),
        ctrl.failure().unwrap_or_default()
    );
    stop.store(true, Ordering::Release);
    let (n, _, failed) = h.join()?;
    println!("unplug: {n} completions, {failed} completed with an error, none lost");
    // The device is released: the kernel finishes the unplug.
    let path = format!("/sys/bus/pci/devices/{bdf}");
    let t = Instant::now();
    while std::path::Path::new(&path).exists() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{bdf} still present 30 s after release: the device was not let go"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "unplug: {bdf} left the PCI bus {} ms after release",
        t.elapsed().as_millis()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["identify", bdf] => identify(bdf),
        ["rw", bdf] => rw(bdf),
        ["threads", bdf] => threads(bdf),
        ["reset", bdf] => reset(bdf),
        ["unplug", bdf, id] => unplug(bdf, id),
        _ => {
            eprintln!("usage: nvme-e2e-driver identify|rw|threads|reset BDF | unplug BDF QOM_ID");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => {
            println!("PASS {}", a[0]);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL {}: {e}", a[0]);
            ExitCode::FAILURE
        }
    }
}
