//! Faults found in review (issue 10, part 3): each test here failed before
//! its fix.
//!
//! Shared-memory cases run in one process (the segment is created and
//! opened by name, exactly as a child would) and corrupt the segment through
//! its file in /dev/shm. FIFO cases are cross-process (the FIFO transport
//! only exists between a spawner and its child). Every blocking step runs
//! under a bound, so a regression fails instead of hanging.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Watchdog, remora_fifo_dirs, role};
use remora::{
    ChannelConfig, ChannelError, RecvError, RingFault, Segment, SendError, Spawner, StreamFault,
    Transport,
};

/// Offset of the first ring block (parent-to-child of channel 0).
const P2C: u64 = 8192;
/// Offsets inside a ring block (see ARCHITECTURE.md).
const TAIL: u64 = 0;
const HEAD: u64 = 128;
const ENDS: u64 = 512;
const DATA: u64 = 640;

/// Offset of the child-to-parent ring block of channel 0, for `capacity`.
fn c2p(capacity: u64) -> u64 {
    P2C + (640 + capacity).div_ceil(4096) * 4096
}

fn pair(capacity: usize) -> (Segment, Segment) {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(capacity)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    (parent, child)
}

/// The segment's file in /dev/shm, opened for corrupting it. Opened once,
/// right after creation: the descriptor stays valid even if something
/// unlinks the name meanwhile (a stale-segment sweep run by a test of
/// another crate build in a PID namespace, where our pid looks dead).
fn segment_file(seg: &Segment) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{}", seg.name()))
        .unwrap()
}

/// Writes `bytes` at `offset` of the segment's file.
fn poke(file: &std::fs::File, offset: u64, bytes: &[u8]) {
    file.write_all_at(bytes, offset).unwrap();
}

/// Reads the u32 at `offset` of the segment's file.
fn peek_u32(file: &std::fs::File, offset: u64) -> u32 {
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, offset).unwrap();
    u32::from_ne_bytes(word)
}

/// Runs `f` on a thread and returns its result, or panics if it takes
/// longer than `limit` (the thread is left behind, blocked: the test has
/// failed anyway).
fn bounded<R: Send + 'static>(
    label: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{label}: no result within {limit:?}"))
}

/// A spawner that re-executes this test binary in `role`, over FIFOs.
fn fifo_spawner(role: &str) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .transport(Transport::Fifo);
    s
}

/// Waits for `child` to exit successfully, at most `limit`.
fn exits_successfully(child: &mut KillOnDrop, limit: Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        assert!(
            start.elapsed() < limit,
            "child did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Serialises the cross-process tests (2 shared cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// A receiver that fails for good closes its end.
// ---------------------------------------------------------------------------

/// Shared memory: a sender blocked on a full ring gets `Disconnected` once
/// the receiver is poisoned by a corrupt frame, while the receiver (still
/// alive) keeps reporting the fault; later sends fail at once.
#[test]
fn a_corrupted_shm_receiver_closes_its_end() {
    let _w = Watchdog::new("corrupted shm receiver", Duration::from_secs(60));
    let (parent, child) = pair(4096);
    let file = segment_file(&parent);
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    while tx.try_send(&[1; 100]).is_ok() {}
    let (started_tx, started) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        let first = tx.send(&[2; 100]);
        let second = tx.send(&[3; 100]);
        let _ = done_tx.send((first, second));
    });
    started.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20)); // let it block (either way works)
    // The first frame's kind word becomes garbage.
    poke(&file, P2C + DATA + 4, &0xdead_beefu32.to_ne_bytes());
    let err = rx.recv().map(|m| m.to_vec()).unwrap_err();
    assert!(
        matches!(err, RecvError::Corrupted(RingFault::BadKind { .. })),
        "{err}"
    );
    let sends = done
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!("the blocked send did not end after the receiver failed for good")
        });
    assert_eq!(
        sends,
        (Err(SendError::Disconnected), Err(SendError::Disconnected))
    );
    assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(err));
}

