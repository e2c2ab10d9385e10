//! `WaitSet` in one process: both ends of every channel are here (segments
//! created and opened in-process), the events are made by other threads.
//! Cross-process cases (wake-ups from a child, a child's death and exit)
//! are in `waitset_children.rs`.

mod common;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use common::Watchdog;
use remora::{
    ChannelConfig, EventKind, RawReceiver, RawSender, RecvError, Segment, WaitError, WaitSet,
    WaitStrategy,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// One case at a time: the threads of one would starve another's on 2
/// cores and the timeouts below are generous, not tight.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A wait for an event that is on its way: it must come well before the
/// deadline (a set that missed its wake-up would only see the event in its
/// final scan at the deadline).
fn woken(set: &mut WaitSet) -> remora::Event {
    let start = std::time::Instant::now();
    let ev = set.wait_timeout(LONG).expect("no event");
    assert!(
        start.elapsed() < LONG / 2,
        "woken only after {:?}: a lost wake-up",
        start.elapsed()
    );
    ev
}

const LONG: Duration = Duration::from_secs(10);

/// A segment with `n` raw channels: (creator, opener, senders on the opener
/// side, receivers on the creator side).
fn segment(n: usize) -> (Segment, Segment, Vec<RawSender>, Vec<RawReceiver>) {
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let configs: Vec<ChannelConfig> = names
        .iter()
        .map(|n| ChannelConfig::new(n).capacity(4096))
        .collect();
    let parent = Segment::create(&configs).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for name in &names {
        let (tx, _) = child.raw_channel(name).unwrap();
        let (_, rx) = parent.raw_channel(name).unwrap();
        txs.push(tx);
        rxs.push(rx);
    }
    (parent, child, txs, rxs)
}

/// A set can move to the thread that serves it.
#[test]
fn wait_set_is_send() {
    fn send<T: Send>() {}
    send::<WaitSet>();
}

#[test]
fn try_timeout_and_blocking_forms() {
    let _s = serial();
    let _w = Watchdog::new("waitset forms", Duration::from_secs(60));
    for strategy in [
        WaitStrategy::Spin,
        WaitStrategy::Adaptive,
        WaitStrategy::Block,
    ] {
        let (_p, _c, mut txs, mut rxs) = segment(2);
        let mut set = WaitSet::new();
        set.set_wait_strategy(strategy);
        let a = set.add(&rxs[0]).unwrap();
        let b = set.add(&rxs[1]).unwrap();
        assert_eq!(set.try_wait(), Err(WaitError::Empty));
        assert_eq!(
            set.wait_timeout(Duration::from_millis(20)),
            Err(WaitError::Timeout)
        );
        txs[1].send(b"one").unwrap();
        let ev = set.try_wait().unwrap();
        assert_eq!((ev.key(), ev.kind()), (b, EventKind::Readable));
        // Not received: not reported again until the ring moves.
        assert_eq!(set.try_wait(), Err(WaitError::Empty));
        assert_eq!(&*rxs[1].try_recv().unwrap(), b"one");
        // Blocking: woken by another thread's send.
        let mut tx = txs.remove(0);
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            tx.send(b"late").unwrap();
            tx
        });
        let ev = woken(&mut set);
        assert_eq!(
            (ev.key(), ev.kind()),
            (a, EventKind::Readable),
            "{strategy:?}"
        );
        assert_eq!(&*rxs[0].try_recv().unwrap(), b"late");
        drop(sender.join().unwrap());
    }
}

