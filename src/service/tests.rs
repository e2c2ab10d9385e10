//! A hostile peer on the control socket, and a peer whose liveness word
//! the kernel never marks (regression tests from review). The peer here is
//! a raw socket end written with `libc`, so it can send what remora never
//! would.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::ServiceError;
use super::connection::ServiceConnection;
use super::wire::Message;
use crate::config::ChannelConfig;
use crate::runtime::Control;
use crate::segment::Segment;
use crate::sys::robust::NO_SENTINEL;
use crate::sys::socket::PeerCred;

/// A connected pair: ours non-blocking (as a connection's is), the peer's
/// blocking.
fn pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    let made = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(made, 0);
    // SAFETY: fresh descriptors nothing else owns; fcntl takes no pointers.
    unsafe {
        let fl = libc::fcntl(fds[0], libc::F_GETFL);
        libc::fcntl(fds[0], libc::F_SETFL, fl | libc::O_NONBLOCK);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

fn raw_send(sock: &OwnedFd, data: &[u8]) -> isize {
    // SAFETY: `data` is readable for its length.
    unsafe {
        libc::send(
            sock.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    }
}

/// Reads what is queued; the answers held, or `Disconnected`.
fn answers(control: &Control) -> Result<usize, ServiceError> {
    control.wait(Some(Instant::now()), |s| {
        (!s.is_closed()).then(|| s.answers_len())
    })
}

/// Answers to requests never made are a protocol violation: the control
/// channel closes at the first one, nothing is kept (before: every one was
/// kept, up to 2^32 entries).
#[test]
fn unsolicited_answers_close_the_control_channel() {
    let (ours, peer) = pair();
    let control = Control::new(ours);
    let n = 10_000u32;
    let sender = std::thread::spawn(move || {
        for id in 0..n {
            let sent = raw_send(&peer, &Message::OpenAccepted { id: 1_000 + id }.encode());
            if sent != 32 {
                break; // we closed our end
            }
        }
        peer
    });
    let start = Instant::now();
    let mut most = 0;
    let end = loop {
        match answers(&control) {
            Ok(len) => most = most.max(len),
            Err(e) => break e,
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never closed");
        std::thread::sleep(Duration::from_millis(1));
    };
    drop(control);
    let _peer = sender.join().unwrap();
    assert!(matches!(end, ServiceError::Disconnected), "{end:?}");
    assert_eq!(most, 0, "answers to requests never made were kept");
}

/// An answer that arrives after its opener gave up is dropped, not kept
/// for ever, and is no protocol violation (the peer may just be slow).
#[test]
fn a_late_answer_is_dropped() {
    let (ours, peer) = pair();
    let control = Control::new(ours);
    let (_segment, memfd) =
        Segment::create_sealed(&[ChannelConfig::new("late").capacity(4096)]).unwrap();
    let id = control.send_open(&memfd, 0).unwrap();
    let gave_up = control.wait_answer(id, Some(Instant::now()));
    assert!(matches!(gave_up, Err(ServiceError::Timeout)), "{gave_up:?}");
    assert_eq!(raw_send(&peer, &Message::OpenAccepted { id }.encode()), 32);
    // Read it (the message is queued: the first pump sees it).
    assert_eq!(answers(&control).unwrap(), 0, "a late answer was kept");
    assert_eq!(answers(&control).unwrap(), 0);
}

/// A peer that keeps the socket non-empty (with answers that are dropped)
/// must not keep a timed wait from returning: one pump reads a bounded
/// number of messages, then the deadline is checked.
#[test]
fn a_flood_does_not_stall_a_timed_wait() {
    let (ours, peer) = pair();
    let control = Arc::new(Control::new(ours));
    let (_segment, memfd) =
        Segment::create_sealed(&[ChannelConfig::new("flood").capacity(4096)]).unwrap();
    // Request 0 sent and given up: answers to it are dropped, not fatal.
    let id = control.send_open(&memfd, 0).unwrap();
    let _ = control.wait_answer(id, Some(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let peer = Arc::new(peer);
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let (peer, stop) = (Arc::clone(&peer), Arc::clone(&stop));
            std::thread::spawn(move || {
                // Relaxed: a stop flag; nothing else is published with it.
                while !stop.load(Ordering::Relaxed) {
                    raw_send(&peer, &Message::OpenAccepted { id }.encode());
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let r = control.wait(Some(Instant::now() + Duration::from_millis(20)), |_| {
        None::<()>
    });
    let took = start.elapsed();
    // Relaxed: as above.
    stop.store(true, Ordering::Relaxed);
    // Our end closes: a flooder blocked on a full socket gets EPIPE.
    drop(control);
    for f in floods {
        f.join().unwrap();
    }
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    // Far above the 20 ms asked (a busy 2-core machine), far below "never".
    assert!(took < Duration::from_secs(2), "a 20 ms wait took {took:?}");
}

/// An `open-accepted` for a segment the peer never claimed is refused:
/// ends on an unclaimed segment would never see the peer's death.
#[test]
fn open_accepted_without_a_claim_is_refused() {
    let (ours, peer) = pair();
    let (segment, _fd) =
        Segment::create_sealed(&[ChannelConfig::new("main").capacity(4096)]).unwrap();
    let cred = PeerCred {
        pid: 1,
        uid: 0,
        gid: 0,
    };
    let conn = ServiceConnection::new(segment, cred, ours, None);
    // The peer answers request 0 (queued before the request is even sent:
    // read once it is in flight) without ever claiming the segment.
    assert_eq!(
        raw_send(&peer, &Message::OpenAccepted { id: 0 }.encode()),
        32
    );
    let r = conn.open_raw_channel(ChannelConfig::new("extra").capacity(4096));
    assert!(
        matches!(r, Err(ServiceError::Protocol { .. })),
        "an unclaimed segment was trusted: {r:?}"
    );
}

/// A peer that claimed with a word the kernel never marks (`NO_SENTINEL`
/// here) is still seen dead, through the pidfd taken at connect: its
/// channel ends report `Disconnected` and its slot frees.
#[test]
fn a_peer_without_a_sentinel_is_seen_dead() {
    let (ours, _peer) = pair();
    let (segment, _fd) =
        Segment::create_sealed(&[ChannelConfig::new("main").capacity(4096)]).unwrap();
    // The "client": a process we can kill, which claims with NO_SENTINEL.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    segment.fake_claim(NO_SENTINEL);
    assert!(segment.is_claimed());
    let pidfd = crate::sys::process::pidfd_open(child.id()).unwrap();
    let cred = PeerCred {
        pid: child.id() as i32,
        uid: 0,
        gid: 0,
    };
    let slot = segment.slot_watch();
    let conn = ServiceConnection::new(segment, cred, ours, Some(pidfd));
    let (_tx, mut rx) = conn.raw_channel("main").unwrap();
    assert!(!slot.released());
    child.kill().unwrap();
    child.wait().unwrap();
    let r = rx.recv_timeout(Duration::from_secs(5)).map(|m| m.to_vec());
    assert!(
        matches!(r, Err(crate::RecvError::Disconnected)),
        "the dead peer was not seen: {r:?}"
    );
    assert!(slot.released(), "the dead peer's slot is still held");
}
