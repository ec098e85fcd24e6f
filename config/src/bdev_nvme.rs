// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The `bdev_nvme_*` methods: controllers, their options, the multipath policy and
//! hot-plug, mapped onto the block layer's and the driver's options.

use crate::params::Params;
use crate::{Attach, BdevConfig, Error, Hotplug, MultipathMode};
use nvme_bdev::layer::PERIOD_MIN_MS;
use nvme_bdev::{MpathOptions, Policy};
use serde_json::Value;

/// "As long as the controller may come back" when it may come back forever: a year.
const FOREVER_MS: u64 = 365 * 24 * 3600 * 1000;

/// Parameters of `bdev_nvme_set_options` and `bdev_nvme_attach_controller` that mean
/// nothing for PCIe controllers (SPDK uses them for TCP and RDMA only): any value.
const FABRICS_ONLY: &[&str] = &[
    "transport_retry_count",
    "transport_ack_timeout",
    "transport_tos",
    "keep_alive_timeout_ms",
];

/// The config read so far.
#[derive(Default)]
pub(crate) struct Builder {
    attach: Vec<Attach>,
    io_timeout_ms: Option<u64>,
    admin_timeout_ms: Option<u64>,
    admin_poll_us: Option<u64>,
    hotplug: Option<Hotplug>,
    timeouts: Timeouts,
    retry_count: Option<u32>,
    /// The policy asked for, and the bdev that asked.
    policy: Option<(Policy, String)>,
}

impl Builder {
    /// `bdev_nvme_attach_controller`.
    pub(crate) fn attach(&mut self, p: &Params) -> Result<(), Error> {
        let name = p.required("name")?.to_string();
        let trtype = p.required("trtype")?;
        if !trtype.eq_ignore_ascii_case("pcie") {
            return Err(p.err(
                "trtype",
                format!("'{trtype}' is not implemented; only PCIe controllers can be attached (give trtype PCIe and the controller's PCI address)"),
            ));
        }
        let raw = p.required("traddr")?;
        let traddr = crate::parse_bdf(raw).ok_or_else(|| {
            p.err(
                "traddr",
                format!("'{raw}' is not a PCI address (DDDD:BB:DD.F)"),
            )
        })?;
        let mode = match p.str("multipath")?.unwrap_or("failover") {
            "disable" => MultipathMode::Disable,
            "failover" => MultipathMode::Failover,
            "multipath" => MultipathMode::Multipath,
            other => {
                return Err(p.err(
                    "multipath",
                    format!("'{other}' is not one of disable, failover, multipath"),
                ))
            }
        };
        if let Some(prev) = self.attach.iter().find(|a| a.name == name) {
            if mode == MultipathMode::Disable || prev.mode == MultipathMode::Disable {
                return Err(p.err("name", format!("a controller named {name} already exists (attach the second path with multipath \"multipath\" or \"failover\" on both)")));
            }
            if prev.mode != mode {
                return Err(p.err(
                    "multipath",
                    format!("{name} was attached with a different multipath mode before"),
                ));
            }
        }
        if self.attach.iter().any(|a| a.traddr == traddr) {
            return Err(p.err("traddr", format!("{traddr} is attached already")));
        }
        self.timeouts.read(p)?;
        let no_pi = "protection information is not implemented (no PI checks or metadata)";
        let pcie = "PCIe controllers have no TCP digests";
        p.check_rest(
            &[
                "name",
                "trtype",
                "traddr",
                "multipath",
                "ctrlr_loss_timeout_sec",
                "reconnect_delay_sec",
                "fast_io_fail_timeout_sec",
                // For PCIe SPDK ignores these too.
                "adrfam",
                "trsvcid",
                "hostaddr",
                "hostsvcid",
                // Bdevs are made for every active namespace; SPDK's limit is 128.
                "max_bdevs",
            ],
            &[
                ("prchk_reftag", Value::Bool(false), no_pi),
                ("prchk_guard", Value::Bool(false), no_pi),
                ("hdgst", Value::Bool(false), pcie),
                ("ddgst", Value::Bool(false), pcie),
                (
                    "num_io_queues",
                    Value::from(1024),
                    "the driver asks each controller for one I/O queue per channel it may open, up to 64",
                ),
                (
                    "priority",
                    Value::from(0),
                    "weighted round robin arbitration is not implemented",
                ),
                (
                    "allow_unrecognized_csi",
                    Value::Bool(false),
                    "only the NVM command set is implemented",
                ),
            ],
        )?;
        self.attach.push(Attach { name, traddr, mode });
        Ok(())
    }

