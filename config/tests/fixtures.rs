// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The reader against what SPDK v23.01.1 itself wrote (`config/fixtures/spdk-v23.01.1`,
//! made by its `make-fixtures` with spdk_tgt and rpc.py in the QEMU guest): each file
//! is read unchanged, with the values SPDK wrote landing in the layer's options; and
//! each file with one parameter changed to a value not supported here is refused,
//! naming the method, the parameter and what to do.

use nvme_bdev::{LayerOptions, Policy};
use nvme_spdk_config::{parse, BdevConfig, Error, Hotplug, MultipathMode};
use serde_json::{json, Value};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/spdk-v23.01.1")
}

const FIXTURES: [&str; 3] = [
    "mpath-active-active.json",
    "mpath-defaults.json",
    "multi-nvmf-tcp.json",
];

fn text(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read(name: &str) -> BdevConfig {
    parse(&text(name), name).unwrap_or_else(|e| panic!("{name} refused: {e}"))
}

#[test]
fn the_fixtures_folder_holds_exactly_the_fixtures_tested() {
    let mut found: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    assert_eq!(found, FIXTURES, "a new fixture needs its case here");
}

#[test]
fn mpath_active_active_is_read_unchanged() {
    let c = read("mpath-active-active.json");
    let addrs: Vec<_> = c
        .attach
        .iter()
        .map(|a| (a.name.as_str(), a.traddr.as_str()))
        .collect();
    assert_eq!(
        addrs,
        [("Nvme0", "0000:01:00.0"), ("Nvme0", "0000:02:00.0")]
    );
    // save_config in v23.01.1 writes neither "multipath" nor the policy: the second
    // controller is a failover path (SPDK's default), so the bdev is active-passive.
    assert!(
        c.attach.iter().all(|a| a.mode == MultipathMode::Failover),
        "{c:?}"
    );
    assert_eq!(c.mpath.policy, Policy::ActivePassive);
    assert_eq!(c.mpath.retry_count, 3);
    assert_eq!(c.mpath.ctrl_loss_timeout_ms, 30_000);
    assert_eq!(c.mpath.reconnect_delay_ms, 1_000);
    assert_eq!(c.mpath.fast_io_fail_timeout_ms, 5_000);
    assert_eq!(c.io_timeout_ms, Some(10_000));
    assert_eq!(c.admin_timeout_ms, Some(20_000));
    assert_eq!(c.admin_poll_us, Some(10_000));
    assert_eq!(
        c.hotplug,
        Some(Hotplug {
            enable: true,
            period_ms: 100
        })
    );
    let mut o = LayerOptions::default();
    c.apply(&mut o);
    assert_eq!(
        (
            o.qpair.timeout_ms,
            o.ctrl.admin_timeout_ms,
            o.admin_poll_us,
            o.mpath
        ),
        (10_000, 20_000, 10_000, c.mpath)
    );
    for s in ["scheduler", "sock", "nvmf", "iscsi", "bdev_set_options"] {
        assert!(
            c.notes.iter().any(|n| n.contains(s)),
            "no note on {s}: {:#?}",
            c.notes
        );
    }
    // Empty subsystems (vmd, iobuf, accel, nbd) and scsi's null config need no note.
    for s in ["'vmd'", "'iobuf'", "'accel'", "'nbd'", "'scsi'"] {
        assert!(
            !c.notes.iter().any(|n| n.contains(s)),
            "note on {s}: {:#?}",
            c.notes
        );
    }
}

#[test]
fn mpath_defaults_is_read_unchanged() {
    let c = read("mpath-defaults.json");
    assert_eq!(c.attach.len(), 2);
    assert_eq!(c.mpath.policy, Policy::ActivePassive);
    assert_eq!(c.mpath.retry_count, 3);
    // SPDK's defaults, 0/0/0: a lost controller is not reconnected, its paths go at once.
    assert_eq!(
        (
            c.mpath.ctrl_loss_timeout_ms,
            c.mpath.reconnect_delay_ms,
            c.mpath.fast_io_fail_timeout_ms
        ),
        (0, 0, 0)
    );
    // timeout_us 0: the driver's own per-command deadline stays.
    assert_eq!((c.io_timeout_ms, c.admin_timeout_ms), (None, None));
    assert_eq!(
        c.hotplug,
        Some(Hotplug {
            enable: false,
            period_ms: 100
        })
    );
}

#[test]
fn multi_nvmf_tcp_is_read_unchanged() {
    let c = read("multi-nvmf-tcp.json");
    let addrs: Vec<_> = c
        .attach
        .iter()
        .map(|a| (a.name.as_str(), a.traddr.as_str()))
        .collect();
    assert_eq!(
        addrs,
        [("Nvme0", "0000:01:00.0"), ("Nvme1", "0000:02:00.0")]
    );
    assert_eq!(
        c.hotplug,
        Some(Hotplug {
            enable: true,
            period_ms: 100
        })
    );
    let nvmf = c
        .notes
        .iter()
        .find(|n| n.contains("'nvmf'"))
        .expect("nvmf note");
    for m in [
        "nvmf_create_transport",
        "nvmf_create_subsystem",
        "nvmf_subsystem_add_ns",
        "nvmf_subsystem_add_listener",
        "nvmf_subsystem_add_host",
    ] {
        assert!(
            text("multi-nvmf-tcp.json").contains(m),
            "the fixture has no {m}"
        );
        assert!(nvmf.contains(m), "{m} not in the note: {nvmf}");
    }
}

/// `name` with `change` made to the first entry of `method` in `subsystem` (its
/// params), or with `entry` appended to `subsystem` when `method` is new.
fn changed(name: &str, subsystem: &str, method: &str, change: Value) -> String {
    let mut root: Value = serde_json::from_str(&text(name)).unwrap();
    let subs = root["subsystems"].as_array_mut().unwrap();
    let sub = subs
        .iter_mut()
        .find(|s| s["subsystem"] == subsystem)
        .unwrap_or_else(|| panic!("{name} has no subsystem {subsystem}"));
    if sub["config"].is_null() {
        sub["config"] = json!([]);
    }
    let entries = sub["config"].as_array_mut().unwrap();
    match entries.iter_mut().find(|e| e["method"] == method) {
        Some(e) => {
            for (k, v) in change.as_object().unwrap() {
                e["params"][k] = v.clone();
            }
        }
        None => entries.push(json!({"method": method, "params": change})),
    }
    serde_json::to_string_pretty(&root).unwrap()
}

fn refused(name: &str, text: &str) -> Error {
    match parse(text, name) {
        Ok(c) => panic!("{name} was taken: {c:?}"),
        Err(e) => e,
    }
}

/// One parameter per case, changed to a value that is not supported here.
fn cases(name: &str) -> Vec<(&'static str, &'static str, Value, &'static str)> {
    let mut v = vec![
        (
            "bdev",
            "bdev_nvme_attach_controller",
            json!({"prchk_guard": true}),
            "protection information is not implemented",
        ),
        (
            "bdev",
            "bdev_nvme_attach_controller",
            json!({"hdgst": true}),
            "PCIe controllers have no TCP digests",
        ),
        (
            "bdev",
            "bdev_nvme_attach_controller",
            json!({"trtype": "TCP"}),
            "only PCIe controllers",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"arbitration_burst": 3}),
            "weighted round robin",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"nvme_ioq_poll_period_us": 100}),
            "polled by the caller",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"delay_cmd_submit": false}),
            "once per batch",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"bdev_retry_count": -1}),
            "give 0 to 255",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"action_on_timeout": "none", "timeout_us": 1_000_000}),
            "set action_on_timeout to \"abort\"",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"disable_auto_failback": true}),
            "goes back to its first path",
        ),
        (
            "bdev",
            "bdev_nvme_set_options",
            json!({"nvme_adminq_poll_period_us": 0}),
            "give a period",
        ),
        (
            "bdev",
            "bdev_nvme_set_hotplug",
            json!({"enable": true, "period_us": 1000}),
            "give 10000 or more",
        ),
        ("vmd", "enable_vmd", json!({}), "Intel VMD"),
        (
            "nbd",
            "nbd_start_disk",
            json!({"bdev_name": "Nvme0n1", "nbd_device": "/dev/nbd0"}),
            "front end",
        ),
    ];
    if name == "mpath-active-active.json" {
        v.push((
            "bdev",
            "bdev_nvme_attach_controller",
            json!({"fast_io_fail_timeout_sec": 7}),
            "another controller asked for",
        ));
    }
    v
}

#[test]
fn each_fixture_with_one_unsupported_value_is_refused_by_name() {
    for name in FIXTURES {
        for (sub, method, change, why) in cases(name) {
            let e = refused(name, &changed(name, sub, method, change.clone()));
            let msg = e.to_string();
            assert_eq!(e.method.as_deref(), Some(method), "{name} {change}: {msg}");
            // A new entry is refused as a whole; a changed one by the parameter changed.
            let head = match &e.param {
                None => format!("{name}: method '{method}': "),
                Some(p) => {
                    assert!(
                        change.get(p.as_str()).is_some(),
                        "{name}: refused {p}, not one of {change}: {msg}"
                    );
                    format!("{name}: {method} parameter '{p}': ")
                }
            };
            let why_part = msg
                .strip_prefix(&head)
                .unwrap_or_else(|| panic!("{msg:?} does not start with {head:?}"));
            assert!(
                why_part.contains(why),
                "{name} {change}: {why:?} missing: {msg}"
            );
            // Every refusal says what to do.
            assert!(
                ["remove", "give", "set "]
                    .iter()
                    .any(|w| why_part.contains(w)),
                "{name} {change}: no fix in: {msg}"
            );
        }
    }
}
