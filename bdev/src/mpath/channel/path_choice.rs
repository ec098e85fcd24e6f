// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The multipath path choice: which path this core sends an I/O to.
//!
//! Each channel keeps its own copy of the usable paths of the path set (the view),
//! best ANA tier first, rebuilt when the channel sees a new set. In front of the one
//! selection function, [`PathChoice::select`], sits a cached choice, as SPDK's
//! `bdev_nvme_find_io_path` keeps `current_io_path`: under active-passive every I/O
//! goes to the cached path without selecting again. The cache is dropped whenever
//! the choice could change: a new path set (a path's state, paths added or removed),
//! a path avoided after a path error or a refusal, avoidance ending, the cached
//! path's queue holding I/O for a reset of its controller (checked at each
//! dispatch). While any path is avoided nothing is cached, so every I/O selects (and
//! notices the avoidance end).
//! Round robin and least queue depth select for every I/O.

use super::super::{PathSet, PathShared, Policy, MAX_PATHS};
use super::PathIoStats;
use crate::io::PathQueue;
use nvme_driver::clock;
use nvme_driver::spec::AnaState;
use std::sync::Arc;

/// Local paths one channel can hold at once: the paths of the set plus those being
/// removed that still have I/O in flight. At most 64 (a bit each in the channel's
/// `busy` mask); the table they live in has 256 entries so a `u8` index needs no
/// bounds check.
pub(super) const LOCAL_PATHS: usize = 64;

/// A path as one channel holds it: its queue and this core's bookkeeping. Boxed by
/// whoever hands the path to the channel (the channel's maker or the path's adder),
/// so the channel's core never allocates for it.
pub(crate) struct LocalPath<Q> {
    pub(super) shared: Arc<PathShared>,
    /// `shared.nsid`, kept at hand for the submit path.
    pub(super) nsid: u32,
    pub(super) queue: Q,
    /// This path's bit in the channel's `busy` mask (set when it takes its place in
    /// the table).
    pub(super) busy_bit: u64,
    /// Not chosen before this time (ticks; 0: not avoided).
    pub(super) avoid_until: u64,
    /// Left the path set: finishes its I/O, takes no new I/O, then is let go.
    pub(super) removing: bool,
    pub(super) stats: PathIoStats,
}

impl<Q> LocalPath<Q> {
    /// Path `shared` over `queue`, boxed (off the channel's core).
    pub(crate) fn boxed(shared: Arc<PathShared>, queue: Q) -> Box<Self> {
        Box::new(LocalPath {
            stats: PathIoStats {
                id: shared.id,
                ..PathIoStats::default()
            },
            nsid: shared.nsid,
            shared,
            queue,
            busy_bit: 0,
            avoid_until: 0,
            removing: false,
        })
    }
}

/// The local-path table: indexed by a `u8` (a local path's index), so lookups need no
/// bounds check; only the first [`LOCAL_PATHS`] entries are used.
pub(super) type PathTable<Q> = [Option<Box<LocalPath<Q>>>; 256];

/// Local path `path` of `paths`. Always there where the channel's bookkeeping (a
/// `busy` bit, an in-flight slot, the view, the cached choice) names it: callers
/// treat `None` as nothing to do, and debug builds stop on it.
#[inline(always)]
pub(super) fn local<Q>(paths: &mut PathTable<Q>, path: u8) -> Option<&mut LocalPath<Q>> {
    let p = paths[path as usize].as_deref_mut();
    debug_assert!(p.is_some(), "local path {path} is named but not held");
    p
}

/// [`PathChoice`]'s cached choice when there is none (local path indexes are below
/// [`LOCAL_PATHS`]).
const NO_PATH: u8 = u8::MAX;

/// One usable path in this core's view.
#[derive(Clone, Copy, Debug, Default)]
struct ViewEntry {
    /// Its index in the local-path table.
    path: u8,
    /// ANA optimized (the best tier) rather than non-optimized.
    optimized: bool,
}

/// This core's view of the path set, and the choice made from it.
pub(super) struct PathChoice {
    policy: Policy,
    /// The usable paths of the set, optimized ones first, each tier in the order the
    /// paths were added.
    view: [ViewEntry; MAX_PATHS],
    view_len: usize,
    /// The generation of the set the view was built from (`None`: build it at the
    /// next look, the local paths changed).
    generation: Option<u64>,
    /// Active-passive: the last choice, made while no path was avoided; [`NO_PATH`]
    /// after anything that could change the choice. (The other policies select every
    /// time.) A `u8` with a value for "none" rather than an `Option<u8>`: one load and
    /// one compare on every submit instead of two loads.
    cached: u8,
    /// Round robin: where the next selection starts in the view.
    next_round_robin: usize,
    /// The latest `avoid_until` among avoided paths (0: none is avoided).
    avoid_max: u64,
}

impl PathChoice {
    pub(super) fn new(policy: Policy) -> PathChoice {
        PathChoice {
            policy,
            view: [ViewEntry::default(); MAX_PATHS],
            view_len: 0,
            generation: None,
            cached: NO_PATH,
            next_round_robin: 0,
            avoid_max: 0,
        }
    }

