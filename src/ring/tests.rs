//! Ring unit tests on a heap-backed region.

use std::collections::VecDeque;
use std::ptr::NonNull;

use super::*;
use crate::layout::RingControl;

/// A ring in ordinary heap memory.
struct HeapRing {
    ctrl: Box<RingControl>,
    data: Vec<u128>, // u128 for 16-byte alignment
}

impl HeapRing {
    fn new(cap: usize) -> HeapRing {
        HeapRing {
            ctrl: Box::default(),
            data: vec![0u128; cap / 16],
        }
    }

    fn region(&mut self) -> RingRegion {
        let cap = self.data.len() * 16;
        // SAFETY: both allocations outlive the test's producer and consumer,
        // which are dropped before `self`.
        unsafe {
            RingRegion::new(
                NonNull::from(&mut *self.ctrl),
                NonNull::new(self.data.as_mut_ptr().cast()).unwrap(),
                cap,
            )
        }
    }

    fn ends(&mut self) -> (Producer, Consumer) {
        let r = self.region();
        // SAFETY: one producer and one consumer per test ring.
        unsafe { (Producer::new(r).unwrap(), Consumer::new(r).unwrap()) }
    }

    fn data_bytes(&mut self) -> &mut [u8] {
        let len = self.data.len() * 16;
        // SAFETY: the Vec's buffer is `len` initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast(), len) }
    }
}

fn push(p: &mut Producer, bytes: &[u8]) -> Result<(), ReserveError> {
    let g = p.reserve(bytes.len(), 0)?;
    // SAFETY: the grant covers at least `bytes.len()` writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), g.payload, bytes.len()) };
    p.commit(g, bytes.len());
    Ok(())
}

fn pop(c: &mut Consumer) -> Option<Vec<u8>> {
    let f = c.peek().unwrap()?;
    assert_eq!(f.payload as usize % 16, 0, "payload not 16-aligned");
    // SAFETY: a validated frame's payload is `len` readable bytes.
    let v = unsafe { std::slice::from_raw_parts(f.payload, f.len) }.to_vec();
    c.release(f);
    Some(v)
}

#[test]
fn empty_ring_peeks_none() {
    let mut r = HeapRing::new(256);
    let (_p, mut c) = r.ends();
    assert!(pop(&mut c).is_none());
    assert!(!c.has_data());
}

#[test]
fn fills_then_reports_full_then_drains() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    // 48-byte payload -> 64-byte frame; 4 fill a 256-byte ring.
    for i in 0..4u8 {
        push(&mut p, &[i; 48]).unwrap();
    }
    assert_eq!(push(&mut p, &[9; 1]), Err(ReserveError::Full));
    assert!(!p.has_space(0));
    assert_eq!(pop(&mut c).unwrap(), vec![0u8; 48]);
    assert!(p.has_space(48));
    push(&mut p, &[4; 48]).unwrap();
    for i in 1..5u8 {
        assert_eq!(pop(&mut c).unwrap(), vec![i; 48]);
    }
    assert!(pop(&mut c).is_none());
    assert!(p.is_drained());
}

/// A frame that does not fit before the data end goes to index 0 of the
/// next lap, and nothing is written at the old tail: no PAD frame, and its
/// stamp word holds no stamp for the consumer that will arrive there.
#[test]
fn wraps_by_skipping_to_the_lap_start() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[1; 100]).unwrap(); // 128-byte frame at 0
    push(&mut p, &[2; 50]).unwrap(); // 80-byte frame at 128, tail = 208
    assert_eq!(pop(&mut c).unwrap(), vec![1; 100]);
    // 48 bytes left before the end: a 64-byte frame goes to index 0.
    push(&mut p, &[3; 40]).unwrap();
    let raw = r.data_bytes();
    let stamp_208 = u64::from_ne_bytes(raw[216..224].try_into().unwrap());
    assert_ne!(stamp_208, commit_stamp(208), "something published at 208");
    assert_eq!(u32::from_ne_bytes(raw[0..4].try_into().unwrap()), 40);
    let stamp_0 = u64::from_ne_bytes(raw[8..16].try_into().unwrap());
    assert_eq!(stamp_0, commit_stamp(256));
    // 80 + 48 skipped + 64 bytes are in flight until the consumer is at
    // the skip point; then only the frames.
    assert_eq!(p.in_flight(), 192);
    assert_eq!(pop(&mut c).unwrap(), vec![2; 50]);
    assert_eq!(c.in_flight(), 64, "skipped bytes counted as in flight");
    assert_eq!(p.in_flight(), 64);
    assert_eq!(pop(&mut c).unwrap(), vec![3; 40]);
    assert!(pop(&mut c).is_none());
    assert!(p.is_drained());
}

