// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme-target -c CONFIG.json [-m CORE_MASK]`: an NVMe/TCP target in the manner of
//! SPDK's `nvmf_tgt`. It attaches the controllers of the config's `bdev` subsystem
//! through the block layer (the multipath bdev of controllers attached under one
//! name), and serves the `nvmf` subsystem's NVM subsystems over TCP: a reactor per
//! core of the mask polls the connections it was given; this thread accepts them
//! (non-blocking listeners) and hands each to a reactor, round robin.
//!
//! SIGINT / SIGTERM: stop accepting, let every connection finish the commands it has
//! in the block layer and send what is queued, then shut the block layer down (each
//! backing controller gets the shutdown notification); exit 0.

use nvme_bdev::{vfio_connector, BlockLayer, LayerOptions};
use nvme_spdk_config::{MultipathMode, TargetConfig};
use nvme_target::subsystem::{NsEntry, Subsystem};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const USAGE: &str = "usage: nvme-target -c CONFIG.json [-m CORE_MASK]

Serves the bdevs of an SPDK JSON config (the bdev and nvmf subsystems, as
nvmf_tgt -c reads them) over NVMe/TCP. -m: the cores of the reactors that poll
the connections (a hex mask as SPDK's, default 0x1). Stop with SIGINT or SIGTERM.";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe;
        // the handler is a plain `extern "C" fn` that lives for the whole process.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("nvme-target: {msg}");
    std::process::exit(1);
}

