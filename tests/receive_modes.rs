//! Receive modes: the default `ReceiveMode::Copy` (typed and raw) reads a
//! private copy, frees the ring at once and allocates nothing per message;
//! `ReceiveMode::InPlace` (behind the `unsafe` `trust_peer`) reads the ring,
//! also without allocating; so does draining with `drain`, in both modes.
//! Defaults per side are checked here and in `tests/conformance.rs`
//! (spawned children).

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::alloc::allocations_during;
use remora::{ChannelConfig, ReceiveMode, RecvError, Segment};

#[global_allocator]
static GLOBAL: common::alloc::Counting = common::alloc::Counting;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Record {
    id: u64,
    name: String,
    values: Vec<u32>,
}

fn record(id: u64) -> Record {
    Record {
        id,
        name: format!("record number {id}, long enough to live out of line"),
        values: (0..id as u32 % 50).collect(),
    }
}

/// Offset in the segment of the first payload of the parent-to-child ring
/// of a one-channel segment: the ring block at 8192, its data after the
/// 640-byte control block, the payload after the 16-byte frame header.
const FIRST_PAYLOAD: u64 = 8192 + 640 + 16;

/// Writes `bytes` at `offset` of the segment, as a hostile peer would.
fn scribble(segment: &Segment, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", segment.name()))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn segment_ends_on_both_sides_copy_by_default() {
    let parent = Segment::create(&[
        ChannelConfig::new("typed").capacity(4096),
        ChannelConfig::new("raw").capacity(4096),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (_, parent_rx) = parent.channel::<u64, u64>("typed").unwrap();
    let (_, child_rx) = child.channel::<u64, u64>("typed").unwrap();
    let (_, parent_raw) = parent.raw_channel("raw").unwrap();
    let (_, mut child_raw) = child.raw_channel("raw").unwrap();
    assert_eq!(parent_rx.receive_mode(), ReceiveMode::Copy);
    assert_eq!(child_rx.receive_mode(), ReceiveMode::Copy);
    assert_eq!(parent_raw.receive_mode(), ReceiveMode::Copy);
    assert_eq!(child_raw.receive_mode(), ReceiveMode::Copy);
    // SAFETY: both ends are in this process; nothing rewrites frames.
    unsafe { child_raw.trust_peer() };
    assert_eq!(child_raw.receive_mode(), ReceiveMode::InPlace);
    child_raw.distrust_peer();
    assert_eq!(child_raw.receive_mode(), ReceiveMode::Copy);
}

/// Sends empty frames (16 bytes each, the smallest, so they fit at any
/// ring position without skipping) until the ring is full; returns how many.
fn fill_with_empty_frames(tx: &mut remora::RawSender) -> usize {
    let mut sent = 0;
    while tx.try_send(&[]).is_ok() {
        sent += 1;
    }
    sent
}

/// Copy mode releases the frame when it copies it: while the message is
/// still held, the sender sees nothing in flight and can fill exactly a
/// whole empty ring. (A receiver that kept the frame until drop fails both.)
#[test]
fn copy_mode_reads_a_private_copy_and_frees_the_ring_at_once() {
    let parent = Segment::create(&[
        ChannelConfig::new("c").capacity(1024),
        ChannelConfig::new("raw").capacity(1024),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Record, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Record>("c").unwrap();
    assert_eq!(rx.receive_mode(), ReceiveMode::Copy);
    for id in 0..200 {
        tx.send(&record(id)).unwrap();
        assert!(!tx.is_empty());
        let held = rx.recv().unwrap();
        assert_eq!(
            tx.len(),
            0,
            "message {id}: its frame is still in the ring while the copy is held"
        );
        assert_eq!(held.id, id);
        assert_eq!(held.values.len(), id as usize % 50);
        assert!(held.name.starts_with("record number"));
        drop(held);
        assert_eq!(tx.len(), 0);
    }

    let (mut tx, _) = parent.raw_channel("raw").unwrap();
    let (_, mut rx) = child.raw_channel("raw").unwrap();
    assert_eq!(rx.receive_mode(), ReceiveMode::Copy);
    let whole_ring = tx.capacity() / 16;
    for round in 0..100usize {
        // Sizes 0..=400 move the ring position around, wrap included.
        let msg = vec![round as u8; round * 37 % 401];
        tx.send(&msg).unwrap();
        let held = rx.recv().unwrap();
        assert_eq!(tx.len(), 0, "round {round}: frame not released by the copy");
        assert_eq!(
            fill_with_empty_frames(&mut tx),
            whole_ring,
            "round {round}: the sender must fill a whole empty ring while the copy is held"
        );
        assert_eq!(&*held, &msg[..]);
        drop(held);
        assert_eq!(rx.drain(|m| assert!(m.is_empty())).unwrap(), whole_ring);
    }
}

/// In place (trusted), the frame is the message: it stays in the ring, and
/// counts against the sender, until the message is dropped.
#[test]
fn in_place_mode_holds_the_frame_until_the_message_is_dropped() {
    let parent = Segment::create(&[
        ChannelConfig::new("c").capacity(1024),
        ChannelConfig::new("raw").capacity(1024),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Record, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Record>("c").unwrap();
    // SAFETY: the sender is in this process and never rewrites a frame.
    unsafe { rx.trust_peer() };
    for id in 0..50 {
        tx.send(&record(id)).unwrap();
        let in_flight = tx.len();
        assert_ne!(in_flight, 0);
        let held = rx.recv().unwrap();
        assert_eq!(held.id, id);
        assert_eq!(tx.len(), in_flight, "message {id}: released while held");
        drop(held);
        assert_eq!(tx.len(), 0, "message {id}: not released on drop");
    }

    let (mut tx, _) = parent.raw_channel("raw").unwrap();
    let (_, mut rx) = child.raw_channel("raw").unwrap();
    // SAFETY: as above.
    unsafe { rx.trust_peer() };
    let whole_ring = tx.capacity() / 16;
    for round in 0..100usize {
        let msg = vec![round as u8; round * 37 % 401];
        let frame = 16 + msg.len().div_ceil(16) * 16;
        tx.send(&msg).unwrap();
        let held = rx.recv().unwrap();
        assert_eq!(tx.len(), frame, "round {round}: released while held");
        assert_eq!(
            fill_with_empty_frames(&mut tx),
            whole_ring - frame / 16,
            "round {round}: the held frame must keep its space"
        );
        assert_eq!(&*held, &msg[..]);
        drop(held);
        assert_eq!(tx.len(), (whole_ring - frame / 16) * 16);
        assert_eq!(
            rx.drain(|m| assert!(m.is_empty())).unwrap(),
            whole_ring - frame / 16
        );
    }
}

#[test]
fn raw_copy_mode_is_a_snapshot_the_peer_cannot_change() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.send(&[7; 64]).unwrap();
    let held = rx.recv().unwrap();
    // The peer rewrites the frame after we received it: our bytes stay.
    scribble(&parent, FIRST_PAYLOAD, &[0xee; 64]);
    assert_eq!(&*held, &[7; 64]);
    drop(held);

    // In place (trusted), the same rewrite shows through: this is what the
    // `unsafe` of `trust_peer` is about.
    // SAFETY: for this test only, the rewrite happens while no `&[u8]` of
    // the frame exists: between `send` and `recv`.
    unsafe { rx.trust_peer() };
    tx.send(&[9; 64]).unwrap();
    let at = FIRST_PAYLOAD + 80; // the second frame: header + 64 bytes later
    scribble(&parent, at, &[0xee; 64]);
    assert_eq!(&*rx.recv().unwrap(), &[0xee; 64]);
}

/// Sends and receives `Record`s in the receiver's current mode; zero
/// allocations after a warm-up.
fn assert_no_allocations(trusted: bool) {
    let parent = Segment::create(&[
        ChannelConfig::new("c").capacity(1 << 16),
        ChannelConfig::new("raw").capacity(1 << 12),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Record, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Record>("c").unwrap();
    let (mut raw_tx, _) = parent.raw_channel("raw").unwrap();
    let (_, mut raw_rx) = child.raw_channel("raw").unwrap();
    if trusted {
        // SAFETY: the sender is in this process and never rewrites a frame.
        unsafe {
            rx.trust_peer();
            raw_rx.trust_peer();
        }
    }
    let expected = if trusted {
        ReceiveMode::InPlace
    } else {
        ReceiveMode::Copy
    };
    assert_eq!(rx.receive_mode(), expected);
    assert_eq!(raw_rx.receive_mode(), expected);
    let msgs: Vec<Record> = (0..100).map(record).collect();
    let bytes = [0x5au8; 300];
    let mut round = || {
        for m in &msgs {
            tx.send(m).unwrap();
            let got = rx.recv().unwrap();
            assert_eq!(got.id, m.id);
            assert_eq!(got.values.len(), m.values.len());
            drop(got);
            raw_tx.send(&bytes).unwrap();
            assert_eq!(&*raw_rx.recv().unwrap(), &bytes);
        }
        // Draining with a closure: several messages per call, typed and raw.
        for chunk in msgs.chunks(5) {
            for m in chunk {
                tx.send(m).unwrap();
                raw_tx.send(&bytes).unwrap();
            }
            let mut ids = 0;
            let n = rx.drain(|got| ids += got.id.to_native()).unwrap();
            assert_eq!(n, chunk.len());
            assert_eq!(ids, chunk.iter().map(|m| m.id).sum::<u64>());
            let n = raw_rx.drain(|got| assert_eq!(got, &bytes)).unwrap();
            assert_eq!(n, chunk.len());
        }
    };
    round();
    let n = allocations_during(|| {
        for _ in 0..100 {
            round();
        }
    });
    assert_eq!(
        n, 0,
        "{n} allocations in 20,000 typed + raw messages (half drained)"
    );
    assert!(
        allocations_during(|| drop(std::hint::black_box(Box::new(1u8)))) > 0,
        "the counter counts"
    );
}

#[test]
fn default_copy_mode_does_not_allocate_per_message() {
    assert_no_allocations(false);
}

#[test]
fn trusted_in_place_mode_does_not_allocate_per_message() {
    assert_no_allocations(true);
}

#[test]
fn copy_mode_rejects_a_corrupt_copy() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Vec<u32>, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Vec<u32>>("c").unwrap();
    tx.send(&vec![1, 2, 3, 4]).unwrap();
    tx.send(&vec![5]).unwrap();
    scribble(&parent, FIRST_PAYLOAD, &[0xff; 24]);
    assert!(matches!(
        rx.recv().map(|m| m.len()),
        Err(RecvError::Invalid { len: 24 })
    ));
    assert_eq!(rx.recv().unwrap().as_slice(), [5]);
}
