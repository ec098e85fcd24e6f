// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The behaviour oracle: judges what the block layer did, not only what the data
//! says. Two kinds of rule.
//!
//! **Path choice, per dispatch.** The test thread is the only thread that drives a
//! channel, so every I/O a channel dispatches to a path (its per-path `submitted`
//! count moving) happens inside one call of [`Lane::poll`](super::model::Lane::poll)
//! (the channel's poll and the submits that follow it). Around each call the oracle
//! reads the published path set (its generation before and after the read, so the
//! snapshot is whole) and the channel's per-path counters; it judges a call only when
//! the generation did not move from before the call to after it: the set was then
//! published before the call began, every publication moves the QSBR epoch, so the
//! call's poll was a full one that rebuilt the channel's view from that set before
//! anything was dispatched (and a submit that selects loads the same set). I/O sent
//! before the layer could know, and I/O already in flight, never count: only
//! dispatches in a call that began after the knowledge arrived. The rules:
//! - a dispatch to a path that the set says is not connected, or whose ANA state is
//!   neither optimized nor non-optimized (read by the oracle from the raw state, not
//!   through the layer's `usable`), or that the set no longer has, is a finding;
//! - a dispatch to a path from which this channel received an ANA error status in an
//!   earlier call, when nothing could have told the layer otherwise since (no new path
//!   set, and the simulator has not changed that controller's ANA state nor replaced
//!   it), is a finding, however long ago the error was: an ANA error is knowledge
//!   until the ANA log is read (the layer avoids the path until its controller thread
//!   publishes a new set after the re-read, which takes a controller thread turn or
//!   two; its safety deadline, the ANA transition time, 10 s here, is never needed
//!   while that thread runs);
//! - a dispatch to a non-optimized path while an optimized one was available to the
//!   channel is a finding: the optimized path is connected in the set, held by the
//!   channel, its queue neither resetting nor failed at the start and end of the call
//!   (a queue changes those only when polled, at most once per call), and not avoided
//!   (no path error from it in this call, nor within 2 ms before the call began; the
//!   layer avoids a path for 0.5 ms after one; and no ANA error from it to this
//!   channel with no new set since). Every policy of this layer chooses
//!   from the best ANA tier that has an available path, so the rule holds for all
//!   three, not only active-passive.
//!
//! **Every timeout, reset, failure and failover explained, per controller, per seed.**
//! Each fault the simulator injects on a controller explains a bounded number of each
//! (see [`Oracle::judge_controller`]); more than the faults explain is a finding.

use super::report::FAULTS;
use nvme_bdev::mpath::{PathInfo, PathIoStats};
use nvme_bdev::NvmeQueue;
use nvme_bdev::{ControllerStats, Multipath};
use nvme_driver::spec::AnaState;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// I/Os one controller can hold at once: every slot of every lane.
pub const HELD_MAX: u64 = (super::CHANNELS * super::model::SLOTS) as u64;
/// How long after a path error the oracle assumes the path may still be avoided
/// (the layer's avoidance is 0.5 ms; the margin covers clock reads).
const AVOID_MARGIN: Duration = Duration::from_millis(2);

/// Index of a fault kind in [`FAULTS`].
fn kind(name: &str) -> usize {
    FAULTS
        .iter()
        .position(|f| *f == name)
        .expect("a fault kind the simulator names")
}

/// What the oracle read before a call.
pub struct Before {
    /// The path set, when it did not move while being read.
    set: Option<(u64, Vec<PathInfo>)>,
    at: Instant,
}

impl Before {
    /// A call not to judge (the counters only).
    pub fn unjudged() -> Before {
        Before {
            set: None,
            at: Instant::now(),
        }
    }
}

/// One channel's counters as last read, and what it learnt.
#[derive(Default)]
struct LaneSeen {
    last: HashMap<u64, PathIoStats>,
    /// Paths this channel received an ANA error from, and when.
    ana_error: HashMap<u64, AnaErrorSeen>,
    /// When the last call in which a path returned a path error ended.
    path_error_at: HashMap<u64, Instant>,
}

