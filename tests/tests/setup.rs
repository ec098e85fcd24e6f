// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-setup speaking SPDK's setup.sh, and the tools run by a user who is not root,
//! in one boot of the `multi` topology (two controllers, 0000:01:00.0 and
//! 0000:02:00.0) started on the kernel's nvme driver:
//!
//! - `config` with `PCI_BLOCKED` and `HUGEMEM` binds one controller and leaves the
//!   other on nvme, reserving the huge pages; `config TARGET_USER=alice
//!   PCI_ALLOWED=...` gives alice that controller's `/dev/vfio/N`, the hugetlbfs mount
//!   and a memlock limit file; `status --json` shows each step; `reset` gives the
//!   controller back to nvme; `cleanup` frees the huge pages.
//! - alice (a user the script adds: the guest's busybox has `su` but no `useradd`)
//!   runs nvme-perf first with the group device still root's and then with a small
//!   locked-memory limit: both refused, naming the missing permission and the
//!   `nvme-setup config TARGET_USER=alice` command. After config, with the limit the
//!   file gives (set with `ulimit -l` before `su`, as pam_limits would at login: the
//!   guest has no PAM), nvme-perf `--verify` (direct and through the block layer,
//!   `--multipath`, which is how an embedding program drives it), nvme-identify and
//!   fio with the `spdk` engine run as alice and read their data back.

use std::sync::OnceLock;
use std::time::Duration;

use e2e::{case, cases, ok, release_dir, Bind, Case, Guest, GuestOutput, Topology, RUN_CASE};
use serde_json::Value;

const A: &str = "0000:01:00.0";
const B: &str = "0000:02:00.0";
const ALICE_UID: u64 = 1000;

/// The one boot every test here reads.
fn boot() -> &'static GuestOutput {
    static BOOT: OnceLock<GuestOutput> = OnceLock::new();
    BOOT.get_or_init(|| {
        let so = release_dir().join("libnvme_fio.so");
        assert!(
            so.is_file(),
            "{} is missing: build it with cargo build --release -p nvme-fio (tests/run does)",
            so.display()
        );
        let script = format!(
            r#"{RUN_CASE}
nvme-qemu-modload vfio
echo 'alice:x:{ALICE_UID}:{ALICE_UID}:alice:/tmp:/bin/sh' >> /etc/passwd
echo 'alice:x:{ALICE_UID}:' >> /etc/group
# as_alice CMD ARGS...: runs CMD as alice, with the caller's locked-memory limit
# (busybox su takes options anywhere: `--` ends them).
as_alice() {{ su -s /bin/sh -c 'cd /tmp && exec "$0" "$@"' -- alice "$@"; }}
perf_a="-q 8 -o 4096 -t 1 --verify --seed 5 -b {A}"
run_case help nvme-setup --help
run_case status_boot nvme-setup status --json
run_case config_user_not_root as_alice nvme-setup config
run_case config_blocked env PCI_BLOCKED={B} nvme-setup config HUGEMEM=160
run_case status_blocked nvme-setup status --json
run_case denied_group as_alice nvme-perf -w write $perf_a
run_case config_user nvme-setup config TARGET_USER=alice PCI_ALLOWED={A} HUGEMEM=160
run_case status_user nvme-setup status --json
run_case limits cat /etc/security/limits.d/nvme-setup-alice.conf
(ulimit -l 1024; run_case denied_memlock as_alice nvme-perf -w write $perf_a)
limit=$(awk '/ hard memlock / {{ print $4 }}' /etc/security/limits.d/nvme-setup-alice.conf)
ulimit -l "$limit"
run_case user_limit as_alice sh -c 'id -u; ulimit -l'
run_case user_write as_alice nvme-perf -w write $perf_a
run_case user_read as_alice nvme-perf -w randread $perf_a
run_case user_mpath as_alice nvme-perf -w randrw -M 50 --multipath $perf_a
run_case user_identify as_alice nvme-identify -r "trtype:PCIe traddr:{A}"
run_case user_fio as_alice env LD_PRELOAD=/usr/local/lib/libnvme_fio.so fio --name=t \
    --ioengine=spdk --thread=1 '--filename=trtype=PCIe traddr=0000.01.00.0 ns=1' \
    --rw=randwrite --bs=4k --iodepth=8 --size=8m --verify=crc32c --do_verify=1 \
    --output-format=json
run_case reset env PCI_BLOCKED={B} nvme-setup reset
run_case status_reset nvme-setup status --json
run_case cleanup nvme-setup cleanup
run_case hugepages_after cat /proc/sys/vm/nr_hugepages
"#
        );
        let out = Guest::new(Topology::Multi)
            .bind(Bind::Nvme)
            .include("fio")
            .include(so)
            .timeout(Duration::from_secs(300))
            .run(&script);
        out.assert_success();
        out
    })
}

