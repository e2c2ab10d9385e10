//! The channel ends' crossbeam-style API: queries (`capacity`, `len`,
//! `is_empty`, `is_full`, `is_disconnected`, `max_message`,
//! `wait_strategy`), draining with a closure, owned deserialisation, and
//! one-way takes.
//!
//! Shared memory is tested with in-process `Segment` pairs; the FIFO
//! transport and peer death with a spawned child (this test binary again,
//! in a role `child_entry` plays).

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Watchdog, remora_fifo_dirs, remora_segments, role};
use remora::{
    ChannelConfig, ChannelError, RecvError, Segment, SendError, Spawner, Transport, WaitStrategy,
};

/// One test at a time: the cross-process ones share 2 cores, and the
/// leftover checks must not see another test's live segment.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A one-channel segment pair (creator, opener) of `capacity` bytes.
fn pair(capacity: usize) -> (Segment, Segment) {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(capacity)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    (parent, child)
}

/// Bytes a message of `len` bytes takes in a ring: header + padded payload.
fn frame(len: usize) -> usize {
    16 + len.next_multiple_of(16)
}

/// Polls `cond` every millisecond for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not within 10 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes `bytes` at `offset` of the segment, as a hostile peer would.
fn scribble(segment: &Segment, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", segment.name()))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Offsets in a one-channel segment: the parent-to-child ring's control
/// block is at 8192 (tail first, head one 128-byte cache line later), its
/// data 640 bytes after.
const P2C_TAIL: u64 = 8192;
const P2C_HEAD: u64 = 8192 + 128;
const P2C_FIRST_PAYLOAD: u64 = 8192 + 640 + 16;

// ---------------------------------------------------------------------------
// Queries over shared memory.
// ---------------------------------------------------------------------------

#[test]
fn fresh_ends_answer_every_query() {
    let _s = serial();
    let parent = Segment::create(&[
        ChannelConfig::new("typed")
            .capacity(1 << 12)
            .wait_strategy(WaitStrategy::Spin),
        ChannelConfig::new("raw").capacity(1 << 16),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (tx, rx) = parent.channel::<u64, String>("typed").unwrap();
    let (ctx, crx) = child.channel::<String, u64>("typed").unwrap();
    for (cap, max, empty, full, gone, wait) in [
        (
            tx.capacity(),
            tx.max_message(),
            tx.is_empty(),
            tx.is_full(),
            tx.is_disconnected(),
            tx.wait_strategy(),
        ),
        (
            rx.capacity(),
            rx.max_message(),
            rx.is_empty(),
            rx.is_full(),
            rx.is_disconnected(),
            rx.wait_strategy(),
        ),
        (
            ctx.capacity(),
            ctx.max_message(),
            ctx.is_empty(),
            ctx.is_full(),
            ctx.is_disconnected(),
            ctx.wait_strategy(),
        ),
        (
            crx.capacity(),
            crx.max_message(),
            crx.is_empty(),
            crx.is_full(),
            crx.is_disconnected(),
            crx.wait_strategy(),
        ),
    ] {
        assert_eq!((cap, max), (4096, 2048 - 16));
        assert!(empty && !full && !gone);
        assert_eq!(wait, WaitStrategy::Spin);
    }
    assert_eq!((tx.len(), rx.len(), ctx.len(), crx.len()), (0, 0, 0, 0));
    let (rtx, rrx) = parent.raw_channel("raw").unwrap();
    assert_eq!((rtx.capacity(), rrx.capacity()), (1 << 16, 1 << 16));
    assert_eq!(
        (rtx.max_message(), rrx.max_message()),
        ((1 << 15) - 16, (1 << 15) - 16)
    );
    assert_eq!(rtx.wait_strategy(), WaitStrategy::Adaptive);
    assert_eq!(rrx.wait_strategy(), WaitStrategy::Adaptive);
    assert!(rtx.is_empty() && rrx.is_empty());
}

#[test]
fn len_counts_ring_bytes_with_headers_and_padding() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    let sizes = [0usize, 1, 15, 16, 17, 100, 2032];
    let mut expect = 0;
    for (i, &len) in sizes.iter().enumerate() {
        tx.send(&vec![i as u8; len]).unwrap();
        expect += frame(len);
        assert_eq!(tx.len(), expect, "sender after {len}-byte message");
        assert_eq!(rx.len(), expect, "receiver after {len}-byte message");
        assert!(!tx.is_empty() && !rx.is_empty());
    }
    for (i, &len) in sizes.iter().enumerate() {
        let msg = rx.recv().unwrap();
        assert_eq!(&*msg, &vec![i as u8; len][..]);
        drop(msg);
        expect -= frame(len);
        assert_eq!(rx.len(), expect);
        assert_eq!(tx.len(), expect);
    }
    assert!(tx.is_empty() && rx.is_empty());

    // A frame that does not fit before the ring's end goes to its start,
    // skipping the rest: the skipped bytes count until the receiver
    // reaches them, and not at all if it is already there.
    let (parent, child) = pair(256);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.send(&[1; 80]).unwrap(); // 96 bytes at 0
    tx.send(&[2; 80]).unwrap(); // 96 bytes at 96
    drop(rx.recv().unwrap());
    tx.send(&[3; 80]).unwrap(); // 64 bytes left at the end: skipped, at 0
    assert_eq!(tx.len(), 96 + 64 + 96);
    assert_eq!(rx.len(), 96 + 64 + 96);
    drop(rx.recv().unwrap()); // the receiver is at the skipped bytes
    assert_eq!(tx.len(), 96);
    assert_eq!(rx.len(), 96);
    assert_eq!(&*rx.recv().unwrap(), &[3; 80]);
    assert!(rx.is_empty() && tx.is_empty());
    // The same with the receiver there before the send.
    tx.send(&[4; 80]).unwrap(); // 96 bytes at 96
    drop(rx.recv().unwrap());
    tx.send(&[5; 80]).unwrap(); // 64 bytes left at the end: skipped, at 0
    assert_eq!(tx.len(), 96);
    assert_eq!(rx.len(), 96);
    assert_eq!(&*rx.recv().unwrap(), &[5; 80]);
    assert!(rx.is_empty() && tx.is_empty());
}

#[test]
fn typed_len_counts_archives() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.channel::<String, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), String>("c").unwrap();
    let long = "x".repeat(100); // out of line: 100 bytes + an 8-byte root
    tx.send(&long).unwrap();
    assert_eq!(tx.len(), frame(108));
    assert_eq!(rx.len(), tx.len());
    assert_eq!(rx.recv().unwrap().as_str(), long);
    assert!(rx.is_empty());
}

