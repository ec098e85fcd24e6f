//! The `spdk_bdev` engine's configuration: SPDK's JSON config format, as
//! `spdk_json_conf` names it:
//!
//! ```json
//! {"subsystems": [{"subsystem": "bdev", "config": [
//!   {"method": "bdev_nvme_set_options", "params": {"bdev_retry_count": 3}},
//!   {"method": "bdev_nvme_attach_controller",
//!    "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "0000:01:00.0", "multipath": "multipath"}},
//!   {"method": "bdev_nvme_attach_controller",
//!    "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "0000:02:00.0", "multipath": "multipath"}},
//!   {"method": "bdev_nvme_set_multipath_policy",
//!    "params": {"name": "Nvme0n1", "policy": "active_active", "selector": "round_robin"}}]}]}
//! ```
//!
//! Controllers attached under one `name` are the paths of that name's bdevs
//! (`Nvme0n1`, ...). What the config asks for and this project cannot do is refused,
//! naming the method and the parameter; parameters at SPDK's defaults are accepted.

use nvme_bdev::{MpathOptions, Policy};
use serde_json::{Map, Value};

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

/// What the config asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct BdevConfig {
    /// Controllers, in the config's order.
    pub attach: Vec<Attach>,
    /// Multipath behaviour (policy, retries, loss and reconnect timeouts).
    pub mpath: MpathOptions,
    /// Per-command timeout, when `bdev_nvme_set_options` sets `timeout_us`.
    pub timeout_ms: Option<u64>,
    /// Lines worth telling the user (subsystems that were skipped).
    pub notes: Vec<String>,
}

/// "As long as the controller may come back" when it may come back forever: a year.
const FOREVER_MS: u64 = 365 * 24 * 3600 * 1000;

const METHODS: &str = "bdev_nvme_attach_controller, bdev_nvme_set_options, \
                       bdev_nvme_set_multipath_policy and bdev_wait_for_examine";

/// Parses `text`, the contents of the file `path`.
pub fn parse(text: &str, path: &str) -> Result<BdevConfig, String> {
    let fail = |m: String| format!("spdk_bdev: {path}: {m}");
    let root: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let subsystems = root
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("no \"subsystems\" array at the top level (SPDK's JSON config format: {\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [...]}]})".into()))?;
    let mut cfg = BdevConfig {
        attach: Vec::new(),
        mpath: MpathOptions::default(),
        timeout_ms: None,
        notes: Vec::new(),
    };
    let mut timeouts = Timeouts::default();
    let mut policy: Option<(Policy, String)> = None;
    for sub in subsystems {
        let name = sub.get("subsystem").and_then(Value::as_str).unwrap_or("");
        let config = sub.get("config").and_then(Value::as_array);
        if name != "bdev" {
            if config.is_some_and(|c| !c.is_empty()) {
                cfg.notes.push(format!(
                    "spdk_bdev: {path}: subsystem '{name}' skipped (only the bdev subsystem is read)"
                ));
            }
            continue;
        }
        for entry in config.into_iter().flatten() {
            let method = entry.get("method").and_then(Value::as_str).unwrap_or("");
            let empty = Map::new();
            let params = entry
                .get("params")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let p = Params {
                method,
                params,
                path,
            };
            match method {
                "bdev_nvme_attach_controller" => {
                    cfg.attach.push(attach(&p, &cfg.attach, &mut timeouts)?);
                }
                "bdev_nvme_set_options" => set_options(&p, &mut cfg, &mut timeouts)?,
                "bdev_nvme_set_multipath_policy" => {
                    let (pol, bdev) = multipath_policy(&p)?;
                    if let Some((old, old_bdev)) = &policy {
                        if *old != pol {
                            return Err(p.err(
                                "policy",
                                &format!("{bdev} asks for {} but {old_bdev} for {}: the block layer runs one policy for every multipath bdev", pol.name(), old.name()),
                            ));
                        }
                    }
                    policy = Some((pol, bdev));
                }
                "bdev_wait_for_examine" => {} // attach examines synchronously
                "" => return Err(fail("a bdev config entry has no \"method\"".into())),
                other => {
                    return Err(fail(format!(
                        "method '{other}' is not implemented; this engine reads {METHODS}"
                    )))
                }
            }
        }
    }
    if cfg.attach.is_empty() {
        return Err(fail(
            "no bdev_nvme_attach_controller in the bdev subsystem: nothing to run I/O on".into(),
        ));
    }
    // Failover groups are active-passive; a policy for their bdevs must agree.
    let failover = cfg.attach.iter().any(|a| {
        a.mode == MultipathMode::Failover
            && cfg.attach.iter().filter(|b| b.name == a.name).count() > 1
    });
    if let Some((pol, bdev)) = policy {
        if failover && pol != Policy::ActivePassive {
            return Err(fail(format!(
                "bdev_nvme_set_multipath_policy: {bdev} asks for {} while a controller was attached with multipath \"failover\" (active-passive); attach with multipath \"multipath\" instead",
                pol.name()
            )));
        }
        cfg.mpath.policy = pol;
    }
    timeouts.apply(&mut cfg.mpath).map_err(fail)?;
    cfg.mpath.validate().map_err(|e| fail(e.to_string()))?;
    Ok(cfg)
}