fn json(c: &Case) -> Value {
    serde_json::from_str(&c.out).unwrap_or_else(|e| panic!("not JSON ({e}): {c:#?}"))
}

/// The `status --json` entry of controller `bdf`.
fn ctrl<'a>(status: &'a Value, bdf: &str) -> &'a Value {
    status["controllers"]
        .as_array()
        .expect("controllers")
        .iter()
        .find(|c| c["bdf"] == bdf)
        .unwrap_or_else(|| panic!("{bdf} not in {status:#}"))
}

#[test]
fn setup_sh_verbs_and_variables_in_the_guest() {
    let out = boot();
    let cs = cases(out);

    // The help's entries line up, the first one included.
    let help = ok(&cs, "help", out);
    assert!(
        help.out
            .contains("\n\n  config            (the default) bind every NVMe controller"),
        "{help:#?}"
    );

    // Booted on nvme: both controllers there, with their block devices.
    let s = json(ok(&cs, "status_boot", out));
    for bdf in [A, B] {
        let c = ctrl(&s, bdf);
        assert_eq!(c["driver"], "nvme", "{s:#}");
        assert_eq!(c["vendor"], "1b36", "{s:#}");
        assert!(!c["block_devices"].as_array().unwrap().is_empty(), "{s:#}");
        assert_eq!(c["vfio_viable"], true, "{s:#}");
    }
    assert!(s["iommu_groups"].as_u64().unwrap() > 0, "{s:#}");

    // Only root configures.
    let c = case(&cs, "config_user_not_root", out);
    assert_eq!(c.rc, 1, "{c:#?}");
    assert!(
        c.err.contains("nvme-setup config must run as root"),
        "{c:#?}"
    );

    // PCI_BLOCKED leaves B alone; HUGEMEM=160 is 80 pages of 2 MiB on node 0.
    let c = ok(&cs, "config_blocked", out);
    assert!(
        c.out
            .contains(&format!("{A} (1b36 0010): nvme -> vfio-pci")),
        "{c:#?}"
    );
    assert!(
        c.out
            .contains(&format!("{B} (1b36 0010): skipping, in PCI_BLOCKED")),
        "{c:#?}"
    );
    assert!(
        c.out
            .contains("huge pages: 80 of 2048 kB reserved on node 0"),
        "{c:#?}"
    );
    let s = json(ok(&cs, "status_blocked", out));
    assert_eq!(ctrl(&s, A)["driver"], "vfio-pci", "{s:#}");
    assert_eq!(ctrl(&s, B)["driver"], "nvme", "{s:#}");
    assert_eq!(ctrl(&s, A)["group_device_owner_uid"], 0, "{s:#}");
    assert_eq!(s["hugepages"]["total"], 80, "{s:#}");
    assert_eq!(s["hugepages"]["nodes"][0]["total"], 80, "{s:#}");

    // TARGET_USER with PCI_ALLOWED: alice gets A's group device, the mount, a limit.
    let c = ok(&cs, "config_user", out);
    assert!(
        c.out
            .contains(&format!("{B} (1b36 0010): skipping, not in PCI_ALLOWED")),
        "{c:#?}"
    );
    assert!(
        c.out
            .contains(&format!("{A} (1b36 0010): already on vfio-pci")),
        "{c:#?}"
    );
    let group = ctrl(&s, A)["iommu_group"].as_u64().expect("group");
    assert!(
        c.out.contains(&format!(
            "{A}: /dev/vfio/{group} now belongs to alice (uid {ALICE_UID})"
        )),
        "{c:#?}"
    );
    assert!(
        c.out
            .contains("hugetlbfs /dev/hugepages now belongs to alice"),
        "{c:#?}"
    );
    assert!(
        c.out
            .contains("huge pages: 80 of 2048 kB already reserved on node 0, 80 asked for"),
        "{c:#?}"
    );
    assert!(c.out.contains("memlock: alice may lock 160 MiB"), "{c:#?}");
    let s = json(ok(&cs, "status_user", out));
    assert_eq!(ctrl(&s, A)["group_device_owner_uid"], ALICE_UID, "{s:#}");
    assert_eq!(ctrl(&s, B)["driver"], "nvme", "{s:#}");
    let l = ok(&cs, "limits", out);
    assert!(
        l.out
            .contains("alice soft memlock 163840\nalice hard memlock 163840"),
        "{l:#?}"
    );

    // reset gives A back to nvme (B was never moved); cleanup frees the huge pages.
    let c = ok(&cs, "reset", out);
    assert!(
        c.out
            .contains(&format!("{A} (1b36 0010): vfio-pci -> nvme")),
        "{c:#?}"
    );
    assert!(
        c.out
            .contains(&format!("{B} (1b36 0010): skipping, in PCI_BLOCKED")),
        "{c:#?}"
    );
    let s = json(ok(&cs, "status_reset", out));
    assert_eq!(ctrl(&s, A)["driver"], "nvme", "{s:#}");
    let c = ok(&cs, "cleanup", out);
    assert!(c.out.contains("huge pages: freed"), "{c:#?}");
    assert_eq!(ok(&cs, "hugepages_after", out).out.trim(), "0");
}

