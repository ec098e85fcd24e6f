// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The traffic thread: 32 slots, each writing its own block range with a fresh
//! pattern, reading it back and comparing, over and over, through one multipath
//! channel; counted per phase and per path name.

use super::{AFTER, BLOCKS_PER_IO, DRAIN_DEADLINE, R, SLOTS};
use nvme_bdev::NvmeQueue;
use nvme_bdev::{BdevCompletion, BdevIo, Channel, IoBuf, Multipath};
use nvme_driver::clock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Default, Clone)]
pub(super) struct Report {
    pub(super) submitted: u64,
    pub(super) completed: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) mismatches: u64,
    pub(super) first_mismatch: Option<String>,
    pub(super) duplicates: u64,
    pub(super) refused: u64,
    pub(super) leftover: usize,
    /// Per phase: completions, longest pause between completions, longest submit (ns).
    pub(super) phase_completions: [u64; 5],
    /// Per phase: I/Os the channel re-dispatched after a path error.
    pub(super) phase_failovers: [u64; 5],
    pub(super) longest_gap_ns: [u64; 5],
    pub(super) longest_submit_ns: [u64; 5],
    /// I/Os dispatched per path name in the last phase ("after").
    pub(super) after_per_path: Vec<(String, u64)>,
    /// Per path name: I/Os dispatched, path errors (summed over the run).
    pub(super) paths: Vec<(String, u64, u64)>,
    pub(super) failovers: u64,
    pub(super) queued_high_water: u64,
    pub(super) stray_completions: u64,
}

