// SPDX-License-Identifier: Apache-2.0 OR MIT
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
//! VFIO and sends it I/O again; a fifth does the same with nothing bound by hand (the
//! kernel binds, the layer's hot-plug scan notices) and hot-adds a new controller on
//! the spare root port, which joins the bdev.

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

/// Hot-plug: nothing is bound by hand. `nvme-setup keep-vfio on` has the kernel bind
/// controllers to vfio-pci as they appear, and the block layer's hot-plug scan is on.
/// c1 (B) is unplugged under verified round-robin traffic and plugged back on the same
/// root port: the scan notices it and the layer reconnects it at once, named by its
/// address, and it carries I/O again. Then a new controller of the subsystem, c2, is
/// added on the spare root port (0000:03:00.0): the scan attaches it, it joins the
/// bdev as a third path named by its address and carries I/O. Nothing lost, data
/// intact, no stray completion throughout.
#[test]
fn hot_plug_brings_a_controller_back_and_adds_a_new_one_without_binding_by_hand() {
    let out = scenario(
        "round-robin",
        "--resets 1 --unplug c1 --replug --hotplug --add c2",
        &[
            "nvme-setup keep-vfio on: vfio-pci now takes every NVMe controller",
            "0000:02:00.0 left the PCI bus",
            "replug: 0000:02:00.0 bound to vfio-pci by the kernel",
            "replug: path 0000:02:00.0 usable again",
            "hot-add: path 0000:03:00.0 joined",
            "phase replug:",
        ],
    );
    assert!(
        !out.stdout.contains("path 0000:02:00.0 removed"),
        "the path was removed:\n{out}"
    );
    // Every path is named by its address in the per-path report, the returned and the
    // added ones included.
    let per_path = out
        .stdout
        .lines()
        .find(|l| l.contains(": per path: "))
        .unwrap_or_else(|| panic!("no per-path line:\n{out}"));
    let unnamed = per_path
        .match_indices("path ")
        .any(|(i, _)| per_path[i + 5..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(!unnamed, "a path without its name: {per_path}");
    for bdf in ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0"] {
        assert!(per_path.contains(bdf), "{bdf} missing: {per_path}");
    }
    let carried = |prefix: &str, suffix: &str| -> u64 {
        out.stdout
            .lines()
            .find_map(|l| {
                let rest = l.split_once(prefix)?.1;
                rest.split_once(suffix)?.0.rsplit(' ').next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{out}"))
    };
    assert!(
        carried("replug: 0000:02:00.0 reconnected ", " I/Os after") > 0,
        "0000:02:00.0 carried nothing after it came back:\n{out}"
    );
    assert!(
        carried(
            "hot-add: 0000:03:00.0 attached by the hot-plug scan, carried ",
            " I/Os"
        ) > 0,
        "0000:03:00.0 carried nothing:\n{out}"
    );
}