#[test]
fn level_reports_until_drained_then_disconnect_once() {
    let _s = serial();
    let _w = Watchdog::new("waitset disconnect", Duration::from_secs(60));
    let (_p, _c, mut txs, mut rxs) = segment(2);
    let mut set = WaitSet::new();
    let a = set.add(&rxs[0]).unwrap();
    let b = set.add(&rxs[1]).unwrap();
    for i in 0..3u8 {
        txs[0].send(&[i]).unwrap();
    }
    drop(txs.remove(0)); // a's sender hangs up with 3 messages committed
    let mut got = Vec::new();
    loop {
        let ev = woken(&mut set);
        assert_eq!(ev.key(), a);
        match ev.kind() {
            // Receive one per event: the ring moved, so it is reported again.
            EventKind::Readable => got.push(rxs[0].try_recv().unwrap()[0]),
            EventKind::Disconnected => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [0, 1, 2], "every message before the disconnect");
    assert_eq!(rxs[0].try_recv().unwrap_err(), RecvError::Disconnected);
    // Reported once: the set keeps working for b, and never names a again.
    assert_eq!(set.try_wait(), Err(WaitError::Empty));
    txs[0].send(b"b").unwrap();
    let ev = woken(&mut set);
    assert_eq!((ev.key(), ev.kind()), (b, EventKind::Readable));
    drop(txs);
    let _ = rxs[1].try_recv();
    let ev = woken(&mut set);
    assert_eq!((ev.key(), ev.kind()), (b, EventKind::Disconnected));
    assert_eq!(set.try_wait(), Err(WaitError::NoMembers));
    assert_eq!(set.len(), 2);
    assert!(set.remove(a) && set.remove(b) && set.is_empty());
}

/// A sender whose ring has a quarter free is `Writable`, whatever the
/// ring's history: after each request/reply exchange, one message sent and
/// not yet received (on a 1 KiB ring, 64 B messages rewind to the ring's
/// start every few exchanges; the bytes the rewind skipped are free, as
/// the sender counts them, and must not withhold the event).
#[test]
fn writable_after_any_number_of_exchanges() {
    let _s = serial();
    let _w = Watchdog::new("waitset writable after rewinds", Duration::from_secs(60));
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(1024)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    for k in 0..40 {
        tx.send(&[k as u8; 64]).unwrap();
        let mut set = WaitSet::new();
        let w = set.add(&tx).unwrap();
        let ev = set.try_wait();
        assert_eq!(
            ev.map(|e| (e.key(), e.kind())),
            Ok((w, EventKind::Writable)),
            "after {k} exchanges, {} bytes in flight",
            tx.len()
        );
        drop(set);
        drop(rx.recv().unwrap());
    }
}

#[test]
fn mixed_typed_raw_senders_and_runtime_add_remove() {
    let _s = serial();
    let _w = Watchdog::new("waitset mixed", Duration::from_secs(60));
    let parent = Segment::create(&[
        ChannelConfig::new("typed").capacity(4096),
        ChannelConfig::new("raw").capacity(4096),
        ChannelConfig::new("room").capacity(256),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut ttx, _) = child.channel::<String, ()>("typed").unwrap();
    let (_, mut trx) = parent.channel::<(), String>("typed").unwrap();
    let (mut rtx, _) = child.raw_channel("raw").unwrap();
    let (_, mut rrx) = parent.raw_channel("raw").unwrap();
    let (mut room_tx, _) = parent.raw_channel("room").unwrap();
    let (_, mut room_rx) = child.raw_channel("room").unwrap();
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    let t = set.add(&trx).unwrap();
    // The sender reports room once (the ring moved since: never reported).
    let w = set.add(&room_tx).unwrap();
    let ev = set.try_wait().unwrap();
    assert_eq!((ev.key(), ev.kind()), (w, EventKind::Writable));
    while room_tx.try_send(&[7; 64]).is_ok() {}
    assert_eq!(set.try_wait(), Err(WaitError::Empty), "full: no room");
    // Room comes back when the other side receives, from another thread.
    let drainer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        drop(room_rx.recv().unwrap());
        room_rx
    });
    let ev = woken(&mut set);
    assert_eq!((ev.key(), ev.kind()), (w, EventKind::Writable));
    let _room_rx = drainer.join().unwrap();
    assert!(set.remove(w));
    // A raw receiver added at run time, while a typed one is in the set.
    let r = set.add(&rrx).unwrap();
    assert_ne!(r, w, "a key is never reused");
    rtx.send(b"raw").unwrap();
    ttx.send(&"typed".to_owned()).unwrap();
    let mut seen = HashSet::new();
    while seen.len() < 2 {
        let ev = woken(&mut set);
        assert_eq!(ev.kind(), EventKind::Readable);
        if ev.key() == t {
            assert_eq!(trx.try_recv().unwrap().as_str(), "typed");
        } else {
            assert_eq!(ev.key(), r);
            assert_eq!(&*rrx.try_recv().unwrap(), b"raw");
        }
        seen.insert(ev.key());
    }
    assert!(set.remove(t));
    assert!(!set.remove(t));
    ttx.send(&"unwatched".to_owned()).unwrap();
    assert_eq!(set.try_wait(), Err(WaitError::Empty), "removed member");
}