struct Params<'a> {
    method: &'a str,
    params: &'a Map<String, Value>,
    path: &'a str,
}

impl Params<'_> {
    fn err(&self, param: &str, why: &str) -> String {
        format!(
            "spdk_bdev: {}: {} parameter '{param}': {why}",
            self.path, self.method
        )
    }
    fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, &format!("expected a string, found {v}"))),
        }
    }
    fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, &format!("expected an integer, found {v}"))),
        }
    }
    fn required(&self, key: &str) -> Result<&str, String> {
        self.str(key)?
            .ok_or_else(|| self.err(key, "missing (it is required)"))
    }
    /// Parameters this engine does not implement: accepted at SPDK's default value
    /// (`defaults`), refused otherwise. Parameters not listed anywhere are refused.
    fn check_rest(&self, known: &[&str], defaults: &[(&str, Value)]) -> Result<(), String> {
        for (k, v) in self.params {
            if known.contains(&k.as_str()) {
                continue;
            }
            match defaults.iter().find(|(d, _)| d == k) {
                Some((_, def)) if def == v || v.is_null() => {}
                Some((_, def)) => {
                    return Err(self.err(
                        k,
                        &format!("{v} is not supported (only SPDK's default, {def}, is)"),
                    ))
                }
                None => return Err(self.err(k, "not supported by this engine; remove it")),
            }
        }
        Ok(())
    }
}

/// The loss, reconnect and fast-fail timeouts (seconds), from set_options and from
/// each attach; the block layer has one set for every controller.
#[derive(Default)]
struct Timeouts {
    loss: Option<(i64, String)>,
    reconnect: Option<(i64, String)>,
    fast_fail: Option<(i64, String)>,
    retry_count: Option<i64>,
}