#[test]
fn is_full_means_not_even_an_empty_frame_fits() {
    let _s = serial();
    let (parent, child) = pair(256);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    let mut rng = common::Rng::new(11);
    for round in 0..2000 {
        // Send random sizes until Full, receive a random number, repeat:
        // frames land at every offset and skip to the ring's start.
        loop {
            let len = rng.below(113) as usize;
            match tx.try_send(&vec![0; len]) {
                Ok(()) => {}
                Err(SendError::Full) => break,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let full = tx.is_full();
        assert_eq!(full, rx.is_full());
        assert_eq!(full, tx.len() == tx.capacity(), "round {round}");
        // `is_full` is exactly "an empty message does not fit".
        assert_eq!(tx.try_send(&[]).is_err(), full, "round {round}");
        assert!(tx.len() <= tx.capacity());
        for _ in 0..rng.below(6) {
            if rx.try_recv().is_err() {
                break;
            }
        }
    }
    while rx.try_recv().is_ok() {}
    assert!(!tx.is_full() && tx.is_empty());
}

#[test]
fn dropped_ends_disconnect_the_other_side() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, rx) = parent.raw_channel("c").unwrap();
    let (ctx, mut crx) = child.raw_channel("c").unwrap();
    tx.send(b"one").unwrap();
    tx.send(b"two").unwrap();
    assert!(!crx.is_disconnected() && !tx.is_disconnected());
    drop(tx);
    // Disconnected, not empty: both messages are still delivered.
    assert!(crx.is_disconnected());
    assert_eq!(crx.len(), 2 * frame(3));
    assert_eq!(crx.drain(|_| ()).unwrap(), 2);
    assert_eq!(crx.try_recv().unwrap_err(), RecvError::Disconnected);
    assert!(!ctx.is_disconnected());
    drop(rx);
    assert!(ctx.is_disconnected());

    // Typed ends, and a channel the peer never took (its `Segment` hangs
    // it up when dropped).
    let parent = Segment::create(&[
        ChannelConfig::new("a").capacity(4096),
        ChannelConfig::new("b").capacity(4096),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (tx, rx) = parent.channel::<u32, u32>("b").unwrap();
    let (ctx, crx) = child.channel::<u32, u32>("a").unwrap();
    assert!(!tx.is_disconnected() && !rx.is_disconnected());
    drop(child); // "b" was never taken there
    assert!(tx.is_disconnected() && rx.is_disconnected());
    assert!(!ctx.is_disconnected() && !crx.is_disconnected());
    drop(parent); // nor "a" here
    assert!(ctx.is_disconnected() && crx.is_disconnected());
}

#[test]
fn garbage_indices_are_clamped_then_reported() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.send(&[5; 40]).unwrap();
    assert_eq!(rx.len(), frame(40));
    // The "peer" publishes absurd tails: the receiver's len ignores them
    // (counts nothing in flight), never panics, never exceeds the capacity
    // (a plausible value cannot be told from a real one). Receives do not
    // read the tail at all: frames are published by their header's commit
    // stamp, so the frame sent above still arrives.
    for bad in [0, 8, 3, 1 << 40, u64::MAX - 15, u64::MAX] {
        scribble(&parent, P2C_TAIL, &bad.to_le_bytes());
        let len = rx.len();
        assert!(len <= rx.capacity(), "tail {bad}: len {len}");
        assert!(!rx.is_full() && !rx.is_disconnected());
    }
    assert_eq!(&*rx.try_recv().unwrap(), &[5; 40]);
    // A garbage header is reported by the next receive, and the end counts
    // as gone.
    tx.send(&[5; 40]).unwrap();
    scribble(
        &parent,
        P2C_FIRST_PAYLOAD - 16 + frame(40) as u64,
        &u32::MAX.to_le_bytes(),
    );
    assert!(matches!(rx.try_recv(), Err(RecvError::Corrupted(_))));
    assert!(rx.is_disconnected());

    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.send(&[5; 40]).unwrap();
    drop(rx.recv().unwrap());
    assert_eq!(tx.len(), 0);
    tx.send(&[6; 40]).unwrap();
    for bad in [u64::MAX, 1 << 40, 4096 * 3, 7, 0] {
        scribble(&child, P2C_HEAD, &bad.to_le_bytes());
        let len = tx.len();
        assert!(len <= tx.capacity(), "head {bad}: len {len}");
        assert!(!tx.is_full() && !tx.is_disconnected());
    }
}

// ---------------------------------------------------------------------------
// Draining and owned messages.
// ---------------------------------------------------------------------------

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u64,
    name: String,
    args: Vec<String>,
}