/// FIFOs: the child's blocking sends end with `Disconnected` once our
/// receiver is poisoned by a malformed frame, although we keep it alive.
#[test]
fn a_malformed_fifo_receiver_closes_its_end() {
    let _s = serial();
    let _w = Watchdog::new("malformed fifo receiver", Duration::from_secs(120));
    let mut child = KillOnDrop(
        fifo_spawner("garbage_then_fill")
            .channel_with(ChannelConfig::new("c").capacity(4096))
            .spawn()
            .unwrap(),
    );
    let (_tx, mut rx) = child.raw_channel("c").unwrap();
    let err = rx
        .recv_timeout(Duration::from_secs(30))
        .map(|m| m.to_vec())
        .unwrap_err();
    assert!(
        matches!(
            err,
            RecvError::Malformed(StreamFault::BadKind {
                kind: 0xdead_beef,
                ..
            })
        ),
        "{err}"
    );
    // `rx` stays alive: the child's sends must fail on their own.
    exits_successfully(&mut child, Duration::from_secs(30));
    assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(err));
    drop(rx);
    assert!(remora_fifo_dirs().is_empty());
}

/// Child of `a_malformed_fifo_receiver_closes_its_end`: copies its pipe end
/// behind remora's back first, connects, writes a bad frame header through
/// the back door, then sends until the pipe would be full.
fn garbage_then_fill() {
    // The child-to-parent end, opened through the parent's /proc before
    // `connect` (while the parent keeps its copy).
    let (_, mut channels) = common::fifo_child_ends();
    let (mut back_door, _) = channels.remove(0);
    let conn = remora::connect().unwrap();
    let (mut tx, _rx) = conn.raw_channel("c").unwrap();
    let mut bad = [0u8; 16];
    bad[..4].copy_from_slice(&8u32.to_ne_bytes());
    bad[4..8].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
    back_door.write_all(&bad).unwrap();
    drop(back_door);
    let mut sent = 0u64;
    let err = loop {
        match tx.send(&[0; 100]) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, SendError::Disconnected, "after {sent} sends");
}

// ---------------------------------------------------------------------------
// Oversized typed sends.
// ---------------------------------------------------------------------------

/// A typed message whose encoding can never fit is `TooLarge` at once, in
/// every send form, whether the ring is full or has a little room; nothing
/// waits for space. The receiver never reads.
#[test]
fn oversized_typed_sends_fail_at_once() {
    let _w = Watchdog::new("oversized typed sends", Duration::from_secs(60));
    let too_large = Err(SendError::TooLarge { max: 496 });
    for fill in ["full", "some room"] {
        let (parent, child) = pair(1024);
        let (mut tx, _) = parent.channel::<Vec<u8>, ()>("c").unwrap();
        let (_, rx) = child.channel::<(), Vec<u8>>("c").unwrap();
        if fill == "full" {
            while tx.try_send(&vec![1u8; 40]).is_ok() {}
        } else {
            // Two 400-byte messages leave 160 contiguous bytes at the tail.
            tx.try_send(&vec![1u8; 400]).unwrap();
            tx.try_send(&vec![1u8; 400]).unwrap();
        }
        let results = bounded(fill, Duration::from_secs(20), move || {
            let big = vec![2u8; 2000];
            let r = (
                tx.try_send(&big),
                tx.send_timeout(&big, Duration::from_secs(3600)),
                tx.send(&big),
            );
            (r, tx)
        });
        let ((try_send, send_timeout, send), _tx) = results;
        assert_eq!(try_send, too_large, "try_send, ring {fill}");
        assert_eq!(send_timeout, too_large, "send_timeout, ring {fill}");
        assert_eq!(send, too_large, "send, ring {fill}");
        drop(rx);
    }
}

// ---------------------------------------------------------------------------
// FIFO sends honour their bound with a frame half written.
// ---------------------------------------------------------------------------

