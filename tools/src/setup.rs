// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-setup: bind NVMe controllers to vfio-pci and back, reserve huge pages, and
//! say what state the machine is in, like SPDK's `scripts/setup.sh`.
//!
//! Everything goes through [`Sys`], whose root directory is `/` on a real machine and
//! a fake tree in tests (or `NVME_SETUP_SYSFS_ROOT`): sysfs under `ROOT/sys`, procfs
//! files under `ROOT/proc`. So the refusals (not root, no IOMMU, a mounted filesystem)
//! can be tested without hardware.

mod config;
mod help;
mod keep;
pub mod vars;

pub use help::{COMMANDS, MANUAL, USAGE, VARIABLES};
pub use keep::NVME_DYNAMIC_ID;
pub use vars::Settings;

use crate::trid::parse_bdf;
use crate::{usage, UsageError};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The PCI class of NVMe controllers (mass storage, non-volatile memory, NVMe).
pub const NVME_CLASS: &str = "0x010802";

/// What nvme-setup was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// setup.sh's `config`: bind, huge pages, TARGET_USER.
    Config(Settings),
    /// setup.sh's `reset`: controllers back to nvme.
    Reset(Settings),
    /// setup.sh's `cleanup`: leftovers of killed processes, huge pages freed.
    Cleanup(Settings),
    /// Show the state, as text or JSON.
    Status {
        /// `--json`.
        json: bool,
    },
    /// Bind these controllers (empty: all) to vfio-pci.
    Bind(Vec<String>),
    /// Give these controllers (empty: all on vfio-pci) back to nvme.
    Unbind(Vec<String>),
    /// Bind new NVMe controllers to vfio-pci as they appear (true), or stop (false).
    KeepVfio(bool),
    /// Reserve this many huge pages.
    Hugepages(u64),
    /// Print help.
    Help,
}

/// `NAME=VALUE` with an upper-case name: a setup.sh variable given as an argument.
fn assignment(arg: &str) -> Option<(String, String)> {
    let (k, v) = arg.split_once('=')?;
    let is_name = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_name.then(|| (k.to_string(), v.to_string()))
}

/// Parses nvme-setup's arguments; `env` looks up setup.sh's variables in the
/// environment (`NAME=VALUE` arguments win over it).
pub fn parse_args<I, S>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut assigned = Vec::new();
    let mut words: Vec<String> = Vec::new();
    for a in args.into_iter().map(Into::into) {
        match assignment(&a) {
            Some((k, v)) if vars::NAMES.contains(&k.as_str()) => assigned.push((k, v)),
            Some((k, _)) => {
                return Err(usage!(
                    "unknown variable {k}; setup.sh's variables are {}",
                    vars::NAMES.join(", ")
                ))
            }
            None => words.push(a),
        }
    }
    let cmd = words.first().map_or("config", String::as_str);
    // Only the table's commands: --help, the man page and the completion are made of it.
    if !COMMANDS.iter().any(|c| c.names().iter().any(|n| n == cmd)) {
        return Err(usage!(
            "unknown command '{cmd}'; use config, reset, status, cleanup, bind, unbind, \
             keep-vfio or hugepages"
        ));
    }
    let rest = words.get(1..).unwrap_or_default();
    if !assigned.is_empty() && !matches!(cmd, "config" | "reset" | "cleanup") {
        return Err(usage!(
            "{}={}: variables go with config, reset or cleanup, not {cmd}",
            assigned[0].0,
            assigned[0].1
        ));
    }
    let bdfs = |rest: &[String]| -> Result<Vec<String>, UsageError> {
        rest.iter()
            .map(|a| {
                parse_bdf(a).ok_or_else(|| {
                    usage!("{cmd} {a}: not a PCI address; give DDDD:BB:DD.F like 0000:01:00.0")
                })
            })
            .collect()
    };
    let settings = || Settings::parse(&assigned, env);
    match cmd {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "config" | "reset" | "cleanup" if !rest.is_empty() => Err(usage!(
            "{cmd} takes NAME=VALUE variables, not '{}' (to pick controllers: PCI_ALLOWED=\"{}\")",
            rest[0],
            rest[0]
        )),
        "config" => Ok(Command::Config(settings()?)),
        "reset" => Ok(Command::Reset(settings()?)),
        "cleanup" => Ok(Command::Cleanup(settings()?)),
        "status" => match rest {
            [] => Ok(Command::Status { json: false }),
            [j] if j == "--json" => Ok(Command::Status { json: true }),
            _ => Err(usage!("status takes only --json")),
        },
        "bind" => Ok(Command::Bind(bdfs(rest)?)),
        "unbind" => Ok(Command::Unbind(bdfs(rest)?)),
        "keep-vfio" => match rest {
            [w] if w == "on" => Ok(Command::KeepVfio(true)),
            [w] if w == "off" => Ok(Command::KeepVfio(false)),
            _ => Err(usage!("keep-vfio needs on or off, e.g. keep-vfio on")),
        },
        "hugepages" => match rest {
            [n] => n
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 1 << 20)
                .map(Command::Hugepages)
                .ok_or_else(|| usage!("hugepages {n}: give a page count, 0 to 1048576")),
            _ => Err(usage!("hugepages needs one count, e.g. hugepages 512")),
        },
        other => Err(usage!(
            "unknown command '{other}'; use config, reset, status, cleanup, bind, unbind, \
             keep-vfio or hugepages"
        )),
    }
}

