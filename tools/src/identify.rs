// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-identify: what spdk_nvme_identify and `nvme id-ctrl` / `id-ns` show, from
//! one gathering pass into JSON ([`describe`]) and a text rendering of that JSON
//! ([`render`]), so both outputs always say the same thing.

use crate::attach::Target;
use crate::trid::{parse_bdf, TransportId};
use crate::{hex_bytes, usage, UsageError};
use nvme_driver::spec::feature_id;
use nvme_driver::Controller;
use serde_json::{json, Value};
use std::fmt::Write;

mod help;
pub mod nvme_cli;

pub use help::{MANUAL, OPTIONS, USAGE};

/// What nvme-identify prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// spdk_nvme_identify-like text (`-o normal`, the default).
    Text,
    /// nvme-identify's own JSON document (`--json`).
    Json,
    /// nvme-cli's `id-ctrl` / `id-ns` JSON documents (`-o json`).
    NvmeCli,
}

/// nvme-identify's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyOptions {
    /// Controllers (and namespaces) to show; empty: every vfio-bound controller.
    pub trids: Vec<TransportId>,
    /// The output format.
    pub output: Output,
    /// `-x`: hex dumps of the raw Identify data after the text.
    pub hex_dump: bool,
    /// `-L`: the driver's debug messages.
    pub debug_log: bool,
    /// One line each for the options accepted but without effect here.
    pub notes: Vec<String>,
}

/// Why spdk_nvme_identify's `-V` is refused.
const VMD: &str = "-V (enumerate VMD): VMD enumeration is not supported; bind the NVMe controller itself to vfio-pci (nvme-setup bind) and drop -V";
/// Why `-z` is refused.
const ZONES: &str = "-z (zone report): zoned namespaces are not supported by the driver, so there is no zone report; drop -z";
/// Why `-o` without a format is refused.
const OCSSD: &str = "-o without a format is spdk_nvme_identify's Open-Channel SSD flag, and Open-Channel SSDs are not supported; for nvme-cli's JSON give -o json";
/// nvme-cli's `binary` format.
const BINARY: &str =
    "-o binary: raw binary output is not offered; -x prints a hex dump of the raw Identify data";

/// A `-i`, `-p` or `-d` value: a non-negative decimal number, as SPDK requires.
fn spdk_number(opt: char, v: &str, what: &str) -> Result<u64, UsageError> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| usage!("-{opt} {v}: the {what} must be a whole number, 0 or more"))
}

/// `-o` / `--output-format`'s value.
fn output_format(v: &str) -> Result<Output, UsageError> {
    match v {
        "json" => Ok(Output::NvmeCli),
        "normal" => Ok(Output::Text),
        "binary" => Err(usage!("{BINARY}")),
        _ => Err(usage!("-o {v}: unknown output format; use json or normal")),
    }
}

