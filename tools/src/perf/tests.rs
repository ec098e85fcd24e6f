// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf against the software controller.

use super::test_opts as opts;
use super::*;
use crate::attach::select;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions};
use std::sync::Arc;

/// A small software controller (4 MiB namespace of 512-byte blocks).
fn soft(mqes: u16) -> (Arc<SoftController>, Target) {
    let ns = Arc::new(Namespace::new(1, 8192, 512).unwrap());
    let sc = SoftController::start(SoftConfig {
        mqes,
        namespaces: vec![ns],
        ..SoftConfig::default()
    });
    let ctrl = Controller::init(sc.clone(), ControllerOptions::default()).unwrap();
    let t = select(ctrl, None).unwrap();
    (sc, t)
}

fn run_soft(o: &PerfOptions, t: &Target) -> Vec<NsResult> {
    let plans = vec![check_target(o, t).unwrap()];
    let jobs = build_jobs(o, std::slice::from_ref(t), &plans).unwrap();
    with_quiet_ui(|ui| run(o, std::slice::from_ref(t), jobs, ui))
}

#[test]
fn perf_runs_against_the_software_controller() {
    let (sc, t) = soft(255);
    let o = opts("-q 8 -o 4096 -w randrw -M 50 -t 1 -c 0x3 -P 2 -L");
    let rows = run_soft(&o, &t);
    assert_eq!(rows.len(), 2, "one row per core");
    for r in &rows {
        assert!(r.ios > 100, "{r:?}");
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        assert!(r.reads > 0 && r.reads < r.ios);
        assert!(r.lat_min_ns <= r.lat_max_ns && r.lat_min_ns > 0);
        assert_eq!(r.counters.len(), 2);
        assert_eq!(r.hist.len(), r.ios);
    }
    let total = report::total(&rows);
    assert_eq!(total.ios, rows.iter().map(|r| r.ios).sum::<u64>());
    let text = report::text(&o, &rows);
    assert!(text.contains("PCIE (softnvme0) NSID 1 from core  1"));
    t.ctrl.shutdown().unwrap();
    sc.stop();
}

#[test]
fn verify_passes_then_catches_corruption() {
    let (sc, t) = soft(63);
    // A write workload fills the namespace with the pattern, then reads check it.
    let o = opts("-q 4 -o 2048 -w randrw -M 70 -t 1 --verify --seed 5");
    let rows = run_soft(&o, &t);
    assert_eq!(rows[0].errors, 0);
    assert_eq!(rows[0].mismatches, 0, "{:?}", rows[0].first_mismatch);
    assert!(rows[0].reads > 0);
    // A later read-only run with the same seed passes...
    let o = opts("-q 4 -o 4096 -w read -t 1 --verify --seed 5");
    assert_eq!(run_soft(&o, &t)[0].mismatches, 0);
    // ...with another seed it fails at the first block read.
    let o = opts("-q 1 -o 512 -w read -t 1 --verify --seed 6");
    let m = run_soft(&o, &t)[0].first_mismatch.unwrap();
    assert_eq!((m.lba, m.offset, m.expected, m.found), (0, 8, 6, 5));
    // Corrupting one block behind the driver's back is found, with its LBA.
    sc.namespaces()[0]
        .write_bytes(777 * 512 + 100, &[0xff; 4])
        .unwrap();
    let o = opts("-q 2 -o 4096 -w read -t 1 --verify --seed 5");
    let rows = run_soft(&o, &t);
    let m = rows[0].first_mismatch.unwrap();
    assert_eq!((m.lba, m.offset), (777, 96));
    assert!(report::problems(&rows, true).contains("MISMATCH at LBA 777"));
    t.ctrl.shutdown().unwrap();
    sc.stop();
}

