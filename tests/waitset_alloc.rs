//! A counting global allocator proves that waiting on a `WaitSet`
//! allocates nothing once its members are added: an event found at once,
//! `try_wait` finding nothing, a timed-out sleep, and sleeps woken by
//! another thread's sends, both for a set that fits one `futex_waitv` and
//! for one over 70 segments (relay threads; they run on their own threads,
//! and the calling thread hands them their words without allocating).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::Watchdog;
use common::alloc::allocations_during;
use remora::{ChannelConfig, RawSender, Segment, WaitError, WaitSet, WaitStrategy};

#[global_allocator]
static GLOBAL: common::alloc::Counting = common::alloc::Counting;

fn run(segments: usize) {
    let mut keep = Vec::new();
    let mut txs: Vec<RawSender> = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..segments {
        let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
        let child = Segment::open(parent.name()).unwrap();
        let (tx, _) = child.raw_channel("c").unwrap();
        let (_, rx) = parent.raw_channel("c").unwrap();
        txs.push(tx);
        rxs.push(rx);
        keep.push((parent, child));
    }
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    for rx in &rxs {
        set.add(rx).unwrap();
    }
    // The sender thread exists before measuring; it sends on request
    // (an atomic: a channel could allocate on this thread).
    let go = Arc::new(AtomicUsize::new(IDLE));
    let go_tx = Arc::clone(&go);
    let last = segments - 1;
    let sender = thread::spawn(move || {
        loop {
            match go.swap(IDLE, Ordering::AcqRel) {
                STOP => return,
                IDLE => thread::sleep(Duration::from_millis(1)),
                i => txs[i].send(b"wake").unwrap(),
            }
        }
    });
    let mut round = |n: usize| {
        for k in 0..n {
            // Found at once.
            txs_send(&go_tx, k % segments);
            let ev = set.wait().unwrap();
            let _ = ev;
            for rx in &mut rxs {
                while rx.try_recv().is_ok() {}
            }
            assert_eq!(set.try_wait(), Err(WaitError::Empty));
            assert_eq!(
                set.wait_timeout(Duration::from_millis(1)),
                Err(WaitError::Timeout)
            );
            // A sleep woken by the last segment (a relay's, when there are).
            txs_send(&go_tx, last);
            set.wait().unwrap();
            while rxs[last].try_recv().is_ok() {}
        }
    };
    round(2); // warm-up
    let n = allocations_during(|| round(20));
    go_tx.store(STOP, Ordering::Release);
    sender.join().unwrap();
    assert_eq!(
        n, 0,
        "{n} allocations in 20 rounds over {segments} segments"
    );
}

const IDLE: usize = usize::MAX;
const STOP: usize = usize::MAX - 1;

/// Asks the sender thread to send on channel `i` (about a millisecond
/// later: the set is usually asleep by then).
fn txs_send(go: &AtomicUsize, i: usize) {
    while go
        .compare_exchange(IDLE, i, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        thread::yield_now();
    }
}

#[test]
fn waits_do_not_allocate() {
    let _w = Watchdog::new("waitset alloc", Duration::from_secs(120));
    run(4);
    run(70);
}
