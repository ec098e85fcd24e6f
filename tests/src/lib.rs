// SPDX-License-Identifier: Apache-2.0 OR MIT
//! End-to-end test harness: boots a QEMU topology and runs commands in the guest.
//!
//! Every guest is one run of `qemu/run` (see `qemu/README.md`): a Debian kernel with a
//! busybox initramfs, QEMU's emulated NVMe controllers bound to vfio-pci (or to the
//! kernel's nvme driver, or unbound), the project's `nvme-*` binaries from
//! `<repo>/target/release` under `/usr/local/bin`, one command run with `sh -c`, and
//! its exit status, stdout and stderr brought back as a [`GuestOutput`].
//!
//! Guests run one at a time: the machine has two cores and one TCG guest fills both.
//! Within a test process a mutex orders the test threads; across processes `qemu/run`
//! itself holds an exclusive `flock` on `/tmp/nvme-qemu-guest.lock` (or
//! `$NVME_QEMU_LOCK`) while its guest runs, and its deadline starts only once it holds it.
//!
//! ```no_run
//! use e2e::{Guest, Topology};
//! let out = Guest::new(Topology::Mpath).run("ls -1 /dev/vfio");
//! out.assert_success();
//! assert_eq!(out.stdout.lines().filter(|l| l.parse::<u32>().is_ok()).count(), 2);
//! ```
//!
//! A test that cannot check something on this machine (say, the kernel cache has no
//! ext4 modules) calls [`skip`]: that fails the test unless `NVME_TESTS_ALLOW_SKIP=1`
//! says skipping is expected, and records the skip in `$NVME_TESTS_SKIP_LOG`, which
//! `tests/run` prints at the end. No test skips silently.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The environment variable that says skipping is expected: with
/// `NVME_TESTS_ALLOW_SKIP=1` a test that cannot check something on this machine
/// records a skip and passes; without it, [`skip`] fails the test. A check that
/// silently does not happen is a check that can no longer fail.
pub const ALLOW_SKIP_ENV: &str = "NVME_TESTS_ALLOW_SKIP";

/// The environment variable naming a file every guest run appends a line to: the
/// test (its thread's name), the topology, the wall time and the boot time.
/// `tests/run` sets it and prints the slowest first at the end, so the suite's time
/// can be seen guest by guest.
pub const TIME_LOG_ENV: &str = "NVME_TESTS_TIME_LOG";

/// The environment variable naming a file every [`skip`] appends a line to.
/// `tests/run` sets it and prints the file at the end, outside libtest's capture
/// (which hides a passing test's stderr).
pub const SKIP_LOG_ENV: &str = "NVME_TESTS_SKIP_LOG";

/// Records that `test` could not check `what` here, because `why`. The line
/// `SKIP test: what (why)` goes to stderr and is appended to `$NVME_TESTS_SKIP_LOG`
/// when that is set; then, unless `NVME_TESTS_ALLOW_SKIP=1`, the test fails (panics)
/// with that line. Call it where a test would otherwise pass without checking:
///
/// ```no_run
/// let modules: Option<Vec<std::path::PathBuf>> = None;
/// if modules.is_none() {
///     e2e::skip("my_test", "the mount refusal", "no ext4 modules in the kernel cache");
/// }
/// ```
pub fn skip(test: &str, what: &str, why: &str) {
    let log = std::env::var_os(SKIP_LOG_ENV).map(PathBuf::from);
    record_skip(test, what, why, log.as_deref(), skipping_allowed());
}

/// [`skip`] with the environment read by the caller (so unit tests need not set it).
fn record_skip(test: &str, what: &str, why: &str, log: Option<&Path>, allowed: bool) {
    let line = format!("SKIP {test}: {what} ({why})");
    eprintln!("{line}");
    if let Some(log) = log {
        // One write of one short line with O_APPEND: lines from parallel tests and
        // test processes do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            panic!("{line}; and it could not be recorded in {log:?}: {e}");
        }
    }
    if !allowed {
        panic!("{line}: a skip is a failure unless {ALLOW_SKIP_ENV}=1 says skipping is expected");
    }
}

/// True when `NVME_TESTS_ALLOW_SKIP=1` (see [`skip`]).
pub fn skipping_allowed() -> bool {
    std::env::var_os(ALLOW_SKIP_ENV).is_some_and(|v| v == "1")
}