#[test]
fn a_depth_deeper_than_the_queue_waits_on_the_pending_ring() {
    let (sc, t) = soft(255);
    let o = opts("-q 32 -o 4096 -w randread -t 1 --io-queue-size 8");
    let plan = check_target(&o, &t).unwrap();
    assert_eq!(
        plan,
        CtrlPlan {
            entries: 8,
            per_qpair: 32
        }
    );
    assert_eq!(
            queue_warning(&plan).unwrap(),
            "Controller IO queue size 8, less than required (32 I/Os per queue pair).\n\
             Consider using lower queue depth or smaller IO size, because IO requests may be queued at the NVMe driver."
        );
    let rows = run_soft(&o, &t);
    assert_eq!(rows[0].errors, 0, "{:?}", rows[0].first_error);
    assert!(rows[0].ios > 100);
    let c = report::counters(&rows[0]);
    assert!(c.pended > 0, "{c:?}");
    assert!(c.pending_high_water >= 32 - 7, "{c:?}");
    assert!(report::counter_lines(&rows).contains(", queued in the driver "));
    // A queue that holds the depth: no warning, nothing waits.
    let o = opts("-q 32 -o 4096 -w randread -t 1 --io-queue-size 64");
    assert_eq!(queue_warning(&check_target(&o, &t).unwrap()), None);
    t.ctrl.shutdown().unwrap();
    sc.stop();
}

#[test]
fn number_ios_stops_each_namespace_after_that_many() {
    let (sc, t) = soft(255);
    let o = opts("-q 4 -o 4096 -w randread -t 20 -d 1000");
    let rows = run_soft(&o, &t);
    assert_eq!(rows[0].ios, 1000);
    assert!(rows[0].secs < 10.0, "{}", rows[0].secs);
    // N% of a namespace of 8192 blocks of 512 bytes in 4 KiB I/Os (1024 slots).
    let o = opts("-q 4 -o 4096 -w read -t 20 -d 50%");
    assert_eq!(run_soft(&o, &t)[0].ios, 512);
    t.ctrl.shutdown().unwrap();
    sc.stop();
}

#[test]
fn continue_on_error_counts_failures_and_goes_on() {
    let ns = Arc::new(Namespace::new(1, 8192, 512).unwrap());
    let sc = SoftController::start(SoftConfig {
        namespaces: vec![ns],
        ana: true,
        ..SoftConfig::default()
    });
    let ctrl = Controller::init(sc.clone(), ControllerOptions::default()).unwrap();
    let t = select(ctrl, None).unwrap();
    sc.faults()
        .set_ana_state(1, nvme_driver::spec::AnaState::Inaccessible)
        .unwrap();
    // Without -Q every slot retires at its first failure.
    let rows = run_soft(&opts("-q 4 -o 4096 -w randread -t 1"), &t);
    assert_eq!((rows[0].ios, rows[0].errors), (0, 4));
    // With -Q the slots go on failing until the time is up, and every 100th failure
    // is logged (path status 3/2: ANA inaccessible).
    let o = opts("-q 4 -o 4096 -w randread -t 1 -Q 100");
    let plans = vec![check_target(&o, &t).unwrap()];
    let jobs = build_jobs(&o, std::slice::from_ref(&t), &plans).unwrap();
    let mut notes = Vec::new();
    let mut note = |s: String| notes.push(s);
    let mut ui = Ui {
        progress: false,
        note: &mut note,
        pin: false,
        samples: Vec::new(),
    };
    let rows = run(&o, std::slice::from_ref(&t), jobs, &mut ui);
    assert_eq!(rows[0].ios, 0);
    assert!(rows[0].errors > 100, "{}", rows[0].errors);
    let logged: Vec<_> = notes
        .iter()
        .filter(|n| n.contains("completed with error"))
        .collect();
    assert_eq!(
        logged.len() as u64,
        rows[0].errors.div_ceil(100),
        "{notes:?}"
    );
    assert_eq!(logged[0], "Read completed with error (sct=3, sc=2)");
    assert_eq!(
        logged[1],
        "Message suppressed 99 times: Read completed with error (sct=3, sc=2)"
    );
    assert!(report::problems(&rows, false)
        .contains("failed I/Os; first: softnvme0 NSID 1: read at LBA"));
    t.ctrl.shutdown().unwrap();
    sc.stop();
}

#[test]
fn progress_lines_are_spdk_nvme_perfs() {
    assert_eq!(
        progress_line(Phase::Warmup, 123_456, 4096),
        "[warmup]    123456 IOPS,   482.25 MiB/s"
    );
    assert_eq!(
        progress_line(Phase::Run, 7, 131072),
        "        7 IOPS,     0.88 MiB/s"
    );
    assert_eq!(
        progress_line(Phase::Fill, 1000, 512),
        "[verify fill]      1000 IOPS,     0.49 MiB/s"
    );
}

