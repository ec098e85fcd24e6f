// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The async interface (`AsyncChannel`) on software controllers, for both kinds of
//! channel (a namespace bdev's, a multipath bdev's over two controllers): every future
//! completes exactly once with its data read back intact, futures that find the
//! channel busy wait for room without being polled in between and are woken once, a
//! future dropped before its I/O completes leaves the I/O to complete into the
//! channel (which keeps the buffer until then), refusals are errors, and the steady
//! path allocates nothing (a counting global allocator in this test binary). Every
//! wait has a deadline.

use nvme_bdev::{
    AsyncChannel, BlockLayer, Error, IoBuf, IoBuffer, LayerOptions, MpathOptions, Status,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{DmaSlice, QpairOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

// ---- allocations, counted per thread ----------------------------------------------

struct Counting;

thread_local! {
    /// Allocations made by this thread (const-initialized, no destructor: reading it
    /// never allocates).
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// ---- the rig ----------------------------------------------------------------------

const LIMIT: Duration = Duration::from_secs(20);
/// Slots of a multipath channel.
const DEPTH: usize = 8;
const BLOCK: usize = 512;
const NLB: u32 = 8;
const IO_BYTES: usize = BLOCK * NLB as usize;
const NS_BLOCKS: u64 = 1 << 14;
const MPATH: &str = "nqn.2024-01.org.nvme-bdev:async:n1";
const NSBDEV: &str = "asyncAn1";

struct Rig {
    layer: BlockLayer,
    ns: Arc<Namespace>,
    ctrls: Vec<Arc<SoftController>>,
}

fn rig() -> Rig {
    let ns = Arc::new(Namespace::new(1, NS_BLOCKS, BLOCK as u32).unwrap());
    let soft = |name: &str, cntlid| {
        SoftController::start(SoftConfig {
            name: name.into(),
            subnqn: "nqn.2024-01.org.nvme-bdev:async".into(),
            cntlid,
            mqes: 63,
            namespaces: vec![ns.clone()],
            ..SoftConfig::default()
        })
    };
    let ctrls = vec![soft("asyncA", 1), soft("asyncB", 2)];
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            channel_depth: DEPTH,
            ..MpathOptions::default()
        },
        // The namespace bdev's channel: 7 commands in flight and 4 on its pending
        // ring, then busy.
        qpair: QpairOptions {
            entries: 8,
            pending_max: 4,
            timeout_ms: 5_000,
        },
        admin_poll_us: 500,
        ..LayerOptions::default()
    })
    .unwrap();
    layer.attach_bus("asyncA", ctrls[0].clone()).unwrap();
    layer.attach_bus("asyncB", ctrls[1].clone()).unwrap();
    Rig { layer, ns, ctrls }
}

fn async_channel<B: IoBuffer>(rig: &Rig, bdev: &str, slots: usize) -> AsyncChannel<B> {
    AsyncChannel::new(rig.layer.open(bdev).unwrap().channel().unwrap(), slots)
}

// ---- a minimal executor: tasks polled only when woken -----------------------------

/// A task's wake flag: what its waker sets.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs tasks on this thread until all are done, polling the channel in between:
/// a task is polled first, then only after its waker ran. Made before a run, so the
/// run itself allocates nothing.
struct Executor {
    flags: Vec<Arc<Flag>>,
    wakers: Vec<Waker>,
    done: Vec<bool>,
    /// Polls of each task in the last run.
    polls: Vec<u32>,
}

impl Executor {
    fn new(tasks: usize) -> Self {
        let flags: Vec<_> = (0..tasks)
            .map(|_| Arc::new(Flag(AtomicBool::new(true))))
            .collect();
        Executor {
            wakers: flags.iter().map(|f| Waker::from(f.clone())).collect(),
            flags,
            done: vec![false; tasks],
            polls: vec![0; tasks],
        }
    }

    fn run<B: IoBuffer, F: Future<Output = ()>>(
        &mut self,
        ch: &AsyncChannel<B>,
        tasks: &mut [Pin<&mut F>],
    ) {
        assert_eq!(tasks.len(), self.flags.len());
        for i in 0..tasks.len() {
            self.flags[i].0.store(true, Ordering::Release);
            self.done[i] = false;
            self.polls[i] = 0;
        }
        let t0 = Instant::now();
        let mut left = tasks.len();
        while left > 0 {
            for (i, task) in tasks.iter_mut().enumerate() {
                if self.done[i] || !self.flags[i].0.swap(false, Ordering::AcqRel) {
                    continue;
                }
                self.polls[i] += 1;
                if task
                    .as_mut()
                    .poll(&mut Context::from_waker(&self.wakers[i]))
                    .is_ready()
                {
                    self.done[i] = true;
                    left -= 1;
                }
            }
            ch.poll();
            assert!(
                t0.elapsed() < LIMIT,
                "{left} tasks not done after {LIMIT:?}: a future was never woken \
                 (channel: {ch:?})"
            );
        }
    }
}

