//! The checked message stream most cross-process tests send: sequence
//! numbers, payloads of many sizes, and a checksum per message.

use std::time::Duration;

use remora::{Receiver, RecvError, Sender};

use super::checksum;

/// One stream message: its sequence number, payload and checksum.
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Msg {
    pub seq: u64,
    pub data: Vec<u8>,
    pub sum: u64,
}

/// Payload of message `seq`: 0..=300 bytes derived from `seq` (so frames of
/// many sizes wrap around the ring), written into `buf`; returns the
/// checksum.
pub fn payload(seq: u64, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    let len = (seq.wrapping_mul(2_654_435_761) % 301) as usize;
    buf.extend((0..len).map(|i| (seq as usize + i) as u8));
    checksum(seq, buf)
}

/// Both sides run this: send `n` messages on a thread while receiving and
/// checking `n`, then expect `Disconnected` once the peer's sender closes.
pub fn exchange(mut tx: Sender<Msg>, mut rx: Receiver<Msg>, n: u64) {
    let sender = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(512);
        for seq in 0..n {
            let sum = payload(seq, &mut buf);
            tx.send(&Msg {
                seq,
                data: std::mem::take(&mut buf),
                sum,
            })
            .unwrap_or_else(|e| panic!("send {seq}: {e}"));
            buf = Vec::with_capacity(512);
        }
        tx // keep our direction open until the receiver is done too
    });
    for expected in 0..n {
        let msg = rx.recv().unwrap_or_else(|e| panic!("recv {expected}: {e}"));
        assert_eq!(msg.seq, expected, "lost, duplicated or reordered message");
        assert_eq!(
            msg.sum,
            checksum(expected, &msg.data),
            "corrupted message {expected}"
        );
    }
    drop(sender.join().expect("sender thread"));
    // The peer's sender closes after its last message: we see Disconnected.
    let end = rx.recv_timeout(Duration::from_secs(30)).map(|m| m.seq);
    assert_eq!(end, Err(RecvError::Disconnected));
}