#[test]
fn largest_deliverable_message_fits_at_every_position() {
    for cap in [64usize, 256, 4096] {
        let mut r = HeapRing::new(cap);
        let (mut p, mut c) = r.ends();
        let max = p.region().max_payload();
        assert_eq!(max, cap / 2 - 16);
        assert_eq!(p.reserve(max + 1, 0).unwrap_err(), ReserveError::TooLarge);
        // Walk the ring position through every 16-byte step.
        for step in 0..(2 * cap / 16) {
            let msg: Vec<u8> = (0..max).map(|i| (i + step) as u8).collect();
            push(&mut p, &msg).unwrap();
            assert_eq!(pop(&mut c).unwrap(), msg);
            push(&mut p, &[7]).unwrap();
            assert_eq!(pop(&mut c).unwrap(), vec![7]);
        }
    }
}

#[test]
fn zero_length_messages() {
    let mut r = HeapRing::new(64);
    let (mut p, mut c) = r.ends();
    for _ in 0..4 {
        push(&mut p, &[]).unwrap();
    }
    assert_eq!(push(&mut p, &[]), Err(ReserveError::Full));
    for _ in 0..4 {
        assert_eq!(pop(&mut c).unwrap(), Vec::<u8>::new());
    }
    assert!(pop(&mut c).is_none());
}

#[test]
fn uncommitted_grant_publishes_nothing() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    let g = p.reserve(10, 0).unwrap();
    drop(g);
    assert!(pop(&mut c).is_none());
    push(&mut p, b"x").unwrap();
    assert_eq!(pop(&mut c).unwrap(), b"x");
}

#[test]
fn grant_prefers_tail_then_wraps_when_asked_for_more() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    p.set_rewind_window(u64::MAX); // this is about the grant, not rewinds
    push(&mut p, &[0; 96]).unwrap(); // frame 112
    push(&mut p, &[0; 64]).unwrap(); // frame 80, tail at 192
    pop(&mut c).unwrap();
    pop(&mut c).unwrap();
    let g = p.reserve(0, 0).unwrap();
    assert_eq!(g.len, 48, "space before the end is offered first");
    let g = p.reserve(g.len + 1, 0).unwrap();
    assert_eq!(g.len, 112, "then the wrapped space, capped at max_payload");
}

/// xorshift64*: a deterministic generator for the randomized test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn randomized_against_a_model_queue() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let cap = 64usize << rng.below(8); // 64 B ..= 8 KiB
        let mut r = HeapRing::new(cap);
        let (mut p, mut c) = r.ends();
        let max = p.region().max_payload();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut next = 0u8;
        for _ in 0..2000 {
            if rng.below(100) < 55 {
                let len = match rng.below(10) {
                    0 => 0,
                    1 => max,
                    2 => max + 1 + rng.below(16) as usize,
                    _ => rng.below(max as u64 + 1) as usize,
                };
                let msg: Vec<u8> = (0..len).map(|i| next.wrapping_add(i as u8)).collect();
                next = next.wrapping_add(1);
                match push(&mut p, &msg) {
                    Ok(()) => model.push_back(msg),
                    Err(ReserveError::TooLarge) => assert!(len > max),
                    Err(ReserveError::Full) => {
                        assert!(len <= max);
                        assert!(!model.is_empty(), "round {round}: full while empty");
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            } else {
                assert_eq!(pop(&mut c), model.pop_front(), "round {round}");
            }
        }
        while let Some(m) = model.pop_front() {
            assert_eq!(pop(&mut c).unwrap(), m);
        }
        assert!(pop(&mut c).is_none());
    }
}

