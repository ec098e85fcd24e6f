// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf's output: spdk_nvme_perf's table, latency summary and histogram, then
//! the driver counters that explain a result; or all of it as one JSON document.

use super::engine::NsResult;
use super::opts::PerfOptions;
use serde_json::{json, Value};
use std::fmt::Write;

/// The percentiles in `--json` (a subset of [`CUTOFFS`]; scripts read these keys).
pub const PERCENTILES: [f64; 9] = [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99];

/// The percentiles `-L` prints: spdk_nvme_perf's cutoffs.
pub const CUTOFFS: [f64; 15] = [
    1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 99.99, 99.999, 99.9999,
    99.99999,
];

const RULE: &str = "========================================================";
/// `" from core NN"`: what the row name adds to the device label.
const CORE_SUFFIX: usize = 13;

/// spdk_nvme_perf's row name, the label padded to `width` (the longest label).
pub fn row_name(r: &NsResult, width: usize) -> String {
    format!("{:<width$} from core {:2}", device_label(r), r.core)
}

/// The width of the label column: the longest label of `rows`.
pub fn label_width(rows: &[NsResult]) -> usize {
    rows.iter()
        .map(|r| device_label(r).len())
        .max()
        .unwrap_or(0)
}

/// spdk_nvme_perf's name: `PCIE (<address>) [<vid>:<did>] NSID <n>` (without the PCI
/// ID when the device has none), or `MPATH (<bdev>)`.
pub fn device_label(r: &NsResult) -> String {
    match (&r.mpath, r.pci_id) {
        (Some(_), _) => format!("MPATH ({})", r.device),
        (None, Some((vid, did))) => {
            format!("PCIE ({}) [{vid:04x}:{did:04x}] NSID {}", r.device, r.nsid)
        }
        (None, None) => format!("PCIE ({}) NSID {}", r.device, r.nsid),
    }
}

/// The aggregate of all rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Total {
    /// Sum of IOPS.
    pub iops: f64,
    /// Sum of MiB/s.
    pub mibps: f64,
    /// Average latency over all I/Os, us.
    pub avg_us: f64,
    /// Smallest, us.
    pub min_us: f64,
    /// Largest, us.
    pub max_us: f64,
    /// I/Os.
    pub ios: u64,
    /// Failed I/Os.
    pub errors: u64,
    /// Reads that did not match the pattern.
    pub mismatches: u64,
}

/// Sums the rows as spdk_nvme_perf's Total row does.
pub fn total(rows: &[NsResult]) -> Total {
    let ios: u64 = rows.iter().map(|r| r.ios).sum();
    let sum_ns: u128 = rows.iter().map(|r| r.lat_sum_ns).sum();
    let with_ios = || rows.iter().filter(|r| r.ios > 0);
    Total {
        iops: rows.iter().map(|r| r.iops()).sum(),
        mibps: rows.iter().map(|r| r.mibps()).sum(),
        avg_us: if ios == 0 {
            0.0
        } else {
            sum_ns as f64 / ios as f64 / 1000.0
        },
        min_us: with_ios().map(|r| r.lat_min_ns).min().unwrap_or(0) as f64 / 1000.0,
        max_us: with_ios().map(|r| r.lat_max_ns).max().unwrap_or(0) as f64 / 1000.0,
        ios,
        errors: rows.iter().map(|r| r.errors).sum(),
        mismatches: rows.iter().map(|r| r.mismatches).sum(),
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    out: &mut String,
    width: usize,
    name: &str,
    iops: f64,
    mibps: f64,
    avg: f64,
    min: f64,
    max: f64,
) {
    let _ = writeln!(
        out,
        "{name:<width$}: {iops:10.2} {mibps:10.2} {avg:10.2} {min:10.2} {max:10.2}"
    );
}

/// The table: a row per namespace and core, then Total, as spdk_nvme_perf prints it
/// (the name column as wide as the longest name).
pub fn table(rows: &[NsResult]) -> String {
    let w = label_width(rows);
    let mut out = String::new();
    let _ = writeln!(out, "{RULE}");
    let _ = writeln!(out, "{:>width$}", "Latency(us)", width = w + 60);
    let _ = writeln!(
        out,
        "{:<width$}: {:>10} {:>10} {:>10} {:>10} {:>10}",
        "Device Information",
        "IOPS",
        "MiB/s",
        "Average",
        "min",
        "max",
        width = w + CORE_SUFFIX
    );
    for r in rows {
        row(
            &mut out,
            w + CORE_SUFFIX,
            &row_name(r, w),
            r.iops(),
            r.mibps(),
            r.avg_us(),
            r.lat_min_ns as f64 / 1000.0,
            r.lat_max_ns as f64 / 1000.0,
        );
    }
    let _ = writeln!(out, "{RULE}");
    let t = total(rows);
    row(
        &mut out,
        w + CORE_SUFFIX,
        "Total",
        t.iops,
        t.mibps,
        t.avg_us,
        t.min_us,
        t.max_us,
    );
    out.push('\n');
    out
}

/// The latency at percentile `p` of a row, us; 0 for a row without I/O.
fn percentile_us(r: &NsResult, p: f64) -> f64 {
    if r.ios == 0 {
        0.0
    } else {
        r.hist.value_at_percentile(p) as f64 / 1000.0
    }
}

/// A per-row section's title line, `<title> for <device> from core <n>:` (the name
/// cut or padded to 43 characters, as spdk_nvme_perf does), and its rule of `rule`
/// characters.
fn section_header(out: &mut String, title: &str, r: &NsResult, rule: usize) {
    let _ = writeln!(
        out,
        "{title} for {:<43.43} from core {}:",
        device_label(r),
        r.core
    );
    let _ = writeln!(out, "{}", "=".repeat(rule));
}

/// `-L`: spdk_nvme_perf's cutoffs per row (rows without I/O are left out).
pub fn percentiles(rows: &[NsResult]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.ios > 0) {
        section_header(&mut out, "Summary latency data", r, 81);
        for p in CUTOFFS {
            let us = percentile_us(r, p);
            let _ = writeln!(out, "{p:9.5}% : {us:9.3}us");
        }
        out.push('\n');
    }
    out
}