/// Orders the guests of one test process (threads); `qemu/run` orders processes.
static GUEST_LOCK: Mutex<()> = Mutex::new(());

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits one level below the repository root")
        .to_path_buf()
}

/// Where the project's release binaries are built (`<repo>/target/release`, or
/// `$CARGO_TARGET_DIR/release`).
pub fn release_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("release"),
        None => repo_root().join("target").join("release"),
    }
}

/// The path of one release binary, e.g. `release_bin("nvme-perf")`.
pub fn release_bin(name: &str) -> PathBuf {
    release_dir().join(name)
}

/// The line a guest command prints to have the runner send `json` over QMP,
/// e.g. `qmp_line(r#"{"execute":"device_del","arguments":{"id":"c1"}}"#)`.
pub fn qmp_line(json: &str) -> String {
    format!("@@QMP {json}@@")
}

/// The line a guest program prints to have the host hot-unplug controller `id`
/// (`c0`, `c1`): [`qmp_line`] with a QMP `device_del`, e.g.
/// `@@QMP {"execute":"device_del","arguments":{"id":"c1"}}@@`.
pub fn device_del_line(id: &str) -> String {
    qmp_line(&format!(
        r#"{{"execute":"device_del","arguments":{{"id":"{id}"}}}}"#
    ))
}

/// The HMP `qemu-io` commands that switch the blkdebug node `faults<N>` of a disk
/// behind `qemu/run --backing blkdebug` between its states (qemu/run's
/// `BLKDEBUG_RULES`, qemu/README.md "Media errors"). Each writes into the first 4 KiB
/// of the disk (the chaos soak's probe chunk) and only zeroes:
/// [`READS_FAIL`](blkdebug::READS_FAIL) writes zeroes over all 4 KiB,
/// [`WRITES_FAIL`](blkdebug::WRITES_FAIL) byte 0 and [`NO_ERRORS`](blkdebug::NO_ERRORS)
/// bytes 1 to 511 (the two are read-modify-writes of block 0, which keep the block's
/// other bytes).
pub mod blkdebug {
    /// Every read of the disk fails from now on (event `pwritev_zero`).
    pub const READS_FAIL: &str = "write -z 0 4096";
    /// Every write fails from now on (event `pwritev_rmw_tail`).
    pub const WRITES_FAIL: &str = "write -P 0 0 1";
    /// No errors, the start state (event `pwritev_rmw_head`).
    pub const NO_ERRORS: &str = "write -P 0 1 511";

    /// The line a guest program prints to have the host run `qemu-io` command `io` on
    /// node `faults0` (disk d0).
    pub fn switch_line(io: &str) -> String {
        super::qmp_line(&format!(
            r#"{{"execute":"human-monitor-command","arguments":{{"command-line":"qemu-io faults0 \"{io}\""}}}}"#
        ))
    }
}

/// A shell command that asks the host to hot-unplug controller `id` (`c0`, `c1`).
/// The controller leaves the guest about 5 s later (PCIe attention-button delay).
pub fn device_del_cmd(id: &str) -> String {
    format!("echo '{}'", device_del_line(id))
}

/// QEMU topologies (see `qemu/README.md`). Each controller sits on its own
/// hot-pluggable root port: `c0` at `0000:01:00.0`, `c1` at `0000:02:00.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One controller (`c0`, serial `single0`) with one namespace.
    Single,
    /// Two independent controllers (`c0`, `c1`), each with its own namespace and disk.
    Multi,
    /// One NVMe subsystem, two controllers (`c0`, `c1`) sharing namespace 1.
    Mpath,
}

impl Topology {
    /// The name `qemu/run --topology` takes.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Single => "single",
            Topology::Multi => "multi",
            Topology::Mpath => "mpath",
        }
    }

    /// Number of NVMe controllers the guest sees.
    pub fn controllers(self) -> usize {
        match self {
            Topology::Single => 1,
            Topology::Multi | Topology::Mpath => 2,
        }
    }
}

/// Which driver the guest binds the NVMe controllers to before the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// vfio-pci (the default): the controllers are ours to drive from userspace.
    Vfio,
    /// The kernel's nvme driver (baselines): waits until `/dev/nvme*n1` exist.
    Nvme,
    /// Left unbound (the VFIO modules are loaded).
    None,
}