    /// `bdev_nvme_set_options`.
    pub(crate) fn set_options(&mut self, p: &Params) -> Result<(), Error> {
        self.timeouts.read(p)?;
        if let Some(n) = p.int("bdev_retry_count")? {
            if !(0..=255).contains(&n) {
                return Err(p.err(
                    "bdev_retry_count",
                    format!("{n} is not supported; give 0 to 255 (-1, retry forever, is not)"),
                ));
            }
            self.retry_count = Some(n as u32);
        }
        // The driver gives up an expired command with an Abort, then resets the
        // controller (what SPDK's "abort" does when the abort fails; its "reset" resets
        // at once); "none" only logs, which the driver never does.
        let action = p.str("action_on_timeout")?.unwrap_or("none");
        let timeout_us = self.nonneg(p, "timeout_us")?.unwrap_or(0);
        let admin_us = self.nonneg(p, "timeout_admin_us")?.unwrap_or(0);
        match action {
            "none" | "abort" | "reset" => {}
            other => {
                return Err(p.err(
                    "action_on_timeout",
                    format!("'{other}' is not one of none, abort, reset"),
                ))
            }
        }
        if action == "none" && (timeout_us > 0 || admin_us > 0) {
            let key = if timeout_us > 0 {
                "timeout_us"
            } else {
                "timeout_admin_us"
            };
            return Err(p.err(key, "a timeout with action_on_timeout \"none\" (only logged) is not supported: the driver always aborts an expired command, then resets the controller; set action_on_timeout to \"abort\""));
        }
        if timeout_us > 0 {
            self.io_timeout_ms = Some(timeout_us.div_ceil(1000));
        }
        // SPDK: a timeout_admin_us of 0 means the I/O timeout holds for admin commands too.
        let admin_us = if admin_us > 0 { admin_us } else { timeout_us };
        if admin_us > 0 {
            self.admin_timeout_ms = Some(admin_us.div_ceil(1000));
        }
        if let Some(us) = self.nonneg(p, "nvme_adminq_poll_period_us")? {
            if us == 0 {
                return Err(p.err("nvme_adminq_poll_period_us", "0 (poll the admin queue without pause) is not supported: controller threads sleep between their housekeeping passes; give a period in microseconds (SPDK's default is 10000)"));
            }
            self.admin_poll_us = Some(us);
        }
        if let Some(true) = p.bool("disable_auto_failback")? {
            return Err(p.err("disable_auto_failback", "true is not supported: an active_passive bdev goes back to its first path when that path returns; remove it or give false"));
        }
        let wrr = "weighted round robin arbitration is not implemented";
        p.check_rest(
            &[
                "ctrlr_loss_timeout_sec",
                "reconnect_delay_sec",
                "fast_io_fail_timeout_sec",
                "bdev_retry_count",
                "action_on_timeout",
                "timeout_us",
                "timeout_admin_us",
                "nvme_adminq_poll_period_us",
                "disable_auto_failback",
                FABRICS_ONLY[0],
                FABRICS_ONLY[1],
                FABRICS_ONLY[2],
                FABRICS_ONLY[3],
                // Queue pairs here hold their entries plus a pending ring (QpairOptions):
                // no per-queue request pool to size.
                "io_queue_requests",
                // Per-path and per-status counters are always kept (nvme_stats=1 prints them).
                "io_path_stat",
                "nvme_error_stat",
                // Bdevs here are named by the config, not by UUIDs.
                "generate_uuids",
            ],
            &[
                ("arbitration_burst", Value::from(0), wrr),
                ("low_priority_weight", Value::from(0), wrr),
                ("medium_priority_weight", Value::from(0), wrr),
                ("high_priority_weight", Value::from(0), wrr),
                (
                    "nvme_ioq_poll_period_us",
                    Value::from(0),
                    "I/O queues are polled by the caller without pause (fio's getevents, a server's reactor)",
                ),
                (
                    "delay_cmd_submit",
                    Value::Bool(true),
                    "submission doorbells are always written once per batch (per getevents in fio), as SPDK's delay_cmd_submit",
                ),
                (
                    "enable_flush",
                    Value::Bool(false),
                    "not a parameter of SPDK v23.01.1",
                ),
            ],
        )
    }