/// Payload bytes of the partial-frame test's messages: bigger than
/// `PIPE_BUF`, several to a 64 KiB pipe, so one of them is always split.
const PARTIAL_LEN: usize = 20_000;
/// The partial-frame test's channels: 64 KiB pipes.
const PARTIAL_CAPACITY: usize = 64 * 1024;

/// Message `i` of the partial-frame test.
fn partial_payload(i: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..PARTIAL_LEN)
        .map(|j| (i as usize * 7 + j) as u8)
        .collect();
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// Asserts that `f` (one bounded send) returns within a generous bound.
fn quick<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{what} took {:?}",
        start.elapsed()
    );
    r
}

/// Over FIFOs `send_timeout` and `try_send` return within their bound
/// while the reader reads nothing, even when the pipe fills in the middle
/// of a frame: the call that started the frame returns `Ok` (accepted),
/// later ones `Timeout`/`Full` (not sent). Once the reader drains, every
/// accepted message arrives exactly once and intact: the rest of the split
/// frame goes out first on the next send (raw channel) or when the sender
/// is dropped (typed channel).
#[test]
fn fifo_sends_keep_their_bound_mid_frame() {
    let _s = serial();
    let _w = Watchdog::new("fifo partial frames", Duration::from_secs(180));
    let mut child = KillOnDrop(
        fifo_spawner("partial_reader")
            .channel_with(ChannelConfig::new("raw").capacity(PARTIAL_CAPACITY))
            .channel_with(ChannelConfig::new("typed").capacity(PARTIAL_CAPACITY))
            .channel("ctl")
            .spawn()
            .unwrap(),
    );
    let (tx, _rx) = child.raw_channel("raw").unwrap();
    let (ttx, _trx) = child.channel::<Vec<u8>, Vec<u8>>("typed").unwrap();
    let (mut ctl_tx, mut ctl_rx) = child.channel::<u64, u64>("ctl").unwrap();
    let ctl_recv = |rx: &mut remora::Receiver<u64>| -> u64 {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap()
            .to_native()
    };

    // Raw: fill with send_timeout until it times out.
    let (mut tx, accepted) = bounded("raw fill", Duration::from_secs(60), move || {
        let mut tx = tx;
        let mut accepted = 0u64;
        loop {
            let r = quick("send_timeout", || {
                tx.send_timeout(&partial_payload(accepted), Duration::from_millis(50))
            });
            match r {
                Ok(()) => accepted += 1,
                Err(SendError::Timeout) => break,
                Err(e) => panic!("send_timeout: {e}"),
            }
            assert!(accepted < 100, "the pipe never filled");
        }
        let next = partial_payload(accepted);
        assert_eq!(
            quick("try_send", || tx.try_send(&next)),
            Err(SendError::Full)
        );
        let r = quick("send_timeout", || {
            tx.send_timeout(&next, Duration::from_millis(50))
        });
        assert_eq!(r, Err(SendError::Timeout));
        (tx, accepted)
    });
    eprintln!("raw (send_timeout until Timeout): {accepted} messages accepted");
    assert!(
        accepted >= 2,
        "only {accepted} messages before the pipe filled"
    );
    // The reader drains; the next (blocking) send finishes the split frame
    // first, then sends its own message.
    ctl_tx.send(&(accepted + 1)).unwrap();
    tx.send(&partial_payload(accepted)).unwrap();
    assert_eq!(ctl_recv(&mut ctl_rx), accepted + 1, "raw messages received");

    // Typed: fill with try_send until it is full.
    let (ttx, accepted) = bounded("typed fill", Duration::from_secs(60), move || {
        let mut ttx = ttx;
        let mut accepted = 0u64;
        loop {
            match quick("try_send", || ttx.try_send(&partial_payload(accepted))) {
                Ok(()) => accepted += 1,
                Err(SendError::Full) => break,
                Err(e) => panic!("try_send: {e}"),
            }
            assert!(accepted < 100, "the pipe never filled");
        }
        let next = partial_payload(accepted);
        let r = quick("send_timeout", || {
            ttx.send_timeout(&next, Duration::from_millis(50))
        });
        assert_eq!(r, Err(SendError::Timeout));
        // A message that can never fit is TooLarge at once, even with the
        // pipe full and a split frame pending: even for a blocking send.
        let max = ttx.max_message();
        let r = quick("oversized send", || ttx.send(&vec![0u8; PARTIAL_CAPACITY]));
        assert_eq!(r, Err(SendError::TooLarge { max }));
        (ttx, accepted)
    });
    eprintln!("typed (try_send until Full): {accepted} messages accepted");
    assert!(
        accepted >= 2,
        "only {accepted} messages before the pipe filled"
    );
    // The reader starts draining; dropping the sender then finishes the
    // split frame (the reader is reading), and the reader sees exactly the
    // accepted messages, then `Disconnected`.
    ctl_tx.send(&accepted).unwrap();
    assert_eq!(ctl_recv(&mut ctl_rx), 0, "the reader started");
    drop(ttx);
    assert_eq!(ctl_recv(&mut ctl_rx), accepted, "typed messages received");

    drop((tx, ctl_tx, ctl_rx));
    exits_successfully(&mut child, Duration::from_secs(60));
    assert!(remora_fifo_dirs().is_empty());
}

