//! Wake-up latency: a waiter asleep in `Block` or `Adaptive` must be woken
//! by the event itself (a send, a release, the other end's drop), not by
//! the next 50 ms slice of its wait re-checking. Each case puts a thread to
//! sleep (seen asleep in `/proc`), waits a jittered 2 to 10 ms more, makes
//! the event and measures until the waiter returns; the median over
//! [`SAMPLES`] wake-ups must stay under [`MEDIAN_BOUND`]. A lost wake-up
//! shows as about 40 ms or more (the slice), or as a waiter still blocked
//! after [`HARD_BOUND`]: both fail.
//!
//! Most cases run in one process over a segment (both ends here, as in
//! `errors.rs`); `*_from_another_process` repeat the send and release cases
//! with a spawned child making the event (a futex that only wakes its own
//! process, say, fails those), the send over both transports.

mod common;

use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, Watchdog, jittered, median_max, remora_fifo_dirs, remora_segments, role, thread_id,
    wait_until_asleep,
};
use remora::{
    ChannelConfig, RawReceiver, RawSender, RecvError, Segment, SendError, Spawner, Transport,
    WaitStrategy,
};

/// Wake-ups measured per case.
const SAMPLES: usize = 20;
/// The median wake-up must stay under this: far below the 50 ms slice,
/// generous for a noisy 2-core VM.
const MEDIAN_BOUND: Duration = Duration::from_millis(10);
/// A waiter still blocked this long after its event was not woken at all.
const HARD_BOUND: Duration = Duration::from_secs(5);

static SERIAL: Mutex<()> = Mutex::new(());

/// One case at a time: latencies measured side by side on 2 cores would
/// measure each other.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn ends(strategy: WaitStrategy) -> (Segment, Segment, RawSender, RawReceiver) {
    let parent = Segment::create(&[ChannelConfig::new("c")
        .capacity(4096)
        .wait_strategy(strategy)])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (tx, _) = parent.raw_channel("c").unwrap();
    let (_, rx) = child.raw_channel("c").unwrap();
    assert_eq!(
        (tx.wait_strategy(), rx.wait_strategy()),
        (strategy, strategy)
    );
    (parent, child, tx, rx)
}

/// Waits for the waiter's thread id, for it to fall asleep, and a jittered
/// moment more; then runs `event` and returns when it happened.
fn after_waiter_sleeps(ready: &mpsc::Receiver<i32>, event: impl FnOnce()) -> Instant {
    let tid = ready
        .recv_timeout(HARD_BOUND)
        .expect("waiter never started");
    wait_until_asleep(tid, HARD_BOUND);
    thread::sleep(jittered(Duration::from_millis(2), Duration::from_millis(8)));
    let at = Instant::now();
    event();
    at
}

/// The waiter's report: when its wait returned.
fn woken_at(done: &mpsc::Receiver<Instant>, what: &str) -> Instant {
    done.recv_timeout(HARD_BOUND)
        .unwrap_or_else(|_| panic!("{what}: waiter still blocked {HARD_BOUND:?} after the event"))
}

fn check(what: &str, times: &[Duration]) {
    let (median, max) = median_max(times);
    eprintln!(
        "{what:<40} median {:>7.3} ms  max {:>7.3} ms  ({} wake-ups)",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        times.len()
    );
    assert!(
        median < MEDIAN_BOUND,
        "{what}: median wake-up {median:?} (bound {MEDIAN_BOUND:?}; the slice is 50 ms)"
    );
}

/// A receiver asleep in `recv` on an empty ring, woken by a send.
fn recv_woken_by_send(strategy: WaitStrategy) {
    let _s = serial();
    let what = format!("{strategy:?} recv woken by send");
    let (_p, _c, mut tx, mut rx) = ends(strategy);
    let (ready_tx, ready) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let waiter = thread::spawn(move || {
        for i in 0..SAMPLES {
            ready_tx.send(thread_id()).unwrap();
            let m = rx.recv().unwrap();
            let at = Instant::now();
            assert_eq!(&*m, &[i as u8; 8]);
            done_tx.send(at).unwrap();
        }
    });
    let mut times = Vec::new();
    for i in 0..SAMPLES {
        let sent = after_waiter_sleeps(&ready, || tx.send(&[i as u8; 8]).unwrap());
        times.push(woken_at(&done, &what) - sent);
    }
    waiter.join().unwrap();
    check(&what, &times);
}

/// A sender asleep in `send` on a full ring, woken by the receiver taking
/// one message (which frees its frame).
fn send_woken_by_release(strategy: WaitStrategy) {
    let _s = serial();
    let what = format!("{strategy:?} send woken by release");
    let (_p, _c, mut tx, mut rx) = ends(strategy);
    while tx.try_send(&[0; 64]).is_ok() {}
    let (ready_tx, ready) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let waiter = thread::spawn(move || {
        for _ in 0..SAMPLES {
            ready_tx.send(thread_id()).unwrap();
            // The ring is full: this waits for the frame the test frees.
            tx.send(&[1; 64]).unwrap();
            done_tx.send(Instant::now()).unwrap();
        }
        tx
    });
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let freed = after_waiter_sleeps(&ready, || drop(rx.recv().unwrap()));
        times.push(woken_at(&done, &what) - freed);
    }
    let _tx = waiter.join().unwrap();
    check(&what, &times);
}