/// Parses nvme-identify's arguments (spdk_nvme_identify's, getopt style: flags may be
/// grouped, a value may follow its letter directly); `Ok(None)` asks for help.
pub fn parse_args<I, S>(args: I) -> Result<Option<IdentifyOptions>, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut o = IdentifyOptions {
        trids: Vec::new(),
        output: Output::Text,
        hex_dump: false,
        debug_log: false,
        notes: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let mut value = |what: &str| -> Result<String, UsageError> {
                if let Some(v) = inline.clone() {
                    return Ok(v);
                }
                let v = args.get(i).ok_or_else(|| usage!("--{name} needs {what}"))?;
                i += 1;
                Ok(v.clone())
            };
            // Only the table's options: --help, the man page and the completion are
            // made of it.
            if !OPTIONS.iter().any(|o| o.long == Some(name)) {
                return Err(usage!("unknown option --{name}"));
            }
            match name {
                "help" => return Ok(None),
                "json" => o.output = Output::Json,
                "transport" => o.trids.push(TransportId::parse(&value("a transport ID")?)?),
                "output-format" => o.output = output_format(&value("a format: json or normal")?)?,
                _ => return Err(usage!("unknown option --{name}")),
            }
            continue;
        }
        let Some(group) = a.strip_prefix('-').filter(|g| !g.is_empty()) else {
            let traddr = parse_bdf(a).ok_or_else(|| {
                usage!("'{a}' is not a PCI address; give DDDD:BB:DD.F like 0000:01:00.0")
            })?;
            o.trids.push(TransportId { traddr, nsid: None });
            continue;
        };
        let chars: Vec<char> = group.chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let ch = chars[k];
            k += 1;
            let rest: String = chars[k..].iter().collect();
            if !OPTIONS.iter().any(|o| o.short == Some(ch)) {
                return Err(usage!("unknown option -{ch}"));
            }
            match ch {
                'h' | 'H' => return Ok(None),
                'x' => o.hex_dump = true,
                'g' => o
                    .notes
                    .push("-g: there are no DPDK memory segments here; ignored".into()),
                'V' => return Err(usage!("{VMD}")),
                'z' => return Err(usage!("{ZONES}")),
                'o' => {
                    // spdk_nvme_identify's -o is a flag (Open-Channel SSDs); nvme-cli's
                    // takes a format. A format word after it decides.
                    let v = if !rest.is_empty() {
                        rest
                    } else {
                        match args.get(i).map(String::as_str) {
                            Some(f @ ("json" | "normal" | "binary")) => {
                                i += 1;
                                f.to_string()
                            }
                            _ => return Err(usage!("{OCSSD}")),
                        }
                    };
                    o.output = output_format(&v)?;
                    break;
                }
                'r' | 'L' | 'i' | 'p' | 'd' => {
                    let v = if !rest.is_empty() {
                        rest
                    } else {
                        let v = args
                            .get(i)
                            .ok_or_else(|| match ch {
                                'r' => usage!("-r needs a transport ID"),
                                _ => usage!("-{ch} needs a value"),
                            })?
                            .clone();
                        i += 1;
                        v
                    };
                    match ch {
                        'r' => o.trids.push(TransportId::parse(&v)?),
                        'L' => {
                            if v.trim().is_empty() {
                                return Err(usage!("-L needs a log flag, e.g. -L nvme"));
                            }
                            o.debug_log = true;
                        }
                        'i' => {
                            let id = spdk_number('i', &v, "shared memory ID")?;
                            o.notes.push(format!(
                                "-i {id}: there is no shared memory here (no secondary processes); ignored"
                            ));
                        }
                        'p' => {
                            let core = spdk_number('p', &v, "core number")?;
                            o.notes.push(format!(
                                "-p {core}: nvme-identify runs on the calling thread and polls only the admin queue; ignored"
                            ));
                        }
                        _ => {
                            let mb = spdk_number('d', &v, "memory size in MB")?;
                            o.notes.push(format!(
                                "-d {mb}: there is no DPDK memory here (nvme-identify maps the few pages it needs through VFIO); ignored"
                            ));
                        }
                    }
                    break;
                }
                _ => return Err(usage!("unknown option -{ch}")),
            }
        }
    }
    if o.hex_dump && o.output != Output::Text {
        o.notes.push(
            "-x: the hex dumps go with the text output (-o normal); ignored with JSON".into(),
        );
    }
    Ok(Some(o))
}

/// Whether nvme-cli mode prints `id-ns` documents for the controller at `traddr`:
/// when every transport ID naming it names a namespace (`ns:`), as `nvme id-ns`
/// names a namespace device; otherwise its `id-ctrl` document.
pub fn namespaces_named(trids: &[TransportId], traddr: &str) -> bool {
    let mine: Vec<_> = trids.iter().filter(|t| t.traddr == traddr).collect();
    !mine.is_empty() && mine.iter().all(|t| t.nsid.is_some())
}

/// The raw Identify data of a controller and its selected namespaces, for `-x` and
/// `-o json`.
#[derive(Debug, Clone)]
pub struct RawIdentify {
    /// Identify Controller (CNS 01h).
    pub ctrl: Vec<u8>,
    /// Identify Namespace (CNS 00h) of each selected namespace, by NSID.
    pub namespaces: Vec<(u32, Vec<u8>)>,
}

