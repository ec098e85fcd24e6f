//! The multipath bdev against QEMU's `mpath` topology (one subsystem, controllers c0
//! at 0000:01:00.0 and c1 at 0000:02:00.0 sharing namespace 1), once per policy:
//! verified traffic through the multipath bdev while controller A is reset
//! repeatedly through the block layer, then a controller carrying I/O is
//! hot-unplugged over QMP while traffic runs: B (c1) under round-robin and
//! least-queue-depth, the active path A (c0) under active-passive (unplugging the idle
//! passive path would fail nothing over). Every I/O completes exactly once,
//! successfully, data intact, and traffic carries on over the surviving path; the
//! resets and the unplug each fail I/O over (failovers > 0 in that phase) and the
//! channel counts no stray completions. The scenario lives in the guest binary
//! `nvme-e2e-mpath`, which prints `PASS mpath-<policy>` and, per phase, the
//! completions, failovers, longest pause between completions and longest submit call
//! (the failover figures of docs/BENCHMARKS.md; shown with `--nocapture`). A fourth
//! test plugs the unplugged controller back and checks the layer reconnects it over
//! VFIO and sends it I/O again.

use e2e::{Guest, GuestOutput, Topology};
use std::time::Duration;

/// The failovers `nvme-e2e-mpath` counted in phase `phase` (its line
/// `mpath POLICY: phase NAME: N completions, F failovers, ...`).
fn phase_failovers(out: &GuestOutput, phase: &str) -> u64 {
    let prefix = format!("phase {phase}: ");
    out.stdout
        .lines()
        .find_map(|l| {
            let rest = l.split_once(&prefix)?.1;
            rest.split(", ")
                .find_map(|p| p.strip_suffix(" failovers")?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no failover count for phase {phase}:\n{out}"))
}

/// Runs `nvme-e2e-mpath POLICY ARGS` in an `mpath` guest (its `mpath ...` lines shown
/// with `--nocapture`), and checks it passed and printed every line of `wants`.
fn scenario(policy: &str, args: &str, wants: &[&str]) -> GuestOutput {
    let guest = Guest::new(Topology::Mpath).timeout(Duration::from_secs(240));
    // No retry: an emulator crash is a failure like any other (qemu/run reports it
    // with the signal and the console tail, which the assertion below prints).
    let out = guest.run(&format!("nvme-e2e-mpath {policy} {args}"));
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
        "phase after:",
        "0 errors, 0 duplicates, 0 stray, 0 left over, 0 mismatches",
    ]
    .iter()
    .chain(wants)
    {
        assert!(out.stdout.contains(want), "{want:?} missing:\n{out}");
    }
    out
}

/// `unplug`: the QOM id of the controller to unplug (c0 is A, c1 is B).
fn reset_then_unplug(policy: &str, unplug: &str) {
    let out = scenario(
        policy,
        &format!("--resets 5 --unplug {unplug}"),
        &["phase reset:", "phase unplug:", "left the PCI bus"],
    );
    assert!(
        out.stdout.contains("reset 4 of 0000:01:00.0 done"),
        "five resets of A:\n{out}"
    );
    let gone = if unplug == "c0" {
        "0000:01:00.0"
    } else {
        "0000:02:00.0"
    };
    assert!(
        out.stdout.contains(&format!("{gone} left the PCI bus")),
        "{unplug} ({gone}) unplugged:\n{out}"
    );
    // I/O in flight on A when it reset, and on the unplugged path when it went, was
    // re-dispatched on the other path.
    assert!(
        phase_failovers(&out, "reset") > 0,
        "resets failed nothing over:\n{out}"
    );
    assert!(
        phase_failovers(&out, "unplug") > 0,
        "the unplug of {unplug} failed nothing over:\n{out}"
    );
}

#[test]
fn active_passive_fails_over_through_resets_and_unplug_of_the_active_path() {
    // The active path: A, which active-passive chooses first.
    reset_then_unplug("active-passive", "c0");
}

#[test]
fn round_robin_fails_over_through_resets_and_unplug() {
    reset_then_unplug("round-robin", "c1");
}

#[test]
fn least_queue_depth_fails_over_through_resets_and_unplug() {
    reset_then_unplug("least-queue-depth", "c1");
}

/// A controller that comes back: c1 (B) is unplugged under round-robin traffic, then
/// plugged back on the same root port (QMP `device_add`) and moved to vfio-pci with
/// `nvme-setup bind`; the block layer's reconnect takes it back over VFIO as a path of
/// the same bdev, and it carries I/O again. Nothing lost, data intact throughout.
#[test]
fn round_robin_reconnects_a_controller_plugged_back_over_vfio() {
    let out = scenario(
        "round-robin",
        "--resets 1 --unplug c1 --replug",
        &[
            "0000:02:00.0 left the PCI bus",
            "replug: 0000:02:00.0 on the PCI bus",
            "replug: path 0000:02:00.0 usable again",
            "phase replug:",
        ],
    );
    // The path never went away (ctrl_loss_timeout 60 s): it was reconnected, not
    // added anew, and it carried I/O after it came back.
    assert!(
        !out.stdout.contains("path 0000:02:00.0 removed"),
        "the path was removed:\n{out}"
    );
    let back = out
        .stdout
        .lines()
        .find_map(|l| {
            l.split_once("replug: 0000:02:00.0 reconnected ")?
                .1
                .split_once(" I/Os after")
        })
        .unwrap_or_else(|| panic!("no replug summary:\n{out}"));
    let carried: u64 = back
        .0
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable replug summary {back:?}:\n{out}"));
    assert!(
        carried > 0,
        "0000:02:00.0 carried nothing after it came back:\n{out}"
    );
}
