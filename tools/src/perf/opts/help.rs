// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf's options: the table the parser reads its option names from, and
//! `--help`, the man page and the bash completion are made of ([`crate::manual`]).

use crate::manual::{Manual, Opt};

/// One-line usage, printed with `--help` above the option list.
pub const USAGE: &str = "usage: nvme-perf -q DEPTH -o BYTES -w WORKLOAD -t SECONDS [-M READ%] [-a WARMUP] [-c MASK] [-r TRID]... [-b BDF]... [-P N] [--io-queue-size N] [-L|-LL] [-Q N] [-d N[%]] [-m] [-N] [-s MB] [-O BYTES] [-i ID] [-g] [-G] [--json] [--plot FILE.svg] [--verify [--seed N]] [--no-sgl] [--no-shadow-doorbells] [--multipath [--policy POLICY]]";

/// `-w`'s values, for completion.
const WORKLOADS: &[&str] = &["read", "write", "randread", "randwrite", "rw", "randrw"];
/// `--policy`'s values.
const POLICIES: &[&str] = &["active-passive", "round-robin", "least-queue-depth"];
/// A file name.
const FILES: &[&str] = &["FILE"];

/// Every option nvme-perf accepts, in `--help` order.
pub const OPTIONS: &[Opt] = &[
    Opt::new(
        Some('q'),
        Some("io-depth"),
        Some("DEPTH"),
        &[
            "I/Os kept outstanding per namespace per core (at least 1); what",
            "does not fit the queue waits on the driver's pending ring",
        ],
    ),
    Opt::new(
        Some('o'),
        Some("io-size"),
        Some("BYTES"),
        &["I/O size; a multiple of the block size (suffixes k, m allowed)"],
    ),
    Opt::new(
        Some('w'),
        Some("io-pattern"),
        Some("WORKLOAD"),
        &["read, write, randread, randwrite, rw or randrw"],
    )
    .choices(WORKLOADS),
    Opt::new(
        Some('M'),
        Some("rwmixread"),
        Some("PERCENT"),
        &["reads in a mixed workload, 0 to 100 (required for rw, randrw)"],
    ),
    Opt::new(
        Some('t'),
        Some("time"),
        Some("SECONDS"),
        &["measured run time"],
    ),
    Opt::new(
        Some('a'),
        Some("warmup-time"),
        Some("SECONDS"),
        &["run this long before measuring (default 0)"],
    ),
    Opt::new(
        Some('c'),
        Some("core-mask"),
        Some("MASK"),
        &[
            "pinned poller cores: hex mask (0x3) or list ([0,2-3]); default 0x1;",
            "every core drives every namespace (spdk_nvme_perf's --use-every-core)",
        ],
    ),
    Opt::new(
        Some('r'),
        Some("transport"),
        Some("TRID"),
        &[
            "'trtype:PCIe traddr:0000:01:00.0 ns:1' (repeatable; ns optional);",
            "default: every NVMe controller bound to vfio-pci, every namespace",
        ],
    ),
    Opt::new(
        Some('b'),
        Some("allowed-pci-addr"),
        Some("BDF"),
        &["only controllers at these PCI addresses (repeatable)"],
    ),
    Opt::new(
        Some('P'),
        Some("num-qpairs"),
        Some("N"),
        &[
            "queue pairs per namespace per core (default 1); the depth is",
            "spread over them",
        ],
    ),
    Opt::new(
        None,
        Some("io-queue-size"),
        Some("N"),
        &[
            "entries per queue pair (default: enough for the depth, at least",
            "256, at most CAP.MQES); a deeper depth per queue pair is accepted",
            "and its excess waits on the driver's pending ring",
        ],
    ),
    Opt::new(
        Some('L'),
        Some("enable-sw-latency-tracking"),
        None,
        &["latency percentiles; -LL adds a histogram"],
    ),
    Opt::new(
        Some('Q'),
        Some("continue-on-error"),
        Some("N"),
        &[
            "keep going when I/O fails, counting the errors; every Nth failure",
            "is logged on stderr as spdk_nvme_perf does ('Read completed with",
            "error (sct=3, sc=2)', then 'Message suppressed N-1 times: ...')",
        ],
    ),
    Opt::new(
        Some('d'),
        Some("number-ios"),
        Some("N[%]"),
        &[
            "stop each namespace on each core after N I/Os (or N% of the",
            "namespace's size in I/Os), or at -t, whichever comes first",
        ],
    ),
    Opt::new(
        Some('m'),
        Some("cpu-usage"),
        None,
        &["busy share of each poller core (polls that found completions)"],
    ),
    Opt::new(
        Some('N'),
        Some("no-shst-notification"),
        None,
        &[
            "no shutdown notification at exit: the controllers are only",
            "disabled (CC.EN = 0), not flushed and shut down (CC.SHN)",
        ],
    ),
    Opt::new(
        Some('s'),
        Some("hugemem-size"),
        Some("MB"),
        &["DMA memory nvme-perf may use for its buffers, in MiB"],
    ),
    Opt::new(
        Some('O'),
        Some("io-unit-size"),
        Some("BYTES"),
        &["each I/O's buffer is pieces of BYTES (4-byte multiple): one vectored request"],
    ),
    Opt::new(
        Some('i'),
        Some("shmem-grp-id"),
        Some("ID"),
        &["accepted; there is no shared memory here"],
    ),
    Opt::new(
        Some('g'),
        Some("mem-single-seg"),
        None,
        &["accepted; there are no DPDK memory segments here"],
    ),
    Opt::new(
        None,
        Some("json"),
        None,
        &["print the results as JSON instead of tables"],
    ),
    Opt::new(
        None,
        Some("plot"),
        Some("FILE.svg"),
        &[
            "draw IOPS per second and, with -L, each row's latency",
            "histogram and CDF into an SVG picture",
        ],
    )
    .choices(FILES),
    Opt::new(
        None,
        Some("verify"),
        None,
        &[
            "write a pattern derived from LBA and seed and check every read;",
            "a workload that writes first fills the namespaces with it",
        ],
    ),
    Opt::new(
        None,
        Some("seed"),
        Some("N"),
        &["seed of the verify pattern and the random offsets (default 1)"],
    ),
    Opt::new(
        None,
        Some("no-sgl"),
        None,
        &[
            "describe I/O data with PRPs even where the controller supports",
            "SGLs (the default uses an SGL Data Block descriptor then)",
        ],
    ),
    Opt::new(
        None,
        Some("no-shadow-doorbells"),
        None,
        &[
            "write the doorbell registers for every batch even where the",
            "controller offers shadow doorbells (Doorbell Buffer Config; QEMU's",
            "controller does; the default uses them, as Linux and SPDK do)",
        ],
    ),
    Opt::new(
        None,
        Some("multipath"),
        None,
        &[
            "drive the multipath bdev of the block layer instead of the",
            "controllers' queue pairs: every controller given with -r (or",
            "every one bound to vfio-pci) is attached, controllers that",
            "reach the same namespace become its paths; per-path I/O",
            "counts and failover events are reported",
        ],
    ),
    Opt::new(
        None,
        Some("policy"),
        Some("POLICY"),
        &[
            "multipath policy: active-passive (default), round-robin or",
            "least-queue-depth (with --multipath)",
        ],
    )
    .choices(POLICIES),
    Opt::new(
        Some('G'),
        Some("enable-debug"),
        None,
        &[
            "the driver's debug messages on stderr (spdk_nvme_perf's -G;",
            "here in every build, not only one configured --enable-debug)",
        ],
    ),
    Opt::new(Some('h'), Some("help"), None, &["this text"]),
    Opt::new(Some('v'), None, None, &["the same as -h"]).hidden(),
    Opt::new(None, Some("help-full"), None, &["the same as -h"]).hidden(),
    Opt::new(
        None,
        Some("use-every-core"),
        None,
        &["accepted: every core drives every namespace already"],
    )
    .hidden(),
];

