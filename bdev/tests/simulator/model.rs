// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The shadow model and the traffic of one channel: each slot writes its blocks with
//! a pattern of (channel, slot, sequence number), then reads them back. A read that
//! succeeds must return what the model allows: the last write that succeeded, or a
//! later write whose completion was an error (the device may have done it). Every
//! completion must match the one I/O out on its slot (exactly once; a context word
//! carries the channel, slot, sequence number and the read/write bit).

use nvme_bdev::{BdevCompletion, BdevIo, Channel, IoBuf};
use std::time::{Duration, Instant};

pub const BS: usize = 512;
pub const NLB: u32 = 8;
pub const SLOTS: usize = 12;

pub fn pattern(ch: usize, slot: usize, seq: u64, i: usize) -> u8 {
    (ch * 101 + slot * 7 + seq as usize * 13 + i * 3 + 1) as u8
}

/// The shadow model and the traffic of one channel.
pub struct Lane {
    pub index: usize,
    pub ch: Channel,
    pub wbufs: Vec<IoBuf>,
    pub rbufs: Vec<IoBuf>,
    /// Context word of the I/O out on each slot, or u64::MAX.
    pub out: Vec<u64>,
    pub seq: Vec<u64>,
    pub reading: Vec<bool>,
    /// Sequence numbers the slot's blocks may hold: the last write that succeeded
    /// (first), then writes that completed with an error since.
    pub allowed: Vec<Vec<u64>>,
    pub submitted: u64,
    pub completed: u64,
    pub errors: u64,
    pub checked_reads: u64,
    /// Completions that matched no I/O out (a second completion of one I/O).
    pub duplicated: u64,
    /// Reads that returned data the model does not allow.
    pub corrupted: u64,
    /// When the lane last made progress (a completion, or its first I/O going out
    /// while nothing was out).
    pub last_progress: Instant,
    /// The longest time I/O was out on this lane with no completion.
    pub longest_pause: Duration,
    pub failures: Vec<String>,
}

impl Lane {
    pub fn new(index: usize, ch: Channel, wbufs: Vec<IoBuf>, rbufs: Vec<IoBuf>) -> Lane {
        Lane {
            index,
            ch,
            wbufs,
            rbufs,
            out: vec![u64::MAX; SLOTS],
            seq: vec![0; SLOTS],
            reading: vec![false; SLOTS],
            // Blocks start zeroed: no write yet; the first read comes after a write.
            allowed: vec![Vec::new(); SLOTS],
            submitted: 0,
            completed: 0,
            errors: 0,
            checked_reads: 0,
            duplicated: 0,
            corrupted: 0,
            last_progress: Instant::now(),
            longest_pause: Duration::ZERO,
            failures: Vec::new(),
        }
    }

    fn lba(&self, slot: usize) -> u64 {
        ((self.index * SLOTS + slot) as u64) * NLB as u64
    }

    fn ctx(&self, slot: usize) -> u64 {
        (self.index as u64) << 56
            | (slot as u64) << 48
            | (self.seq[slot] & 0xffff_ffff) << 1
            | u64::from(self.reading[slot])
    }

    /// I/Os out on this lane.
    pub fn out_count(&self) -> usize {
        self.out.iter().filter(|&&o| o != u64::MAX).count()
    }

    pub fn issue(&mut self, slot: usize) {
        let ctx = self.ctx(slot);
        let seq = self.seq[slot];
        let io = if self.reading[slot] {
            self.rbufs[slot].fill(0);
            BdevIo::read(self.lba(slot), NLB, self.rbufs[slot].whole(), ctx)
        } else {
            let data: Vec<u8> = (0..self.wbufs[slot].len())
                .map(|i| pattern(self.index, slot, seq, i))
                .collect();
            self.wbufs[slot].write_at(0, &data).unwrap();
            BdevIo::write(self.lba(slot), NLB, self.wbufs[slot].whole(), ctx)
        };
        if self.out_count() == 0 {
            self.last_progress = Instant::now();
        }
        match self.ch.submit(io) {
            Ok(()) => {
                self.out[slot] = ctx;
                self.submitted += 1;
            }
            Err((e, _)) => self.failures.push(format!("submit refused: {e}")),
        }
    }

    fn on_done(&mut self, c: BdevCompletion, more: bool) {
        let slot = ((c.ctx >> 48) & 0xff) as usize;
        if (c.ctx >> 56) as usize != self.index || slot >= SLOTS || self.out[slot] != c.ctx {
            self.duplicated += 1;
            self.failures.push(format!(
                "completion {:#x} matches no I/O out (twice?)",
                c.ctx
            ));
            return;
        }
        self.out[slot] = u64::MAX;
        self.completed += 1;
        let seq = self.seq[slot];
        if self.reading[slot] {
            if c.status.is_success() {
                let mut got = vec![0u8; self.rbufs[slot].len()];
                self.rbufs[slot].read_at(0, &mut got).unwrap();
                let holds = self.allowed[slot].iter().copied().find(|&s| {
                    got.iter()
                        .enumerate()
                        .all(|(i, &b)| b == pattern(self.index, slot, s, i))
                });
                match holds {
                    Some(s) => self.allowed[slot] = vec![s],
                    None => {
                        self.corrupted += 1;
                        let found = (0..=seq).rev().find(|&s| {
                            got.iter()
                                .enumerate()
                                .all(|(i, &b)| b == pattern(self.index, slot, s, i))
                        });
                        self.failures.push(format!(
                            "channel {} slot {slot}: read {seq} returned the data of write \
                             {found:?}, not of a write the model allows ({:?})",
                            self.index, self.allowed[slot]
                        ))
                    }
                }
                self.checked_reads += 1;
            } else {
                self.errors += 1;
            }
            self.seq[slot] += 1;
        } else if c.status.is_success() {
            self.allowed[slot] = vec![seq];
        } else {
            // The device may or may not have written it.
            self.errors += 1;
            self.allowed[slot].push(seq);
        }
        self.reading[slot] = !self.reading[slot];
        if more {
            self.issue(slot);
        }
    }

    /// Polls the channel once, delivering completions to the model (and issuing the
    /// next I/O of each slot when `more`); tracks the longest pause.
    pub fn poll(&mut self, more: bool) -> usize {
        let mut got = Vec::with_capacity(SLOTS);
        let n = self.ch.poll(&mut |c| got.push(c));
        let now = Instant::now();
        if self.out_count() > 0 {
            self.longest_pause = self
                .longest_pause
                .max(now.duration_since(self.last_progress));
        }
        if n > 0 {
            self.last_progress = now;
        }
        for c in got {
            self.on_done(c, more);
        }
        n
    }
}
