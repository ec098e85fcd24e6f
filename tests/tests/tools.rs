// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The tools against QEMU's NVMe controllers in a guest, their output checked for
//! real: nvme-perf's table and JSON (numbers parse, the Total row is the sum of the
//! rows, MiB/s is IOPS times the I/O size, min <= average <= max, one row per
//! namespace and core), `--verify` passing on data written with the same seed and
//! failing, naming the LBA, on another seed and on blocks overwritten from the kernel
//! side, usage errors (exit 2, one line naming what to fix); nvme-identify's text and
//! JSON; nvme-setup's status, unbind, bind and its refusals; and `qemu/perf`, the
//! main job.
//!
//! Guest boots cost 5 to 10 s under TCG, so each test runs many commands in one boot:
//! every command goes through the shell function `run_case NAME CMD...`, which prints
//! its exit status, stdout and stderr between markers (the guest's stderr is a separate
//! serial port, so per-command files keep them apart), and [`cases`] reads them back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{case, cases, ok, repo_root, Backing, Bind, Case, Guest, Topology, RUN_CASE};
use serde_json::Value;

// ---------------------------------------------------------------- nvme-perf's table

/// One row of nvme-perf's table.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    iops: f64,
    mibps: f64,
    avg: f64,
    min: f64,
    max: f64,
}

fn parse_row(line: &str) -> Row {
    let (name, nums) = line
        .split_once(": ")
        .unwrap_or_else(|| panic!("not a table row: {line:?}"));
    let v: Vec<f64> = nums
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("{x:?} in {line:?} is not a number"))
        })
        .collect();
    assert_eq!(v.len(), 5, "a row has five numbers: {line:?}");
    for x in &v {
        assert!(x.is_finite() && *x >= 0.0, "{line:?}");
    }
    Row {
        // spdk_nvme_perf's name carries the PCI vendor:device ID (`[1b36:0010]`),
        // checked where the rows are; the rest names the device, namespace and core.
        name: name
            .split_whitespace()
            .filter(|w| !is_pci_id(w))
            .collect::<Vec<_>>()
            .join(" "),
        iops: v[0],
        mibps: v[1],
        avg: v[2],
        min: v[3],
        max: v[4],
    }
}

/// `[1b36:0010]`: a PCI vendor and device ID as the row names carry it.
fn is_pci_id(word: &str) -> bool {
    let Some(inner) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) else {
        return false;
    };
    inner.len() == 9
        && inner.as_bytes()[4] == b':'
        && inner
            .chars()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_hexdigit())
}

/// The rows and the Total row of nvme-perf's table in `text`.
fn parse_table(text: &str) -> (Vec<Row>, Row) {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("Device Information"));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no table header:\n{text}"));
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "Device",
            "Information",
            ":",
            "IOPS",
            "MiB/s",
            "Average",
            "min",
            "max"
        ],
        "{text}"
    );
    let rows: Vec<Row> = lines
        .by_ref()
        .take_while(|l| !l.starts_with("====="))
        .map(parse_row)
        .collect();
    let total = lines
        .next()
        .filter(|l| l.starts_with("Total "))
        .map(parse_row)
        .unwrap_or_else(|| panic!("no Total row after the rule:\n{text}"));
    (rows, total)
}

/// Within the rounding of two printed decimals (each figure is off by up to 0.005).
fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance + 1e-9
}

/// The table's arithmetic, as printed with two decimals.
fn check_table(rows: &[Row], total: &Row, io_size: f64, text: &str) {
    assert!(!rows.is_empty(), "no rows:\n{text}");
    let mib_per_io = io_size / (1u64 << 20) as f64;
    for r in rows.iter().chain([total]) {
        assert!(r.iops > 0.0, "{} did no I/O:\n{text}", r.name);
        assert!(
            close(r.mibps, r.iops * mib_per_io, 0.005 + 0.005 * mib_per_io),
            "{}: MiB/s {} is not IOPS {} x {io_size} / 2^20:\n{text}",
            r.name,
            r.mibps,
            r.iops
        );
        assert!(
            r.min <= r.avg + 0.01 && r.avg <= r.max + 0.01 && r.min > 0.0,
            "{}: not min {} <= average {} <= max {}:\n{text}",
            r.name,
            r.min,
            r.avg,
            r.max
        );
    }
    let n = rows.len() as f64;
    let sum = |f: fn(&Row) -> f64| rows.iter().map(f).sum::<f64>();
    assert!(
        close(total.iops, sum(|r| r.iops), 0.005 * (n + 1.0)),
        "Total IOPS {} is not the sum of the rows {}:\n{text}",
        total.iops,
        sum(|r| r.iops)
    );
    assert!(
        close(total.mibps, sum(|r| r.mibps), 0.005 * (n + 1.0)),
        "Total MiB/s {} is not the sum of the rows {}:\n{text}",
        total.mibps,
        sum(|r| r.mibps)
    );
    let fold = |f: fn(&Row) -> f64, init: f64, pick: fn(f64, f64) -> f64| {
        rows.iter().map(f).fold(init, pick)
    };
    assert!(
        close(total.min, fold(|r| r.min, f64::MAX, f64::min), 0.0),
        "Total min is not the rows' smallest:\n{text}"
    );
    assert!(
        close(total.max, fold(|r| r.max, 0.0, f64::max), 0.0),
        "Total max is not the rows' largest:\n{text}"
    );
    // Total average: over all I/Os, so the rows' averages weighted by their I/Os
    // (the rows ran equally long, so by IOPS).
    let weighted = rows.iter().map(|r| r.avg * r.iops).sum::<f64>() / sum(|r| r.iops);
    assert!(
        close(total.avg, weighted, 0.01 + weighted * 0.01),
        "Total average {} is not the rows' I/O-weighted average {weighted}:\n{text}",
        total.avg
    );
}

