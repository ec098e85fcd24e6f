// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-setup's tests, on a fake machine (sysfs and procfs in a temporary folder).

use super::*;
use std::os::unix::fs::symlink;

/// A fake machine: one NVMe controller on `driver` with namespace nvme0n1.
pub(crate) struct Fake {
    pub(crate) dir: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn fake(name: &str, driver: Option<&str>, iommu: bool) -> Fake {
    let dir = std::env::temp_dir().join(format!("nvme-setup-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let d = dir.join("sys/bus/pci/devices/0000:01:00.0");
    fs::create_dir_all(d.join("nvme/nvme0/nvme0c0n1")).unwrap();
    fs::write(d.join("class"), "0x010802\n").unwrap();
    fs::write(d.join("vendor"), "0x1b36\n").unwrap();
    fs::write(d.join("device"), "0x0010\n").unwrap();
    fs::write(d.join("driver_override"), "(null)\n").unwrap();
    let other = dir.join("sys/bus/pci/devices/0000:00:1f.2");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("class"), "0x010601\n").unwrap();
    for drv in ["nvme", "ahci"] {
        fs::create_dir_all(dir.join("sys/bus/pci/drivers").join(drv)).unwrap();
        fs::write(dir.join("sys/bus/pci/drivers").join(drv).join("unbind"), "").unwrap();
    }
    if let Some(drv) = driver {
        symlink(dir.join("sys/bus/pci/drivers").join(drv), d.join("driver")).unwrap();
    }
    fs::create_dir_all(dir.join("sys/kernel/iommu_groups")).unwrap();
    if iommu {
        let g = dir.join("sys/kernel/iommu_groups/4/devices");
        fs::create_dir_all(&g).unwrap();
        symlink(&d, g.join("0000:01:00.0")).unwrap();
        symlink(dir.join("sys/kernel/iommu_groups/4"), d.join("iommu_group")).unwrap();
    }
    fs::create_dir_all(dir.join("proc/sys/vm")).unwrap();
    fs::write(dir.join("proc/mounts"), "/dev/sda1 / ext4 rw 0 0\n").unwrap();
    fs::write(dir.join("proc/swaps"), "Filename Type Size Used Priority\n").unwrap();
    fs::write(
        dir.join("proc/meminfo"),
        "MemTotal: 1000 kB\nHugePages_Total:      64\nHugePages_Free:       60\nHugepagesize:       2048 kB\n",
    )
    .unwrap();
    fs::write(dir.join("sys/bus/pci/drivers_probe"), "").unwrap();
    Fake { dir }
}

pub(crate) fn sys(f: &Fake, is_root: bool) -> Sys {
    Sys {
        root: f.dir.clone(),
        is_root,
        modprobe: Box::new(|m| Err(format!("cannot run modprobe {m}: not found"))),
    }
}

/// Parses with an empty environment.
pub(crate) fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    parse_args(args, &|_| None)
}

#[test]
fn arguments() {
    assert_eq!(parse(["status"]).unwrap(), Command::Status { json: false });
    assert_eq!(
        parse(["status", "--json"]).unwrap(),
        Command::Status { json: true }
    );
    assert_eq!(
        parse(["bind", "01:00.0"]).unwrap(),
        Command::Bind(vec!["0000:01:00.0".into()])
    );
    assert_eq!(parse(["unbind"]).unwrap(), Command::Unbind(vec![]));
    assert_eq!(
        parse(["hugepages", "512"]).unwrap(),
        Command::Hugepages(512)
    );
    // No verb is setup.sh's default, config; a variable alone is config too.
    let default = parse(Vec::<String>::new()).unwrap();
    let Command::Config(s) = &default else {
        panic!("{default:?}")
    };
    assert_eq!(s.huge.hugemem_mib, vars::HUGEMEM_DEFAULT_MIB);
    let Command::Config(s) = parse(["HUGEMEM=64", "TARGET_USER=alice"]).unwrap() else {
        panic!("not config")
    };
    assert_eq!(
        (s.huge.hugemem_mib, s.target_user.as_deref()),
        (64, Some("alice"))
    );
    // The environment is read, and an argument wins over it.
    let env = |k: &str| (k == "PCI_BLOCKED").then(|| "0000:02:00.0".to_string());
    let Command::Reset(s) = parse_args(["reset"], &env).unwrap() else {
        panic!("not reset")
    };
    assert_eq!(s.blocked, ["0000:02:00.0"]);
    let Command::Cleanup(s) = parse_args(["cleanup", "PCI_BLOCKED="], &env).unwrap() else {
        panic!("not cleanup")
    };
    assert!(s.blocked.is_empty());
    for (args, want) in [
        (
            &["config", "FOO=1"][..],
            "unknown variable FOO; setup.sh's variables are PCI_ALLOWED",
        ),
        (
            &["status", "HUGEMEM=1"][..],
            "HUGEMEM=1: variables go with config, reset or cleanup, not status",
        ),
        (
            &["config", "01:00.0"][..],
            "(to pick controllers: PCI_ALLOWED=\"01:00.0\")",
        ),
        (&["status", "--jsn"][..], "status takes only --json"),
    ] {
        let e = parse(args.to_vec()).unwrap_err().0;
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(parse(["bind", "x"])
        .unwrap_err()
        .0
        .contains("bind x: not a PCI address"));
    assert!(parse(["hugepages"])
        .unwrap_err()
        .0
        .contains("needs one count"));
    assert!(parse(["hugepages", "-3"])
        .unwrap_err()
        .0
        .contains("hugepages -3"));
    assert!(parse(["frob"])
        .unwrap_err()
        .0
        .contains("unknown command 'frob'"));
    assert!(parse(["status", "x"])
        .unwrap_err()
        .0
        .contains("status takes only --json"));
}

#[test]
fn help_entries_line_up() {
    // Every entry starts two spaces in, the first one too (a backslash continuation
    // once ate its indent), and no line is wider than 88 columns.
    let help = MANUAL.help();
    let help = help.as_str();
    assert!(
        help.starts_with("  config            (the default)"),
        "{help}"
    );
    for l in help.lines() {
        assert!(l.len() <= 88, "{l:?}");
    }
    assert!(USAGE
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("       nvme-setup bind"));
}

#[test]
fn status_lists_controllers_groups_and_huge_pages() {
    let f = fake("status", Some("nvme"), true);
    let s = sys(&f, false);
    let c = s.controllers();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].driver.as_deref(), Some("nvme"));
    assert_eq!(c[0].group, Some(4));
    assert_eq!(c[0].block_devices, vec!["nvme0n1"]);
    let out = s.status();
    assert!(out.contains("IOMMU: enabled (1 groups)"), "{out}");
    // No lockdown file (no lockdown LSM): no line.
    assert!(!out.contains("lockdown"), "{out}");
    assert!(out.contains("Huge pages (2048 kB): 60 free of 64"), "{out}");
    assert!(
        out.contains("0000:01:00.0   1b36:0010   nvme       4      yes"),
        "{out}"
    );
    let j = s.status_json();
    assert_eq!(j["iommu_groups"], 1, "{j:#}");
    assert_eq!(j["hugepages"]["size_kb"], 2048, "{j:#}");
    assert_eq!(j["hugepages"]["free"], 60, "{j:#}");
    let c = &j["controllers"][0];
    assert_eq!(
        (&c["bdf"], &c["vendor"], &c["device"], &c["driver"]),
        (
            &"0000:01:00.0".into(),
            &"1b36".into(),
            &"0010".into(),
            &"nvme".into()
        ),
        "{j:#}"
    );
    assert_eq!(c["iommu_group"], 4, "{j:#}");
    assert_eq!(c["vfio_viable"], true, "{j:#}");
    assert_eq!(c["block_devices"][0], "nvme0n1", "{j:#}");
    // No /dev/vfio/4 in the fake tree: no owner to show.
    assert!(c["group_device_owner_uid"].is_null(), "{j:#}");
    // A group shared with a device on another driver is not viable.
    let g = f.dir.join("sys/kernel/iommu_groups/4/devices");
    symlink(
        f.dir.join("sys/bus/pci/devices/0000:00:1f.2"),
        g.join("0000:00:1f.2"),
    )
    .unwrap();
    symlink(
        f.dir.join("sys/bus/pci/drivers/ahci"),
        f.dir.join("sys/bus/pci/devices/0000:00:1f.2/driver"),
    )
    .unwrap();
    assert!(s
        .status()
        .contains("no: 0000:00:1f.2 in group 4 is bound to ahci"));
}