/// Polls the channel until nothing is in flight.
fn drain<B: IoBuffer>(ch: &AsyncChannel<B>) {
    let t0 = Instant::now();
    while ch.in_flight() > 0 {
        assert!(t0.elapsed() < LIMIT, "I/O still in flight: {ch:?}");
        ch.poll();
    }
}

// ---- workers ----------------------------------------------------------------------

/// The byte worker `id` writes at `i` of iteration `k`.
fn pattern(id: usize, k: u32, i: usize) -> u8 {
    (id as u8).wrapping_mul(31) ^ (k as u8).wrapping_mul(7) ^ (i as u8)
}

/// Writes its own blocks and reads them back, `iters` times, checking every byte;
/// counts the I/Os it saw complete.
async fn worker(
    ch: &AsyncChannel,
    id: usize,
    iters: u32,
    mut wbuf: IoBuf,
    mut rbuf: IoBuf,
    done: &Cell<u64>,
) {
    let slba = id as u64 * NLB as u64;
    let mut bytes = [0u8; IO_BYTES];
    for k in 0..iters {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = pattern(id, k, i);
        }
        wbuf.write_at(0, &bytes).unwrap();
        let (w, result) = ch.write(slba, NLB, wbuf).await;
        wbuf = w;
        assert_eq!(result.unwrap(), Status::SUCCESS, "worker {id} write {k}");
        rbuf.fill(0xee);
        let (r, result) = ch.read(slba, NLB, rbuf).await;
        rbuf = r;
        assert_eq!(result.unwrap(), Status::SUCCESS, "worker {id} read {k}");
        rbuf.read_at(0, &mut bytes).unwrap();
        for (i, &b) in bytes.iter().enumerate() {
            assert!(
                b == pattern(id, k, i),
                "worker {id} iteration {k}: byte {i} read back {b:#04x}, wrote {:#04x}",
                pattern(id, k, i)
            );
        }
        done.set(done.get() + 2);
    }
}

/// `n` workers, each with its own two buffers.
fn workers<'a>(
    rig: &Rig,
    ch: &'a AsyncChannel,
    n: usize,
    iters: u32,
    done: &'a Cell<u64>,
) -> Vec<Pin<Box<impl Future<Output = ()> + 'a>>> {
    (0..n)
        .map(|id| {
            let w = rig.layer.alloc_buffer(IO_BYTES).unwrap();
            let r = rig.layer.alloc_buffer(IO_BYTES).unwrap();
            Box::pin(worker(ch, id, iters, w, r, done))
        })
        .collect()
}

fn every_io_completes_once_with_its_data(bdev: &str) {
    let rig = rig();
    let ch = async_channel(&rig, bdev, 64);
    // More workers than the channel takes at once: some wait for room.
    let (n, iters) = (24, 20);
    let done = Cell::new(0);
    let mut tasks = workers(&rig, &ch, n, iters, &done);
    let mut pinned: Vec<_> = tasks.iter_mut().map(|t| t.as_mut()).collect();
    Executor::new(n).run(&ch, &mut pinned);
    let s = ch.stats();
    let ios = (n as u64) * u64::from(iters) * 2;
    assert_eq!(done.get(), ios, "{bdev}: I/Os the workers saw complete");
    assert_eq!(s.submitted, ios, "{bdev}: submitted {s:?}");
    assert_eq!(s.completed, ios, "{bdev}: completed {s:?}");
    assert_eq!(s.stray_completions, 0, "{bdev}: {s:?}");
    assert!(
        s.waited > 0,
        "{bdev}: no future ever waited for room: {s:?}"
    );
    assert_eq!((ch.in_flight(), ch.waiting()), (0, 0));
    assert_eq!(ch.channel().outstanding(), 0);
    // What the device holds is what the last iteration wrote.
    let mut dev = [0u8; IO_BYTES];
    for id in 0..n {
        rig.ns.read_bytes((id * IO_BYTES) as u64, &mut dev).unwrap();
        for (i, &b) in dev.iter().enumerate() {
            assert_eq!(b, pattern(id, iters - 1, i), "{bdev}: worker {id} byte {i}");
        }
    }
    eprintln!("{bdev}: {ios} I/Os, {s:?}");
}

