//! Faults found in review (issue 10, part 3): each test here failed before
//! its fix.
//!
//! Shared-memory cases run in one process (the segment is created and
//! opened by name, exactly as a child would) and corrupt the segment through
//! its file in /dev/shm. FIFO cases are cross-process (the FIFO transport
//! only exists between a spawner and its child). Every blocking step runs
//! under a bound, so a regression fails instead of hanging.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::Watchdog;
use remora::{ChannelConfig, ChannelError, RecvError, RingFault, Segment, SendError};

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

/// Writes `bytes` at `offset` of the segment's file in /dev/shm.
fn poke(seg: &Segment, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", seg.name()))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Reads the u32 at `offset` of the segment's file in /dev/shm.
fn peek_u32(seg: &Segment, offset: u64) -> u32 {
    let bytes = std::fs::read(format!("/dev/shm{}", seg.name())).unwrap();
    let at = offset as usize;
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
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

// ---------------------------------------------------------------------------
// Opening a channel.
// ---------------------------------------------------------------------------

/// `Producer::new` validates the head like `refresh_head`: an unaligned head
/// (here behind a plausible tail) is refused when the channel is taken.
#[test]
fn producer_refuses_a_corrupt_head_at_open() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    poke(&parent, P2C + TAIL, &32u64.to_ne_bytes());
    poke(&parent, P2C + HEAD, &8u64.to_ne_bytes());
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
    // The parent's receiving ring gets an unaligned head: its Consumer::new
    // fails after its Producer::new succeeded.
    poke(&parent, c2p(4096) + HEAD, &8u64.to_ne_bytes());
    let err = parent.raw_channel("c").unwrap_err();
    assert!(matches!(err, ChannelError::Corrupted(_)), "{err}");
    assert_eq!(
        peek_u32(&parent, P2C + ENDS),
        0,
        "the parent's sending direction was closed by the failed take"
    );
    // Repaired, the channel can be taken on both sides and works both ways.
    poke(&parent, c2p(4096) + HEAD, &0u64.to_ne_bytes());
    let (mut ctx, mut rx) = child.raw_channel("c").unwrap();
    assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(RecvError::Empty));
    let (mut tx, mut prx) = parent.raw_channel("c").unwrap();
    tx.send(b"after").unwrap();
    assert_eq!(&*rx.try_recv().unwrap(), b"after");
    assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(RecvError::Empty));
    ctx.send(b"back").unwrap();
    assert_eq!(&*prx.try_recv().unwrap(), b"back");
}
