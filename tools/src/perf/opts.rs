// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf's command line: spdk_nvme_perf's options, parsed getopt-style
//! (`-q 32` or `-q32`, `-LL`, `--io-queue-size 256` or `--io-queue-size=256`).
//! spdk_nvme_perf's options that have no meaning here are refused by name
//! ([`super::refused`]).

use super::refused;
use crate::cores::parse_core_mask;
use crate::trid::{parse_bdf, TransportId};
use crate::{parse_size, usage, UsageError};

mod help;
pub use help::{MANUAL, OPTIONS, USAGE};

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

/// `-d`: when each namespace on each core stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberIos {
    /// After this many I/Os.
    Count(u64),
    /// After this percent of the namespace's size in I/Os (may exceed 100).
    Percent(u32),
}

impl NumberIos {
    /// The I/O count for a namespace of `slots` I/O-sized slots.
    pub fn for_slots(self, slots: u64) -> u64 {
        match self {
            NumberIos::Count(n) => n,
            NumberIos::Percent(p) => (slots.saturating_mul(p as u64) / 100).max(1),
        }
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
    /// `-b`: only controllers at these PCI addresses (full form); empty: no filter.
    pub allowed_pci: Vec<String>,
    /// Queue pairs per namespace per core.
    pub qpairs_per_ns: u32,
    /// Entries per queue pair, if given.
    pub io_queue_size: Option<u32>,
    /// 0: no latency detail; 1: percentiles (-L); 2: percentiles and histogram (-LL).
    pub latency_level: u8,
    /// `-Q N`: failed I/Os are counted and the slot goes on (N is spdk_nvme_perf's
    /// log rate limit, kept for the record).
    pub continue_on_error: Option<u32>,
    /// `-d`: stop after this many I/Os per namespace per core.
    pub number_ios: Option<NumberIos>,
    /// `-m`: report each poller core's busy share.
    pub cpu_usage: bool,
    /// `-N`: no shutdown notification at exit.
    pub no_shutdown_notification: bool,
    /// `-s`: DMA memory for the I/O buffers, MiB.
    pub mem_size_mb: Option<u64>,
    /// `-O`: I/O unit size: each I/O's buffer is made of pieces this size, one
    /// vectored request (direct mode).
    pub io_unit_size: Option<u64>,
    /// `-i`: shared memory group (accepted; nothing is shared).
    pub shm_id: Option<u32>,
    /// `-g`: single memory segment (accepted; no DPDK segments).
    pub single_segment: bool,
    /// `-G`: the driver's debug messages on stderr.
    pub debug_log: bool,
    /// JSON output.
    pub json: bool,
    /// `--plot`: SVG picture to write.
    pub plot: Option<String>,
    /// Pattern writes and checked reads.
    pub verify: bool,
    /// `--no-sgl`: describe I/O data with PRPs even where the controller takes SGLs
    /// (`ControllerOptions::enable_sgl` false).
    pub no_sgl: bool,
    /// `--no-shadow-doorbells`: `ControllerOptions::shadow_doorbells` false.
    pub no_shadow_doorbells: bool,
    /// Seed of the pattern and of the random offsets.
    pub seed: u64,
    /// Drive multipath bdevs through the block layer (`--multipath`), with this
    /// policy; `None`: the controllers' queue pairs directly (the default).
    pub multipath: Option<nvme_bdev::Policy>,
}

impl PerfOptions {
    /// Lines to print once before the run: options accepted for compatibility that
    /// do nothing here.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(id) = self.shm_id {
            out.push(format!(
                "-i {id}: there is no shared memory here (no secondary processes); ignored"
            ));
        }
        if self.single_segment {
            out.push("-g: there are no DPDK memory segments here; ignored".into());
        }
        if let (Some(u), true) = (self.io_unit_size, self.multipath.is_some()) {
            if u < self.io_size {
                out.push(format!(
                    "-O {u}: through the block layer each I/O is one contiguous {} byte buffer; the unit size does not split it",
                    self.io_size
                ));
            }
        }
        out
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
// Made once per process: the size of the options does not matter.
#[allow(clippy::large_enum_variant)]
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

/// The option named `--name`, from the table `--help` and the man page are made of.
fn long_option(name: &str) -> Option<&'static crate::manual::Opt> {
    OPTIONS.iter().find(|o| o.long == Some(name))
}