#[test]
fn plans_refuse_what_the_device_cannot_do() {
    let (sc, t) = soft(63);
    let e = |line: &str| check_target(&opts(line), &t).unwrap_err().0;
    assert!(e("-q 1 -o 1000 -w read -t 1").contains("not a multiple of the block size 512"));
    assert!(e("-q 1 -o 8m -w read -t 1").contains("larger than softnvme0 NSID 1"));
    assert!(e("-q 1 -o 4k -w read -t 1 --io-queue-size 128").contains("at most 64 entries"));
    // Deeper than the largest queue: accepted (the excess waits in the driver), with
    // spdk_nvme_perf's warning.
    let deep = check_target(&opts("-q 64 -o 4k -w read -t 1"), &t).unwrap();
    assert_eq!(
        deep,
        CtrlPlan {
            entries: 64,
            per_qpair: 64
        }
    );
    assert!(queue_warning(&deep)
        .unwrap()
        .contains("less than required (64 I/Os"));
    assert_eq!(
        check_target(&opts("-q 64 -o 4k -w read -t 1 -P 2"), &t).unwrap(),
        CtrlPlan {
            entries: 64,
            per_qpair: 32
        }
    );
    assert!(e("-q 1 -o 4k -w read -t 1 -P 200").contains("I/O queues but softnvme0 granted"));
    t.ctrl.shutdown().unwrap();
    sc.stop();
}

#[test]
fn continue_on_error_logs_every_nth_failure_as_spdk_nvme_perf_does() {
    use engine::ErrorWord;
    use nvme_driver::spec::Status;
    let shared = Shared::new(2);
    let read_err = ErrorWord::new(false, Status::new(0, 2, false));
    let write_err = ErrorWord::new(true, Status::new(2, 0x81, false));
    shared.errors[0].store(3, Ordering::Relaxed);
    shared.last_error[0].store(read_err.0, Ordering::Relaxed);
    // -Q 2: the 1st and 3rd failures get a line, the 3rd says one was suppressed.
    let mut log = ErrorLog::new(Some(2));
    assert_eq!(
        log.lines_due(&shared),
        [
            "Read completed with error (sct=0, sc=2)",
            "Message suppressed 1 times: Read completed with error (sct=0, sc=2)"
        ]
    );
    assert!(
        log.lines_due(&shared).is_empty(),
        "nothing new, nothing printed"
    );
    // Two more on the other worker: the 5th is due.
    shared.errors[1].store(2, Ordering::Relaxed);
    shared.last_error[0].store(0, Ordering::Relaxed);
    shared.last_error[1].store(write_err.0, Ordering::Relaxed);
    assert_eq!(
        log.lines_due(&shared),
        ["Message suppressed 1 times: Write completed with error (sct=2, sc=129)"]
    );
    // -Q 1 logs every failure; without -Q nothing is logged while running.
    assert_eq!(ErrorLog::new(Some(1)).lines_due(&shared).len(), 5);
    assert!(ErrorLog::new(None).lines_due(&shared).is_empty());
}

/// A path that comes back keeps its controller's name in the multipath rows: softA
/// is removed mid-run and a new device takes its place; the layer reconnects it (a new
/// path instance, a new id) and the row still says `softA`, never `path N`, and counts
/// the I/O the returned path carried.
#[test]
fn multipath_rows_name_a_reconnected_path_by_its_controller() {
    use super::mpath::{build_workers, layer_options};
    use nvme_bdev::BlockLayer;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    let ns = Arc::new(Namespace::new(1, 8192, 512).unwrap());
    let soft = |name: &str, cntlid| {
        SoftController::start(SoftConfig {
            name: name.into(),
            subnqn: "nqn.2024-01.org.nvme-tools:names".into(),
            cntlid,
            namespaces: vec![ns.clone()],
            ..SoftConfig::default()
        })
    };
    let (a, b) = (soft("softA", 1), soft("softB", 2));
    let current = Arc::new(Mutex::new(a.clone()));
    let plugged = current.clone();
    let o =
        opts("-q 8 -o 4096 -w randrw -M 50 -t 2 -c 0x1 --verify --multipath --policy round-robin");
    let policy = o.multipath.unwrap();
    let mut lopts = layer_options(&o, policy);
    lopts.mpath.reconnect_delay_ms = 50;
    lopts.mpath.fast_io_fail_timeout_ms = 50;
    let layer = BlockLayer::new(lopts).unwrap();
    layer
        .attach(
            "softA",
            Arc::new(move || {
                let c: Arc<SoftController> = plugged.lock().unwrap().clone();
                Ok(c as Arc<dyn nvme_driver::bus::Bus>)
            }),
        )
        .unwrap();
    let names = layer.attach_bus("softB", b.clone()).unwrap();
    let mp = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
    let bdevs = vec![(layer.open(mp).unwrap(), 1)];
    let workers = build_workers(&o, &layer, &bdevs, policy).unwrap();
    let a2 = soft("softA", 1);
    let rows = std::thread::scope(|s| {
        let h = s.spawn(|| with_quiet_ui(|ui| run_mpath(&o, workers, ui)));
        std::thread::sleep(Duration::from_millis(400));
        *current.lock().unwrap() = a2.clone();
        a.faults().simulate_removal();
        let t0 = Instant::now();
        while layer.controller_counts("softA").unwrap().1 == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "softA never reconnected"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        h.join().unwrap()
    });
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.errors, r.mismatches), (0, 0), "{:?}", r.first_error);
    let m = r.mpath.as_ref().unwrap();
    let mut names: Vec<&str> = m.paths.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["softA", "softB"], "{m:?}");
    let on_a = m.paths.iter().find(|p| p.name == "softA").unwrap();
    assert!(on_a.ios > 0, "the returned path carried nothing: {m:?}");
    assert_eq!(m.channel.stray_completions, 0, "{m:?}");
    let json = report::to_json(&o, &rows).to_string();
    assert!(!json.contains("\"path "), "{json}");
    drop(bdevs);
    layer.shutdown();
    for c in [a, a2, b] {
        c.stop();
    }
}

