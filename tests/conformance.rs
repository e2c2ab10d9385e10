//! One conformance suite, run against every transport: the same tests,
//! instantiated by `conformance!` for `Transport::Shm` and `Transport::Fifo`.
//!
//! Every test is cross-process: the parent spawns this test binary again
//! (through `remora::Spawner`, with the transport forced) in a role that
//! `child_entry` plays. Each test runs under a watchdog, kills its children
//! on failure, and checks that nothing is left in /dev/shm or the temp dirs.
//! Tests take a shared lock: they spawn processes (and some spin) on a
//! 2-core machine.
//!
//! The checksummed streams (one per wait strategy) and the drain-then-
//! disconnect test live only here; kill -9 of either side is in
//! `liveness.rs` (every wait form, both transports).

mod common;

use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::stream::{self, Msg};
use common::{KillOnDrop, Watchdog, checksum, remora_fifo_dirs, remora_segments, role};
use remora::{
    ChannelConfig, ChannelError, ReceiveMode, RecvError, SendError, Spawner, Transport,
    WaitStrategy,
};

/// The transport a re-executed child must find itself on.
const EXPECT_ENV: &str = "REMORA_TEST_EXPECT_TRANSPORT";
/// The wait strategy the stream child's ends must have (from the config).
const STRATEGY_ENV: &str = "REMORA_TEST_EXPECT_STRATEGY";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A spawner that re-executes this test binary in `role` over `transport`.
fn spawner(role: &str, transport: Transport) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .env(EXPECT_ENV, transport.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .transport(transport);
    s
}

fn spawn(s: &mut Spawner, transport: Transport) -> KillOnDrop {
    let child = s
        .spawn()
        .unwrap_or_else(|e| panic!("spawn over {transport}: {e}"));
    assert_eq!(child.transport(), transport);
    KillOnDrop(child)
}

