// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Totals of a simulator run, printed in the shape of the reports of systems that
//! test this way (TigerBeetle's VOPR, Jepsen): faults injected per kind, I/Os
//! checked, lost, duplicated, corrupted, the longest pause, and what the behaviour
//! oracle judged and found.

use std::fmt::Write as _;
use std::time::Duration;

/// Fault kinds, in the order the schedule draws them (`NVME_SIM_FAULTS` names a subset
/// to narrow a failure down; the others are drawn but not applied).
pub const FAULTS: [&str; 11] = [
    "duplicate",
    "reorder",
    "delay",
    "drop",
    "bogus",
    "phase",
    "sqhead",
    "reset",
    "ana",
    "fatal",
    "remove",
];

/// What one seed, or a run of seeds, did and found.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub seeds: u64,
    pub failed_seeds: Vec<u64>,
    /// Faults applied, per kind of [`FAULTS`].
    pub injected: [u64; FAULTS.len()],
    /// I/Os whose completion was matched to the one I/O out on its slot.
    pub completed: u64,
    /// Reads that succeeded and were compared with the model.
    pub checked_reads: u64,
    /// Completions with an error status (allowed: the model accounts for them).
    pub errors: u64,
    /// I/Os submitted that never completed.
    pub lost: u64,
    /// Completions that matched no I/O out.
    pub duplicated: u64,
    /// Reads that returned data the model does not allow.
    pub corrupted: u64,
    /// The longest time a channel had I/O out and no completion, and its seed.
    pub longest_pause: (Duration, u64),
    /// Channel calls whose dispatches the oracle judged (the path set did not move
    /// during the call).
    pub judged_calls: u64,
    /// Dispatches to a path the layer knew it should not use (oracle findings).
    pub choice_findings: u64,
    /// Timeout, reset, failure or failover counts of a controller that the faults
    /// injected on it do not explain (oracle findings).
    pub unexplained: u64,
    /// Command timeouts (each an Abort), controller resets, controller failures and
    /// failovers the layer performed, all explained by faults unless counted above.
    pub timeouts: u64,
    pub resets: u64,
    pub failures: u64,
    pub failovers: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.seeds += o.seeds;
        self.failed_seeds.extend(&o.failed_seeds);
        for (a, b) in self.injected.iter_mut().zip(o.injected) {
            *a += b;
        }
        self.completed += o.completed;
        self.checked_reads += o.checked_reads;
        self.errors += o.errors;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.judged_calls += o.judged_calls;
        self.choice_findings += o.choice_findings;
        self.unexplained += o.unexplained;
        self.timeouts += o.timeouts;
        self.resets += o.resets;
        self.failures += o.failures;
        self.failovers += o.failovers;
        if o.longest_pause.0 > self.longest_pause.0 {
            self.longest_pause = o.longest_pause;
        }
    }

    /// The table, in Markdown, headed by `title`.
    pub fn table(&self, title: &str, wall: Duration) -> String {
        let mut t = String::new();
        let cpu = process_cpu();
        let _ = writeln!(
            t,
            "{title}: {} seeds ({} failed{}), wall {:.0} s, process CPU {}",
            self.seeds,
            self.failed_seeds.len(),
            if self.failed_seeds.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.failed_seeds)
            },
            wall.as_secs_f64(),
            cpu.map_or("unknown".into(), |c| format!("{:.0} s", c.as_secs_f64())),
        );
        let _ = writeln!(t, "| what | count |\n| --- | ---: |");
        for (k, n) in FAULTS.iter().zip(self.injected) {
            let _ = writeln!(t, "| fault injected: {k} | {n} |");
        }
        let total: u64 = self.injected.iter().sum();
        let _ = writeln!(t, "| faults injected, all kinds | {total} |");
        let _ = writeln!(
            t,
            "| I/Os checked (completed exactly once) | {} |",
            self.completed
        );
        let _ = writeln!(
            t,
            "| reads verified against the model | {} |",
            self.checked_reads
        );
        let _ = writeln!(
            t,
            "| errors returned (allowed by the model) | {} |",
            self.errors
        );
        let _ = writeln!(t, "| lost | {} |", self.lost);
        let _ = writeln!(t, "| duplicated | {} |", self.duplicated);
        let _ = writeln!(t, "| corrupted | {} |", self.corrupted);
        let _ = writeln!(
            t,
            "| channel calls judged for path choice (path set still) | {} |",
            self.judged_calls
        );
        let _ = writeln!(
            t,
            "| I/O sent to a path the layer knew it should not use | {} |",
            self.choice_findings
        );
        let _ = writeln!(
            t,
            "| timeouts / resets / failures / failovers performed | {} / {} / {} / {} |",
            self.timeouts, self.resets, self.failures, self.failovers
        );
        let _ = writeln!(
            t,
            "| of those, counts no injected fault explains | {} |",
            self.unexplained
        );
        let _ = writeln!(
            t,
            "| longest pause (no completion while I/O was out) | {} ms (seed {}) |",
            self.longest_pause.0.as_millis(),
            self.longest_pause.1
        );
        t
    }
}

/// CPU time (user + system) this process has used, from /proc/self/stat (clock
/// ticks of 1/100 s, Linux's USER_HZ).
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which ends with the last ')'): state is field 3,
    // utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