    /// `bdev_nvme_set_multipath_policy`.
    pub(crate) fn multipath_policy(&mut self, p: &Params) -> Result<(), Error> {
        let bdev = p.required("name")?.to_string();
        let policy = match p.required("policy")? {
            "active_passive" => Policy::ActivePassive,
            "active_active" => match p.str("selector")?.unwrap_or("round_robin") {
                "round_robin" => Policy::RoundRobin,
                "queue_depth" => Policy::LeastQueueDepth,
                other => {
                    return Err(p.err(
                        "selector",
                        format!("'{other}' is not one of round_robin, queue_depth"),
                    ))
                }
            },
            other => {
                return Err(p.err(
                    "policy",
                    format!("'{other}' is not one of active_passive, active_active"),
                ))
            }
        };
        if let Some(n) = p.int("rr_min_io")? {
            if n != 1 {
                return Err(p.err("rr_min_io", format!("{n} is not supported: round robin moves to the next path after every I/O (rr_min_io 1)")));
            }
        }
        p.check_rest(&["name", "policy", "selector", "rr_min_io"], &[])?;
        if let Some((old, old_bdev)) = &self.policy {
            if *old != policy {
                return Err(p.err(
                    "policy",
                    format!("{bdev} asks for {} but {old_bdev} for {}: the block layer runs one policy for every multipath bdev", policy.name(), old.name()),
                ));
            }
        }
        self.policy = Some((policy, bdev));
        Ok(())
    }

    /// `bdev_nvme_set_hotplug`: the block layer's hot-plug scan. Removal is noticed
    /// either way (VFIO's device request interrupt), so a controller that leaves is
    /// released at once with hot-plug on or off; the scan is what attaches controllers
    /// that appear and brings the reconnect of one that returns forward.
    pub(crate) fn hotplug(&mut self, p: &Params) -> Result<(), Error> {
        let enable = p.bool("enable")?.unwrap_or(false);
        // SPDK's default period, NVME_HOTPLUG_POLL_PERIOD_DEFAULT.
        let period_us = self.nonneg(p, "period_us")?.unwrap_or(100_000);
        let period_ms = period_us.div_ceil(1000);
        if enable && period_ms < PERIOD_MIN_MS {
            return Err(p.err(
                "period_us",
                format!("{period_us} is below the shortest scan period here, {} us (each scan lists /sys/bus/pci/devices); give {} or more", PERIOD_MIN_MS * 1000, PERIOD_MIN_MS * 1000),
            ));
        }
        p.check_rest(&["enable", "period_us"], &[])?;
        self.hotplug = Some(Hotplug { enable, period_ms });
        Ok(())
    }

    fn nonneg(&self, p: &Params, key: &str) -> Result<Option<u64>, Error> {
        match p.int(key)? {
            Some(v) if v < 0 => Err(p.err(key, format!("{v} is negative"))),
            v => Ok(v.map(|v| v as u64)),
        }
    }

