// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O statistics per bdev and per path, readable from any thread while I/O runs
//! (SPDK's `bdev_get_iostat`).
//!
//! A channel counts what it does in plain fields on its own core (the submit path adds
//! two increments; completions, errors, failovers and retries are counters the channel
//! keeps anyway) and publishes them to a board of atomics: at its periodic
//! full poll (every 1024 polls for a multipath channel, every [`PUBLISH_EVERY`] for a
//! namespace channel) and when it closes. Only the owning core writes a board, with
//! plain stores; readers sum the boards of a bdev's open channels and what its closed
//! channels left. So a reader never stops I/O and the submit path never touches a
//! shared cache line; the price is that the figures of a channel that is still open
//! lag its own by up to one publication (exact once it has closed, or through the
//! owner's [`Channel::iostat`](crate::Channel::iostat)). Each counter read is
//! consistent; two counters read together may be one publication apart.

use crate::sync::lock_std as lock;
use nvme_driver::IoOp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How often a namespace bdev's channel publishes its counters, in polls.
pub const PUBLISH_EVERY: u32 = 1024;

/// What a bdev, or one channel of it, has done. Operations are counted when a
/// submit accepts them, completions and errors when they are delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStat {
    /// Reads accepted.
    pub read_ops: u64,
    /// Bytes those reads asked for.
    pub read_bytes: u64,
    /// Writes accepted.
    pub write_ops: u64,
    /// Bytes those writes carried.
    pub write_bytes: u64,
    /// Flushes accepted.
    pub flush_ops: u64,
    /// Write Zeroes accepted.
    pub write_zeroes_ops: u64,
    /// Bytes they zeroed.
    pub write_zeroes_bytes: u64,
    /// Unmaps (Dataset Management, deallocate) accepted.
    pub unmap_ops: u64,
    /// Bytes they unmapped.
    pub unmap_bytes: u64,
    /// I/Os delivered to the submitter (successful or not).
    pub completed: u64,
    /// Of those, delivered with an error status.
    pub errors: u64,
    /// Times an I/O was sent again on another path after a path error (multipath).
    pub failovers: u64,
    /// Times an I/O was retried after another retryable error (multipath).
    pub retries: u64,
}

/// The number of counters in an [`IoStat`].
const IO_FIELDS: usize = 13;

impl IoStat {
    fn to_array(self) -> [u64; IO_FIELDS] {
        [
            self.read_ops,
            self.read_bytes,
            self.write_ops,
            self.write_bytes,
            self.flush_ops,
            self.write_zeroes_ops,
            self.write_zeroes_bytes,
            self.unmap_ops,
            self.unmap_bytes,
            self.completed,
            self.errors,
            self.failovers,
            self.retries,
        ]
    }

    fn from_array(a: [u64; IO_FIELDS]) -> IoStat {
        IoStat {
            read_ops: a[0],
            read_bytes: a[1],
            write_ops: a[2],
            write_bytes: a[3],
            flush_ops: a[4],
            write_zeroes_ops: a[5],
            write_zeroes_bytes: a[6],
            unmap_ops: a[7],
            unmap_bytes: a[8],
            completed: a[9],
            errors: a[10],
            failovers: a[11],
            retries: a[12],
        }
    }

    /// Operations accepted, of every kind.
    pub fn ops(&self) -> u64 {
        self.read_ops + self.write_ops + self.flush_ops + self.write_zeroes_ops + self.unmap_ops
    }
}

impl std::ops::AddAssign for IoStat {
    fn add_assign(&mut self, other: IoStat) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(other.to_array()) {
            *x += y;
        }
        *self = IoStat::from_array(a);
    }
}

/// One path's share of a multipath bdev's I/O, summed over its channels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathIoStat {
    /// Path instance identifier (as in [`PathInfo`](crate::mpath::PathInfo)).
    pub id: u64,
    /// The controller behind it, or `"(removed)"` for a path that is gone.
    pub controller: String,
    /// I/Os dispatched on it.
    pub submitted: u64,
    /// Path errors it returned (each one a failover).
    pub path_errors: u64,
    /// Of those, ANA errors.
    pub ana_errors: u64,
    /// Commands on it that passed their deadline.
    pub timeouts: u64,
    /// Commands it handed back because its controller was reset or failed.
    pub reset_aborts: u64,
}

