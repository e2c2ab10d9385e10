//! Every documented error, provoked on purpose (in one process: the segment
//! is created and opened by name here, exactly as a child would).
//!
//! Too-large, the try/timeout forms, drain-then-disconnect and a dropped
//! receiver are tested once, over both transports, in `conformance.rs`.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use remora::{ChannelConfig, ChannelError, OpenError, RecvError, Segment, SendError};

fn pair(capacity: usize) -> (Segment, Segment) {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(capacity)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    (parent, child)
}

/// A sender asleep on a full ring (seen asleep in `/proc`, not just about
/// to send) gets `Disconnected` when the receiver drops, woken by the drop:
/// the median over 7 drops stays far below the 50 ms slice after which a
/// lost wake-up would re-check. (All wake-ups: `tests/wakeups.rs`.)
#[test]
fn blocked_send_wakes_when_receiver_drops() {
    let mut times = Vec::new();
    for _ in 0..7 {
        let (parent, child) = pair(256);
        let (mut tx, _) = parent.raw_channel("c").unwrap();
        let (_, rx) = child.raw_channel("c").unwrap();
        while tx.try_send(&[0; 48]).is_ok() {}
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            ready_tx.send(common::thread_id()).unwrap();
            let r = tx.send_timeout(&[0; 48], Duration::from_secs(20));
            (r, Instant::now())
        });
        let tid = ready.recv().unwrap();
        common::wait_until_asleep(tid, Duration::from_secs(5));
        std::thread::sleep(common::jittered(
            Duration::from_millis(2),
            Duration::from_millis(8),
        ));
        let dropped = Instant::now();
        drop(rx);
        let (r, woken) = t.join().unwrap();
        assert_eq!(r, Err(SendError::Disconnected));
        times.push(woken - dropped);
    }
    let (median, max) = common::median_max(&times);
    assert!(
        median < Duration::from_millis(10),
        "woken {median:?} (median; max {max:?}) after the drop: a lost wake-up"
    );
}

