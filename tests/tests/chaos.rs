// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The chaos soak's short form (`qemu/chaos` runs the long one): on the `mpath`
//! topology with the disk behind QEMU's blkdebug driver, `nvme-e2e-chaos` keeps random
//! verified 4 KiB reads and writes in flight from both vCPUs through the multipath bdev
//! while a seeded schedule unplugs and plugs back either controller, resets them
//! through the block layer, and opens windows in which QEMU fails every read or every
//! write (the device returns Unrecovered Read Error or Write Fault); then the whole
//! namespace is read back against the shadow. Asserted here from its summary, not only
//! its verdict: nothing lost, duplicated or corrupted, every I/O completed exactly
//! once, every failed I/O inside a media-error window of its kind (and the windows did
//! fail some), the longest completion pause under the bound, every kind of fault fired,
//! and both paths carried I/O after the faults. The schedule itself is checked on the
//! host: same seed, same schedule; and so are the media-error switches, against a
//! paused QEMU with qemu/run's own blkdebug drive: they write nothing but what they say
//! (the probe chunk's shadow depends on it).

use e2e::{Backing, Guest, GuestOutput, Topology};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Seconds of traffic in the guest (the faults, then 8 s with both paths up).
const SECONDS: u64 = 90;
/// The longest a traffic thread may go without a completion while I/O is in flight.
/// Failover after a reset or unplug takes milliseconds; under TCG on a loaded 2-core
/// host the emulator's scheduling alone has shown pauses of tens of milliseconds
/// (docs/BENCHMARKS.md, failover), so the bound leaves room for load, not for a stall.
const PAUSE_LIMIT_MS: u64 = 2_000;
const SEED: u64 = 1;

/// The number right after `key` on the first line of `out` that contains `key`.
fn number_after(out: &GuestOutput, key: &str) -> f64 {
    out.stdout
        .lines()
        .find_map(|l| {
            let rest = l.split_once(key)?.1;
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .unwrap_or_else(|| panic!("no number after {key:?} in:\n{out}"))
}

fn schedule(seed: u64) -> String {
    let out = Command::new(e2e::release_bin("nvme-e2e-chaos"))
        .args(["--schedule-only", "--seed", &seed.to_string()])
        .args(["--seconds", &SECONDS.to_string()])
        .output()
        .expect("run nvme-e2e-chaos (cargo build --release --workspace --bins first)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn same_seed_same_fault_schedule() {
    let a = schedule(SEED);
    assert_eq!(a, schedule(SEED), "two schedules of seed {SEED} differ");
    assert_ne!(
        a,
        schedule(SEED + 1),
        "seeds {SEED} and {} gave one schedule",
        SEED + 1
    );
    for kind in ["unplug c", "reset c", "every read", "every write"] {
        assert!(a.contains(kind), "no {kind:?} fault planned:\n{a}");
    }
}

#[test]
fn chaos_soak_short_form_loses_nothing_and_explains_every_failure() {
    let out = Guest::new(Topology::Mpath)
        .backing(Backing::Blkdebug)
        .timeout(Duration::from_secs(SECONDS + 240))
        .run(&format!(
            "nvme-e2e-chaos --seed {SEED} --seconds {SECONDS} --pause-limit-ms {PAUSE_LIMIT_MS}"
        ));
    for l in out.stdout.lines().filter(|l| l.starts_with("chaos: ")) {
        eprintln!("{l}");
    }
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim() == format!("PASS chaos seed {SEED}")),
        "the soak did not pass:\n{out}"
    );
    // Every kind of fault fired at least once.
    for kind in ["unplug+replug", "reset", "read errors", "write errors"] {
        let n = number_after(&out, &format!("chaos:   {kind}: "));
        assert!(n >= 1.0, "no {kind} fault was injected:\n{out}");
    }
    // Exactly once, nothing lost, duplicated or corrupted; the whole namespace read back.
    let submitted = number_after(&out, "chaos: I/O: ");
    let completed = number_after(&out, " submitted, ");
    assert!(
        submitted > 1000.0,
        "too little traffic to mean anything:\n{out}"
    );
    assert_eq!(submitted, completed, "submitted != completed:\n{out}");
    assert_eq!(number_after(&out, "chaos: lost "), 0.0, "lost I/O:\n{out}");
    assert_eq!(
        number_after(&out, ", duplicated "),
        0.0,
        "duplicates:\n{out}"
    );
    assert_eq!(
        number_after(&out, "(stray completions "),
        0.0,
        "stray:\n{out}"
    );
    assert_eq!(
        number_after(&out, ", corrupted "),
        0.0,
        "corruption:\n{out}"
    );
    assert!(
        number_after(&out, "chaos: final scan: ") >= 65_536.0,
        "the final scan did not cover the 256 MiB namespace:\n{out}"
    );
    // Failed I/O only where a media-error window explains it, and the windows did fail
    // some (the premise: media errors reached the application, each once).
    let failed = number_after(&out, "chaos: failed I/O: ");
    assert!(
        failed > 0.0,
        "no I/O failed: the media-error windows did nothing:\n{out}"
    );
    assert_eq!(
        number_after(&out, " explained by a media-error window, "),
        0.0,
        "unexplained failures:\n{out}"
    );
    // The longest completion pause under the bound.
    let pause = number_after(&out, "chaos: longest completion pause ");
    assert!(
        pause <= PAUSE_LIMIT_MS as f64,
        "longest completion pause {pause} ms, bound {PAUSE_LIMIT_MS} ms:\n{out}"
    );
    // Both paths carried I/O after the faults: the line
    // `chaos: I/Os per path after the faults (8 s): BDF N, BDF N; in all: ...`.
    let after = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("I/Os per path after the faults (8 s): "))
        .and_then(|(_, rest)| rest.split_once("; in all:"))
        .map(|(after, _)| after.to_string())
        .unwrap_or_else(|| panic!("no per-path counts after the faults:\n{out}"));
    for bdf in ["0000:01:00.0", "0000:02:00.0"] {
        let n: u64 = after
            .split(", ")
            .find_map(|p| p.strip_prefix(bdf)?.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            n > 0,
            "{bdf} carried no I/O after the faults ({after}):\n{out}"
        );
    }
}