impl Bind {
    fn name(self) -> &'static str {
        match self {
            Bind::Vfio => "vfio",
            Bind::Nvme => "nvme",
            Bind::None => "none",
        }
    }
}

/// The namespaces' backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A raw disk file (data persists across runs with [`Guest::keep_disks`]).
    Raw,
    /// QEMU's `null-co` driver: no host I/O cost, for benchmarks; reads return garbage.
    Null,
    /// A raw disk file behind QEMU's `blkdebug` driver: media errors on reads or
    /// writes switched on and off over QMP (qemu/README.md, "Media errors").
    Blkdebug,
}

impl Backing {
    fn name(self) -> &'static str {
        match self {
            Backing::Raw => "raw",
            Backing::Null => "null",
            Backing::Blkdebug => "blkdebug",
        }
    }
}

/// What a guest command left behind.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The command's exit status in the guest, or the runner's own code:
    /// 124 the guest timed out, 125 the guest or host set-up failed, 2 bad usage,
    /// -1 the runner was killed by a signal.
    pub status: i32,
    /// The command's standard output (the guest console, kernel noise suppressed).
    pub stdout: String,
    /// The command's standard error, followed by the runner's messages
    /// (lines starting `nvme-qemu:`, e.g. the boot time).
    pub stderr: String,
}