#[test]
fn channel_lookup_errors() {
    let parent = Segment::create(&[ChannelConfig::new("a"), ChannelConfig::new("b")]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    match parent.channel::<u32, u32>("nope") {
        Err(ChannelError::Unknown { declared, .. }) => assert_eq!(declared, ["a", "b"]),
        other => panic!("{other:?}"),
    }
    let _ends = parent.channel::<u32, u64>("a").unwrap();
    assert!(matches!(
        parent.channel::<u32, u64>("a"),
        Err(ChannelError::AlreadyTaken { .. })
    ));
    // The child swaps the types the wrong way round.
    assert!(matches!(
        child.channel::<u32, u32>("a"),
        Err(ChannelError::TypeMismatch {
            direction: "child-to-parent",
            ..
        })
    ));
    assert!(matches!(child.raw_channel("b").map(drop), Ok(())));
    assert!(matches!(
        parent.channel::<u8, u8>("b"),
        Err(ChannelError::TypeMismatch { .. })
    ));
}

#[test]
fn invalid_configurations() {
    let bad = [
        vec![],
        vec![ChannelConfig::new("x").capacity(1000)],
        vec![ChannelConfig::new("x").capacity(32)],
        vec![ChannelConfig::new("")],
        vec![ChannelConfig::new("x".repeat(49))],
        vec![ChannelConfig::new("x"), ChannelConfig::new("x")],
    ];
    for cfg in bad {
        assert!(
            matches!(Segment::create(&cfg), Err(OpenError::InvalidConfig { .. })),
            "{cfg:?}"
        );
    }
}

#[test]
fn second_open_is_refused() {
    let (parent, _child) = pair(4096);
    assert!(parent.is_claimed());
    assert!(matches!(
        Segment::open(parent.name()),
        Err(OpenError::AlreadyClaimed)
    ));
}

#[test]
fn missing_segment() {
    let err = Segment::open("/remora-0-doesnotexist").unwrap_err();
    assert!(matches!(err, OpenError::NotFound { .. }), "{err}");
}

/// Creates a segment, lets `corrupt` edit its file in /dev/shm, then opens it.
fn open_after(corrupt: impl FnOnce(&mut std::fs::File)) -> OpenError {
    let seg = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let path = format!("/dev/shm{}", seg.name());
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    corrupt(&mut f);
    drop(f);
    Segment::open(seg.name()).unwrap_err()
}

fn write_at(f: &mut std::fs::File, offset: u64, bytes: &[u8]) {
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn corrupt_segments_are_rejected_at_open() {
    let e = open_after(|f| write_at(f, 0, b"NOTREMOR"));
    assert!(matches!(e, OpenError::BadMagic { .. }), "{e}");
    let e = open_after(|f| write_at(f, 8, &99u32.to_le_bytes()));
    assert!(
        matches!(e, OpenError::VersionMismatch { found: 99, .. }),
        "{e}"
    );
    let e = open_after(|f| write_at(f, 12, &0u32.to_le_bytes()));
    assert!(matches!(e, OpenError::NotReady), "{e}");
    let e = open_after(|f| f.set_len(f.metadata().unwrap().len() + 4096).unwrap());
    assert!(matches!(e, OpenError::BadSize { .. }), "{e}");
    let e = open_after(|f| f.set_len(16).unwrap());
    assert!(matches!(e, OpenError::BadSize { .. }), "{e}");
    // Ring capacity not a power of two; ring offset overlapping the header.
    let e = open_after(|f| write_at(f, 64 + 56 + 8, &1000u64.to_le_bytes()));
    assert!(matches!(e, OpenError::BadLayout { .. }), "{e}");
    let e = open_after(|f| write_at(f, 64 + 56, &0u64.to_le_bytes()));
    assert!(matches!(e, OpenError::BadLayout { .. }), "{e}");
    let e = open_after(|f| write_at(f, 28, &1000u32.to_le_bytes()));
    assert!(matches!(e, OpenError::BadLayout { .. }), "{e}");
    let e = open_after(|f| {
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .unwrap()
    });
    assert!(matches!(e, OpenError::BadLayout { .. }), "{e}");
}

/// Root only (changing a file's owner); listed as ignored otherwise.
#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_segment_owned_by_another_user_is_refused() {
    common::require_root("changing a file's owner");
    let e = open_after(|f| std::os::unix::fs::fchown(&*f, Some(12345), None).unwrap());
    assert!(
        matches!(e, OpenError::WrongOwner { owner: 12345, .. }),
        "{e}"
    );
}

#[test]
fn creator_unlinks_on_drop() {
    let seg = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let path = format!("/dev/shm{}", seg.name());
    assert!(std::path::Path::new(&path).exists());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    drop(seg);
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn invalid_message_is_skipped_not_fatal() {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, _) = parent.channel::<Vec<u32>, ()>("c").unwrap();
    let (_, mut rx) = child.channel::<(), Vec<u32>>("c").unwrap();
    tx.send(&vec![1, 2, 3, 4]).unwrap(); // 16 bytes of data + 8 of root
    tx.send(&vec![5]).unwrap();
    // Scribble over the first payload: the parent-to-child ring is the first
    // ring block (offset 8192), data after its 640-byte control block, payload
    // after the 16-byte frame header.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", parent.name()))
        .unwrap();
    write_at(&mut f, 8192 + 640 + 16, &[0xff; 24]);
    let got = rx.recv().map(|m| m.len());
    assert!(
        matches!(got, Err(RecvError::Invalid { len: 24 })),
        "{got:?}"
    );
    assert_eq!(rx.recv().unwrap().as_slice(), [5]);
}

/// A take refused for one direction records nothing for the other, so a
/// retry with other types is judged only against what the peer recorded.
/// (Regression: the sending direction's fingerprint was recorded before the
/// receiving one was checked, and the retry met its own stale record.)
#[test]
fn a_refused_take_records_nothing() {
    let (parent, child) = pair(4096);
    // The child sends u8 on this channel (and records only that direction).
    let _child_tx = child.sender::<u8>("c").unwrap();
    // The parent first gets its receiving type wrong...
    assert!(matches!(
        parent.channel::<u64, u16>("c"),
        Err(ChannelError::TypeMismatch { .. })
    ));
    // ...then right, with another sending type than in the refused try.
    assert!(parent.channel::<u32, u8>("c").is_ok());
}