fn job(id: u64) -> Job {
    Job {
        id,
        name: format!("job {id}"),
        args: (0..id % 4).map(|a| format!("--arg{a}")).collect(),
    }
}

#[test]
fn drain_hands_over_everything_waiting_in_order() {
    let _s = serial();
    let (parent, child) = pair(1 << 14);
    let (mut tx, _) = parent.channel::<Job, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Job>("c").unwrap();
    assert_eq!(rx.drain(|_| panic!("nothing was sent")).unwrap(), 0);
    for id in 0..50 {
        tx.send(&job(id)).unwrap();
    }
    let mut seen = Vec::new();
    assert_eq!(
        rx.drain(|j| seen.push((j.id.to_native(), j.name.as_str().to_owned())))
            .unwrap(),
        50
    );
    let expect: Vec<_> = (0..50).map(|id| (id, format!("job {id}"))).collect();
    assert_eq!(seen, expect);
    assert!(rx.is_empty());
    assert_eq!(rx.drain(|_| panic!("drained already")).unwrap(), 0);

    // Raw, in place (trusted) and copied.
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    for trusted in [false, true] {
        if trusted {
            // SAFETY: the sender is in this process and never rewrites a frame.
            unsafe { rx.trust_peer() };
        }
        for i in 0..20u8 {
            tx.send(&[i; 33]).unwrap();
        }
        let mut next = 0u8;
        let n = rx
            .drain(|bytes| {
                assert_eq!(bytes, &[next; 33]);
                next += 1;
            })
            .unwrap();
        assert_eq!(n, 20);
        assert!(rx.is_empty() && tx.is_empty(), "every frame released");
    }
}