/// Child of `fifo_sends_keep_their_bound_mid_frame`: reads nothing until
/// told how many messages to expect, then checks each one.
fn partial_reader() {
    let conn = remora::connect().unwrap();
    let (_tx, mut rx) = conn.raw_channel("raw").unwrap();
    let (_ttx, mut trx) = conn.channel::<Vec<u8>, Vec<u8>>("typed").unwrap();
    let (mut ctl_tx, mut ctl_rx) = conn.channel::<u64, u64>("ctl").unwrap();
    let n: u64 = ctl_rx.recv().unwrap().to_native();
    for i in 0..n {
        assert_eq!(
            rx.recv().unwrap().to_vec(),
            partial_payload(i),
            "raw message {i}"
        );
    }
    ctl_tx.send(&n).unwrap();

    let n: u64 = ctl_rx.recv().unwrap().to_native();
    let first = trx.recv().unwrap().to_vec();
    assert_eq!(first, partial_payload(0), "typed message 0");
    ctl_tx.send(&0).unwrap();
    for i in 1..n {
        assert_eq!(
            trx.recv().unwrap().to_vec(),
            partial_payload(i),
            "typed message {i}"
        );
    }
    // Nothing more: no message twice, no torn frame.
    assert!(matches!(trx.recv().map(drop), Err(RecvError::Disconnected)));
    ctl_tx.send(&n).unwrap();
    assert!(matches!(rx.recv().map(drop), Err(RecvError::Disconnected)));
}

/// A sender dropped with a split frame pending while the reader reads
/// nothing waits a bounded time, then closes: the reader gets every
/// complete message, then a clean `Malformed(Truncated)`, never a torn
/// frame read as a message.
#[test]
fn fifo_sender_dropped_mid_frame_is_a_clean_error() {
    let _s = serial();
    let _w = Watchdog::new("fifo drop mid-frame", Duration::from_secs(120));
    let mut child = KillOnDrop(
        fifo_spawner("truncated_reader")
            .channel_with(ChannelConfig::new("raw").capacity(PARTIAL_CAPACITY))
            .channel("ctl")
            .spawn()
            .unwrap(),
    );
    let (tx, _rx) = child.raw_channel("raw").unwrap();
    let (mut ctl_tx, mut ctl_rx) = child.channel::<u64, u64>("ctl").unwrap();
    let accepted = bounded("fill and drop", Duration::from_secs(60), move || {
        let mut tx = tx;
        let mut accepted = 0u64;
        while quick("try_send", || tx.try_send(&partial_payload(accepted))).is_ok() {
            accepted += 1;
            assert!(accepted < 100, "the pipe never filled");
        }
        // The reader is not reading: the drop gives up after its bound.
        quick("drop", || drop(tx));
        accepted
    });
    assert!(
        accepted >= 2,
        "only {accepted} messages before the pipe filled"
    );
    ctl_tx.send(&accepted).unwrap();
    let complete: u64 = ctl_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .to_native();
    // The pipe filled in the middle of the last accepted frame (the 64 KiB
    // pipe holds no whole number of 20 kB frames).
    assert_eq!(complete, accepted - 1, "complete messages received");
    drop((ctl_tx, ctl_rx));
    exits_successfully(&mut child, Duration::from_secs(60));
    assert!(remora_fifo_dirs().is_empty());
}