/// The option named `-c`.
fn short_option(c: char) -> Option<&'static crate::manual::Opt> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}

/// The key the parser matches an option by: its short name, else its long name.
fn key(o: &crate::manual::Opt) -> String {
    match (o.short, o.long) {
        (Some(c), _) => c.to_string(),
        (None, Some(l)) => l.to_string(),
        (None, None) => String::new(),
    }
}

/// The command line's options in order: (key, value), flags with an empty value.
fn tokenize(args: &[String]) -> Result<Option<Vec<(String, String)>>, UsageError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if name == "help" || name == "help-full" {
                return Ok(None);
            }
            let Some(opt) = long_option(name) else {
                return Err(match refused::long(name) {
                    Some(r) => usage!("{}: {}", r.name(), r.why),
                    None => usage!("unknown option --{name}"),
                });
            };
            if opt.value.is_none() {
                if inline.is_some() {
                    return Err(usage!("--{name} takes no value"));
                }
                out.push((key(opt), String::new()));
                continue;
            }
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
            out.push((key(opt), value));
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
            match (ch, short_option(ch)) {
                ('h' | 'v', _) => return Ok(None),
                (_, Some(opt)) if opt.value.is_none() => out.push((ch.to_string(), String::new())),
                (_, Some(_)) => {
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
                    out.push((ch.to_string(), value));
                    k = chars.len();
                }
                (_, None) => {
                    return Err(match refused::short(ch) {
                        Some(r) => usage!("{}: {}", r.name(), r.why),
                        None => usage!("unknown option -{ch}"),
                    })
                }
            }
        }
    }
    Ok(Some(out))
}

/// `-d N` or `-d N%`.
fn parse_number_ios(v: &str) -> Result<NumberIos, UsageError> {
    if let Some(p) = v.trim().strip_suffix('%') {
        let n: u32 = p.trim().parse().map_err(|_| {
            usage!("-d {v}: a percent of the namespace must be a whole number, e.g. -d 50%")
        })?;
        if n == 0 {
            return Err(usage!("-d {v}: the percent must be at least 1"));
        }
        return Ok(NumberIos::Percent(n));
    }
    let n = parse_size(v)
        .ok_or_else(|| usage!("-d {v}: the number of I/Os must be a whole number or N%"))?;
    if n == 0 {
        return Err(usage!(
            "-d {v}: the number of I/Os must be at least 1 (or drop -d)"
        ));
    }
    Ok(NumberIos::Count(n))
}