/// Reads the raw Identify data of `t` again from the controller.
pub fn read_raw(t: &Target) -> nvme_driver::Result<RawIdentify> {
    use nvme_driver::spec::cns;
    let ctrl = t.ctrl.identify_raw(cns::CONTROLLER, 0)?;
    let namespaces = t
        .nsids
        .iter()
        .map(|&ns| Ok((ns, t.ctrl.identify_raw(cns::NAMESPACE, ns)?)))
        .collect::<nvme_driver::Result<_>>()?;
    Ok(RawIdentify { ctrl, namespaces })
}

/// nvme-cli mode's documents for one controller: its `id-ctrl`, or the `id-ns` of
/// each selected namespace when `namespaces` (see [`namespaces_named`]).
pub fn nvme_cli_documents(raw: &RawIdentify, namespaces: bool) -> Vec<Value> {
    if namespaces {
        raw.namespaces
            .iter()
            .map(|(_, d)| nvme_cli::id_ns(d))
            .collect()
    } else {
        vec![nvme_cli::id_ctrl(&raw.ctrl)]
    }
}

/// `-x`'s text: spdk_nvme_identify's hex dumps of the raw structures.
pub fn render_hex(name: &str, raw: &RawIdentify) -> String {
    let mut out = format!("\nIdentify Controller data of {name} (hex):\n");
    out.push_str(&nvme_cli::hex_dump(&raw.ctrl));
    for (ns, d) in &raw.namespaces {
        let _ = write!(out, "\nIdentify Namespace data of NSID {ns} (hex):\n");
        out.push_str(&nvme_cli::hex_dump(d));
    }
    out
}

/// Optional admin commands, by OACS bit.
const OACS_NAMES: &[(u32, &str)] = &[
    (0, "security send/receive"),
    (1, "format NVM"),
    (2, "firmware download/commit"),
    (3, "namespace management"),
    (4, "device self-test"),
    (5, "directives"),
    (6, "NVMe-MI send/receive"),
    (7, "virtualization management"),
    (8, "doorbell buffer config"),
    (9, "get LBA status"),
];

/// Optional NVM commands and features, by ONCS bit.
const ONCS_NAMES: &[(u32, &str)] = &[
    (0, "compare"),
    (1, "write uncorrectable"),
    (2, "dataset management"),
    (3, "write zeroes"),
    (4, "save/select in features"),
    (5, "reservations"),
    (6, "timestamp"),
    (7, "verify"),
    (8, "copy"),
];

/// The names in `table` whose bit is set in `bits`, in table order.
fn bit_names(bits: u16, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(b, _)| bits >> b & 1 == 1)
        .map(|(_, n)| *n)
        .collect()
}

/// What an optional piece the controller refused shows instead.
fn err_json(e: impl std::fmt::Display) -> Value {
    json!({ "error": e.to_string() })
}

