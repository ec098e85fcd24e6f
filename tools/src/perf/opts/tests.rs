// SPDX-License-Identifier: Apache-2.0 OR MIT
use super::*;

const CORES: &[usize] = &[0, 1];

fn run(line: &str) -> Result<PerfOptions, String> {
    // Split like a shell would, keeping single-quoted transport IDs whole.
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    match parse_args(args, CORES) {
        Ok(Command::Run(o)) => Ok(o),
        Ok(Command::Help) => Err("help".into()),
        Err(e) => Err(e.0),
    }
}

fn err(line: &str) -> String {
    run(line).expect_err(line)
}

#[test]
fn spdk_command_lines_parse() {
    let o =
        run("-q 32 -o 4096 -w randread -t 10 -c 0x1 -r 'trtype:PCIe traddr:0000:01:00.0 ns:1' -L")
            .unwrap();
    assert_eq!(o.queue_depth, 32);
    assert_eq!(o.io_size, 4096);
    assert_eq!(o.workload, Workload::RandRead);
    assert_eq!(o.read_percent, 100);
    assert_eq!(o.time_s, 10);
    assert_eq!(o.cores, vec![0]);
    assert_eq!(o.trids.len(), 1);
    assert_eq!(o.trids[0].nsid, Some(1));
    assert_eq!(o.latency_level, 1);
    let o = run("-q32 -o4k -wrandrw -M50 -t1 -a 1 -LL -P 2 --io-queue-size=64 --json --verify --seed 9 -c 0x3 -r 'trtype:PCIe traddr:0000.01.00.0' -r 'trtype:PCIe traddr:0000:02:00.0 ns:1'").unwrap();
    assert_eq!((o.queue_depth, o.io_size, o.read_percent), (32, 4096, 50));
    assert_eq!((o.warmup_s, o.latency_level, o.qpairs_per_ns), (1, 2, 2));
    assert_eq!(o.io_queue_size, Some(64));
    assert!(o.json && o.verify);
    assert_eq!(o.seed, 9);
    assert_eq!(o.cores, vec![0, 1]);
    assert_eq!(o.trids.len(), 2);
    let o = run("-q 1 -o 512 -w write -t 1 -L -L --io-queue-size 2").unwrap();
    assert_eq!((o.read_percent, o.latency_level), (0, 2));
    let o = run("--io-depth 4 --io-size 8192 --io-pattern rw --rwmixread 0 --time 2").unwrap();
    assert_eq!((o.queue_depth, o.io_size, o.read_percent), (4, 8192, 0));
    assert_eq!(o.multipath, None, "the direct mode stays the default");
    assert_eq!(run("-h").unwrap_err(), "help");
    assert_eq!(run("-q 1 --help").unwrap_err(), "help");
}

#[test]
fn multipath_and_policy() {
    use nvme_bdev::Policy;
    let base = "-q 8 -o 4096 -w randrw -M 50 -t 1";
    assert_eq!(run(base).unwrap().multipath, None);
    assert_eq!(
        run(&format!("{base} --multipath")).unwrap().multipath,
        Some(Policy::ActivePassive)
    );
    for (name, p) in [
        ("active-passive", Policy::ActivePassive),
        ("round-robin", Policy::RoundRobin),
        ("least-queue-depth", Policy::LeastQueueDepth),
    ] {
        let o = run(&format!(
                "{base} --multipath --policy {name} -r 'trtype:PCIe traddr:0000:01:00.0' -r 'trtype:PCIe traddr:0000:02:00.0'"
            ))
            .unwrap();
        assert_eq!(o.multipath, Some(p));
        assert_eq!(o.trids.len(), 2);
        let o = run(&format!("{base} --policy={name} --multipath")).unwrap();
        assert_eq!(o.multipath, Some(p));
    }
    assert!(err(&format!("{base} --multipath --policy fastest"))
        .contains("--policy fastest: unknown policy"));
    assert!(err(&format!("{base} --policy round-robin")).contains("add --multipath"));
    assert!(err(&format!("{base} --multipath -P 2")).contains("drop -P"));
    assert!(err(&format!("{base} --multipath=1")).contains("--multipath takes no value"));
    assert!(err(&format!("{base} --multipath --policy")).contains("--policy needs a value"));
}