/// Parses the arguments after the program name. `available_cores` is the set a core
/// mask may name.
pub fn parse_args<I, S>(args: I, available_cores: &[usize]) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let Some(tokens) = tokenize(&args)? else {
        return Ok(Command::Help);
    };
    let mut q = None;
    let mut o = None;
    let mut w = None;
    let mut m: Option<String> = None;
    let mut t = None;
    let mut a = 0u64;
    let mut c: Option<String> = None;
    let mut trids = Vec::new();
    let mut allowed_pci: Vec<String> = Vec::new();
    let mut p = 1u32;
    let mut qsize = None;
    let mut lat = 0u8;
    let mut continue_on_error = None;
    let mut number_ios = None;
    let mut cpu_usage = false;
    let mut no_shn = false;
    let mut mem_size_mb = None;
    let mut io_unit_size = None;
    let mut shm_id = None;
    let mut single_segment = false;
    let mut debug_log = false;
    let mut json = false;
    let mut plot = None;
    let mut verify = false;
    let mut no_sgl = false;
    let mut no_shadow_doorbells = false;
    let mut seed = 1u64;
    let mut multipath = false;
    let mut policy: Option<nvme_bdev::Policy> = None;

    for (name, v) in tokens {
        match name.as_str() {
            "L" => lat = (lat + 1).min(2),
            "g" => single_segment = true,
            "G" => debug_log = true,
            "N" => no_shn = true,
            "m" => cpu_usage = true,
            "use-every-core" => {}
            "json" => json = true,
            "verify" => verify = true,
            "no-sgl" => no_sgl = true,
            "no-shadow-doorbells" => no_shadow_doorbells = true,
            "multipath" => multipath = true,
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
            "b" => {
                let bdf = parse_bdf(v.trim()).ok_or_else(|| {
                    usage!("-b {v}: not a PCI address; give it as 0000:01:00.0 or 01:00.0")
                })?;
                if !allowed_pci.contains(&bdf) {
                    allowed_pci.push(bdf);
                }
            }
            "P" => {
                p = number("-P", &v, "queue pairs per namespace")?;
                if p == 0 || p > 256 {
                    return Err(usage!("-P {v}: queue pairs per namespace must be 1 to 256"));
                }
            }
            "i" => shm_id = Some(number("-i", &v, "shared memory group ID")?),
            "s" => {
                let n: u64 = number("-s", &v, "memory size in MiB")?;
                if n == 0 {
                    return Err(usage!("-s {v}: memory size must be at least 1 MiB"));
                }
                mem_size_mb = Some(n);
            }
            "O" => {
                let n = parse_size(&v).ok_or_else(|| {
                    usage!("-O {v}: I/O unit size must be a number of bytes like 4096 or 4k")
                })?;
                if n == 0 || n % 4 != 0 {
                    return Err(usage!(
                        "-O {v}: I/O unit size can not be 0 and must be a multiple of 4 bytes"
                    ));
                }
                io_unit_size = Some(n);
            }
            "Q" => {
                let n: u32 = number("-Q", &v, "error log rate")?;
                if n == 0 {
                    return Err(usage!(
                        "-Q {v}: the value must be greater than 0 (-Q 1 counts every error)"
                    ));
                }
                continue_on_error = Some(n);
            }
            "d" => number_ios = Some(parse_number_ios(&v)?),
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
            "plot" => {
                if !v.ends_with(".svg") {
                    return Err(usage!(
                        "--plot {v}: the picture is SVG; name the file FILE.svg"
                    ));
                }
                plot = Some(v);
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
    if number_ios.is_some() && a > 0 {
        return Err(usage!(
            "-d with -a {a}: a run of a fixed number of I/Os has no warm-up; drop one of them"
        ));
    }
    if let Some(NumberIos::Count(n)) = number_ios {
        if n < queue_depth as u64 {
            return Err(usage!(
                "-d {n}: fewer I/Os than -q {queue_depth} keeps outstanding; raise -d or lower -q"
            ));
        }
    }
    if policy.is_some() && !multipath {
        return Err(usage!(
            "--policy applies to the multipath bdev: add --multipath"
        ));
    }
    if multipath && no_sgl {
        return Err(usage!(
            "--no-sgl applies to the controllers' queue pairs: drop --multipath or --no-sgl"
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
        allowed_pci,
        qpairs_per_ns: p,
        io_queue_size: qsize,
        latency_level: lat,
        continue_on_error,
        number_ios,
        cpu_usage,
        no_shutdown_notification: no_shn,
        mem_size_mb,
        io_unit_size,
        shm_id,
        single_segment,
        debug_log,
        json,
        plot,
        verify,
        no_sgl,
        no_shadow_doorbells,
        seed,
        multipath,
    }))
}

/// `-s`: checks that the buffers of every namespace on every core fit `mem_size_mb`.
pub fn check_memory(opts: &PerfOptions, namespaces: usize) -> Result<(), UsageError> {
    let Some(mb) = opts.mem_size_mb else {
        return Ok(());
    };
    let per = opts.queue_depth as u64 * opts.io_size;
    let need = per * namespaces as u64 * opts.cores.len() as u64;
    if need > mb << 20 {
        return Err(usage!(
            "-s {mb}: {} cores x {namespaces} namespaces x -q {} buffers of {} bytes need {} MiB; raise -s or lower -q, -o or the cores",
            opts.cores.len(),
            opts.queue_depth,
            opts.io_size,
            need.div_ceil(1 << 20)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