/// spdk_nvme_perf's row name for a device, namespace and core.
fn row_name(device: &str, nsid: u64, core: u64) -> String {
    format!("PCIE ({device}) NSID {nsid} from core {core}")
}

// ---------------------------------------------------------------- nvme-perf's JSON

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing or not a number in {v}"))
}

fn close_rel(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-9
}

/// The JSON document's arithmetic; returns its row names.
fn check_json(doc: &Value, io_size: u64, percentiles: bool) -> BTreeSet<String> {
    assert_eq!(doc["config"]["io_size"], io_size, "{doc}");
    let rows = doc["namespaces"].as_array().expect("namespaces array");
    assert!(!rows.is_empty(), "{doc}");
    let mut names = BTreeSet::new();
    let (mut ios, mut iops, mut mibps, mut lat_sum) = (0u64, 0.0, 0.0, 0.0);
    let (mut min, mut max) = (f64::MAX, 0.0f64);
    for r in rows {
        let name = row_name(
            r["device"].as_str().expect("device"),
            r["nsid"].as_u64().expect("nsid"),
            r["core"].as_u64().expect("core"),
        );
        assert!(names.insert(name.clone()), "{name} twice in {doc}");
        let n = r["ios"].as_u64().expect("ios");
        assert!(n > 0, "{name} did no I/O: {r}");
        assert!(r["reads"].as_u64().expect("reads") <= n, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["verify_mismatches"], 0, "{r}");
        let secs = f(r, "/seconds");
        assert!(secs > 0.5, "{r}");
        assert!(close_rel(f(r, "/iops"), n as f64 / secs), "iops: {r}");
        assert!(
            close_rel(f(r, "/mibps"), f(r, "/iops") * io_size as f64 / 1048576.0),
            "mibps: {r}"
        );
        let (a, lo, hi) = (
            f(r, "/latency_us/average"),
            f(r, "/latency_us/min"),
            f(r, "/latency_us/max"),
        );
        assert!(0.0 < lo && lo <= a && a <= hi, "latency: {r}");
        if percentiles {
            let p = r["latency_us"]["percentiles"]
                .as_object()
                .unwrap_or_else(|| panic!("no percentiles: {r}"));
            let keys: Vec<&str> = p.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                ["1", "10", "25", "50", "75", "90", "99", "99.9", "99.99"],
                "{r}"
            );
            let vals: Vec<f64> = p.values().map(|v| v.as_f64().expect("us")).collect();
            assert!(vals.windows(2).all(|w| w[0] <= w[1]), "not rising: {r}");
            // hdrhistogram keeps three significant digits.
            assert!(vals[0] >= lo * 0.999 && vals[8] <= hi * 1.001, "{r}");
        }
        ios += n;
        iops += f(r, "/iops");
        mibps += f(r, "/mibps");
        lat_sum += a * n as f64;
        min = min.min(lo);
        max = max.max(hi);
    }
    let t = &doc["total"];
    assert_eq!(t["ios"].as_u64(), Some(ios), "{doc}");
    assert_eq!(t["errors"], 0, "{doc}");
    assert!(close_rel(f(t, "/iops"), iops), "total iops: {doc}");
    assert!(close_rel(f(t, "/mibps"), mibps), "total mibps: {doc}");
    assert!(
        close_rel(f(t, "/latency_us/average"), lat_sum / ios as f64),
        "{doc}"
    );
    assert_eq!(f(t, "/latency_us/min"), min, "{doc}");
    assert_eq!(f(t, "/latency_us/max"), max, "{doc}");
    names
}