#[test]
fn every_usage_error_says_what_to_fix() {
    let base = "-o 4096 -w randread -t 1";
    assert!(err(&format!("-q 0 {base}")).contains("-q 0: queue depth must be 1"));
    assert!(err(&format!("-q x {base}")).contains("-q x: queue depth must be a whole number"));
    assert!(err(&format!("-q 70000 {base}")).contains("queue depth must be 1 to"));
    assert!(err("-q 1 -o 0 -w read -t 1").contains("-o 0: I/O size"));
    assert!(err("-q 1 -o 4z -w read -t 1").contains("-o 4z"));
    assert!(err("-q 1 -o 1g -w read -t 1").contains("I/O size must be 1 byte to 64 MiB"));
    assert!(err("-q 1 -o 4096 -w readwrite -t 1").contains("-w readwrite: unknown workload"));
    assert!(err("-q 1 -o 4096 -w rw -t 1").contains("needs -M"));
    assert!(
        err("-q 1 -o 4096 -w randrw -M 101 -t 1").contains("-M 101: read percent must be 0 to 100")
    );
    assert!(
        err("-q 1 -o 4096 -w randrw -M -1 -t 1").contains("-M -1: read percent must be 0 to 100")
    );
    assert!(err("-q 1 -o 4096 -w randrw -M abc -t 1").contains("-M abc"));
    assert!(err("-q 1 -o 4096 -w read -t 0").contains("-t 0: run time"));
    assert!(err("-q 1 -o 4096 -w read -t 1 -a x").contains("-a x"));
    assert!(err(&format!("-q 1 {base} -c 0x4")).contains("core 2 not available"));
    assert!(err(&format!("-q 1 {base} -c zz")).contains("not a core mask"));
    assert!(err(&format!("-q 1 {base} -r 'trtype:RDMA traddr:1:0.0'")).contains("trtype 'RDMA'"));
    assert!(err(&format!("-q 1 {base} -r 'trtype:PCIe traddr:1:0'")).contains("traddr '1:0'"));
    assert!(err(&format!("-q 1 {base} -P 0")).contains("-P 0"));
    assert!(err(&format!("-q 1 {base} --io-queue-size 1")).contains("--io-queue-size 1"));
    // A depth deeper than an explicit queue is spdk_nvme_perf's: the excess waits.
    assert!(run(&format!("-q 64 {base} --io-queue-size 64")).is_ok());
    assert!(run(&format!("-q 64 {base} --io-queue-size 64 -P 2")).is_ok());
    assert!(err(&format!("-q 1 {base} -x")).contains("unknown option -x"));
    assert!(err(&format!("-q 1 {base} --bogus")).contains("unknown option --bogus"));
    assert!(err(&format!("-q 1 {base} --json=1")).contains("--json takes no value"));
    assert!(err(&format!("-q 1 {base} stray")).contains("unexpected argument 'stray'"));
    assert!(err(&format!("{base} -q")).contains("-q needs a value"));
    assert!(err(&format!("{base} --seed")).contains("--seed needs a value"));
    assert!(err("-o 4096 -w read -t 1").contains("missing -q"));
    assert!(err("-q 1 -w read -t 1").contains("missing -o"));
    assert!(err("-q 1 -o 4096 -t 1").contains("missing -w"));
    assert!(err("-q 1 -o 4096 -w read").contains("missing -t"));
    // One line each.
    assert!(!err("-q 0 -o 1 -w read -t 1").contains('\n'));
}