#[test]
fn every_future_completes_exactly_once_with_its_data_read_back() {
    every_io_completes_once_with_its_data(NSBDEV);
    every_io_completes_once_with_its_data(MPATH);
}

/// Futures that find the channel busy wait without being polled and are woken once:
/// every one is polled exactly twice (started, then done).
fn busy_futures_wait_for_room(bdev: &str) {
    let rig = rig();
    let ch = async_channel(&rig, bdev, 64);
    let n = 4 * DEPTH;
    let bufs: Vec<IoBuf> = (0..n)
        .map(|_| rig.layer.alloc_buffer(BLOCK).unwrap())
        .collect();
    let mut futs: Vec<_> = bufs
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let ch = &ch;
            Box::pin(async move {
                let (_, result) = ch.read(i as u64, 1, b).await;
                assert_eq!(result.unwrap(), Status::SUCCESS);
            })
        })
        .collect();
    let mut pinned: Vec<_> = futs.iter_mut().map(|t| t.as_mut()).collect();
    let mut exec = Executor::new(n);
    exec.run(&ch, &mut pinned);
    let s = ch.stats();
    assert!(
        s.waited as usize >= n - 2 * DEPTH,
        "{bdev}: {n} futures on a channel of about {DEPTH}, yet only {} waited: {s:?}",
        s.waited
    );
    for (i, &p) in exec.polls.iter().enumerate() {
        assert_eq!(
            p, 2,
            "{bdev}: future {i} was polled {p} times: a waiting future must be woken \
             once, when its I/O completed ({s:?})"
        );
    }
    assert_eq!(
        (s.submitted, s.completed, s.stray_completions),
        (n as u64, n as u64, 0)
    );
    eprintln!("{bdev}: {s:?}");
}

#[test]
fn a_busy_channel_makes_futures_wait_for_room_and_wakes_each_once() {
    busy_futures_wait_for_room(NSBDEV);
    busy_futures_wait_for_room(MPATH);
}

#[test]
fn more_futures_than_slots_wait_in_order() {
    let rig = rig();
    let ch = async_channel(&rig, MPATH, 2);
    let order = Cell::new(0u32);
    let n = 12;
    let bufs: Vec<IoBuf> = (0..n)
        .map(|_| rig.layer.alloc_buffer(BLOCK).unwrap())
        .collect();
    let mut futs: Vec<_> = bufs
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let (ch, order) = (&ch, &order);
            Box::pin(async move {
                let (_, result) = ch.read(i as u64, 1, b).await;
                assert_eq!(result.unwrap(), Status::SUCCESS);
                // Two slots: I/O is submitted in the futures' order, two at a time,
                // so each completes no earlier than two places before its turn.
                let place = order.get();
                order.set(place + 1);
                assert!(
                    (place as usize) + 2 > i,
                    "future {i} completed in place {place}: it overtook earlier ones"
                );
            })
        })
        .collect();
    let mut pinned: Vec<_> = futs.iter_mut().map(|t| t.as_mut()).collect();
    Executor::new(n).run(&ch, &mut pinned);
    let s = ch.stats();
    assert_eq!(s.waited, n as u64 - 2, "{s:?}");
    assert_eq!(s.completed, n as u64);
}

// ---- dropped futures --------------------------------------------------------------

/// A buffer that says when it is dropped.
struct Tracked {
    buf: IoBuf,
    dropped: Rc<Cell<bool>>,
}

