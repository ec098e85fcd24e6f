// SPDX-License-Identifier: Apache-2.0 OR MIT
//! One traffic thread: random 4 KiB reads and writes over its own half of the
//! namespace through its own channel of the multipath bdev, every read checked
//! against a shadow of what the thread last wrote there, every I/O accounted for.

use nvme_bdev::NvmeQueue;
use nvme_bdev::{BdevCompletion, BdevIo, BlockLayer, Channel, IoBuf, Multipath, Status};
use nvme_driver::clock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes per I/O and per shadow entry ("chunk"): 8 blocks of 512 bytes.
pub const CHUNK: usize = 4096;
/// Chunk 0 is the probes' (and blkdebug's switches write zeroes there): no traffic.
pub const PROBE_CHUNK: u64 = 0;
/// What is outstanding when traffic stops must complete within this.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// The 8 bytes at word `i` of chunk `chunk` after its `gen`th write (generation 0:
/// never written, zeroes). The chunk number is in every word, so data written to the
/// wrong place is caught too.
pub fn word(chunk: u64, gen: u32, i: usize) -> u64 {
    if gen == 0 {
        return 0;
    }
    ((chunk << 24) ^ u64::from(gen))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        | 1
}

/// The first word of `data` (one chunk) that differs from generation `gen`.
pub fn first_difference(chunk: u64, gen: u32, data: &[u8]) -> Option<(usize, u64, u64)> {
    data.chunks_exact(8).enumerate().find_map(|(i, w)| {
        let got = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let want = word(chunk, gen, i);
        (got != want).then_some((i * 8, want, got))
    })
}

/// What the main thread and the traffic threads share.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    /// A media-error window is open: failed I/O waits until it closes to be retried.
    pub media_window: AtomicBool,
    /// I/Os completed, all threads.
    pub completed: AtomicU64,
    /// Per thread: I/Os dispatched per path name (a path that comes back is a new
    /// instance with the same name), refreshed about every 100 ms.
    pub per_path: Mutex<Vec<BTreeMap<String, u64>>>,
    /// Per thread: I/Os in flight per path name now (refreshed with `per_path`).
    pub in_flight: Mutex<Vec<BTreeMap<String, u64>>>,
}

impl Shared {
    /// I/Os dispatched per path name, summed over the threads.
    pub fn per_path(&self) -> BTreeMap<String, u64> {
        Self::sum(&self.per_path)
    }

    /// I/Os in flight per path name, summed over the threads.
    pub fn in_flight(&self) -> BTreeMap<String, u64> {
        Self::sum(&self.in_flight)
    }

    fn sum(per_thread: &Mutex<Vec<BTreeMap<String, u64>>>) -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for t in per_thread.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (name, n) in t {
                *sum.entry(name.clone()).or_insert(0) += n;
            }
        }
        sum
    }
}

/// An I/O the application saw fail (after the channel's own retries and failovers).
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub write: bool,
    pub chunk: u64,
    pub status: Status,
    /// Nanoseconds from the start of traffic.
    pub submitted_ns: u64,
    pub completed_ns: u64,
}

/// What one traffic thread counted.
#[derive(Debug, Default)]
pub struct Report {
    pub submitted: u64,
    pub completed: u64,
    pub reads_checked: u64,
    pub writes: u64,
    /// Completions that named no I/O in flight (a second completion of one I/O).
    pub duplicates: u64,
    /// Reads whose data differed from the shadow.
    pub corrupted: u64,
    pub first_corruption: Option<String>,
    /// Submissions the channel refused.
    pub refused: u64,
    /// In flight when the drain deadline passed: lost.
    pub lost: u64,
    pub failures: Vec<Failure>,
    /// Longest time without a completion while I/O was in flight, and when it ended.
    pub longest_pause_ns: u64,
    pub longest_pause_at_ns: u64,
    /// Longest submit-to-completion time of one I/O (failovers included).
    pub longest_io_ns: u64,
    /// Longest time between two polls of this thread's loop: the thread itself not
    /// running (the guest's scheduler, or the emulator starved by the host). A
    /// completion pause about as long is not the driver's.
    pub longest_poll_gap_ns: u64,
    /// The channel's counters.
    pub failovers: u64,
    pub retries: u64,
    pub stray: u64,
    /// Generation of every chunk this thread owns (index: chunk number).
    pub gens: Vec<(u64, u32)>,
}

#[derive(Clone, Copy)]
struct Slot {
    write: bool,
    chunk: u64,
    /// For a write, the generation it writes; for a read, the one it expects.
    gen: u32,
    /// The ctx of the I/O in flight (u64::MAX: none).
    ctx: u64,
    seq: u64,
    submitted: u64,
    /// Failed: waits for the media window to close, then the same I/O goes again.
    parked: bool,
}