#[test]
fn refusals() {
    let f = fake("refuse", Some("nvme"), true);
    let e = sys(&f, false).bind(&[]).unwrap_err();
    assert!(e.contains("must run as root"), "{e}");
    assert!(sys(&f, false)
        .unbind(&[])
        .unwrap_err()
        .contains("must run as root"));
    assert!(sys(&f, false)
        .set_hugepages(8)
        .unwrap_err()
        .contains("must run as root"));
    // A mounted partition of the controller's namespace.
    fs::write(
        f.dir.join("proc/mounts"),
        "/dev/nvme0n1p2 /data xfs rw 0 0\n",
    )
    .unwrap();
    let e = sys(&f, true).bind(&[]).unwrap_err();
    assert!(
        e.contains("0000:01:00.0: refusing to bind: /dev/nvme0n1p2 is mounted on /data"),
        "{e}"
    );
    // nvme0n10 is another namespace: not a partition of nvme0n1.
    fs::write(f.dir.join("proc/mounts"), "/dev/nvme0n10 /x ext4 rw 0 0\n").unwrap();
    assert!(sys(&f, true)
        .users(&sys(&f, true).controllers()[0])
        .is_empty());
    // Swap and holders count as use too.
    fs::write(
        f.dir.join("proc/swaps"),
        "Filename\n/dev/nvme0n1 partition 1 0 -2\n",
    )
    .unwrap();
    assert!(sys(&f, true)
        .bind(&[])
        .unwrap_err()
        .contains("in use as swap"));
    // Unknown or non-NVMe devices.
    let e = sys(&f, true).bind(&["0000:09:00.0".into()]).unwrap_err();
    assert!(e.contains("0000:09:00.0: no such PCI device"), "{e}");
    let e = sys(&f, true).bind(&["0000:00:1f.2".into()]).unwrap_err();
    assert!(e.contains("is not an NVMe controller"), "{e}");
    // No IOMMU at all.
    let f = fake("noiommu", Some("nvme"), false);
    let e = sys(&f, true).bind(&[]).unwrap_err();
    assert!(e.starts_with("no IOMMU"), "{e}");
    assert!(sys(&f, true).status().contains("IOMMU: none"));
}