#[test]
fn corrupt_indices_and_headers_poison_instead_of_panicking() {
    use crate::sync::Ordering::Relaxed;
    // A forged tail (beyond capacity, misaligned) is no fault: the consumer
    // learns of frames from their stamps, and queries ignore such a tail.
    for forged in [4096, 17] {
        let mut r = HeapRing::new(256);
        let (_p, mut c) = r.ends();
        // Relaxed: a forged word on this one thread (as a peer would write
        // it, with no ordering at all).
        r.ctrl.tail.store(forged, Relaxed);
        assert!(matches!(c.peek(), Ok(None)));
        assert_eq!(c.in_flight(), 0);
        assert!(!c.has_data());
    }
    // ...but one present when the consumer takes its end is refused.
    let mut r = HeapRing::new(256);
    // Relaxed: as above, a forged word.
    r.ctrl.tail.store(4096, Relaxed);
    // SAFETY: the only consumer of this ring.
    let c = unsafe { Consumer::new(r.region()) };
    assert!(matches!(c, Err(RingFault::Overfull { .. })));

    // A head (and tail) at the end of the position space, where a skip's
    // lap start would wrap, is refused when the consumer takes its end.
    let mut r = HeapRing::new(256);
    let end = u64::MAX - 15;
    // Relaxed: as above, forged words.
    r.ctrl.head.store(end, Relaxed);
    r.ctrl.tail.store(end, Relaxed);
    // SAFETY: the only consumer of this ring.
    let c = unsafe { Consumer::new(r.region()) };
    assert!(matches!(c, Err(RingFault::BadIndex { seen, .. }) if seen == end));
    assert!(
        !r.region().is_published(end),
        "a wait set's probe wraps too"
    );
    // SAFETY: the only producer of this ring.
    let p = unsafe { Producer::new(r.region()) };
    assert!(matches!(p, Err(RingFault::BadIndex { ours, .. }) if ours == end));

    // A forged stamp publishes whatever the header says, within bounds.
    let mut r = HeapRing::new(256);
    let (_p, mut c) = r.ends();
    let bytes = r.data_bytes();
    bytes[0..4].copy_from_slice(&4096u32.to_ne_bytes());
    bytes[4..8].copy_from_slice(&KIND_MSG.to_ne_bytes());
    bytes[8..16].copy_from_slice(&commit_stamp(0).to_ne_bytes());
    assert!(c.has_data());
    assert!(matches!(
        c.peek(),
        Err(RingFault::BadLength { len: 4096, pos: 0 })
    ));
    assert!(c.peek().is_err(), "poison is sticky");
    assert!(c.has_data(), "a poisoned end wakes its waiter");

    // A stamped filler whose frame is not stamped; a filler running to the
    // data end (an honest one ends at a guard slot, never index 0); a
    // filler off the granule size.
    for (len, fault) in [
        (48u32, RingFault::BadIndex { seen: 0, ours: 192 }),
        (112, RingFault::BadLength { len: 112, pos: 128 }),
        (40, RingFault::BadLength { len: 40, pos: 128 }),
    ] {
        let mut r = HeapRing::new(256);
        let bytes = r.data_bytes();
        // The filler at 128 of a consumer whose head is 128.
        bytes[128..132].copy_from_slice(&len.to_ne_bytes());
        bytes[132..136].copy_from_slice(&KIND_PAD.to_ne_bytes());
        bytes[136..144].copy_from_slice(&commit_stamp(128).to_ne_bytes());
        // Relaxed: set-up on this one thread, before the consumer exists.
        r.ctrl.head.store(128, Relaxed);
        r.ctrl.tail.store(128, Relaxed);
        // SAFETY: the only consumer of this ring.
        let mut c = unsafe { Consumer::new(r.region()).unwrap() };
        assert_eq!(c.peek().unwrap_err(), fault, "filler of {len}");
    }
    // A filler behind a filler.
    let mut r = HeapRing::new(256);
    let bytes = r.data_bytes();
    for at in [128usize, 160] {
        bytes[at..at + 4].copy_from_slice(&16u32.to_ne_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&KIND_PAD.to_ne_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&commit_stamp(at as u64).to_ne_bytes());
    }
    // Relaxed: as above.
    r.ctrl.head.store(128, Relaxed);
    r.ctrl.tail.store(128, Relaxed);
    // SAFETY: the only consumer of this ring.
    let mut c = unsafe { Consumer::new(r.region()).unwrap() };
    assert_eq!(
        c.peek().unwrap_err(),
        RingFault::BadLength { len: 16, pos: 160 }
    );

    // Bad kind, bad length, bad PAD.
    for (offset, value) in [(4usize, 0xdead_beefu32), (0, 4096), (0, 200)] {
        let mut r = HeapRing::new(256);
        let (mut p, mut c) = r.ends();
        push(&mut p, &[1; 32]).unwrap();
        r.data_bytes()[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        assert!(
            c.peek().is_err(),
            "corruption at {offset} = {value:#x} undetected"
        );
    }
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[1; 32]).unwrap();
    r.data_bytes()[4..8].copy_from_slice(&KIND_PAD.to_ne_bytes());
    assert!(matches!(c.peek(), Err(RingFault::BadLength { .. })));

    // A PAD at index 0 (it would cover the whole ring).
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[1; 32]).unwrap();
    let bytes = r.data_bytes();
    bytes[0..4].copy_from_slice(&240u32.to_ne_bytes());
    bytes[4..8].copy_from_slice(&KIND_PAD.to_ne_bytes());
    assert!(matches!(c.peek(), Err(RingFault::BadLength { .. })));

    // Head moved past the tail.
    let mut r = HeapRing::new(256);
    let (mut p, _c) = r.ends();
    push(&mut p, &[1; 100]).unwrap();
    push(&mut p, &[1; 100]).unwrap();
    r.ctrl.head.store(1 << 20, Relaxed);
    assert!(matches!(
        p.reserve(100, 0),
        Err(ReserveError::Fault(RingFault::BadIndex { .. }))
    ));
    assert!(p.fault().is_some());
}

