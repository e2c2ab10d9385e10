//! Two processes stream 1,000,000 messages each way over one channel, in
//! every wait strategy, checking order and checksums.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::stream::{self, Msg};
use common::{ChildGuard, Watchdog, role, spawn_child};
use remora::{ChannelConfig, Segment, WaitStrategy};

const MESSAGES: u64 = 1_000_000;
const SEGMENT_ENV: &str = "REMORA_TEST_SEGMENT";
const STRATEGY_ENV: &str = "REMORA_TEST_STRATEGY";

/// Spinning tests must not run side by side on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn strategy(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "block" => WaitStrategy::Block,
        _ => WaitStrategy::Adaptive,
    }
}

/// Sends MESSAGES on the channel while receiving and checking MESSAGES.
fn exchange(seg: &Segment, strategy: WaitStrategy) {
    let (mut tx, mut rx) = seg.channel::<Msg, Msg>("stream").unwrap();
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    stream::exchange(tx, rx, MESSAGES);
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
