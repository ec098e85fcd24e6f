// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Guest side of the durability check: acknowledged writes followed by a completed
//! Flush survive QEMU being killed.
//!
//! ```text
//! nvme-e2e-durable write BDF NONCE   write a log of 4 KiB records until killed
//! nvme-e2e-durable check BDF NONCE N read records 0..N back and check them
//! ```
//!
//! `write` writes record `s` (4 KiB, every byte derived from NONCE and `s`) to block
//! range `s` of namespace 1, 32 writes in flight. Every 256 records it waits for those
//! writes to complete, then submits a Flush (NVMe base 2.0, 7.1: the data of completed
//! writes is made non-volatile) and, once that completes, prints `durable N NONCE`:
//! records 0..N completed before a Flush that completed. When the namespace is full
//! it prints `full` and waits to be killed; it never exits on its own (a run that ends
//! was not killed, and the host test says so).
//!
//! `check` reads records 0..N of the same NONCE after the next boot and compares every
//! byte; prints `PASS durable N records` or the first record that differs.
//!
//! The host (tests/tests/durability.rs) kills QEMU with SIGKILL (`qemu/run
//! --kill-after`) at a moment drawn from a seed. What the guest printed last before the
//! kill is what must be on the disk.

use nvme_driver::vfio::VfioBus;
use nvme_driver::{Controller, ControllerOptions, DmaBuf, IoQpair, IoRequest, QpairOptions};
use std::process::ExitCode;
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

const RECORD: usize = 4096;
const DEPTH: usize = 32;
/// Records between flushes.
const BATCH: u64 = 256;
const DEADLINE: Duration = Duration::from_secs(30);
/// `ctx` of the Flush; writes carry their record number.
const FLUSH_CTX: u64 = u64::MAX;

fn record(nonce: u64, seq: u64, out: &mut [u8]) {
    let mut x = (nonce ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&nonce.to_le_bytes());
    for chunk in out[16..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn open(bdf: &str) -> R<(Controller, IoQpair, u32, u64)> {
    let bus = VfioBus::open(bdf).map_err(|e| e.to_string())?;
    let ctrl = Controller::init(bus, ControllerOptions::default()).map_err(|e| e.to_string())?;
    let ns = ctrl.namespace(1).map_err(|e| e.to_string())?;
    let block = ns.block_size;
    if !RECORD.is_multiple_of(block as usize) {
        return Err(format!("block size {block} does not divide {RECORD}"));
    }
    let blocks_per_record = (RECORD / block as usize) as u32;
    let records = ns.nsze / u64::from(blocks_per_record);
    let qp = ctrl
        .create_io_qpair(QpairOptions::default())
        .map_err(|e| e.to_string())?;
    Ok((ctrl, qp, blocks_per_record, records))
}

/// Polls until `want` more completions came (each checked by `on`), within DEADLINE.
fn wait(qp: &mut IoQpair, want: usize, on: &mut impl FnMut(u64) -> R<()>) -> R<()> {
    let t = Instant::now();
    let mut got = 0;
    let mut err = None;
    while got < want {
        if t.elapsed() > DEADLINE {
            return Err(format!("{got} of {want} completions within {DEADLINE:?}"));
        }
        qp.poll(64, &mut |c| {
            got += 1;
            if !c.status.is_success() {
                err.get_or_insert(format!("ctx {:#x}: {}", c.ctx, c.status));
            } else if let Err(e) = on(c.ctx) {
                err.get_or_insert(e);
            }
        });
        if let Some(e) = err.take() {
            return Err(e);
        }
    }
    Ok(())
}

fn write(bdf: &str, nonce: u64) -> R<()> {
    let (ctrl, mut qp, bpr, records) = open(bdf)?;
    println!("writing {records} records of {RECORD} bytes, nonce {nonce:#x}");
    let mut bufs: Vec<DmaBuf> = (0..DEPTH)
        .map(|_| ctrl.alloc_buffer(RECORD).map_err(|e| e.to_string()))
        .collect::<R<_>>()?;
    let mut data = vec![0u8; RECORD];
    // Buffers not in use; a write's ctx is its record number << 8 | its buffer.
    let mut free: Vec<usize> = (0..DEPTH).collect();
    let mut next = 0u64;
    while next < records {
        let end = (next + BATCH).min(records);
        let mut issued = next;
        let mut done = next;
        while done < end {
            while issued < end {
                let Some(slot) = free.pop() else { break };
                record(nonce, issued, &mut data);
                bufs[slot].write_at(0, &data).map_err(|e| e.to_string())?;
                qp.submit(IoRequest::write(
                    1,
                    issued * u64::from(bpr),
                    bpr,
                    bufs[slot].whole(),
                    issued << 8 | slot as u64,
                ))
                .map_err(|(e, _)| e.to_string())?;
                issued += 1;
            }
            qp.flush();
            wait(&mut qp, 1, &mut |ctx| {
                if ctx == FLUSH_CTX {
                    return Err("a Flush completed with no Flush out".into());
                }
                free.push((ctx & 0xff) as usize);
                done += 1;
                Ok(())
            })?;
        }
        qp.submit(IoRequest::flush(1, FLUSH_CTX))
            .map_err(|(e, _)| e.to_string())?;
        qp.flush();
        wait(&mut qp, 1, &mut |ctx| {
            if ctx == FLUSH_CTX {
                Ok(())
            } else {
                Err(format!("expected the Flush, got ctx {ctx}"))
            }
        })?;
        next = end;
        println!("durable {next} {nonce:#x}");
    }
    println!("full");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn check(bdf: &str, nonce: u64, n: u64) -> R<()> {
    let (ctrl, mut qp, bpr, records) = open(bdf)?;
    if n > records {
        return Err(format!("{n} records asked, the namespace holds {records}"));
    }
    let buf = ctrl.alloc_buffer(RECORD).map_err(|e| e.to_string())?;
    let mut want = vec![0u8; RECORD];
    let mut got = vec![0u8; RECORD];
    for seq in 0..n {
        qp.submit(IoRequest::read(
            1,
            seq * u64::from(bpr),
            bpr,
            buf.whole(),
            seq,
        ))
        .map_err(|(e, _)| e.to_string())?;
        qp.flush();
        wait(&mut qp, 1, &mut |_| Ok(()))?;
        buf.read_at(0, &mut got).map_err(|e| e.to_string())?;
        record(nonce, seq, &mut want);
        if got != want {
            let found_seq = u64::from_le_bytes(got[..8].try_into().unwrap());
            let found_nonce = u64::from_le_bytes(got[8..16].try_into().unwrap());
            let byte = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "record {seq} differs from byte {byte}: it holds record {found_seq} of nonce \
                 {found_nonce:#x} (an acknowledged, flushed write was lost)"
            ));
        }
    }
    println!("PASS durable {n} records");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |s: &String| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", bdf, nonce] => match parse(&nonce.to_string()) {
            Some(nonce) => write(bdf, nonce),
            None => Err(format!("nonce {nonce}: hexadecimal expected")),
        },
        ["check", bdf, nonce, n] => match (parse(&nonce.to_string()), n.parse()) {
            (Some(nonce), Ok(n)) => check(bdf, nonce, n),
            _ => Err("check BDF NONCE N: NONCE hexadecimal, N a count".into()),
        },
        _ => {
            eprintln!("usage: nvme-e2e-durable write BDF NONCE | check BDF NONCE N");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAIL durable: {e}");
            ExitCode::FAILURE
        }
    }
}