fn parse_json(c: &Case) -> Value {
    serde_json::from_str(&c.out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", c.out))
}

// ---------------------------------------------------------------- usage errors

/// A usage error: exit 2 and one line on stderr that names what to fix.
fn assert_usage_error(cases: &BTreeMap<String, Case>, name: &str, needles: &[&str]) {
    let c = &cases[name];
    assert_eq!(c.rc, 2, "{name}: {c:#?}");
    let lines: Vec<&str> = c.err.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: not one line: {c:#?}");
    assert!(lines[0].starts_with("nvme-perf: "), "{name}: {c:#?}");
    for n in needles {
        assert!(lines[0].contains(n), "{name}: {n:?} missing: {c:#?}");
    }
    assert!(!c.out.contains("Total"), "{name}: ran anyway: {c:#?}");
}

// ---------------------------------------------------------------- tests

/// QEMU's trace event for a shutdown notification (CC.SHN written non-zero).
const SHUTDOWN_TRACE: &str = "pci_nvme_mmio_shutdown_set";

/// single, null-co (32 MiB): nvme-perf's table and JSON, its usage errors, and
/// nvme-identify's text and JSON, in one boot.
#[test]
fn perf_table_json_usage_errors_and_identify_on_single() {
    let started = Instant::now();
    let script = format!(
        r#"{RUN_CASE}
run_case table nvme-perf -q 32 -o 4096 -w randread -t 2
run_case json nvme-perf -q 32 -o 4096 -w randread -t 1 -L --json -r 'trtype:PCIe traddr:0000.01.00.0 ns:1'
run_case bad_traddr nvme-perf -q 1 -o 4096 -w randread -t 1 -r 'trtype:PCIe traddr:0000:01:00'
run_case bad_ns nvme-perf -q 1 -o 4096 -w randread -t 1 -r 'trtype:PCIe traddr:0000:01:00.0 ns:x'
run_case bad_trtype nvme-perf -q 1 -o 4096 -w randread -t 1 -r 'trtype:RDMA traddr:0000:01:00.0'
run_case bad_cores nvme-perf -q 1 -o 4096 -w randread -t 1 -c 0xff
run_case bad_q0 nvme-perf -q 0 -o 4096 -w randread -t 1
run_case qdeep nvme-perf -q 4096 -o 4096 -w randread -t 1
run_case bad_o nvme-perf -q 1 -o 1000 -w randread -t 1
run_case bad_o_big nvme-perf -q 1 -o 64m -w randread -t 1
run_case bad_w nvme-perf -q 1 -o 4096 -w randomread -t 1
run_case bad_m nvme-perf -q 1 -o 4096 -w randrw -M 101 -t 1
run_case identify nvme-identify
run_case identify_json nvme-identify --json
run_case deep nvme-perf -q 64 -o 4096 -w randread -t 1 --io-queue-size 16 -Q 1 -L
run_case spdk_opts nvme-perf -q 8 -o 4096 -w randrw -M 70 -t 1 -i 0 -s 64 -O 512 -g -b 0000:01:00.0 -N -m -LL --plot /tmp/perf.svg
run_case plot_check grep -c 'Latency CDF' /tmp/perf.svg
run_case number_ios nvme-perf -q 8 -o 4096 -w randread -t 30 -d 3000 --json
run_case refused nvme-perf -q 1 -o 4096 -w randread -t 1 -e PRACT=1
run_case refused_long nvme-perf -q 1 -o 4096 -w randread -t 1 --psk-path /tmp/key
run_case bad_b nvme-perf -q 1 -o 4096 -w randread -t 1 -b 0000:09:00.0
"#
    );
    let out = Guest::new(Topology::Single)
        .backing(Backing::Null)
        .disk_size("32M")
        .timeout(Duration::from_secs(240))
        .args(["--trace", SHUTDOWN_TRACE])
        .run(&script);
    out.assert_success();
    let cs = cases(&out);

    // The orderly stop, seen by QEMU's controller (issue 23): each nvme-perf and
    // nvme-identify run that ended normally sent CC.SHN once; `-N` (spdk_opts, which
    // also ends normally) none; usage errors never reached the controller.
    let notified = out
        .stderr
        .lines()
        .filter(|l| l.contains(SHUTDOWN_TRACE))
        .count();
    let normal = [
        "table",
        "json",
        "qdeep",
        "identify",
        "identify_json",
        "deep",
        "number_ios",
    ];
    for name in normal.iter().chain(["spdk_opts"].iter()) {
        assert_eq!(case(&cs, name, &out).rc, 0, "{name} ended normally");
    }
    assert_eq!(
        notified,
        normal.len(),
        "QEMU saw CC.SHN {notified} times; runs that ended normally without -N: {normal:?}"
    );

    // The table: one row, the sums, the units.
    let table = ok(&cs, "table", &out);
    assert!(
        table
            .out
            .contains("No -r given: using every NVMe controller bound to vfio-pci: 0000:01:00.0"),
        "{table:#?}"
    );
    assert!(
        table
            .out
            .contains("Attached to NVMe Controller at 0000:01:00.0 [1b36:"),
        "{table:#?}"
    );
    let (rows, total) = parse_table(&table.out);
    check_table(&rows, &total, 4096.0, &table.out);
    assert_eq!(rows.len(), 1, "{}", table.out);
    assert_eq!(
        rows[0].name,
        row_name("0000:01:00.0", 1, 0),
        "{}",
        table.out
    );
    assert!(table.out.contains("Driver counters (measured phase):"));
    // spdk_nvme_perf's row name: the PCI vendor:device ID after the address.
    assert!(
        table
            .out
            .contains("PCIE (0000:01:00.0) [1b36:0010] NSID 1 from core  0: "),
        "{}",
        table.out
    );

    // JSON: stdout is the document (the narration went to stderr) and agrees with the
    // table: the same row, the same arithmetic, a figure of the same order.
    let json = ok(&cs, "json", &out);
    assert!(
        json.err
            .contains("Attached to NVMe Controller at 0000:01:00.0"),
        "{json:#?}"
    );
    let doc = parse_json(json);
    let json_ios = doc["total"]["ios"].as_u64().expect("total ios");
    assert_eq!(doc["config"]["queue_depth"], 32);
    assert_eq!(doc["config"]["workload"], "randread");
    assert_eq!(doc["config"]["read_percent"], 100);
    let names = check_json(&doc, 4096, true);
    let table_names: BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, table_names, "{doc}");
    let ratio = f(&doc, "/total/iops") / total.iops;
    assert!(
        (0.1..10.0).contains(&ratio),
        "JSON run {} IOPS vs table run {} IOPS",
        f(&doc, "/total/iops"),
        total.iops
    );
    assert_eq!(
        f(&doc, "/namespaces/0/reads"),
        f(&doc, "/namespaces/0/ios"),
        "randread only reads"
    );

    // Usage errors: exit 2, one line, naming the field.
    assert_usage_error(
        &cs,
        "bad_traddr",
        &["traddr", "0000:01:00", "not a PCI address"],
    );
    assert_usage_error(&cs, "bad_ns", &["ns 'x'"]);
    assert_usage_error(&cs, "bad_trtype", &["trtype 'RDMA'"]);
    assert_usage_error(&cs, "bad_cores", &["-c 0xff", "not available", "0-1"]);
    assert_usage_error(&cs, "bad_q0", &["-q 0"]);
    // Deeper than the largest queue (CAP.MQES): accepted with spdk_nvme_perf's warning,
    // the excess waits in the driver and is counted.
    let qdeep = ok(&cs, "qdeep", &out);
    assert!(
        qdeep
            .err
            .contains("less than required (4096 I/Os per queue pair)")
            || qdeep
                .out
                .contains("less than required (4096 I/Os per queue pair)"),
        "no queue warning:\n{}{}",
        qdeep.out,
        qdeep.err
    );
    assert!(qdeep.out.contains("queued in the driver"), "{}", qdeep.out);
    assert_usage_error(&cs, "bad_o", &["-o 1000", "block size 512"]);
    assert_usage_error(&cs, "bad_o_big", &["larger than 0000:01:00.0 NSID 1"]);
    assert_usage_error(&cs, "bad_w", &["-w randomread", "randread"]);
    assert_usage_error(&cs, "bad_m", &["-M 101", "0 to 100"]);

    // nvme-identify: what QEMU reports, and the namespace's size (32 MiB of 512 B).
    let id = ok(&cs, "identify", &out);
    let field = |name: &str| -> String {
        id.out
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name}: line in:\n{}", id.out))
            .trim()
            .to_string()
    };
    assert_eq!(field("Vid"), "0x1b36");
    assert_eq!(field("Serial"), "single0");
    assert_eq!(field("Model"), "QEMU NVMe Ctrl");
    assert_eq!(field("Size bytes"), (32u64 << 20).to_string());
    assert_eq!(field("Size blocks"), (32u64 << 11).to_string());
    assert_eq!(field("Block size"), "512");
    let doc = parse_json(ok(&cs, "identify_json", &out));
    let ctrls = doc["controllers"].as_array().expect("controllers");
    assert_eq!(ctrls.len(), 1, "{doc}");
    let c = &ctrls[0];
    assert_eq!(c["pci_address"], "0000:01:00.0", "{doc}");
    let vid = &c["identity"]["vid"];
    assert!(vid == "0x1b36" || vid == 0x1b36, "vid {vid}");
    assert_eq!(c["identity"]["serial"], "single0");
    assert_eq!(c["identity"]["model"], "QEMU NVMe Ctrl");
    let ns = &c["namespaces"][0];
    assert_eq!(ns["nsid"], 1, "{doc}");
    assert_eq!(ns["size_bytes"], 32u64 << 20, "{doc}");
    assert_eq!(
        ns["size_blocks"].as_u64().zip(ns["block_size"].as_u64()),
        Some((32 << 11, 512)),
        "{doc}"
    );
    // The health log counted the reads nvme-perf did before it.
    let reads: u64 = c["health"]["host_read_commands"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| c["health"]["host_read_commands"].as_u64())
        .expect("host_read_commands");
    assert!(
        reads >= json_ios,
        "{reads} reads < the JSON run's {json_ios}: {doc}"
    );

    // A depth deeper than the queue: spdk_nvme_perf's warning, the excess waits in the
    // driver and is counted; -L prints spdk_nvme_perf's fifteen cutoffs.
    let deep = ok(&cs, "deep", &out);
    assert!(
        deep.out
            .contains("Controller IO queue size 16, less than required (64 I/Os per queue pair)."),
        "{deep:#?}"
    );
    let (rows, total) = parse_table(&deep.out);
    check_table(&rows, &total, 4096.0, &deep.out);
    assert!(deep.out.contains(", queued in the driver "), "{deep:#?}");
    assert_eq!(
        deep.out.lines().filter(|l| l.contains("% : ")).count(),
        15,
        "{deep:#?}"
    );
    assert!(deep.out.contains(" 99.99999% : "), "{deep:#?}");
    // The accepted spdk_nvme_perf options: notes once, CPU usage, the histogram, the
    // picture (-O makes each I/O a vectored request, checked with --verify and a
    // refusal in the setup test).
    let spdk = ok(&cs, "spdk_opts", &out);
    for needle in [
        "-i 0: there is no shared memory here",
        "-g: there are no DPDK memory segments here",
        "CPU usage (polls that found completions):",
        "Latency histogram for PCIE (0000:01:00.0) [1b36:0010] NSID 1",
        "       Range in us     Cumulative    IO count",
    ] {
        assert!(spdk.out.contains(needle), "{needle}: {spdk:#?}");
    }
    let (rows, total) = parse_table(&spdk.out);
    check_table(&rows, &total, 4096.0, &spdk.out);
    assert!(spdk.err.contains("wrote /tmp/perf.svg"), "{spdk:#?}");
    assert_eq!(ok(&cs, "plot_check", &out).out.trim(), "1");
    // -d: exactly that many I/Os, then the run ends before -t.
    let doc = parse_json(ok(&cs, "number_ios", &out));
    assert_eq!(doc["total"]["ios"], 3000, "{doc}");
    assert!(f(&doc, "/namespaces/0/seconds") < 25.0, "{doc}");
    // Every other spdk_nvme_perf option is refused by name.
    assert_usage_error(
        &cs,
        "refused",
        &["-e (--metadata)", "protection information"],
    );
    assert_usage_error(&cs, "refused_long", &["--psk-path", "TCP transport option"]);
    let b = case(&cs, "bad_b", &out);
    assert_eq!(b.rc, 1, "{b:#?}");
    assert!(b.err.contains("0000:09:00.0"), "{b:#?}");

    eprintln!("single: guest {:.1} s", started.elapsed().as_secs_f64());
}

