//! nvme-perf's command line: spdk_nvme_perf's options, parsed getopt-style
//! (`-q 32` or `-q32`, `-LL`, `--io-queue-size 256` or `--io-queue-size=256`).

use crate::cores::parse_core_mask;
use crate::trid::TransportId;
use crate::{parse_size, usage, UsageError};

/// One-line usage, printed with `--help` above the option list.
pub const USAGE: &str = "usage: nvme-perf -q DEPTH -o BYTES -w WORKLOAD -t SECONDS [-M READ%] [-a WARMUP] [-c MASK] [-r TRID]... [-P N] [--io-queue-size N] [-L|-LL] [--json] [--verify [--seed N]] [--multipath [--policy POLICY]]";

/// The option list, for `--help`.
pub const HELP: &str = "\
  -q, --io-depth DEPTH       I/Os kept outstanding per namespace per core (at least 1)
  -o, --io-size BYTES        I/O size; a multiple of the block size (suffixes k, m allowed)
  -w, --io-pattern WORKLOAD  read, write, randread, randwrite, rw or randrw
  -M, --rwmixread PERCENT    reads in a mixed workload, 0 to 100 (required for rw, randrw)
  -t, --time SECONDS         measured run time
  -a, --warmup-time SECONDS  run this long before measuring (default 0)
  -c, --core-mask MASK       pinned poller cores: hex mask (0x3) or list ([0,2-3]); default 0x1
  -r, --transport TRID       'trtype:PCIe traddr:0000:01:00.0 ns:1' (repeatable; ns optional);
                             default: every NVMe controller bound to vfio-pci, every namespace
  -P, --num-qpairs N         queue pairs per namespace per core (default 1); the depth is
                             spread over them
      --io-queue-size N      entries per queue pair (default: enough for the depth, at least
                             256, at most CAP.MQES); the depth per queue pair must be below it
  -L, --enable-sw-latency-tracking
                             latency percentiles; -LL adds a histogram
      --json                 print the results as JSON instead of tables
      --verify               write a pattern derived from LBA and seed and check every read;
                             a workload that writes first fills the namespaces with it
      --seed N               seed of the verify pattern and the random offsets (default 1)
      --multipath            drive the multipath bdev of the block layer instead of the
                             controllers' queue pairs: every controller given with -r (or
                             every one bound to vfio-pci) is attached, controllers that
                             reach the same namespace become its paths; per-path I/O
                             counts and failover events are reported
      --policy POLICY        multipath policy: active-passive (default), round-robin or
                             least-queue-depth (with --multipath)
  -h, --help                 this text
";

/// The I/O pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential mix of reads and writes (`-M` reads).
    Rw,
    /// Random mix of reads and writes.
    RandRw,
}

impl Workload {
    /// Parses spdk_nvme_perf's workload names.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "read" => Workload::Read,
            "write" => Workload::Write,
            "randread" => Workload::RandRead,
            "randwrite" => Workload::RandWrite,
            "rw" => Workload::Rw,
            "randrw" => Workload::RandRw,
            _ => return None,
        })
    }
    /// The name, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Rw => "rw",
            Workload::RandRw => "randrw",
        }
    }
    /// True for the random patterns.
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }
    /// True for the mixed patterns, which need `-M`.
    pub fn is_mixed(self) -> bool {
        matches!(self, Workload::Rw | Workload::RandRw)
    }
}

/// Everything nvme-perf was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfOptions {
    /// I/Os outstanding per namespace per core.
    pub queue_depth: u32,
    /// Bytes per I/O.
    pub io_size: u64,
    /// Pattern.
    pub workload: Workload,
    /// Percent of I/Os that read: 100 for read patterns, 0 for write patterns.
    pub read_percent: u8,
    /// Measured seconds.
    pub time_s: u64,
    /// Warm-up seconds before measuring.
    pub warmup_s: u64,
    /// Poller cores.
    pub cores: Vec<usize>,
    /// Transport IDs; empty means every controller bound to vfio-pci.
    pub trids: Vec<TransportId>,
    /// Queue pairs per namespace per core.
    pub qpairs_per_ns: u32,
    /// Entries per queue pair, if given.
    pub io_queue_size: Option<u32>,
    /// 0: no latency detail; 1: percentiles (-L); 2: percentiles and histogram (-LL).
    pub latency_level: u8,
    /// JSON output.
    pub json: bool,
    /// Pattern writes and checked reads.
    pub verify: bool,
    /// Seed of the pattern and of the random offsets.
    pub seed: u64,
    /// Drive multipath bdevs through the block layer (`--multipath`), with this
    /// policy; `None`: the controllers' queue pairs directly (the default).
    pub multipath: Option<nvme_bdev::Policy>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print help and exit 0.
    Help,
    /// Run.
    Run(PerfOptions),
}