/// A histogram bucket: `lo_us..hi_us` held `count` I/Os, `cumulative` percent of the
/// row's I/Os are at most `hi_us`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Lower bound, us.
    pub lo_us: f64,
    /// Upper bound, us.
    pub hi_us: f64,
    /// I/Os in the bucket.
    pub count: u64,
    /// Percent of the row's I/Os up to `hi_us`.
    pub cumulative: f64,
}

/// A row's latency histogram in buckets growing by a quarter from 1 us (empty
/// buckets left out).
pub fn buckets(r: &NsResult) -> Vec<Bucket> {
    let mut out = Vec::new();
    if r.ios == 0 {
        return out;
    }
    let mut lo = 0u64;
    let mut cum = 0u64;
    for v in r.hist.iter_log(1000, 1.25) {
        let hi = v.value_iterated_to();
        let n = v.count_since_last_iteration();
        if n > 0 {
            cum += n;
            out.push(Bucket {
                lo_us: lo as f64 / 1000.0,
                hi_us: hi as f64 / 1000.0,
                count: n,
                cumulative: cum as f64 * 100.0 / r.hist.len() as f64,
            });
        }
        lo = hi;
    }
    out
}

/// `-LL`: a histogram per row (rows without I/O are left out).
pub fn histogram(rows: &[NsResult]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.ios > 0) {
        section_header(&mut out, "Latency histogram", r, 78);
        let _ = writeln!(out, "       Range in us     Cumulative    IO count");
        for b in buckets(r) {
            let _ = writeln!(
                out,
                "{:9.3} - {:9.3}: {:9.4}%  ({:9})",
                b.lo_us, b.hi_us, b.cumulative, b.count
            );
        }
        out.push('\n');
    }
    out
}

/// Per-I/O ratios of a row's queue pair counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSummary {
    /// Queue pairs.
    pub qpairs: usize,
    /// SQ tail doorbell writes per I/O.
    pub sq_doorbells_per_io: f64,
    /// CQ head doorbell writes per I/O.
    pub cq_doorbells_per_io: f64,
    /// Fraction of polls that found nothing, percent.
    pub idle_poll_percent: f64,
    /// Completions per productive poll.
    pub completions_per_poll: f64,
    /// Most requests ever on a pending ring.
    pub pending_high_water: u64,
    /// Requests that went through a pending ring.
    pub pended: u64,
    /// Commands that timed out, and commands aborted by resets.
    pub timeouts: u64,
    /// Commands aborted by resets.
    pub reset_aborts: u64,
}

/// Summarizes a row's counters.
pub fn counters(r: &NsResult) -> CounterSummary {
    let sum = |f: fn(&nvme_driver::QpairStats) -> u64| r.counters.iter().map(f).sum::<u64>();
    let completed = sum(|s| s.completed).max(1) as f64;
    let polls = sum(|s| s.polls);
    let idle = sum(|s| s.idle_polls);
    CounterSummary {
        qpairs: r.counters.len(),
        sq_doorbells_per_io: sum(|s| s.sq_doorbell_writes) as f64 / completed,
        cq_doorbells_per_io: sum(|s| s.cq_doorbell_writes) as f64 / completed,
        idle_poll_percent: if polls == 0 {
            0.0
        } else {
            idle as f64 * 100.0 / polls as f64
        },
        completions_per_poll: sum(|s| s.completed) as f64 / (polls - idle).max(1) as f64,
        pending_high_water: r
            .counters
            .iter()
            .map(|s| s.pending_high_water)
            .max()
            .unwrap_or(0),
        pended: sum(|s| s.pended),
        timeouts: sum(|s| s.timeouts),
        reset_aborts: sum(|s| s.reset_aborts),
    }
}

