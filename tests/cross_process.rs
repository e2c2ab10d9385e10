//! Two processes stream 1,000,000 messages each way over one channel, in
//! every wait strategy, checking order and checksums.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{ChildGuard, Watchdog, checksum, role, spawn_child};
use remora::{ChannelConfig, RecvError, Segment, WaitStrategy};

const MESSAGES: u64 = 1_000_000;
const SEGMENT_ENV: &str = "REMORA_TEST_SEGMENT";
const STRATEGY_ENV: &str = "REMORA_TEST_STRATEGY";

/// Spinning tests must not run side by side on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Msg {
    seq: u64,
    data: Vec<u8>,
    sum: u64,
}

/// Message `seq`: a payload of 0..=300 bytes derived from `seq` (so frames
/// of many sizes wrap around the ring), and its checksum.
fn message(seq: u64, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    let len = (seq.wrapping_mul(2_654_435_761) % 301) as usize;
    buf.extend((0..len).map(|i| (seq as usize + i) as u8));
    checksum(seq, buf)
}

fn strategy(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "block" => WaitStrategy::Block,
        _ => WaitStrategy::Adaptive,
    }
}

/// Sends MESSAGES on `tx` while receiving and checking MESSAGES on `rx`.
fn exchange(seg: &Segment, strategy: WaitStrategy) {
    let (mut tx, mut rx) = seg.channel::<Msg, Msg>("stream").unwrap();
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    let sender = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(512);
        for seq in 0..MESSAGES {
            let sum = message(seq, &mut buf);
            tx.send(&Msg {
                seq,
                data: std::mem::take(&mut buf),
                sum,
            })
            .unwrap_or_else(|e| panic!("send {seq}: {e}"));
            buf = Vec::with_capacity(512);
        }
        tx // keep the channel open until the receiver is done too
    });
    for expected in 0..MESSAGES {
        let msg = rx.recv().unwrap_or_else(|e| panic!("recv {expected}: {e}"));
        assert_eq!(msg.seq, expected, "lost, duplicated or reordered message");
        assert_eq!(
            msg.sum,
            checksum(expected, &msg.data),
            "corrupted message {expected}"
        );
    }
    let tx = sender.join().expect("sender thread");
    drop(tx);
    // The peer's sender closes after its last message: we see Disconnected.
    let end = rx.recv_timeout(Duration::from_secs(30)).map(|m| m.seq);
    assert_eq!(end, Err(RecvError::Disconnected));
}

fn run_parent(strategy_name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _watchdog = Watchdog::new("cross-process exchange", Duration::from_secs(240));
    let seg = Segment::create(&[ChannelConfig::new("stream").capacity(1 << 16)]).unwrap();
    let child: ChildGuard = spawn_child(
        "child_entry",
        "stream",
        &[
            (SEGMENT_ENV, seg.name().to_owned()),
            (STRATEGY_ENV, strategy_name.to_owned()),
        ],
    );
    exchange(&seg, strategy(strategy_name));
    child.wait_success(Duration::from_secs(30));
    drop(seg);
    assert!(
        common::remora_segments().is_empty(),
        "segment left in /dev/shm"
    );
}

#[test]
fn million_each_way_spin() {
    run_parent("spin");
}

#[test]
fn million_each_way_block() {
    run_parent("block");
}

#[test]
fn million_each_way_adaptive() {
    run_parent("adaptive");
}

/// Entry point of the re-executed child; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _watchdog = Watchdog::new("cross-process child", Duration::from_secs(240));
    assert_eq!(role, "stream");
    let name = std::env::var(SEGMENT_ENV).unwrap();
    let seg = Segment::open(&name).unwrap();
    exchange(&seg, strategy(&std::env::var(STRATEGY_ENV).unwrap()));
}