/// multi, null-co, two cores: four rows (two controllers x two cores) whose Total adds
/// up, in the table and in JSON; nvme-identify sees both controllers.
#[test]
fn perf_on_multi_with_two_cores_has_four_rows_that_add_up() {
    let started = Instant::now();
    let script = format!(
        r#"{RUN_CASE}
run_case table nvme-perf -q 32 -o 4096 -w randread -t 2 -c 0x3
run_case json nvme-perf -q 16 -o 8192 -w randrw -M 50 -t 1 -c '[0-1]' --json
run_case identify_json nvme-identify --json
{SPDK_AND_NVME_CLI_CASES}"#
    );
    let out = Guest::new(Topology::Multi)
        .backing(Backing::Null)
        .timeout(Duration::from_secs(240))
        .run(&script);
    out.assert_success();
    let cs = cases(&out);
    let want: BTreeSet<String> = ["0000:01:00.0", "0000:02:00.0"]
        .iter()
        .flat_map(|d| (0..2).map(move |c| row_name(d, 1, c)))
        .collect();

    let table = ok(&cs, "table", &out);
    let (rows, total) = parse_table(&table.out);
    assert_eq!(rows.len(), 4, "{}", table.out);
    check_table(&rows, &total, 4096.0, &table.out);
    let names: BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, want, "{}", table.out);
    for core in 0..2 {
        assert!(
            table.out.contains(&format!(
                "Associating PCIE (0000:02:00.0) NSID 1 with lcore {core}"
            )),
            "{}",
            table.out
        );
    }

    let doc = parse_json(ok(&cs, "json", &out));
    assert_eq!(check_json(&doc, 8192, false), want, "{doc}");
    assert_eq!(doc["config"]["cores"], serde_json::json!([0, 1]));
    assert_eq!(doc["config"]["read_percent"], 50);
    for r in doc["namespaces"].as_array().expect("rows") {
        let (reads, ios) = (f(r, "/reads"), f(r, "/ios"));
        assert!(
            reads > ios * 0.3 && reads < ios * 0.7,
            "randrw -M 50: {reads} reads of {ios}"
        );
    }

    let doc = parse_json(ok(&cs, "identify_json", &out));
    let serials: Vec<&str> = doc["controllers"]
        .as_array()
        .expect("controllers")
        .iter()
        .map(|c| c["identity"]["serial"].as_str().expect("serial"))
        .collect();
    assert_eq!(serials, ["multi0", "multi1"], "{doc}");
    check_spdk_and_nvme_cli_cases(&cs, &out, &doc);
    eprintln!("multi: guest {:.1} s", started.elapsed().as_secs_f64());
}

