// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The Rust server example (`bdev/examples/server.rs`, issue 23) against QEMU's
//! controllers: on the `mpath` topology it serves verified traffic from a reactor per
//! core through the multipath bdev over both controllers while `c1` is hot-unplugged
//! and plugged back (bound to vfio-pci by `nvme-setup keep-vfio on`, then reconnected
//! by the layer: its hot-plug scan or its reconnect timer, whichever comes first); it
//! prints the events it received, every read comes back as written, nothing fails,
//! and `c1` carries I/O again after it returned.

use e2e::{device_del_cmd, qmp_line, Guest, Topology};
use std::path::PathBuf;
use std::time::Duration;

const C1: &str = "0000:02:00.0";

/// The example as `cargo test` built it, beside this test's own binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("examples").join("server");
    assert!(
        bin.is_file(),
        "{} is missing: cargo test builds the examples (cargo build --example server -p nvme-bdev)",
        bin.display()
    );
    bin
}

/// The I/Os `C1` carried in a `server: ... per path:` report line.
fn c1_count(line: &str) -> Option<u64> {
    let paths = line.split_once("per path: ")?.1;
    paths.split(", ").find_map(|p| {
        let (name, n) = p.rsplit_once(' ')?;
        (name == C1).then(|| n.parse().ok())?
    })
}

#[test]
fn server_example_keeps_verified_io_through_an_unplug_and_replug() {
    let add = qmp_line(
        r#"{"execute":"device_add","arguments":{"driver":"nvme","id":"c1","bus":"rp1","serial":"mpath0","subsys":"subsys0"}}"#,
    );
    let script = format!(
        r#"
nvme-setup keep-vfio on >/dev/null
server --bdf 0000:01:00.0 --bdf {C1} --seconds 30 --cores 2 --hotplug >/tmp/server.log 2>&1 &
pid=$!
sleep 5
{del}
i=0; while [ -e /sys/bus/pci/devices/{C1} ] && [ $i -lt 40 ]; do sleep 0.5; i=$((i+1)); done
echo "c1 gone: $([ -e /sys/bus/pci/devices/{C1} ] && echo no || echo yes)"
# QEMU frees the id once the old device is finalized: retry the device_add.
for try in 1 2 3 4 5; do
    echo '{add}'
    sleep 3
    [ -e /sys/bus/pci/devices/{C1} ] && break
done
echo "c1 back: $([ -e /sys/bus/pci/devices/{C1} ] && echo yes || echo no)"
wait $pid; rc=$?
cat /tmp/server.log
echo "server exit $rc"
"#,
        del = device_del_cmd("c1"),
    );
    let out = Guest::new(Topology::Mpath)
        .include(example())
        .timeout(Duration::from_secs(240))
        .run(&script);
    out.assert_success();
    let text = &out.stdout;
    // Reads land in the server's own memory, registered with both controllers and,
    // after the replug, with c1 again (`register_memory` covers controllers attached
    // later): every read through c1 after its PathUp went there, verified below.
    for want in [
        "c1 gone: yes",
        "c1 back: yes",
        "server exit 0",
        "server's own memory, registered at IOVA",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{out}");
    }
    let summary = text
        .lines()
        .find(|l| l.contains(" reads verified, "))
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    assert!(
        summary.ends_with(" 0 errors, 0 mismatches") && !summary.contains(": 0 reads"),
        "{summary}\n{out}"
    );
    // The events, in order: c1's path went down, then came back up.
    let lines: Vec<&str> = text.lines().collect();
    let at = |kind: &str, from: usize| {
        lines[from..]
            .iter()
            .position(|l| l.starts_with(&format!("event: {kind} {{")) && l.contains(C1))
            .map(|i| i + from)
    };
    let down = at("PathDown", 0).unwrap_or_else(|| panic!("no PathDown for {C1}:\n{out}"));
    let up = at("PathUp", down)
        .unwrap_or_else(|| panic!("no PathUp for {C1} after its PathDown:\n{out}"));
    // After it came back, c1 carried I/O again: its count grew between two reports.
    let counts: Vec<u64> = lines[up..].iter().filter_map(|l| c1_count(l)).collect();
    assert!(
        counts.windows(2).any(|w| w[1] > w[0]),
        "{C1} carried no I/O after its PathUp ({counts:?}):\n{out}"
    );
}