/// Largest I/O nvme-perf accepts (each outstanding I/O owns a buffer this large).
pub const IO_SIZE_MAX: u64 = 64 << 20;
/// Largest queue depth nvme-perf accepts per namespace per core.
pub const QUEUE_DEPTH_MAX: u32 = 65536;

fn number<T: std::str::FromStr>(opt: &str, v: &str, what: &str) -> Result<T, UsageError> {
    v.trim()
        .parse::<T>()
        .map_err(|_| usage!("{opt} {v}: {what} must be a whole number"))
}

/// Parses the arguments after the program name. `available_cores` is the set a core
/// mask may name.
pub fn parse_args<I, S>(args: I, available_cores: &[usize]) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut q = None;
    let mut o = None;
    let mut w = None;
    let mut m: Option<String> = None;
    let mut t = None;
    let mut a = 0u64;
    let mut c: Option<String> = None;
    let mut trids = Vec::new();
    let mut p = 1u32;
    let mut qsize = None;
    let mut lat = 0u8;
    let mut json = false;
    let mut verify = false;
    let mut seed = 1u64;
    let mut multipath = false;
    let mut policy: Option<nvme_bdev::Policy> = None;

    let mut i = 0;
    // Each option with a value lands here as (name as typed, value).
    let mut with_value: Vec<(String, String)> = Vec::new();
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let short = match name {
                "help" => return Ok(Command::Help),
                "json" | "verify" | "multipath" | "enable-sw-latency-tracking" => {
                    if inline.is_some() {
                        return Err(usage!("--{name} takes no value"));
                    }
                    match name {
                        "json" => json = true,
                        "verify" => verify = true,
                        "multipath" => multipath = true,
                        _ => lat = (lat + 1).min(2),
                    }
                    continue;
                }
                "io-depth" => "q",
                "io-size" => "o",
                "io-pattern" => "w",
                "rwmixread" => "M",
                "time" => "t",
                "warmup-time" => "a",
                "core-mask" => "c",
                "transport" => "r",
                "num-qpairs" => "P",
                "io-queue-size" => "io-queue-size",
                "seed" => "seed",
                "policy" => "policy",
                _ => return Err(usage!("unknown option --{name}")),
            };
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| usage!("--{name} needs a value"))?
                        .clone();
                    i += 1;
                    v
                }
            };
            with_value.push((short.to_string(), value));
            continue;
        }
        let Some(group) = arg.strip_prefix('-').filter(|g| !g.is_empty()) else {
            return Err(usage!(
                "unexpected argument '{arg}'; options start with -, e.g. -r 'trtype:PCIe traddr:...'"
            ));
        };
        // getopt clustering: flags may be grouped (-LL), an option's value may follow
        // it directly (-q32) or be the next argument.
        let chars: Vec<char> = group.chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let ch = chars[k];
            k += 1;
            match ch {
                'h' => return Ok(Command::Help),
                'L' => lat = (lat + 1).min(2),
                'q' | 'o' | 'w' | 'M' | 't' | 'a' | 'c' | 'r' | 'P' => {
                    let rest: String = chars[k..].iter().collect();
                    let value = if !rest.is_empty() {
                        rest
                    } else {
                        let v = args
                            .get(i)
                            .ok_or_else(|| usage!("-{ch} needs a value"))?
                            .clone();
                        i += 1;
                        v
                    };
                    with_value.push((ch.to_string(), value));
                    k = chars.len();
                }
                _ => return Err(usage!("unknown option -{ch}")),
            }
        }
    }

    for (name, v) in with_value {
        match name.as_str() {
            "q" => {
                let n: u32 = number("-q", &v, "queue depth")?;
                if n == 0 || n > QUEUE_DEPTH_MAX {
                    return Err(usage!("-q {v}: queue depth must be 1 to {QUEUE_DEPTH_MAX}"));
                }
                q = Some(n);
            }
            "o" => {
                let n = parse_size(&v).ok_or_else(|| {
                    usage!("-o {v}: I/O size must be a number of bytes like 4096 or 4k")
                })?;
                if n == 0 || n > IO_SIZE_MAX {
                    return Err(usage!(
                        "-o {v}: I/O size must be 1 byte to {} MiB",
                        IO_SIZE_MAX >> 20
                    ));
                }
                o = Some(n);
            }
            "w" => {
                w = Some(Workload::parse(&v).ok_or_else(|| {
                    usage!("-w {v}: unknown workload; use read, write, randread, randwrite, rw or randrw")
                })?);
            }
            "M" => m = Some(v),
            "t" => {
                let n: u64 = number("-t", &v, "time")?;
                if n == 0 || n > 86_400 {
                    return Err(usage!("-t {v}: run time must be 1 to 86400 seconds"));
                }
                t = Some(n);
            }
            "a" => {
                a = number("-a", &v, "warm-up time")?;
                if a > 86_400 {
                    return Err(usage!("-a {v}: warm-up time must be 0 to 86400 seconds"));
                }
            }
            "c" => c = Some(v),
            "r" => trids.push(TransportId::parse(&v)?),
            "P" => {
                p = number("-P", &v, "queue pairs per namespace")?;
                if p == 0 || p > 256 {
                    return Err(usage!("-P {v}: queue pairs per namespace must be 1 to 256"));
                }
            }
            "io-queue-size" => {
                let n: u32 = number("--io-queue-size", &v, "queue size")?;
                if !(2..=65536).contains(&n) {
                    return Err(usage!(
                        "--io-queue-size {v}: queue size must be 2 to 65536 entries"
                    ));
                }
                qsize = Some(n);
            }
            "seed" => seed = number("--seed", &v, "seed")?,
            "policy" => {
                policy = Some(v.parse().map_err(|_| {
                    usage!("--policy {v}: unknown policy; use active-passive, round-robin or least-queue-depth")
                })?)
            }
            _ => unreachable!("only known options are collected"),
        }
    }

    let queue_depth = q.ok_or_else(|| usage!("missing -q (queue depth), e.g. -q 32"))?;
    let io_size = o.ok_or_else(|| usage!("missing -o (I/O size in bytes), e.g. -o 4096"))?;
    let workload = w.ok_or_else(|| usage!("missing -w (workload), e.g. -w randread"))?;
    let time_s = t.ok_or_else(|| usage!("missing -t (run time in seconds), e.g. -t 10"))?;
    let read_percent = match workload {
        Workload::Read | Workload::RandRead => 100,
        Workload::Write | Workload::RandWrite => 0,
        Workload::Rw | Workload::RandRw => {
            let v = m.ok_or_else(|| {
                usage!(
                    "-w {}: a mixed workload needs -M with the read percent, e.g. -M 70",
                    workload.name()
                )
            })?;
            let n: i64 = number("-M", &v, "read percent")?;
            if !(0..=100).contains(&n) {
                return Err(usage!("-M {v}: read percent must be 0 to 100"));
            }
            n as u8
        }
    };
    if let Some(qs) = qsize {
        let per_qpair = queue_depth.div_ceil(p);
        if per_qpair > qs - 1 {
            return Err(usage!(
                "-q {queue_depth} over -P {p} puts {per_qpair} I/Os on each queue pair, more than --io-queue-size {qs} allows ({}); raise --io-queue-size or -P",
                qs - 1
            ));
        }
    }
    if policy.is_some() && !multipath {
        return Err(usage!(
            "--policy applies to the multipath bdev: add --multipath"
        ));
    }
    if multipath && p != 1 {
        return Err(usage!(
            "-P {p} with --multipath: each core's channel has one queue pair per path; drop -P"
        ));
    }
    let multipath = multipath.then(|| policy.unwrap_or_default());
    let cores = parse_core_mask(c.as_deref().unwrap_or("0x1"), available_cores)?;
    Ok(Command::Run(PerfOptions {
        queue_depth,
        io_size,
        workload,
        read_percent,
        time_s,
        warmup_s: a,
        cores,
        trids,
        qpairs_per_ns: p,
        io_queue_size: qsize,
        latency_level: lat,
        json,
        verify,
        seed,
        multipath,
    }))
}

