//! A request/reply exchange never costs a ring its capacity: whatever the
//! exchanges before, an empty ring takes as many messages as a fresh one.
//!
//! Why this can fail: a small request/reply exchange rewinds to the start
//! of the ring (it keeps to a few cached lines; see `REWIND_WINDOW` in
//! `src/ring/producer.rs`). A rewind used to write a PAD frame over the rest
//! of the ring that was released only with the message behind it, so until
//! the receiver read that message the sender had only the bytes before the
//! rewind point: a 64 KiB ring took 52 messages of 64 B instead of 819. The
//! rewind now skips those bytes and counts them free at once.

use remora::{ChannelConfig, RawSender, Segment, SendError};

/// Sends `msg` with `try_send` until the ring is full; how many fit.
fn fill(tx: &mut RawSender, msg: &[u8]) -> usize {
    let mut sent = 0;
    loop {
        match tx.try_send(msg) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => return sent,
            Err(e) => panic!("try_send: {e}"),
        }
    }
}

/// For every number of exchanges up to a little over a lap of the rewind
/// window, on a fresh channel: `exchanges` request/reply round trips, then
/// the requester fills the ring; it must take as many messages as a fresh
/// ring (in these geometries no filler frame is ever needed, so exactly as
/// many), and they all arrive.
fn whole_ring_after_exchanges(capacity: usize, len: usize, most_exchanges: usize, whole: usize) {
    let msg = vec![0x5a; len];
    let mut fresh = None;
    for exchanges in 0..=most_exchanges {
        let parent = Segment::create(&[ChannelConfig::new("c").capacity(capacity)]).unwrap();
        let child = Segment::open(parent.name()).unwrap();
        let (mut tx, mut replies) = parent.raw_channel("c").unwrap();
        let (mut reply_tx, mut rx) = child.raw_channel("c").unwrap();
        for _ in 0..exchanges {
            tx.try_send(&msg).unwrap();
            assert_eq!(&*rx.try_recv().unwrap(), &msg[..]);
            reply_tx.try_send(&msg).unwrap();
            assert_eq!(&*replies.try_recv().unwrap(), &msg[..]);
        }
        assert_eq!(tx.len(), 0);
        let sent = fill(&mut tx, &msg);
        let fresh = *fresh.get_or_insert(sent);
        assert_eq!(fresh, whole, "a fresh {capacity}-byte ring");
        assert_eq!(
            sent, fresh,
            "{capacity}-byte ring, {len}-byte messages, after {exchanges} exchanges: \
             {sent} fit, {fresh} in a fresh ring"
        );
        for i in 0..sent {
            assert_eq!(&*rx.try_recv().unwrap(), &msg[..], "message {i}");
        }
        assert!(rx.try_recv().is_err(), "more arrived than was sent");
    }
}

/// 64 KiB, 64-byte messages: 819 fit in a fresh ring. Before the fix the
/// run after 52 exchanges (the first to rewind with a 4 KiB window) took 52.
#[test]
fn a_64k_ring_takes_819_messages_of_64_bytes_after_any_exchange() {
    whole_ring_after_exchanges(1 << 16, 64, 120, 819);
}

/// 1 KiB, empty messages: a whole ring (64 frames) after any exchange.
#[test]
fn a_1k_ring_is_filled_whole_after_any_exchange() {
    whole_ring_after_exchanges(1024, 0, 80, 64);
}

/// 4 KiB, 200-byte messages (224-byte frames, 18 fit).
#[test]
fn a_4k_ring_takes_18_messages_of_200_bytes_after_any_exchange() {
    whole_ring_after_exchanges(4096, 200, 40, 18);
}
