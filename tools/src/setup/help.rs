// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-setup's commands and variables: the tables the parser checks words against,
//! and `--help`, the man page and the bash completion are made of
//! ([`crate::manual`]).

use crate::manual::{Manual, Opt};

/// One-line usage.
pub const USAGE: &str =
    "usage: nvme-setup [config|reset|status [--json]|cleanup|help] [NAME=VALUE]...\n       \
     nvme-setup bind [BDF]... | unbind [BDF]... | keep-vfio on|off | hugepages COUNT";

/// The commands, in `--help` order.
pub const COMMANDS: &[Opt] = &[
    Opt::word(
        "config",
        None,
        &[
            "(the default) bind every NVMe controller not in use to vfio-pci,",
            "reserve huge pages, give TARGET_USER the VFIO group devices and a",
            "locked-memory limit; as SPDK's scripts/setup.sh does",
        ],
    ),
    Opt::word(
        "reset",
        None,
        &[
            "give the controllers back to the kernel's nvme driver (huge pages",
            "stay)",
        ],
    ),
    Opt::word(
        "status",
        Some("[--json]"),
        &[
            "NVMe controllers with their driver, IOMMU group and whether VFIO",
            "can use it; huge pages free and total",
        ],
    )
    .choices(&["--json"]),
    Opt::word(
        "cleanup",
        None,
        &[
            "remove what killed driver processes left behind (their folders in",
            "/tmp) and free the huge pages",
        ],
    ),
    Opt::word(
        "bind",
        Some("[BDF]..."),
        &[
            "bind controllers to vfio-pci (default: every NVMe controller);",
            "loads vfio-pci with modprobe if it is not loaded",
        ],
    ),
    Opt::word(
        "unbind",
        Some("[BDF]..."),
        &[
            "give controllers back to the kernel's nvme driver (default: every",
            "controller bound to vfio-pci)",
        ],
    ),
    Opt::word(
        "keep-vfio",
        Some("on|off"),
        &[
            "on: NVMe controllers that appear later (hot-plugged, or back after",
            "an unplug) are bound to vfio-pci as they appear, as a udev rule",
            "would (vfio-pci's new_id); off: no longer. Stays a root job",
        ],
    )
    .choices(&["on", "off"]),
    Opt::word(
        "hugepages",
        Some("COUNT"),
        &["reserve COUNT huge pages of the default size"],
    ),
    Opt::word("help", None, &["this text (also -h, --help)"]).hidden(),
    Opt::new(Some('h'), Some("help"), None, &["this text"]).hidden(),
];

/// setup.sh's variables nvme-setup reads, in `--help` order.
pub const VARIABLES: &[Opt] = &[
    Opt::word(
        "PCI_ALLOWED",
        None,
        &[
            "PCI addresses to use, space separated (none: no controller;",
            "default: every controller)",
        ],
    ),
    Opt::word(
        "PCI_BLOCKED",
        None,
        &["PCI addresses to leave alone (wins over PCI_ALLOWED)"],
    ),
    Opt::word(
        "NVME_ALLOWED",
        None,
        &["more PCI addresses to use, added to PCI_ALLOWED"],
    )
    .hidden(),
    Opt::word(
        "SKIP_PCI",
        None,
        &["any value: bind no controller (PCI_ALLOWED=none)"],
    )
    .hidden(),
    Opt::word(
        "HUGEMEM",
        None,
        &["MiB of huge pages to reserve (default 2048)"],
    ),
    Opt::word(
        "NRHUGE",
        None,
        &["number of huge pages (wins over HUGEMEM)"],
    ),
    Opt::word(
        "HUGENODE",
        None,
        &["NUMA nodes for them: 0,1 or nodes_hp[0]=512,1 (default node 0)"],
    ),
    Opt::word("CLEAR_HUGE", None, &["yes: free every huge page first"]),
    Opt::word(
        "SHRINK_HUGE",
        None,
        &["yes: lower the count too when more are reserved than asked for"],
    ),
    Opt::word(
        "DRIVER_OVERRIDE",
        None,
        &["bind this driver (name or .ko path) instead; none: unbind only"],
    ),
    Opt::word(
        "TARGET_USER",
        None,
        &[
            "user (name or uid) given /dev/vfio/GROUP, the hugetlbfs mounts",
            "and a memlock limit (/etc/security/limits.d/); default SUDO_USER",
        ],
    ),
];

/// nvme-setup's manual.
pub const MANUAL: Manual = Manual {
    name: "nvme-setup",
    summary: "bind NVMe controllers to vfio-pci, reserve huge pages, as SPDK's scripts/setup.sh",
    usage: USAGE,
    description: "\
nvme-setup prepares a machine for nvme-perf(1), nvme-identify(1), the fio engines and
programs embedding the driver: it binds NVMe controllers to vfio-pci, reserves huge
pages and, with TARGET_USER, lets that user run them without root. It takes SPDK's
scripts/setup.sh verbs and variables.

A controller in use (a mounted filesystem, swap, LVM or md on one of its namespaces)
is skipped with the reason. A bound controller's block devices disappear until reset
gives it back to the kernel's nvme driver. config, reset, cleanup, bind, unbind,
keep-vfio and hugepages must run as root; status need not.

Exit status: 0 on success, 1 when a step failed (the lines so far, then the failure),
2 for a usage error.
",
    options: COMMANDS,
    head_width: 17,
    variables: VARIABLES,
    variables_intro: "\
Variables of config, reset and cleanup (setup.sh's; from the environment or as
NAME=VALUE arguments):
",
    notes: "\
Also: NVME_SETUP_SYSFS_ROOT=DIR reads and writes DIR/sys, DIR/proc, DIR/dev, DIR/etc
and DIR/tmp instead of the real ones (for tests).
",
};
