// SPDX-License-Identifier: Apache-2.0 OR MIT
//! SPDK's JSON config files, as `rpc.py save_config` writes them and as SPDK's
//! applications and fio plugins read them (`spdk_tgt -c`, `spdk_json_conf`), read into
//! the block layer's options:
//!
//! ```
//! let text = r#"{"subsystems": [{"subsystem": "bdev", "config": [
//!   {"method": "bdev_nvme_set_options", "params": {"bdev_retry_count": 3}},
//!   {"method": "bdev_nvme_attach_controller",
//!    "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "0000:01:00.0", "multipath": "multipath"}},
//!   {"method": "bdev_nvme_attach_controller",
//!    "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "0000:02:00.0", "multipath": "multipath"}},
//!   {"method": "bdev_nvme_set_multipath_policy",
//!    "params": {"name": "Nvme0n1", "policy": "active_active", "selector": "round_robin"}},
//!   {"method": "bdev_nvme_set_hotplug", "params": {"enable": true, "period_us": 100000}}]}]}"#;
//! let cfg = nvme_spdk_config::parse(text, "bdev.json").unwrap();
//! assert_eq!(cfg.attach.len(), 2);
//! let mut opts = nvme_bdev::LayerOptions::default();
//! cfg.apply(&mut opts);
//! assert_eq!(opts.mpath.policy, nvme_bdev::Policy::RoundRobin);
//! assert_eq!(cfg.hotplug.map(|h| h.period_ms), Some(100));
//! ```
//!
//! Controllers attached under one `name` are the paths of that name's bdevs
//! (`Nvme0n1`, ...). Every method and parameter SPDK v23.01.1's `save_config` writes
//! is taken: applied where the block layer or the driver has its equivalent, ignored
//! with a one-line note in [`BdevConfig::notes`] where it cannot matter here (socket,
//! buffer-pool, accel, scheduler and front-end settings), and refused with an
//! [`Error`] naming the method, the parameter and what to do where honouring it would
//! change behaviour in a way this project does not support. The table of what each one
//! does is in `tools/fio/README.md`; the fixtures SPDK itself wrote are in
//! `config/fixtures/`.
//!
//! Licence: Apache-2.0 OR MIT, like the layers it configures, so storage servers and
//! the GPL-2.0-only fio engine can both link it.

#![deny(missing_docs)]

mod bdev_nvme;
mod nvmf;
mod other;
mod params;
mod pci;

pub use nvmf::{NvmfConfig, NvmfListener, NvmfNamespace, NvmfSubsystem, NvmfTransport};
pub use pci::parse_bdf;

use nvme_bdev::{LayerOptions, MpathOptions};
use params::Params;
use serde_json::Value;

/// How a second `bdev_nvme_attach_controller` with the same name is taken (SPDK's
/// `multipath` parameter; SPDK's default is `failover`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipathMode {
    /// One controller per name: a second one is an error.
    Disable,
    /// Further controllers are standby paths (active-passive).
    Failover,
    /// Further controllers are paths used by the multipath policy.
    Multipath,
}

/// One `bdev_nvme_attach_controller`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    /// SPDK's controller name (bdevs are `<name>n<nsid>`).
    pub name: String,
    /// PCI address, `DDDD:BB:DD.F`.
    pub traddr: String,
    /// The `multipath` parameter.
    pub mode: MultipathMode,
}

/// `bdev_nvme_set_hotplug`: the block layer's hot-plug scan
/// ([`nvme_bdev::BlockLayer::enable_hotplug`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hotplug {
    /// `enable`: scan for controllers that appear (or come back) while running.
    pub enable: bool,
    /// `period_us`, rounded up to milliseconds.
    pub period_ms: u64,
}

/// What a config asks of the block layer.
#[derive(Clone, Debug, PartialEq)]
pub struct BdevConfig {
    /// Controllers, in the config's order.
    pub attach: Vec<Attach>,
    /// Multipath behaviour (policy, retries, loss and reconnect timeouts).
    pub mpath: MpathOptions,
    /// Per-command I/O timeout (`bdev_nvme_set_options` `timeout_us`), when set.
    pub io_timeout_ms: Option<u64>,
    /// Admin command timeout (`timeout_admin_us`, or `timeout_us` when that is 0, as
    /// SPDK), when set.
    pub admin_timeout_ms: Option<u64>,
    /// How often controller threads do their admin housekeeping
    /// (`nvme_adminq_poll_period_us`), when set.
    pub admin_poll_us: Option<u64>,
    /// `bdev_nvme_set_hotplug`, when the config has it.
    pub hotplug: Option<Hotplug>,
    /// One line per thing that was accepted but means nothing here (print them).
    pub notes: Vec<String>,
}