    /// The config, once every entry is read: the checks that need all of them.
    pub(crate) fn finish(self, path: &str) -> Result<BdevConfig, Error> {
        if self.attach.is_empty() {
            return Err(Error::file(
                path,
                "no bdev_nvme_attach_controller in the bdev subsystem: nothing to run I/O on",
            ));
        }
        let mut mpath = MpathOptions::default();
        // Failover groups are active-passive; a policy for their bdevs must agree.
        let failover = self.attach.iter().any(|a| {
            a.mode == MultipathMode::Failover
                && self.attach.iter().filter(|b| b.name == a.name).count() > 1
        });
        if let Some((pol, bdev)) = self.policy {
            if failover && pol != Policy::ActivePassive {
                return Err(Error {
                    path: path.to_string(),
                    method: Some("bdev_nvme_set_multipath_policy".into()),
                    param: Some("policy".into()),
                    message: format!("{bdev} asks for {} while a controller was attached with multipath \"failover\" (active-passive); attach with multipath \"multipath\" instead", pol.name()),
                });
            }
            mpath.policy = pol;
        }
        if let Some(n) = self.retry_count {
            mpath.retry_count = n;
        }
        self.timeouts
            .apply(&mut mpath)
            .map_err(|m| Error::file(path, m))?;
        mpath
            .validate()
            .map_err(|e| Error::file(path, e.to_string()))?;
        Ok(BdevConfig {
            attach: self.attach,
            mpath,
            io_timeout_ms: self.io_timeout_ms,
            admin_timeout_ms: self.admin_timeout_ms,
            admin_poll_us: self.admin_poll_us,
            hotplug: self.hotplug,
            notes: Vec::new(),
        })
    }
}

/// The loss, reconnect and fast-fail timeouts (seconds), from set_options and from
/// each attach; the block layer has one set for every controller.
#[derive(Default)]
struct Timeouts {
    loss: Option<(i64, String)>,
    reconnect: Option<(i64, String)>,
    fast_fail: Option<(i64, String)>,
}

impl Timeouts {
    fn set(slot: &mut Option<(i64, String)>, v: i64, p: &Params, key: &str) -> Result<(), Error> {
        if let Some((old, from)) = slot {
            if *old != v
                && p.method == "bdev_nvme_attach_controller"
                && from.as_str() != "bdev_nvme_set_options"
            {
                return Err(p.err(key, format!("{v} differs from the {old} another controller asked for; the block layer has one value for every controller: give each controller the same, or set it once in bdev_nvme_set_options")));
            }
        }
        *slot = Some((v, p.method.to_string()));
        Ok(())
    }

    fn read(&mut self, p: &Params) -> Result<(), Error> {
        if let Some(v) = p.int("ctrlr_loss_timeout_sec")? {
            Self::set(&mut self.loss, v, p, "ctrlr_loss_timeout_sec")?;
        }
        if let Some(v) = p.int("reconnect_delay_sec")? {
            Self::set(&mut self.reconnect, v, p, "reconnect_delay_sec")?;
        }
        if let Some(v) = p.int("fast_io_fail_timeout_sec")? {
            Self::set(&mut self.fast_fail, v, p, "fast_io_fail_timeout_sec")?;
        }
        Ok(())
    }

    /// Without any of the three, the block layer's defaults stay (reconnect every 1 s,
    /// give up after 30 s). SPDK's 0 ("never reconnect") is `ctrlr_loss_timeout_sec: 0`.
    fn apply(&self, m: &mut MpathOptions) -> Result<(), String> {
        if self.loss.is_none() && self.reconnect.is_none() && self.fast_fail.is_none() {
            return Ok(());
        }
        let loss = self.loss.as_ref().map_or(0, |v| v.0);
        let reconnect = self.reconnect.as_ref().map_or(0, |v| v.0);
        let fast = self.fast_fail.as_ref().map_or(0, |v| v.0);
        if loss == 0 || reconnect == 0 {
            // SPDK: no reconnect; the paths go at once.
            m.ctrl_loss_timeout_ms = 0;
            m.reconnect_delay_ms = 0;
            m.fast_io_fail_timeout_ms = 0;
            return Ok(());
        }
        m.reconnect_delay_ms = reconnect as u64 * 1000;
        m.ctrl_loss_timeout_ms = if loss < 0 { -1 } else { loss * 1000 };
        // SPDK's fast_io_fail_timeout_sec 0: no fast fail, I/O waits as long as the
        // controller may come back.
        m.fast_io_fail_timeout_ms = if fast > 0 {
            fast as u64 * 1000
        } else if loss < 0 {
            FOREVER_MS
        } else {
            loss as u64 * 1000
        };
        Ok(())
    }
}
