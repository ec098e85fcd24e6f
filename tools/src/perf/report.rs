//! nvme-perf's output: spdk_nvme_perf's table, latency summary and histogram, then
//! the driver counters that explain a result; or all of it as one JSON document.

use super::engine::NsResult;
use super::opts::PerfOptions;
use serde_json::{json, Value};
use std::fmt::Write;

/// The percentiles printed by `-L`.
pub const PERCENTILES: [f64; 9] = [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99];

const NAME_WIDTH: usize = 55;
const RULE: &str = "========================================================";

/// spdk_nvme_perf's row name (`MPATH (<bdev>)` for a multipath bdev).
pub fn row_name(r: &NsResult) -> String {
    format!("{} from core {:2}", device_label(r), r.core)
}

/// `PCIE (<address>) NSID <n>`, or `MPATH (<bdev>)`.
pub fn device_label(r: &NsResult) -> String {
    if r.mpath.is_some() {
        format!("MPATH ({})", r.device)
    } else {
        format!("PCIE ({}) NSID {}", r.device, r.nsid)
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

fn row(out: &mut String, name: &str, iops: f64, mibps: f64, avg: f64, min: f64, max: f64) {
    let _ = writeln!(
        out,
        "{name:<NAME_WIDTH$}: {iops:10.2} {mibps:10.2} {avg:10.2} {min:10.2} {max:10.2}"
    );
}

/// The table: a row per namespace and core, then Total.
pub fn table(rows: &[NsResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{RULE}");
    let _ = writeln!(
        out,
        "{:>width$}",
        "Latency(us)",
        width = NAME_WIDTH + 2 + 11 * 3 + 11
    );
    let _ = writeln!(
        out,
        "{:<NAME_WIDTH$}: {:>10} {:>10} {:>10} {:>10} {:>10}",
        "Device Information", "IOPS", "MiB/s", "Average", "min", "max"
    );
    for r in rows {
        row(
            &mut out,
            &row_name(r),
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
        &mut out, "Total", t.iops, t.mibps, t.avg_us, t.min_us, t.max_us,
    );
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

/// A per-row section's title line, `\n<title> for <device> from core <n>:`, and its
/// rule, `extra` characters longer than the table's.
fn section_header(out: &mut String, title: &str, r: &NsResult, extra: usize) {
    let _ = writeln!(
        out,
        "\n{title} for {} from core {}:",
        device_label(r),
        r.core
    );
    let _ = writeln!(out, "{RULE}{}", &RULE[..extra]);
}

/// `-L`: percentiles per row.
pub fn percentiles(rows: &[NsResult]) -> String {
    let mut out = String::new();
    for r in rows {
        section_header(&mut out, "Summary latency data", r, 25);
        for p in PERCENTILES {
            let us = percentile_us(r, p);
            let _ = writeln!(out, "{p:10.5}% : {us:12.3}us");
        }
    }
    out
}

/// `-LL`: a histogram per row, in buckets growing by a quarter.
pub fn histogram(rows: &[NsResult]) -> String {
    let mut out = String::new();
    for r in rows {
        section_header(&mut out, "Latency histogram", r, 22);
        let _ = writeln!(out, "       Range in us     Cumulative    IO count");
        if r.ios == 0 {
            continue;
        }
        let mut lo = 0u64;
        let mut cum = 0u64;
        for v in r.hist.iter_log(1000, 1.25) {
            let hi = v.value_iterated_to();
            let n = v.count_since_last_iteration();
            if n > 0 {
                cum += n;
                let _ = writeln!(
                    out,
                    "{:>10.3} - {:>10.3}: {:>9.4}%  ({n:>9})",
                    lo as f64 / 1000.0,
                    hi as f64 / 1000.0,
                    cum as f64 * 100.0 / r.hist.len() as f64
                );
            }
            lo = hi;
        }
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
    let mut out = String::from("\nDriver counters (measured phase):\n");
    for r in rows {
        let c = counters(r);
        let _ = write!(
            out,
            "{:<NAME_WIDTH$}: {} qpair{}, SQ doorbells/IO {:.3}, CQ doorbells/IO {:.3}, completions/busy poll {:.2}, idle polls {:.2}%, pending high water {}",
            row_name(r),
            c.qpairs,
            if c.qpairs == 1 { "" } else { "s" },
            c.sq_doorbells_per_io,
            c.cq_doorbells_per_io,
            c.completions_per_poll,
            c.idle_poll_percent,
            c.pending_high_water
        );
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
    let mut out = String::from("\nMultipath (measured phase):\n");
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
            "{:<NAME_WIDTH$}: {}; failovers {}, retries {}, queued {} (high water {}), fast-failed {}, path-set changes {}, longest submit {:.1} us, longest completion gap {:.1} us",
            row_name(r),
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

/// Everything for a terminal: table, `-L`/`-LL` sections, counters, problems.
pub fn text(opts: &PerfOptions, rows: &[NsResult]) -> String {
    let mut out = table(rows);
    if opts.latency_level >= 1 {
        out.push_str(&percentiles(rows));
    }
    if opts.latency_level >= 2 {
        out.push_str(&histogram(rows));
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
mod tests {
    use super::*;
    use crate::perf::opts::{parse_args, Command};
    use hdrhistogram::Histogram;
    use nvme_driver::QpairStats;

    fn result(core: usize, ios: u64, lat_ns: &[u64]) -> NsResult {
        let mut hist = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for &l in lat_ns {
            hist.record(l).unwrap();
        }
        NsResult {
            device: "0000:01:00.0".into(),
            nsid: 1,
            core,
            ios,
            reads: ios,
            io_size: 4096,
            secs: 2.0,
            lat_sum_ns: lat_ns.iter().map(|&l| l as u128).sum::<u128>() * ios as u128
                / lat_ns.len().max(1) as u128,
            lat_min_ns: lat_ns.iter().copied().min().unwrap_or(0),
            lat_max_ns: lat_ns.iter().copied().max().unwrap_or(0),
            hist,
            errors: 0,
            first_error: None,
            mismatches: 0,
            first_mismatch: None,
            counters: vec![QpairStats {
                completed: ios,
                polls: 1000,
                idle_polls: 250,
                sq_doorbell_writes: ios / 4,
                cq_doorbell_writes: ios / 2,
                ..Default::default()
            }],
            mpath: None,
        }
    }

    fn opts(extra: &str) -> PerfOptions {
        let line = format!("-q 32 -o 4096 -w randread -t 2 {extra}");
        match parse_args(line.split_whitespace(), &[0, 1]).unwrap() {
            Command::Run(o) => o,
            Command::Help => unreachable!(),
        }
    }

    #[test]
    fn table_rows_and_total_add_up() {
        let rows = vec![
            result(0, 200_000, &[10_000, 30_000]),
            result(1, 100_000, &[20_000]),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].trim_end().ends_with("Latency(us)"));
        assert!(lines[2].starts_with("Device Information"));
        assert_eq!(
            lines[3],
            "PCIE (0000:01:00.0) NSID 1 from core  0                :  100000.00     390.62      20.00      10.00      30.00"
        );
        assert!(lines[4].starts_with("PCIE (0000:01:00.0) NSID 1 from core  1"));
        assert_eq!(
            lines[6],
            "Total                                                  :  150000.00     585.94      20.00      10.00      30.00"
        );
        let tot = total(&rows);
        assert_eq!(tot.ios, 300_000);
        assert!((tot.iops - 150_000.0).abs() < 1e-6);
        // Every row's columns parse as numbers (what the guest tests check).
        for l in &lines[3..5] {
            let nums: Vec<f64> = l
                .split_once(": ")
                .unwrap()
                .1
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(nums.len(), 5);
        }
    }

    #[test]
    fn percentiles_histogram_and_counters() {
        let rows = vec![result(0, 4, &[10_000, 20_000, 30_000, 40_000])];
        let p = percentiles(&rows);
        assert!(p.contains("Summary latency data for PCIE (0000:01:00.0) NSID 1 from core 0:"));
        assert!(p.contains("  50.00000% :       20.015us"), "{p}");
        assert!(p.contains("  99.99000% :       40.031us"), "{p}");
        assert_eq!(p.lines().filter(|l| l.contains("% :")).count(), 9);
        let h = histogram(&rows);
        assert!(h.contains("Range in us"));
        assert!(h.lines().any(|l| l.contains("100.0000%")), "{h}");
        let c = counter_lines(&rows);
        assert!(
            c.contains("1 qpair, SQ doorbells/IO 0.250, CQ doorbells/IO 0.500"),
            "{c}"
        );
        assert!(c.contains("idle polls 25.00%, pending high water 0"), "{c}");
    }

    #[test]
    fn problems_report_first_error_and_mismatch() {
        let mut rows = vec![result(0, 10, &[1000])];
        assert!(problems(&rows, false).is_empty());
        assert!(problems(&rows, true).contains("every read matched"));
        rows[0].errors = 3;
        rows[0].first_error = Some("read at LBA 8: Generic/0x02".into());
        rows[0].mismatches = 2;
        rows[0].first_mismatch = Some(super::super::pattern::Mismatch {
            lba: 1234,
            offset: 16,
            expected: 1,
            found: 2,
        });
        let p = problems(&rows, true);
        assert!(p.contains("I/O errors: 3 failed I/Os; first: 0000:01:00.0 NSID 1: read at LBA 8"));
        assert!(p.contains("verify: MISMATCH at LBA 1234 of 0000:01:00.0 NSID 1 (byte 16"));
        assert!(p.contains("2 reads differed"));
    }

    #[test]
    fn json_has_rows_total_and_percentiles() {
        let rows = vec![result(0, 100, &[5_000])];
        let v = to_json(&opts("-L --json"), &rows);
        assert_eq!(v["config"]["workload"], "randread");
        assert_eq!(v["namespaces"][0]["ios"], 100);
        assert_eq!(v["total"]["iops"], 50.0);
        assert!(
            v["namespaces"][0]["latency_us"]["percentiles"]["99.99"]
                .as_f64()
                .unwrap()
                > 4.9
        );
        let text = serde_json::to_string(&v).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }
}