/// The number of counters a board keeps per path (the identifier included).
const PATH_FIELDS: usize = 6;

impl PathIoStat {
    fn to_array(&self) -> [u64; PATH_FIELDS] {
        [
            self.id,
            self.submitted,
            self.path_errors,
            self.ana_errors,
            self.timeouts,
            self.reset_aborts,
        ]
    }

    fn add(&mut self, a: &[u64; PATH_FIELDS]) {
        self.submitted += a[1];
        self.path_errors += a[2];
        self.ana_errors += a[3];
        self.timeouts += a[4];
        self.reset_aborts += a[5];
    }
}

/// A bdev's statistics: [`Bdev::iostat`](crate::Bdev::iostat).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BdevIoStat {
    /// The bdev's name.
    pub bdev: String,
    /// Every channel's counters, open and closed.
    pub total: IoStat,
    /// Per path, by path identifier (multipath bdevs; empty for a namespace bdev).
    pub paths: Vec<PathIoStat>,
    /// Submit-to-delivery latencies of the I/Os delivered while the histogram was on
    /// ([`Bdev::enable_latency_histogram`](crate::Bdev::enable_latency_histogram)).
    pub latency: LatencyHistogram,
}

/// Buckets of a latency histogram: bucket `i` holds latencies of `2^i` to
/// `2^(i+1) - 1` ticks of the time-stamp counter.
pub const LATENCY_BUCKETS: usize = 64;

/// I/O latencies from submit to delivery to the submitter (failovers and retries
/// included), in power-of-two buckets of time-stamp counter ticks: a bucket's bounds
/// are within a factor of two, enough for percentiles at a glance (SPDK's bdev
/// histograms are finer, and cost more per I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// I/Os per bucket (see [`LATENCY_BUCKETS`]).
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Ticks per second, to turn buckets into time.
    pub ticks_per_sec: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [0; LATENCY_BUCKETS],
            ticks_per_sec: nvme_driver::clock::ticks_per_sec(),
        }
    }
}

impl LatencyHistogram {
    /// I/Os counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The time `ticks` stand for.
    fn time(&self, ticks: u64) -> std::time::Duration {
        let ns = ticks as u128 * 1_000_000_000 / self.ticks_per_sec.max(1) as u128;
        std::time::Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// The nonzero buckets: (lowest, highest latency of the bucket, I/Os).
    pub fn nonzero(&self) -> Vec<(std::time::Duration, std::time::Duration, u64)> {
        (0..LATENCY_BUCKETS)
            .filter(|&i| self.buckets[i] != 0)
            .map(|i| {
                let high = if i == 63 { u64::MAX } else { (2u64 << i) - 1 };
                (self.time(1 << i), self.time(high), self.buckets[i])
            })
            .collect()
    }

    /// An upper bound of the `q` quantile (0.5 for the median, 0.99 for p99): the top
    /// of the bucket it falls in. `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<std::time::Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                let high = if i == 63 { u64::MAX } else { (2u64 << i) - 1 };
                return Some(self.time(high));
            }
        }
        unreachable!("the buckets add up to the count")
    }

    fn add(&mut self, other: &[u64; LATENCY_BUCKETS]) {
        for (a, b) in self.buckets.iter_mut().zip(other) {
            *a += b;
        }
    }
}

/// A channel's own latency counts (its core only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LatencyCounts {
    buckets: [u64; LATENCY_BUCKETS],
    /// Something was counted (a board publishes the buckets only then).
    any: bool,
}

impl Default for LatencyCounts {
    fn default() -> Self {
        LatencyCounts {
            buckets: [0; LATENCY_BUCKETS],
            any: false,
        }
    }
}

impl LatencyCounts {
    /// Counts one latency of `ticks`.
    #[inline]
    pub(crate) fn record(&mut self, ticks: u64) {
        self.buckets[(63 - (ticks | 1).leading_zeros()) as usize] += 1;
        self.any = true;
    }
}

/// Where one channel publishes its counters: written by the channel's core alone.
pub(crate) struct StatBoard {
    io: [AtomicU64; IO_FIELDS],
    latency: [AtomicU64; LATENCY_BUCKETS],
    /// Per local path: `PATH_FIELDS` counters, the first the path's identifier
    /// ([`NO_PATH`] in an entry not in use).
    paths: Box<[[AtomicU64; PATH_FIELDS]]>,
}