fn main() {
    nvme_tools::logger::install_stderr_logger();
    let (mut config, mut mask) = (None, String::from("0x1"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" | "--json" => config = args.next(),
            "-m" | "--cpumask" => mask = args.next().unwrap_or_default(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => {
                eprintln!("nvme-target: unknown argument {a}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let Some(path) = config else {
        eprintln!("nvme-target: -c CONFIG.json is required\n{USAGE}");
        std::process::exit(2);
    };
    let cores = nvme_tools::cores::parse_core_mask(&mask, &nvme_tools::cores::available_cores())
        .unwrap_or_else(|e| {
            eprintln!("nvme-target: -m {mask}: {}", e.0);
            std::process::exit(2);
        });
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| fail(format!("cannot read {path}: {e}")));
    let cfg = nvme_spdk_config::parse_target(&text, &path).unwrap_or_else(|e| fail(e));
    for n in &cfg.bdev.notes {
        eprintln!("nvme-target: {n}");
    }
    install_signal_handlers();
    if let Err(e) = serve(&cfg, &cores) {
        fail(e);
    }
}

/// SPDK's bdev names (`Nvme0n1`) and the layer's bdev for each.
fn attach(layer: &BlockLayer, cfg: &TargetConfig) -> Result<Vec<(String, String)>, String> {
    let mut names: Vec<(String, String)> = Vec::new();
    for a in &cfg.bdev.attach {
        let got = layer
            .attach(&a.traddr, vfio_connector(&a.traddr))
            .map_err(|e| format!("bdev_nvme_attach_controller {} ({}): {e}", a.name, a.traddr))?;
        // Per namespace: its namespace bdev "<traddr>n<nsid>", then its multipath bdev.
        for pair in got.chunks(2) {
            let [ns_bdev, mp_bdev] = pair else { continue };
            let nsid = ns_bdev.rsplit('n').next().unwrap_or("?");
            let spdk = format!("{}n{nsid}", a.name);
            let layer_name = match a.mode {
                MultipathMode::Disable => ns_bdev.clone(),
                _ => mp_bdev.clone(),
            };
            if !names.iter().any(|(s, _)| *s == spdk) {
                names.push((spdk, layer_name));
            }
        }
    }
    Ok(names)
}

/// A stable UUID for a namespace that has no identifier of its own (QEMU's shared
/// namespaces have none), from the subsystem NQN and NSID: a host sees the same one
/// on every connection and every run (RFC 4122 version 4 layout, FNV-1a bits).
fn derived_uuid(nqn: &str, nsid: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [
        (0usize, 0xcbf2_9ce4_8422_2325u64),
        (8, 0x6c62_272e_07bb_0142),
    ] {
        let mut h = seed;
        for b in nqn.bytes().chain(nsid.to_le_bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        out[half..half + 8].copy_from_slice(&h.to_be_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

fn serve(cfg: &TargetConfig, cores: &[usize]) -> Result<(), String> {
    let mut opts = LayerOptions::default();
    cfg.bdev.apply(&mut opts);
    let layer = BlockLayer::new(opts).map_err(|e| e.to_string())?;
    if let Some(h) = cfg.bdev.hotplug.filter(|h| h.enable) {
        layer
            .enable_hotplug(Arc::new(nvme_bdev::layer::VfioHotplug), h.period_ms)
            .map_err(|e| e.to_string())?;
    }
    let names = attach(&layer, cfg)?;
    let c2h_success = cfg.nvmf.transports.iter().all(|t| t.c2h_success);

    // The subsystems and, per listen address, the subsystems served there.
    let mut subsystems = Vec::new();
    for s in &cfg.nvmf.subsystems {
        let mut namespaces = Vec::new();
        for ns in &s.namespaces {
            let layer_name = names
                .iter()
                .find(|(spdk, _)| *spdk == ns.bdev_name)
                .map(|(_, l)| l.clone())
                .ok_or_else(|| {
                    let known: Vec<&str> = names.iter().map(|(s, _)| s.as_str()).collect();
                    format!(
                        "nvmf_subsystem_add_ns {}: no bdev {} (the config's bdevs: {})",
                        s.nqn,
                        ns.bdev_name,
                        known.join(", ")
                    )
                })?;
            let bdev = layer.open(&layer_name).map_err(|e| e.to_string())?;
            let info = bdev.info().clone();
            let nsid = ns.nsid.unwrap_or_else(|| {
                (1..)
                    .find(|n| {
                        !namespaces.iter().any(|e: &NsEntry| e.nsid == *n)
                            && !s.namespaces.iter().any(|x| x.nsid == Some(*n))
                    })
                    .unwrap_or(1)
            });
            let nguid = ns.nguid.or(info.nguid);
            let uuid = ns
                .uuid
                .or(info.uuid)
                .or_else(|| nguid.is_none().then(|| derived_uuid(&s.nqn, nsid)));
            println!(
                "nvme-target: {} namespace {nsid}: bdev {} ({}), {} blocks of {} bytes",
                s.nqn,
                ns.bdev_name,
                layer_name,
                bdev.num_blocks(),
                bdev.block_size()
            );
            namespaces.push(NsEntry {
                nsid,
                block_size: bdev.block_size(),
                bdev,
                bdev_name: ns.bdev_name.clone(),
                nguid,
                uuid,
            });
        }
        subsystems.push(Arc::new(Subsystem::new(
            s.nqn.clone(),
            s.serial_number.clone(),
            s.model_number.clone(),
            s.allow_any_host,
            s.hosts.clone(),
            namespaces,
            c2h_success,
        )));
    }
    let mut listeners: Vec<(TcpListener, Vec<Arc<Subsystem>>)> = Vec::new();
    for (s, sub) in cfg.nvmf.subsystems.iter().zip(&subsystems) {
        for l in &s.listeners {
            let addr = format!("{}:{}", l.traddr, l.trsvcid);
            if let Some(i) = listeners
                .iter()
                .position(|(t, _)| t.local_addr().is_ok_and(|a| a.to_string() == addr))
            {
                listeners[i].1.push(sub.clone());
                continue;
            }
            let t = TcpListener::bind(&addr).map_err(|e| {
                format!(
                    "nvmf_subsystem_add_listener {}: cannot listen on {addr}: {e}",
                    s.nqn
                )
            })?;
            t.set_nonblocking(true).map_err(|e| e.to_string())?;
            println!("nvme-target: listening on {addr} (TCP) for {}", s.nqn);
            listeners.push((t, vec![sub.clone()]));
        }
    }
    if listeners.is_empty() {
        return Err("no nvmf_subsystem_add_listener: nothing to listen on".into());
    }

    let result = nvme_target::server::run(&layer, listeners, cores, &STOP);
    drop(subsystems);
    layer.shutdown();
    println!("nvme-target: block layer shut down (shutdown notification sent to each controller)");
    result
}

#[cfg(test)]
mod tests {
    use super::derived_uuid;

    #[test]
    fn derived_uuid_is_stable_and_version_4() {
        let a = derived_uuid("nqn.x", 1);
        assert_eq!(a, derived_uuid("nqn.x", 1));
        assert_ne!(a, derived_uuid("nqn.x", 2));
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
    }
}
