// SPDX-License-Identifier: Apache-2.0 OR MIT
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
        pci_id: Some((0x1b36, 0x0010)),
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
    // spdk_nvme_perf's layout: the name column is as wide as the longest name.
    let golden = "\
========================================================
                                                                                       Latency(us)
Device Information                                 :       IOPS      MiB/s    Average        min        max
PCIE (0000:01:00.0) [1b36:0010] NSID 1 from core  0:  100000.00     390.62      20.00      10.00      30.00
PCIE (0000:01:00.0) [1b36:0010] NSID 1 from core  1:   50000.00     195.31      20.00      20.00      20.00
========================================================
Total                                              :  150000.00     585.94      20.00      10.00      30.00

";
    assert_eq!(t, golden);
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
    let golden = "\
Summary latency data for PCIE (0000:01:00.0) [1b36:0010] NSID 1      from core 0:
=================================================================================
  1.00000% :    10.007us
 10.00000% :    10.007us
 25.00000% :    10.007us
 50.00000% :    20.015us
 75.00000% :    30.015us
 90.00000% :    40.031us
 95.00000% :    40.031us
 98.00000% :    40.031us
 99.00000% :    40.031us
 99.50000% :    40.031us
 99.90000% :    40.031us
 99.99000% :    40.031us
 99.99900% :    40.031us
 99.99990% :    40.031us
 99.99999% :    40.031us

";
    assert_eq!(p, golden);
    let h = histogram(&rows);
    let golden = "\
Latency histogram for PCIE (0000:01:00.0) [1b36:0010] NSID 1      from core 0:
==============================================================================
       Range in us     Cumulative    IO count
    9.312 -    11.640:   25.0000%  (        1)
   18.188 -    22.736:   50.0000%  (        1)
   28.420 -    35.526:   75.0000%  (        1)
   35.526 -    44.407:  100.0000%  (        1)

";
    assert_eq!(h, golden);
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
    assert_eq!(v["namespaces"][0]["pci_id"], "1b36:0010");
    assert_eq!(v["config"]["continue_on_error"], false);
    assert_eq!(v["config"]["number_ios"], Value::Null);
    let w = to_json(&opts("-Q 1 -d 50% --io-queue-size 8 --json"), &rows);
    assert_eq!(w["config"]["continue_on_error"], true);
    assert_eq!(w["config"]["number_ios"], "50%");
    assert_eq!(w["config"]["io_queue_size"], 8);
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
