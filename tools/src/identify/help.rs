// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-identify's options: the table the parser checks option names against, and
//! `--help`, the man page and the bash completion are made of ([`crate::manual`]).

use crate::manual::{Manual, Opt};

/// One-line usage.
pub const USAGE: &str =
    "usage: nvme-identify [-r TRID]... [BDF]... [-o json|normal | --json] [-x] [-L FLAG] [-i ID] [-p CORE] [-d MB] [-g]";

/// Every option nvme-identify takes (and the two of spdk_nvme_identify's it refuses
/// by name, hidden), in `--help` order. The entry without a name is the BDF argument.
pub const OPTIONS: &[Opt] = &[
    Opt::new(
        Some('r'),
        Some("transport"),
        Some("TRID"),
        &["'trtype:PCIe traddr:0000:01:00.0 [ns:1]' (repeatable)"],
    ),
    Opt::new(
        None,
        None,
        Some("BDF"),
        &[
            "a PCI address, 0000:01:00.0 or 01:00.0 (same as -r traddr:BDF);",
            "default: every NVMe controller bound to vfio-pci",
        ],
    ),
    Opt::new(
        Some('o'),
        Some("output-format"),
        Some("json|normal"),
        &[
            "json: nvme-cli's documents, `nvme id-ctrl -o json` for each",
            "controller named without ns:, `nvme id-ns -o json` for each",
            "namespace named with ns: (one JSON document each, in order);",
            "normal: the text (the default)",
        ],
    )
    .choices(&["json", "normal"]),
    Opt::new(
        None,
        Some("json"),
        None,
        &["print nvme-identify's own JSON document (every section)"],
    ),
    Opt::new(
        Some('x'),
        None,
        None,
        &["hex dump of the raw Identify Controller and Namespace data"],
    ),
    Opt::new(
        Some('L'),
        None,
        Some("FLAG"),
        &[
            "debug messages of the driver on stderr (SPDK's log flags are",
            "not kept apart here: any flag turns them all on)",
        ],
    ),
    Opt::new(
        Some('i'),
        None,
        Some("ID"),
        &[
            "spdk_nvme_identify's shared memory ID: accepted and ignored,",
            "with a note",
        ],
    ),
    Opt::new(
        Some('p'),
        None,
        Some("CORE"),
        &["spdk_nvme_identify's main core: accepted and ignored, with a note"],
    ),
    Opt::new(
        Some('d'),
        None,
        Some("MB"),
        &[
            "spdk_nvme_identify's DPDK memory size: accepted and ignored,",
            "with a note",
        ],
    ),
    Opt::new(
        Some('g'),
        None,
        None,
        &[
            "spdk_nvme_identify's DPDK single segment flag: accepted and",
            "ignored, with a note",
        ],
    ),
    Opt::new(
        Some('H'),
        None,
        None,
        &["this text (spdk_nvme_identify's help option)"],
    ),
    Opt::new(Some('h'), Some("help"), None, &["this text"]),
    Opt::new(
        Some('V'),
        None,
        None,
        &["spdk_nvme_identify's VMD enumeration: refused, VMD is not supported"],
    )
    .hidden(),
    Opt::new(
        Some('z'),
        None,
        None,
        &["spdk_nvme_identify's zone report: refused, zoned namespaces are not supported"],
    )
    .hidden(),
];

/// nvme-identify's manual.
pub const MANUAL: Manual = Manual {
    name: "nvme-identify",
    summary: "show NVMe controller and namespace details, like spdk_nvme_identify and nvme id-ctrl",
    usage: USAGE,
    description: "\
nvme-identify reads the Identify Controller and Identify Namespace data, SMART and
error log pages of NVMe controllers bound to vfio-pci, through the same userspace driver
as nvme-perf(1), and prints them as spdk_nvme_identify does; with -o json, as nvme-cli's
`nvme id-ctrl -o json` and `nvme id-ns -o json` documents, with their key names.

It only reads: nothing is written to the namespaces.

Exit status: 0 on success, 1 when a controller could not be opened or read, 2 for a
usage error.
",
    options: OPTIONS,
    head_width: 21,
    variables: &[],
    variables_intro: "",
    notes: "\
spdk_nvme_identify's -V (VMD), -z (zone report) and -o without a format (Open-Channel
SSDs) are refused with the reason.
",
};