/// The call in which a channel received an ANA error from a path.
#[derive(Clone, Copy)]
struct AnaErrorSeen {
    /// The path set's generation before the call (`None`: it moved while being read).
    /// The channel handled the error with a view at least this new, so a dispatch
    /// with this set still current had no news since.
    before: Option<u64>,
    /// The generation after the call. The channel may have handled the error with
    /// an older view (the set moved during the call): the path is surely no longer
    /// avoided for the error only once a set newer than this one is current.
    after: u64,
    /// The controller's ANA epoch (the simulator's ANA changes and replacements).
    epoch: u64,
    /// When the call began.
    at: Instant,
}

/// Counts of one path over the seed (all channels).
#[derive(Default, Clone, Copy)]
struct PathTotals {
    timeouts: u64,
    reset_aborts: u64,
    path_errors: u64,
}

/// The oracle of one seed.
pub struct Oracle {
    names: HashMap<u64, String>,
    lanes: Vec<LaneSeen>,
    paths: HashMap<u64, PathTotals>,
    /// Findings of the path-choice rules (at most a few kept, all counted).
    pub findings: Vec<String>,
    pub choice_findings: u64,
    pub judged_calls: u64,
}

impl Oracle {
    pub fn new(lanes: usize) -> Oracle {
        Oracle {
            names: HashMap::new(),
            lanes: (0..lanes).map(|_| LaneSeen::default()).collect(),
            paths: HashMap::new(),
            findings: Vec::new(),
            choice_findings: 0,
            judged_calls: 0,
        }
    }

    /// Reads the path set before a call (not judged if it moved while being read).
    pub fn before(&mut self, mp: &Multipath<NvmeQueue>) -> Before {
        let at = Instant::now();
        let generation = mp.generation();
        let paths = mp.paths();
        if mp.generation() != generation {
            return Before { set: None, at };
        }
        for p in &paths {
            self.names.entry(p.id).or_insert_with(|| p.name.clone());
        }
        Before {
            set: Some((generation, paths)),
            at,
        }
    }

    fn finding(&mut self, text: String) {
        self.choice_findings += 1;
        if self.findings.len() < 5 {
            self.findings.push(text);
        }
    }