// ------------------------------------- spdk_nvme_identify's and nvme-cli's words

/// Commands for [`check_spdk_and_nvme_cli_cases`], run in the multi boot (issue 25):
/// nvme-cli's `-o json` for a controller and for a namespace, spdk_nvme_identify's
/// options, and nvme-perf's attach line and `-G`.
const SPDK_AND_NVME_CLI_CASES: &str = r#"run_case cli_ctrl nvme-identify -o json 01:00.0
run_case cli_ns nvme-identify --output-format json -r 'trtype:PCIe traddr:0000:02:00.0 ns:1'
run_case spdk_identify nvme-identify -x -i 0 -p 0 -d 64 -g -L nvme -r 'trtype:PCIe traddr:0000:01:00.0'
run_case spdk_identify_vmd nvme-identify -V
run_case perf_debug nvme-perf -q 1 -o 4096 -w read -t 1 -G -r 'trtype:PCIe traddr:0000:02:00.0'
"#;

/// `nvme id-ctrl -o json`'s keys that scripts read (nvme-cli's nvme-print-json.c):
/// numbers.
const ID_CTRL_NUMBERS: &[&str] = &[
    "vid", "ssvid", "rab", "ieee", "cmic", "mdts", "cntlid", "ver", "oacs", "acl", "aerl", "frmw",
    "lpa", "elpe", "npss", "sqes", "cqes", "maxcmd", "nn", "oncs", "vwc", "sgls", "tnvmcap",
];

/// `nvme id-ns -o json`'s keys that scripts read: numbers.
const ID_NS_NUMBERS: &[&str] = &["nsze", "ncap", "nuse", "nsfeat", "nlbaf", "flbas", "nmic"];

