// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The fio engines (`tools/fio`, `libnvme_fio.so`) driven by the real fio against
//! QEMU's NVMe controllers in a guest: data written is read back and verified by fio
//! (crc32c, md5), through both ways fio loads an external engine (LD_PRELOAD and
//! `external:`); SPDK-shaped job files run unchanged; the bdev engine keeps verified
//! I/O going while a path is hot-unplugged and its per-path counts show the failover;
//! several jobs and files keep both controllers busy and the engine's counts add up to
//! fio's; a controller not bound to vfio-pci is refused with the way to bind it.
//! (Refusals that need no device run on the host: `tools/fio/tests/refusals.rs`.)

use e2e::{case, cases, ok, release_dir, repo_root, Bind, Guest, GuestOutput, Topology, RUN_CASE};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const SO: &str = "/usr/local/lib/libnvme_fio.so";
const C0: &str = "trtype=PCIe traddr=0000.01.00.0 ns=1";
const C1: &str = "trtype=PCIe traddr=0000.02.00.0 ns=1";

fn engine() -> PathBuf {
    let so = release_dir().join("libnvme_fio.so");
    assert!(
        so.is_file(),
        "{} is missing: build it with cargo build --release -p nvme-fio (tests/run does)",
        so.display()
    );
    so
}

fn example(name: &str) -> PathBuf {
    repo_root().join("tools/fio/examples").join(name)
}

fn guest(topology: Topology) -> Guest {
    Guest::new(topology)
        .include("fio")
        .include(engine())
        .timeout(Duration::from_secs(240))
}

/// fio's JSON report (the text from the first `{` on: log lines may come first).
fn report(text: &str) -> Value {
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"));
    serde_json::from_str(&text[start..]).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"))
}

/// Per job: (read, write, trim) I/Os and fio's error value.
fn job_ios(v: &Value) -> Vec<(u64, u64, u64, i64)> {
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            let n = |d: &str| j[d]["total_ios"].as_u64().expect("total_ios");
            (
                n("read"),
                n("write"),
                n("trim"),
                j["error"].as_i64().expect("error"),
            )
        })
        .collect()
}