#[test]
fn spdk_options_this_tool_accepts() {
    let base = "-q 8 -o 4096 -w randread -t 1";
    let o = run(base).unwrap();
    assert_eq!(o.shm_id, None);
    assert!(o.allowed_pci.is_empty() && o.continue_on_error.is_none());
    assert!(!o.cpu_usage && !o.no_shutdown_notification && !o.single_segment);
    assert!(o.notes().is_empty());

    let o = run(&format!(
        "{base} -i 1 -s 64 -O 512 -g -b 01:00.0 -b 0000:02:00.0 -b 0000.01.00.0 -Q 10 -N -m -d 1000 --io-queue-size 4"
    ))
    .unwrap();
    assert_eq!(o.shm_id, Some(1));
    assert_eq!(o.mem_size_mb, Some(64));
    assert_eq!(o.io_unit_size, Some(512));
    assert!(o.single_segment && o.no_shutdown_notification && o.cpu_usage);
    assert_eq!(o.allowed_pci, ["0000:01:00.0", "0000:02:00.0"]);
    assert_eq!(o.continue_on_error, Some(10));
    assert_eq!(o.number_ios, Some(NumberIos::Count(1000)));
    assert_eq!(
        o.io_queue_size,
        Some(4),
        "-q 8 over a queue of 4 is accepted"
    );
    assert_eq!(
        o.notes(),
        [
            "-i 1: there is no shared memory here (no secondary processes); ignored",
            "-g: there are no DPDK memory segments here; ignored",
        ],
        "-O 512 in direct mode is a vectored request: nothing to note"
    );
    // The long forms, and -O at least the I/O size says nothing.
    let o = run(&format!(
        "{base} --shmem-grp-id=2 --hugemem-size 8 --io-unit-size 8k --mem-single-seg --allowed-pci-addr 01:00.0 --continue-on-error 1 --no-shst-notification --cpu-usage --number-ios 50% --use-every-core"
    ))
    .unwrap();
    assert_eq!(
        (o.shm_id, o.mem_size_mb, o.io_unit_size),
        (Some(2), Some(8), Some(8192))
    );
    assert_eq!(o.number_ios, Some(NumberIos::Percent(50)));
    assert_eq!(o.notes().len(), 2);
    assert_eq!(NumberIos::Percent(50).for_slots(1000), 500);
    assert_eq!(NumberIos::Percent(150).for_slots(1000), 1500);
    assert_eq!(NumberIos::Percent(1).for_slots(10), 1);
    assert_eq!(NumberIos::Count(7).for_slots(1000), 7);
    // Clustered flags as getopt takes them.
    let o = run(&format!("{base} -LLmNg -Q1")).unwrap();
    assert_eq!(o.latency_level, 2);
    assert!(o.cpu_usage && o.no_shutdown_notification && o.single_segment);
    assert_eq!(o.continue_on_error, Some(1));
    let o = run(&format!("{base} --plot run.svg")).unwrap();
    assert_eq!(o.plot.as_deref(), Some("run.svg"));
    assert_eq!(run(&format!("{base} -v")).unwrap_err(), "help");
    assert_eq!(run(&format!("{base} --help-full")).unwrap_err(), "help");
}

#[test]
fn spdk_options_values_are_checked() {
    let base = "-q 8 -o 4096 -w randread -t 1";
    let cases = [
        (
            "-i x",
            "-i x: shared memory group ID must be a whole number",
        ),
        ("-s 0", "-s 0: memory size must be at least 1 MiB"),
        ("-s 1m", "-s 1m: memory size in MiB must be a whole number"),
        (
            "-O 0",
            "-O 0: I/O unit size can not be 0 and must be a multiple of 4 bytes",
        ),
        ("-O 6", "-O 6: I/O unit size can not be 0"),
        ("-O z", "-O z: I/O unit size must be a number of bytes"),
        ("-b 1:0", "-b 1:0: not a PCI address"),
        ("-Q 0", "-Q 0: the value must be greater than 0"),
        ("-Q x", "-Q x: error log rate must be a whole number"),
        ("-d 0", "-d 0: the number of I/Os must be at least 1"),
        (
            "-d 4",
            "-d 4: fewer I/Os than -q 8 keeps outstanding; raise -d or lower -q",
        ),
        ("-d 0%", "-d 0%: the percent must be at least 1"),
        (
            "-d x%",
            "-d x%: a percent of the namespace must be a whole number",
        ),
        (
            "-d 100 -a 1",
            "-d with -a 1: a run of a fixed number of I/Os has no warm-up",
        ),
        (
            "--plot run.png",
            "--plot run.png: the picture is SVG; name the file FILE.svg",
        ),
        ("--plot", "--plot needs a value"),
        ("-b", "-b needs a value"),
        ("--cpu-usage=1", "--cpu-usage takes no value"),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{base} {extra}"));
        assert!(e.contains(want), "{extra}: {e}");
    }
}