#[test]
fn a_user_is_refused_with_the_fix_then_runs_the_tools_after_config() {
    let out = boot();
    let cs = cases(out);
    let fix = format!("`sudo nvme-setup config TARGET_USER=alice PCI_ALLOWED={A}`");

    // Before config: the group device is root's, mode 0600.
    let d = case(&cs, "denied_group", out);
    assert_eq!(d.rc, 1, "{d:#?}");
    assert!(
        d.err.contains("cannot open /dev/vfio/")
            && d.err.contains("Permission denied")
            && d.err.contains(&format!(
                "it belongs to uid 0 with mode 0600, and this process runs as alice (uid {ALICE_UID})"
            ))
            && d.err.contains(&fix),
        "{d:#?}"
    );
    // After config, with a 1 MiB locked-memory limit: VFIO cannot pin the DMA memory.
    let d = case(&cs, "denied_memlock", out);
    assert_eq!(d.rc, 1, "{d:#?}");
    assert!(
        d.err.contains(
            "VFIO pins DMA memory against the locked-memory limit (`ulimit -l`), 1024 KiB"
        ) && d.err.contains(&fix),
        "{d:#?}"
    );

    // With the limit nvme-setup wrote: alice (not root) runs everything.
    let l = ok(&cs, "user_limit", out);
    assert_eq!(
        l.out.lines().collect::<Vec<_>>(),
        [ALICE_UID.to_string().as_str(), "163840"],
        "{l:#?}"
    );
    let w = ok(&cs, "user_write", out);
    assert!(
        w.out.contains("Total "),
        "no table from alice's write run: {w:#?}"
    );
    for name in ["user_read", "user_mpath"] {
        let r = ok(&cs, name, out);
        assert!(
            r.out.contains("verify: every read matched the pattern ("),
            "{name}: {r:#?}"
        );
    }
    let id = ok(&cs, "user_identify", out);
    assert!(
        id.out.contains(&format!("NVMe Controller at {A}")),
        "{id:#?}"
    );
    let f = ok(&cs, "user_fio", out);
    let start = f.out.find('{').unwrap_or_else(|| panic!("no JSON: {f:#?}"));
    let v: Value =
        serde_json::from_str(&f.out[start..]).unwrap_or_else(|e| panic!("fio JSON ({e}): {f:#?}"));
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "{f:#?}");
    assert_eq!(job["write"]["total_ios"], 2048, "{f:#?}");
    assert_eq!(
        job["read"]["total_ios"], 2048,
        "fio verified every block: {f:#?}"
    );
}
