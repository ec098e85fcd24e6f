// SPDX-License-Identifier: Apache-2.0 OR MIT
//! spdk_nvme_perf's options nvme-perf does not take: each is recognised by name and
//! refused with what to do instead, so a script written for SPDK fails with a
//! reason rather than an "unknown option".

/// One refused option: its short letter (if it has one), its long name, and why it
/// is refused / what to do instead.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// `-e`.
    pub short: Option<char>,
    /// `metadata` (for `--metadata`).
    pub long: &'static str,
    /// The reason and the alternative.
    pub why: &'static str,
}

const TCP: &str = "a TCP transport option, and nvme-perf drives local PCIe controllers only; drop it and name the controller with -r 'trtype:PCIe traddr:...'";
const RDMA: &str = "an RDMA transport option, and nvme-perf drives local PCIe controllers only; drop it and name the controller with -r 'trtype:PCIe traddr:...'";
const DPDK: &str = "a DPDK environment option, and there is no DPDK here (the driver maps its DMA memory through VFIO itself); drop it";

/// Every spdk_nvme_perf option nvme-perf refuses.
pub const REFUSED: &[Refused] = &[
    r(Some('e'), "metadata", "protection information is not supported by the driver; use a namespace formatted without metadata and drop -e"),
    r(Some('F'), "zipf", "zipf-distributed offsets are not implemented; random workloads are uniform: drop -F"),
    r(Some('R'), "enable-uring", "kernel block devices are not driven by nvme-perf; use fio with --ioengine=io_uring"),
    r(Some('S'), "default-sock-impl", TCP),
    r(Some('z'), "disable-zcopy", TCP),
    r(Some('Z'), "enable-zcopy", TCP),
    r(Some('H'), "enable-tcp-hdgst", TCP),
    r(Some('I'), "enable-tcp-ddgst", TCP),
    r(Some('k'), "keepalive", "keep alive applies to fabrics controllers and nvme-perf drives local PCIe controllers only; drop -k"),
    r(Some('T'), "logflag", "SPDK log flags do not exist here; nvme-perf prints warnings and errors itself: drop -T"),
    r(Some('U'), "num-unused-qpairs", "idle queue pairs are not created; use -P for queue pairs that carry I/O"),
    r(Some('V'), "enable-vmd", "VMD enumeration is not supported; bind the NVMe controller itself to vfio-pci (nvme-setup bind) and drop -V"),
    r(Some('A'), "buffer-alignment", "I/O buffers are always page-aligned DMA memory here; drop -A"),
    r(Some('C'), "max-completion-per-poll", "each poll takes at most 64 completions per queue pair; drop -C"),
    r(Some('D'), "disable-sq-cmb", "submission queues are never placed in the controller memory buffer here; drop -D"),
    r(Some('E'), "enable-interrupt", "the driver polls its completion queues and has no interrupt mode; drop -E"),
    r(Some('l'), "enable-ssd-latency-tracking", "vendor latency log pages are not read; use -L (or -LL) for latency measured by nvme-perf"),
    r(Some('y'), "tpoint-group-mask", "SPDK tracepoints do not exist here; use -L/-LL, the driver counters after the table, or perf(1)"),
    r(None, "iova-mode", "I/O virtual addresses always come from the IOMMU through VFIO here; drop --iova-mode"),
    r(None, "no-huge", DPDK),
    r(None, "enforce-numa", DPDK),
    r(None, "env-context", DPDK),
    r(None, "fua", "the Force Unit Access bit is not offered by the driver's I/O requests; drop --fua"),
    r(None, "vfio-vf-token", "SR-IOV virtual functions with a VF token are not supported; bind a physical function to vfio-pci"),
    r(None, "transport-stats", "use the driver counters printed after the table (or the counters in --json)"),
    r(None, "disable-sq-flow-control", "the driver always tracks the submission queue head; drop --disable-sq-flow-control"),
    r(None, "log-level", "SPDK log levels do not exist here; nvme-perf prints warnings and errors itself: drop --log-level"),
    r(None, "disable-ktls", TCP),
    r(None, "enable-ktls", TCP),
    r(None, "tls-version", TCP),
    r(None, "psk-path", TCP),
    r(None, "psk-identity", TCP),
    r(None, "dhchap-key", TCP),
    r(None, "dhchap-ctrlr-key", TCP),
    r(None, "zerocopy-threshold", TCP),
    r(None, "zerocopy-threshold-sock-impl", TCP),
    r(None, "transport-tos", RDMA),
    r(None, "rdma-srq-size", RDMA),
];

const fn r(short: Option<char>, long: &'static str, why: &'static str) -> Refused {
    Refused { short, long, why }
}

/// The refusal for short option `-c`, if spdk_nvme_perf has it and nvme-perf does not.
pub fn short(c: char) -> Option<&'static Refused> {
    REFUSED.iter().find(|o| o.short == Some(c))
}

/// The refusal for long option `--name`, if spdk_nvme_perf has it and nvme-perf does
/// not.
pub fn long(name: &str) -> Option<&'static Refused> {
    REFUSED.iter().find(|o| o.long == name)
}

impl Refused {
    /// The option as spdk_nvme_perf's help names it: `-e (--metadata)` or `--fua`.
    pub fn name(&self) -> String {
        match self.short {
            Some(c) => format!("-{c} (--{})", self.long),
            None => format!("--{}", self.long),
        }
    }
}
