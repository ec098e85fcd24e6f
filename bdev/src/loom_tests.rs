// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `loom` models of the lock-free pieces. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p nvme-bdev --release loom`.

use crate::qsbr::{Qsbr, QsbrCell};
use crate::ring::Ring;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;

/// A snapshot that records its own reclamation.
struct Snap {
    value: usize,
    freed: Arc<AtomicBool>,
}

impl Drop for Snap {
    fn drop(&mut self) {
        self.freed.store(true, Ordering::SeqCst);
    }
}

#[test]
fn loom_path_set_swap_with_qsbr_reclamation() {
    loom::model(|| {
        let domain = Qsbr::new(2);
        let flags: Vec<Arc<AtomicBool>> =
            (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let cell = std::sync::Arc::new(QsbrCell::new(
            Snap {
                value: 0,
                freed: flags[0].clone(),
            },
            domain.clone(),
        ));
        let mut reader = domain.register().unwrap();
        let c = cell.clone();
        let r = loom::thread::spawn(move || {
            let mut last = 0;
            for _ in 0..2 {
                {
                    let s = c.load(&reader);
                    // Never a reclaimed snapshot, never an older one than before.
                    assert!(
                        !s.freed.load(Ordering::SeqCst),
                        "reader saw a freed snapshot"
                    );
                    assert!(s.value >= last);
                    last = s.value;
                }
                reader.quiescent();
            }
            drop(reader);
        });
        for v in 1..3 {
            cell.publish(Snap {
                value: v,
                freed: flags[v].clone(),
            });
            domain.reclaim();
        }
        r.join().unwrap();
        // With the reader gone, everything retired can go, and goes.
        domain.reclaim();
        assert_eq!(domain.pending(), 0);
        assert!(flags[0].load(Ordering::SeqCst) && flags[1].load(Ordering::SeqCst));
        assert!(
            !flags[2].load(Ordering::SeqCst),
            "the current snapshot is never freed"
        );
    });
}

#[test]
fn loom_cross_core_ring_two_producers() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let got = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (1..=2usize)
            .map(|v| {
                let r = ring.clone();
                loom::thread::spawn(move || {
                    let mut x = v;
                    loop {
                        match r.push(x) {
                            Ok(()) => break,
                            Err(back) => {
                                x = back;
                                loom::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        let mut seen = 0;
        while seen < 2 {
            match ring.pop() {
                Some(v) => {
                    got.fetch_add(v, Ordering::SeqCst);
                    seen += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(got.load(Ordering::SeqCst), 3, "each value exactly once");
        assert!(ring.pop().is_none());
    });
}

#[test]
fn loom_ring_wraps_when_full() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let r = ring.clone();
        let p = loom::thread::spawn(move || {
            for v in 0..3usize {
                let mut x = v;
                while let Err(back) = r.push(x) {
                    x = back;
                    loom::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < 3 {
            match ring.pop() {
                Some(v) => {
                    assert_eq!(v, next, "FIFO");
                    next += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        p.join().unwrap();
    });
}

/// The signal a multipath channel relies on: a writer puts a message on a channel's
/// mailbox and then moves the QSBR epoch (a publication, or `bump`); a channel that
/// sees the epoch moved (`changed`) finds the message.
#[test]
fn loom_epoch_move_announces_mailbox_messages() {
    loom::model(|| {
        let domain = Qsbr::new(1);
        let ring = Arc::new(Ring::new(2));
        let mut reader = domain.register().unwrap();
        let (d, r) = (domain.clone(), ring.clone());
        let writer = loom::thread::spawn(move || {
            assert!(r.push(7usize).is_ok());
            d.bump();
        });
        if reader.changed() {
            reader.quiescent();
            assert_eq!(ring.pop(), Some(7), "epoch moved, message missing");
        }
        writer.join().unwrap();
        // Once the writer is done, the reader sees the move, or already took it in.
        assert!(reader.changed() || ring.is_empty());
    });
}
