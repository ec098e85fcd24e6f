//! The multipath bdev against QEMU's `mpath` topology (one subsystem, controllers c0
//! at 0000:01:00.0 and c1 at 0000:02:00.0 sharing namespace 1), once per policy:
//! verified traffic through the multipath bdev while controller A is reset
//! repeatedly through the block layer, then controller B is hot-unplugged over QMP
//! while traffic runs. Every I/O completes exactly once, successfully, data intact,
//! and traffic carries on over the surviving path. The scenario lives in the guest
//! binary `nvme-e2e-mpath`, which prints `PASS mpath-<policy>` and, per phase, the
//! longest pause between completions and the longest submit call (the failover
//! figures of docs/BENCHMARKS.md; shown with `--nocapture`).

use e2e::{Guest, Topology};
use std::time::Duration;

fn reset_then_unplug(policy: &str) {
    let guest = Guest::new(Topology::Mpath).timeout(Duration::from_secs(240));
    let script = format!("nvme-e2e-mpath {policy} --resets 5 --unplug c1");
    // No retry: an emulator crash is a failure like any other (qemu/run reports it
    // with the signal and the console tail, which the assertion below prints).
    let out = guest.run(&script);
    for l in out.stdout.lines().filter(|l| l.starts_with("mpath ")) {
        eprintln!("{l}");
    }
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim() == format!("PASS mpath-{policy}")),
        "scenario did not pass:\n{out}"
    );
    for want in [
        "nothing lost, data intact",
        "phase reset:",
        "phase unplug:",
        "phase after:",
        "left the PCI bus",
        "0 errors, 0 duplicates, 0 left over, 0 mismatches",
    ] {
        assert!(out.stdout.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(
        out.stdout.contains("reset 4 of 0000:01:00.0 done"),
        "five resets of A:\n{out}"
    );
}

#[test]
fn active_passive_survives_resets_and_unplug() {
    reset_then_unplug("active-passive");
}

#[test]
fn round_robin_survives_resets_and_unplug() {
    reset_then_unplug("round-robin");
}

#[test]
fn least_queue_depth_survives_resets_and_unplug() {
    reset_then_unplug("least-queue-depth");
}