/// Loads qemu/run as a Python module and prints, as JSON, the `-drive` arguments it
/// gives disk d0 of the `single` topology with `--backing blkdebug` (writing the rules
/// file and a 1 MiB image into `argv[2]`).
const DRIVE_ARGS_PY: &str = r#"
import importlib.machinery, importlib.util, json, pathlib, sys
loader = importlib.machinery.SourceFileLoader("qemu_run", sys.argv[1])
spec = importlib.util.spec_from_loader("qemu_run", loader)
run = importlib.util.module_from_spec(spec)
loader.exec_module(run)
d = pathlib.Path(sys.argv[2])
print(json.dumps(run.topology_args("single", "blkdebug", "1M", d, d)[:2]))
"#;

/// A paused QEMU without a guest (`-machine none`) whose drive d0 is qemu/run's
/// blkdebug backing, driven over QMP on stdio. `qemu-io d0` stands in for the guest:
/// like the NVMe device's I/O it goes through the raw node and fires blkdebug's
/// `read_aio`/`write_aio` events; `qemu-io faults0` is what a switch line asks for.
struct Blkdebug {
    qemu: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    img: PathBuf,
    dir: PathBuf,
}

impl Blkdebug {
    fn start() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("e2e-blkdebug-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let out = Command::new("python3")
            .arg("-c")
            .arg(DRIVE_ARGS_PY)
            .arg(e2e::repo_root().join("qemu").join("run"))
            .arg(&dir)
            .output()
            .expect("python3 (qemu/run needs it too)");
        assert!(out.status.success(), "qemu/run's topology_args: {out:?}");
        let args: Vec<String> = serde_json::from_slice(&out.stdout).expect("a JSON list");
        let img = dir.join("single-d0.img");
        assert!(img.exists(), "qemu/run made no disk image: {args:?}");
        let qemu = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none", "-S"])
            .args(["-qmp", "stdio"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut qemu = match qemu {
            Ok(q) => q,
            Err(e) => {
                e2e::skip(
                    "blkdebug_switches_write_only_what_they_say",
                    "the blkdebug switches",
                    &format!("qemu-system-x86_64: {e}"),
                );
                return None;
            }
        };
        let stdin = qemu.stdin.take().expect("piped");
        let stdout = BufReader::new(qemu.stdout.take().expect("piped"));
        let mut b = Blkdebug {
            qemu,
            stdin,
            stdout,
            img,
            dir,
        };
        b.qmp(r#"{"execute":"qmp_capabilities"}"#, 0);
        Some(b)
    }

    /// Sends one QMP command; returns the lines QEMU printed on stdout besides QMP
    /// (qemu-io prints there, not into the command's return), waiting for at least
    /// `text` of them and for the return (events are skipped).
    fn qmp(&mut self, cmd: &str, text: usize) -> Vec<String> {
        writeln!(self.stdin, "{cmd}").expect("QMP write");
        self.stdin.flush().expect("QMP flush");
        let mut printed = Vec::new();
        let mut returned = false;
        while !returned || printed.len() < text {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("QMP read");
            assert!(n > 0, "QEMU closed its stdout after {cmd}: {printed:?}");
            match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.get("return").is_some() => returned = true,
                Ok(v) => assert!(v.get("error").is_none(), "{cmd}: {v}"),
                Err(_) => printed.push(line.trim_end().to_string()),
            }
        }
        printed
    }

    /// HMP `qemu-io NODE "IO"`; returns the line qemu-io printed.
    fn io(&mut self, node: &str, io: &str) -> String {
        let cmd = serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": {"command-line": format!("qemu-io {node} \"{io}\"")},
        });
        self.qmp(&cmd.to_string(), 1).join("\n")
    }

    /// The guest's I/O: a 4 KiB read or write of the probe chunk (LBA 0-7) through d0;
    /// true when it succeeded.
    fn guest(&mut self, write: Option<u8>) -> bool {
        let io = match write {
            Some(p) => format!("write -P {p:#x} 0 4096"),
            None => "read 0 4096".to_string(),
        };
        let out = self.io("d0", &io);
        let ok = out.starts_with("wrote 4096/4096") || out.starts_with("read 4096/4096");
        assert!(
            ok || out.contains("Input/output error"),
            "qemu-io d0 {io:?}: {out:?}"
        );
        ok
    }

    /// The probe chunk as the disk file holds it.
    fn chunk(&self) -> Vec<u8> {
        let mut data = std::fs::read(&self.img).expect("the disk image");
        data.truncate(4096);
        data
    }
}