/// Child of `fifo_sender_dropped_mid_frame_is_a_clean_error`.
fn truncated_reader() {
    let conn = remora::connect().unwrap();
    let (_tx, mut rx) = conn.raw_channel("raw").unwrap();
    let (mut ctl_tx, mut ctl_rx) = conn.channel::<u64, u64>("ctl").unwrap();
    let _accepted: u64 = ctl_rx.recv().unwrap().to_native();
    let mut complete = 0u64;
    let err = loop {
        match rx.recv() {
            Ok(m) => {
                assert_eq!(m.to_vec(), partial_payload(complete), "message {complete}");
                complete += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, RecvError::Malformed(StreamFault::Truncated { .. })),
        "{err}"
    );
    ctl_tx.send(&complete).unwrap();
}

// ---------------------------------------------------------------------------
// The child side.
// ---------------------------------------------------------------------------

/// Entry point of the re-executed children; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("faults child", Duration::from_secs(150));
    match role.as_str() {
        "garbage_then_fill" => garbage_then_fill(),
        "partial_reader" => partial_reader(),
        "truncated_reader" => truncated_reader(),
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Opening a channel.
// ---------------------------------------------------------------------------

/// `Producer::new` validates the head like `refresh_head`: an unaligned head
/// (here behind a plausible tail) is refused when the channel is taken.
#[test]
fn producer_refuses_a_corrupt_head_at_open() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let file = segment_file(&parent);
    poke(&file, P2C + TAIL, &32u64.to_ne_bytes());
    poke(&file, P2C + HEAD, &8u64.to_ne_bytes());
    let err = parent.raw_channel("c").unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::Corrupted(RingFault::BadIndex { seen: 8, ours: 32 })
        ),
        "{err}"
    );
}

/// A take whose second end (the receiver) fails must leave the first
/// direction open: the peer's receiver sees an empty channel, not a closed
/// one, and the channel can be taken once the ring is sane again.
#[test]
fn a_failed_take_leaves_both_directions_usable() {
    let (parent, child) = pair(4096);
    let file = segment_file(&parent);
    // The parent's receiving ring gets an unaligned head: its Consumer::new
    // fails after its Producer::new succeeded.
    poke(&file, c2p(4096) + HEAD, &8u64.to_ne_bytes());
    let err = parent.raw_channel("c").unwrap_err();
    assert!(matches!(err, ChannelError::Corrupted(_)), "{err}");
    assert_eq!(
        peek_u32(&file, P2C + ENDS),
        0,
        "the parent's sending direction was closed by the failed take"
    );
    // Repaired, the channel can be taken on both sides and works both ways.
    poke(&file, c2p(4096) + HEAD, &0u64.to_ne_bytes());
    let (mut ctx, mut rx) = child.raw_channel("c").unwrap();
    assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(RecvError::Empty));
    let (mut tx, mut prx) = parent.raw_channel("c").unwrap();
    tx.send(b"after").unwrap();
    assert_eq!(&*rx.try_recv().unwrap(), b"after");
    assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(RecvError::Empty));
    ctx.send(b"back").unwrap();
    assert_eq!(&*prx.try_recv().unwrap(), b"back");
}