/// The checks of [`SPDK_AND_NVME_CLI_CASES`] against QEMU's controllers (PCI ID
/// 1b36:0010, Identify VID 1b36, SSVID 1af4); `own` is nvme-identify's own JSON of the
/// same boot.
fn check_spdk_and_nvme_cli_cases(cs: &BTreeMap<String, Case>, out: &e2e::GuestOutput, own: &Value) {
    // nvme-perf names the PCI vendor and device ID where spdk_nvme_perf does, on the
    // attach line as in the row names.
    let table = ok(cs, "table", out);
    for bdf in ["0000:01:00.0", "0000:02:00.0"] {
        let want = format!("Attached to NVMe Controller at {bdf} [1b36:0010] QEMU NVMe Ctrl");
        assert!(table.out.contains(&want), "{want}: {table:#?}");
    }
    let perf = ok(cs, "perf_debug", out);
    assert!(
        perf.out
            .contains("Attached to NVMe Controller at 0000:02:00.0 [1b36:0010]"),
        "{perf:#?}"
    );
    assert!(
        perf.out
            .contains("PCIE (0000:02:00.0) [1b36:0010] NSID 1 from core  0: "),
        "{perf:#?}"
    );

    // `nvme id-ctrl -o json`: nvme-cli's keys and types, trimmed strings, no
    // nvme-identify keys.
    let c = parse_json(ok(cs, "cli_ctrl", out));
    for k in ID_CTRL_NUMBERS {
        assert!(c[k].is_u64(), "id-ctrl {k} is not a number: {c}");
    }
    assert_eq!(c["vid"], 0x1b36, "{c}");
    assert_eq!(c["ssvid"], 0x1af4, "{c}");
    assert_eq!(c["sn"], "multi0", "{c}");
    assert_eq!(c["mn"], "QEMU NVMe Ctrl", "{c}");
    let fr = c["fr"].as_str().expect("fr is a string");
    assert!(!fr.is_empty() && fr.trim() == fr, "fr {fr:?}");
    let nqn = c["subnqn"].as_str().expect("subnqn is a string");
    assert!(nqn.starts_with("nqn."), "{c}");
    assert!(c["psds"].is_array(), "{c}");
    assert!(
        c.get("serial").is_none() && c.get("identity").is_none(),
        "{c}"
    );
    let own_ctrl = &own["controllers"][0];
    assert_eq!(c["cntlid"], own_ctrl["identity"]["cntlid"], "{c}");
    assert_eq!(c["subnqn"], own_ctrl["identity"]["subnqn"], "{c}");

    // `nvme id-ns -o json` for the namespace named with ns:1.
    let n = parse_json(ok(cs, "cli_ns", out));
    for k in ID_NS_NUMBERS {
        assert!(n[k].is_u64(), "id-ns {k} is not a number: {n}");
    }
    let own_ns = &own["controllers"][1]["namespaces"][0];
    assert_eq!(n["nsze"], own_ns["size_blocks"], "{n}");
    assert_eq!(n["ncap"], own_ns["capacity_blocks"], "{n}");
    let lbafs = n["lbafs"].as_array().expect("lbafs");
    assert_eq!(lbafs.len() as u64, n["nlbaf"].as_u64().unwrap() + 1, "{n}");
    let cur = &lbafs[(n["flbas"].as_u64().unwrap() & 0xf) as usize];
    for k in ["ms", "ds", "rp"] {
        assert!(cur[k].is_u64(), "lbafs {k}: {n}");
    }
    assert_eq!(
        1u64 << cur["ds"].as_u64().unwrap(),
        own_ns["block_size"].as_u64().unwrap(),
        "{n}"
    );

    // spdk_nvme_identify's options: -x dumps the raw data (VID 1b36 first, little
    // endian), -i -p -d -g are noted once each on stderr, -V is refused by name.
    let id = ok(cs, "spdk_identify", out);
    assert!(
        id.out
            .contains("Identify Controller data of 0000:01:00.0 (hex):\n00000000: 36 1B F4 1A"),
        "{id:#?}"
    );
    assert!(
        id.out.contains("Identify Namespace data of NSID 1 (hex):"),
        "{id:#?}"
    );
    assert!(id.out.contains("Serial:"), "{id:#?}");
    for note in ["-i 0: ", "-p 0: ", "-d 64: ", "-g: "] {
        assert_eq!(
            id.err.lines().filter(|l| l.starts_with(note)).count(),
            1,
            "{note}: {id:#?}"
        );
    }
    let vmd = case(cs, "spdk_identify_vmd", out);
    assert_eq!(vmd.rc, 2, "{vmd:#?}");
    assert!(vmd.err.contains("-V (enumerate VMD)"), "{vmd:#?}");
}

/// The kernel modules that mount ext2 (busybox has mke2fs; the guest kernel has no
/// disk filesystem built in), from the runner's kernel cache, if it is there.
fn ext2_modules() -> Option<Vec<PathBuf>> {
    let cache = std::env::var_os("NVME_QEMU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("qemu-cache"));
    let versions = std::fs::read_dir(cache.join("kernel/lib/modules")).ok()?;
    for v in versions.flatten() {
        let k = v.path().join("kernel");
        let mods: Vec<PathBuf> = [
            "crypto/crc32c_generic.ko",
            "lib/crc16.ko",
            "fs/mbcache.ko",
            "fs/jbd2/jbd2.ko",
            "fs/ext4/ext4.ko",
        ]
        .iter()
        .map(|m| k.join(m))
        .collect();
        if mods.iter().all(|m| m.is_file()) {
            return Some(mods);
        }
    }
    None
}

/// The status line of controller `bdf`: BDF, vendor:device, driver, group, viable...
fn status_line<'a>(c: &'a Case, bdf: &str) -> Vec<&'a str> {
    c.out
        .lines()
        .find(|l| l.starts_with(bdf))
        .unwrap_or_else(|| panic!("{bdf} not in status: {c:#?}"))
        .split_whitespace()
        .collect()
}

