// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The variables of SPDK's `scripts/setup.sh`, which nvme-setup's `config`, `reset`
//! and `cleanup` take with the same names and meanings, from the environment or as
//! `NAME=VALUE` arguments (an argument wins over the environment):
//!
//! - `PCI_ALLOWED`, `PCI_BLOCKED`: whitespace (or comma) separated PCI addresses.
//!   Without `PCI_ALLOWED` every controller is allowed; `PCI_ALLOWED=none` allows
//!   none; a controller in `PCI_BLOCKED` is left alone even when allowed.
//!   `NVME_ALLOWED` adds to `PCI_ALLOWED`; `SKIP_PCI` (any value) is `PCI_ALLOWED=none`.
//! - `HUGEMEM`: MiB of huge pages to reserve (default 2048); `NRHUGE`: a page count,
//!   which wins over `HUGEMEM`. `HUGENODE`: NUMA nodes to reserve them on, comma
//!   separated: `0,1` puts `NRHUGE` on each, `nodes_hp[0]=512` gives node 0 its own
//!   count; default node 0 (the system-wide count on a kernel without NUMA nodes).
//!   A node that already has as many pages keeps them unless `SHRINK_HUGE=yes`;
//!   `CLEAR_HUGE=yes` frees every huge page first.
//! - `DRIVER_OVERRIDE`: the driver to bind instead of vfio-pci (a module name, or a
//!   path to a `.ko` file, which is `insmod`ed); `none` unbinds without binding.
//! - `TARGET_USER`: the user (name or uid) given the VFIO group devices, the hugetlbfs
//!   mounts and a locked-memory limit; default `SUDO_USER`, the user who ran sudo.

use crate::trid::parse_bdf;
use crate::{usage, UsageError};

/// Every variable nvme-setup reads, for the usage error on an unknown `NAME=VALUE`.
pub const NAMES: &[&str] = &[
    "PCI_ALLOWED",
    "PCI_BLOCKED",
    "NVME_ALLOWED",
    "SKIP_PCI",
    "HUGEMEM",
    "NRHUGE",
    "HUGENODE",
    "SHRINK_HUGE",
    "CLEAR_HUGE",
    "DRIVER_OVERRIDE",
    "TARGET_USER",
];

/// setup.sh's default `HUGEMEM`, in MiB.
pub const HUGEMEM_DEFAULT_MIB: u64 = 2048;

/// The driver `config` binds controllers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// vfio-pci: what this project's driver needs (the default).
    VfioPci,
    /// `DRIVER_OVERRIDE=none`: unbind from the current driver and bind nothing.
    None,
    /// `DRIVER_OVERRIDE=NAME` (loaded with modprobe) or `=PATH.ko` (with insmod).
    Other {
        /// The driver's name in sysfs (the file name without `.ko`).
        name: String,
        /// The module file, when a path was given.
        path: Option<String>,
    },
}

impl Driver {
    /// The driver's name in `/sys/bus/pci/drivers`, if it binds one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Driver::VfioPci => Some("vfio-pci"),
            Driver::None => None,
            Driver::Other { name, .. } => Some(name),
        }
    }
}

/// How many huge pages to reserve, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugeRequest {
    /// `NRHUGE`, if given; else the pages `HUGEMEM` makes at the default page size.
    pub nrhuge: Option<u64>,
    /// `HUGEMEM`, MiB.
    pub hugemem_mib: u64,
    /// `HUGENODE`: (node, its own count) pairs; empty: node 0 with the default count.
    pub nodes: Vec<(u32, Option<u64>)>,
    /// `CLEAR_HUGE=yes`.
    pub clear: bool,
    /// `SHRINK_HUGE=yes`.
    pub shrink: bool,
}

impl HugeRequest {
    /// Pages per node when no count is given for it, for pages of `page_kb` KiB:
    /// `NRHUGE`, else `HUGEMEM` rounded up to whole pages.
    pub fn pages(&self, page_kb: u64) -> u64 {
        let page_mib = (page_kb / 1024).max(1);
        self.nrhuge
            .unwrap_or_else(|| self.hugemem_mib.div_ceil(page_mib))
    }
}

/// setup.sh's variables, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `PCI_ALLOWED` (with `NVME_ALLOWED`): `None` allows every controller.
    pub allowed: Option<Vec<String>>,
    /// `PCI_BLOCKED`.
    pub blocked: Vec<String>,
    /// Huge pages.
    pub huge: HugeRequest,
    /// `DRIVER_OVERRIDE`.
    pub driver: Driver,
    /// `TARGET_USER` (or `SUDO_USER`).
    pub target_user: Option<String>,
}

