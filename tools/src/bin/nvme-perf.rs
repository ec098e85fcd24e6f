// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf: spdk_nvme_perf's options and output over the polled userspace driver.
//! See tools/README.md.

use nvme_tools::attach::{self, OpenError};
use nvme_tools::perf::{self, opts, report};
use nvme_tools::{exit_failure, exit_usage, EXIT_FAILURE};

const PROG: &str = "nvme-perf";

fn main() {
    nvme_tools::logger::install_stderr_logger();
    opts::MANUAL.serve();
    let cores = nvme_tools::cores::available_cores();
    let opts = match opts::parse_args(std::env::args().skip(1), &cores) {
        Ok(opts::Command::Run(o)) => o,
        Ok(opts::Command::Help) => {
            println!("{}\n\n{}", opts::USAGE, opts::MANUAL.help());
            return;
        }
        Err(e) => exit_usage(PROG, &e),
    };
    if opts.debug_log {
        nvme_tools::logger::enable_debug();
    }
    // With --json, stdout carries only the document; the narration goes to stderr.
    let json = opts.json;
    let say = |s: String| {
        if json {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    for n in opts.notes() {
        say(n);
    }
    let wanted = match attach::allow(&opts.trids, &opts.allowed_pci, &mut |s| say(s)) {
        Ok(w) => w,
        Err(e) => exit_failure(PROG, e),
    };
    if let Some(policy) = opts.multipath {
        run_multipath(&opts, &wanted, policy, &say);
        return;
    }
    say("Initializing NVMe Controllers".into());
    let copts = nvme_driver::ControllerOptions {
        enable_sgl: !opts.no_sgl,
        shadow_doorbells: !opts.no_shadow_doorbells,
        ..Default::default()
    };
    let targets = match attach::open_pcie(&wanted, &copts) {
        Ok(t) => t,
        Err(OpenError::Usage(e)) => exit_usage(PROG, &e),
        Err(OpenError::Device(e)) => exit_failure(PROG, e),
    };
    let namespaces: usize = targets.iter().map(|t| t.nsids.len()).sum();
    if let Err(e) = opts::check_memory(&opts, namespaces) {
        exit_usage(PROG, &e);
    }
    let pci_ids: Vec<(String, (u16, u16))> = nvme_driver::vfio::list_nvme_controllers()
        .into_iter()
        .map(|c| (c.bdf, (c.vendor, c.device)))
        .collect();
    let pci_id = |name: &str| {
        pci_ids
            .iter()
            .find(|(bdf, _)| bdf == name)
            .map(|(_, id)| *id)
    };
    let mut plans = Vec::new();
    for t in &targets {
        let name = t.ctrl.name();
        say(perf::attach_line(name, pci_id(name), t.ctrl.identify()));
        match perf::check_target(&opts, t) {
            Ok(p) => {
                if let Some(w) = perf::queue_warning(&p) {
                    say(w);
                }
                plans.push(p)
            }
            Err(e) => exit_usage(PROG, &e),
        }
    }
    for &core in &opts.cores {
        for t in &targets {
            for ns in &t.nsids {
                say(format!(
                    "Associating PCIE ({}) NSID {ns} with lcore {core}",
                    t.ctrl.name()
                ));
            }
        }
    }
    let jobs = match perf::build_jobs(&opts, &targets, &plans) {
        Ok(j) => j,
        Err(e) => exit_failure(PROG, e),
    };
    let (mut rows, samples) = launch(&opts, &say, |ui| perf::run(&opts, &targets, jobs, ui));
    for r in &mut rows {
        if let Some(t) = targets.iter().find(|t| t.ctrl.name() == r.device) {
            r.pci_id = Some(perf::controller_id(pci_id(&r.device), t.ctrl.identify()));
        }
    }
    for t in &targets {
        if let Some(reason) = t.ctrl.failure() {
            eprintln!(
                "{PROG}: {}: controller failed during the run: {reason}",
                t.ctrl.name()
            );
        }
        if !opts.no_shutdown_notification {
            let _ = t.ctrl.shutdown();
        }
    }
    print_report(&opts, &rows, &samples, None);
}

/// Says the workers start, then runs them with `run`: progress on a terminal (not
/// with --json), notes on stderr, pollers pinned to their cores.
fn launch<R>(
    opts: &opts::PerfOptions,
    say: &dyn Fn(String),
    run: impl FnOnce(&mut perf::Ui<'_>) -> R,
) -> (R, Vec<perf::Sample>) {
    say("Initialization complete. Launching workers.".into());
    let mut note = |s: String| eprintln!("{s}");
    let mut ui = perf::Ui {
        progress: !opts.json && nvme_tools::stdout_is_tty(),
        note: &mut note,
        pin: true,
        samples: Vec::new(),
    };
    let r = run(&mut ui);
    (r, ui.samples)
}

/// Prints the table (or the JSON document, problems to stderr), then `paths` (with
/// --multipath: the path summary; in JSON its `paths` field); draws `--plot`; exits
/// with failure, saying "errors occurred" as spdk_nvme_perf does, if an I/O failed
/// (unless -Q) or a read did not match.
fn print_report(
    opts: &opts::PerfOptions,
    rows: &[perf::engine::NsResult],
    samples: &[perf::Sample],
    paths: Option<String>,
) {
    if opts.json {
        let mut doc = report::to_json(opts, rows);
        if let Some(summary) = paths {
            doc["paths"] = serde_json::Value::String(summary);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values always serialize")
        );
        let p = report::problems(rows, opts.verify);
        if !p.is_empty() {
            eprint!("{p}");
        }
    } else {
        print!("{}", report::text(opts, rows));
        if let Some(summary) = paths {
            print!("{summary}");
        }
    }
    if let Some(path) = &opts.plot {
        match perf::plot::write_svg(path, opts, rows, samples) {
            Ok(()) => eprintln!("{PROG}: wrote {path}"),
            Err(e) => exit_failure(PROG, format!("--plot {path}: {e}")),
        }
    }
    let t = report::total(rows);
    let failed_io = t.errors > 0 && opts.continue_on_error.is_none();
    if failed_io || t.mismatches > 0 {
        eprintln!("{PROG}: errors occurred");
        std::process::exit(EXIT_FAILURE);
    }
}

/// `--multipath`: the controllers join one block layer; each core drives the
/// multipath bdevs through its channels.
fn run_multipath(
    opts: &opts::PerfOptions,
    wanted: &attach::Wanted,
    policy: nvme_bdev::Policy,
    say: &dyn Fn(String),
) {
    use nvme_tools::perf::mpath;
    say(format!(
        "Initializing the block layer (multipath, policy {})",
        policy.name()
    ));
    let lopts = mpath::layer_options(opts, policy);
    let (layer, bdevs) = match mpath::open_vfio(wanted, lopts, &mut |s| say(s)) {
        Ok(x) => x,
        Err(OpenError::Usage(e)) => exit_usage(PROG, &e),
        Err(OpenError::Device(e)) => exit_failure(PROG, e),
    };
    if let Err(e) = opts::check_memory(opts, bdevs.len()) {
        exit_usage(PROG, &e);
    }
    for (b, _) in &bdevs {
        if let Err(e) = mpath::check_bdev(opts, b) {
            exit_usage(PROG, &e);
        }
        let paths: Vec<String> = b
            .multipath()
            .map(|m| m.paths().into_iter().map(|p| p.name).collect())
            .unwrap_or_default();
        say(format!(
            "Multipath bdev {}: {} blocks of {} bytes, {} path{} ({})",
            b.name(),
            b.num_blocks(),
            b.block_size(),
            paths.len(),
            if paths.len() == 1 { "" } else { "s" },
            paths.join(", ")
        ));
        for &core in &opts.cores {
            say(format!(
                "Associating MPATH ({}) with lcore {core}",
                b.name()
            ));
        }
    }
    let workers = match mpath::build_workers(opts, &layer, &bdevs, policy) {
        Ok(w) => w,
        Err(e) => exit_failure(PROG, e),
    };
    let (rows, samples) = launch(opts, say, |ui| perf::run_mpath(opts, workers, ui));
    let summary = mpath::path_summary(&layer, &bdevs);
    drop(bdevs);
    layer.shutdown();
    print_report(opts, &rows, &samples, Some(summary));
}