fn assert_success(mut child: KillOnDrop) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// Nothing of ours in /dev/shm or the temp dirs.
fn assert_no_leftovers() {
    assert!(remora_segments().is_empty(), "segment left in /dev/shm");
    assert!(
        remora_fifo_dirs().is_empty(),
        "FIFO directory left behind: {:?}",
        remora_fifo_dirs()
    );
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Num(u64);

// ---------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------

macro_rules! conformance {
    ($module:ident, $transport:expr) => {
        mod $module {
            use super::*;

            const T: Transport = $transport;

            #[test]
            fn stream_each_way_in_order_with_checksums_spin() {
                stream(T, WaitStrategy::Spin);
            }

            #[test]
            fn stream_each_way_in_order_with_checksums_block() {
                stream(T, WaitStrategy::Block);
            }

            #[test]
            fn stream_each_way_in_order_with_checksums_adaptive() {
                stream(T, WaitStrategy::Adaptive);
            }

            #[test]
            fn odd_sizes_and_wrap_around() {
                odd_sizes(T);
            }

            #[test]
            fn large_messages_split_across_reads_and_writes() {
                large_messages(T);
            }

            #[test]
            fn try_forms_and_timeouts() {
                try_and_timeouts(T);
            }

            #[test]
            fn too_large() {
                too_large_is_refused(T);
            }

            #[test]
            fn drain_then_disconnect_after_exit() {
                disconnect_after_drain(T);
            }

            #[test]
            fn dropped_receiver_disconnects_the_sender() {
                dropped_receiver(T);
            }

            #[test]
            fn receiver_dropped_before_the_child_attaches() {
                receiver_dropped_before_attach(T);
            }

            #[test]
            fn type_mismatch() {
                type_mismatch_either_order(T);
            }
        }
    };
}

conformance!(shm, Transport::Shm);
conformance!(fifo, Transport::Fifo);

/// Messages each way per stream test.
const MESSAGES: u64 = 1_000_000;
/// Except over FIFOs with `Spin`: four spinning threads on 2 cores take
/// about 23 s for a million there; a tenth still wraps the pipes thousands
/// of times.
const FIFO_SPIN_MESSAGES: u64 = 100_000;
/// The message count the stream child must send and check.
const COUNT_ENV: &str = "REMORA_TEST_MESSAGES";

/// MESSAGES checksummed messages each way, in order, both ends (parent and
/// child) waiting in `strategy`, the one the channel was declared with.
fn stream(t: Transport, strategy: WaitStrategy) {
    let _s = serial();
    let _w = Watchdog::new("stream", Duration::from_secs(240));
    let messages = if t == Transport::Fifo && strategy == WaitStrategy::Spin {
        FIFO_SPIN_MESSAGES
    } else {
        MESSAGES
    };
    let start = Instant::now();
    let child = spawn(
        spawner("stream", t)
            .env(STRATEGY_ENV, format!("{strategy:?}"))
            .env(COUNT_ENV, messages.to_string())
            .channel_with(
                ChannelConfig::new("stream")
                    .capacity(1 << 16)
                    .wait_strategy(strategy),
            ),
        t,
    );
    let (tx, rx) = child.channel::<Msg, Msg>("stream").unwrap();
    assert_eq!(
        (tx.wait_strategy(), rx.wait_strategy()),
        (strategy, strategy)
    );
    stream::exchange(tx, rx, messages);
    assert_success(child);
    eprintln!(
        "{t} {strategy:?}: {messages} messages each way in {:?}",
        start.elapsed()
    );
    assert_no_leftovers();
}

/// Payload `i` of the odd-sizes test: every size from 0 to the largest.
fn odd_payload(i: usize, max: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let len = (i * 37) % (max + 1);
    buf.extend((0..len).map(|k| (i ^ k) as u8));
}

fn odd_sizes(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("odd sizes", Duration::from_secs(120));
    let child = spawn(
        spawner("echo_raw", t).channel_with(ChannelConfig::new("raw").capacity(1024)),
        t,
    );
    let (mut tx, mut rx) = child.raw_channel("raw").unwrap();
    assert_eq!(
        rx.receive_mode(),
        ReceiveMode::Copy,
        "parents copy by default"
    );
    let max = tx.max_message();
    assert_eq!(max, 496);
    assert_eq!(rx.max_message(), 496);
    let mut buf = Vec::new();
    // Lockstep and pipelined (three in flight), so frames start at every
    // offset of the ring / buffer and wrap around many times.
    for i in 0..5000 {
        odd_payload(i, max, &mut buf);
        tx.send(&buf).unwrap();
        assert_eq!(&*rx.recv().unwrap(), &buf[..], "echo of message {i}");
    }
    let mut expect = Vec::new();
    for i in 0..5000 {
        odd_payload(i, max, &mut buf);
        tx.send(&buf).unwrap();
        if i >= 2 {
            odd_payload(i - 2, max, &mut expect);
            assert_eq!(
                &*rx.recv().unwrap(),
                &expect[..],
                "echo of message {}",
                i - 2
            );
        }
    }
    for i in 4998..5000 {
        odd_payload(i, max, &mut expect);
        assert_eq!(&*rx.recv().unwrap(), &expect[..]);
    }
    drop((tx, rx));
    assert_success(child);
    assert_no_leftovers();
}

fn large_messages(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("large messages", Duration::from_secs(120));
    let child = spawn(
        spawner("echo2", t)
            .channel_with(ChannelConfig::new("raw").capacity(1 << 20))
            .channel_with(ChannelConfig::new("typed").capacity(1 << 20)),
        t,
    );
    let (mut tx, mut rx) = child.raw_channel("raw").unwrap();
    let (mut ttx, mut trx) = child.channel::<Vec<u8>, Vec<u8>>("typed").unwrap();
    assert_eq!(
        trx.receive_mode(),
        ReceiveMode::Copy,
        "parents copy by default"
    );
    let max = tx.max_message();
    assert_eq!(max, (1 << 19) - 16);
    let mut buf = Vec::new();
    for i in 0..60u64 {
        // Sizes from a few bytes to the largest, far above a pipe's 64 KiB
        // default and PIPE_BUF: frames cross many reads and writes.
        let len = match i % 4 {
            0 => max,
            1 => (i as usize * 7919) % 4096,
            _ => (i as usize * 104_729) % (max + 1),
        };
        buf.clear();
        buf.extend((0..len).map(|k| (k as u64 ^ i) as u8));
        let sum = checksum(i, &buf);
        tx.send(&buf).unwrap();
        let echo = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(
            (echo.len(), checksum(i, &echo)),
            (len, sum),
            "raw message {i}"
        );
        drop(echo);
        // Typed: rkyv adds a length word and padding, so stay below max.
        buf.truncate(len.min(max - 64));
        let sum = checksum(i, &buf);
        ttx.send(&buf).unwrap();
        let echo = trx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(
            (echo.len(), checksum(i, &echo)),
            (buf.len(), sum),
            "typed message {i}"
        );
    }
    drop((tx, rx, ttx, trx));
    assert_success(child);
    assert_no_leftovers();
}

fn try_and_timeouts(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("try and timeouts", Duration::from_secs(120));
    let child = spawn(
        spawner("gate", t)
            .channel_with(ChannelConfig::new("data").capacity(4096))
            .channel("ctl"),
        t,
    );
    let (mut tx, mut rx) = child.raw_channel("data").unwrap();
    let (mut ctl_tx, mut ctl_rx) = child.channel::<Num, Num>("ctl").unwrap();
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
    let start = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(30)).unwrap_err(),
        RecvError::Timeout
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
    // Fill the direction while the child reads nothing.
    let mut sent = 0u64;
    while tx.try_send(&[7; 32]).is_ok() {
        sent += 1;
        assert!(sent < 1_000_000, "try_send never reported Full");
    }
    assert!(sent > 0);
    assert_eq!(tx.try_send(&[7; 32]), Err(SendError::Full));
    let start = Instant::now();
    assert_eq!(
        tx.send_timeout(&[7; 32], Duration::from_millis(30)),
        Err(SendError::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
    // The child drains exactly what was sent, then there is room again.
    ctl_tx.send(&Num(sent)).unwrap();
    let drained = ctl_rx.recv_timeout(Duration::from_secs(30)).unwrap().0;
    assert_eq!(drained, sent);
    tx.try_send(&[8; 32]).unwrap();
    tx.send_timeout(&[9; 32], Duration::from_millis(30))
        .unwrap();
    // The child echoes those two back on the data channel.
    ctl_tx.send(&Num(2)).unwrap();
    assert_eq!(
        &*rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        &[8; 32]
    );
    let echoed = loop {
        match rx.try_recv() {
            Ok(m) => break m.to_vec(),
            Err(RecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(echoed, [9; 32]);
    drop((tx, rx, ctl_tx, ctl_rx));
    assert_success(child);
    assert_no_leftovers();
}

fn too_large_is_refused(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("too large", Duration::from_secs(60));
    let child = spawn(
        spawner("echo2", t)
            .channel_with(ChannelConfig::new("raw").capacity(1024))
            .channel_with(ChannelConfig::new("typed").capacity(1024)),
        t,
    );
    let (mut tx, mut rx) = child.raw_channel("raw").unwrap();
    assert_eq!(tx.max_message(), 512 - 16);
    assert_eq!(
        tx.try_send(&[0; 497]),
        Err(SendError::TooLarge { max: 496 })
    );
    assert_eq!(tx.send(&[0; 4096]), Err(SendError::TooLarge { max: 496 }));
    tx.send(&[5; 496]).unwrap();
    assert_eq!(&*rx.recv().unwrap(), &[5; 496]);

    let (mut ttx, mut trx) = child.channel::<Vec<u8>, Vec<u8>>("typed").unwrap();
    assert_eq!(
        ttx.send(&vec![1u8; 2000]),
        Err(SendError::TooLarge { max: 496 })
    );
    // The value was only borrowed and the channel still works.
    ttx.send(&vec![1u8; 100]).unwrap();
    assert_eq!(trx.recv().unwrap().as_slice(), [1u8; 100]);
    drop((tx, rx, ttx, trx));
    assert_success(child);
    assert_no_leftovers();
}

const SEND_THEN_EXIT: u64 = 1000;

fn disconnect_after_drain(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("drain then disconnect", Duration::from_secs(60));
    let mut child = spawn(spawner("send_then_exit", t).channel("c"), t);
    let (_tx, mut rx) = child.channel::<Num, Num>("c").unwrap();
    // The child sends everything and exits before we read anything.
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "the exit status is the caller's");
    for i in 0..SEND_THEN_EXIT {
        assert_eq!(rx.recv().unwrap().0, i, "committed messages arrive first");
    }
    assert_eq!(rx.recv().map(|m| m.0), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv().map(|m| m.0), Err(RecvError::Disconnected));
    assert_no_leftovers();
}

fn dropped_receiver(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("dropped receiver", Duration::from_secs(60));
    // The child drops its receiver: our blocked send must end.
    let child = spawn(
        spawner("drop_rx_later", t).channel_with(ChannelConfig::new("c").capacity(4096)),
        t,
    );
    let (mut tx, mut rx) = child.raw_channel("c").unwrap();
    while tx.try_send(&[0; 100]).is_ok() {}
    let start = Instant::now();
    let r = tx.send_timeout(&[0; 100], Duration::from_secs(20));
    assert_eq!(r, Err(SendError::Disconnected));
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(tx);
    // The child's sender is still open: it reports, then we drop our
    // receiver and its sends must fail too, without SIGPIPE killing it (the
    // child restores the default SIGPIPE action first).
    assert_eq!(
        &*rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        b"ready"
    );
    drop(rx);
    assert_success(child);
    assert_no_leftovers();
}

/// The parent drops a receiver before the child attaches (regression: over
/// FIFOs this used to fail the child's whole `connect`). The child must
/// connect, see `Disconnected` on that direction, and use the others.
fn receiver_dropped_before_attach(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("receiver dropped before attach", Duration::from_secs(60));
    let mut child = spawn(
        spawner("send_to_dropped", t)
            .stdin(Stdio::piped())
            .channel("a")
            .channel("b"),
        t,
    );
    let (_a_tx, a_rx) = child.raw_channel("a").unwrap();
    drop(a_rx);
    // Only now may the child attach (it waits for this line): on a loaded
    // machine it could otherwise attach and send before the drop.
    let stdin = child.process_mut().stdin.as_mut().unwrap();
    std::io::Write::write_all(stdin, b"go\n").unwrap();
    let (_b_tx, mut b_rx) = child.raw_channel("b").unwrap();
    let report = b_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(&*report, b"a: Disconnected");
    drop(report);
    assert_success(child);
    assert_no_leftovers();
}

fn type_mismatch_either_order(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("type mismatch", Duration::from_secs(60));
    // Parent first: the child's wrong take fails, its right take works.
    let child = spawn(spawner("mismatch_second", t).channel("c").channel("ctl"), t);
    let (_tx, mut rx) = child.channel::<u32, u64>("c").unwrap();
    let (mut ctl_tx, _ctl_rx) = child.raw_channel("ctl").unwrap();
    ctl_tx.send(b"go").unwrap();
    assert_eq!(*rx.recv_timeout(Duration::from_secs(30)).unwrap(), 42);
    drop((_tx, rx, ctl_tx, _ctl_rx));
    assert_success(child);

    // Child first: our take fails.
    let child = spawn(spawner("mismatch_first", t).channel("c").channel("ctl"), t);
    let (_ctl_tx, mut ctl_rx) = child.raw_channel("ctl").unwrap();
    assert_eq!(
        &*ctl_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        b"taken"
    );
    let err = child.channel::<u32, u64>("c").unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::TypeMismatch {
                direction: "child-to-parent",
                ..
            }
        ),
        "{err}"
    );
    // Nothing was consumed: the right types still work... (the child sends
    // u32 and expects u32: take it that way).
    let (mut tx, mut rx) = child.channel::<u32, u32>("c").unwrap();
    tx.send(&1).unwrap();
    assert_eq!(*rx.recv_timeout(Duration::from_secs(30)).unwrap(), 2);
    drop((tx, rx, _ctl_tx, ctl_rx));
    assert_success(child);
    assert_no_leftovers();
}

// ---------------------------------------------------------------------------
// The child side.
// ---------------------------------------------------------------------------

/// Entry point of the re-executed children; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("conformance child", Duration::from_secs(240));
    let expect: Transport = std::env::var(EXPECT_ENV).unwrap().parse().unwrap();
    if role == "send_to_dropped" {
        // Gated: see `receiver_dropped_before_attach`.
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line).unwrap();
    }
    let conn = remora::connect().unwrap();
    assert_eq!(conn.transport(), expect);
    assert!(
        matches!(remora::connect(), Err(remora::ConnectError::Open(_))),
        "second connect must fail"
    );
    match role.as_str() {
        "stream" => {
            let (tx, rx) = conn.channel::<Msg, Msg>("stream").unwrap();
            let expect = format!("{:?}", (tx.wait_strategy(), rx.wait_strategy()));
            let strategy = std::env::var(STRATEGY_ENV).unwrap();
            assert_eq!(expect, format!("({strategy}, {strategy})"));
            let messages = std::env::var(COUNT_ENV).unwrap().parse().unwrap();
            stream::exchange(tx, rx, messages);
        }
        "echo_raw" => {
            let (mut tx, mut rx) = conn.raw_channel("raw").unwrap();
            let mode = rx.receive_mode();
            assert_eq!(mode, ReceiveMode::InPlace, "children trust their parent");
            let mut buf = Vec::new();
            while let Ok(m) = rx.recv() {
                buf.clear();
                buf.extend_from_slice(&m);
                drop(m);
                tx.send(&buf).unwrap();
            }
        }
        "echo2" => {
            let (mut tx, mut rx) = conn.raw_channel("raw").unwrap();
            let raw = std::thread::spawn(move || {
                while let Ok(m) = rx.recv() {
                    let v = m.to_vec();
                    drop(m);
                    tx.send(&v).unwrap();
                }
            });
            let (mut tx, mut rx) = conn.channel::<Vec<u8>, Vec<u8>>("typed").unwrap();
            let mode = rx.receive_mode();
            assert_eq!(mode, ReceiveMode::InPlace, "children trust their parent");
            while let Ok(m) = rx.recv() {
                let v = m.to_vec();
                drop(m);
                tx.send(&v).unwrap();
            }
            raw.join().unwrap();
        }
        "gate" => {
            let (mut tx, mut rx) = conn.raw_channel("data").unwrap();
            let (mut ctl_tx, mut ctl_rx) = conn.channel::<Num, Num>("ctl").unwrap();
            // 1: drain exactly n messages and report.
            let n: u64 = ctl_rx.recv().unwrap().0.into();
            for _ in 0..n {
                assert_eq!(&*rx.recv().unwrap(), &[7; 32]);
            }
            ctl_tx.send(&Num(n)).unwrap();
            // 2: echo the next two.
            let _ = ctl_rx.recv().unwrap();
            for _ in 0..2 {
                let v = rx.recv().unwrap().to_vec();
                tx.send(&v).unwrap();
            }
            assert!(matches!(rx.recv().map(drop), Err(RecvError::Disconnected)));
        }
        "send_then_exit" => {
            let (mut tx, _rx) = conn.channel::<Num, Num>("c").unwrap();
            for i in 0..SEND_THEN_EXIT {
                tx.send(&Num(i)).unwrap();
            }
            drop(tx);
            std::process::exit(7);
        }
        "send_to_dropped" => {
            let (mut a_tx, _a_rx) = conn.raw_channel("a").unwrap();
            let (mut b_tx, _b_rx) = conn.raw_channel("b").unwrap();
            let r = a_tx.send(b"x");
            let report = format!("a: {r:?}").replace("Err(", "").replace(')', "");
            b_tx.send(report.as_bytes()).unwrap();
        }
        "drop_rx_later" => {
            // A library must not rely on SIGPIPE being ignored.
            // SAFETY: restores the default action; no handler involved.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let (mut tx, rx) = conn.raw_channel("c").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(rx);
            tx.send(b"ready").unwrap();
            let start = Instant::now();
            let r = loop {
                match tx.send_timeout(&[1; 64], Duration::from_secs(20)) {
                    Ok(()) => assert!(start.elapsed() < Duration::from_secs(20)),
                    Err(e) => break e,
                }
            };
            assert_eq!(r, SendError::Disconnected);
        }
        "mismatch_second" => {
            let (_ctl_tx, mut ctl_rx) = conn.raw_channel("ctl").unwrap();
            assert_eq!(&*ctl_rx.recv().unwrap(), b"go");
            // The parent sends u32 and expects u64; take it wrongly first.
            let err = conn.channel::<u32, u32>("c").unwrap_err();
            assert!(
                matches!(
                    err,
                    ChannelError::TypeMismatch {
                        direction: "child-to-parent",
                        ..
                    }
                ),
                "{err}"
            );
            let err = conn.channel::<u64, u64>("c").unwrap_err();
            assert!(
                matches!(
                    err,
                    ChannelError::TypeMismatch {
                        direction: "parent-to-child",
                        ..
                    }
                ),
                "{err}"
            );
            let (mut tx, _rx) = conn.channel::<u64, u32>("c").unwrap();
            tx.send(&42).unwrap();
            assert!(matches!(
                ctl_rx.recv().map(drop),
                Err(RecvError::Disconnected)
            ));
        }
        "mismatch_first" => {
            let (mut ctl_tx, _ctl_rx) = conn.raw_channel("ctl").unwrap();
            let (mut tx, mut rx) = conn.channel::<u32, u32>("c").unwrap();
            ctl_tx.send(b"taken").unwrap();
            let n = *rx.recv().unwrap();
            tx.send(&(n + 1)).unwrap();
            assert!(matches!(rx.recv().map(drop), Err(RecvError::Disconnected)));
        }
        other => panic!("unknown role {other}"),
    }
}