#[test]
fn drain_reports_lasting_errors_on_the_next_call() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.channel::<u64, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), u64>("c").unwrap();
    tx.send(&1).unwrap();
    tx.send(&2).unwrap();
    drop(tx);
    let mut got = Vec::new();
    assert_eq!(rx.drain(|v| got.push(v.to_native())).unwrap(), 2);
    assert_eq!(got, [1, 2]);
    assert_eq!(rx.drain(|_| ()).unwrap_err(), RecvError::Disconnected);
    assert_eq!(rx.drain(|_| ()).unwrap_err(), RecvError::Disconnected);

    // A corrupt header: the fault comes at once (nothing handled before it).
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.send(b"x").unwrap();
    scribble(&parent, P2C_FIRST_PAYLOAD - 16, &u32::MAX.to_le_bytes());
    assert!(matches!(rx.drain(|_| ()), Err(RecvError::Corrupted(_))));
    assert!(matches!(rx.drain(|_| ()), Err(RecvError::Corrupted(_))));
}

#[test]
fn drain_stops_at_an_invalid_message_and_goes_on_after_it() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.channel::<Vec<u32>, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Vec<u32>>("c").unwrap();
    tx.send(&vec![1, 2, 3, 4]).unwrap(); // 24 bytes: 16 data + 8 root
    tx.send(&vec![5]).unwrap();
    tx.send(&vec![6]).unwrap();
    // Break the first archive's root (its relative pointer and length).
    scribble(&parent, P2C_FIRST_PAYLOAD + 16, &[0xff; 8]);
    let mut seen = Vec::new();
    assert!(matches!(
        rx.drain(|v| seen.push(v.iter().map(|x| x.to_native()).collect::<Vec<u32>>())),
        Err(RecvError::Invalid { len: 24 })
    ));
    assert!(seen.is_empty());
    assert_eq!(
        rx.drain(|v| seen.push(v.iter().map(|x| x.to_native()).collect()))
            .unwrap(),
        2
    );
    assert_eq!(seen, [vec![5], vec![6]]);
}

#[test]
fn drain_returns_even_if_the_sender_keeps_refilling() {
    let _s = serial();
    let (parent, child) = pair(1024);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if tx.try_send(&[]).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    eventually("the sender fills the ring", || rx.is_full());
    let mut total = 0;
    for _ in 0..50 {
        let n = rx.drain(|_| ()).unwrap();
        assert!(n <= 1024 / 16, "one drain handled {n} messages");
        total += n;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    loop {
        match rx.drain(|_| ()) {
            Ok(n) => total += n,
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(total as u64, sent);
}

#[test]
fn a_panicking_closure_still_releases_its_message() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    // SAFETY: the sender is in this process and never rewrites a frame.
    unsafe { rx.trust_peer() }; // frames are held while `f` runs
    tx.send(b"boom").unwrap();
    tx.send(b"fine").unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rx.drain(|b| assert_ne!(b, b"boom")).unwrap()
    }));
    assert!(caught.is_err());
    assert_eq!(
        rx.len(),
        frame(4),
        "the panicking message's frame was released"
    );
    assert_eq!(&*rx.recv().unwrap(), b"fine");
}

#[test]
fn deserialize_gives_an_owned_value() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let (mut tx, _) = parent.channel::<Job, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Job>("c").unwrap();
    let mut owned = Vec::new();
    for id in 0..10 {
        tx.send(&job(id)).unwrap();
        owned.push(rx.recv().unwrap().deserialize().unwrap());
    }
    assert_eq!(owned, (0..10).map(job).collect::<Vec<_>>());
    assert!(rx.is_empty());
}

// ---------------------------------------------------------------------------
// One-way takes over shared memory.
// ---------------------------------------------------------------------------

