// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The driver against QEMU's NVMe controllers bound to vfio-pci in a guest:
//! identify, write and read back over sizes and PRP-list offsets, two threads with
//! their own queue pairs, controller resets in the middle of verified traffic, and a
//! hot-unplug in the middle of traffic. The scenarios live in the guest binary
//! `nvme-e2e-driver`, which prints `PASS <scenario>` for each one that held (it fails
//! itself when the counts do not add up) and a `<scenario>: counts k=v ...` line
//! whose counts these tests check again: every accepted request completed once, the
//! outcomes add up, no stray or malformed completion. The single-controller scenarios
//! share one boot ([`SharedRun`]), each run as its own case.

use e2e::{case, cases, Guest, SharedRun, Topology, RUN_CASE};

/// The counts `scenario` printed on its `<scenario>: counts k=v ...` line.
fn counts(out: &e2e::GuestOutput, scenario: &str) -> std::collections::HashMap<String, u64> {
    let prefix = format!("{scenario}: counts ");
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line:\n{out}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("bad count {kv:?} in {line:?}"));
            let v = v
                .parse()
                .unwrap_or_else(|_| panic!("bad count {kv:?} in {line:?}"));
            (k.to_string(), v)
        })
        .collect()
}

/// Every accepted request completed once, the outcomes add up, and the driver saw no
/// stray or malformed completion.
fn assert_counts_add_up(c: &std::collections::HashMap<String, u64>, out: &e2e::GuestOutput) {
    let n = |k: &str| *c.get(k).unwrap_or_else(|| panic!("no count {k}:\n{out}"));
    assert_eq!(n("completions"), n("accepted"), "{out}");
    assert_eq!(
        n("succeeded") + n("aborted") + n("failed"),
        n("completions"),
        "{out}"
    );
    assert_eq!((n("stray"), n("malformed")), (0, 0), "{out}");
    assert!(n("succeeded") > 0, "{out}");
}

/// `text` has the line `PASS <scenario>`.
fn printed_pass(text: &str, scenario: &str) -> bool {
    text.lines().any(|l| l.trim() == format!("PASS {scenario}"))
}

/// Each of `scenarios` ran as a case of `out`, exited 0 and printed `PASS <scenario>`
/// (a case is named after its scenario, `sizes` cases after the mode too).
fn assert_passed(out: &e2e::GuestOutput, scenarios: &[(&str, &str)]) {
    let all = cases(out);
    for (name, scenario) in scenarios {
        let c = case(&all, name, out);
        assert_eq!(c.rc, 0, "{name} failed:\n{out}");
        assert!(
            printed_pass(&c.out, scenario),
            "scenario {scenario} did not pass:\n{out}"
        );
    }
}

/// One boot of `single` for the single-controller scenarios: identify, rw, threads
/// and reset, then sizes through SGLs and through PRPs, each a case.
static SINGLE: SharedRun = SharedRun::new();

fn single() -> &'static e2e::GuestOutput {
    SINGLE.get(|| {
        Guest::new(Topology::Single).run(&format!(
            "{RUN_CASE}
             for s in identify rw threads reset; do run_case $s nvme-e2e-driver $s 0000:01:00.0; done
             for m in sgl prp; do run_case sizes-$m nvme-e2e-driver sizes 0000:01:00.0 $m; done"
        ))
    })
}

#[test]
fn identify_rw_threads_and_reset_on_one_controller() {
    let out = single();
    assert_passed(
        out,
        &[
            ("identify", "identify"),
            ("rw", "rw"),
            ("threads", "threads"),
            ("reset", "reset"),
        ],
    );
    let threads = counts(out, "threads");
    assert_counts_add_up(&threads, out);
    assert_eq!(
        threads["aborted"] + threads["failed"] + threads["refused"],
        0,
        "{out}"
    );
    let reset = counts(out, "reset");
    assert_counts_add_up(&reset, out);
    assert_eq!(reset["resets"], 3, "{out}");
    assert_eq!((reset["failed"], reset["refused"]), (0, 0), "{out}");
}

/// Every transfer size from 512 bytes to MDTS, and past it (split), reads back what
/// was written, with data described by SGLs (QEMU's controller reports SGLS) and
/// with PRPs forced (`ControllerOptions::enable_sgl` false).
#[test]
fn every_size_reads_back_through_sgls_and_prps() {
    let out = single();
    assert_passed(out, &[("sizes-sgl", "sizes"), ("sizes-prp", "sizes")]);
    let all = cases(out);
    for m in ["sgl", "prp"] {
        assert!(
            case(&all, &format!("sizes-{m}"), out)
                .out
                .contains(&format!("sizes-{m}: ")),
            "no summary of mode {m}:\n{out}"
        );
    }
}

#[test]
fn hot_unplug_during_traffic_fails_every_io_once_and_releases_the_device() {
    let out = Guest::new(Topology::Mpath)
        .run("nvme-e2e-driver unplug 0000:02:00.0 c1 && ls /sys/bus/pci/devices");
    out.assert_success();
    assert!(
        printed_pass(&out.stdout, "unplug"),
        "scenario unplug did not pass:\n{out}"
    );
    let unplug = counts(&out, "unplug");
    assert_counts_add_up(&unplug, &out);
    assert!(
        unplug["failed"] > 0,
        "requests in flight at the unplug completed with an error:\n{out}"
    );
    assert!(
        out.stdout.contains("0000:01:00.0"),
        "the other controller stays:\n{out}"
    );
    assert!(
        !out.stdout.contains("0000:02:00.0\n"),
        "the unplugged controller is gone:\n{out}"
    );
}