#[test]
fn large_frames_rewind_to_index_zero_when_the_ring_is_empty() {
    let mut r = HeapRing::new(1 << 16);
    let (mut p, mut c) = r.ends();
    for round in 0..8u8 {
        let msg = vec![round; 20_000];
        let g = p.reserve(msg.len(), 0).unwrap();
        let offset = g.payload as usize - r.data.as_ptr() as usize;
        assert_eq!(
            offset, FRAME_HEADER,
            "round {round}: large frame not at index 0"
        );
        // SAFETY: the grant covers `msg.len()` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), g.payload, msg.len()) };
        p.commit(g, msg.len());
        assert_eq!(pop(&mut c).unwrap(), msg);
    }
    // Small frames still stream on from the tail.
    push(&mut p, &[1; 10]).unwrap();
    push(&mut p, &[2; 10]).unwrap();
    assert_eq!(pop(&mut c).unwrap(), vec![1; 10]);
    assert_eq!(pop(&mut c).unwrap(), vec![2; 10]);
}

/// A send that does not know its size (typed) reserves with only a minimum
/// and the last message's size as the expectation: once a big message has
/// gone through, the next ones rewind to index 0 on an empty ring too,
/// instead of marching through it (which doubled typed 4 MiB round trips).
#[test]
fn unsized_reserves_rewind_once_the_size_is_known() {
    let mut r = HeapRing::new(1 << 16);
    let (mut p, mut c) = r.ends();
    let mut offsets = Vec::new();
    for round in 0..8u8 {
        let msg = vec![round; 20_000];
        let g = p.reserve_expecting(0, 0, p.last_len()).unwrap();
        assert!(g.len >= msg.len(), "round {round}: grant too small");
        offsets.push(g.payload as usize - r.data.as_ptr() as usize);
        // SAFETY: the grant covers at least `msg.len()` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), g.payload, msg.len()) };
        p.commit(g, msg.len());
        assert_eq!(pop(&mut c).unwrap(), msg);
    }
    // The first one knows nothing yet and goes at the tail (index 0 of a
    // fresh ring anyway); every later one rewinds.
    assert!(
        offsets.iter().all(|&o| o == FRAME_HEADER),
        "unsized frames marched: {offsets:?}"
    );
}