impl BdevConfig {
    /// Writes what the config sets into `opts`; what it does not set keeps its value.
    /// (Hot-plug is not an option of the layer: call
    /// [`enable_hotplug`](nvme_bdev::BlockLayer::enable_hotplug) per [`Self::hotplug`].)
    pub fn apply(&self, opts: &mut LayerOptions) {
        opts.mpath = self.mpath;
        if let Some(t) = self.io_timeout_ms {
            opts.qpair.timeout_ms = t;
        }
        if let Some(t) = self.admin_timeout_ms {
            opts.ctrl.admin_timeout_ms = t;
        }
        if let Some(us) = self.admin_poll_us {
            opts.admin_poll_us = us;
        }
    }
}

/// A config that cannot be taken: what is wrong, where, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {}{message}", where_(method, param))]
#[non_exhaustive]
pub struct Error {
    /// The config file's name, as the caller gave it.
    pub path: String,
    /// The method of the entry at fault, if one is.
    pub method: Option<String>,
    /// The parameter at fault, if one is.
    pub param: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

fn where_(method: &Option<String>, param: &Option<String>) -> String {
    match (method, param) {
        (Some(m), Some(p)) => format!("{m} parameter '{p}': "),
        (Some(m), None) => format!("method '{m}': "),
        _ => String::new(),
    }
}

impl Error {
    fn file(path: &str, message: impl Into<String>) -> Error {
        Error {
            path: path.to_string(),
            method: None,
            param: None,
            message: message.into(),
        }
    }
}

/// The methods of the bdev subsystem this reader applies.
const BDEV_METHODS: &str = "bdev_nvme_attach_controller, bdev_nvme_set_options, \
    bdev_nvme_set_multipath_policy, bdev_nvme_set_hotplug, bdev_set_options and \
    bdev_wait_for_examine";

/// Parses `text`, the contents of the config file `path` (used in messages only).
/// The `nvmf` subsystem is accepted and noted, not read: [`parse_target`] reads it.
pub fn parse(text: &str, path: &str) -> Result<BdevConfig, Error> {
    parse_with(text, path, None)
}

/// What an NVMe-oF target's config asks for: the block layer's part and the `nvmf`
/// subsystem's (transport, subsystems, namespaces, listeners, hosts).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetConfig {
    /// The `bdev` subsystem, as [`parse`] reads it.
    pub bdev: BdevConfig,
    /// The `nvmf` subsystem.
    pub nvmf: NvmfConfig,
}

/// Parses a config for `nvme-target` (SPDK's `nvmf_tgt -c`): as [`parse`], and the
/// `nvmf` subsystem's methods too, each refused by name when the target cannot
/// honour it.
pub fn parse_target(text: &str, path: &str) -> Result<TargetConfig, Error> {
    let mut nvmf = NvmfConfig::default();
    let bdev = parse_with(text, path, Some(&mut nvmf))?;
    if nvmf.subsystems.is_empty() {
        return Err(Error::file(
            path,
            "no nvmf_create_subsystem in the \"nvmf\" subsystem: nothing to serve",
        ));
    }
    if nvmf.transports.is_empty() {
        return Err(Error::file(
            path,
            "no nvmf_create_transport with trtype TCP in the \"nvmf\" subsystem",
        ));
    }
    Ok(TargetConfig { bdev, nvmf })
}

