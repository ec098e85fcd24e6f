// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A multipath bdev's size follows its paths: they reach one namespace, but each
//! controller learns of a resize on its own (its own Namespace Attribute Changed
//! notice), so for a while after a resize the paths may disagree. The bdev's size is
//! the smallest any of its paths reports (a path not heard from since it joined counts
//! as the size it joined at): a grow shows once every path has seen it, a shrink as
//! soon as one has. So the bdev never takes I/O that one of its paths would refuse
//! for its range, and it changes size once per resize, however the notices of its
//! controllers interleave. A path whose controller is lost keeps the size it last
//! reported until it reconnects (the new instance reports again) or is removed.

use super::{Multipath, Writer};
use crate::events::BdevEvent;
use crate::io::PathQueue;
use crate::sync::lock_std as lock;
use std::sync::atomic::Ordering;

impl<Q: PathQueue> Multipath<Q> {
    /// Blocks now (follows resizes; [`BdevInfo::num_blocks`](super::BdevInfo) is the
    /// size when the bdev was made).
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Acquire)
    }

    /// Path `id`'s controller reports that the namespace has `blocks` blocks: the
    /// bdev's size becomes the smallest of its paths', and a change is reported as
    /// [`BdevEvent::Resized`]. Returns false for an unknown path.
    pub fn set_path_blocks(&self, id: u64, blocks: u64) -> bool {
        let w = lock(&self.writer);
        if !w.paths.iter().any(|p| p.shared.id == id) {
            return false;
        }
        let mut sizes = lock(&self.path_blocks);
        match sizes.iter_mut().find(|(p, _)| *p == id) {
            Some(entry) => entry.1 = blocks,
            None => sizes.push((id, blocks)),
        }
        self.follow_paths(&w, &sizes);
        true
    }

    /// Path `id` left (called by `remove_path` under the writer lock): its size no
    /// longer holds the bdev back.
    pub(super) fn forget_path_blocks(&self, w: &Writer<Q>, id: u64) {
        let mut sizes = lock(&self.path_blocks);
        sizes.retain(|(p, _)| *p != id);
        self.follow_paths(w, &sizes);
    }

    /// Sets the size to the smallest path's (under the writer lock, so sizes and
    /// events come in one order).
    fn follow_paths(&self, w: &Writer<Q>, sizes: &[(u64, u64)]) {
        let old = self.num_blocks();
        let Some(new) = w
            .paths
            .iter()
            .map(|p| {
                sizes
                    .iter()
                    .find(|(id, _)| *id == p.shared.id)
                    .map_or(old, |&(_, b)| b)
            })
            .min()
        else {
            return;
        };
        if new == old {
            return;
        }
        self.num_blocks.store(new, Ordering::Release);
        if let Some(hub) = self.events.get() {
            hub.emit(BdevEvent::Resized {
                bdev: self.info.name.clone(),
                old_blocks: old,
                new_blocks: new,
            });
        }
    }
}
