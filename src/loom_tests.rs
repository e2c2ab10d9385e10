//! loom model tests of the ring's index protocol and the futex doorbell.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`. The
//! ring and doorbell code under test is the real code; under `--cfg loom` its
//! atomics and fences are loom's and the futex is modelled by a loom mutex
//! and condition variable (see `doorbell::model_futex`), so loom explores
//! every interleaving and reports a lost wake-up as a deadlock. The ring's
//! data is tracked by loom cells (`sync::DataCell`), so a frame read before
//! its commit stamp is visible, or overwritten before its head store is, is
//! a data race that fails the model: weakening the stamp store or load, or
//! the head store or load, from Release/Acquire to Relaxed makes
//! `loom_ring_indices` fail. The stamp words live in loom atomics beside the
//! data (`RingRegion::with_cells`).

use std::ptr::NonNull;
use std::sync::Arc;

use loom::thread;

use crate::doorbell::AggregateBell;
use crate::layout::RingControl;
use crate::ring::{Consumer, Producer, RingRegion};
use crate::sync::{AtomicU64, DataCell};
use crate::sys::clock::MonoTime;
use crate::wait::{self, WaitStrategy, Waited};

/// A heap ring shared by the model's two threads.
struct Shared {
    ctrl: RingControl,
    data: std::cell::UnsafeCell<[u128; 4]>, // 64 bytes, 16-aligned
    /// loom's view of `data`: one tracked cell per 16-byte granule, which
    /// the ring accesses wherever it (or its caller) reads or writes the
    /// granule. A weakened head/tail ordering shows up as a data race on
    /// these cells.
    cells: [DataCell; 4],
    /// The stamp word of each granule, as loom atomics (fresh memory: 0).
    stamps: [AtomicU64; 4],
    /// The waiting side's aggregate bell (wait sets).
    bell: AggregateBell,
}

// SAFETY: the ring protocol under test governs all access to `data`.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            ctrl: RingControl::default(),
            data: std::cell::UnsafeCell::new([0; 4]),
            cells: std::array::from_fn(|_| DataCell::new(())),
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            bell: AggregateBell::default(),
        })
    }

    fn region(&self) -> RingRegion {
        // SAFETY: `self` outlives both threads' ends (each holds the Arc),
        // and with them the 64 / 16 cells and stamps; one producer and one consumer
        // per model run.
        unsafe {
            RingRegion::new(
                NonNull::from(&self.ctrl),
                NonNull::new(self.data.get().cast()).unwrap(),
                64,
            )
            .with_cells(self.cells.as_ptr(), self.stamps.as_ptr())
        }
    }
}

/// Runs `f` under loom with a bounded number of preemptions (3 is enough
/// for every interleaving of these two-thread protocols to matter).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn push(p: &mut Producer, bytes: &[u8]) -> bool {
    match p.reserve(bytes.len(), 0) {
        Ok(g) => {
            // SAFETY: the grant covers `bytes.len()` writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), g.payload, bytes.len()) };
            p.commit(g, bytes.len());
            true
        }
        Err(_) => false,
    }
}

fn pop(c: &mut Consumer) -> Option<Vec<u8>> {
    let f = c.peek().expect("no fault")?;
    // SAFETY: a validated frame is `len` readable bytes owned by us.
    let v = unsafe { std::slice::from_raw_parts(f.payload, f.len) }.to_vec();
    c.release(f);
    Some(v)
}

/// The three messages of the ring models: 32-, 16- and 32-byte frames in a
/// 64-byte ring (max payload 16), so the third never fits before the data
/// end (tail 48) and skips to the next lap start.
const MESSAGES: [&[u8]; 3] = [&[1; 16], &[], &[3; 16]];

/// Runs the three messages through a fresh ring, the producer (with rewind
/// window `window`) on a second thread, and checks that every interleaving
/// delivers them intact and in order.
fn three_messages(window: u64) {
    let shared = Shared::new();
    let s2 = Arc::clone(&shared);
    let producer = thread::spawn(move || {
        // SAFETY: the only producer.
        let mut p = unsafe { Producer::new(s2.region()).unwrap() };
        p.set_rewind_window(window);
        for msg in MESSAGES {
            while !push(&mut p, msg) {
                thread::yield_now();
            }
        }
    });
    // SAFETY: the only consumer.
    let mut c = unsafe { Consumer::new(shared.region()).unwrap() };
    for want in MESSAGES {
        loop {
            if let Some(got) = pop(&mut c) {
                assert_eq!(got, want);
                break;
            }
            thread::yield_now();
        }
    }
    producer.join().unwrap();
}

/// Three frames through a 64-byte ring: a full ring and a skip to the next
/// lap start while the consumer may still be reading the frames before it
/// (which it must read first: removing the consumer's re-check of its head
/// after seeing the lap start's stamp fails this model).
#[test]
fn loom_ring_indices() {
    model(|| three_messages(u64::MAX));
}

/// The same with a 16-byte rewind window: the second message rewinds from
/// index 32 when the consumer has drained the first; the third then lands
/// on the guard slot at the next lap's index 32 (a consumer still at the
/// skip point polls there) and goes behind a filler. The model's payload
/// is adversarial (`RingRegion::track_payload`), so a producer without the
/// guard fails it.
#[test]
fn loom_ring_rewind_guard() {
    model(|| three_messages(16));
}

