//! `ReceiveMode::Untrusted`: same messages as in place, read from a private
//! copy, ring space released at once, no allocation per message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use remora::{ChannelConfig, ReceiveMode, RecvError, Segment};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread (tests run on parallel threads).
    static THREAD_ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        THREAD_ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let before = THREAD_ALLOCATIONS.with(|c| c.get());
    for _ in 0..100 {
        round();
    }
    assert_eq!(THREAD_ALLOCATIONS.with(|c| c.get()) - before, 0);
    assert!(
        ALLOCATIONS.load(Ordering::Relaxed) > 0,
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