fn pattern(slot: usize, seq: u64, i: usize) -> u8 {
    (slot.wrapping_mul(31) ^ (seq as usize).wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

pub(super) struct Traffic {
    pub(super) ch: Channel,
    pub(super) wbufs: Vec<IoBuf>,
    pub(super) rbufs: Vec<IoBuf>,
    pub(super) out: Vec<u64>,
    pub(super) seq: Vec<u64>,
    pub(super) reading: Vec<bool>,
    pub(super) r: Report,
    pub(super) phase: Arc<AtomicUsize>,
    /// The phase the traffic thread counts in now (it follows `phase` before each poll).
    pub(super) phase_seen: Arc<AtomicUsize>,
    pub(super) names: Vec<(u64, String)>,
    /// Per path id: counters carried over from paths that were retired.
    pub(super) seen: Vec<(u64, u64, u64)>,
    /// The channel's failover count when the current phase began.
    pub(super) failovers_at_phase: u64,
    /// Where path names come from: a path that comes back has a new instance id.
    pub(super) mp: Arc<Multipath<NvmeQueue>>,
    /// Per path id: I/Os dispatched when the last phase began.
    pub(super) at_after: Vec<(u64, u64)>,
}

impl Traffic {
    fn lba(slot: usize) -> u64 {
        slot as u64 * BLOCKS_PER_IO as u64
    }

    fn issue(&mut self, slot: usize) -> R<()> {
        let seq = self.seq[slot];
        let ctx = (slot as u64) << 32 | (seq << 1) | u64::from(self.reading[slot]);
        let io = if self.reading[slot] {
            self.rbufs[slot].fill(0);
            BdevIo::read(
                Self::lba(slot),
                BLOCKS_PER_IO,
                self.rbufs[slot].whole(),
                ctx,
            )
        } else {
            let len = self.wbufs[slot].len();
            let data: Vec<u8> = (0..len).map(|i| pattern(slot, seq, i)).collect();
            self.wbufs[slot]
                .write_at(0, &data)
                .map_err(|e| e.to_string())?;
            BdevIo::write(
                Self::lba(slot),
                BLOCKS_PER_IO,
                self.wbufs[slot].whole(),
                ctx,
            )
        };
        let ph = self.phase.load(Ordering::Relaxed);
        let t0 = clock::ticks();
        let res = self.ch.submit(io);
        let ns = clock::ticks_to_ns(clock::ticks().wrapping_sub(t0));
        self.r.longest_submit_ns[ph] = self.r.longest_submit_ns[ph].max(ns);
        match res {
            Ok(()) => {
                self.out[slot] = ctx;
                self.r.submitted += 1;
                Ok(())
            }
            Err((e, _)) => {
                self.r.refused += 1;
                Err(format!("submit refused on slot {slot}: {e}"))
            }
        }
    }

    fn on_done(&mut self, c: BdevCompletion, stopping: bool) -> R<()> {
        let slot = (c.ctx >> 32) as usize;
        if slot >= SLOTS || self.out[slot] != c.ctx {
            self.r.duplicates += 1;
            return Ok(());
        }
        self.out[slot] = u64::MAX;
        self.r.completed += 1;
        if !c.status.is_success() {
            self.r.errors += 1;
            if self.r.first_error.is_none() {
                self.r.first_error = Some(format!(
                    "slot {slot} {}: {}",
                    if self.reading[slot] { "read" } else { "write" },
                    c.status
                ));
            }
            // Do the same step again (the write, or the read of what was written).
            if !stopping {
                self.issue(slot)?;
            }
            return Ok(());
        }
        if self.reading[slot] {
            let mut got = vec![0u8; self.rbufs[slot].len()];
            self.rbufs[slot]
                .read_at(0, &mut got)
                .map_err(|e| e.to_string())?;
            let seq = self.seq[slot];
            if let Some(i) = got
                .iter()
                .enumerate()
                .position(|(i, &b)| b != pattern(slot, seq, i))
            {
                self.r.mismatches += 1;
                if self.r.first_mismatch.is_none() {
                    self.r.first_mismatch = Some(format!(
                        "LBA {} byte {i}: expected {:#04x}, found {:#04x}",
                        Self::lba(slot),
                        pattern(slot, seq, i),
                        got[i]
                    ));
                }
            }
            self.seq[slot] += 1;
        }
        self.reading[slot] = !self.reading[slot];
        if !stopping {
            self.issue(slot)?;
        }
        Ok(())
    }

    fn failovers(&self) -> u64 {
        match &self.ch {
            Channel::Mpath(c) => c.stats().failovers,
            _ => 0,
        }
    }

    /// Ends phase `ph` for the per-phase failover count.
    fn close_phase(&mut self, ph: usize) {
        let f = self.failovers();
        self.r.phase_failovers[ph] += f - self.failovers_at_phase;
        self.failovers_at_phase = f;
    }

    fn collect_paths(&mut self) {
        for p in self.mp.paths() {
            if !self.names.iter().any(|(id, _)| *id == p.id) {
                self.names.push((p.id, p.name));
            }
        }
        if let Channel::Mpath(c) = &self.ch {
            for ps in c.path_stats() {
                match self.seen.iter_mut().find(|s| s.0 == ps.id) {
                    Some(s) => {
                        s.1 = ps.submitted;
                        s.2 = ps.path_errors;
                    }
                    None => self.seen.push((ps.id, ps.submitted, ps.path_errors)),
                }
            }
        }
    }

    pub(super) fn run(mut self, stop: &AtomicBool, progress: &AtomicU64) -> R<Report> {
        for slot in 0..SLOTS {
            self.issue(slot)?;
        }
        self.ch.flush();
        let mut last = clock::ticks();
        let mut got = Vec::with_capacity(SLOTS * 2);
        let mut last_phase = 0;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            // The phase before the poll: what the poll sees (failovers of I/O a reset
            // just aborted) belongs to the phase that caused it.
            let ph = self.phase.load(Ordering::Acquire);
            if ph != last_phase {
                self.collect_paths();
                if ph == AFTER {
                    self.at_after = self.seen.iter().map(|s| (s.0, s.1)).collect();
                }
                self.close_phase(last_phase);
                last_phase = ph;
                self.phase_seen.store(ph, Ordering::Release);
            }
            got.clear();
            self.ch.poll(&mut |c| got.push(c));
            if !got.is_empty() {
                let now = clock::ticks();
                let gap = clock::ticks_to_ns(now.wrapping_sub(last));
                self.r.longest_gap_ns[ph] = self.r.longest_gap_ns[ph].max(gap);
                last = now;
                self.r.phase_completions[ph] += got.len() as u64;
                for &c in &got {
                    self.on_done(c, stopping)?;
                }
                self.ch.flush();
                progress.store(self.r.completed, Ordering::Relaxed);
            }
            if stopping {
                break;
            }
        }
        // Drain: nothing new starts; what is outstanding completes.
        let t = Instant::now();
        while self.ch.outstanding() > 0 {
            if t.elapsed() > DRAIN_DEADLINE {
                break;
            }
            got.clear();
            self.ch.poll(&mut |c| got.push(c));
            for &c in &got {
                self.on_done(c, true)?;
            }
        }
        self.r.leftover = self.out.iter().filter(|&&o| o != u64::MAX).count();
        self.collect_paths();
        self.close_phase(last_phase);
        if let Channel::Mpath(c) = &self.ch {
            let st = c.stats();
            self.r.failovers = st.failovers;
            self.r.queued_high_water = st.queued_high_water;
            self.r.stray_completions = st.stray_completions;
        }
        for (id, sub, perr) in &self.seen {
            let name = self
                .names
                .iter()
                .find(|(i, _)| i == id)
                .map_or_else(|| format!("path {id}"), |(_, n)| n.clone());
            let before = self.at_after.iter().find(|a| a.0 == *id).map_or(0, |a| a.1);
            match self.r.after_per_path.iter_mut().find(|a| a.0 == name) {
                Some(a) => a.1 += sub - before,
                None => self.r.after_per_path.push((name.clone(), sub - before)),
            }
            self.r.paths.push((name, *sub, *perr));
        }
        Ok(self.r)
    }
}