#[test]
fn bind_writes_sysfs_in_order_and_checks_the_result() {
    let f = fake("bind", None, true);
    // vfio-pci missing and modprobe failing: a clear error.
    let e = sys(&f, true).bind(&[]).unwrap_err();
    assert!(
        e.contains("vfio-pci driver is not loaded") && e.contains("not found"),
        "{e}"
    );
    // Loaded: driver_override and drivers_probe are written; in a fake tree the
    // kernel does not move the device, which the check notices.
    fs::create_dir_all(f.dir.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    let e = sys(&f, true).bind(&[]).unwrap_err();
    assert!(
        e.contains("bind did not take: the device is on no driver"),
        "{e}"
    );
    let d = f.dir.join("sys/bus/pci/devices/0000:01:00.0");
    assert_eq!(
        fs::read_to_string(d.join("driver_override")).unwrap(),
        "vfio-pci"
    );
    assert_eq!(
        fs::read_to_string(f.dir.join("sys/bus/pci/drivers_probe")).unwrap(),
        "0000:01:00.0"
    );
    // Already on vfio-pci: nothing to do.
    symlink(f.dir.join("sys/bus/pci/drivers/vfio-pci"), d.join("driver")).unwrap();
    let lines = sys(&f, true).bind(&[]).unwrap();
    assert_eq!(lines, vec!["0000:01:00.0: already bound to vfio-pci"]);
}

#[test]
fn hugepages_report_what_the_kernel_gave() {
    let f = fake("huge", None, true);
    let out = sys(&f, true).set_hugepages(16).unwrap();
    assert!(out.contains("16 reserved (2048 kB each"), "{out}");
    assert_eq!(
        fs::read_to_string(f.dir.join("proc/sys/vm/nr_hugepages")).unwrap(),
        "16"
    );
}

#[test]
fn path_devices_map_to_their_namespace_head() {
    assert_eq!(head_name("nvme0c1n1"), "nvme0n1");
    assert_eq!(head_name("nvme0n1"), "nvme0n1");
    assert_eq!(head_name("nvme12c3n45"), "nvme12n45");
}

/// Every command and variable in the tables parses (none is "unknown"), the
/// variables are exactly the ones nvme-setup reads, and each is in the man page
/// (rendered without warnings), the bash completion (loaded by bash) and `--help`.
#[test]
fn every_command_and_variable_is_parsed_and_documented() {
    let mut accepted = Vec::new();
    for c in COMMANDS {
        for name in c.names() {
            let args = match name.as_str() {
                "keep-vfio" => vec![name.clone(), "on".into()],
                "hugepages" => vec![name.clone(), "8".into()],
                _ => vec![name.clone()],
            };
            parse(args).unwrap_or_else(|e| panic!("{name}: {e}"));
            accepted.push(name);
        }
    }
    let mut names: Vec<&str> = VARIABLES.iter().filter_map(|v| v.word).collect();
    for n in &names {
        parse(["config", &format!("{n}=1")])
            .map_err(|e| assert!(!e.0.contains("unknown variable"), "{n}: {e}"))
            .ok();
        accepted.push(n.to_string());
    }
    names.sort();
    let mut read = vars::NAMES.to_vec();
    read.sort();
    assert_eq!(
        names, read,
        "the variables' table and the names nvme-setup reads"
    );
    assert!(parse(["frob"])
        .unwrap_err()
        .0
        .contains("unknown command 'frob'"));
    crate::manual::check::documents(&MANUAL, &accepted);
    let offered = crate::manual::check::bash_offers(&MANUAL, &["keep-vfio", ""]);
    assert_eq!(offered, ["on", "off"]);
    let offered = crate::manual::check::bash_offers(&MANUAL, &["config", "HUGEM"]);
    assert_eq!(offered, ["HUGEMEM="]);
}

#[test]
fn status_names_the_kernel_lockdown_mode() {
    let f = fake("lockdown", Some("nvme"), true);
    let s = sys(&f, false);
    let file = f.dir.join("sys/kernel/security/lockdown");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "[none] integrity confidentiality\n").unwrap();
    assert_eq!(s.lockdown().as_deref(), Some("none"));
    assert!(
        s.status().contains("Kernel lockdown: none\n"),
        "{}",
        s.status()
    );
    fs::write(&file, "none [integrity] confidentiality\n").unwrap();
    let out = s.status();
    assert!(
        out.contains("Kernel lockdown: integrity: VFIO with an IOMMU works under it"),
        "{out}"
    );
    assert_eq!(s.status_json()["lockdown"], "integrity");
}
