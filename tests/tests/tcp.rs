// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The driver's NVMe/TCP PDU codec and Fabrics commands against Linux's own target:
//! `qemu/run --nvmet-tcp 2` serves one subsystem on 127.0.0.1:4420 and 4421, and the
//! guest binary `nvme-e2e-tcp` (a probe with blocking sockets, before the TCP
//! transport exists) connects, enables the controller, reads its identity and ANA
//! log, and moves verified data on an I/O queue. All checks share one boot.

use e2e::{case, cases, ok, Bind, Guest, SharedRun, Topology, RUN_CASE};
use serde_json::Value;
use std::time::Duration;

/// The subsystem `qemu/run --nvmet-tcp` exports (qemu/README.md).
const NQN: &str = "nqn.2026-12.io.nvme-qemu:nvmet";

static BOOT: SharedRun = SharedRun::new();

fn boot() -> &'static e2e::GuestOutput {
    BOOT.get(|| {
        Guest::new(Topology::Single)
            .bind(Bind::None)
            .args(["--nvmet-tcp", "2"])
            .timeout(Duration::from_secs(300))
            .run(&format!(
                r#"{RUN_CASE}
                n=$NVME_QEMU_NVMET_NQN
                c=/sys/kernel/config/nvmet/subsystems/$n
                run_case attrs sh -c "echo nqn=$n; echo version=\$(cat $c/attr_version); echo model=\$(cat $c/attr_model)"
                run_case probe nvme-e2e-tcp probe 127.0.0.1:4420 $n
                run_case flip nvme-qemu-nvmet ana 2 inaccessible
                run_case ports nvme-qemu-nvmet ports
                run_case probe-port2-digests nvme-e2e-tcp probe 127.0.0.1:4421 $n --digests
                run_case rw nvme-e2e-tcp rw 127.0.0.1:4420 $n
                run_case rw-digests nvme-e2e-tcp rw 127.0.0.1:4420 $n --digests
                run_case wrong-nqn nvme-e2e-tcp probe 127.0.0.1:4420 nqn.2026-12.io.nvme-qemu:nobody"#
            ))
    })
}

/// The JSON object case `name` printed (it must have exited 0).
fn json(name: &str) -> Value {
    let out = boot();
    let all = cases(out);
    let c = ok(&all, name, out);
    serde_json::from_str(&c.out).unwrap_or_else(|e| panic!("{name} printed no JSON ({e}):\n{out}"))
}

/// `key=value` lines of the `attrs` case: what configfs says the target is.
fn attr(key: &str) -> String {
    let out = boot();
    let all = cases(out);
    ok(&all, "attrs", out)
        .out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the attrs case:\n{out}"))
        .trim()
        .to_string()
}

/// The identity read over TCP is the one configfs gives the subsystem: its NQN, the
/// version VS reports (configfs writes it as `1.3`), the model.
fn assert_identity(p: &Value, name: &str) {
    let out = boot();
    assert_eq!(attr("nqn"), NQN, "the guest's $NVME_QEMU_NVMET_NQN");
    assert_eq!(
        p["identify"]["subnqn"], NQN,
        "{name}: subsystem NQN:\n{out}"
    );
    assert_eq!(
        p["identify"]["mn"],
        attr("model").as_str(),
        "{name}: model:\n{out}"
    );
    let vs = &p["vs"];
    let (major, minor, tertiary) = (
        vs["major"].as_u64(),
        vs["minor"].as_u64(),
        vs["tertiary"].as_u64(),
    );
    let mut want = attr("version")
        .split('.')
        .map(|v| v.parse::<u64>().ok())
        .collect::<Vec<_>>();
    want.resize(3, Some(0));
    assert_eq!(
        vec![major, minor, tertiary],
        want,
        "{name}: VS against attr_version {}:\n{out}",
        attr("version")
    );
    assert_eq!(
        p["cntlid"], p["identify"]["cntlid"],
        "{name}: Connect's and Identify's controller ID:\n{out}"
    );
    assert_eq!(p["icresp"]["pfv"], 0, "{name}:\n{out}");
}

#[test]
fn tcp_probe_reads_the_subsystem_nqn_vs_and_model_from_nvmet() {
    let p = json("probe");
    assert_identity(&p, "probe");
    assert_eq!(
        (
            p["icresp"]["hdgst"].as_bool(),
            p["icresp"]["ddgst"].as_bool()
        ),
        (Some(false), Some(false))
    );
}

#[test]
fn tcp_probe_with_digests_gets_them_and_the_same_identity() {
    let p = json("probe-port2-digests");
    assert_identity(&p, "probe-port2-digests");
    assert_eq!(
        (
            p["icresp"]["hdgst"].as_bool(),
            p["icresp"]["ddgst"].as_bool()
        ),
        (Some(true), Some(true)),
        "nvmet grants the digests asked for:\n{}",
        boot()
    );
}

#[test]
fn an_ana_state_set_in_configfs_is_what_the_host_reads_over_tcp() {
    let out = boot();
    let all = cases(out);
    ok(&all, "flip", out);
    let ports = &ok(&all, "ports", out).out;
    assert!(ports.contains("1 127.0.0.1:4420 optimized"), "{ports}");
    assert!(ports.contains("2 127.0.0.1:4421 inaccessible"), "{ports}");
    // Port 1 was read before the flip and port 2 after it; port 1 again by `rw`.
    for (name, state) in [
        ("probe", "Optimized"),
        ("probe-port2-digests", "Inaccessible"),
        ("rw", "Optimized"),
    ] {
        let p = json(name);
        let groups = p["ana"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no ANA groups:\n{out}"));
        assert_eq!(groups.len(), 1, "{name}:\n{out}");
        assert_eq!(groups[0]["grpid"], 1, "{name}:\n{out}");
        assert_eq!(groups[0]["state"], state, "{name}: ANA state:\n{out}");
        assert_eq!(groups[0]["nsids"], serde_json::json!([1]), "{name}:\n{out}");
    }
}

#[test]
fn tcp_io_writes_in_capsule_and_through_r2t_and_reads_back() {
    let out = boot();
    for name in ["rw", "rw-digests"] {
        let p = json(name);
        let io = &p["io"];
        assert_eq!(io["verified"], true, "{name}:\n{out}");
        assert!(
            io["in_capsule_bytes"].as_u64() > Some(0),
            "{name}: a write with in-capsule data:\n{out}"
        );
        assert!(
            io["r2ts"].as_u64() >= Some(1),
            "{name}: a write through R2T:\n{out}"
        );
        assert!(io["h2c_pdus"].as_u64() >= Some(1), "{name}:\n{out}");
        assert!(
            io["c2h_pdus"].as_u64() >= Some(2),
            "{name}: both reads came as C2HData:\n{out}"
        );
    }
    let all = cases(out);
    assert_eq!(case(&all, "rw-digests", out).err, "", "{out}");
}

/// A Connect to a subsystem the target does not have fails with the target's own
/// status, decoded: Connect Invalid Parameters pointing at SUBNQN in the data.
#[test]
fn a_connect_to_an_unknown_subsystem_names_the_field_nvmet_refused() {
    let out = boot();
    let all = cases(out);
    let c = case(&all, "wrong-nqn", out);
    assert_eq!(c.rc, 1, "{out}");
    assert!(
        c.err.contains(
            "Connect of queue 0 to nqn.2026-12.io.nvme-qemu:nobody: connect invalid parameters: \
             SUBNQN (offset 256 in the data) (sct 0x1, sc 0x82)"
        ),
        "{out}"
    );
}