impl Drop for Blkdebug {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What qemu-io `write` command `io` means for the first 4 KiB: `write -z OFF LEN`
/// (zeroes) or `write -P PATTERN OFF LEN`; the bytes it does not name keep their value.
fn apply(shadow: &mut [u8], io: &str) {
    let w: Vec<&str> = io.split_whitespace().collect();
    let num = |s: &str| -> usize {
        match s.strip_prefix("0x") {
            Some(h) => usize::from_str_radix(h, 16),
            None => s.parse(),
        }
        .unwrap_or_else(|_| panic!("{s:?} in {io:?}"))
    };
    let (byte, off, len) = match w.as_slice() {
        ["write", "-z", off, len] => (0u8, num(off), num(len)),
        ["write", "-P", p, off, len] => (num(p) as u8, num(off), num(len)),
        _ => panic!("a switch the model does not know: {io:?}"),
    };
    shadow[off..off + len].fill(byte);
}

fn assert_chunk(q: &Blkdebug, shadow: &[u8], after: &str) {
    let got = q.chunk();
    if let Some(off) = (0..shadow.len()).find(|&i| got[i] != shadow[i]) {
        panic!(
            "after {after}, byte {off} of the probe chunk (LBA 0) is {:#04x}, its shadow says {:#04x}: a switch wrote a byte it does not name",
            got[off], shadow[off]
        );
    }
}

/// The soak's media-error windows, switch by switch, with the guest's I/O between
/// (including the last event before each switch back being one that fails, which
/// leaves blkdebug's error rule active): every switch works, guest I/O fails exactly
/// inside its window, and the probe chunk holds exactly what its writers wrote (the
/// guest's patterns here, where the soak writes zeroes, so a byte a switch should have
/// kept shows). Before qemu/run made the switches' own I/O error-free, closing a read
/// window right after a failed read wrote QEMU's never-filled padding byte over byte 0.
#[test]
fn blkdebug_switches_write_only_what_they_say() {
    use e2e::blkdebug::{NO_ERRORS, READS_FAIL, WRITES_FAIL};
    let Some(mut q) = Blkdebug::start() else {
        return;
    };
    let mut shadow = vec![0u8; 4096];
    let switch = |q: &mut Blkdebug, shadow: &mut Vec<u8>, io: &str, what: &str| {
        let out = q.io("faults0", io);
        assert!(out.starts_with("wrote "), "{io:?} ({what}): {out:?}");
        apply(shadow, io);
        assert_chunk(q, shadow, &format!("`qemu-io faults0 \"{io}\"` ({what})"));
    };
    for round in 0..3u8 {
        // A read window.
        switch(&mut q, &mut shadow, READS_FAIL, "opening a read window");
        let p = 0x61 + round;
        assert!(q.guest(Some(p)), "a write failed in a read window");
        shadow.fill(p);
        assert!(!q.guest(None), "a read succeeded in a read window");
        switch(
            &mut q,
            &mut shadow,
            NO_ERRORS,
            "closing a read window after a failed read",
        );
        assert!(q.guest(None), "a read failed after the read window");
        // A write window.
        let p = 0x71 + round;
        assert!(q.guest(Some(p)), "a write failed outside the windows");
        shadow.fill(p);
        switch(&mut q, &mut shadow, WRITES_FAIL, "opening a write window");
        assert!(q.guest(None), "a read failed in a write window");
        assert!(!q.guest(Some(0xEE)), "a write succeeded in a write window");
        switch(
            &mut q,
            &mut shadow,
            NO_ERRORS,
            "closing a write window after a failed write",
        );
        assert!(q.guest(None), "a read failed after the write window");
        assert!(q.guest(Some(p)), "a write failed after the write window");
        shadow.fill(p);
        assert_chunk(&q, &shadow, &format!("round {round}"));
    }
}
