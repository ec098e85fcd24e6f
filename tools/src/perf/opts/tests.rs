
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
