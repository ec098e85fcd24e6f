// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme-target` (issue 27) serving the multipath bdev over QEMU's two controllers
//! (`mpath` topology, c0 and c1 on vfio-pci) on 127.0.0.1:4420, with clients nobody
//! here wrote: Linux's own NVMe/TCP host (`nvme-tcp.ko`, connected by writing an
//! options string to `/dev/nvme-fabrics`) gets `/dev/nvme0n1`; fio writes through it
//! with io_uring and reads everything back verified (crc32c); busybox's `mke2fs`, a
//! mount (the kernel cache's ext4 module), files, an unmount, caches dropped, a
//! remount and their checksums; the host disconnects; SIGTERM makes the target drain
//! and exit 0. All cases share one boot.

use e2e::{cases, ok, repo_root, Guest, GuestOutput, SharedRun, Topology, RUN_CASE};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The subsystem `nvmf/examples/mpath-tcp.json` serves.
const NQN: &str = "nqn.2026-12.io.nvme-target:mpath";

static BOOT: SharedRun = SharedRun::new();

/// The kernel modules that mount ext2 (busybox has mke2fs; the guest kernel has no
/// disk filesystem built in), from the runner's kernel cache, if it is there (as
/// `tests/tools.rs` finds them).
fn ext2_modules() -> Option<Vec<PathBuf>> {
    let cache = std::env::var_os("NVME_QEMU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("qemu-cache"));
    let versions = std::fs::read_dir(cache.join("kernel/lib/modules")).ok()?;
    for v in versions.flatten() {
        let k = v.path().join("kernel");
        let mods: Vec<PathBuf> = [
            "crypto/crc32c_generic.ko",
            "lib/crc16.ko",
            "fs/mbcache.ko",
            "fs/jbd2/jbd2.ko",
            "fs/ext4/ext4.ko",
        ]
        .iter()
        .map(|m| k.join(m))
        .collect();
        if mods.iter().all(|m| m.is_file()) {
            return Some(mods);
        }
    }
    None
}

fn boot() -> &'static GuestOutput {
    BOOT.get(|| {
        let config = repo_root().join("nvmf/examples/mpath-tcp.json");
        let mut guest = Guest::new(Topology::Mpath)
            .include("fio")
            .include(&config)
            .timeout(Duration::from_secs(900));
        let mut fs = String::from("run_case fs sh -c 'echo SKIP: no ext4 modules in the kernel cache; exit 3'");
        if let Some(mods) = ext2_modules() {
            let mut insmod = String::new();
            for m in &mods {
                guest = guest.include(m);
                let name = m.file_name().unwrap().to_string_lossy().into_owned();
                let module = name.trim_end_matches(".ko").replace('-', "_");
                insmod.push_str(&format!(
                    "[ -d /sys/module/{module} ] || insmod /usr/local/bin/{name}; "
                ));
            }
            fs = format!(
                r#"run_case fs sh -c '{insmod}
mke2fs -q /dev/nvme0n1 || exit 1
mkdir -p /mnt/t && mount -t ext2 /dev/nvme0n1 /mnt/t || exit 1
for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/t/f$i bs=64k count=$((i * 8)) 2>/dev/null || exit 1; done
md5sum /mnt/t/f* > /tmp/sums
umount /mnt/t && echo 3 > /proc/sys/vm/drop_caches
mount -t ext2 /dev/nvme0n1 /mnt/t || exit 1
md5sum -c /tmp/sums || exit 1
umount /mnt/t'"#
            );
        }
        let script = format!(
            r#"{RUN_CASE}
nvme-qemu-modload nvmet || echo "could not load nvme-tcp"
nvme-target -c /usr/local/bin/mpath-tcp.json >/tmp/tgt.out 2>/tmp/tgt.err &
pid=$!
i=0; while ! grep -q 'serving on' /tmp/tgt.out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
run_case connect sh -c '
echo "transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn={NQN}" > /dev/nvme-fabrics || exit 1
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || exit 1
echo subsysnqn=$(cat /sys/class/nvme/nvme0/subsysnqn)
echo transport=$(cat /sys/class/nvme/nvme0/transport)
echo state=$(cat /sys/class/nvme/nvme0/state)
echo size=$(cat /sys/block/nvme0n1/size)'
run_case fio fio --name=verify --filename=/dev/nvme0n1 --ioengine=io_uring --direct=1 \
    --rw=randwrite --bsrange=4k-128k --iodepth=16 --size=16M --verify=crc32c \
    --do_verify=1 --verify_fatal=1 --output-format=json
{fs}
run_case disconnect sh -c '
echo 1 > /sys/class/nvme/nvme0/delete_controller || exit 1
i=0; while [ -e /sys/class/nvme/nvme0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ ! -e /sys/class/nvme/nvme0 ]'
kill -TERM $pid
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
wait $pid
rc=$?
run_case stop sh -c "echo exit=$rc; cat /tmp/tgt.out; cat /tmp/tgt.err >&2""#
        );
        guest.run(&script)
    })
}