#[test]
fn every_other_spdk_option_is_refused_by_name() {
    use crate::perf::refused::REFUSED;
    let base = "-q 8 -o 4096 -w randread -t 1";
    // Every short and long name spdk_nvme_perf has, and nothing it does not.
    let shorts: String = REFUSED.iter().filter_map(|r| r.short).collect();
    assert_eq!(shorts, "eFRSzZHIkTUVACDEly");
    assert_eq!(REFUSED.len(), 38);
    for r in REFUSED {
        let mut lines = vec![format!("{base} --{} x", r.long)];
        if let Some(c) = r.short {
            lines.push(format!("{base} -{c} x"));
            lines.push(format!("{base} -L{c}"));
        }
        for line in lines {
            let e = err(&line);
            assert!(e.starts_with(&r.name()), "{line}: {e}");
            assert!(e.contains(r.why), "{line}: {e}");
            assert!(!e.contains('\n'), "{line}: {e}");
        }
    }
    let e = err(&format!("{base} -e 'PRACT=1'"));
    assert_eq!(e, "-e (--metadata): protection information is not supported by the driver; use a namespace formatted without metadata and drop -e");
    let e = err(&format!("{base} --psk-path /k"));
    assert!(e.starts_with("--psk-path: a TCP transport option"), "{e}");
    let e = err(&format!("{base} --no-huge"));
    assert!(e.starts_with("--no-huge: a DPDK environment option"), "{e}");
    let e = err(&format!("{base} -F 1.2"));
    assert!(e.contains("drop -F"), "{e}");
    // Not an spdk_nvme_perf option at all: still "unknown".
    assert!(err(&format!("{base} -j")).contains("unknown option -j"));
    assert!(err(&format!("{base} --frobnicate")).contains("unknown option --frobnicate"));
}

#[test]
fn dma_memory_size_covers_every_buffer() {
    // 16 buffers of 64 KiB: 1 MiB per namespace and core.
    let o = run("-q 16 -o 64k -w read -t 1 -s 2 -c 0x3").unwrap();
    assert!(check_memory(&o, 1).is_ok());
    let e = check_memory(&o, 2).unwrap_err().0;
    assert_eq!(e, "-s 2: 2 cores x 2 namespaces x -q 16 buffers of 65536 bytes need 4 MiB; raise -s or lower -q, -o or the cores");
    assert!(check_memory(&run("-q 16 -o 64k -w read -t 1").unwrap(), 1000).is_ok());
}

/// spdk_nvme_perf v23.01.1's `-G` / `--enable-debug`: debug logging (the `nvme` flag
/// at debug level); here in every build.
#[test]
fn dash_g_enables_debug_logging() {
    let base = "-q 1 -o 4096 -w read -t 1";
    assert!(!run(base).unwrap().debug_log);
    assert!(run(&format!("{base} -G")).unwrap().debug_log);
    assert!(run(&format!("{base} --enable-debug")).unwrap().debug_log);
    // Grouped with the other flags, as getopt allows, and apart from -g.
    let o = run(&format!("{base} -gG")).unwrap();
    assert!(o.debug_log && o.single_segment);
    let o = run(&format!("{base} -g")).unwrap();
    assert!(!o.debug_log && o.single_segment);
    assert!(err(&format!("{base} --enable-debug=1")).contains("--enable-debug takes no value"));
    assert!(super::MANUAL.help().contains("-G, --enable-debug"));
}

/// Every option the parser takes is in the man page (rendered without warnings), in
/// the bash completion (loaded by bash) and in `--help`. The parser reads its option
/// names from the table these are made of; this checks that it takes each of them
/// (none is "unknown") and nothing else.
#[test]
fn every_option_is_parsed_and_documented() {
    let mut accepted = Vec::new();
    for o in super::OPTIONS {
        for name in o.names() {
            let mut args = vec!["-q", "1", "-o", "4096", "-w", "read", "-t", "1"];
            args.push(&name);
            if o.value.is_some() {
                args.push("1");
            }
            if let Err(e) = parse_args(args.iter().copied(), &[0]) {
                assert!(!e.0.contains("unknown option"), "{name}: {e}");
            }
            accepted.push(name);
        }
    }
    crate::manual::check::documents(&super::MANUAL, &accepted);
    let e = parse_args(["-q", "1", "--no-such-option"], &[0]).unwrap_err();
    assert!(e.0.contains("unknown option --no-such-option"), "{e}");
    // The workload's values are offered after -w.
    let offered = crate::manual::check::bash_offers(&super::MANUAL, &["-w", "rand"]);
    assert_eq!(offered, ["randread", "randwrite", "randrw"]);
}
