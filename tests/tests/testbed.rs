// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The test bed itself: every topology boots, commands' status and output come
//! back, the controllers sit bound to vfio-pci in their own IOMMU groups, the kernel
//! driver baseline reads and writes `/dev/nvme0n1`, data survives between runs,
//! a guest can have a controller hot-unplugged, and a hung guest is killed. Tests that
//! read parts of one script's output share its boot ([`SharedRun`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use e2e::{device_del_cmd, Backing, Bind, Guest, GuestOutput, SharedRun, Topology};

/// Lists, per NVMe controller (class 0x010802): BDF, driver, IOMMU group.
const LIST_CONTROLLERS: &str = r#"
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/class)" = 0x010802 ] || continue
    drv=$(readlink $d/driver); grp=$(readlink $d/iommu_group)
    echo "ctrl ${d##*/} ${drv##*/} ${grp##*/}"
done"#;

struct Ctrl {
    bdf: String,
    driver: String,
    group: String,
}

fn controllers(stdout: &str) -> Vec<Ctrl> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("ctrl ")?.split_whitespace();
            Some(Ctrl {
                bdf: w.next()?.to_string(),
                driver: w.next().unwrap_or("").to_string(),
                group: w.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

fn numeric_lines(stdout: &str) -> BTreeSet<u32> {
    stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Checks what a boot of `topology` listed (`listing`: the controllers, then `vfio:`
/// and `/dev/vfio`'s entries): every controller on vfio-pci, each in its own IOMMU
/// group, one `/dev/vfio` node per group.
fn bound_to_vfio(topology: Topology, listing: &str, out: &GuestOutput) {
    assert!(listing.contains("hello from the guest"), "{out}");
    let ctrls = controllers(listing);
    assert_eq!(ctrls.len(), topology.controllers(), "{out}");
    for c in &ctrls {
        assert_eq!(c.driver, "vfio-pci", "{} not on vfio-pci:\n{out}", c.bdf);
    }
    let groups: BTreeSet<&str> = ctrls.iter().map(|c| c.group.as_str()).collect();
    assert_eq!(
        groups.len(),
        ctrls.len(),
        "controllers share an IOMMU group:\n{out}"
    );
    let vfio = listing.split("vfio:").nth(1).unwrap_or("");
    let nodes = numeric_lines(vfio);
    assert_eq!(
        nodes.len(),
        topology.controllers(),
        "/dev/vfio groups:\n{out}"
    );
    for c in &ctrls {
        assert!(
            nodes.contains(&c.group.parse().unwrap_or(u32::MAX)),
            "{out}"
        );
    }
    let boot = out
        .boot_seconds()
        .expect("the runner reports the boot time");
    eprintln!("{}: boot to first command {boot:.1} s", topology.name());
}

/// The script that lists the controllers and `/dev/vfio`.
fn listing_script() -> String {
    format!("echo hello from the guest; {LIST_CONTROLLERS}; echo vfio:; ls -1 /dev/vfio")
}

/// One boot of `single` for two tests: the listing, then a line on stdout with an
/// environment variable, a line on stderr, and exit status 7.
static SINGLE: SharedRun = SharedRun::new();

fn single() -> &'static GuestOutput {
    SINGLE.get(|| {
        Guest::new(Topology::Single)
            .env("GREETING", "two words")
            .run(&format!(
                "{}; echo \"out $GREETING\"; echo err-line >&2; exit 7",
                listing_script()
            ))
    })
}

/// One boot of `mpath` for two tests: the listing, then c1 (0000:02:00.0) unplugged
/// over QMP, waited for (at most 30 s), and the controllers listed again.
static MPATH: SharedRun = SharedRun::new();

fn mpath() -> &'static GuestOutput {
    MPATH.get(|| {
        Guest::new(Topology::Mpath).run(&format!(
            "{}; echo unplug:; {}; for i in $(seq 60); do \
             [ -e /sys/bus/pci/devices/0000:02:00.0 ] || break; sleep 0.5; done; \
             echo after:; {LIST_CONTROLLERS}",
            listing_script(),
            device_del_cmd("c1")
        ))
    })
}

#[test]
fn single_boots_with_its_controller_on_vfio() {
    let out = single();
    assert_eq!(out.status, 7, "the script ends with exit 7:\n{out}");
    bound_to_vfio(Topology::Single, &out.stdout, out);
}

#[test]
fn multi_boots_with_two_controllers_on_vfio() {
    let out = Guest::new(Topology::Multi).run(&listing_script());
    out.assert_success();
    bound_to_vfio(Topology::Multi, &out.stdout, &out);
}

#[test]
fn mpath_boots_with_two_vfio_groups() {
    let out = mpath();
    out.assert_success();
    let (listing, _) = out.stdout.split_once("unplug:").expect("marker");
    bound_to_vfio(Topology::Mpath, listing, out);
}

#[test]
fn exit_status_and_stderr_come_back() {
    let out = single();
    assert_eq!(out.status, 7, "{out}");
    assert!(out.stdout.contains("out two words"), "{out}");
    assert!(
        !out.stdout.contains("err-line"),
        "stderr leaked into stdout:\n{out}"
    );
    assert!(out.stderr.contains("err-line"), "{out}");
}

/// Where the kernel-driver boots keep their disks (one folder per test process).
fn kept_disks() -> PathBuf {
    std::env::temp_dir().join(format!("e2e-keep-disks-{}", std::process::id()))
}

/// One boot of `single` on the kernel's nvme driver, with its disks kept in
/// [`kept_disks`] for a second boot: 1 MiB of random data written through
/// `/dev/nvme0n1` and read back after dropping the page cache, then a marker written
/// at LBA 0.
static KERNEL: SharedRun = SharedRun::new();

fn kernel() -> &'static GuestOutput {
    KERNEL.get(|| {
        let _ = std::fs::remove_dir_all(kept_disks());
        Guest::new(Topology::Single)
            .bind(Bind::Nvme)
            .keep_disks(kept_disks())
            .run(
                "set -e
                 dd if=/dev/urandom of=/tmp/pattern bs=4096 count=256 2>/dev/null
                 dd if=/tmp/pattern of=/dev/nvme0n1 bs=4096 conv=fsync 2>/dev/null
                 echo 3 > /proc/sys/vm/drop_caches
                 dd if=/dev/nvme0n1 of=/tmp/back bs=4096 count=256 2>/dev/null
                 md5sum /tmp/pattern /tmp/back
                 cmp /tmp/pattern /tmp/back
                 echo identical
                 echo marker-4711 | dd of=/dev/nvme0n1 conv=fsync 2>/dev/null",
            )
    })
}

#[test]
fn kernel_driver_baseline_reads_back_what_it_wrote() {
    let out = kernel();
    out.assert_success();
    assert!(out.stdout.contains("identical"), "{out}");
    let sums: BTreeSet<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("/tmp/"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sums.len(), 1, "{out}");
}

#[test]
fn kept_disks_carry_data_between_runs() {
    kernel().assert_success();
    let out = Guest::new(Topology::Single)
        .bind(Bind::Nvme)
        .keep_disks(kept_disks())
        .run("dd if=/dev/nvme0n1 bs=512 count=1 2>/dev/null | head -n 1");
    let _ = std::fs::remove_dir_all(kept_disks());
    out.assert_success();
    assert!(out.stdout.contains("marker-4711"), "{out}");
}

#[test]
fn guest_can_hot_unplug_a_controller_over_qmp() {
    let out = mpath();
    out.assert_success();
    let (before, after) = out.stdout.split_once("after:").expect("marker");
    assert_eq!(controllers(before).len(), 2, "{out}");
    let left = controllers(after);
    assert_eq!(left.len(), 1, "c1 still there:\n{out}");
    assert_eq!(left[0].bdf, "0000:01:00.0", "{out}");
    assert!(out.stderr.contains("device_del"), "{out}");
}

#[test]
fn hung_guest_is_killed_at_the_deadline() {
    let out = Guest::new(Topology::Single)
        .backing(Backing::Null)
        .timeout(Duration::from_secs(30))
        .run("echo about to hang; sleep 1000");
    assert_eq!(out.status, 124, "{out}");
    assert!(out.stdout.contains("about to hang"), "{out}");
    assert!(out.stderr.contains("did not finish within 30 s"), "{out}");
    // No bound on the wall time here: status 124 and the runner's message say the
    // deadline killed the guest, and the wall time is mostly the wait for other
    // guests' lock (not part of the deadline). Speed is measured in benchmarks, not
    // asserted in tests.
}

#[test]
fn unknown_topology_is_refused_clearly() {
    let out = Guest::with_topology_name("triple").run("true");
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("unknown topology 'triple'"), "{out}");
    assert!(out.stderr.contains("single, multi, mpath"), "{out}");
}

#[test]
fn missing_include_is_refused_clearly() {
    let out = Guest::new(Topology::Single)
        .include("/nonexistent/nvme-nothing")
        .run("true");
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("/nonexistent/nvme-nothing"), "{out}");
}