    /// After a call of lane `lane`: `now` is its channel's per-path counters,
    /// `ana_epoch` the simulator's count of ANA changes and device replacements
    /// per controller name.
    pub fn after(
        &mut self,
        lane: usize,
        before: Before,
        now: &[PathIoStats],
        mp: &Multipath<NvmeQueue>,
        ana_epoch: &dyn Fn(&str) -> u64,
    ) {
        let generation_after = mp.generation();
        let start = before.at;
        let before_generation = before.set.as_ref().map(|(g, _)| *g);
        let stable = before.set.as_ref().filter(|(g, _)| *g == generation_after);
        let end = Instant::now();
        if stable.is_some() {
            self.judged_calls += 1;
        }
        let mut found = Vec::new();
        // Judged against the counters as they were before the call (`last`), all of
        // them: the updates come after.
        for s in now {
            let seen = &self.lanes[lane];
            let prev = previous(seen, s.id);
            let sent = s.submitted - prev.submitted;
            let (Some((generation, paths)), true) = (stable, sent > 0) else {
                continue;
            };
            let name = self.names.get(&s.id).cloned();
            let what = |state: String| {
                format!(
                    "channel {lane} sent {sent} I/O to {} (path {}) while {state} \
                     (path set generation {})",
                    name.as_deref().unwrap_or("?"),
                    s.id,
                    generation
                )
            };
            match paths.iter().find(|p| p.id == s.id) {
                None => found.push(what("the path set no longer had it".into())),
                Some(p) if !p.state.connected || !usable(p.state.ana) => found.push(what(format!(
                    "the path set said connected {} ANA {:?}",
                    p.state.connected, p.state.ana
                ))),
                Some(p) => {
                    if let (Some(&seen_err), Some(n)) = (seen.ana_error.get(&s.id), &name) {
                        let news =
                            seen_err.before != Some(*generation) || seen_err.epoch != ana_epoch(n);
                        let at = seen_err.at;
                        if !news {
                            found.push(what(format!(
                                "it had returned an ANA error to this channel in an earlier \
                                 call {} us before, and nothing has told the layer otherwise \
                                 since (no new path set, no ANA change)",
                                end.duration_since(at).as_micros()
                            )));
                        }
                    }
                    if p.state.ana == AnaState::NonOptimized {
                        let better = paths.iter().find(|q| {
                            q.state.connected
                                && q.state.ana == AnaState::Optimized
                                && available(seen, q.id, now, start, *generation)
                        });
                        if let Some(q) = better {
                            found.push(what(format!(
                                "it is non-optimized and {} (path {}) was optimized and \
                                 available to the channel",
                                q.name, q.id
                            )));
                        }
                    }
                }
            }
        }
        for s in now {
            let prev = previous(&self.lanes[lane], s.id);
            let t = self.paths.entry(s.id).or_default();
            t.timeouts += s.timeouts - prev.timeouts;
            t.reset_aborts += s.reset_aborts - prev.reset_aborts;
            t.path_errors += s.path_errors - prev.path_errors;
            let name = self.names.get(&s.id).cloned();
            let seen = &mut self.lanes[lane];
            if s.ana_errors > prev.ana_errors {
                if let Some(n) = &name {
                    seen.ana_error.insert(
                        s.id,
                        AnaErrorSeen {
                            before: before_generation,
                            after: generation_after,
                            epoch: ana_epoch(n),
                            at: start,
                        },
                    );
                }
            }
            if s.path_errors > prev.path_errors {
                seen.path_error_at.insert(s.id, end);
            }
            seen.last.insert(s.id, *s);
        }
        for f in found {
            self.finding(f);
        }
    }

    /// Remembers the names of the paths in `paths` (for the totals per controller).
    pub fn learn_names(&mut self, paths: &[PathInfo]) {
        for p in paths {
            self.names.entry(p.id).or_insert_with(|| p.name.clone());
        }
    }

    /// Timeouts, reset aborts and path errors (failovers) of controller `name`'s
    /// paths over the seed, all channels.
    fn totals(&self, name: &str) -> PathTotals {
        let mut t = PathTotals::default();
        for (id, p) in &self.paths {
            if self.names.get(id).map(String::as_str) == Some(name) {
                t.timeouts += p.timeouts;
                t.reset_aborts += p.reset_aborts;
                t.path_errors += p.path_errors;
            }
        }
        t
    }