/// A receiver asleep in `recv`, woken by the sender's drop
/// (`Disconnected`); a fresh channel per sample.
fn recv_woken_by_sender_drop(strategy: WaitStrategy) {
    let _s = serial();
    let what = format!("{strategy:?} recv woken by sender drop");
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let (_p, _c, tx, mut rx) = ends(strategy);
        let (ready_tx, ready) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let waiter = thread::spawn(move || {
            ready_tx.send(thread_id()).unwrap();
            let r = rx.recv().map(drop);
            done_tx.send(Instant::now()).unwrap();
            r
        });
        let dropped = after_waiter_sleeps(&ready, || drop(tx));
        times.push(woken_at(&done, &what) - dropped);
        assert_eq!(waiter.join().unwrap(), Err(RecvError::Disconnected));
    }
    check(&what, &times);
}

/// A sender asleep in `send` on a full ring, woken by the receiver's drop
/// (`Disconnected`); a fresh channel per sample.
fn send_woken_by_receiver_drop(strategy: WaitStrategy) {
    let _s = serial();
    let what = format!("{strategy:?} send woken by receiver drop");
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let (_p, _c, mut tx, rx) = ends(strategy);
        while tx.try_send(&[0; 64]).is_ok() {}
        let (ready_tx, ready) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let waiter = thread::spawn(move || {
            ready_tx.send(thread_id()).unwrap();
            let r = tx.send(&[1; 64]);
            done_tx.send(Instant::now()).unwrap();
            r
        });
        let dropped = after_waiter_sleeps(&ready, || drop(rx));
        times.push(woken_at(&done, &what) - dropped);
        assert_eq!(waiter.join().unwrap(), Err(SendError::Disconnected));
    }
    check(&what, &times);
}

#[test]
fn block_recv_is_woken_by_a_send() {
    recv_woken_by_send(WaitStrategy::Block);
}

#[test]
fn adaptive_recv_is_woken_by_a_send() {
    recv_woken_by_send(WaitStrategy::Adaptive);
}

#[test]
fn block_send_is_woken_by_a_release() {
    send_woken_by_release(WaitStrategy::Block);
}

#[test]
fn adaptive_send_is_woken_by_a_release() {
    send_woken_by_release(WaitStrategy::Adaptive);
}

#[test]
fn block_recv_is_woken_by_the_sender_drop() {
    recv_woken_by_sender_drop(WaitStrategy::Block);
}

#[test]
fn adaptive_recv_is_woken_by_the_sender_drop() {
    recv_woken_by_sender_drop(WaitStrategy::Adaptive);
}

#[test]
fn block_send_is_woken_by_the_receiver_drop() {
    send_woken_by_receiver_drop(WaitStrategy::Block);
}

#[test]
fn adaptive_send_is_woken_by_the_receiver_drop() {
    send_woken_by_receiver_drop(WaitStrategy::Adaptive);
}

// ---------------------------------------------------------------------------
// The event made by another process.
// ---------------------------------------------------------------------------

/// A child on `transport` whose channel "c" waits in `strategy`; it makes
/// events when told to on "ctl" (see `child_entry`).
fn spawn_event_maker(transport: Transport, strategy: WaitStrategy) -> KillOnDrop {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, "event_maker")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .transport(transport)
        .channel_with(
            ChannelConfig::new("c")
                .capacity(4096)
                .wait_strategy(strategy),
        )
        .channel("ctl");
    KillOnDrop(s.spawn().unwrap())
}

/// A receiver here asleep in `recv`, woken by the child's send. Timed from
/// the command to the child (asleep on "ctl" meanwhile) to the receiver's
/// return: two cross-process wake-ups, both in this process's clock (a
/// child woken late by the same bug would shift its send into our slice).
fn recv_woken_by_send_from_another_process(transport: Transport, strategy: WaitStrategy) {
    let _s = serial();
    let _w = Watchdog::new("cross-process recv wake-up", Duration::from_secs(120));
    let what = format!("{transport} {strategy:?} recv woken by child's send");
    let mut child = spawn_event_maker(transport, strategy);
    let (_tx, mut rx) = child.raw_channel("c").unwrap();
    let (mut ctl_tx, _ctl_rx) = child.raw_channel("ctl").unwrap();
    assert_eq!(rx.wait_strategy(), strategy);
    let (ready_tx, ready) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let waiter = thread::spawn(move || {
        for _ in 0..SAMPLES {
            ready_tx.send(thread_id()).unwrap();
            drop(rx.recv().unwrap());
            done_tx.send(Instant::now()).unwrap();
        }
    });
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let asked = after_waiter_sleeps(&ready, || ctl_tx.send(b"send").unwrap());
        times.push(woken_at(&done, &what) - asked);
    }
    waiter.join().unwrap();
    check(&what, &times);
    drop((_tx, ctl_tx, _ctl_rx));
    assert!(child.wait().unwrap().success());
    assert!(remora_segments().is_empty() && remora_fifo_dirs().is_empty());
}