// SAFETY: the memory is the `IoBuf`'s, which satisfies the contract; this adds a flag.
unsafe impl IoBuffer for Tracked {
    fn dma(&self) -> DmaSlice {
        self.buf.dma()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

fn noop_waker() -> Waker {
    Waker::from(Arc::new(Flag(AtomicBool::new(false))))
}

#[test]
fn a_future_dropped_in_flight_leaves_its_io_to_complete_into_the_channel() {
    let rig = rig();
    for c in &rig.ctrls {
        c.faults().set_completion_delay_us(200_000);
    }
    let ch: AsyncChannel<Tracked> = async_channel(&rig, MPATH, 8);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let dropped = Rc::new(Cell::new(false));
    let mut buf = rig.layer.alloc_buffer(BLOCK).unwrap();
    buf.fill(0x5a);
    let tracked = Tracked {
        buf,
        dropped: dropped.clone(),
    };
    {
        let mut fut = pin!(ch.write(7, 1, tracked));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            ch.in_flight(),
            1,
            "the write was submitted at its first poll"
        );
        // Dropped here, 200 ms before its completion.
    }
    assert!(
        !dropped.get(),
        "the buffer of a write still in flight was dropped with its future"
    );
    assert_eq!(ch.stats().abandoned, 1);
    drain(&ch);
    assert!(
        dropped.get(),
        "the buffer was not dropped once its I/O completed"
    );
    let s = ch.stats();
    assert_eq!(
        (s.submitted, s.completed, s.stray_completions),
        (1, 1, 0),
        "{s:?}"
    );
    // The write still happened.
    let mut dev = [0u8; BLOCK];
    rig.ns.read_bytes(7 * BLOCK as u64, &mut dev).unwrap();
    assert!(
        dev.iter().all(|&b| b == 0x5a),
        "the dropped write did not land"
    );
}

#[test]
fn a_future_dropped_while_waiting_leaves_the_wait_list_and_the_rest_complete() {
    let rig = rig();
    for c in &rig.ctrls {
        c.faults().set_completion_delay_us(100_000);
    }
    let ch: AsyncChannel<Tracked> = async_channel(&rig, MPATH, 64);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let flags: Vec<_> = (0..DEPTH + 3).map(|_| Rc::new(Cell::new(false))).collect();
    let mut futs: Vec<_> = flags
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let tracked = Tracked {
                buf: rig.layer.alloc_buffer(BLOCK).unwrap(),
                dropped: f.clone(),
            };
            Some(Box::pin(ch.read(i as u64, 1, tracked)))
        })
        .collect();
    for f in futs.iter_mut().flatten() {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!((ch.in_flight(), ch.waiting()), (DEPTH, 3));
    // The middle waiter goes: the list closes over it, its buffer goes with it (it
    // was never submitted).
    futs[DEPTH + 1] = None;
    assert!(flags[DEPTH + 1].get());
    assert_eq!(ch.waiting(), 2);
    // A never-polled future dropped: nothing to undo.
    drop(ch.read(
        0,
        1,
        Tracked {
            buf: rig.layer.alloc_buffer(BLOCK).unwrap(),
            dropped: Rc::new(Cell::new(false)),
        },
    ));
    let t0 = Instant::now();
    let mut finished = 0;
    while finished < DEPTH + 2 {
        assert!(t0.elapsed() < LIMIT, "{finished} finished: {ch:?}");
        ch.poll();
        for slot in futs.iter_mut() {
            if let Some(f) = slot {
                if let Poll::Ready((_, result)) = f.as_mut().poll(&mut cx) {
                    assert_eq!(result.unwrap(), Status::SUCCESS);
                    *slot = None;
                    finished += 1;
                }
            }
        }
    }
    let s = ch.stats();
    assert_eq!(
        (s.submitted, s.completed, s.waited),
        (DEPTH as u64 + 2, DEPTH as u64 + 2, 3)
    );
    assert_eq!(
        (ch.in_flight(), ch.waiting(), s.stray_completions),
        (0, 0, 0)
    );
}

// ---- refusals ---------------------------------------------------------------------

#[test]
fn a_refused_io_is_an_error_naming_the_problem() {
    let rig = rig();
    for bdev in [NSBDEV, MPATH] {
        let ch: AsyncChannel = async_channel(&rig, bdev, 8);
        let buf = rig.layer.alloc_buffer(BLOCK).unwrap();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(ch.read(NS_BLOCKS, 1, buf));
        let Poll::Ready((_, result)) = fut.as_mut().poll(&mut cx) else {
            panic!("{bdev}: a read past the end was not refused at once");
        };
        let e = result.expect_err("a read past the end");
        assert!(
            matches!(e, Error::InvalidIo(_) | Error::Driver(_)),
            "{bdev}: {e}"
        );
        assert!(
            e.to_string().contains(&NS_BLOCKS.to_string()),
            "{bdev}: {e}"
        );
        assert_eq!(ch.stats().refused, 1);
        assert_eq!(ch.in_flight(), 0);
    }
}

