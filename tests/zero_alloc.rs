//! A counting global allocator proves that sending and receiving allocate
//! nothing once the channel ends exist, over shared memory (in one process)
//! and over FIFOs (with a real child process), with receivers in their
//! default `ReceiveMode::Copy` (the copy buffer is allocated when the end is
//! taken). `drain` and the queries (`len`, `is_full`, ...) are covered
//! too. `tests/receive_modes.rs` covers `ReceiveMode::InPlace` as well.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::alloc::allocations_during;
use remora::{ChannelConfig, Segment, Spawner, Transport};

/// One cross-process test at a time (they share the 2 cores).
static SERIAL: Mutex<()> = Mutex::new(());

#[global_allocator]
static GLOBAL: common::alloc::Counting = common::alloc::Counting;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Request {
    id: u64,
    name: String,
    values: Vec<u32>,
    tags: Vec<String>,
}

#[test]
fn typed_and_raw_hot_paths_do_not_allocate() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let parent = Segment::create(&[
        ChannelConfig::new("typed").capacity(1 << 16),
        ChannelConfig::new("raw").capacity(1 << 12),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Request, ()>("typed").unwrap();
    let (_, mut rx) = child.channel::<(), Request>("typed").unwrap();
    let (mut raw_tx, _) = parent.raw_channel("raw").unwrap();
    let (_, mut raw_rx) = child.raw_channel("raw").unwrap();

    // Built before measuring: the message itself is the caller's allocation.
    let req = Request {
        id: 0,
        name: "a name longer than the inline limit".into(),
        values: (0..100).collect(),
        tags: vec!["x".into(), "a longer tag that is stored out of line".into()],
    };
    let bytes = [0xabu8; 200];

    let mut round = |n: u64| {
        for _ in 0..n {
            // try_send/try_recv and the blocking forms share one code path;
            // use the blocking ones, including a wrap-around every few rounds.
            tx.send(&req).unwrap();
            let got = rx.recv().unwrap();
            assert_eq!(got.values.len(), 100);
            assert_eq!(got.tags[1], "a longer tag that is stored out of line");
            drop(got);
            raw_tx.send(&bytes).unwrap();
            assert_eq!(raw_rx.recv().unwrap().len(), 200);
            // The queries and an empty drain.
            assert!(tx.is_empty() && !rx.is_disconnected() && !raw_tx.is_full());
            assert_eq!(raw_rx.drain(|_| ()).unwrap() + raw_rx.len(), 0);
        }
    };
    // The counter works: an allocation is seen.
    assert!(allocations_during(|| drop(std::hint::black_box(Box::new(1u8)))) >= 1);
    round(100); // warm-up
    let n = allocations_during(|| round(10_000));
    assert_eq!(n, 0, "{n} heap allocations in 10,000 send/receive rounds");
}

fn request() -> Request {
    Request {
        id: 0,
        name: "a name longer than the inline limit".into(),
        values: (0..100).collect(),
        tags: vec!["x".into(), "a longer tag that is stored out of line".into()],
    }
}

#[test]
fn fifo_hot_paths_do_not_allocate() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _w = common::Watchdog::new("fifo zero-alloc", Duration::from_secs(120));
    let mut child = Spawner::new(std::env::current_exe().unwrap())
        .args(common::CHILD_ENTRY)
        .env(common::ROLE, "echo")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .transport(Transport::Fifo)
        .channel_with(ChannelConfig::new("typed").capacity(1 << 16))
        .channel_with(ChannelConfig::new("raw").capacity(1 << 12))
        .spawn()
        .unwrap();
    let (mut tx, mut rx) = child.channel::<Request, u64>("typed").unwrap();
    let (mut raw_tx, mut raw_rx) = child.raw_channel("raw").unwrap();
    let req = request();
    let bytes = [0xabu8; 200];
    let mut round = |n: u64| {
        for _ in 0..n {
            // The child answers each request with its number of values.
            tx.send(&req).unwrap();
            assert_eq!(*rx.recv().unwrap(), 100);
            raw_tx.send(&bytes).unwrap();
            assert_eq!(&*raw_rx.recv().unwrap(), &bytes);
            // The non-blocking and timed forms share the paths; touch them.
            assert!(rx.try_recv().is_err());
            assert!(raw_rx.recv_timeout(Duration::from_micros(1)).is_err());
            // Two requests in flight, the replies drained with a closure.
            tx.send(&req).unwrap();
            tx.send(&req).unwrap();
            let mut replies = 0;
            while replies < 2 {
                replies += rx.drain(|n| assert_eq!(*n, 100)).unwrap();
            }
            // The queries (system calls over FIFOs, no allocation).
            assert!(!tx.is_disconnected() && !raw_rx.is_disconnected());
            assert!(!raw_tx.is_full() && rx.len() < rx.capacity());
        }
    };
    round(100); // warm-up: the child attaches, placeholders go
    let n = allocations_during(|| round(10_000));
    assert_eq!(n, 0, "{n} heap allocations in 10,000 FIFO round trips");
    drop((tx, rx, raw_tx, raw_rx));
    assert!(child.wait().unwrap().success());
}

/// Entry point of the re-executed child; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    assert_eq!(role, "echo");
    let conn = remora::connect().unwrap();
    let (mut tx, mut rx) = conn.channel::<u64, Request>("typed").unwrap();
    let (mut raw_tx, mut raw_rx) = conn.raw_channel("raw").unwrap();
    let raw = std::thread::spawn(move || {
        while let Ok(m) = raw_rx.recv() {
            let v = m.to_vec();
            drop(m);
            raw_tx.send(&v).unwrap();
        }
    });
    while let Ok(req) = rx.recv() {
        let n = req.values.len() as u64;
        drop(req);
        tx.send(&n).unwrap();
    }
    raw.join().unwrap();
}