/// One sender floods its channel, 63 others send one message each: every
/// one of them is served within a bounded number of events.
#[test]
fn fair_one_flooder_does_not_starve_63_others() {
    let _s = serial();
    let _w = Watchdog::new("waitset fairness", Duration::from_secs(60));
    let mut segs = Vec::new();
    let mut rxs = Vec::new();
    let mut txs = Vec::new();
    for _ in 0..2 {
        let (p, c, t, r) = segment(32);
        segs.push((p, c));
        txs.extend(t);
        rxs.extend(r);
    }
    let mut set = WaitSet::new();
    let keys: Vec<_> = rxs.iter().map(|rx| set.add(rx).unwrap()).collect();
    let mut flood_tx = txs.remove(0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let flooder = thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = flood_tx.send_timeout(b"flood", Duration::from_millis(10));
        }
    });
    // Let the flood fill its ring first.
    thread::sleep(Duration::from_millis(20));
    for tx in &mut txs {
        tx.send(b"one").unwrap();
    }
    let mut served = HashSet::new();
    let mut turns = 0;
    while served.len() < 63 {
        let ev = woken(&mut set);
        turns += 1;
        let i = keys.iter().position(|k| *k == ev.key()).unwrap();
        // Serve one message per event, like a request loop.
        if let Ok(m) = rxs[i].try_recv() {
            if i != 0 {
                assert_eq!(&*m, b"one");
                served.insert(i);
            }
        }
        assert!(
            turns <= 2 * 64,
            "63 single messages not served in {turns} turns"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while rxs[0].try_recv().is_ok() {}
    flooder.join().unwrap();
    eprintln!("63 others served in {turns} turns next to a flooding sender");
}

/// A member whose peer scribbles its ring reports its own event and error;
/// the others keep working.
#[test]
fn hostile_member_reports_its_own_error_only() {
    let _s = serial();
    let _w = Watchdog::new("waitset hostile", Duration::from_secs(60));
    let (_p, child, mut txs, mut rxs) = segment(3);
    let mut set = WaitSet::new();
    let keys: Vec<_> = rxs.iter().map(|rx| set.add(rx).unwrap()).collect();
    // The peer (the opener) forges a stamped header at ring c1's head,
    // with a length no frame can have.
    scribble_header(&child, 1);
    let ev = woken(&mut set);
    assert_eq!((ev.key(), ev.kind()), (keys[1], EventKind::Readable));
    assert!(matches!(rxs[1].try_recv(), Err(RecvError::Corrupted(_))));
    // The poisoned receiver closed its end: reported once as disconnected.
    let ev = woken(&mut set);
    assert_eq!((ev.key(), ev.kind()), (keys[1], EventKind::Disconnected));
    for i in [0, 2] {
        txs[i].send(b"fine").unwrap();
        let ev = woken(&mut set);
        assert_eq!((ev.key(), ev.kind()), (keys[i], EventKind::Readable));
        assert_eq!(&*rxs[i].try_recv().unwrap(), b"fine");
    }
    // The poisoned member is not reported again; its receiver keeps
    // failing, and the others were served.
    assert!(matches!(rxs[1].try_recv(), Err(RecvError::Corrupted(_))));
    assert_eq!(set.try_wait(), Err(WaitError::Empty));
}

/// A frame is ready when its stamp publishes it, not when `tail` moved:
/// the producer stores `tail` before the stamp, so a set that reported on
/// `tail` would report a frame its receiver cannot see yet (`Empty`), and
/// then not again once the stamp lands. Here the tail is moved with no
/// stamp behind it, as in that window: no event; a real send then is one.
#[test]
fn a_tail_ahead_of_the_stamps_is_not_readiness() {
    let _s = serial();
    let _w = Watchdog::new("waitset tail ahead", Duration::from_secs(60));
    let (_p, child, mut txs, mut rxs) = segment(1);
    let mut set = WaitSet::new();
    let key = set.add(&rxs[0]).unwrap();
    write_ring(&child, 0, 0, &32u64.to_le_bytes()); // the tail, a frame ahead
    assert_eq!(set.try_wait(), Err(WaitError::Empty));
    txs[0].send(b"now").unwrap();
    let ev = woken(&mut set);
    assert_eq!((ev.key(), ev.kind()), (key, EventKind::Readable));
    assert_eq!(&*rxs[0].try_recv().unwrap(), b"now");
}

/// Writes `bytes` at byte `offset` of channel `index`'s creator-bound ring
/// block (its control block first, the data 640 bytes in), as a hostile
/// opener could: the block's offset comes from the directory
/// (ChannelDescriptor i at 64 + 128 i; rings[1], opener to creator, at
/// +56 + 24, its offset first), written through /dev/shm (test only).
fn write_ring(child: &Segment, index: usize, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let path = format!("/dev/shm/{}", child.name().trim_start_matches('/'));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut off = [0u8; 8];
    file.read_exact_at(&mut off, (64 + 128 * index + 56 + 24) as u64)
        .unwrap();
    let ring = u64::from_le_bytes(off);
    file.write_all_at(bytes, ring + offset).unwrap();
}

/// Forges a published header at the start of channel `index`'s
/// creator-bound ring (its head before any message): `len` too large for
/// the ring, `kind` a message, the stamp that publishes position 0 (`!0`).
fn scribble_header(child: &Segment, index: usize) {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    header[4..8].copy_from_slice(b"MSG1");
    header[8..16].copy_from_slice(&(!0u64).to_le_bytes());
    write_ring(child, index, 640, &header);
}

/// 1,024 channels across 256 segments (no segment shared) in one set: more
/// than one `futex_waitv` holds, so relay threads watch the rest. Messages
/// from another thread to channels spread over every chunk all arrive, in
/// `Block` (every wake-up through the aggregate bells).
#[test]
fn scale_1024_channels_over_256_segments() {
    let _s = serial();
    let _w = Watchdog::new("waitset scale", Duration::from_secs(120));
    let mut segs = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..256 {
        let (p, c, t, r) = segment(4);
        segs.push((p, c));
        txs.extend(t);
        rxs.extend(r);
    }
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    let keys: Vec<_> = rxs.iter().map(|rx| set.add(rx).unwrap()).collect();
    assert_eq!(set.len(), 1024);
    let picks: Vec<usize> = (0..64).map(|i| (i * 997 + 13) % 1024).collect();
    let picks2 = picks.clone();
    let sender = thread::spawn(move || {
        for &i in &picks2 {
            thread::sleep(Duration::from_millis(2));
            txs[i].send(&(i as u32).to_le_bytes()).unwrap();
        }
        txs
    });
    let mut got = HashSet::new();
    while got.len() < picks.len() {
        let ev = woken(&mut set);
        assert_eq!(ev.kind(), EventKind::Readable);
        let i = keys.iter().position(|k| *k == ev.key()).unwrap();
        let m = rxs[i].try_recv().unwrap();
        assert_eq!(u32::from_le_bytes(m[..4].try_into().unwrap()) as usize, i);
        got.insert(i);
    }
    let _txs = sender.join().unwrap();
    assert!(picks.iter().all(|i| got.contains(i)));
}

/// Members added and removed at run time across many segments (segments
/// leave the set when their last member goes, so the set's segment list
/// is compacted and relays re-chunked): every event still names the right
/// member, removed members are never reported, and segments re-added work.
#[test]
fn add_remove_churn_over_many_segments() {
    let _s = serial();
    let _w = Watchdog::new("waitset churn", Duration::from_secs(120));
    let mut keep = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..80 {
        let (p, c, t, r) = segment(2);
        keep.push((p, c));
        txs.extend(t);
        rxs.extend(r);
    }
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    let mut keys: Vec<Option<remora::Key>> =
        rxs.iter().map(|r| Some(set.add(r).unwrap())).collect();
    for round in 0..4usize {
        // Remove a varying subset (whole segments too), then re-add some.
        for (i, key) in keys.iter_mut().enumerate() {
            if (i / 2 + round) % 3 == 0 {
                if let Some(k) = key.take() {
                    assert!(set.remove(k));
                }
            } else if key.is_none() && (i + round) % 2 == 0 {
                *key = Some(set.add(&rxs[i]).unwrap());
            }
        }
        // A message on every channel, watched or not, from another thread.
        let mut moved: Vec<RawSender> = std::mem::take(&mut txs);
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            for (i, tx) in moved.iter_mut().enumerate() {
                tx.send(&(i as u32).to_le_bytes()).unwrap();
            }
            moved
        });
        let watched: HashSet<usize> = (0..keys.len()).filter(|&i| keys[i].is_some()).collect();
        let mut seen = HashSet::new();
        while seen.len() < watched.len() {
            let ev = woken(&mut set);
            assert_eq!(ev.kind(), EventKind::Readable);
            let i = keys
                .iter()
                .position(|k| *k == Some(ev.key()))
                .expect("a removed member was reported");
            let m = rxs[i].try_recv().unwrap();
            assert_eq!(u32::from_le_bytes(m[..4].try_into().unwrap()) as usize, i);
            assert!(seen.insert(i));
        }
        txs = sender.join().unwrap();
        assert_eq!(set.try_wait(), Err(WaitError::Empty));
        for (i, rx) in rxs.iter_mut().enumerate() {
            if !watched.contains(&i) {
                drop(rx.try_recv().unwrap());
            }
        }
    }
}