#[test]
fn linux_host_connects_over_tcp() {
    let out = boot();
    let all = cases(out);
    let c = ok(&all, "connect", out);
    for want in [
        format!("subsysnqn={NQN}"),
        "transport=tcp".into(),
        "state=live".into(),
        // 256 MiB of 512-byte sectors: the multipath bdev's size.
        "size=524288".into(),
    ] {
        assert!(c.out.contains(&want), "{want} missing: {c:#?}\n{out}");
    }
}

#[test]
fn fio_io_uring_writes_read_back_verified() {
    let out = boot();
    let all = cases(out);
    let c = ok(&all, "fio", out);
    let start = c.out.find('{').unwrap_or_else(|| panic!("no JSON: {c:#?}"));
    let v: Value = serde_json::from_str(&c.out[start..])
        .unwrap_or_else(|e| panic!("fio's JSON ({e}): {c:#?}"));
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "fio error: {c:#?}");
    // Everything written (16 MiB) was read back and checked by fio's verify pass.
    assert_eq!(job["write"]["io_bytes"], 16 << 20, "{c:#?}");
    assert_eq!(job["read"]["io_bytes"], 16 << 20, "{c:#?}");
}

#[test]
fn ext2_files_keep_their_checksums_across_a_remount() {
    let out = boot();
    let all = cases(out);
    let c = e2e::case(&all, "fs", out);
    if c.rc == 3 && c.out.contains("SKIP") {
        e2e::skip(
            "ext2_files_keep_their_checksums_across_a_remount",
            "mkfs, mount and checksums over nvme-target",
            "no uncompressed ext4 modules (and their dependencies) in the QEMU kernel cache",
        );
        return;
    }
    let c = ok(&all, "fs", out);
    assert_eq!(c.out.matches(": OK").count(), 4, "{c:#?}");
}

#[test]
fn disconnect_then_sigterm_drains_and_exits_0() {
    let out = boot();
    let all = cases(out);
    ok(&all, "disconnect", out);
    let c = ok(&all, "stop", out);
    assert!(c.out.contains("exit=0"), "{c:#?}\n{out}");
    for want in [
        "stopping: no new connections",
        "drained: every connection closed (0 undrained)",
        "block layer shut down",
        "connected queue 0 of controller",
        "connected queue 1 of controller",
    ] {
        assert!(c.out.contains(want), "{want:?} missing: {c:#?}");
    }
    assert!(
        !c.err.contains("protocol error") && !c.out.contains("protocol error"),
        "a PDU was refused: {c:#?}"
    );
    // The host closed every queue (the disconnect), none was ended by the target.
    for line in c.out.lines().filter(|l| l.contains(" closed: ")) {
        assert!(
            line.contains("the host closed the connection"),
            "{line}\n{c:#?}"
        );
    }
}