#[test]
fn shutdown_refuses_waiting_futures_and_lets_in_flight_io_complete() {
    let rig = rig();
    for c in &rig.ctrls {
        c.faults().set_completion_delay_us(50_000);
    }
    let ch: AsyncChannel = async_channel(&rig, MPATH, 64);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut futs: Vec<_> = (0..DEPTH + 4)
        .map(|i| {
            Some(Box::pin(ch.read(
                i as u64,
                1,
                rig.layer.alloc_buffer(BLOCK).unwrap(),
            )))
        })
        .collect();
    for f in futs.iter_mut().flatten() {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!((ch.in_flight(), ch.waiting()), (DEPTH, 4));
    ch.shutdown();
    let (mut ok, mut stopped) = (0, 0);
    let t0 = Instant::now();
    while ok + stopped < DEPTH + 4 {
        assert!(t0.elapsed() < LIMIT, "{ok} done, {stopped} refused: {ch:?}");
        ch.poll();
        for slot in futs.iter_mut() {
            if let Some(f) = slot {
                if let Poll::Ready((_, result)) = f.as_mut().poll(&mut cx) {
                    match result {
                        Ok(status) => {
                            assert_eq!(status, Status::SUCCESS);
                            ok += 1;
                        }
                        Err(Error::Stopped(_)) => stopped += 1,
                        Err(e) => panic!("a waiting future at shutdown: {e}"),
                    }
                    *slot = None;
                }
            }
        }
    }
    assert_eq!(
        (ok, stopped),
        (DEPTH, 4),
        "in flight completes, waiting is refused"
    );
    assert_eq!(
        (ch.in_flight(), ch.waiting(), ch.stats().refused),
        (0, 0, 4)
    );
}

#[test]
fn flush_write_zeroes_and_unmap_complete() {
    let rig = rig();
    let ch: AsyncChannel = async_channel(&rig, MPATH, 8);
    rig.ns.write_bytes(0, &[0xab; BLOCK * 4]).unwrap();
    let io = pin!(async {
        assert_eq!(ch.flush().await.unwrap(), Status::SUCCESS);
        assert_eq!(ch.write_zeroes(0, 2).await.unwrap(), Status::SUCCESS);
        assert_eq!(ch.unmap(2, 2).await.unwrap(), Status::SUCCESS);
    });
    Executor::new(1).run(&ch, &mut [io]);
    let mut dev = [0xffu8; BLOCK * 2];
    rig.ns.read_bytes(0, &mut dev).unwrap();
    assert!(dev.iter().all(|&b| b == 0), "write zeroes did not zero");
    assert_eq!(ch.stats().completed, 3);
}

// ---- allocations --------------------------------------------------------------------

fn steady_path_allocates_nothing(bdev: &str, n: usize) {
    let probe = allocs();
    drop(std::hint::black_box(Box::new(0u64)));
    assert!(allocs() > probe, "the counting allocator counted nothing");
    let rig = rig();
    let ch = async_channel(&rig, bdev, 64);
    let done = Cell::new(0);
    let mut exec = Executor::new(n);
    // Warm up: the first I/O on each path, timers, lazily made statics.
    {
        let mut tasks = workers(&rig, &ch, n, 5, &done);
        let mut pinned: Vec<_> = tasks.iter_mut().map(|t| t.as_mut()).collect();
        exec.run(&ch, &mut pinned);
    }
    let iters = 50;
    let mut tasks = workers(&rig, &ch, n, iters, &done);
    let mut pinned: Vec<_> = tasks.iter_mut().map(|t| t.as_mut()).collect();
    let before = ch.stats();
    let a0 = allocs();
    exec.run(&ch, &mut pinned);
    let a = allocs() - a0;
    let s = ch.stats();
    let ios = s.completed - before.completed;
    assert_eq!(ios, (n as u64) * u64::from(iters) * 2);
    assert_eq!(
        a,
        0,
        "{bdev}: {a} allocations on the polling thread for {ios} I/Os \
         ({} waited for room): the async path must allocate nothing per I/O",
        s.waited - before.waited
    );
    eprintln!(
        "{bdev}: {ios} I/Os, {} waited for room, 0 allocations",
        s.waited - before.waited
    );
}

#[test]
fn the_steady_path_allocates_nothing_per_io() {
    // Within the channel's depth, and beyond it (futures waiting for room).
    for bdev in [NSBDEV, MPATH] {
        steady_path_allocates_nothing(bdev, 4);
        steady_path_allocates_nothing(bdev, 3 * DEPTH);
    }
}