/// The refusal when the kernel has no IOMMU.
const NO_IOMMU: &str = "no IOMMU: /sys/kernel/iommu_groups has no groups, so VFIO cannot isolate the device; enable VT-d/AMD-Vi and boot with intel_iommu=on (or amd_iommu=on)";

/// Loads a kernel module by name, or says why it could not.
pub type ModuleLoader = Box<dyn Fn(&str) -> Result<(), String>>;

/// The machine as nvme-setup sees it.
pub struct Sys {
    /// `/`, or a fake tree.
    pub root: PathBuf,
    /// Whether we may write to sysfs.
    pub is_root: bool,
    /// Loads a kernel module; the real one runs `modprobe`.
    pub modprobe: ModuleLoader,
}

impl std::fmt::Debug for Sys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sys")
            .field("root", &self.root)
            .field("is_root", &self.is_root)
            .finish()
    }
}

/// `modprobe NAME`, or `insmod PATH` for a module file (`DRIVER_OVERRIDE=PATH.ko`).
fn run_modprobe(module: &str) -> Result<(), String> {
    let tool = if module.contains('/') {
        "insmod"
    } else {
        "modprobe"
    };
    match std::process::Command::new(tool).arg(module).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{tool} {module} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {tool}: {e}")),
    }
}

/// An NVMe controller on the PCI bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctrl {
    /// PCI address.
    pub bdf: String,
    /// `vendor:device`, hex.
    pub id: String,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group.
    pub group: Option<u32>,
    /// Block devices of its namespaces (`nvme0n1`), if the kernel driver has it.
    pub block_devices: Vec<String>,
}