impl Settings {
    /// Why `bdf` is left alone, or `None` if `config`/`reset` may move it.
    pub fn refusal(&self, bdf: &str) -> Option<&'static str> {
        if self.blocked.iter().any(|b| b == bdf) {
            return Some("in PCI_BLOCKED");
        }
        match &self.allowed {
            Some(list) if !list.iter().any(|a| a == bdf) => Some("not in PCI_ALLOWED"),
            _ => None,
        }
    }

    /// Parses the variables: `assigned` holds the `NAME=VALUE` arguments, `env` looks
    /// one up in the environment.
    pub fn parse(
        assigned: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, UsageError> {
        let get = |name: &str| -> Option<String> {
            assigned
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(name))
        };
        // Set but empty counts as unset, as `${VAR:=...}` does in setup.sh.
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let mut allowed = match get("PCI_ALLOWED") {
            None => None,
            Some(v) if v.trim() == "none" => Some(Vec::new()),
            Some(v) => Some(bdf_list("PCI_ALLOWED", &v)?),
        };
        if let Some(v) = get("NVME_ALLOWED") {
            let more = bdf_list("NVME_ALLOWED", &v)?;
            allowed.get_or_insert_with(Vec::new).extend(more);
        }
        if get("SKIP_PCI").is_some() {
            allowed = Some(Vec::new());
        }
        let blocked = match get("PCI_BLOCKED") {
            None => Vec::new(),
            Some(v) => bdf_list("PCI_BLOCKED", &v)?,
        };
        let count = |name: &str, v: &str, max: u64| -> Result<u64, UsageError> {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| usage!("{name}={v}: give a whole number, 0 to {max}"))
        };
        let hugemem_mib = match get("HUGEMEM") {
            None => HUGEMEM_DEFAULT_MIB,
            Some(v) => count("HUGEMEM", &v, 1 << 30)?,
        };
        let nrhuge = match get("NRHUGE") {
            None => None,
            Some(v) => Some(count("NRHUGE", &v, 1 << 30)?),
        };
        let nodes = match get("HUGENODE") {
            None => Vec::new(),
            Some(v) => hugenode(&v)?,
        };
        let yes = |name: &str| get(name).is_some_and(|v| v.trim() == "yes");
        let driver = match get("DRIVER_OVERRIDE") {
            None => Driver::VfioPci,
            Some(v) if v.trim() == "none" => Driver::None,
            Some(v) => {
                let v = v.trim().to_string();
                let file = v.rsplit('/').next().unwrap_or(&v);
                let name = file.strip_suffix(".ko").unwrap_or(file).to_string();
                if name.is_empty() {
                    return Err(usage!(
                        "DRIVER_OVERRIDE={v}: give a driver name (vfio-pci) or a .ko path"
                    ));
                }
                let path = (v != name).then_some(v);
                if name == "vfio-pci" && path.is_none() {
                    Driver::VfioPci
                } else {
                    Driver::Other { name, path }
                }
            }
        };
        let target_user = get("TARGET_USER")
            .or_else(|| get("SUDO_USER"))
            .map(|u| u.trim().to_string());
        Ok(Settings {
            allowed,
            blocked,
            huge: HugeRequest {
                nrhuge,
                hugemem_mib,
                nodes,
                clear: yes("CLEAR_HUGE"),
                shrink: yes("SHRINK_HUGE"),
            },
            driver,
            target_user,
        })
    }
}

/// `0000:01:00.0 0000:02:00.0` (spaces or commas; short forms like `01:00.0` too).
fn bdf_list(name: &str, v: &str) -> Result<Vec<String>, UsageError> {
    v.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| {
            parse_bdf(w).ok_or_else(|| {
                usage!("{name}: '{w}' is not a PCI address; give DDDD:BB:DD.F like 0000:01:00.0")
            })
        })
        .collect()
}