/// A consumer asleep at index 48 of an empty ring is woken by a producer
/// that skips to the next lap start (nothing is written at 48): its wake-up
/// condition looks at the lap start too.
#[test]
fn loom_doorbell_wakes_on_a_skip() {
    model(|| {
        let shared = Shared::new();
        // SAFETY: the only producer and consumer; the consumer drains the
        // first two frames on this thread before the producer moves.
        let mut p = unsafe { Producer::new(shared.region()).unwrap() };
        // SAFETY: as above.
        let mut c = unsafe { Consumer::new(shared.region()).unwrap() };
        for msg in &MESSAGES[..2] {
            assert!(push(&mut p, msg));
            assert_eq!(pop(&mut c).as_deref(), Some(*msg));
        }
        let s2 = Arc::clone(&shared);
        let producer = thread::spawn(move || {
            assert!(push(&mut p, MESSAGES[2]));
            s2.ctrl.data_bell.ring_with(|| &s2.bell);
        });
        block_until_data(&shared, &mut c);
        assert_eq!(pop(&mut c).as_deref(), Some(MESSAGES[2]));
        producer.join().unwrap();
    });
}

/// Blocks on the data doorbell until `c` has a frame; it must end `Ready`.
fn block_until_data(shared: &Shared, c: &mut Consumer) {
    let waited = wait::wait(
        WaitStrategy::Block,
        &shared.ctrl.data_bell,
        MonoTime::NEVER,
        || c.has_data(),
        &Immortal,
    );
    assert_eq!(waited, Waited::Ready);
}

/// A peer that never dies: the models check the doorbell alone.
struct Immortal;

impl wait::Liveness for Immortal {
    fn dead_now(&self) -> bool {
        false
    }
    fn dead_checked(&self) -> bool {
        false
    }
    fn prepare_sleep(&self) -> wait::PeerSleep<'_> {
        wait::PeerSleep::Unwatched
    }
}

/// A consumer blocking on the doorbell is always woken by a producer that
/// publishes one frame: no lost wake-up in any interleaving.
#[test]
fn loom_doorbell_no_lost_wakeup() {
    model(|| {
        let shared = Shared::new();
        let s2 = Arc::clone(&shared);
        let producer = thread::spawn(move || {
            // SAFETY: the only producer.
            let mut p = unsafe { Producer::new(s2.region()).unwrap() };
            assert!(push(&mut p, &[9]));
            s2.ctrl.data_bell.ring_with(|| &s2.bell);
        });
        // SAFETY: the only consumer.
        let mut c = unsafe { Consumer::new(shared.region()).unwrap() };
        block_until_data(&shared, &mut c);
        assert_eq!(pop(&mut c), Some(vec![9]));
        producer.join().unwrap();
    });
}

/// A producer blocked on a full ring is woken by the consumer's release.
#[test]
fn loom_space_doorbell_no_lost_wakeup() {
    model(|| {
        let shared = Shared::new();
        // SAFETY: the only producer; filled before the consumer starts.
        let mut p = unsafe { Producer::new(shared.region()).unwrap() };
        assert!(push(&mut p, &[1; 16]));
        assert!(push(&mut p, &[2; 16]));
        assert!(!push(&mut p, &[3; 16]), "ring is full");
        let s2 = Arc::clone(&shared);
        let consumer = thread::spawn(move || {
            // SAFETY: the only consumer.
            let mut c = unsafe { Consumer::new(s2.region()).unwrap() };
            assert_eq!(pop(&mut c), Some(vec![1; 16]));
            s2.ctrl.space_bell.ring_with(|| &s2.bell);
        });
        let waited = wait::wait(
            WaitStrategy::Block,
            &shared.ctrl.space_bell,
            MonoTime::NEVER,
            || p.has_space(16),
            &Immortal,
        );
        assert_eq!(waited, Waited::Ready);
        assert!(push(&mut p, &[3; 16]));
        consumer.join().unwrap();
    });
}

/// A wait set asleep on two rings' doorbells through one aggregate bell is
/// always woken by a producer that publishes into either ring, while a
/// direct waiter's bit on the same doorbell stays intact: the protocol of
/// `WaitSet::block` (tickets, `arm` every member, one fence, re-check,
/// sleep on the aggregate, `disarm`) against `Doorbell::ring_with`.
#[test]
fn loom_waitset_no_lost_wakeup() {
    model(|| {
        let a = Shared::new();
        let b = Shared::new();
        let b2 = Arc::clone(&b);
        let a2 = Arc::clone(&a);
        let producer = thread::spawn(move || {
            // SAFETY: the only producer of ring b.
            let mut p = unsafe { Producer::new(b2.region()).unwrap() };
            assert!(push(&mut p, &[5]));
            // Ring b's consumer is this model's set; its side's aggregate
            // bell is `a2.bell` (one bell per side, shared by both rings).
            b2.ctrl.data_bell.ring_with(|| &a2.bell);
        });
        // SAFETY: the only consumers.
        let mut ca = unsafe { Consumer::new(a.region()).unwrap() };
        // SAFETY: as above.
        let mut cb = unsafe { Consumer::new(b.region()).unwrap() };
        loop {
            if ca.has_data() || cb.has_data() {
                break;
            }
            let ticket = a.bell.ticket();
            a.ctrl.data_bell.arm();
            b.ctrl.data_bell.arm();
            // SeqCst: the set's fence between arming and re-checking, as in
            // `WaitSet::block` (the Dekker pair with the sender's fence).
            crate::sync::fence(crate::sync::Ordering::SeqCst);
            let ready = ca.has_data() || cb.has_data();
            if !ready {
                a.bell.sleep(ticket);
            }
            a.ctrl.data_bell.disarm();
            b.ctrl.data_bell.disarm();
            if ready {
                break;
            }
        }
        assert_eq!(pop(&mut cb), Some(vec![5]));
        producer.join().unwrap();
    });
}
