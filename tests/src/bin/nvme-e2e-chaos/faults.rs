// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Firing one fault and waiting until it is over: the controller is back and usable,
//! or the media-error window is closed (both of its edges confirmed by probe I/O).

use crate::schedule::CONTROLLERS;
use crate::traffic::{CHUNK, PROBE_CHUNK};
use nvme_bdev::NvmeQueue;
use nvme_bdev::{BdevCompletion, BdevIo, BlockLayer, Channel, IoBuf, Multipath, Status};
use nvme_driver::clock;
use std::path::Path;
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

/// Waits, checking `cond` every 5 ms, at most `deadline`; returns how long it took.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> R<Duration> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > deadline {
            return Err(format!("{what}: not within {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(t.elapsed())
}

fn path_usable(mp: &Multipath<NvmeQueue>, bdf: &str) -> bool {
    mp.paths().iter().any(|p| p.name == bdf && p.state.usable())
}

/// Resets controller `ctrl` through the block layer; returns when the reset is done
/// and its path is usable again.
pub fn reset(layer: &BlockLayer, mp: &Multipath<NvmeQueue>, ctrl: usize) -> R<String> {
    let bdf = CONTROLLERS[ctrl].2;
    let (before, _) = layer
        .controller_counts(bdf)
        .ok_or_else(|| format!("{bdf} is not known to the block layer"))?;
    let t = Instant::now();
    layer.request_reset(bdf).map_err(|e| e.to_string())?;
    wait_for(
        &format!("the reset of {bdf}"),
        Duration::from_secs(30),
        || layer.controller_counts(bdf).is_some_and(|c| c.0 > before),
    )?;
    let done = t.elapsed();
    wait_for(
        &format!("{bdf} usable after its reset"),
        Duration::from_secs(10),
        || path_usable(mp, bdf),
    )?;
    Ok(format!(
        "reset done in {} ms, path usable after {} ms",
        done.as_millis(),
        t.elapsed().as_millis()
    ))
}

/// Unplugs controller `ctrl` (QMP `device_del`), waits until it has left the PCI bus,
/// `down_ms`, plugs it back on its root port (QMP `device_add`, sent again while QEMU
/// refuses the id it has not freed yet), binds it to vfio-pci with `nvme-setup bind`
/// (what a udev rule would do) and waits until the block layer has reconnected it and
/// its path is usable.
pub fn unplug_replug(
    layer: &BlockLayer,
    mp: &Multipath<NvmeQueue>,
    ctrl: usize,
    down_ms: u64,
) -> R<String> {
    let (id, port, bdf) = CONTROLLERS[ctrl];
    let (_, reconnects) = layer
        .controller_counts(bdf)
        .ok_or_else(|| format!("{bdf} is not known to the block layer"))?;
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    let t = Instant::now();
    println!("{}", e2e::device_del_line(id));
    let unusable = wait_for(
        &format!("{bdf}'s path to become unusable after device_del"),
        Duration::from_secs(40),
        || !path_usable(mp, bdf),
    )?;
    let gone = wait_for(
        &format!("{bdf} to leave the PCI bus (the device not let go?)"),
        Duration::from_secs(40),
        || !Path::new(&dev).exists(),
    )?;
    std::thread::sleep(Duration::from_millis(down_ms));
    let add = e2e::qmp_line(&format!(
        r#"{{"execute":"device_add","arguments":{{"driver":"nvme","id":"{id}","bus":"{port}","serial":"mpath0","subsys":"subsys0"}}}}"#
    ));
    let plugged = Instant::now();
    let mut present = false;
    for _ in 0..6 {
        println!("{add}");
        if wait_for("the device to appear", Duration::from_secs(5), || {
            Path::new(&dev).exists()
        })
        .is_ok()
        {
            present = true;
            break;
        }
    }
    if !present {
        return Err(format!("{bdf} did not appear within 30 s of device_add"));
    }
    let out = std::process::Command::new("nvme-setup")
        .args(["bind", bdf])
        .output()
        .map_err(|e| format!("running nvme-setup bind {bdf}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nvme-setup bind {bdf} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    wait_for(
        &format!("the block layer to reconnect {bdf}"),
        Duration::from_secs(40),
        || {
            layer
                .controller_counts(bdf)
                .is_some_and(|c| c.1 > reconnects)
                && path_usable(mp, bdf)
        },
    )?;
    Ok(format!(
        "path unusable {} ms after device_del, off the bus {} ms later; back and usable {} ms after device_add ({} s down in all)",
        unusable.as_millis(),
        gone.as_millis(),
        plugged.elapsed().as_millis(),
        t.elapsed().as_secs()
    ))
}

/// HMP `qemu-io` on the blkdebug node of disk d0 (qemu/run `--backing blkdebug`):
/// [`e2e::blkdebug::READS_FAIL`] (a write of zeroes) switches reads to failing,
/// [`WRITES_FAIL`](e2e::blkdebug::WRITES_FAIL) (an unaligned write that ends mid-block,
/// a read-modify-write of its tail) switches writes to failing, and
/// [`NO_ERRORS`](e2e::blkdebug::NO_ERRORS) (one that starts mid-block) switches both
/// back. All land in the probe chunk, which carries no traffic, and all write zeroes
/// (qemu/run's rules keep the switches' own I/O free of errors, so a read-modify-write
/// keeps the block's other bytes: see [`PROBE_SHADOW`]).
fn blkdebug_line(io: &str) -> String {
    e2e::blkdebug::switch_line(io)
}

/// The probe chunk's shadow: every byte 0. Its writers all write zeroes: the switches
/// above, and the write probes, whose buffer is zeroed before each.
pub const PROBE_SHADOW: u8 = 0;

/// The first byte of `data` that differs from the probe chunk's shadow.
pub fn probe_difference(data: &[u8]) -> Option<(usize, u8)> {
    data.iter()
        .position(|&b| b != PROBE_SHADOW)
        .map(|off| (off, data[off]))
}

/// Status QEMU's NVMe device returns for a failed read: Media and Data Integrity
/// Errors, Unrecovered Read Error (NVMe base spec 2.0, 4.2.3.2 Figure 108).
pub const UNRECOVERED_READ: (u8, u8) = (2, 0x81);
/// For a failed write: Media and Data Integrity Errors, Write Fault.
pub const WRITE_FAULT: (u8, u8) = (2, 0x80);

/// One I/O on the probe chunk, polled to completion. A write writes the shadow
/// (zeroes); a read that succeeds must bring the shadow back.
fn probe(ch: &mut Channel, buf: &mut IoBuf, write: bool) -> R<Status> {
    let lba = PROBE_CHUNK * (CHUNK as u64 / 512);
    let nlb = (CHUNK / 512) as u32;
    // Writes: what the shadow says, never what an earlier read left in the buffer.
    // Reads: a byte the device did not write stands out.
    buf.fill(if write { PROBE_SHADOW } else { 0xA5 });
    let io = if write {
        BdevIo::write(lba, nlb, buf.whole(), 1)
    } else {
        BdevIo::read(lba, nlb, buf.whole(), 1)
    };
    ch.submit(io)
        .map_err(|(e, _)| format!("probe refused: {e}"))?;
    ch.flush();
    let t = Instant::now();
    let mut done: Option<BdevCompletion> = None;
    while done.is_none() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err("a probe I/O did not complete within 30 s".into());
        }
        ch.poll(&mut |c| done = Some(c));
    }
    let status = done.map(|c| c.status).expect("loop ends with a completion");
    if !write && status.is_success() {
        let mut data = [0u8; CHUNK];
        buf.read_at(0, &mut data).map_err(|e| e.to_string())?;
        if let Some((off, found)) = probe_difference(&data) {
            return Err(format!(
                "a probe read of the probe chunk (LBA {lba}) found byte {off} at {found:#04x}, its shadow says {PROBE_SHADOW:#04x}"
            ));
        }
    }
    Ok(status)
}

