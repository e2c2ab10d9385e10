//! A sender blocked on a full ring: it waits for the receiver to free a
//! batch of space (see `REFILL_DIVISOR` in `src/transport/shm.rs`), but never
//! for more than the frame needs once the receiver stops freeing space.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use remora::{ChannelConfig, Segment, WaitStrategy};

/// Fills a 4 KiB ring, lets the receiver free exactly one frame and then
/// wait for the blocked send to finish: a sender that insisted on a batch
/// would time out here.
fn sender_takes_one_freed_frame(strategy: WaitStrategy) {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.set_wait_strategy(strategy);

    let mut queued = 0u8;
    while tx.try_send(&[queued; 64]).is_ok() {
        queued += 1;
    }
    assert!(queued > 40, "a 4 KiB ring holds about 50 frames of 64 B");

    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let receiver = thread::spawn(move || {
        assert_eq!(&*rx.recv().unwrap(), &[0; 64]);
        // Free nothing more until the sender got through.
        sent_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the blocked send never finished");
        for i in 1..=queued {
            assert_eq!(&*rx.recv().unwrap(), &[i; 64]);
        }
    });
    tx.send_timeout(&[queued; 64], Duration::from_secs(5))
        .expect("a blocked send must take the one freed frame");
    sent_tx.send(()).unwrap();
    receiver.join().unwrap();
}

#[test]
fn spin_sender_takes_one_freed_frame() {
    sender_takes_one_freed_frame(WaitStrategy::Spin);
}

#[test]
fn adaptive_sender_takes_one_freed_frame() {
    sender_takes_one_freed_frame(WaitStrategy::Adaptive);
}

#[test]
fn block_sender_takes_one_freed_frame() {
    sender_takes_one_freed_frame(WaitStrategy::Block);
}

/// A zero timeout is a deadline, not a batch wait: once one frame is free,
/// `send_timeout(.., ZERO)` must succeed like `try_send` does.
fn zero_timeout_takes_one_freed_frame(strategy: WaitStrategy) {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    tx.set_wait_strategy(strategy);
    while tx.try_send(&[1; 64]).is_ok() {}
    assert_eq!(
        tx.send_timeout(&[2; 64], Duration::ZERO),
        Err(remora::SendError::Timeout)
    );
    drop(rx.recv().unwrap());
    tx.send_timeout(&[2; 64], Duration::ZERO)
        .expect("one frame is free");
}

#[test]
fn zero_timeout_spin_sender_takes_one_freed_frame() {
    zero_timeout_takes_one_freed_frame(WaitStrategy::Spin);
}

#[test]
fn zero_timeout_adaptive_sender_takes_one_freed_frame() {
    zero_timeout_takes_one_freed_frame(WaitStrategy::Adaptive);
}