/// single, raw disk, booted on the kernel's nvme driver: nvme-setup status and bind;
/// nvme-perf --verify passes on what a write run wrote, fails with another seed and,
/// naming the first overwritten LBA, after dd overwrote blocks through the kernel
/// driver (nvme-setup unbind, dd, bind); nvme-setup refuses a controller with a mounted
/// filesystem and one used as swap. Without ext4 modules in the kernel cache the
/// mounted-filesystem refusal cannot be staged: that is a skip (`e2e::skip`), a failure
/// unless `NVME_TESTS_ALLOW_SKIP=1`.
#[test]
fn setup_bind_unbind_verify_and_refusals_on_single() {
    let started = Instant::now();
    let mods = ext2_modules();
    let mut guest = Guest::new(Topology::Single)
        .bind(Bind::Nvme)
        .timeout(Duration::from_secs(240));
    let mut mount = String::from("echo 'SKIP mount: no ext4 modules in the kernel cache'");
    if let Some(mods) = &mods {
        let mut insmod = String::new();
        for m in mods {
            guest = guest.include(m);
            let name = m.file_name().unwrap().to_string_lossy().into_owned();
            let module = name.trim_end_matches(".ko");
            insmod.push_str(&format!(
                "[ -d /sys/module/{module} ] || insmod /usr/local/bin/{name}\n"
            ));
        }
        mount = format!(
            r#"{insmod}
mke2fs /dev/nvme0n1 >/dev/null 2>&1
mkdir -p /mnt/nvme
mount -t ext2 /dev/nvme0n1 /mnt/nvme && echo MOUNTED
run_case status_mounted nvme-setup status
run_case bind_mounted nvme-setup bind
run_case driver_mounted readlink /sys/bus/pci/devices/0000:01:00.0/driver
umount /mnt/nvme"#
        );
    }
    let script = format!(
        r#"{RUN_CASE}
wait_blk() {{
    i=0
    while [ ! -b /dev/nvme0n1 ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
}}
nvme-qemu-modload vfio
run_case status_nvme nvme-setup status
run_case bind nvme-setup bind
run_case status_vfio nvme-setup status
run_case write nvme-perf -q 16 -o 4096 -w write -t 1 --verify --seed 7
run_case verify_ok nvme-perf -q 16 -o 8192 -w randread -t 1 --verify --seed 7
run_case wrong_seed nvme-perf -q 4 -o 4096 -w randread -t 1 --verify --seed 8
run_case units_sgl nvme-perf -q 8 -o 65536 -O 4096 -w randread -t 1 --verify --seed 7
run_case units_prp nvme-perf -q 8 -o 65536 -O 4096 -w randread -t 1 --verify --seed 7 --no-sgl
run_case units_odd_sgl nvme-perf -q 8 -o 65536 -O 1536 -w randread -t 1 --verify --seed 7
run_case units_odd_prp nvme-perf -q 1 -o 65536 -O 1536 -w read -t 1 --no-sgl
run_case unbind nvme-setup unbind
wait_blk
run_case status_back nvme-setup status
run_case dd dd if=/dev/urandom of=/dev/nvme0n1 bs=512 seek=8000 count=64 conv=fsync
run_case rebind nvme-setup bind
run_case verify_bad nvme-perf -q 1 -o 4096 -w read -t 2 --verify --seed 7
run_case unbind2 nvme-setup unbind
wait_blk
{mount}
mkswap /dev/nvme0n1 >/dev/null && swapon /dev/nvme0n1 && echo SWAPON
run_case bind_swap nvme-setup bind
swapoff /dev/nvme0n1
run_case bind_last nvme-setup bind
run_case status_last nvme-setup status
"#
    );
    let out = guest.run(&script);
    out.assert_success();
    let cs = cases(&out);
    let bdf = "0000:01:00.0";

    // Booted on nvme: status shows the driver and the namespace's block device.
    let s = ok(&cs, "status_nvme", &out);
    assert!(s.out.contains("IOMMU: enabled"), "{s:#?}");
    let l = status_line(s, bdf);
    assert_eq!(&l[1..3], ["1b36:0010", "nvme"], "{s:#?}");
    assert!(l.contains(&"nvme0n1"), "{s:#?}");
    // bind: to vfio-pci, in an IOMMU group VFIO can use.
    let b = ok(&cs, "bind", &out);
    assert!(
        b.out
            .contains(&format!("{bdf}: nvme -> vfio-pci, /dev/vfio/")),
        "{b:#?}"
    );
    let s = ok(&cs, "status_vfio", &out);
    let l = status_line(s, bdf);
    assert_eq!(l[2], "vfio-pci", "{s:#?}");
    let group: u32 = l[3].parse().unwrap_or_else(|_| panic!("group: {s:#?}"));
    assert!(b.out.contains(&format!("/dev/vfio/{group}")), "{b:#?}");
    assert_eq!(l[4], "yes", "group not viable: {s:#?}");

    // --verify: the write run fills the namespace with the pattern, a read run with the
    // same seed checks every read...
    let w = ok(&cs, "write", &out);
    assert!(
        w.err.contains("verify: writing the pattern (seed 7)"),
        "{w:#?}"
    );
    let (rows, total) = parse_table(&w.out);
    check_table(&rows, &total, 4096.0, &w.out);
    // A verified read run: its table adds up for `bytes` per I/O, every read matched.
    let read_back = |name: &str, bytes: f64| {
        let c = ok(&cs, name, &out);
        let (rows, total) = parse_table(&c.out);
        check_table(&rows, &total, bytes, &c.out);
        assert!(
            c.out.contains("verify: every read matched the pattern ("),
            "{name}: {c:#?}"
        );
    };
    read_back("verify_ok", 8192.0);
    // ...and another seed's pattern is not what is on the disk.
    let bad = case(&cs, "wrong_seed", &out);
    assert_eq!(bad.rc, 1, "{bad:#?}");
    assert!(
        bad.out.contains("verify: MISMATCH at LBA ")
            && bad.out.contains(&format!("of {bdf} NSID 1")),
        "{bad:#?}"
    );
    assert!(
        bad.out
            .contains("expected 0x0000000000000008, found 0x0000000000000007"),
        "{bad:#?}"
    );

    // -O: each 64 KiB read is a vectored request of I/O units (16 of 4 KiB, or 43 of
    // 1536 bytes) over the device's real SGL and PRP paths, and reads back the pattern:
    // SGL segments take any unit; PRPs take page-joined units and refuse the others,
    // naming the slice and the rule.
    for name in ["units_sgl", "units_prp", "units_odd_sgl"] {
        read_back(name, 65536.0);
    }
    let odd = case(&cs, "units_odd_prp", &out);
    assert_ne!(odd.rc, 0, "{odd:#?}");
    assert!(
        format!("{}{}", odd.out, odd.err).contains(
            "slice 0 ends inside a 4 KiB page; with PRPs (no SGL support, or enable_sgl off)"
        ),
        "{odd:#?}"
    );

    // unbind: back on nvme, where dd overwrote LBAs 8000 to 8063.
    let u = ok(&cs, "unbind", &out);
    assert!(
        u.out.contains(&format!("{bdf}: vfio-pci -> nvme")),
        "{u:#?}"
    );
    let s = ok(&cs, "status_back", &out);
    let l = status_line(s, bdf);
    assert_eq!(l[2], "nvme", "{s:#?}");
    assert!(l.contains(&"nvme0n1"), "{s:#?}");
    ok(&cs, "dd", &out);
    ok(&cs, "rebind", &out);
    // A sequential read at depth 1 meets the overwritten blocks first at LBA 8000.
    let bad = case(&cs, "verify_bad", &out);
    assert_eq!(bad.rc, 1, "{bad:#?}");
    assert!(
        bad.out
            .contains(&format!("verify: MISMATCH at LBA 8000 of {bdf} NSID 1")),
        "{bad:#?}"
    );
    let differed: u64 = bad
        .out
        .split("; ")
        .find_map(|p| p.strip_suffix(" reads differed")?.parse().ok())
        .unwrap_or_else(|| panic!("no count of differing reads: {bad:#?}"));
    assert!(
        differed >= 8,
        "64 blocks overwritten = 8 reads of 4 KiB: {bad:#?}"
    );

    // Refusals: a mounted filesystem, swap. The controller stays on nvme.
    ok(&cs, "unbind2", &out);
    if mods.is_some() {
        assert!(out.stdout.contains("MOUNTED"), "ext2 did not mount:\n{out}");
        let s = ok(&cs, "status_mounted", &out);
        assert!(
            s.out.contains("/mnt/nvme"),
            "status shows the mount: {s:#?}"
        );
        let r = case(&cs, "bind_mounted", &out);
        assert_eq!(r.rc, 1, "{r:#?}");
        assert!(
            r.err.contains(&format!(
                "{bdf}: refusing to bind: /dev/nvme0n1 is mounted on /mnt/nvme"
            )),
            "{r:#?}"
        );
        let d = ok(&cs, "driver_mounted", &out);
        assert!(d.out.ends_with("/nvme"), "{d:#?}");
    }
    assert!(out.stdout.contains("SWAPON"), "swapon failed:\n{out}");
    let r = case(&cs, "bind_swap", &out);
    assert_eq!(r.rc, 1, "{r:#?}");
    assert!(
        r.err.contains(&format!(
            "{bdf}: refusing to bind: /dev/nvme0n1 is in use as swap"
        )),
        "{r:#?}"
    );
    ok(&cs, "bind_last", &out);
    assert_eq!(
        status_line(ok(&cs, "status_last", &out), bdf)[2],
        "vfio-pci"
    );
    eprintln!("setup: guest {:.1} s", started.elapsed().as_secs_f64());
    // Last, so that every other check has run: a skip fails the test unless
    // NVME_TESTS_ALLOW_SKIP=1 (Debian kernels whose modules are compressed land here).
    if mods.is_none() {
        e2e::skip(
            "setup_bind_unbind_verify_and_refusals_on_single",
            "the refusal to bind a controller with a mounted filesystem",
            "no uncompressed ext4 modules (and their dependencies) in the QEMU kernel cache",
        );
    }
}

/// The main job: `qemu/perf -- OPTIONS` builds, boots and prints nvme-perf's table.
#[test]
fn qemu_perf_builds_boots_and_prints_the_table() {
    let started = Instant::now();
    let out = Command::new(repo_root().join("qemu").join("perf"))
        .args(["--", "-q", "4", "-o", "4096", "-w", "randread", "-t", "1"])
        .output()
        .expect("running qemu/perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "qemu/perf failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("Attached to NVMe Controller at 0000:01:00.0"),
        "{stdout}"
    );
    let (rows, total) = parse_table(&stdout);
    check_table(&rows, &total, 4096.0, &stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(
        stderr.contains("backing null"),
        "null-co backing by default:\n{stderr}"
    );
    eprintln!("qemu/perf: {:.1} s", started.elapsed().as_secs_f64());
}