pub struct Traffic {
    pub thread: usize,
    pub threads: usize,
    pub ch: Channel,
    pub bufs: Vec<IoBuf>,
    pub chunks: u64,
    pub seed: u64,
    pub shared: Arc<Shared>,
    pub mp: Arc<Multipath<NvmeQueue>>,
    /// Ticks at the start of traffic (the clock shared by every thread).
    pub start: u64,
}

impl Traffic {
    pub fn buffers(layer: &BlockLayer, depth: usize) -> nvme_bdev::Result<Vec<IoBuf>> {
        (0..depth).map(|_| layer.alloc_buffer(CHUNK)).collect()
    }

    pub fn run(mut self) -> Result<Report, String> {
        let depth = self.bufs.len();
        let mut rng = crate::schedule::Rng::new(self.seed ^ (self.thread as u64 + 1) << 56);
        // This thread's chunks: thread, thread + threads, ... (never the probe chunk).
        let owned = (self.chunks - self.thread as u64).div_ceil(self.threads as u64);
        let mut gens = vec![0u32; owned as usize];
        let mut busy = vec![false; owned as usize];
        let mut r = Report::default();
        let mut slots = vec![
            Slot {
                write: false,
                chunk: 0,
                gen: 0,
                ctx: u64::MAX,
                seq: 0,
                submitted: 0,
                parked: false,
            };
            depth
        ];
        let (thread, threads, start) = (self.thread as u64, self.threads as u64, self.start);
        let index = |chunk: u64| (chunk / threads) as usize;
        let ns = |t: u64| clock::ticks_to_ns(t.wrapping_sub(start));
        let pick = |rng: &mut crate::schedule::Rng, busy: &mut [bool]| loop {
            let k = rng.below(owned);
            let chunk = k * threads + thread;
            if chunk != PROBE_CHUNK && !busy[k as usize] {
                busy[k as usize] = true;
                return chunk;
            }
        };
        let mut got: Vec<BdevCompletion> = Vec::with_capacity(depth * 2);
        let mut last_completion = clock::ticks();
        let mut last_poll = last_completion;
        let mut last_publish = Instant::now();
        let mut names: BTreeMap<u64, String> = BTreeMap::new();
        // Per path instance: I/Os dispatched, kept when the instance is gone.
        let mut counted: BTreeMap<u64, u64> = BTreeMap::new();
        let mut outstanding = 0usize;
        // Completions already added to `Shared::completed`.
        let mut published = 0u64;

        for (s, slot) in slots.iter_mut().enumerate() {
            let chunk = pick(&mut rng, &mut busy);
            let write = rng.below(2) == 0;
            slot.chunk = chunk;
            slot.write = write;
            slot.gen = gens[index(chunk)] + u32::from(write);
            self.submit(s, slot, &mut r)?;
            outstanding += 1;
        }
        self.ch.flush();
        let mut drain_started: Option<Instant> = None;
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            if stopping && drain_started.is_none() {
                drain_started = Some(Instant::now());
            }
            // Failed I/O goes again once no media window is open.
            if !stopping && !self.shared.media_window.load(Ordering::Acquire) {
                for (s, slot) in slots.iter_mut().enumerate() {
                    if slot.parked {
                        slot.parked = false;
                        self.submit(s, slot, &mut r)?;
                        outstanding += 1;
                    }
                }
            }
            if outstanding == 0 {
                last_completion = clock::ticks();
            }
            got.clear();
            let polled = clock::ticks();
            r.longest_poll_gap_ns = r
                .longest_poll_gap_ns
                .max(clock::ticks_to_ns(polled.wrapping_sub(last_poll)));
            last_poll = polled;
            self.ch.poll(&mut |c| got.push(c));
            if !got.is_empty() {
                let now = clock::ticks();
                let gap = clock::ticks_to_ns(now.wrapping_sub(last_completion));
                if gap > r.longest_pause_ns {
                    r.longest_pause_ns = gap;
                    r.longest_pause_at_ns = ns(now);
                }
                last_completion = now;
            }
            for c in got.drain(..) {
                let s = (c.ctx >> 40) as usize;
                if s >= depth || slots[s].ctx != c.ctx {
                    r.duplicates += 1;
                    continue;
                }
                let now = clock::ticks();
                let slot = &mut slots[s];
                slot.ctx = u64::MAX;
                outstanding -= 1;
                r.completed += 1;
                r.longest_io_ns = r
                    .longest_io_ns
                    .max(clock::ticks_to_ns(now.wrapping_sub(slot.submitted)));
                if !c.status.is_success() {
                    r.failures.push(Failure {
                        write: slot.write,
                        chunk: slot.chunk,
                        status: c.status,
                        submitted_ns: ns(slot.submitted),
                        completed_ns: ns(now),
                    });
                    // The same I/O again later (a write leaves the chunk busy: nothing
                    // reads it until the write has succeeded).
                    slot.parked = !stopping;
                    if stopping {
                        busy[index(slot.chunk)] = false;
                    }
                    continue;
                }
                let k = index(slot.chunk);
                if slot.write {
                    r.writes += 1;
                    gens[k] = slot.gen;
                } else {
                    r.reads_checked += 1;
                    let mut data = [0u8; CHUNK];
                    self.bufs[s]
                        .read_at(0, &mut data)
                        .map_err(|e| e.to_string())?;
                    if let Some((off, want, found)) = first_difference(slot.chunk, slot.gen, &data)
                    {
                        r.corrupted += 1;
                        r.first_corruption.get_or_insert_with(|| {
                            format!(
                                "chunk {} (LBA {}) byte {off}: expected {want:#018x} (generation {}), found {found:#018x}",
                                slot.chunk,
                                slot.chunk * 8,
                                slot.gen
                            )
                        });
                    }
                }
                busy[k] = false;
                if stopping {
                    continue;
                }
                let chunk = pick(&mut rng, &mut busy);
                let write = rng.below(2) == 0;
                slot.chunk = chunk;
                slot.write = write;
                slot.gen = gens[index(chunk)] + u32::from(write);
                self.submit(s, slot, &mut r)?;
                outstanding += 1;
            }
            self.ch.flush();
            self.shared
                .completed
                .fetch_add(r.completed - published, Ordering::Relaxed);
            published = r.completed;
            if last_publish.elapsed() >= Duration::from_millis(100) || stopping {
                last_publish = Instant::now();
                self.publish(&mut names, &mut counted);
            }
            if let Some(t) = drain_started {
                if outstanding == 0 || t.elapsed() > DRAIN_DEADLINE {
                    break;
                }
            }
        }
        r.lost = outstanding as u64;
        if let Channel::Mpath(c) = &self.ch {
            let st = c.stats();
            r.failovers = st.failovers;
            r.retries = st.retries;
            r.stray = st.stray_completions;
        }
        r.gens = gens
            .iter()
            .enumerate()
            .map(|(k, &g)| (k as u64 * self.threads as u64 + self.thread as u64, g))
            .collect();
        Ok(r)
    }

    fn submit(&mut self, s: usize, slot: &mut Slot, r: &mut Report) -> Result<(), String> {
        slot.seq += 1;
        let ctx = (s as u64) << 40 | (slot.seq & ((1 << 40) - 1));
        let lba = slot.chunk * (CHUNK as u64 / 512);
        let buf = &mut self.bufs[s];
        let io = if slot.write {
            let mut data = [0u8; CHUNK];
            for (i, w) in data.chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&word(slot.chunk, slot.gen, i).to_le_bytes());
            }
            buf.write_at(0, &data).map_err(|e| e.to_string())?;
            BdevIo::write(lba, (CHUNK / 512) as u32, buf.whole(), ctx)
        } else {
            buf.fill(0xA5);
            BdevIo::read(lba, (CHUNK / 512) as u32, buf.whole(), ctx)
        };
        slot.submitted = clock::ticks();
        match self.ch.submit(io) {
            Ok(()) => {
                slot.ctx = ctx;
                r.submitted += 1;
                Ok(())
            }
            Err((e, _)) => {
                r.refused += 1;
                Err(format!(
                    "thread {}: the channel refused an I/O on chunk {}: {e}",
                    self.thread, slot.chunk
                ))
            }
        }
    }

    /// Refreshes this thread's per-path counts in [`Shared::per_path`].
    fn publish(&self, names: &mut BTreeMap<u64, String>, counted: &mut BTreeMap<u64, u64>) {
        let Channel::Mpath(c) = &self.ch else { return };
        for p in self.mp.paths() {
            names.entry(p.id).or_insert(p.name);
        }
        let mut in_flight = BTreeMap::new();
        for ps in c.path_stats() {
            counted.insert(ps.id, ps.submitted);
            let name = names
                .get(&ps.id)
                .cloned()
                .unwrap_or_else(|| format!("path {}", ps.id));
            *in_flight.entry(name).or_insert(0) += ps.inflight;
        }
        let mut by_name = BTreeMap::new();
        for (id, n) in counted.iter() {
            let name = names
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("path {id}"));
            *by_name.entry(name).or_insert(0) += n;
        }
        let mut all = self
            .shared
            .per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if all.len() < self.threads {
            all.resize(self.threads, BTreeMap::new());
        }
        all[self.thread] = by_name;
        drop(all);
        let mut all = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if all.len() < self.threads {
            all.resize(self.threads, BTreeMap::new());
        }
        all[self.thread] = in_flight;
    }
}