/// Gathers everything about one controller and its selected namespaces. Optional
/// pieces (features, logs) that the controller refuses appear as `{"error": ...}`.
pub fn describe(t: &Target) -> Value {
    let c: &Controller = &t.ctrl;
    let id = c.identify();
    let cap = c.cap();
    let vs = c.version();
    let feature = |fid: u8| c.get_feature(fid, 0).map_err(err_json);
    let queues = match feature(feature_id::NUMBER_OF_QUEUES) {
        Ok(v) => json!({ "sq": (v & 0xffff) + 1, "cq": (v >> 16) + 1 }),
        Err(e) => e,
    };
    let vwc = if id.vwc & 1 == 1 {
        match feature(feature_id::VOLATILE_WRITE_CACHE) {
            Ok(v) => json!({ "present": true, "enabled": v & 1 == 1 }),
            Err(e) => e,
        }
    } else {
        json!({ "present": false })
    };
    let arbitration = match feature(feature_id::ARBITRATION) {
        Ok(v) => json!({
            "burst": if v & 7 == 7 { Value::from("unlimited") } else { Value::from(1u32 << (v & 7)) },
            "low_priority_weight": (v >> 8 & 0xff) + 1,
            "medium_priority_weight": (v >> 16 & 0xff) + 1,
            "high_priority_weight": (v >> 24 & 0xff) + 1,
        }),
        Err(e) => e,
    };
    let temp_threshold = match feature(feature_id::TEMPERATURE_THRESHOLD) {
        Ok(v) => json!({ "kelvin": v & 0xffff, "celsius": (v & 0xffff) as i64 - 273 }),
        Err(e) => e,
    };
    let health = match c.smart_log() {
        Ok(s) => json!({
            "critical_warning": s.critical_warning,
            "temperature_celsius": s.temperature_k as i64 - 273,
            "available_spare_percent": s.available_spare,
            "available_spare_threshold_percent": s.available_spare_threshold,
            "percentage_used": s.percentage_used,
            "data_units_read": s.data_units_read.to_string(),
            "data_units_written": s.data_units_written.to_string(),
            "host_read_commands": s.host_read_commands.to_string(),
            "host_write_commands": s.host_write_commands.to_string(),
            "controller_busy_minutes": s.controller_busy_time.to_string(),
            "power_cycles": s.power_cycles.to_string(),
            "power_on_hours": s.power_on_hours.to_string(),
            "unsafe_shutdowns": s.unsafe_shutdowns.to_string(),
            "media_errors": s.media_errors.to_string(),
            "error_log_entries": s.num_err_log_entries.to_string(),
        }),
        Err(e) => err_json(e),
    };
    let errors = match c.error_log() {
        Ok(list) => {
            let used: Vec<_> = list.iter().filter(|e| e.error_count != 0).collect();
            let latest = used.iter().max_by_key(|e| e.error_count).map(|e| {
                json!({
                    "error_count": e.error_count, "sqid": e.sqid, "cid": e.cid,
                    "status": e.status.to_string(), "lba": e.lba, "nsid": e.nsid,
                })
            });
            json!({ "entries_read": list.len(), "entries_used": used.len(), "latest": latest })
        }
        Err(e) => err_json(e),
    };
    let ana = if id.ana_supported() {
        match c.ana_log() {
            Some(log) => json!({
                "supported": true,
                "transition_time_s": id.anatt,
                "change_count": log.change_count,
                "groups": log.groups.iter().map(|g| json!({
                    "grpid": g.grpid,
                    "state": format!("{:?}", g.state),
                    "nsids": g.nsids,
                })).collect::<Vec<_>>(),
            }),
            None => json!({ "supported": true, "error": "no ANA log read" }),
        }
    } else {
        json!({ "supported": false })
    };
    let namespaces: Vec<Value> = t
        .nsids
        .iter()
        .filter_map(|&nsid| c.namespace(nsid).ok())
        .map(|n| {
            let cur = (n.id.flbas & 0xf) as usize;
            json!({
                "nsid": n.nsid,
                "size_blocks": n.nsze,
                "capacity_blocks": n.id.ncap,
                "utilization_blocks": n.id.nuse,
                "block_size": n.block_size,
                "size_bytes": n.nsze * n.block_size as u64,
                "formats": n.id.lbaf.iter().enumerate().map(|(i, f)| json!({
                    "index": i,
                    "data_size": if f.lbads >= 9 && f.lbads < 32 { 1u64 << f.lbads } else { 0 },
                    "metadata_size": f.ms,
                    "relative_performance": f.rp,
                    "in_use": i == cur,
                })).collect::<Vec<_>>(),
                "nguid": n.nguid().map(|g| hex_bytes(&g)),
                "eui64": n.eui64().map(|g| hex_bytes(&g)),
                "uuid": n.ids.uuid.filter(|u| u.iter().any(|&b| b != 0)).map(|u| hex_bytes(&u)),
                "shared": n.id.nmic & 1 == 1,
                "anagrpid": n.id.anagrpid,
            })
        })
        .collect();
    json!({
        "pci_address": c.name(),
        "identity": {
            "vid": format!("{:#06x}", id.vid),
            "ssvid": format!("{:#06x}", id.ssvid),
            "serial": id.sn,
            "model": id.mn,
            "firmware": id.fr,
            "subnqn": id.subnqn,
            "cntlid": id.cntlid,
            "ieee_oui": format!("{:06x}", id.ieee),
            "version": format!("{}.{}.{}", vs.major(), vs.minor(), vs.tertiary()),
            "multipath_capable": id.cmic & 1 == 1 || id.cmic >> 1 & 1 == 1,
        },
        "capabilities": {
            "cap": format!("{:#018x}", cap.0),
            "mqes_entries": cap.mqes_entries(),
            "contiguous_queues_required": cap.cqr(),
            "timeout_ms": cap.timeout_ms(),
            "doorbell_stride_bytes": 4u32 << cap.dstrd(),
            "nvm_subsystem_reset": cap.nssrs(),
            "mpsmin_bytes": 1u64 << cap.mpsmin_shift(),
            "mpsmax_bytes": 1u64 << cap.mpsmax_shift(),
        },
        "queues": {
            "io_queues_granted": c.io_queues(),
            "number_of_queues_feature": queues,
            "mdts": id.mdts,
            "max_transfer_bytes": c.max_transfer_bytes(),
            "max_outstanding_commands": id.maxcmd,
            "sqes": format!("{}..{}", 1u32 << (id.sqes & 0xf), 1u32 << (id.sqes >> 4)),
            "cqes": format!("{}..{}", 1u32 << (id.cqes & 0xf), 1u32 << (id.cqes >> 4)),
            "async_event_request_limit": id.aerl as u32 + 1,
            "abort_command_limit": id.acl as u32 + 1,
        },
        "admin_commands": bit_names(id.oacs, OACS_NAMES),
        "nvm_commands": bit_names(id.oncs, ONCS_NAMES),
        "features": {
            "volatile_write_cache": vwc,
            "arbitration": arbitration,
            "temperature_threshold": temp_threshold,
        },
        "namespace_count": id.nn,
        "health": health,
        "error_log": errors,
        "ana": ana,
        "namespaces": namespaces,
    })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
            if a.is_empty() {
                "none".into()
            } else {
                a.iter().map(scalar).collect::<Vec<_>>().join(", ")
            }
        }
        other => other.to_string(),
    }
}