#[test]
fn one_way_takes_check_only_the_direction_in_use() {
    let _s = serial();
    // The motivating case: a channel used parent-to-child only. Both-way
    // takes type-check the unused direction too.
    let (parent, child) = pair(4096);
    let _ends = parent.channel::<u64, ()>("c").unwrap();
    assert!(matches!(
        child.channel::<u8, u64>("c"),
        Err(ChannelError::TypeMismatch {
            direction: "child-to-parent",
            ..
        })
    ));
    // One-way on one side: only parent-to-child is checked.
    let (parent, child) = pair(4096);
    let mut tx = parent.sender::<u64>("c").unwrap();
    let (mut back, mut rx) = child.channel::<u8, u64>("c").unwrap();
    tx.send(&5).unwrap();
    assert_eq!(*rx.recv().unwrap(), 5);
    // The unused direction was hung up: the peer's sender there is
    // disconnected, and so is nothing else.
    assert!(back.is_disconnected());
    assert_eq!(back.send(&1), Err(SendError::Disconnected));
    assert!(!tx.is_disconnected() && !rx.is_disconnected());
    // One-way on both sides, either order, typed and raw.
    for creator_first in [true, false] {
        let parent = Segment::create(&[
            ChannelConfig::new("typed").capacity(4096),
            ChannelConfig::new("raw").capacity(4096),
        ])
        .unwrap();
        let child = Segment::open(parent.name()).unwrap();
        let (mut rx, mut tx, mut raw_rx, mut raw_tx) = if creator_first {
            let rx = parent.receiver::<String>("typed").unwrap();
            let raw_tx = parent.raw_sender("raw").unwrap();
            (
                rx,
                child.sender::<String>("typed").unwrap(),
                child.raw_receiver("raw").unwrap(),
                raw_tx,
            )
        } else {
            let tx = child.sender::<String>("typed").unwrap();
            let raw_rx = child.raw_receiver("raw").unwrap();
            (
                parent.receiver::<String>("typed").unwrap(),
                tx,
                raw_rx,
                parent.raw_sender("raw").unwrap(),
            )
        };
        tx.send(&"up".to_owned()).unwrap();
        raw_tx.send(b"down").unwrap();
        assert_eq!(rx.recv().unwrap().as_str(), "up");
        assert_eq!(&*raw_rx.recv().unwrap(), b"down");
        drop((tx, raw_tx));
        assert!(rx.is_disconnected() && raw_rx.is_disconnected());
    }
}

#[test]
fn one_way_takes_still_catch_a_mismatch_in_the_direction_in_use() {
    let _s = serial();
    for creator_first in [true, false] {
        let (parent, child) = pair(4096);
        let (first, second) = if creator_first {
            (
                parent.sender::<u64>("c").map(drop),
                child.receiver::<u32>("c").map(drop),
            )
        } else {
            (
                child.receiver::<u32>("c").map(drop),
                parent.sender::<u64>("c").map(drop),
            )
        };
        assert_eq!(first, Ok(()));
        assert_eq!(
            second,
            Err(ChannelError::TypeMismatch {
                name: "c".into(),
                direction: "parent-to-child"
            })
        );
        // The failed take left the channel as it was: the right type works.
        if creator_first {
            assert!(child.receiver::<u64>("c").unwrap().is_empty());
        } else {
            parent.sender::<u32>("c").unwrap();
        }
    }
    // A one-way take counts as taking the channel.
    let (parent, _child) = pair(4096);
    let _tx = parent.sender::<u64>("c").unwrap();
    for again in [
        parent.receiver::<u64>("c").map(drop),
        parent.raw_sender("c").map(drop),
        parent.channel::<u64, u64>("c").map(drop),
    ] {
        assert_eq!(again, Err(ChannelError::AlreadyTaken { name: "c".into() }));
    }
    assert!(matches!(
        parent.sender::<u64>("nope"),
        Err(ChannelError::Unknown { .. })
    ));
}

#[test]
fn the_unused_direction_of_a_one_way_receiver_reads_as_closed() {
    let _s = serial();
    let (parent, child) = pair(4096);
    let mut rx = parent.receiver::<u64>("c").unwrap();
    let (mut tx, mut unused) = child.channel::<u64, u64>("c").unwrap();
    assert!(unused.is_disconnected() && unused.is_empty());
    assert_eq!(unused.try_recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(unused.recv().unwrap_err(), RecvError::Disconnected);
    tx.send(&3).unwrap();
    assert_eq!(*rx.recv().unwrap(), 3);
    drop(tx);
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
}

// ---------------------------------------------------------------------------
// Cross-process: peer death, and the FIFO transport.
// ---------------------------------------------------------------------------

/// A spawner that re-executes this test binary in `role`.
fn spawner(role: &str, transport: Transport) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .transport(transport);
    s
}

fn spawn(s: &mut Spawner) -> KillOnDrop {
    KillOnDrop(s.spawn().expect("spawn"))
}

fn assert_no_leftovers() {
    assert!(remora_segments().is_empty(), "segment left in /dev/shm");
    assert!(remora_fifo_dirs().is_empty(), "FIFO directory left behind");
}