#[cfg(test)]
mod tests {
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
        let o = run(
            "-q 32 -o 4096 -w randread -t 10 -c 0x1 -r 'trtype:PCIe traddr:0000:01:00.0 ns:1' -L",
        )
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
        assert!(err("-q 1 -o 4096 -w randrw -M 101 -t 1")
            .contains("-M 101: read percent must be 0 to 100"));
        assert!(err("-q 1 -o 4096 -w randrw -M -1 -t 1")
            .contains("-M -1: read percent must be 0 to 100"));
        assert!(err("-q 1 -o 4096 -w randrw -M abc -t 1").contains("-M abc"));
        assert!(err("-q 1 -o 4096 -w read -t 0").contains("-t 0: run time"));
        assert!(err("-q 1 -o 4096 -w read -t 1 -a x").contains("-a x"));
        assert!(err(&format!("-q 1 {base} -c 0x4")).contains("core 2 not available"));
        assert!(err(&format!("-q 1 {base} -c zz")).contains("not a core mask"));
        assert!(
            err(&format!("-q 1 {base} -r 'trtype:RDMA traddr:1:0.0'")).contains("trtype 'RDMA'")
        );
        assert!(err(&format!("-q 1 {base} -r 'trtype:PCIe traddr:1:0'")).contains("traddr '1:0'"));
        assert!(err(&format!("-q 1 {base} -P 0")).contains("-P 0"));
        assert!(err(&format!("-q 1 {base} --io-queue-size 1")).contains("--io-queue-size 1"));
        assert!(err(&format!("-q 64 {base} --io-queue-size 64"))
            .contains("raise --io-queue-size or -P"));
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
}