/// The identifier of a board entry that holds no path.
const NO_PATH: u64 = u64::MAX;

impl StatBoard {
    fn new(paths: usize) -> StatBoard {
        StatBoard {
            io: Default::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            paths: (0..paths)
                .map(|_| {
                    let e: [AtomicU64; PATH_FIELDS] = Default::default();
                    e[0].store(NO_PATH, Ordering::Relaxed);
                    e
                })
                .collect(),
        }
    }

    /// Publishes the channel's counters (its core only).
    pub(crate) fn publish(&self, io: &IoStat) {
        for (cell, v) in self.io.iter().zip(io.to_array()) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// Publishes the channel's latency counts (its core only), if it has any.
    pub(crate) fn publish_latency(&self, latency: &LatencyCounts) {
        if latency.any {
            for (cell, &v) in self.latency.iter().zip(&latency.buckets) {
                cell.store(v, Ordering::Relaxed);
            }
        }
    }

    /// Publishes local path `index`'s counters, or marks the entry unused (`None`).
    pub(crate) fn publish_path(&self, index: usize, path: Option<&PathIoStat>) {
        let Some(entry) = self.paths.get(index) else {
            return;
        };
        match path {
            Some(p) => {
                for (cell, v) in entry.iter().zip(p.to_array()) {
                    cell.store(v, Ordering::Relaxed);
                }
            }
            None => entry[0].store(NO_PATH, Ordering::Relaxed),
        }
    }

    fn read_latency(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed))
    }

    fn read(&self) -> (IoStat, Vec<[u64; PATH_FIELDS]>) {
        let io = IoStat::from_array(std::array::from_fn(|i| self.io[i].load(Ordering::Relaxed)));
        let paths = self
            .paths
            .iter()
            .map(|e| std::array::from_fn(|i| e[i].load(Ordering::Relaxed)))
            .filter(|e: &[u64; PATH_FIELDS]| e[0] != NO_PATH)
            .collect();
        (io, paths)
    }
}

/// A bdev's channels' boards, and what closed channels left.
#[derive(Default)]
pub(crate) struct StatRegistry {
    open: Mutex<Vec<Arc<StatBoard>>>,
    closed: Mutex<Closed>,
}

/// What closed channels left.
#[derive(Clone, Default)]
struct Closed {
    io: IoStat,
    paths: Vec<PathIoStat>,
    latency: LatencyHistogram,
}

impl std::fmt::Debug for StatRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatRegistry")
            .field("open", &lock(&self.open).len())
            .finish()
    }
}

impl StatRegistry {
    /// A board for a new channel with room for `paths` local paths.
    pub(crate) fn open(&self, paths: usize) -> Arc<StatBoard> {
        let board = Arc::new(StatBoard::new(paths));
        lock(&self.open).push(board.clone());
        board
    }

    /// A channel closed after publishing its last counters to `board`: they are kept
    /// in the totals.
    pub(crate) fn close(&self, board: &Arc<StatBoard>) {
        // Under the open list's lock (taken before `closed`, as `snapshot` does): a
        // snapshot sees the board either open or in the totals, never both or neither.
        let mut open = lock(&self.open);
        let (io, paths) = board.read();
        let mut closed = lock(&self.closed);
        closed.io += io;
        for p in &paths {
            add_path(&mut closed.paths, p);
        }
        closed.latency.add(&board.read_latency());
        open.retain(|b| !Arc::ptr_eq(b, board));
    }

    /// A channel let go of local path `index`: its last counts `path` go to the
    /// totals and the board's entry is cleared, at once for a reader.
    pub(crate) fn retire_path(&self, board: &StatBoard, index: usize, path: &PathIoStat) {
        let _open = lock(&self.open);
        add_path(&mut lock(&self.closed).paths, &path.to_array());
        board.publish_path(index, None);
    }