/// Payload bytes of an earlier lap never pass for the stamp of a frame
/// header that lands on them in a later lap: each commit clears the stamp
/// word where the next frame starts.
#[test]
fn stale_payload_never_passes_for_a_stamp() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    // Lap 1: two 112-byte payloads over indices 16..128 and 144..256, each
    // 16-byte granule laid out exactly like a published empty frame of lap
    // 2 at that index: len 0, MSG, the stamp of position 256 + index.
    let mut payload = [[0u8; 112]; 2];
    for (frame, bytes) in payload.iter_mut().enumerate() {
        for (g, granule) in bytes.chunks_mut(16).enumerate() {
            let idx = 16 + 128 * frame as u64 + 16 * g as u64;
            granule[0..4].copy_from_slice(&0u32.to_ne_bytes());
            granule[4..8].copy_from_slice(&KIND_MSG.to_ne_bytes());
            granule[8..16].copy_from_slice(&commit_stamp(256 + idx).to_ne_bytes());
        }
    }
    for bytes in &payload {
        push(&mut p, bytes).unwrap();
        assert_eq!(pop(&mut c).as_deref(), Some(&bytes[..]));
    }
    // Lap 2: empty frames at every index; the consumer must see exactly
    // those, never one of the look-alikes one granule further on.
    for n in 0..16u64 {
        push(&mut p, &[]).unwrap();
        assert_eq!(pop(&mut c).as_deref(), Some(&[][..]), "frame {n}");
        assert!(c.peek().unwrap().is_none(), "phantom frame after {n}");
        assert!(!c.has_data(), "phantom data after {n}");
    }
}

/// A small request/reply exchange keeps to the first few KiB of a big ring
/// (its lines stay cached) instead of marching through all of it; while the
/// consumer lags, small frames stream on from the tail as before.
#[test]
fn small_frames_rewind_once_past_the_window_when_the_ring_is_empty() {
    let mut r = HeapRing::new(1 << 16);
    let (mut p, mut c) = r.ends();
    let base = r.data.as_ptr() as usize;
    let mut furthest = 0;
    for round in 0..1000u32 {
        let msg = [round as u8; 64];
        let g = p.reserve(msg.len(), 0).unwrap();
        furthest = furthest.max(g.payload as usize - base);
        // SAFETY: the grant covers `msg.len()` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), g.payload, msg.len()) };
        p.commit(g, msg.len());
        assert_eq!(pop(&mut c).unwrap(), msg);
    }
    assert!(
        furthest < producer::REWIND_WINDOW as usize + 80,
        "64 B frames marched to offset {furthest}"
    );
    // With 2 KiB always in flight the ring is never empty: the frames go
    // on from the tail, through the whole ring, and arrive in order.
    let mut sent = 0u32;
    let mut received = 0u32;
    let mut furthest = 0;
    while received < 2000 {
        while sent < received + 32 {
            let msg = [sent as u8; 48];
            let g = p.reserve(msg.len(), 0).unwrap();
            furthest = furthest.max(g.payload as usize - base);
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), g.payload, msg.len()) };
            p.commit(g, msg.len());
            sent += 1;
        }
        assert_eq!(pop(&mut c).unwrap(), [received as u8; 48]);
        received += 1;
    }
    assert!(furthest > 60_000, "streaming frames rewound: {furthest}");
}