    /// Judges controller `name`: `faults` injected on it per kind of [`FAULTS`],
    /// `stats` what the layer did to it, `posted` the path errors its devices
    /// posted (ANA error statuses, and Aborted SQ Deletion for held commands). Returns what the faults do not explain, and the counts.
    ///
    /// What one fault explains, at most (`E` = [`HELD_MAX`], the I/Os a controller
    /// can hold):
    /// - timeouts (each followed by an Abort): a dropped completion 1; a fault that
    ///   stalls a completion queue or the whole device until the controller is reset
    ///   or failed (wrong phase, bogus CID, wrong SQ head, duplicate, fatal status,
    ///   removal) E; the others none (delays are far below the 100 ms deadline);
    /// - resets (completed, whoever started them): one asked for 1; fatal status 1
    ///   (the driver resets on CSTS.CFS); a wrong phase 1 (a stuck completion queue
    ///   ends in a reset); a dropped completion 1 (if its Abort gets no answer);
    /// - failures: any fault but a delay, a reorder or an ANA change, 1;
    /// - failovers (path errors): each needs a source: a path error the device posted
    ///   (ANA error, or Aborted SQ Deletion of a command it held), a command the queue
    ///   handed back at a reset or failure (its `reset_aborts`), or, E per failure, a
    ///   request waiting on a failed queue pair's pending queue. (Counting sources
    ///   rather than resets: a reset may still be running, waiting out an admin
    ///   timeout, when the seed ends.)
    pub fn judge_controller(
        &self,
        name: &str,
        faults: &[u64; FAULTS.len()],
        stats: ControllerStats,
        posted: (u64, u64),
    ) -> (Vec<String>, Explained) {
        let (ana_errors, sq_deletions) = posted;
        let f = |k: &str| faults[kind(k)];
        let t = self.totals(name);
        let stall =
            f("phase") + f("bogus") + f("sqhead") + f("duplicate") + f("fatal") + f("remove");
        let timeouts_max = f("drop") + HELD_MAX * stall;
        let resets_max = f("reset") + f("fatal") + f("phase") + f("drop");
        let failures_max = faults.iter().sum::<u64>() - f("delay") - f("reorder") - f("ana");
        let failovers_max = ana_errors + sq_deletions + t.reset_aborts + HELD_MAX * stats.failures;
        let list = FAULTS
            .iter()
            .zip(faults)
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let faults_text = if list.is_empty() { "none".into() } else { list };
        let mut out = Vec::new();
        let mut check = |what: &str, n: u64, max: u64, how: &str| {
            if n > max {
                out.push(format!(
                    "{name}: {n} {what}, the faults injected on it explain at most {max} \
                     ({how}; faults: {faults_text})"
                ));
            }
        };
        check(
            "command timeouts (each an Abort)",
            t.timeouts,
            timeouts_max,
            &format!("1 per drop, {HELD_MAX} per phase, bogus, sqhead, duplicate, fatal or remove"),
        );
        check(
            "controller resets",
            stats.resets,
            resets_max,
            "1 per reset asked, fatal, phase or drop",
        );
        check(
            "controller failures",
            stats.failures,
            failures_max,
            "1 per fault other than delay, reorder or ana",
        );
        check(
            "failovers (path errors)",
            t.path_errors,
            failovers_max,
            &format!(
                "{ana_errors} ANA errors and {sq_deletions} SQ deletion aborts posted, {} \
                 handed back at resets and failures, {HELD_MAX} per failure ({} failures)",
                t.reset_aborts, stats.failures
            ),
        );
        let explained = Explained {
            timeouts: t.timeouts,
            resets: stats.resets,
            failures: stats.failures,
            failovers: t.path_errors,
        };
        (out, explained)
    }
}

/// What a controller's counts came to over a seed (for the totals).
#[derive(Default, Debug, Clone, Copy)]
pub struct Explained {
    pub timeouts: u64,
    pub resets: u64,
    pub failures: u64,
    pub failovers: u64,
}

/// Path `id`'s counters in this channel as last read (zero for a path not seen yet:
/// all its counts are new).
fn previous(seen: &LaneSeen, id: u64) -> PathIoStats {
    seen.last.get(&id).copied().unwrap_or(PathIoStats {
        id,
        ..PathIoStats::default()
    })
}

/// The oracle's own reading of an ANA state: I/O may go there.
fn usable(ana: AnaState) -> bool {
    matches!(ana, AnaState::Optimized | AnaState::NonOptimized)
}

/// True if path `id` was surely available to the channel throughout a call that
/// began at `start` with path set `generation`: held before and after it, its queue
/// neither resetting nor failed at either end, no path error from it recent enough to
/// be avoided, and no ANA error from it to this channel with no new set since.
fn available(
    seen: &LaneSeen,
    id: u64,
    now: &[PathIoStats],
    start: Instant,
    generation: u64,
) -> bool {
    let (Some(a), Some(b)) = (seen.last.get(&id), now.iter().find(|s| s.id == id)) else {
        return false;
    };
    !a.resetting
        && !a.failed
        && !b.resetting
        && !b.failed
        && b.path_errors == a.path_errors
        && seen
            .path_error_at
            .get(&id)
            .is_none_or(|&t| t + AVOID_MARGIN < start)
        && seen.ana_error.get(&id).is_none_or(|e| e.after < generation)
}
