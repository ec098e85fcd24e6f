//! The driver against QEMU's NVMe controllers bound to vfio-pci in a guest:
//! identify, write and read back over sizes and PRP-list offsets, two threads with
//! their own queue pairs, controller resets in the middle of verified traffic, and a
//! hot-unplug in the middle of traffic. The scenarios live in the guest binary
//! `nvme-e2e-driver`, which prints `PASS <scenario>` for each one that held.

use e2e::{Guest, Topology};

fn assert_passed(out: &e2e::GuestOutput, scenarios: &[&str]) {
    out.assert_success();
    for s in scenarios {
        assert!(
            out.stdout.lines().any(|l| l.trim() == format!("PASS {s}")),
            "scenario {s} did not pass:\n{out}"
        );
    }
}

#[test]
fn identify_rw_threads_and_reset_on_one_controller() {
    let out = Guest::new(Topology::Single).run(
        "set -e; for s in identify rw threads reset; do nvme-e2e-driver $s 0000:01:00.0; done",
    );
    assert_passed(&out, &["identify", "rw", "threads", "reset"]);
    assert!(
        out.stdout
            .contains("aborted by resets and resubmitted, data verified"),
        "{out}"
    );
}

#[test]
fn hot_unplug_during_traffic_fails_every_io_once_and_releases_the_device() {
    let out = Guest::new(Topology::Mpath)
        .run("nvme-e2e-driver unplug 0000:02:00.0 c1 && ls /sys/bus/pci/devices");
    assert_passed(&out, &["unplug"]);
    assert!(
        out.stdout.contains("completed with an error, none lost"),
        "{out}"
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