impl Timeouts {
    fn set(slot: &mut Option<(i64, String)>, v: i64, p: &Params, key: &str) -> Result<(), String> {
        if let Some((old, from)) = slot {
            if *old != v
                && p.method == "bdev_nvme_attach_controller"
                && from.as_str() != "bdev_nvme_set_options"
            {
                return Err(p.err(key, &format!("{v} differs from the {old} another controller asked for; the block layer has one value for every controller")));
            }
        }
        *slot = Some((v, p.method.to_string()));
        Ok(())
    }
    fn read(&mut self, p: &Params) -> Result<(), String> {
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
        if let Some(n) = self.retry_count {
            m.retry_count = n as u32;
        }
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

fn attach(p: &Params, earlier: &[Attach], t: &mut Timeouts) -> Result<Attach, String> {
    let name = p.required("name")?.to_string();
    let trtype = p.required("trtype")?;
    if !trtype.eq_ignore_ascii_case("pcie") {
        return Err(p.err(
            "trtype",
            &format!("'{trtype}' is not implemented; only PCIe controllers can be attached"),
        ));
    }
    let raw = p.required("traddr")?;
    let traddr = nvme_tools::trid::parse_bdf(raw).ok_or_else(|| {
        p.err(
            "traddr",
            &format!("'{raw}' is not a PCI address (DDDD:BB:DD.F)"),
        )
    })?;
    let mode = match p.str("multipath")?.unwrap_or("failover") {
        "disable" => MultipathMode::Disable,
        "failover" => MultipathMode::Failover,
        "multipath" => MultipathMode::Multipath,
        other => {
            return Err(p.err(
                "multipath",
                &format!("'{other}' is not one of disable, failover, multipath"),
            ))
        }
    };
    if let Some(prev) = earlier.iter().find(|a| a.name == name) {
        if mode == MultipathMode::Disable || prev.mode == MultipathMode::Disable {
            return Err(p.err("name", &format!("a controller named {name} already exists (attach the second path with multipath \"multipath\" or \"failover\" on both)")));
        }
        if prev.mode != mode {
            return Err(p.err(
                "multipath",
                &format!("{name} was attached with a different multipath mode before"),
            ));
        }
    }
    if earlier.iter().any(|a| a.traddr == traddr) {
        return Err(p.err("traddr", &format!("{traddr} is attached already")));
    }
    t.read(p)?;
    p.check_rest(
        &[
            "name",
            "trtype",
            "traddr",
            "multipath",
            "ctrlr_loss_timeout_sec",
            "reconnect_delay_sec",
            "fast_io_fail_timeout_sec",
        ],
        &[
            ("adrfam", Value::Null),
            ("prchk_reftag", Value::Bool(false)),
            ("prchk_guard", Value::Bool(false)),
            ("hdgst", Value::Bool(false)),
            ("ddgst", Value::Bool(false)),
            ("num_io_queues", Value::from(1024)),
            ("max_bdevs", Value::from(128)),
            ("priority", Value::from(0)),
            ("allow_unrecognized_csi", Value::Bool(false)),
        ],
    )?;
    Ok(Attach { name, traddr, mode })
}

fn set_options(p: &Params, cfg: &mut BdevConfig, t: &mut Timeouts) -> Result<(), String> {
    t.read(p)?;
    if let Some(n) = p.int("bdev_retry_count")? {
        if !(0..=255).contains(&n) {
            return Err(p.err(
                "bdev_retry_count",
                &format!("{n} is not supported; give 0 to 255 (-1, retry forever, is not)"),
            ));
        }
        t.retry_count = Some(n);
    }
    let action = p.str("action_on_timeout")?.unwrap_or("none");
    let timeout_us = p.int("timeout_us")?.unwrap_or(0);
    match (action, timeout_us) {
        (_, 0) => {}
        ("abort" | "reset", us) if us > 0 => cfg.timeout_ms = Some((us as u64).div_ceil(1000)),
        ("none", _) => return Err(p.err("timeout_us", "a timeout with action_on_timeout \"none\" (only logged) is not supported: the driver always aborts an expired command, then resets the controller; set action_on_timeout to \"abort\"")),
        (other, _) => return Err(p.err("action_on_timeout", &format!("'{other}' is not one of none, abort, reset"))),
    }
    p.check_rest(
        &[
            "ctrlr_loss_timeout_sec",
            "reconnect_delay_sec",
            "fast_io_fail_timeout_sec",
            "bdev_retry_count",
            "action_on_timeout",
            "timeout_us",
        ],
        &[
            ("timeout_admin_us", Value::from(0)),
            ("keep_alive_timeout_ms", Value::from(10000)),
            ("transport_retry_count", Value::from(4)),
            ("arbitration_burst", Value::from(0)),
            ("low_priority_weight", Value::from(0)),
            ("medium_priority_weight", Value::from(0)),
            ("high_priority_weight", Value::from(0)),
            ("nvme_adminq_poll_period_us", Value::from(10000)),
            ("nvme_ioq_poll_period_us", Value::from(0)),
            ("io_queue_requests", Value::from(0)),
            ("delay_cmd_submit", Value::Bool(true)),
            ("generate_uuids", Value::Bool(false)),
            ("transport_tos", Value::from(0)),
            ("nvme_error_stat", Value::Bool(false)),
            ("io_path_stat", Value::Bool(false)),
            ("disable_auto_failback", Value::Bool(false)),
            ("enable_flush", Value::Bool(false)),
        ],
    )
}

fn multipath_policy(p: &Params) -> Result<(Policy, String), String> {
    let bdev = p.required("name")?.to_string();
    let policy = match p.required("policy")? {
        "active_passive" => Policy::ActivePassive,
        "active_active" => match p.str("selector")?.unwrap_or("round_robin") {
            "round_robin" => Policy::RoundRobin,
            "queue_depth" => Policy::LeastQueueDepth,
            other => {
                return Err(p.err(
                    "selector",
                    &format!("'{other}' is not one of round_robin, queue_depth"),
                ))
            }
        },
        other => {
            return Err(p.err(
                "policy",
                &format!("'{other}' is not one of active_passive, active_active"),
            ))
        }
    };
    if let Some(n) = p.int("rr_min_io")? {
        if n != 1 {
            return Err(p.err("rr_min_io", &format!("{n} is not supported: round robin moves to the next path after every I/O (rr_min_io 1)")));
        }
    }
    p.check_rest(&["name", "policy", "selector", "rr_min_io"], &[])?;
    Ok((policy, bdev))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.mpath.reconnect_delay_ms, 1_000);
        assert_eq!(c.mpath.fast_io_fail_timeout_ms, 5_000);
        assert_eq!(c.mpath.retry_count, 2);
    }

    fn err(text: &str) -> String {
        parse(text, "b.json").unwrap_err()
    }

    #[test]
    fn refusals_name_method_and_parameter() {
        let e = err(&conf(
            r#"{"method":"bdev_malloc_create","params":{"name":"M0"}}"#,
        ));
        assert!(
            e.contains("method 'bdev_malloc_create' is not implemented"),
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