/// A forged skip: a frame at the next lap start that is larger than the
/// head's index. Its end would lie more than a capacity past the head (an
/// honest skip frame ends by the guard slot at `head + cap`), so it is
/// refused as `BadLength`, as is a filler there; one that fits is taken.
#[test]
fn a_frame_at_the_lap_start_must_end_by_the_head_index() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[]).unwrap();
    assert_eq!(pop(&mut c), Some(vec![]));
    // Head at 16. A frame at index 0 (position 256) of the largest
    // payload: 128 bytes, more than the 16 before the head's index.
    let d = r.data_bytes();
    d[0..4].copy_from_slice(&112u32.to_ne_bytes());
    d[4..8].copy_from_slice(&KIND_MSG.to_ne_bytes());
    d[8..16].copy_from_slice(&commit_stamp(256).to_ne_bytes());
    assert_eq!(
        c.peek().unwrap_err(),
        RingFault::BadLength { len: 112, pos: 256 }
    );
    // A filler at the lap start.
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[0; 32]).unwrap();
    assert_eq!(pop(&mut c), Some(vec![0; 32]));
    let d = r.data_bytes();
    d[0..4].copy_from_slice(&0u32.to_ne_bytes());
    d[4..8].copy_from_slice(&KIND_PAD.to_ne_bytes());
    d[8..16].copy_from_slice(&commit_stamp(256).to_ne_bytes());
    assert_eq!(
        c.peek().unwrap_err(),
        RingFault::BadLength { len: 0, pos: 256 }
    );
    // A frame that fits before the head's index (48) is accepted.
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[0; 32]).unwrap();
    assert_eq!(pop(&mut c), Some(vec![0; 32]));
    let d = r.data_bytes();
    d[0..4].copy_from_slice(&32u32.to_ne_bytes());
    d[4..8].copy_from_slice(&KIND_MSG.to_ne_bytes());
    d[8..16].copy_from_slice(&commit_stamp(256).to_ne_bytes());
    let f = c.peek().unwrap().expect("a frame that fits");
    assert_eq!(f.len, 32);
    c.release(f);
}

/// After any history, an empty ring takes as many frames as a fresh one:
/// a rewind gives the bytes it skips back at once. (Before: a rewind's
/// PAD held them until the consumer read the frame behind it, so a 64 KiB
/// ring that had just rewound took 52 64-byte messages instead of 819.)
#[test]
fn an_empty_ring_takes_as_many_frames_whatever_its_history() {
    fn fill(p: &mut Producer, msg: &[u8]) -> usize {
        let mut n = 0;
        while push(p, msg).is_ok() {
            n += 1;
        }
        n
    }
    for (cap, msg) in [
        (1usize << 16, &[7u8; 64][..]),
        (1024, &[][..]),
        (4096, &[1; 200][..]),
    ] {
        let fresh = fill(&mut HeapRing::new(cap).ends().0, msg);
        for exchanges in 0..(2 * cap / frame_size(msg.len() as u64) as usize).min(300) {
            let mut r = HeapRing::new(cap);
            let (mut p, mut c) = r.ends();
            for _ in 0..exchanges {
                push(&mut p, msg).unwrap();
                assert_eq!(pop(&mut c).as_deref(), Some(msg));
            }
            let n = fill(&mut p, msg);
            // A fresh ring loses the end of the data at its first wrap; a
            // ring after exchanges may lose up to one frame more, to a
            // filler in front of the guard slot (or the wrap itself).
            assert!(
                n + 1 >= fresh,
                "cap {cap}, {} B messages, after {exchanges} exchanges: {n} fit, {fresh} in a fresh ring",
                msg.len()
            );
            for _ in 0..n {
                assert_eq!(pop(&mut c).as_deref(), Some(msg));
            }
            assert!(pop(&mut c).is_none());
        }
    }
}

/// While the consumer sits at a skip point, the producer fills the next
/// lap; the slot at the skip point's index in that lap is where the
/// consumer polls. It must hold a frame start, never payload: here every
/// payload granule reads like a published empty frame at the skip point,
/// so payload over that slot would be taken for a frame (found by design:
/// the guard slot).
#[test]
fn payload_never_lands_where_a_consumer_at_a_skip_point_polls() {
    for window in [64u64, 96, 160] {
        let mut r = HeapRing::new(256);
        let (mut p, mut c) = r.ends();
        p.set_rewind_window(window);
        // March the tail to the window (empty frames), draining.
        while p.region().index(p.tail_and_skip().0) < window {
            push(&mut p, &[]).unwrap();
            assert_eq!(pop(&mut c), Some(vec![]));
        }
        let skip = p.tail_and_skip().0;
        let lure = |at: u64| {
            let mut g = [0u8; 16];
            g[4..8].copy_from_slice(&KIND_MSG.to_ne_bytes());
            g[8..16].copy_from_slice(&commit_stamp(at).to_ne_bytes());
            g
        };
        // Payloads of 3 granules, each the lure: the first one rewinds
        // (skip), the next ones fill the lap while the consumer is still
        // at the skip point (it has not looked yet).
        let msg: Vec<u8> = (0..3).flat_map(|_| lure(skip)).collect();
        let mut sent = 0;
        while push(&mut p, &msg).is_ok() {
            sent += 1;
            assert_eq!(p.tail_and_skip().1, Some(skip), "no skip pending");
        }
        assert!(sent >= 256 / 64 - 1, "window {window}: only {sent} fit");
        for i in 0..sent {
            assert_eq!(
                pop(&mut c).as_deref(),
                Some(&msg[..]),
                "window {window}, message {i}"
            );
        }
        assert!(pop(&mut c).is_none());
    }
}