fn parse_with(
    text: &str,
    path: &str,
    mut nvmf: Option<&mut NvmfConfig>,
) -> Result<BdevConfig, Error> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
    let subsystems = root
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::file(
                path,
                "no \"subsystems\" array at the top level (SPDK's JSON config format: \
             {\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [...]}]})",
            )
        })?;
    let mut b = bdev_nvme::Builder::default();
    let mut notes = Vec::new();
    for sub in subsystems {
        let name = sub.get("subsystem").and_then(Value::as_str).unwrap_or("");
        let entries = match sub.get("config") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(v) => {
                return Err(Error::file(
                    path,
                    format!("subsystem '{name}': \"config\" is {v}, not an array of methods"),
                ))
            }
        };
        let mut ignored = Vec::new();
        for entry in entries {
            let p = Params::of(entry, path)?;
            if name == "bdev" {
                match p.method {
                    "bdev_nvme_attach_controller" => b.attach(&p)?,
                    "bdev_nvme_set_options" => b.set_options(&p)?,
                    "bdev_nvme_set_multipath_policy" => b.multipath_policy(&p)?,
                    "bdev_nvme_set_hotplug" => b.hotplug(&p)?,
                    "bdev_set_options" => other::bdev_set_options(&p, &mut notes)?,
                    "bdev_wait_for_examine" => {} // attach examines before it returns
                    _ => {
                        return Err(p.refuse(format!(
                            "not implemented; the bdev subsystem's methods read here are {BDEV_METHODS}"
                        )))
                    }
                }
            } else if let (Some(nvmf), "nvmf") = (nvmf.as_deref_mut(), name) {
                nvmf.entry(&p, &mut notes)?;
            } else {
                other::entry(name, &p)?;
                ignored.push(p.method);
            }
        }
        if let Some(note) = other::note(name, &ignored) {
            notes.push(format!("{path}: {note}"));
        }
    }
    let mut cfg = b.finish(path)?;
    notes.append(&mut cfg.notes);
    cfg.notes = notes;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_bdev::Policy;

    fn conf(entries: &str) -> String {
        format!(r#"{{"subsystems":[{{"subsystem":"bdev","config":[{entries}]}}]}}"#)
    }
    const A: &str = r#"{"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0","trtype":"PCIe","traddr":"0000:01:00.0","multipath":"multipath"}}"#;
    const B: &str = r#"{"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0","trtype":"PCIe","traddr":"0000:02:00.0","multipath":"multipath"}}"#;

    #[test]
    fn two_paths_round_robin() {
        let text = conf(&format!(
            r#"{A},{B},{{"method":"bdev_nvme_set_multipath_policy","params":{{"name":"Nvme0n1","policy":"active_active","selector":"round_robin"}}}}"#
        ));
        let c = parse(&text, "bdev.json").unwrap();
        assert_eq!(c.attach.len(), 2);
        assert_eq!(c.attach[1].traddr, "0000:02:00.0");
        assert_eq!(c.mpath.policy, Policy::RoundRobin);
    }

    #[test]
    fn timeouts_map_to_the_layer() {
        let text = conf(&format!(
            r#"{{"method":"bdev_nvme_set_options","params":{{"ctrlr_loss_timeout_sec":10,"reconnect_delay_sec":1,"fast_io_fail_timeout_sec":5,"bdev_retry_count":2}}}},{A}"#
        ));
        let c = parse(&text, "x").unwrap();
        assert_eq!(c.mpath.ctrl_loss_timeout_ms, 10_000);
        assert_eq!(
            c.hotplug, None,
            "not in the config: the caller's default holds"
        );
        assert_eq!(c.mpath.reconnect_delay_ms, 1_000);
        assert_eq!(c.mpath.fast_io_fail_timeout_ms, 5_000);
        assert_eq!(c.mpath.retry_count, 2);
    }

    fn err(text: &str) -> String {
        parse(text, "b.json").unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_method_and_parameter() {
        let e = err(&conf(
            r#"{"method":"bdev_malloc_create","params":{"name":"M0"}}"#,
        ));
        assert!(
            e.contains("method 'bdev_malloc_create': not implemented"),
            "{e}"
        );
        let e = err(&conf(
            r#"{"method":"bdev_nvme_attach_controller","params":{"name":"N","trtype":"tcp","traddr":"127.0.0.1"}}"#,
        ));
        assert!(
            e.contains("bdev_nvme_attach_controller parameter 'trtype'"),
            "{e}"
        );
        let e = err(&conf(
            r#"{"method":"bdev_nvme_attach_controller","params":{"name":"N","trtype":"PCIe","traddr":"0000:01:00.0","hdgst":true}}"#,
        ));
        assert!(e.contains("parameter 'hdgst'"), "{e}");
        let e = err(&conf(&format!(
            r#"{A},{{"method":"bdev_nvme_set_multipath_policy","params":{{"name":"Nvme0n1","policy":"active_active","rr_min_io":8}}}}"#
        )));
        assert!(e.contains("parameter 'rr_min_io'"), "{e}");
        let e = err(&conf(
            r#"{"method":"bdev_nvme_set_options","params":{"bdev_retry_count":-1}}"#,
        ));
        assert!(e.contains("parameter 'bdev_retry_count'"), "{e}");
        let e = err(&conf(
            r#"{"method":"bdev_nvme_attach_controller","params":{"name":"N","trtype":"PCIe","traddr":"0000:01:00.0","multipath":"disable"}},{"method":"bdev_nvme_attach_controller","params":{"name":"N","trtype":"PCIe","traddr":"0000:02:00.0","multipath":"disable"}}"#,
        ));
        assert!(e.contains("already exists"), "{e}");
        let e = err("{");
        assert!(e.contains("not valid JSON"), "{e}");
        let e = err("{}");
        assert!(e.contains("subsystems"), "{e}");
        let e = err(&conf(""));
        assert!(e.contains("no bdev_nvme_attach_controller"), "{e}");
    }
}