#[test]
fn io_unit_size_makes_each_io_a_vectored_request() {
    for enable_sgl in [true, false] {
        let sc = SoftController::start(SoftConfig {
            namespaces: vec![Arc::new(Namespace::new(1, 8192, 512).unwrap())],
            ..SoftConfig::default()
        });
        let opts_c = ControllerOptions {
            enable_sgl,
            ..ControllerOptions::default()
        };
        let t = select(Controller::init(sc.clone(), opts_c).unwrap(), None).unwrap();
        // 64 KiB I/Os of 4 KiB units: page-joined, so PRPs take them too.
        let o = opts("-q 4 -o 65536 -O 4096 -w randrw -M 50 -t 1 --verify --seed 3");
        let rows = run_soft(&o, &t);
        assert_eq!(rows[0].errors, 0, "{:?}", rows[0].first_error);
        assert_eq!(rows[0].mismatches, 0, "{:?}", rows[0].first_mismatch);
        assert!(rows[0].reads > 0 && rows[0].reads < rows[0].ios);
        // 1028-byte units: fine as SGL Data Blocks, refused by PRPs by slice and rule.
        let o = opts("-q 2 -o 4096 -O 1028 -w write -t 1 -d 50");
        let rows = run_soft(&o, &t);
        if enable_sgl {
            assert_eq!(rows[0].errors, 0, "{:?}", rows[0].first_error);
            assert!(rows[0].ios > 0);
        } else {
            let e = format!("{:?}", rows[0].first_error);
            assert!(rows[0].errors > 0, "PRPs cannot take 1028-byte units");
            assert!(e.contains("slice 0 ends inside a 4 KiB page"), "{e}");
        }
        t.ctrl.shutdown().unwrap();
        sc.stop();
    }
}

/// spdk_nvme_perf's attach line carries the PCI vendor and device ID, as the row
/// names do; a controller without one (the software controller) shows Identify's
/// VID:SSVID instead.
#[test]
fn attach_line_names_the_pci_vendor_and_device() {
    let (sc, t) = soft(64);
    let id = t.ctrl.identify();
    assert_eq!((id.vid, id.ssvid), (0x1b36, 0x1af4));
    let line = attach_line("0000:01:00.0", Some((0x1b36, 0x0010)), id);
    assert!(
        line.starts_with("Attached to NVMe Controller at 0000:01:00.0 [1b36:0010] "),
        "{line}"
    );
    assert!(
        line.ends_with(&format!("{} (SN {}, FR {})", id.mn, id.sn, id.fr)),
        "{line}"
    );
    assert_eq!(controller_id(Some((0x8086, 0x0953)), id), (0x8086, 0x0953));
    let line = attach_line(t.ctrl.name(), None, id);
    assert!(
        line.starts_with("Attached to NVMe Controller at softnvme0 [1b36:1af4] "),
        "{line}"
    );
    t.ctrl.shutdown().unwrap();
    sc.stop();
}