/// `HUGENODE`: `0,1` or `nodes_hp[0]=2048,nodes_hp[1]=512,2`.
fn hugenode(v: &str) -> Result<Vec<(u32, Option<u64>)>, UsageError> {
    let bad = |item: &str| {
        usage!(
            "HUGENODE: '{item}' is neither a node number nor nodes_hp[NODE]=PAGES \
             (e.g. HUGENODE='nodes_hp[0]=512,1')"
        )
    };
    let mut out: Vec<(u32, Option<u64>)> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (node, pages) = match item.strip_prefix("nodes_hp[") {
            Some(rest) => {
                let (node, pages) = rest.split_once("]=").ok_or_else(|| bad(item))?;
                let pages = pages.parse::<u64>().map_err(|_| bad(item))?;
                (node, Some(pages))
            }
            None => (item, None),
        };
        let node = node.parse::<u32>().map_err(|_| bad(item))?;
        out.retain(|(n, _)| *n != node);
        out.push((node, pages));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Settings, UsageError> {
        let assigned: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::parse(&assigned, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_are_setup_sh_defaults() {
        let s = parse(&[], &[]).unwrap();
        assert_eq!(s.allowed, None);
        assert!(s.blocked.is_empty());
        assert_eq!(s.huge.hugemem_mib, 2048);
        assert_eq!(s.huge.pages(2048), 1024);
        assert_eq!(s.huge.pages(1 << 20), 2);
        assert!(s.huge.nodes.is_empty() && !s.huge.clear && !s.huge.shrink);
        assert_eq!(s.driver, Driver::VfioPci);
        assert_eq!(s.target_user, None);
        assert_eq!(s.refusal("0000:01:00.0"), None);
    }

    #[test]
    fn pci_lists_allow_and_block() {
        let s = parse(
            &[("PCI_ALLOWED", "01:00.0 0000:02:00.0,0000:03:00.0")],
            &[("PCI_BLOCKED", "0000:02:00.0")],
        )
        .unwrap();
        assert_eq!(
            s.allowed.as_deref().unwrap(),
            ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0"]
        );
        assert_eq!(s.refusal("0000:01:00.0"), None);
        // PCI_BLOCKED wins over PCI_ALLOWED.
        assert_eq!(s.refusal("0000:02:00.0"), Some("in PCI_BLOCKED"));
        assert_eq!(s.refusal("0000:04:00.0"), Some("not in PCI_ALLOWED"));
        let none = parse(&[("PCI_ALLOWED", "none")], &[]).unwrap();
        assert_eq!(none.refusal("0000:01:00.0"), Some("not in PCI_ALLOWED"));
        let skip = parse(&[], &[("SKIP_PCI", "1"), ("PCI_ALLOWED", "01:00.0")]).unwrap();
        assert_eq!(skip.allowed, Some(vec![]));
        let nvme = parse(&[], &[("NVME_ALLOWED", "0000:05:00.0")]).unwrap();
        assert_eq!(nvme.allowed, Some(vec!["0000:05:00.0".to_string()]));
        // Set but empty is unset.
        assert_eq!(parse(&[("PCI_ALLOWED", " ")], &[]).unwrap().allowed, None);
        let e = parse(&[("PCI_BLOCKED", "0000:01:00.0 disk")], &[]).unwrap_err();
        assert!(
            e.0.contains("PCI_BLOCKED: 'disk' is not a PCI address"),
            "{e}"
        );
    }

    #[test]
    fn an_argument_wins_over_the_environment() {
        let s = parse(&[("HUGEMEM", "64")], &[("HUGEMEM", "4096")]).unwrap();
        assert_eq!(s.huge.hugemem_mib, 64);
        assert_eq!(s.huge.pages(2048), 32);
        let s = parse(&[], &[("HUGEMEM", "4096")]).unwrap();
        assert_eq!(s.huge.hugemem_mib, 4096);
    }

    #[test]
    fn huge_page_variables() {
        // HUGEMEM rounds up to whole pages; NRHUGE wins over it.
        let s = parse(&[("HUGEMEM", "5")], &[]).unwrap();
        assert_eq!(s.huge.pages(2048), 3);
        let s = parse(&[("HUGEMEM", "64"), ("NRHUGE", "7")], &[]).unwrap();
        assert_eq!(s.huge.pages(2048), 7);
        let s = parse(
            &[
                ("HUGENODE", "nodes_hp[0]=2048,nodes_hp[1]=512,2"),
                ("CLEAR_HUGE", "yes"),
                ("SHRINK_HUGE", "yes"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            s.huge.nodes,
            vec![(0, Some(2048)), (1, Some(512)), (2, None)]
        );
        assert!(s.huge.clear && s.huge.shrink);
        // Only "yes" means yes, as in setup.sh.
        assert!(!parse(&[("CLEAR_HUGE", "1")], &[]).unwrap().huge.clear);
        for (k, v, want) in [
            ("HUGEMEM", "2G", "HUGEMEM=2G: give a whole number"),
            ("NRHUGE", "-1", "NRHUGE=-1: give a whole number"),
            ("HUGENODE", "node0", "HUGENODE: 'node0' is neither"),
            (
                "HUGENODE",
                "nodes_hp[0]512",
                "HUGENODE: 'nodes_hp[0]512' is neither",
            ),
        ] {
            let e = parse(&[(k, v)], &[]).unwrap_err();
            assert!(e.0.contains(want), "{k}={v}: {e}");
        }
    }

    #[test]
    fn driver_override_and_target_user() {
        let d = |v: &str| parse(&[("DRIVER_OVERRIDE", v)], &[]).unwrap().driver;
        assert_eq!(d("none"), Driver::None);
        assert_eq!(d("vfio-pci"), Driver::VfioPci);
        assert_eq!(
            d("uio_pci_generic"),
            Driver::Other {
                name: "uio_pci_generic".into(),
                path: None
            }
        );
        assert_eq!(
            d("/home/public/dpdk/build/kmod/igb_uio.ko"),
            Driver::Other {
                name: "igb_uio".into(),
                path: Some("/home/public/dpdk/build/kmod/igb_uio.ko".into())
            }
        );
        assert_eq!(Driver::None.name(), None);
        // TARGET_USER, else the user who ran sudo.
        let s = parse(&[], &[("SUDO_USER", "bob")]).unwrap();
        assert_eq!(s.target_user.as_deref(), Some("bob"));
        let s = parse(&[("TARGET_USER", "alice")], &[("SUDO_USER", "bob")]).unwrap();
        assert_eq!(s.target_user.as_deref(), Some("alice"));
    }
}