/// The driver counters section.
pub fn counter_lines(rows: &[NsResult]) -> String {
    let w = label_width(rows);
    let mut out = String::from("Driver counters (measured phase):\n");
    for r in rows {
        let c = counters(r);
        let _ = write!(
            out,
            "{}: {} qpair{}, SQ doorbells/IO {:.3}, CQ doorbells/IO {:.3}, completions/busy poll {:.2}, idle polls {:.2}%, pending high water {}",
            row_name(r, w),
            c.qpairs,
            if c.qpairs == 1 { "" } else { "s" },
            c.sq_doorbells_per_io,
            c.cq_doorbells_per_io,
            c.completions_per_poll,
            c.idle_poll_percent,
            c.pending_high_water
        );
        if c.pended > 0 {
            let _ = write!(out, ", queued in the driver {}", c.pended);
        }
        if c.timeouts + c.reset_aborts > 0 {
            let _ = write!(
                out,
                ", timeouts {}, reset aborts {}",
                c.timeouts, c.reset_aborts
            );
        }
        out.push('\n');
    }
    out
}

/// `--multipath`: per row, the I/Os each path carried, failover events, the retry
/// ring, the longest submit call and the longest pause between completions.
pub fn mpath_lines(rows: &[NsResult]) -> String {
    let w = label_width(rows);
    let mut out = String::from("Multipath (measured phase):\n");
    for r in rows {
        let Some(m) = &r.mpath else { continue };
        let paths: Vec<String> = m
            .paths
            .iter()
            .map(|p| {
                if p.path_errors > 0 {
                    format!("{} {} I/Os ({} path errors)", p.name, p.ios, p.path_errors)
                } else {
                    format!("{} {} I/Os", p.name, p.ios)
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{}: {}; failovers {}, retries {}, queued {} (high water {}), fast-failed {}, path-set changes {}, longest submit {:.1} us, longest completion gap {:.1} us",
            row_name(r, w),
            if paths.is_empty() { "no paths".to_string() } else { paths.join(", ") },
            m.channel.failovers,
            m.channel.retries,
            m.channel.queued,
            m.channel.queued_high_water,
            m.channel.fast_failed,
            m.channel.path_set_changes,
            m.longest_submit_ns as f64 / 1000.0,
            m.longest_gap_ns as f64 / 1000.0
        );
    }
    out
}

/// The error and verify lines (empty if there is nothing to say and no verify).
pub fn problems(rows: &[NsResult], verify: bool) -> String {
    let mut out = String::new();
    let t = total(rows);
    if t.errors > 0 {
        let first = rows
            .iter()
            .find_map(|r| r.first_error.as_ref().map(|e| (r, e)))
            .map(|(r, e)| format!("{} NSID {}: {e}", r.device, r.nsid))
            .unwrap_or_default();
        let _ = writeln!(out, "I/O errors: {} failed I/Os; first: {first}", t.errors);
    }
    if verify {
        match rows.iter().find_map(|r| r.first_mismatch.map(|m| (r, m))) {
            Some((r, m)) => {
                let _ = writeln!(
                    out,
                    "verify: MISMATCH at LBA {} of {} NSID {} (byte {} of the block): expected {:#018x}, found {:#018x}; {} reads differed",
                    m.lba, r.device, r.nsid, m.offset, m.expected, m.found, t.mismatches
                );
            }
            None if rows.iter().all(|r| r.reads == 0) => {
                let _ = writeln!(
                    out,
                    "verify: no reads to check; every write carried the pattern (check it with a read workload, --verify and the same --seed)"
                );
            }
            None => {
                let reads: u64 = rows.iter().map(|r| r.reads).sum();
                let _ = writeln!(
                    out,
                    "verify: every read matched the pattern ({reads} reads in the measured phase)"
                );
            }
        }
    }
    out
}

/// `-m`: each poller core's busy share, from its queue pairs' polls: the percent of
/// polls that found completions (spdk_nvme_perf measures the same split in time).
pub fn cpu_usage(rows: &[NsResult]) -> String {
    let mut cores: Vec<usize> = rows.iter().map(|r| r.core).collect();
    cores.dedup();
    let mut out = String::from("CPU usage (polls that found completions):\n");
    for core in cores {
        let (mut polls, mut idle) = (0u64, 0u64);
        for s in rows
            .iter()
            .filter(|r| r.core == core)
            .flat_map(|r| &r.counters)
        {
            polls += s.polls;
            idle += s.idle_polls;
        }
        if polls == 0 {
            let _ = writeln!(out, "Core {core:3}: no poll counters");
        } else {
            let busy = (polls - idle) as f64 * 100.0 / polls as f64;
            let _ = writeln!(out, "Core {core:3}: {busy:6.2}% Busy");
        }
    }
    out.push('\n');
    out
}

/// Everything for a terminal: table, `-L`/`-LL` sections, `-m`, counters, problems.
pub fn text(opts: &PerfOptions, rows: &[NsResult]) -> String {
    let mut out = table(rows);
    if opts.latency_level >= 1 {
        out.push_str(&percentiles(rows));
    }
    if opts.latency_level >= 2 {
        out.push_str(&histogram(rows));
    }
    if opts.cpu_usage {
        out.push_str(&cpu_usage(rows));
    }
    if rows.iter().any(|r| r.mpath.is_some()) {
        out.push_str(&mpath_lines(rows));
    } else {
        out.push_str(&counter_lines(rows));
    }
    out.push_str(&problems(rows, opts.verify));
    out
}

/// Everything as one JSON document.
pub fn to_json(opts: &PerfOptions, rows: &[NsResult]) -> Value {
    let t = total(rows);
    let row_json = |r: &NsResult| {
        let c = counters(r);
        let mut v = json!({
            "device": r.device,
            "pci_id": r.pci_id.map(|(v, d)| format!("{v:04x}:{d:04x}")),
            "nsid": r.nsid,
            "core": r.core,
            "ios": r.ios,
            "reads": r.reads,
            "seconds": r.secs,
            "iops": r.iops(),
            "mibps": r.mibps(),
            "latency_us": {
                "average": r.avg_us(),
                "min": r.lat_min_ns as f64 / 1000.0,
                "max": r.lat_max_ns as f64 / 1000.0,
            },
            "errors": r.errors,
            "first_error": r.first_error,
            "verify_mismatches": r.mismatches,
            "first_mismatch": r.first_mismatch.map(|m| json!({
                "lba": m.lba, "offset": m.offset, "expected": m.expected, "found": m.found,
            })),
            "counters": {
                "qpairs": c.qpairs,
                "sq_doorbells_per_io": c.sq_doorbells_per_io,
                "cq_doorbells_per_io": c.cq_doorbells_per_io,
                "idle_poll_percent": c.idle_poll_percent,
                "completions_per_busy_poll": c.completions_per_poll,
                "pending_high_water": c.pending_high_water,
                "pended": c.pended,
                "timeouts": c.timeouts,
                "reset_aborts": c.reset_aborts,
            },
        });
        if opts.latency_level >= 1 {
            let p: serde_json::Map<String, Value> = PERCENTILES
                .iter()
                .map(|&p| (format!("{p}"), json!(percentile_us(r, p))))
                .collect();
            v["latency_us"]["percentiles"] = Value::Object(p);
        }
        if let Some(m) = &r.mpath {
            v["multipath"] = json!({
                "policy": m.policy.name(),
                "paths": m.paths.iter().map(|p| json!({
                    "name": p.name, "ios": p.ios, "path_errors": p.path_errors,
                })).collect::<Vec<_>>(),
                "failovers": m.channel.failovers,
                "retries": m.channel.retries,
                "queued": m.channel.queued,
                "queued_high_water": m.channel.queued_high_water,
                "fast_failed": m.channel.fast_failed,
                "path_set_changes": m.channel.path_set_changes,
                "longest_submit_us": m.longest_submit_ns as f64 / 1000.0,
                "longest_completion_gap_us": m.longest_gap_ns as f64 / 1000.0,
            });
        }
        v
    };
    json!({
        "config": {
            "queue_depth": opts.queue_depth,
            "io_size": opts.io_size,
            "workload": opts.workload.name(),
            "read_percent": opts.read_percent,
            "time_s": opts.time_s,
            "warmup_s": opts.warmup_s,
            "cores": opts.cores,
            "qpairs_per_ns": opts.qpairs_per_ns,
            "io_queue_size": opts.io_queue_size,
            "continue_on_error": opts.continue_on_error.is_some(),
            "number_ios": opts.number_ios.map(|n| match n {
                super::opts::NumberIos::Count(c) => c.to_string(),
                super::opts::NumberIos::Percent(p) => format!("{p}%"),
            }),
            "verify": opts.verify,
            "seed": opts.seed,
            "multipath": opts.multipath.map(|p| p.name()),
        },
        "namespaces": rows.iter().map(row_json).collect::<Vec<_>>(),
        "total": {
            "iops": t.iops,
            "mibps": t.mibps,
            "latency_us": {"average": t.avg_us, "min": t.min_us, "max": t.max_us},
            "ios": t.ios,
            "errors": t.errors,
            "verify_mismatches": t.mismatches,
        },
    })
}

#[cfg(test)]
mod tests;