/// The engine's `nvme_stats` lines: (file, I/Os) per file, in order.
fn engine_counts(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter(|l| l.starts_with("spdk") && l.contains(": job "))
        .filter_map(|l| {
            let (head, _) = l.rsplit_once(" I/Os")?;
            let (file, n) = head.rsplit_once(": ")?;
            let file = file.split_once(": job ")?.1.split_once(": ")?.1;
            Some((file.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// The case's fio run finished cleanly: exit 0, no job error, no I/O error message.
fn clean<'a>(
    all: &'a std::collections::BTreeMap<String, e2e::Case>,
    name: &str,
    out: &GuestOutput,
) -> &'a e2e::Case {
    let c = ok(all, name, out);
    assert!(
        !c.err.contains("I/O failed") && !c.err.contains("verify"),
        "{name}: errors reported:\n{}",
        c.err
    );
    c
}

#[test]
fn nvme_engine_verifies_data_through_both_loading_methods() {
    let job_file = example("nvme.fio");
    let script = format!(
        r#"{RUN_CASE}
F='{C0}'
run_case preload env LD_PRELOAD={SO} fio --name=pre --ioengine=spdk --thread=1 --filename="$F" \
    --rw=randwrite --bs=4k --iodepth=16 --size=8m --verify=crc32c --do_verify=1 \
    --nvme_stats=1 --output-format=json
run_case external fio --name=ext --ioengine=external:{SO} --thread=1 --filename="$F" \
    --rw=randwrite --bsrange=4k-64k --iodepth=8 --offset=8m --size=8m --verify=md5 \
    --do_verify=1 --nvme_stats=1 --output-format=json
run_case example env LD_PRELOAD={SO} fio --ioengine=spdk --nvme_stats=1 --output-format=json /usr/local/bin/nvme.fio
run_case mixed env LD_PRELOAD={SO} fio --name=mix --ioengine=spdk --thread=1 --filename="$F" \
    --rw=randrw --rwmixread=70 --bssplit=4k/50:16k/30:64k/20 --iodepth=32 \
    --iodepth_batch_submit=8 --iodepth_batch_complete_min=4 --fsync=16 --time_based --runtime=2 \
    --numjobs=2 --group_reporting --norandommap --nvme_stats=1 --output-format=json
run_case trim env LD_PRELOAD={SO} fio --name=trim --ioengine=spdk --thread=1 --filename="$F" \
    --rw=randtrim --bs=64k --size=4m --nvme_stats=1 --output-format=json
run_case qid env LD_PRELOAD={SO} fio --name=q --ioengine=spdk --thread=1 --filename="$F" \
    --rw=read --size=64k --print_qid_mappings=1
"#
    );
    let out = guest(Topology::Single).include(&job_file).run(&script);
    out.assert_success();
    let all = cases(&out);

    // Written, then read back and verified by fio: every I/O went through the engine.
    for (name, writes) in [("preload", 2048), ("external", 0), ("example", 4096)] {
        let c = clean(&all, name, &out);
        let r = report(&c.out);
        let ios = job_ios(&r);
        assert_eq!(ios.len(), 1, "{name}: {ios:?}");
        let (reads, w, _, err) = ios[0];
        assert_eq!(err, 0, "{name}: fio reports an error");
        if writes > 0 {
            assert_eq!(w, writes, "{name}: writes");
        }
        assert_eq!(
            reads, w,
            "{name}: every block written was read back and verified"
        );
        let counted: u64 = engine_counts(&c.err).iter().map(|(_, n)| n).sum();
        assert_eq!(
            counted,
            reads + w,
            "{name}: the engine queued what fio counted:\n{}",
            c.err
        );
    }

    // Mixed reads and writes, block-size split, batches, fsync, two jobs.
    let c = clean(&all, "mixed", &out);
    let ios = job_ios(&report(&c.out));
    let (reads, writes, _, err) = ios[0];
    assert_eq!(err, 0);
    assert!(reads > writes && writes > 0, "rwmixread=70: {ios:?}");
    let counts = engine_counts(&c.err);
    assert_eq!(counts.len(), 2, "one line per job: {counts:?}");
    // The engine also counts the fsyncs (Flush) fio issued besides reads and writes.
    let counted: u64 = counts.iter().map(|(_, n)| n).sum();
    assert!(counted >= reads + writes, "{counted} < {reads} + {writes}");

    // Trim: Dataset Management deallocate, 64 ranges of 64 KiB.
    let c = clean(&all, "trim", &out);
    let (_, _, trims, err) = job_ios(&report(&c.out))[0];
    assert_eq!((trims, err), (64, 0));

    let c = ok(&all, "qid", &out);
    assert!(
        c.out.contains(&format!("job q: {C0} qid 1")),
        "print_qid_mappings: {c:#?}"
    );
}

#[test]
fn bdev_engine_keeps_verified_io_going_while_a_path_is_unplugged() {
    // SPDK-shaped job and config, unchanged: Nvme0 has two paths (c0, c1), round robin.
    // (Engine options on fio's command line need --ioengine there too.)
    let script = format!(
        r#"{RUN_CASE}
cd /usr/local/bin
# Unplug c1 2 s after fio holds both controllers (their VFIO groups open), so the
# hot-unplug lands in the middle of the I/O, however long start-up takes.
(
    i=0
    while [ $i -lt 600 ]; do
        p=$(pidof fio)
        [ -n "$p" ] && [ "$(ls -l /proc/$p/fd 2>/dev/null | grep -c '/dev/vfio/[0-9]')" -ge 2 ] && break
        i=$((i + 1)); sleep 0.1
    done
    sleep 2; {unplug}
) &
run_case failover env LD_PRELOAD={SO} fio --ioengine=spdk_bdev --nvme_stats=1 --output-format=json bdev.fio
wait
[ -e /sys/bus/pci/devices/0000:02:00.0 ] && echo "c1 still present" || echo "c1 left the PCI bus"
"#,
        unplug = e2e::device_del_cmd("c1")
    );
    let out = guest(Topology::Mpath)
        .include(example("bdev.fio"))
        .include(example("bdev.json"))
        .run(&script);
    out.assert_success();
    assert!(out.stdout.contains("c1 left the PCI bus"), "{out}");
    let all = cases(&out);
    let c = clean(&all, "failover", &out);
    let (reads, writes, _, err) = job_ios(&report(&c.out))[0];
    assert_eq!(err, 0, "fio reports an error");
    assert!(writes > 0 && reads > 0, "verified writes: {reads} {writes}");

    // "spdk_bdev: job test: Nvme0n1: N I/Os; per path: 0000:01:00.0 A, 0000:02:00.0 B;
    // failovers F, retries R"
    let line = c
        .err
        .lines()
        .find(|l| l.contains("per path:"))
        .unwrap_or_else(|| panic!("no per-path counts:\n{}", c.err));
    let per_path = |bdf: &str| -> u64 {
        let at = line
            .find(bdf)
            .unwrap_or_else(|| panic!("{bdf} missing: {line}"));
        line[at + bdf.len()..]
            .split([',', ';'])
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("count of {bdf}: {line}"))
    };
    let (a, b) = (per_path("0000:01:00.0"), per_path("0000:02:00.0"));
    let total: u64 = engine_counts(&c.err).iter().map(|(_, n)| n).sum();
    assert_eq!(
        total,
        reads + writes,
        "the engine queued what fio counted: {line}"
    );
    assert!(b > 0, "round robin used c1 before it left: {line}");
    assert!(a > b, "c0 carried the rest after c1 left: {line}");
    // Each dispatch to a path counts once, failovers again on the path that took them.
    assert!(a + b >= total, "{line}");
    eprintln!("{line}");
}

/// A config SPDK v23.01.1's `rpc.py save_config` wrote (`config/fixtures/spdk-v23.01.1`).
fn saved(name: &str) -> PathBuf {
    repo_root().join("config/fixtures/spdk-v23.01.1").join(name)
}

/// Verified writes through `bdev` with the config `conf` (in /usr/local/bin), as a
/// run_case named `name`.
fn saved_case(name: &str, conf: &str, files: &str) -> String {
    format!(
        "run_case {name} env LD_PRELOAD={SO} fio --name=saved --ioengine=spdk_bdev --thread=1 \
         --spdk_json_conf=/usr/local/bin/{conf} --filename={files} --rw=randwrite --bs=4k \
         --iodepth=16 --size=8m --verify=crc32c --do_verify=1 --nvme_stats=1 --output-format=json\n"
    )
}

/// The per-path counts of an `nvme_stats` line ("...; per path: 0000:01:00.0 A,
/// 0000:02:00.0 B; failovers F, retries R"): (A, B).
fn per_path(err: &str) -> (u64, u64, String) {
    let line = err
        .lines()
        .find(|l| l.contains("per path:"))
        .unwrap_or_else(|| panic!("no per-path counts:\n{err}"));
    let count = |bdf: &str| -> u64 {
        let at = line
            .find(bdf)
            .unwrap_or_else(|| panic!("{bdf} missing: {line}"));
        line[at + bdf.len()..]
            .split([',', ';'])
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("count of {bdf}: {line}"))
    };
    (
        count("0000:01:00.0"),
        count("0000:02:00.0"),
        line.to_string(),
    )
}

#[test]
fn spdk_saved_configs_run_unchanged_and_the_active_path_unplugged_is_released_at_once() {
    // Both mpath fixtures, unchanged, with verified writes; then the first one (as SPDK
    // saved it: active-passive, hot-plug on every 100 ms) under time-based verified
    // writes while c0, the active path, is unplugged: the device is let go within a
    // second of the kernel's request, fio ends with no error, I/O moved to c1.
    let script = format!(
        r#"{RUN_CASE}
{aa}{defaults}
# Unplug c0 3 s after fio holds both controllers; then wait until fio lets go of one
# of them and mark that moment in the kernel log, beside vfio-pci's request to let go.
(
    i=0
    while [ $i -lt 600 ]; do
        p=$(pidof fio)
        [ -n "$p" ] && [ "$(ls -l /proc/$p/fd 2>/dev/null | grep -c '/dev/vfio/[0-9]')" -ge 2 ] && break
        i=$((i + 1)); sleep 0.1
    done
    sleep 3; {unplug}
    i=0
    while [ $i -lt 3000 ]; do
        [ "$(ls -l /proc/$p/fd 2>/dev/null | grep -c '/dev/vfio/[0-9]')" -lt 2 ] && break
        i=$((i + 1)); sleep 0.01
    done
    echo "nvme-test: fio released a controller" > /dev/kmsg
) &
run_case unplug env LD_PRELOAD={SO} fio --name=unplug --ioengine=spdk_bdev --thread=1 \
    --spdk_json_conf=/usr/local/bin/mpath-active-active.json --filename=Nvme0n1 \
    --rw=randwrite --bs=4k --iodepth=16 --verify=crc32c --verify_backlog=256 \
    --time_based --runtime=14 --nvme_stats=1 --output-format=json
wait
dmesg | grep -e 'Relaying device request' -e 'nvme-test:'
[ -e /sys/bus/pci/devices/0000:01:00.0 ] && echo "c0 still present" || echo "c0 left the PCI bus"
"#,
        aa = saved_case("aa", "mpath-active-active.json", "Nvme0n1"),
        defaults = saved_case("defaults", "mpath-defaults.json", "Nvme0n1"),
        unplug = e2e::device_del_cmd("c0")
    );
    let out = guest(Topology::Mpath)
        .include(saved("mpath-active-active.json"))
        .include(saved("mpath-defaults.json"))
        .run(&script);
    out.assert_success();
    let all = cases(&out);
    for name in ["aa", "defaults"] {
        let c = clean(&all, name, &out);
        // size=8m of 4 KiB writes, each read back and checked.
        assert_eq!(
            job_ios(&report(&c.out)),
            [(2048, 2048, 0, 0)],
            "{name}: {c:#?}"
        );
        // The subsystems SPDK writes beside bdev are noted, not refused.
        assert!(
            c.err.contains("subsystem 'sock' ignored"),
            "{name}: {}",
            c.err
        );
        // As SPDK saved it the second controller is a failover path: active-passive,
        // every I/O on the first while both are there.
        let (a, b, line) = per_path(&c.err);
        assert_eq!((a, b), (4096, 0), "{name}: {line}");
    }

    let c = clean(&all, "unplug", &out);
    let (reads, writes, _, err) = job_ios(&report(&c.out))[0];
    assert_eq!(err, 0, "fio reports an error");
    assert!(reads > 0 && writes > 0, "verified writes: {reads} {writes}");
    let (a, b, line) = per_path(&c.err);
    assert!(
        a > 0 && b > 0,
        "c0 carried the I/O until it left, c1 after: {line}"
    );
    assert!(out.stdout.contains("c0 left the PCI bus"), "{out}");
    // "[   21.123456] vfio-pci 0000:01:00.0: Relaying device request to user (#0)" and
    // "[   21.456789] nvme-test: fio released a controller".
    let at = |needle: &str| -> f64 {
        let l = out
            .stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the kernel log:\n{out}"));
        l.trim_start_matches('[')
            .split(']')
            .next()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no time in {l:?}"))
    };
    let asked = at("0000:01:00.0: Relaying device request");
    let released = at("nvme-test: fio released a controller");
    let held_s = released - asked;
    eprintln!(
        "c0: vfio-pci asked at {asked:.3} s, fio let go at {released:.3} s ({held_s:.3} s); {line}"
    );
    assert!(
        held_s < 1.0,
        "fio held c0 for {held_s:.3} s after vfio-pci asked for it (at most 1 s)"
    );
}

#[test]
fn two_jobs_two_files_each_keep_both_controllers_busy() {
    let script = format!(
        r#"{RUN_CASE}
run_case jobs env LD_PRELOAD={SO} fio --name=two --ioengine=spdk --thread=1 \
    --filename='{C0}:{C1}' --rw=randread --bs=4k --iodepth=16 --size=16m --numjobs=2 \
    --group_reporting --nvme_stats=1 --output-format=json
{saved}"#,
        saved = saved_case("saved", "multi-nvmf-tcp.json", "Nvme0n1:Nvme1n1")
    );
    let out = guest(Topology::Multi)
        .include(saved("multi-nvmf-tcp.json"))
        .run(&script);
    out.assert_success();
    let all = cases(&out);
    let c = clean(&all, "jobs", &out);
    let ios = job_ios(&report(&c.out));
    assert_eq!(ios.len(), 1, "group_reporting: {ios:?}");
    // size=16m per job over its two files: 4096 reads per job.
    assert_eq!(ios[0], (8192, 0, 0, 0), "{ios:?}");
    let counts = engine_counts(&c.err);
    assert_eq!(counts.len(), 4, "two jobs, two files each: {counts:?}");
    for file in [C0, C1] {
        let n: u64 = counts
            .iter()
            .filter(|(f, _)| f == file)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(n, 4096, "{file}: {counts:?}");
    }

    // The multi fixture SPDK saved (two controllers, an NVMe/TCP target on Nvme0n1),
    // unchanged: 8 MiB over its two bdevs, written and read back; the target noted.
    let c = clean(&all, "saved", &out);
    assert_eq!(job_ios(&report(&c.out)), [(2048, 2048, 0, 0)], "{c:#?}");
    assert!(c.err.contains("subsystem 'nvmf' ignored"), "{}", c.err);
    let counts = engine_counts(&c.err);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.iter().all(|(_, n)| *n > 0), "both bdevs: {counts:?}");
}

#[test]
fn a_controller_not_on_vfio_pci_is_refused_with_the_fix() {
    let script = format!(
        r#"{RUN_CASE}
run_case unbound env LD_PRELOAD={SO} fio --name=x --ioengine=spdk --thread=1 \
    --filename='{C0}' --rw=read --size=64k
"#
    );
    let out = guest(Topology::Single).bind(Bind::Nvme).run(&script);
    out.assert_success();
    let all = cases(&out);
    let c = case(&all, "unbound", &out);
    assert_ne!(c.rc, 0, "fio must fail: {c:#?}");
    for want in [
        "0000:01:00.0",
        "bound to the nvme driver, not to vfio-pci",
        "nvme-setup bind 0000:01:00.0",
    ] {
        assert!(c.err.contains(want), "{want:?} missing: {c:#?}");
    }
}