/// nvme-perf's manual.
pub const MANUAL: Manual = Manual {
    name: "nvme-perf",
    summary: "measure NVMe I/O performance with spdk_nvme_perf's options, over a polled userspace driver",
    usage: USAGE,
    description: "\
nvme-perf drives NVMe controllers bound to vfio-pci from this process: each poller core
submits I/O to its own queue pairs and polls for completions, with no interrupts and no
system calls per I/O. It takes spdk_nvme_perf's command lines and prints its tables
(a row per namespace and core: IOPS, MiB/s, average, minimum and maximum latency in
microseconds, and a Total row), then the driver's counters.

Workloads that write (write, randwrite, rw, randrw) overwrite the namespaces they run on.

Bind the controllers first with nvme-setup(1); as a user other than root, after
`sudo nvme-setup config TARGET_USER=$USER`.

Exit status: 0 on success, 1 when the run failed (a device error, failed I/O, a verify
mismatch), 2 for a usage error.
",
    options: OPTIONS,
    head_width: 26,
    variables: &[],
    variables_intro: "",
    notes: "spdk_nvme_perf's other options (-e -F -R -S -T -U -V -A -C -D -E -k -l -y -z -Z -H -I, the\nTCP, RDMA and DPDK options) are recognised and refused with what to do instead.\n",
};