/// A sender here asleep on a full ring, woken by the child receiving (and
/// so releasing) one message; timed like the receive case. Shared memory only: a FIFO writer waits for
/// the kernel's pipe pages, not for one message's worth of room.
fn send_woken_by_release_from_another_process(strategy: WaitStrategy) {
    let _s = serial();
    let _w = Watchdog::new("cross-process send wake-up", Duration::from_secs(120));
    let what = format!("shm {strategy:?} send woken by child's release");
    let mut child = spawn_event_maker(Transport::Shm, strategy);
    let (mut tx, _rx) = child.raw_channel("c").unwrap();
    let (mut ctl_tx, mut ctl_rx) = child.raw_channel("ctl").unwrap();
    assert_eq!(tx.wait_strategy(), strategy);
    while tx.try_send(&[0; 64]).is_ok() {}
    let (ready_tx, ready) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let waiter = thread::spawn(move || {
        for _ in 0..SAMPLES {
            ready_tx.send(thread_id()).unwrap();
            tx.send(&[1; 64]).unwrap();
            done_tx.send(Instant::now()).unwrap();
        }
        tx
    });
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let asked = after_waiter_sleeps(&ready, || ctl_tx.send(b"release").unwrap());
        times.push(woken_at(&done, &what) - asked);
        assert_eq!(&*ctl_rx.recv_timeout(HARD_BOUND).unwrap(), b"released");
    }
    let tx = waiter.join().unwrap();
    check(&what, &times);
    drop((tx, _rx, ctl_tx, ctl_rx));
    assert!(child.wait().unwrap().success());
    assert!(remora_segments().is_empty());
}

#[test]
fn block_recv_is_woken_by_a_send_from_another_process() {
    for t in [Transport::Shm, Transport::Fifo] {
        recv_woken_by_send_from_another_process(t, WaitStrategy::Block);
    }
}

#[test]
fn adaptive_recv_is_woken_by_a_send_from_another_process() {
    for t in [Transport::Shm, Transport::Fifo] {
        recv_woken_by_send_from_another_process(t, WaitStrategy::Adaptive);
    }
}

#[test]
fn block_send_is_woken_by_a_release_from_another_process() {
    send_woken_by_release_from_another_process(WaitStrategy::Block);
}

#[test]
fn adaptive_send_is_woken_by_a_release_from_another_process() {
    send_woken_by_release_from_another_process(WaitStrategy::Adaptive);
}

/// Entry point of the re-executed child; does nothing in a normal run.
/// On "send" it sends a message on "c"; on "release" it receives one
/// message from "c" (copying it releases its frame) and says so on "ctl".
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    assert_eq!(role, "event_maker");
    let _w = Watchdog::new("wake-up child", Duration::from_secs(120));
    let conn = remora::connect().unwrap();
    let (mut tx, mut rx) = conn.raw_channel("c").unwrap();
    let (mut ctl_tx, mut ctl_rx) = conn.raw_channel("ctl").unwrap();
    loop {
        let cmd = match ctl_rx.recv() {
            Ok(m) => m.to_vec(),
            Err(RecvError::Disconnected) => return,
            Err(e) => panic!("{e:?}"),
        };
        match &cmd[..] {
            b"send" => tx.send(b"event").unwrap(),
            b"release" => {
                drop(rx.recv().unwrap());
                ctl_tx.send(b"released").unwrap();
            }
            other => panic!("unknown command {other:?}"),
        }
    }
}

/// Idle costs nothing: a receiver asleep in `Block` on an attached peer
/// (whose death the kernel reports on its liveness word) is not woken by
/// the 50 ms thorough-check slice, 20 times a second, but at most once per
/// second. Counted as the sleeping thread's voluntary context switches
/// over 2 s: 40 or so with the slice, a few without.
#[test]
fn an_idle_blocked_receiver_sleeps_through() {
    let _s = serial();
    let _w = Watchdog::new("idle sleep", Duration::from_secs(60));
    let parent = Segment::create(&[ChannelConfig::new("c")]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    rx.set_wait_strategy(WaitStrategy::Block);
    let (tid_tx, tid_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        tid_tx.send(thread_id()).unwrap();
        rx.recv_timeout(Duration::from_secs(30)).map(|m| m.to_vec())
    });
    let tid = tid_rx.recv().unwrap();
    wait_until_asleep(tid, Duration::from_secs(5));
    let switches = || {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    let before = switches();
    thread::sleep(Duration::from_secs(2));
    let woken = switches() - before;
    tx.send(b"bye").unwrap();
    assert_eq!(t.join().unwrap().unwrap(), b"bye");
    assert!(
        woken <= 8,
        "an idle receiver woke {woken} times in 2 s: it should sleep through"
    );
}
