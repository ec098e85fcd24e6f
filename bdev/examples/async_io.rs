// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Block I/O as futures, with a minimal executor per core and no runtime crate
//! (run it: `cargo run -p nvme-bdev --example async_io`).
//!
//! Two software controllers share a namespace, so the layer makes a multipath bdev
//! of it. Each of two threads (a core each, in a server) makes its own channel to the
//! bdev, wraps it in an `AsyncChannel`, and runs eight tasks on a tiny executor: each
//! task writes its own blocks, reads them back and compares. The executor polls a
//! task only when its waker ran, and polls the channel between rounds: that poll is
//! what completes the futures and wakes their tasks. Eight tasks on a channel of four
//! slots (`SLOTS`): futures that find it busy wait for room, in order, and are not polled until
//! their I/O is done.

use nvme_bdev::{AsyncChannel, AsyncStats, Bdev, BlockLayer, IoBuf, LayerOptions, MpathOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

const BLOCK: usize = 512;
const NLB: u32 = 8;
/// Slots of each channel (the multipath channel's depth, and the async channel's).
const SLOTS: usize = 4;
/// Tasks per core.
const CLIENTS: u64 = 8;
const ROUNDS: u32 = 100;

/// What a task's waker sets: "poll me again".
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `tasks` to completion on this thread: polls each task when its waker has run
/// (and once at the start), then polls the channel, which completes I/O and runs the
/// wakers. Gives up after `limit`.
fn run(
    ch: &AsyncChannel,
    tasks: &mut [Pin<&mut dyn Future<Output = ()>>],
    limit: Duration,
) -> Result<(), String> {
    let flags: Vec<Arc<Woken>> = (0..tasks.len())
        .map(|_| Arc::new(Woken(AtomicBool::new(true))))
        .collect();
    let wakers: Vec<Waker> = flags.iter().map(|f| Waker::from(f.clone())).collect();
    let mut done = vec![false; tasks.len()];
    let deadline = Instant::now() + limit;
    while done.iter().any(|d| !d) {
        for (i, task) in tasks.iter_mut().enumerate() {
            if !done[i] && flags[i].0.swap(false, Ordering::AcqRel) {
                let mut cx = Context::from_waker(&wakers[i]);
                done[i] = task.as_mut().poll(&mut cx).is_ready();
            }
        }
        ch.poll();
        if Instant::now() > deadline {
            return Err(format!("tasks not done after {limit:?}: {ch:?}"));
        }
    }
    Ok(())
}

// [client]
/// Writes a pattern to its own blocks, reads it back and compares, `ROUNDS` times.
async fn client(
    ch: &AsyncChannel,
    id: u64,
    mut wbuf: IoBuf,
    mut rbuf: IoBuf,
) -> Result<(), String> {
    let slba = id * u64::from(NLB);
    let mut data = [0u8; BLOCK * NLB as usize];
    for round in 0..ROUNDS {
        data.fill((id as u8) ^ (round as u8));
        wbuf.write_at(0, &data).map_err(text)?;
        let (buf, result) = ch.write(slba, NLB, wbuf).await;
        wbuf = buf;
        let status = result.map_err(text)?;
        if !status.is_success() {
            return Err(format!("client {id}: write failed: {status:?}"));
        }
        let (buf, result) = ch.read(slba, NLB, rbuf).await;
        rbuf = buf;
        let status = result.map_err(text)?;
        if !status.is_success() {
            return Err(format!("client {id}: read failed: {status:?}"));
        }
        let mut back = [0u8; BLOCK * NLB as usize];
        rbuf.read_at(0, &mut back).map_err(text)?;
        if back != data {
            return Err(format!("client {id}, round {round}: read back differs"));
        }
    }
    Ok(())
}
// [client]

/// One core: its own channel to the bdev, its clients, its executor. Set-up (the
/// channel, the buffers) happens on the core's thread before the loop starts.
fn core(core: u64, bdev: &Bdev, layer: &BlockLayer) -> Result<AsyncStats, String> {
    let ch = AsyncChannel::new(bdev.channel().map_err(text)?, SLOTS);
    let failed = Cell::new(None);
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let wbuf = layer.alloc_buffer(BLOCK * NLB as usize).map_err(text)?;
        let rbuf = layer.alloc_buffer(BLOCK * NLB as usize).map_err(text)?;
        let (ch, failed) = (&ch, &failed);
        tasks.push(Box::pin(async move {
            if let Err(e) = client(ch, core * 100 + t, wbuf, rbuf).await {
                failed.set(Some(e));
            }
        }));
    }
    let mut pinned: Vec<Pin<&mut dyn Future<Output = ()>>> = tasks
        .iter_mut()
        .map(|t| t.as_mut() as Pin<&mut dyn Future<Output = ()>>)
        .collect();
    run(&ch, &mut pinned, Duration::from_secs(30))?;
    match failed.take() {
        Some(e) => Err(e),
        None => Ok(ch.stats()),
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ns = Arc::new(Namespace::new(1, 1 << 12, BLOCK as u32)?);
    let soft = |name: &str, cntlid| {
        SoftController::start(SoftConfig {
            name: name.into(),
            subnqn: "nqn.2024-01.org.example:async".into(),
            cntlid,
            namespaces: vec![ns.clone()],
            ..SoftConfig::default()
        })
    };
    let layer = BlockLayer::new(LayerOptions {
        // Few slots per channel, so that some futures find it busy.
        mpath: MpathOptions {
            channel_depth: SLOTS,
            ..MpathOptions::default()
        },
        ..LayerOptions::default()
    })?;
    layer.attach_bus("c0", soft("c0", 1))?;
    let names = layer.attach_bus("c1", soft("c1", 2))?;
    // Per namespace: the namespace bdev, then the multipath bdev.
    let bdev = layer.open(&names[1])?;
    std::thread::scope(|s| {
        let cores: Vec<_> = (0..2)
            .map(|c| {
                let (bdev, layer) = (&bdev, &layer);
                s.spawn(move || core(c, bdev, layer))
            })
            .collect();
        for (c, thread) in cores.into_iter().enumerate() {
            let stats = thread.join().expect("a core's thread panicked")?;
            println!("core {c}: {stats:?}");
        }
        Ok::<_, String>(())
    })?;
    println!("every read matched what was written");
    Ok(())
}