fn label(key: &str) -> String {
    let mut s = key.replace('_', " ");
    if let Some(f) = s.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    s
}

fn render_object(out: &mut String, v: &Value, indent: usize) {
    let Value::Object(map) = v else {
        return;
    };
    for (k, val) in map {
        match val {
            Value::Object(_) => {
                let _ = writeln!(out, "{:indent$}{}:", "", label(k));
                render_object(out, val, indent + 2);
            }
            Value::Array(a) if a.iter().any(|x| x.is_object()) => {
                let _ = writeln!(out, "{:indent$}{}:", "", label(k));
                for item in a {
                    let line: Vec<String> = item
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k} {}", scalar(v)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let _ = writeln!(out, "{:w$}- {}", "", line.join(", "), w = indent + 2);
                }
            }
            _ => {
                let w = 34usize.saturating_sub(indent);
                let _ = writeln!(
                    out,
                    "{:indent$}{:<w$} {}",
                    "",
                    format!("{}:", label(k)),
                    scalar(val)
                );
            }
        }
    }
}

/// The text form of [`describe`]'s output, in spdk_nvme_identify's spirit: a
/// section per topic, one `Name: value` line per field.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let rule = "=".repeat(60);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "NVMe Controller at {}",
        v["pci_address"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "{rule}");
    if let Value::Object(map) = v {
        for (k, val) in map {
            if k == "pci_address" || k == "namespaces" {
                continue;
            }
            match val {
                Value::Object(_) => {
                    let _ = writeln!(out, "\n{}", label(k));
                    let _ = writeln!(out, "{}", "-".repeat(label(k).len()));
                    render_object(&mut out, val, 0);
                }
                _ => {
                    let _ = writeln!(out, "\n{:<34} {}", format!("{}:", label(k)), scalar(val));
                }
            }
        }
    }
    for ns in v["namespaces"].as_array().into_iter().flatten() {
        let head = format!("Namespace ID {}", ns["nsid"]);
        let _ = writeln!(out, "\n{head}\n{}", "-".repeat(head.len()));
        let mut ns = ns.clone();
        if let Some(m) = ns.as_object_mut() {
            m.shift_remove("nsid");
        }
        render_object(&mut out, &ns, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::select;
    use nvme_driver::softctrl::{SoftConfig, SoftController};
    use nvme_driver::ControllerOptions;

    #[test]
    fn arguments() {
        let o = parse_args([
            "01:00.0",
            "-r",
            "trtype:PCIe traddr:0000:02:00.0 ns:1",
            "--json",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.trids.len(), 2);
        assert_eq!(o.trids[0].traddr, "0000:01:00.0");
        assert_eq!(o.output, Output::Json);
        assert_eq!(parse_args(["--help"]).unwrap(), None);
        assert!(parse_args(["xyz"])
            .unwrap_err()
            .0
            .contains("'xyz' is not a PCI address"));
        assert!(parse_args(["-r"])
            .unwrap_err()
            .0
            .contains("-r needs a transport ID"));
        assert!(parse_args(["-q"])
            .unwrap_err()
            .0
            .contains("unknown option -q"));
        assert!(parse_args(["-r", "trtype:PCIe"])
            .unwrap_err()
            .0
            .contains("traddr is missing"));
    }

    /// spdk_nvme_identify's options (v23.01.1, examples/nvme/identify/identify.c):
    /// what each does here, one by one.
    #[test]
    fn spdk_identify_options() {
        let parse = |a: &[&str]| parse_args(a.iter().copied()).unwrap().unwrap();
        let err = |a: &[&str]| parse_args(a.iter().copied()).unwrap_err().0;
        // -H is SPDK's help, as -h and --help.
        assert_eq!(parse_args(["-H"]).unwrap(), None);
        assert_eq!(parse_args(["-x", "-H"]).unwrap(), None);
        // -x: hex dumps; grouped with other flags as getopt allows.
        let o = parse(&["-x"]);
        assert!(o.hex_dump && o.notes.is_empty() && o.output == Output::Text);
        assert!(parse(&["-xg"]).hex_dump);
        // -L FLAG: the driver's debug messages; the flag is required.
        assert!(parse(&["-L", "nvme"]).debug_log);
        assert!(parse(&["-Lnvme"]).debug_log);
        assert!(!parse(&[]).debug_log);
        assert!(err(&["-L"]).contains("-L needs a value"));
        // -i, -p, -d, -g: accepted, one note each, values checked as SPDK does.
        let o = parse(&["-i", "0", "-p3", "-d", "256", "-g", "01:00.0"]);
        assert_eq!(o.trids.len(), 1);
        assert_eq!(o.notes.len(), 4, "{:?}", o.notes);
        assert!(o.notes[0].starts_with("-i 0: there is no shared memory here"));
        assert!(o.notes[1].starts_with("-p 3: nvme-identify runs on the calling thread"));
        assert!(o.notes[2].starts_with("-d 256: there is no DPDK memory here"));
        assert!(o.notes[3].starts_with("-g: there are no DPDK memory segments here"));
        assert!(err(&["-i", "-1"]).contains("-i -1: the shared memory ID must be a whole number"));
        assert!(err(&["-p", "x"]).contains("-p x: the core number"));
        assert!(err(&["-d", "1.5"]).contains("-d 1.5: the memory size"));
        // -V, -z and the bare -o (Open-Channel) are refused by name with the reason.
        assert!(err(&["-V"]).contains("-V (enumerate VMD): VMD enumeration is not supported"));
        assert!(err(&["-z"]).contains("-z (zone report): zoned namespaces are not supported"));
        assert!(err(&["-z", "8"]).contains("-z (zone report)"));
        assert!(err(&["-o"]).contains("Open-Channel SSD flag"));
        assert!(err(&["-o", "01:00.0"]).contains("Open-Channel SSD flag"));
        // nvme-cli's -o / --output-format.
        assert_eq!(parse(&["-o", "json"]).output, Output::NvmeCli);
        assert_eq!(parse(&["-ojson"]).output, Output::NvmeCli);
        assert_eq!(parse(&["--output-format", "json"]).output, Output::NvmeCli);
        assert_eq!(parse(&["--output-format=json"]).output, Output::NvmeCli);
        assert_eq!(parse(&["--json", "-o", "normal"]).output, Output::Text);
        assert_eq!(parse(&["-o", "json", "--json"]).output, Output::Json);
        assert!(err(&["-o", "binary"]).contains("-o binary: raw binary output is not offered"));
        assert!(err(&["--output-format=yaml"]).contains("-o yaml: unknown output format"));
        // -x with JSON: a note that the dumps belong to the text.
        let o = parse(&["-x", "-o", "json"]);
        assert_eq!(
            o.notes,
            ["-x: the hex dumps go with the text output (-o normal); ignored with JSON"]
        );
        // Still unknown: a letter spdk_nvme_identify does not have either.
        assert!(err(&["-q"]).contains("unknown option -q"));
        assert!(err(&["--frobnicate"]).contains("unknown option --frobnicate"));
    }

    #[test]
    fn nvme_cli_mode_prints_id_ns_only_for_named_namespaces() {
        let t = |s: &str| TransportId::parse(s).unwrap();
        let a = "0000:01:00.0";
        assert!(!namespaces_named(&[], a));
        assert!(!namespaces_named(&[t("traddr:01:00.0")], a));
        assert!(namespaces_named(&[t("traddr:01:00.0 ns:1")], a));
        assert!(!namespaces_named(
            &[t("traddr:01:00.0 ns:1"), t("traddr:01:00.0")],
            a
        ));
        assert!(!namespaces_named(&[t("traddr:02:00.0 ns:1")], a));
    }

    /// `-o json` against the software controller: nvme-cli's keys with the values the
    /// controller reports, numbers as numbers, strings trimmed; `-x`'s dumps.
    #[test]
    fn nvme_cli_json_and_hex_dump_of_the_software_controller() {
        let sc = SoftController::start(SoftConfig::default());
        let ctrl = Controller::init(sc.clone(), ControllerOptions::default()).unwrap();
        let t = select(ctrl, None).unwrap();
        let raw = read_raw(&t).unwrap();
        let docs = nvme_cli_documents(&raw, false);
        assert_eq!(docs.len(), 1);
        let c = &docs[0];
        let id = t.ctrl.identify();
        assert_eq!(c["vid"], id.vid, "{c}");
        assert_eq!(c["ssvid"], id.ssvid, "{c}");
        assert_eq!(c["sn"], "SOFT0001", "{c}");
        assert_eq!(c["mn"], id.mn.as_str(), "{c}");
        assert_eq!(c["fr"], id.fr.as_str(), "{c}");
        assert_eq!(c["subnqn"], "nqn.2024-01.org.nvme-driver:soft0", "{c}");
        for (k, want) in [
            ("rab", id.rab as u64),
            ("ieee", id.ieee as u64),
            ("cmic", id.cmic as u64),
            ("mdts", id.mdts as u64),
            ("cntlid", id.cntlid as u64),
            ("ver", id.ver as u64),
            ("oacs", id.oacs as u64),
            ("acl", id.acl as u64),
            ("aerl", id.aerl as u64),
            ("lpa", id.lpa as u64),
            ("elpe", id.elpe as u64),
            ("npss", id.npss as u64),
            ("sqes", id.sqes as u64),
            ("cqes", id.cqes as u64),
            ("nn", id.nn as u64),
            ("oncs", id.oncs as u64),
            ("vwc", id.vwc as u64),
            ("sgls", id.sgls as u64),
        ] {
            assert_eq!(c[k].as_u64(), Some(want), "{k}: {c}");
        }
        assert!(c["frmw"].is_u64(), "{c}");
        let docs = nvme_cli_documents(&raw, true);
        assert_eq!(docs.len(), t.nsids.len());
        let n = &docs[0];
        let ns = t.ctrl.namespace(t.nsids[0]).unwrap();
        assert_eq!(n["nsze"], ns.id.nsze, "{n}");
        assert_eq!(n["ncap"], ns.id.ncap, "{n}");
        assert_eq!(n["nuse"], ns.id.nuse, "{n}");
        assert_eq!(n["nsfeat"], ns.id.nsfeat, "{n}");
        assert_eq!(n["nlbaf"], ns.id.nlbaf, "{n}");
        assert_eq!(n["flbas"], ns.id.flbas, "{n}");
        let lbafs = n["lbafs"].as_array().unwrap();
        assert_eq!(lbafs.len(), ns.id.nlbaf as usize + 1, "{n}");
        assert_eq!(
            lbafs[0],
            serde_json::json!({"ms": 0, "ds": 9, "rp": 0}),
            "{n}"
        );
        let hex = render_hex(t.ctrl.name(), &raw);
        assert!(
            hex.contains("Identify Controller data of softnvme0 (hex):\n00000000: 36 1B F4 1A"),
            "{hex}"
        );
        assert!(
            hex.contains("Identify Namespace data of NSID 1 (hex):\n"),
            "{hex}"
        );
        // 256 lines of 16 bytes per structure.
        assert_eq!(
            hex.lines()
                .filter(|l| l.len() > 9 && l.as_bytes()[8] == b':')
                .count(),
            256 * (1 + t.nsids.len())
        );
        t.ctrl.shutdown().unwrap();
        sc.stop();
    }

    #[test]
    fn describes_the_software_controller() {
        let sc = SoftController::start(SoftConfig::default());
        let ctrl = Controller::init(sc.clone(), ControllerOptions::default()).unwrap();
        let t = select(ctrl, None).unwrap();
        let v = describe(&t);
        assert_eq!(v["identity"]["serial"], "SOFT0001");
        assert_eq!(v["capabilities"]["mqes_entries"], 1024);
        assert_eq!(v["queues"]["max_transfer_bytes"], 128 << 10);
        assert_eq!(v["namespaces"][0]["block_size"], 512);
        assert_eq!(v["namespaces"][0]["size_bytes"], 1u64 << 30);
        assert!(
            v["health"]["temperature_celsius"].is_i64(),
            "{}",
            v["health"]
        );
        let text = render(&v);
        assert!(text.contains("NVMe Controller at softnvme0"));
        assert!(text.contains("Serial:"), "{text}");
        assert!(
            text.contains("\nMqes entries:                      1024\n"),
            "{text}"
        );
        assert!(text.contains("Namespace ID 1"));
        assert!(text.contains("- index 0, data_size 512"), "{text}");
        t.ctrl.shutdown().unwrap();
        sc.stop();
    }

    /// Every option in the table parses (none is "unknown"), every letter not in it is
    /// unknown, and each option is in the man page (rendered without warnings), the
    /// bash completion (loaded by bash) and `--help`.
    #[test]
    fn every_option_is_parsed_and_documented() {
        let mut accepted = Vec::new();
        for o in OPTIONS {
            for name in o.names() {
                let mut args = vec![name.clone()];
                if o.value.is_some() {
                    args.push("json".into());
                }
                if let Err(e) = parse_args(args) {
                    assert!(!e.0.contains("unknown option"), "{name}: {e}");
                }
                accepted.push(name);
            }
        }
        for c in ('a'..='z').chain('A'..='Z') {
            let known = OPTIONS.iter().any(|o| o.short == Some(c));
            let unknown = parse_args([format!("-{c}"), "0".into()])
                .is_err_and(|e| e.0.contains(&format!("unknown option -{c}")));
            assert_eq!(
                known, !unknown,
                "-{c}: in the table {known}, parsed {}",
                !unknown
            );
        }
        assert!(parse_args(["--no-such-option"])
            .unwrap_err()
            .0
            .contains("unknown option --no-such-option"));
        crate::manual::check::documents(&MANUAL, &accepted);
        let offered = crate::manual::check::bash_offers(&MANUAL, &["-o", ""]);
        assert_eq!(offered, ["json", "normal"]);
    }
}