/// A media-error window: errors on every read (`write` false) or write for about
/// `ms`. Returns when it opened and closed, in ns from `start` (ticks of the driver's
/// clock, the one the traffic threads time their I/O with): opened when the switch
/// was sent, closed when a probe of the same kind succeeded again after the switch
/// back. The probe must first see the error status (the window took effect).
pub fn media_window(
    bdev: &nvme_bdev::Bdev,
    probe_buf: &mut IoBuf,
    write: bool,
    ms: u64,
    start: u64,
) -> R<(u64, u64, String)> {
    let since_start = || clock::ticks_to_ns(clock::ticks().wrapping_sub(start));
    let want = if write { WRITE_FAULT } else { UNRECOVERED_READ };
    let on = if write {
        e2e::blkdebug::WRITES_FAIL
    } else {
        e2e::blkdebug::READS_FAIL
    };
    let off_cmd = e2e::blkdebug::NO_ERRORS;
    // The probes' own channel (a channel has queues of its own: one per window).
    let mut ch = bdev.channel().map_err(|e| e.to_string())?;
    let opened = since_start();
    println!("{}", blkdebug_line(on));
    let t = Instant::now();
    let mut first_error = None;
    while first_error.is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the media-error switch ({on}) had no effect within 20 s: is the backing blkdebug (qemu/run --backing blkdebug)?"
            ));
        }
        let st = probe(&mut ch, probe_buf, write)?;
        if !st.is_success() {
            if (st.sct(), st.sc()) != want {
                return Err(format!(
                    "a probe {} failed with {st}, not the media error expected",
                    if write { "write" } else { "read" }
                ));
            }
            first_error = Some(t.elapsed());
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_millis(ms));
    println!("{}", blkdebug_line(off_cmd));
    let off = Instant::now();
    loop {
        if off.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the switch back ({off_cmd}) had no effect within 20 s"
            ));
        }
        if probe(&mut ch, probe_buf, write)?.is_success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let closed = since_start();
    Ok((
        opened,
        closed,
        format!(
            "errors seen {} ms after the switch, gone {} ms after the switch back",
            first_error.unwrap_or_default().as_millis(),
            off.elapsed().as_millis()
        ),
    ))
}