/// Issue: dropping our own end rang only the peer's bell, so a set asleep
/// on that end reported `Disconnected` only at its deadline.
#[test]
fn dropping_our_own_end_wakes_a_set_sleeping_on_it() {
    let _s = serial();
    let _w = Watchdog::new("own end dropped", Duration::from_secs(60));
    // A receiver with nothing to receive.
    let (_p, _c, _txs, mut rxs) = segment(1);
    let rx = rxs.pop().unwrap();
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    set.add(&rx).unwrap();
    let waiter = thread::spawn(move || woken(&mut set).kind());
    thread::sleep(Duration::from_millis(100));
    drop(rx);
    assert_eq!(waiter.join().unwrap(), EventKind::Disconnected);

    // A sender with no room to send (on the opener's side this time).
    let (_p, _c, mut txs, _rxs) = segment(1);
    let mut tx = txs.pop().unwrap();
    while tx.try_send(&[0u8; 64]).is_ok() {}
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    set.add(&tx).unwrap();
    assert_eq!(set.try_wait().unwrap_err(), WaitError::Empty);
    let waiter = thread::spawn(move || woken(&mut set).kind());
    thread::sleep(Duration::from_millis(100));
    drop(tx);
    assert_eq!(waiter.join().unwrap(), EventKind::Disconnected);

    // A receiver poisoned by a forged frame (`ShmReceiver::fail` closes
    // its end) while the set sleeps with that frame reported already.
    let (_p, child, _txs, mut rxs) = segment(1);
    let mut rx = rxs.pop().unwrap();
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    set.add(&rx).unwrap();
    scribble_header(&child, 0);
    assert_eq!(woken(&mut set).kind(), EventKind::Readable);
    let waiter = thread::spawn(move || woken(&mut set).kind());
    thread::sleep(Duration::from_millis(100));
    assert!(matches!(rx.try_recv(), Err(RecvError::Corrupted(_))));
    assert_eq!(waiter.join().unwrap(), EventKind::Disconnected);
}