/// Frames before a skip come out before the frame behind it, with all of
/// them published when the consumer looks. (The race this order depends
/// on, the lap start's stamp seen before the head's, needs two threads:
/// loom's `loom_ring_indices` and `loom_ring_rewind_guard` fail without
/// the re-check in `Consumer::next_frame_at`; this test does not.)
#[test]
fn frames_before_a_skip_come_before_the_frame_behind_it() {
    let mut r = HeapRing::new(256);
    let (mut p, mut c) = r.ends();
    push(&mut p, &[0; 48]).unwrap();
    assert_eq!(pop(&mut c), Some(vec![0; 48]));
    // Head 64; frames at 64..208 (three of 32 B payload), then, skipping
    // from 208, at 256.
    for i in 1..=3u8 {
        push(&mut p, &[i; 32]).unwrap();
    }
    push(&mut p, &[9; 40]).unwrap();
    assert_eq!(p.tail_and_skip(), (320, Some(208)));
    for i in 1..=3u8 {
        assert_eq!(pop(&mut c), Some(vec![i; 32]));
    }
    assert_eq!(pop(&mut c), Some(vec![9; 40]));
    assert!(pop(&mut c).is_none());
}

/// The model-queue test with skips, guard slots and fillers all the time
/// (rewind windows down to one granule) and payload that lies in wait: each
/// 16-byte granule reads like a published empty frame, for the position a
/// lap before, a lap after or two laps after its own: the ways payload
/// could pass for a stamp (a consumer one lap behind at a skip point; a
/// consumer a lap or, past bytes skipped in between, two laps later
/// finding stale payload where the next-slot clear was missed).
#[test]
fn randomized_with_rewinds_and_lures() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let cap = 64usize << rng.below(6); // 64 B ..= 2 KiB
        let mut r = HeapRing::new(cap);
        let base = r.data.as_ptr() as u64;
        let (mut p, mut c) = r.ends();
        p.set_rewind_window(16 * (1 + rng.below(cap as u64 / 16)));
        let max = p.region().max_payload();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        for _ in 0..2000 {
            if rng.below(100) < 55 {
                let len = 16 * rng.below(max as u64 / 16 + 1) as usize;
                let Ok(g) = p.reserve(len, 0) else {
                    assert!(!model.is_empty(), "round {round}: full while empty");
                    continue;
                };
                // The frame's position: the first at or after the tail with
                // the grant's index.
                let (tail, _) = p.tail_and_skip();
                let idx = g.payload as u64 - base - 16;
                let pos = tail + (idx.wrapping_sub(tail) & (cap as u64 - 1));
                let laps = rng.below(3);
                let msg: Vec<u8> = (0..len as u64 / 16)
                    .flat_map(|k| {
                        let q = pos + 16 + 16 * k;
                        let at = match laps {
                            0 => q.wrapping_sub(cap as u64),
                            n => q + n * cap as u64,
                        };
                        let mut granule = [0u8; 16];
                        granule[4..8].copy_from_slice(&KIND_MSG.to_ne_bytes());
                        granule[8..16].copy_from_slice(&commit_stamp(at).to_ne_bytes());
                        granule
                    })
                    .collect();
                // SAFETY: the grant covers at least `len` writable bytes.
                unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), g.payload, len) };
                p.commit(g, len);
                model.push_back(msg);
            } else {
                assert_eq!(pop(&mut c), model.pop_front(), "round {round}");
            }
        }
        while let Some(m) = model.pop_front() {
            assert_eq!(pop(&mut c).unwrap(), m, "round {round}");
        }
        assert!(pop(&mut c).is_none());
    }
}
