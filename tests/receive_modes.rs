//! `ReceiveMode::Untrusted`: same messages as in place, read from a private
//! copy, ring space released at once, no allocation per message.

mod common;

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

#[test]
fn untrusted_mode_reads_a_private_copy_and_frees_the_ring_at_once() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(1024)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Record, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Record>("c").unwrap();
    rx.set_receive_mode(ReceiveMode::Untrusted);
    assert_eq!(rx.receive_mode(), ReceiveMode::Untrusted);

    for id in 0..200 {
        tx.send(&record(id)).unwrap();
        let held = rx.recv().unwrap();
        assert_eq!(held.id, id);
        assert_eq!(held.values.len(), id as usize % 50);
        // The ring frame was released when copied: the sender can refill the
        // whole ring while we still hold the message.
        let mut sent = 0;
        while tx.try_send(&record(0)).is_ok() {
            sent += 1;
        }
        assert!(
            sent >= 2,
            "ring space not released while the message is held"
        );
        assert!(held.name.starts_with("record number"));
        drop(held);
        while rx.try_recv().is_ok() {}
    }
}

#[test]
fn untrusted_mode_does_not_allocate_per_message() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(1 << 16)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Record, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Record>("c").unwrap();
    rx.set_receive_mode(ReceiveMode::Untrusted);
    let msgs: Vec<Record> = (0..100).map(record).collect();
    let mut round = || {
        for m in &msgs {
            tx.send(m).unwrap();
            assert_eq!(rx.recv().unwrap().id, m.id);
        }
    };
    round();
    let n = allocations_during(|| {
        for _ in 0..100 {
            round();
        }
    });
    assert_eq!(n, 0);
    assert!(
        allocations_during(|| drop(std::hint::black_box(Box::new(1u8)))) > 0,
        "the counter counts"
    );
}

#[test]
fn untrusted_mode_rejects_a_corrupt_copy() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Vec<u32>, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Vec<u32>>("c").unwrap();
    rx.set_receive_mode(ReceiveMode::Untrusted);
    tx.send(&vec![1, 2, 3, 4]).unwrap();
    tx.send(&vec![5]).unwrap();
    // Scribble over the first payload (parent-to-child ring at 8192, data
    // after the 640-byte control block, payload after the frame header).
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", parent.name()))
        .unwrap();
    f.seek(SeekFrom::Start(8192 + 640 + 16)).unwrap();
    f.write_all(&[0xff; 24]).unwrap();
    assert!(matches!(
        rx.recv().map(|m| m.len()),
        Err(RecvError::Invalid { len: 24 })
    ));
    assert_eq!(rx.recv().unwrap().as_slice(), [5]);
}