    /// The totals: the closed channels' and every open board's last publication.
    /// `controller` names a path's controller from its identifier.
    pub(crate) fn snapshot(
        &self,
        bdev: &str,
        controller: impl Fn(u64) -> Option<String>,
    ) -> BdevIoStat {
        let open = lock(&self.open);
        let Closed {
            io: mut total,
            mut paths,
            mut latency,
        } = lock(&self.closed).clone();
        for b in open.iter() {
            let (io, ps) = b.read();
            total += io;
            for p in &ps {
                add_path(&mut paths, p);
            }
            latency.add(&b.read_latency());
        }
        drop(open);
        paths.sort_by_key(|p| p.id);
        for p in &mut paths {
            p.controller = controller(p.id).unwrap_or_else(|| "(removed)".into());
        }
        BdevIoStat {
            bdev: bdev.to_string(),
            total,
            paths,
            latency,
        }
    }
}

fn add_path(into: &mut Vec<PathIoStat>, a: &[u64; PATH_FIELDS]) {
    let i = match into.iter().position(|p| p.id == a[0]) {
        Some(i) => i,
        None => {
            into.push(PathIoStat {
                id: a[0],
                ..PathIoStat::default()
            });
            into.len() - 1
        }
    };
    into[i].add(a);
}

/// The submit side's counters of one channel: operations and blocks by kind, two
/// increments per accepted I/O.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpCounts {
    ops: [u64; 5],
    blocks: [u64; 5],
}

impl OpCounts {
    /// Counts an accepted I/O of `nlb` blocks.
    #[inline(always)]
    pub(crate) fn count(&mut self, op: IoOp, nlb: u32) {
        let i = op_index(op);
        self.ops[i] += 1;
        self.blocks[i] += nlb as u64;
    }

    /// The counts as an [`IoStat`] for blocks of `1 << block_shift` bytes, with the
    /// delivery side's counters.
    pub(crate) fn to_iostat(
        self,
        block_shift: u32,
        completed: u64,
        errors: u64,
        failovers: u64,
        retries: u64,
    ) -> IoStat {
        let bytes = |op| self.blocks[op_index(op)] << block_shift;
        let ops = |op| self.ops[op_index(op)];
        IoStat {
            read_ops: ops(IoOp::Read),
            read_bytes: bytes(IoOp::Read),
            write_ops: ops(IoOp::Write),
            write_bytes: bytes(IoOp::Write),
            flush_ops: ops(IoOp::Flush),
            write_zeroes_ops: ops(IoOp::WriteZeroes),
            write_zeroes_bytes: bytes(IoOp::WriteZeroes),
            unmap_ops: ops(IoOp::Deallocate),
            unmap_bytes: bytes(IoOp::Deallocate),
            completed,
            errors,
            failovers,
            retries,
        }
    }
}

#[inline(always)]
fn op_index(op: IoOp) -> usize {
    match op {
        IoOp::Read => 0,
        IoOp::Write => 1,
        IoOp::Flush => 2,
        IoOp::WriteZeroes => 3,
        IoOp::Deallocate => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_and_open_boards_add_up_by_path() {
        let reg = StatRegistry::default();
        let a = reg.open(4);
        let b = reg.open(4);
        let mut ops = OpCounts::default();
        ops.count(IoOp::Read, 8);
        ops.count(IoOp::Write, 2);
        a.publish(&ops.to_iostat(9, 2, 1, 1, 0));
        let path = |id, submitted| PathIoStat {
            id,
            submitted,
            ..PathIoStat::default()
        };
        a.publish_path(0, Some(&path(7, 2)));
        b.publish(&ops.to_iostat(12, 2, 0, 0, 3));
        b.publish_path(1, Some(&path(7, 5)));
        b.publish_path(2, Some(&path(9, 1)));
        reg.close(&a);
        let s = reg.snapshot("x", |id| (id == 7).then(|| "c0".to_string()));
        assert_eq!(s.total.read_ops, 2);
        assert_eq!(s.total.read_bytes, (8 << 9) + (8 << 12));
        assert_eq!(s.total.write_bytes, (2 << 9) + (2 << 12));
        assert_eq!((s.total.completed, s.total.errors), (4, 1));
        assert_eq!((s.total.failovers, s.total.retries), (1, 3));
        assert_eq!(s.paths.len(), 2);
        assert_eq!((s.paths[0].id, s.paths[0].submitted), (7, 7));
        assert_eq!(s.paths[0].controller, "c0");
        assert_eq!(s.paths[1].controller, "(removed)");
        b.publish_path(2, None);
        reg.close(&b);
        assert_eq!(lock(&reg.open).len(), 0);
        assert_eq!(reg.snapshot("x", |_| None).total.ops(), 4);
    }
}