#[test]
fn peer_death_shows_in_is_disconnected_without_a_call() {
    for t in [Transport::Shm, Transport::Fifo] {
        let _s = serial();
        let _w = Watchdog::new("peer death", Duration::from_secs(60));
        let mut child = spawn(spawner("attach_and_wait", t).channel("c"));
        let (mut tx, mut rx) = child.channel::<u32, u32>("c").unwrap();
        tx.send(&1).unwrap();
        assert_eq!(*rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1, "{t}");
        assert!(!tx.is_disconnected() && !rx.is_disconnected(), "{t}");
        child.kill().unwrap();
        eventually("the sender sees the death", || tx.is_disconnected());
        eventually("the receiver sees the death", || rx.is_disconnected());
        assert_eq!(tx.try_send(&2), Err(SendError::Disconnected), "{t}");
        assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected, "{t}");
        drop(child);
        drop((tx, rx));
        assert_no_leftovers();
    }
}

#[test]
fn fifo_queries_and_drain() {
    let _s = serial();
    let _w = Watchdog::new("fifo queries", Duration::from_secs(60));
    let t = Transport::Fifo;
    let child = spawn(
        spawner("fifo_queries", t)
            .channel_with(ChannelConfig::new("data").capacity(4096))
            .channel_with(ChannelConfig::new("fill").capacity(4096))
            .channel("ctl"),
    );
    assert_eq!(child.transport(), Transport::Fifo);
    let (mut tx, _) = child.raw_channel("data").unwrap();
    let (mut fill, _) = child.raw_channel("fill").unwrap();
    let (mut ctl_tx, mut ctl_rx) = child.channel::<u64, u64>("ctl").unwrap();
    assert_eq!((tx.capacity(), tx.max_message()), (4096, 2048 - 16));
    assert!(!tx.is_full() && !tx.is_disconnected());

    // Three messages: 32 + 16 + 48 bytes on the wire.
    tx.send(b"hello").unwrap();
    tx.send(b"").unwrap();
    tx.send(&[9; 20]).unwrap();
    // The child sees them waiting, drains them, and says so.
    assert_eq!(*ctl_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 3);
    assert_eq!(tx.len(), 0, "the child read everything out of the pipe");
    assert!(tx.is_empty());

    // Fill the other channel with empty frames until the pipe is full.
    let mut sent = 0u64;
    while fill.try_send(&[]).is_ok() {
        sent += 1;
        assert!(sent < 1 << 20);
    }
    assert!(
        fill.is_full(),
        "pipe of {} bytes after {sent} frames",
        fill.len()
    );
    assert!(fill.len() >= 4096);
    ctl_tx.send(&sent).unwrap();
    // The child saw the pipe full, drained every frame.
    assert_eq!(*ctl_rx.recv_timeout(Duration::from_secs(10)).unwrap(), sent);
    assert!(!fill.is_full());

    // Dropping our sender: the child sees it disconnected (and says so).
    drop(tx);
    assert_eq!(*ctl_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
    // The child exits: its ends hang up.
    eventually("the parent's receiver sees the child gone", || {
        ctl_rx.is_disconnected()
    });
    let mut child = child;
    assert!(child.wait().unwrap().success());
    assert!(ctl_tx.is_disconnected());
    drop((fill, ctl_tx, ctl_rx));
    assert_no_leftovers();
}

#[test]
fn one_way_takes_with_a_child_over_both_transports() {
    for t in [Transport::Shm, Transport::Fifo] {
        let _s = serial();
        let _w = Watchdog::new("one way", Duration::from_secs(60));
        let mut child = spawn(
            spawner("one_way", t)
                .channel("jobs")
                .channel("events")
                .channel("mixed")
                .channel("rx_only")
                .channel("wrong"),
        );
        assert_eq!(child.transport(), t);
        let mut jobs = child.sender::<u64>("jobs").unwrap();
        let mut events = child.receiver::<String>("events").unwrap();
        let mut mixed = child.sender::<u64>("mixed").unwrap();
        let mut rx_only = child.receiver::<u64>("rx_only").unwrap();
        let wrong = child.receiver::<u64>("wrong");
        let mut next = || {
            events
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .as_str()
                .to_owned()
        };
        for i in 1..=3 {
            jobs.send(&i).unwrap();
        }
        mixed.send(&42).unwrap();
        assert_eq!(next(), "sum=6", "{t}");
        assert_eq!(next(), "mixed=42 back=Err(Disconnected)", "{t}");
        // The child took "rx_only" both ways: its receiver saw our unused
        // direction closed, its sender reaches us.
        assert_eq!(next(), "rx_only=Err(Disconnected)", "{t}");
        let got = rx_only.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(*got, 5, "{t}");
        drop(got);
        match next().as_str() {
            // The child took second over shared memory: caught at its take.
            "mismatch" => {}
            // Over FIFOs the parent took first and sent no handshake for a
            // direction it does not send on: caught by our receive.
            "sent" => {
                let mut wrong = wrong.expect("no mismatch at our take: we took first");
                let got = wrong.recv_timeout(Duration::from_secs(10)).map(|m| *m);
                assert!(
                    matches!(
                        got,
                        Err(RecvError::TypeMismatch {
                            direction: "child-to-parent"
                        })
                    ),
                    "{t}: {got:?}"
                );
            }
            other => panic!("{t}: {other}"),
        }
        drop(jobs); // the child's loop ends
        assert_eq!(
            events.recv_timeout(Duration::from_secs(10)).unwrap_err(),
            RecvError::Disconnected
        );
        assert!(child.wait().unwrap().success(), "{t}");
        drop((mixed, events, rx_only));
        assert_no_leftovers();
    }
}

// ---------------------------------------------------------------------------
// The child's side.
// ---------------------------------------------------------------------------

#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("ends_api child", Duration::from_secs(60));
    let conn = remora::connect().unwrap();
    match role.as_str() {
        "attach_and_wait" => {
            let (mut tx, mut rx) = conn.channel::<u32, u32>("c").unwrap();
            let v = rx.recv().unwrap().to_native();
            tx.send(&v).unwrap();
            // Until killed.
            let _ = rx.recv();
        }
        "fifo_queries" => {
            let (_, mut rx) = conn.raw_channel("data").unwrap();
            let (_, mut fill) = conn.raw_channel("fill").unwrap();
            let (mut ctl_tx, mut ctl_rx) = conn.channel::<u64, u64>("ctl").unwrap();
            assert_eq!(rx.capacity(), 4096);
            eventually("three messages waiting", || rx.len() == 32 + 16 + 48);
            assert!(!rx.is_empty() && !rx.is_full() && !rx.is_disconnected());
            let mut lens = Vec::new();
            assert_eq!(rx.drain(|b| lens.push(b.len())).unwrap(), 3);
            assert_eq!(lens, [5, 0, 20]);
            assert!(rx.is_empty());
            ctl_tx.send(&3).unwrap();

            let sent = ctl_rx.recv().unwrap().to_native();
            assert!(fill.is_full(), "{} bytes waiting", fill.len());
            let mut drained = 0;
            while drained < sent {
                drained += fill.drain(|b| assert!(b.is_empty())).unwrap() as u64;
            }
            assert!(fill.is_empty() && !fill.is_full());
            ctl_tx.send(&drained).unwrap();

            eventually("the parent's sender is gone", || rx.is_disconnected());
            assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
            ctl_tx.send(&1).unwrap();
        }
        "one_way" => {
            let mut jobs = conn.receiver::<u64>("jobs").unwrap();
            let mut events = conn.sender::<String>("events").unwrap();
            // Both ways here; the parent sends only: `u8` is never checked.
            let (mut back, mut mixed) = conn.channel::<u8, u64>("mixed").unwrap();
            let mut sum = 0;
            for _ in 0..3 {
                sum += jobs.recv().unwrap().to_native();
            }
            events.send(&format!("sum={sum}")).unwrap();
            let v = mixed.recv().unwrap().to_native();
            eventually("the unused direction hung up", || back.is_disconnected());
            let sent = back.send(&1);
            events.send(&format!("mixed={v} back={sent:?}")).unwrap();
            let (mut up, mut down) = conn.channel::<u64, u32>("rx_only").unwrap();
            let closed = down.recv_timeout(Duration::from_secs(10)).map(|m| *m);
            events.send(&format!("rx_only={closed:?}")).unwrap();
            up.send(&5).unwrap();
            let wrong = match conn.sender::<u32>("wrong") {
                Err(remora::ChannelError::TypeMismatch { .. }) => "mismatch",
                Ok(mut tx) => {
                    tx.send(&7).unwrap();
                    "sent"
                }
                Err(e) => panic!("{e}"),
            };
            events.send(&wrong.to_owned()).unwrap();
            assert_eq!(jobs.recv().unwrap_err(), RecvError::Disconnected);
        }
        other => panic!("unknown role {other}"),
    }
}