fn link_name(p: &Path) -> Option<String> {
    fs::read_link(p)
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Turns a path device name `nvme0c1n1` into its namespace head `nvme0n1`.
pub fn head_name(name: &str) -> String {
    if let Some(c) = name[4..].find('c').map(|i| i + 4) {
        if let Some(n) = name[c..].find('n').map(|i| i + c) {
            if name[c + 1..n].chars().all(|ch| ch.is_ascii_digit()) {
                return format!("{}{}", &name[..c], &name[n..]);
            }
        }
    }
    name.to_string()
}

impl Sys {
    /// The real machine, or the tree named by `NVME_SETUP_SYSFS_ROOT`.
    pub fn from_env() -> Self {
        let root = std::env::var_os("NVME_SETUP_SYSFS_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        // SAFETY: geteuid has no preconditions and cannot fail.
        let is_root = unsafe { libc::geteuid() } == 0;
        Sys {
            root,
            is_root,
            modprobe: Box::new(run_modprobe),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn dev(&self, bdf: &str) -> PathBuf {
        self.path("sys/bus/pci/devices").join(bdf)
    }

    fn write(&self, p: &Path, s: &str) -> Result<(), String> {
        fs::write(p, s).map_err(|e| format!("writing '{}' to {}: {e}", s.trim(), p.display()))
    }

    /// Every NVMe controller, sorted by address.
    pub fn controllers(&self) -> Vec<Ctrl> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.path("sys/bus/pci/devices")) else {
            return out;
        };
        for e in rd.flatten() {
            let bdf = e.file_name().to_string_lossy().into_owned();
            let d = e.path();
            if read_trim(&d.join("class")).as_deref() != Some(NVME_CLASS) {
                continue;
            }
            let hex = |f: &str| {
                read_trim(&d.join(f))
                    .map(|s| s.trim_start_matches("0x").to_string())
                    .unwrap_or_else(|| "?".into())
            };
            let mut block_devices = Vec::new();
            if let Ok(rd) = fs::read_dir(d.join("nvme")) {
                for c in rd.flatten() {
                    for n in fs::read_dir(c.path()).into_iter().flatten().flatten() {
                        let name = n.file_name().to_string_lossy().into_owned();
                        if name.starts_with("nvme") && name[4..].contains('n') {
                            let h = head_name(&name);
                            if !block_devices.contains(&h) {
                                block_devices.push(h);
                            }
                        }
                    }
                }
            }
            block_devices.sort();
            out.push(Ctrl {
                id: format!("{}:{}", hex("vendor"), hex("device")),
                driver: link_name(&d.join("driver")),
                group: link_name(&d.join("iommu_group")).and_then(|g| g.parse().ok()),
                block_devices,
                bdf,
            });
        }
        out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        out
    }

    /// True if the kernel has an IOMMU (some IOMMU group exists).
    pub fn has_iommu(&self) -> bool {
        fs::read_dir(self.path("sys/kernel/iommu_groups"))
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false)
    }

    /// Whether VFIO can use the device's IOMMU group: every device in it is unbound,
    /// on vfio-pci, or a PCIe port. `Err` says which device spoils it.
    pub fn group_viable(&self, c: &Ctrl) -> Result<(), String> {
        let Some(g) = c.group else {
            return Err("no IOMMU group".into());
        };
        let dir = self
            .path("sys/kernel/iommu_groups")
            .join(g.to_string())
            .join("devices");
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bdf = e.file_name().to_string_lossy().into_owned();
            if bdf == c.bdf {
                continue;
            }
            match link_name(&self.dev(&bdf).join("driver")) {
                None => {}
                Some(d) if d == "vfio-pci" || d == "pcieport" || d == "pci-stub" => {}
                Some(d) => return Err(format!("{bdf} in group {g} is bound to {d}")),
            }
        }
        Ok(())
    }

    /// What is using a controller's namespaces: mounts, swap, holders.
    pub fn users(&self, c: &Ctrl) -> Vec<String> {
        let mut out = Vec::new();
        let mounts = fs::read_to_string(self.path("proc/mounts")).unwrap_or_default();
        let swaps = fs::read_to_string(self.path("proc/swaps")).unwrap_or_default();
        for blk in &c.block_devices {
            let dev = format!("/dev/{blk}");
            let ours =
                |d: &str| d == dev || d.strip_prefix(&dev).is_some_and(|r| r.starts_with('p'));
            for line in mounts.lines() {
                let mut f = line.split_whitespace();
                if let (Some(d), Some(mnt)) = (f.next(), f.next()) {
                    if ours(d) {
                        out.push(format!("{d} is mounted on {mnt}"));
                    }
                }
            }
            for line in swaps.lines().skip(1) {
                if let Some(d) = line.split_whitespace().next() {
                    if ours(d) {
                        out.push(format!("{d} is in use as swap"));
                    }
                }
            }
            let holders = self.path("sys/block").join(blk).join("holders");
            for h in fs::read_dir(holders).into_iter().flatten().flatten() {
                out.push(format!(
                    "{dev} is held by {}",
                    h.file_name().to_string_lossy()
                ));
            }
        }
        out
    }

    /// The kernel lockdown mode (`none`, `integrity`, `confidentiality`: the one in
    /// brackets in /sys/kernel/security/lockdown), if the kernel has lockdown.
    pub fn lockdown(&self) -> Option<String> {
        let text = read_trim(&self.path("sys/kernel/security/lockdown"))?;
        let mode = text.split_whitespace().find(|w| w.starts_with('['))?;
        Some(mode.trim_matches(['[', ']']).to_string())
    }

    /// Huge pages (default size): (free, total, size in kB), from /proc/meminfo.
    pub fn hugepages(&self) -> (u64, u64, u64) {
        let info = fs::read_to_string(self.path("proc/meminfo")).unwrap_or_default();
        let get = |key: &str| {
            info.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            get("HugePages_Free:"),
            get("HugePages_Total:"),
            get("Hugepagesize:"),
        )
    }

    /// The status report.
    pub fn status(&self) -> String {
        let mut out = String::new();
        let ctrls = self.controllers();
        let groups = fs::read_dir(self.path("sys/kernel/iommu_groups"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        if groups > 0 {
            let _ = writeln!(out, "IOMMU: enabled ({groups} groups)");
        } else {
            let _ = writeln!(
                out,
                "IOMMU: none (no /sys/kernel/iommu_groups entries): VFIO cannot be used; boot with intel_iommu=on or amd_iommu=on"
            );
        }
        match self.lockdown().as_deref() {
            None => {}
            Some("none") => {
                let _ = writeln!(out, "Kernel lockdown: none");
            }
            Some(mode) => {
                let _ = writeln!(
                    out,
                    "Kernel lockdown: {mode}: VFIO with an IOMMU works under it; \
                     modules must be signed, as the distribution's vfio-pci is"
                );
            }
        }
        let (free, total, kb) = self.hugepages();
        let _ = writeln!(out, "Huge pages ({kb} kB): {free} free of {total}");
        if ctrls.is_empty() {
            let _ = writeln!(out, "NVMe controllers: none found");
            return out;
        }
        let _ = writeln!(
            out,
            "{:<14} {:<11} {:<10} {:<6} {:<40} Block devices",
            "BDF", "Vendor:Dev", "Driver", "Group", "VFIO viable"
        );
        for c in &ctrls {
            let viable = match self.group_viable(c) {
                Ok(()) => "yes".to_string(),
                Err(e) => format!("no: {e}"),
            };
            let mut blk = c.block_devices.join(",");
            let users = self.users(c);
            if !users.is_empty() {
                blk = format!("{blk} ({})", users.join("; "));
            }
            let _ = writeln!(
                out,
                "{:<14} {:<11} {:<10} {:<6} {:<40} {}",
                c.bdf,
                c.id,
                c.driver.as_deref().unwrap_or("-"),
                c.group.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                viable,
                if blk.is_empty() { "-".into() } else { blk }
            );
        }
        out
    }

    /// The status report as one JSON document (`status --json`).
    pub fn status_json(&self) -> serde_json::Value {
        use serde_json::json;
        use std::os::unix::fs::MetadataExt;
        let groups = fs::read_dir(self.path("sys/kernel/iommu_groups"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        let (free, total, kb) = self.hugepages();
        let mut nodes = Vec::new();
        for n in 0.. {
            let d = self
                .path("sys/devices/system/node")
                .join(format!("node{n}/hugepages/hugepages-{kb}kB"));
            if !d.exists() {
                break;
            }
            let count = |f: &str| read_trim(&d.join(f)).and_then(|s| s.parse::<u64>().ok());
            nodes.push(json!({
                "node": n,
                "total": count("nr_hugepages"),
                "free": count("free_hugepages"),
            }));
        }
        let controllers: Vec<serde_json::Value> = self
            .controllers()
            .iter()
            .map(|c| {
                let (vendor, device) = c.id.split_once(':').unwrap_or((&c.id, ""));
                let node = c.group.map(|g| self.path("dev/vfio").join(g.to_string()));
                let owner = node
                    .as_ref()
                    .and_then(|n| fs::metadata(n).ok())
                    .map(|m| m.uid());
                let viable = self.group_viable(c);
                json!({
                    "bdf": c.bdf,
                    "vendor": vendor,
                    "device": device,
                    "driver": c.driver,
                    "iommu_group": c.group,
                    "group_device": owner.and(c.group.map(|g| format!("/dev/vfio/{g}"))),
                    "group_device_owner_uid": owner,
                    "vfio_viable": viable.is_ok(),
                    "not_viable_because": viable.err(),
                    "block_devices": c.block_devices,
                    "in_use": self.users(c),
                })
            })
            .collect();
        json!({
            "iommu_groups": groups,
            "lockdown": self.lockdown(),
            "hugepages": {"size_kb": kb, "total": total, "free": free, "nodes": nodes},
            "controllers": controllers,
        })
    }

    fn require_root(&self, what: &str) -> Result<(), String> {
        if self.is_root {
            Ok(())
        } else {
            Err(format!(
                "{what} must run as root: it writes to /sys (the tools themselves run \
                 as a user once `sudo nvme-setup config TARGET_USER=$USER` has run)"
            ))
        }
    }

    fn pick(&self, bdfs: &[String], default: impl Fn(&Ctrl) -> bool) -> Result<Vec<Ctrl>, String> {
        let all = self.controllers();
        if bdfs.is_empty() {
            return Ok(all.into_iter().filter(|c| default(c)).collect());
        }
        bdfs.iter()
            .map(|b| {
                all.iter().find(|c| &c.bdf == b).cloned().ok_or_else(|| {
                    if self.dev(b).exists() {
                        format!("{b} is not an NVMe controller (PCI class is not {NVME_CLASS})")
                    } else {
                        format!("{b}: no such PCI device")
                    }
                })
            })
            .collect()
    }

    fn ensure_driver(&self, driver: &str, module: &str) -> Result<(), String> {
        let dir = self.path("sys/bus/pci/drivers").join(driver);
        if dir.exists() {
            return Ok(());
        }
        let r = (self.modprobe)(module);
        if dir.exists() {
            return Ok(());
        }
        Err(format!(
            "the {driver} driver is not loaded and loading it failed ({}); load the module (modprobe {module}, or insmod its .ko files)",
            r.err().unwrap_or_else(|| "modprobe succeeded but the driver did not appear".into())
        ))
    }

    /// Binds controllers to vfio-pci. Returns a line per controller; `Err` holds the
    /// lines so far and the first refusal.
    pub fn bind(&self, bdfs: &[String]) -> Result<Vec<String>, String> {
        self.require_root("nvme-setup bind")?;
        if !self.has_iommu() {
            return Err(NO_IOMMU.into());
        }
        let ctrls = self.pick(bdfs, |_| true)?;
        if ctrls.is_empty() {
            return Err("no NVMe controller found on the PCI bus".into());
        }
        let mut lines = Vec::new();
        let mut refusals = Vec::new();
        // Loaded (or its failure found) at the first controller that needs it; every
        // controller that reaches it then reports the same result.
        let mut vfio: Option<Result<(), String>> = None;
        for c in &ctrls {
            if c.driver.as_deref() == Some("vfio-pci") {
                lines.push(format!("{}: already bound to vfio-pci", c.bdf));
                continue;
            }
            let users = self.users(c);
            if !users.is_empty() {
                refusals.push(format!(
                    "{}: refusing to bind: {}; unmount or release it first",
                    c.bdf,
                    users.join("; ")
                ));
                continue;
            }
            if c.group.is_none() {
                refusals.push(format!(
                    "{}: refusing to bind: it has no IOMMU group",
                    c.bdf
                ));
                continue;
            }
            let bound = vfio
                .get_or_insert_with(|| self.ensure_driver("vfio-pci", "vfio-pci"))
                .clone()
                .and_then(|()| self.bind_one(c));
            match bound {
                Ok(l) => lines.push(l),
                Err(e) => refusals.push(format!("{}: {e}", c.bdf)),
            }
        }
        if refusals.is_empty() {
            Ok(lines)
        } else {
            lines.extend(refusals);
            Err(lines.join("\n"))
        }
    }

    /// Moves `c` to `driver`: writes `driver_override` (`override_` there), unbinds
    /// its current driver, asks `drivers_probe`, and checks where it landed. A failed
    /// write's error is returned as is; if the device ends up elsewhere, the error is
    /// "`what` did not take: the device is on ... after drivers_probe".
    fn rebind(&self, c: &Ctrl, override_: &str, driver: &str, what: &str) -> Result<(), String> {
        let dev = self.dev(&c.bdf);
        self.write(&dev.join("driver_override"), override_)?;
        if c.driver.is_some() {
            self.write(&dev.join("driver").join("unbind"), &c.bdf)?;
        }
        self.write(&self.path("sys/bus/pci/drivers_probe"), &c.bdf)?;
        let now = link_name(&dev.join("driver"));
        if now.as_deref() != Some(driver) {
            return Err(format!(
                "{what} did not take: the device is on {} after drivers_probe",
                now.as_deref().unwrap_or("no driver")
            ));
        }
        Ok(())
    }

    /// Binds one controller to vfio-pci (the driver is loaded).
    fn bind_one(&self, c: &Ctrl) -> Result<String, String> {
        self.rebind(c, "vfio-pci", "vfio-pci", "bind")?;
        let g = c.group.map(|g| g.to_string()).unwrap_or_default();
        let viable = match self.group_viable(c) {
            Ok(()) => String::new(),
            Err(e) => format!(" (group not viable: {e})"),
        };
        Ok(format!(
            "{}: {} -> vfio-pci, /dev/vfio/{g}{viable}",
            c.bdf,
            c.driver.as_deref().unwrap_or("no driver")
        ))
    }

    /// Gives controllers back to the kernel's nvme driver.
    pub fn unbind(&self, bdfs: &[String]) -> Result<Vec<String>, String> {
        self.require_root("nvme-setup unbind")?;
        let ctrls = self.pick(bdfs, |c| c.driver.as_deref() == Some("vfio-pci"))?;
        let mut lines = Vec::new();
        if ctrls.is_empty() {
            lines.push("no NVMe controller is bound to vfio-pci".into());
            return Ok(lines);
        }
        self.ensure_driver("nvme", "nvme")?;
        for c in &ctrls {
            if c.driver.as_deref() == Some("nvme") {
                lines.push(format!("{}: already bound to nvme", c.bdf));
                continue;
            }
            self.rebind(c, "\n", "nvme", &format!("{}: unbind", c.bdf))?;
            lines.push(format!(
                "{}: {} -> nvme",
                c.bdf,
                c.driver.as_deref().unwrap_or("no driver")
            ));
        }
        Ok(lines)
    }

    /// Reserves `n` huge pages; says how many the kernel gave.
    pub fn set_hugepages(&self, n: u64) -> Result<String, String> {
        self.require_root("nvme-setup hugepages")?;
        let p = self.path("proc/sys/vm/nr_hugepages");
        self.write(&p, &n.to_string())?;
        let got: u64 = read_trim(&p).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (free, total, kb) = self.hugepages();
        if got < n {
            return Err(format!(
                "asked for {n} huge pages, the kernel reserved {got} (memory too fragmented or too small); free some memory or ask for fewer"
            ));
        }
        Ok(format!(
            "huge pages: {got} reserved ({kb} kB each; meminfo: {free} free of {total})"
        ))
    }
}

#[cfg(test)]
pub(super) mod tests;