impl GuestOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panics, showing both streams, unless the command exited with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "guest command failed:\n{self}");
        self
    }

    /// The seconds from QEMU start to the command, as the runner reported them.
    pub fn boot_seconds(&self) -> Option<f64> {
        self.stderr.lines().find_map(|l| {
            l.strip_prefix("nvme-qemu: boot to first command: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }
}

impl fmt::Display for GuestOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "status: {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// A guest to boot: topology, binding, backing store, extra programs, deadline.
#[derive(Debug, Clone)]
pub struct Guest {
    topology: String,
    bind: Bind,
    backing: Backing,
    disk_size: Option<String>,
    includes: Vec<PathBuf>,
    timeout: Duration,
    env: Vec<(String, String)>,
    keep_disks: Option<PathBuf>,
    qmp_at: Vec<(f64, String)>,
    bin_dir: PathBuf,
    extra_args: Vec<String>,
}

impl Guest {
    /// A guest of `topology`, controllers bound to vfio-pci, raw disks, 300 s deadline.
    pub fn new(topology: Topology) -> Self {
        Self::with_topology_name(topology.name())
    }

    /// Like [`Guest::new`] with the topology given by name, as `qemu/run` takes it
    /// (lets a test check what an unknown name does).
    pub fn with_topology_name(name: &str) -> Self {
        Guest {
            topology: name.to_string(),
            bind: Bind::Vfio,
            backing: Backing::Raw,
            disk_size: None,
            includes: Vec::new(),
            timeout: Duration::from_secs(300),
            env: Vec::new(),
            keep_disks: None,
            qmp_at: Vec::new(),
            bin_dir: release_dir(),
            extra_args: Vec::new(),
        }
    }

    /// The driver the controllers are bound to before the command runs.
    pub fn bind(mut self, bind: Bind) -> Self {
        self.bind = bind;
        self
    }

    /// The namespaces' backing store.
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// Disk size, e.g. `"256M"` (raw default 256M, null default 1G).
    pub fn disk_size(mut self, size: &str) -> Self {
        self.disk_size = Some(size.to_string());
        self
    }

    /// Carry one more program (a path, or a name looked up in `PATH` such as `fio`)
    /// with its shared libraries; it lands in the guest's `/usr/local/bin`.
    pub fn include(mut self, program: impl Into<PathBuf>) -> Self {
        self.includes.push(program.into());
        self
    }

    /// The deadline for the whole guest, boot included (not the wait for other guests).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Set an environment variable for the guest command.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Keep the raw disk files in `dir` and reuse them: data survives between runs.
    pub fn keep_disks(mut self, dir: impl Into<PathBuf>) -> Self {
        self.keep_disks = Some(dir.into());
        self
    }

    /// Have the host send a QMP command `seconds` after the guest command started.
    /// (A guest command can also print [`qmp_line`] to send one at a moment it picks.)
    pub fn qmp_at(mut self, seconds: f64, json: &str) -> Self {
        self.qmp_at.push((seconds, json.to_string()));
        self
    }

    /// Where to take the `nvme-*` binaries from (default [`release_dir`]).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }

    /// Pass more options to `qemu/run` as they are (e.g. `["--smp", "1"]`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The `qemu/run` command line that runs `argv` in this guest.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new(repo_root().join("qemu").join("run"));
        cmd.arg("--topology")
            .arg(&self.topology)
            .arg("--bind")
            .arg(self.bind.name())
            .arg("--backing")
            .arg(self.backing.name())
            .arg("--timeout")
            .arg(self.timeout.as_secs_f64().to_string());
        if let Some(size) = &self.disk_size {
            cmd.arg("--disk-size").arg(size);
        }
        if self.bin_dir.is_dir() {
            cmd.arg("--bin-dir").arg(&self.bin_dir);
        }
        for program in &self.includes {
            cmd.arg("--include").arg(program);
        }
        for (key, value) in &self.env {
            cmd.arg("--env").arg(format!("{key}={value}"));
        }
        if let Some(dir) = &self.keep_disks {
            cmd.arg("--keep-disks").arg(dir);
        }
        for (seconds, json) in &self.qmp_at {
            cmd.arg("--qmp-at").arg(format!("{seconds}:{json}"));
        }
        cmd.args(&self.extra_args).arg("--").args(argv);
        cmd
    }

    /// Boot the guest, run the shell command `script` with `sh -c`, power off.
    pub fn run(&self, script: &str) -> GuestOutput {
        self.run_argv(&["sh", "-c", script])
    }

    /// Boot the guest, run `argv` (a program and its arguments), power off.
    pub fn run_argv(&self, argv: &[&str]) -> GuestOutput {
        let mut cmd = self.command(argv);
        let _serial = GUEST_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let t0 = std::time::Instant::now();
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!("cannot start {:?}: {e}", cmd.get_program()),
        };
        let out = GuestOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.log_time(t0.elapsed(), &out);
        out
    }

    /// Appends this run's line to `$NVME_TESTS_TIME_LOG`, when set (see
    /// [`TIME_LOG_ENV`]); a log that cannot be written is said on stderr, not fatal.
    fn log_time(&self, wall: Duration, out: &GuestOutput) {
        let Some(path) = std::env::var_os(TIME_LOG_ENV) else {
            return;
        };
        let thread = std::thread::current();
        let line = format!(
            "{:7.1} s  {} ({}, boot {})\n",
            wall.as_secs_f64(),
            thread.name().unwrap_or("?"),
            self.topology,
            out.boot_seconds()
                .map_or("unknown".to_string(), |b| format!("{b:.1} s")),
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot append to {}: {e}", Path::new(&path).display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_carries_every_option() {
        let guest = Guest::new(Topology::Mpath)
            .bind(Bind::Nvme)
            .backing(Backing::Null)
            .disk_size("1G")
            .include("fio")
            .env("A", "b c")
            .timeout(Duration::from_secs(60))
            .qmp_at(2.5, "{}");
        let cmd = guest.command(&["true"]);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "--topology mpath",
            "--bind nvme",
            "--backing null",
            "--disk-size 1G",
            "--include fio",
            "--env A=b c",
            "--timeout 60",
            "--qmp-at 2.5:{}",
        ] {
            assert!(joined.contains(want), "{want:?} missing from {joined:?}");
        }
        assert!(joined.ends_with("-- true"), "{joined}");
        assert!(cmd.get_program().to_string_lossy().ends_with("qemu/run"));
    }

    #[test]
    fn boot_seconds_are_parsed_from_the_runner_line() {
        let out = GuestOutput {
            status: 0,
            stdout: String::new(),
            stderr: "x\nnvme-qemu: boot to first command: 5.6 s (tcg)\n".to_string(),
        };
        assert_eq!(out.boot_seconds(), Some(5.6));
    }

    #[test]
    fn device_del_cmd_prints_the_qmp_marker() {
        assert_eq!(
            device_del_cmd("c1"),
            r#"echo '@@QMP {"execute":"device_del","arguments":{"id":"c1"}}@@'"#
        );
    }

    fn log_file(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("e2e-skip-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn a_skip_fails_the_test_unless_allowed_and_is_logged_either_way() {
        let log = log_file("refused");
        let r = std::panic::catch_unwind(|| {
            record_skip("t1", "a check", "a reason", Some(&log), false)
        });
        let msg = r.expect_err("a skip without NVME_TESTS_ALLOW_SKIP=1 must fail the test");
        let msg = msg
            .downcast_ref::<String>()
            .expect("the panic carries the skip line");
        assert!(msg.starts_with("SKIP t1: a check (a reason)"), "{msg}");
        assert!(msg.contains("NVME_TESTS_ALLOW_SKIP=1"), "{msg}");

        record_skip("t2", "another check", "another reason", Some(&log), true);
        let text = std::fs::read_to_string(&log).expect("the skip log was written");
        assert_eq!(
            text,
            "SKIP t1: a check (a reason)\nSKIP t2: another check (another reason)\n"
        );
        std::fs::remove_file(&log).expect("remove the log");
    }

    #[test]
    fn a_skip_that_cannot_be_logged_fails_even_when_allowed() {
        let log = Path::new("/nonexistent-dir/e2e-skips");
        let r =
            std::panic::catch_unwind(|| record_skip("t", "a check", "a reason", Some(log), true));
        assert!(r.is_err(), "an unrecorded skip would be a silent one");
    }
}

// ------------------------------------------------------------- many cases per boot

/// One guest run that several tests read. A boot costs 10 to 20 s under TCG, so
/// tests that each check a part of what one script printed share its run: the first
/// test to ask boots the guest, the others wait for it and read the same output
/// (each still asserts its own part, under its own name). A run that panics is not
/// kept: the next test to ask runs it again.
///
/// ```no_run
/// use e2e::{Guest, SharedRun, Topology};
/// static BOOT: SharedRun = SharedRun::new();
/// let out = BOOT.get(|| Guest::new(Topology::Single).run("echo a; echo b"));
/// assert!(out.stdout.contains("a"));
/// ```
#[derive(Debug)]
pub struct SharedRun(OnceLock<GuestOutput>);

impl SharedRun {
    /// A run not made yet.
    pub const fn new() -> Self {
        SharedRun(OnceLock::new())
    }

    /// The run's output, made by `run` if no test has made it yet.
    pub fn get(&self, run: impl FnOnce() -> GuestOutput) -> &GuestOutput {
        self.0.get_or_init(run)
    }
}

impl Default for SharedRun {
    fn default() -> Self {
        Self::new()
    }
}

/// Defines `run_case NAME CMD...` in the guest script: it prints the command's exit
/// status, stdout and stderr between markers (the guest's stderr is a separate serial
/// port, so per-command files keep them apart); [`cases`] reads them back.
pub const RUN_CASE: &str = r#"
run_case() {
    name=$1; shift
    "$@" >/tmp/case.out 2>/tmp/case.err
    rc=$?
    echo "@@CASE $name $rc@@"
    cat /tmp/case.out
    printf '\n@@STDERR@@\n'
    cat /tmp/case.err
    printf '\n@@END@@\n'
}
"#;

/// One command's exit status and output.
#[derive(Debug)]
pub struct Case {
    /// Exit status.
    pub rc: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

/// The `run_case` results of a guest's stdout, by name.
pub fn cases(out: &GuestOutput) -> BTreeMap<String, Case> {
    let mut map = BTreeMap::new();
    let mut rest = out.stdout.as_str();
    while let Some(start) = rest.find("@@CASE ") {
        rest = &rest[start + "@@CASE ".len()..];
        let (head, body) = rest.split_once("@@\n").expect("case header");
        let (name, rc) = head.rsplit_once(' ').expect("case name and status");
        let (block, after) = body.split_once("@@END@@").expect("case end");
        let (o, e) = block.split_once("@@STDERR@@").expect("case stderr");
        map.insert(
            name.to_string(),
            Case {
                rc: rc.parse().expect("case status"),
                out: o.trim_end().to_string(),
                err: e.trim().to_string(),
            },
        );
        rest = after;
    }
    map
}

/// The case `name`, which must have run.
pub fn case<'a>(cases: &'a BTreeMap<String, Case>, name: &str, out: &GuestOutput) -> &'a Case {
    cases
        .get(name)
        .unwrap_or_else(|| panic!("case {name} did not run:\n{out}"))
}

/// Asserts a case exited 0.
pub fn ok<'a>(cases: &'a BTreeMap<String, Case>, name: &str, out: &GuestOutput) -> &'a Case {
    let c = case(cases, name, out);
    assert_eq!(c.rc, 0, "{name} failed: {c:#?}");
    c
}