    /// The local paths changed (one added, one being removed): the view is rebuilt at
    /// the next look.
    pub(super) fn invalidate(&mut self) {
        self.generation = None;
        self.cached = NO_PATH;
    }

    /// True if the view was built from a set of `generation`.
    #[inline(always)]
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.generation == Some(generation)
    }

    /// Rebuilds the view from `set`. A new set is new information: every path's
    /// avoidance is forgotten.
    pub(super) fn rebuild<Q>(&mut self, set: &PathSet, paths: &mut PathTable<Q>) {
        self.generation = Some(set.generation);
        let mut n = 0;
        for optimized in [true, false] {
            for pv in &set.paths {
                if !pv.state.usable() || (pv.state.ana == AnaState::Optimized) != optimized {
                    continue;
                }
                let local = paths[..LOCAL_PATHS].iter().position(|p| {
                    p.as_ref()
                        .is_some_and(|p| p.shared.id == pv.id && !p.removing)
                });
                // A path of the set that this channel does not hold yet (its queue is
                // still in the mailbox) is left out until it arrives.
                if let (Some(path), true) = (local, n < MAX_PATHS) {
                    self.view[n] = ViewEntry {
                        path: path as u8,
                        optimized,
                    };
                    n += 1;
                }
            }
        }
        self.view_len = n;
        self.clear_avoidance(paths);
    }

    /// Forgets every path's avoidance and the cached choice.
    fn clear_avoidance<Q>(&mut self, paths: &mut PathTable<Q>) {
        for p in paths.iter_mut().flatten() {
            p.avoid_until = 0;
        }
        self.avoid_max = 0;
        self.cached = NO_PATH;
    }

    /// Avoids local path `path` until `until` (ticks) on this core.
    #[cold]
    pub(super) fn avoid<Q>(&mut self, paths: &mut PathTable<Q>, path: u8, until: u64) {
        debug_assert!(until > 0, "avoidance until time 0 is no avoidance");
        if let Some(p) = local(paths, path) {
            p.avoid_until = until;
        }
        self.avoid_max = self.avoid_max.max(until);
        self.cached = NO_PATH;
    }

    /// Avoids local path `path` for good on this core (until a new path set comes):
    /// its queue refuses everything, its controller failed. True while some path of
    /// the view is not avoided for good, so choosing again may find a path; each call
    /// takes one more path out, so a caller that chooses again while this is true
    /// stops after at most as many refusals as the view has paths.
    #[cold]
    pub(super) fn avoid_for_good<Q>(&mut self, paths: &mut PathTable<Q>, path: u8) -> bool {
        self.avoid(paths, path, u64::MAX);
        self.view[..self.view_len].iter().any(|e| {
            paths[e.path as usize]
                .as_ref()
                .is_some_and(|p| p.avoid_until != u64::MAX)
        })
    }

    /// The cached choice: where the next I/O goes without selecting again.
    #[inline(always)]
    pub(super) fn cached(&self) -> Option<u8> {
        (self.cached != NO_PATH).then_some(self.cached)
    }

    /// Picks a path by policy from the best ANA tier that has an available path: not
    /// avoided, its queue neither failed nor resetting. A resetting queue would hold
    /// the I/O until its controller's reset ends, which can take the admin timeout
    /// (10 s by default) while other paths could serve it; with no other path the I/O
    /// waits on the channel's pending queue instead (up to `fast_io_fail_timeout_ms`),
    /// as it does for a reset the block layer asks for, and goes out at the first
    /// full poll after the reset. `None` when no path is available. The view must be
    /// current (the caller rebuilds it first).
    #[inline(never)]
    pub(super) fn select<Q: PathQueue>(&mut self, paths: &mut PathTable<Q>) -> Option<u8> {
        // The clock matters only while some path is avoided.
        let now = if self.avoid_max == 0 {
            0
        } else {
            clock::ticks()
        };
        if self.avoid_max != 0 && now >= self.avoid_max {
            self.clear_avoidance(paths);
        }
        let view = &self.view[..self.view_len];
        let available = |e: &ViewEntry| {
            let p = paths[e.path as usize].as_deref();
            debug_assert!(
                p.is_some_and(|p| !p.removing),
                "the view names held paths that are not being removed"
            );
            p.is_some_and(|p| {
                p.avoid_until <= now && !p.queue.is_failed() && !p.queue.is_resetting()
            })
        };
        let first = view.iter().position(available)?;
        let tier = view[first].optimized;
        let in_tier = |e: &ViewEntry| e.optimized == tier && available(e);
        let chosen = match self.policy {
            Policy::ActivePassive => view[first].path,
            Policy::RoundRobin => {
                let n = view.len();
                let start = self.next_round_robin;
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| in_tier(&view[i]))?;
                self.next_round_robin = i + 1;
                view[i].path
            }
            Policy::LeastQueueDepth => {
                view.iter()
                    .filter(|e| in_tier(e))
                    .min_by_key(|e| {
                        paths[e.path as usize]
                            .as_ref()
                            .map_or(usize::MAX, |p| p.queue.outstanding())
                    })?
                    .path
            }
        };
        if self.policy == Policy::ActivePassive && self.avoid_max == 0 {
            self.cached = chosen;
        }
        Some(chosen)
    }
}
