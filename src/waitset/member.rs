//! One member of a wait set: a cheap probe taken out of a channel end or a
//! child, and the check that decides whether it has an event.
//!
//! The probe never borrows the end: a shared-memory probe holds the
//! segment's `Arc<Attachment>` (which keeps the mapping alive) and a pointer
//! to the ring's control block, which holds only atomics. Everything it
//! reads there the peer can write at any time; a scribbled value can make
//! this member report an event (or a disconnect) it does not have, which the
//! end's own `try_recv` / `try_send` then sorts out, and never anything
//! else: the probe only compares the loaded values.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::attachment::Attachment;
use crate::channel::{RecvEnd, SendEnd};
use crate::layout::RingControl;
use crate::sync::Ordering;
use crate::transport::fifo::FifoWatch;
use crate::transport::shm::ShmWatch;
use crate::{RawReceiver, RawSender, Receiver, Sender};

use super::{EventKind, WatchError};

/// What a member is, and what it reads to decide.
#[derive(Debug)]
pub(super) enum Probe {
    /// A shared-memory receiver: data committed, or the sender gone.
    Recv(ShmWatch),
    /// A shared-memory sender: room in the ring, or the receiver gone.
    Send(ShmWatch),
    /// A spawned child: its pidfd becomes readable when it exits.
    Exit(OwnedFd),
    /// A FIFO receiver: bytes in the pipe or in its buffer, or the stream
    /// ended.
    Fifo(FifoWatch),
}

/// A registered member: its probe and what it reported last.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) probe: Probe,
    /// Index of its segment in the set's segment list (shared memory only).
    pub(super) seg: usize,
    /// `(tail, head)` when this member last reported `Readable`/`Writable`:
    /// a member is reported again only once one of them moved (new data,
    /// or the user received/sent), so an event left unhandled does not
    /// make the set spin.
    last: Option<(u64, u64)>,
    /// Its final event (disconnect, exit) was reported: no longer watched.
    pub(super) done: bool,
    /// Armed on its ring's doorbell by the current sleep.
    pub(super) armed: bool,
}

impl Member {
    pub(super) fn new(probe: Probe) -> Member {
        Member {
            probe,
            seg: usize::MAX,
            last: None,
            done: false,
            armed: false,
        }
    }

    /// The segment this member's ring lives in, if any.
    pub(super) fn link(&self) -> Option<&Arc<Attachment>> {
        match &self.probe {
            Probe::Recv(w) | Probe::Send(w) => Some(&w.link),
            Probe::Exit(_) | Probe::Fifo(_) => None,
        }
    }

    /// How many descriptors this member may poll (see [`Member::fds`]).
    pub(super) fn fd_count(&self) -> usize {
        match &self.probe {
            Probe::Exit(_) => 1,
            Probe::Fifo(_) => 2,
            _ => 0,
        }
    }

    /// The descriptors to sleep on (readable = something to look at). A
    /// FIFO member reported and not received from since is not watched at
    /// all: its pipe stays readable, and so does its peer's pidfd once the
    /// child exited; polling either would spin.
    pub(super) fn fds(&self) -> [Option<RawFd>; 2] {
        if self.done {
            return [None, None];
        }
        match &self.probe {
            Probe::Exit(fd) => [Some(fd.as_raw_fd()), None],
            Probe::Fifo(w) => {
                // Relaxed: see `FifoState`.
                let moves = w.state.moves.load(Ordering::Relaxed);
                let ignored = self.last.is_some_and(|(_, m)| m == moves);
                if ignored {
                    // Nothing is reported until the user receives (`check`
                    // answers `None` while bytes are pending), and the set
                    // re-scans FIFO members every SLICE: the peer's
                    // descriptor (a pidfd, readable for good once the child
                    // exited) must not be polled either, or the set spins.
                    return [None, None];
                }
                [w.raw_fd(), w.peer_fd.as_ref().map(AsRawFd::as_raw_fd)]
            }
            _ => [None, None],
        }
    }

    /// The ring's control block (only atomics), kept mapped by `w.link`.
    fn ctrl(w: &ShmWatch) -> &RingControl {
        w.region.ctrl()
    }

    /// Whether this member has an event now. `thorough`: also members that
    /// cost a system call to check (descriptors). `peer_dead`: its
    /// segment's peer is dead (read once per scan and segment, in the
    /// set). Marks final events `done`.
    pub(super) fn check(&mut self, thorough: bool, peer_dead: bool) -> Option<EventKind> {
        if self.done {
            return None;
        }
        match &self.probe {
            Probe::Recv(w) => {
                let c = Self::ctrl(w);
                // Acquire: our receiver's Release store of `head`.
                let head = c.head.load(Ordering::Acquire);
                // A frame is ready exactly when its stamp at the head
                // publishes it, as the receiver's own peek decides; `tail`
                // alone would not do: the producer stores it before the
                // stamp, so a set that reported on `tail` could report (and
                // then never again) a frame its receiver cannot see yet.
                let ready = w.region.is_published(head);
                // Acquire, after the stamp: `tail` was stored before it, so
                // it covers that frame. Only used to tell new data from
                // data already reported.
                let tail = c.tail.load(Ordering::Acquire);
                if ready && fresh(&mut self.last, tail, head) {
                    return Some(EventKind::Readable);
                }
                // Acquire: pairs with our own receiver's Release store when
                // it was dropped or poisoned: it will receive nothing more.
                if c.ends.consumer_closed.load(Ordering::Acquire) != 0 {
                    self.done = true;
                    return Some(EventKind::Disconnected);
                }
                if ready {
                    return None; // reported, not received from since
                }
                // Acquire: the sender's Release store on close.
                if c.ends.producer_closed.load(Ordering::Acquire) != 0 || peer_dead {
                    // After the close flag / death: anything committed
                    // before it is published now. Drain first.
                    if w.region.is_published(head) {
                        None // reported as Readable by the next scan
                    } else {
                        self.done = true;
                        Some(EventKind::Disconnected)
                    }
                } else {
                    None
                }
            }
            Probe::Send(w) => {
                let c = Self::ctrl(w);
                // Acquire: the peer receiver's (or our sender's) close.
                let closed = c.ends.consumer_closed.load(Ordering::Acquire)
                    | c.ends.producer_closed.load(Ordering::Acquire);
                if closed != 0 || peer_dead {
                    self.done = true;
                    return Some(EventKind::Disconnected);
                }
                // Acquire: pairs with the receiver's Release store of
                // `head` (room it handed back); `tail` is our own.
                let head = c.head.load(Ordering::Acquire);
                let tail = c.tail.load(Ordering::Acquire);
                // At least a quarter of the ring free, the blocking
                // sender's refill batch: room worth waking for, counted as
                // the sender does (bytes a skip passed over are free). A
                // scribbled head makes this garbage, which only decides
                // whether to report.
                let cap = w.region.capacity();
                let in_flight = tail.wrapping_sub(w.region.room_base(head));
                let room = cap - in_flight.min(cap) >= cap / 4;
                (room && fresh(&mut self.last, tail, head)).then_some(EventKind::Writable)
            }
            Probe::Exit(fd) => {
                if thorough && crate::sys::process::pidfd_exited(fd) {
                    self.done = true;
                    Some(EventKind::Exited)
                } else {
                    None
                }
            }
            Probe::Fifo(w) => {
                let state = &w.state;
                // Relaxed: see `FifoState`; the receiver sorts out the rest.
                if state.finished.load(Ordering::Relaxed) {
                    self.done = true;
                    return Some(EventKind::Disconnected);
                }
                let moves = state.moves.load(Ordering::Relaxed);
                let Some(pending) = w.pending() else {
                    // The receiver closed (failed or dropped).
                    self.done = true;
                    return Some(EventKind::Disconnected);
                };
                if pending > 0 {
                    fresh(&mut self.last, pending as u64, moves).then_some(EventKind::Readable)
                } else if w.peer_gone(thorough) || (thorough && w.hung_up()) {
                    // No writer left (or the child is dead): whatever it
                    // wrote is in the pipe now.
                    if w.pending().is_some_and(|p| p > 0) {
                        None // reported as Readable by the next scan
                    } else {
                        self.done = true;
                        Some(EventKind::Disconnected)
                    }
                } else {
                    None
                }
            }
        }
    }

    /// Announces the set on this member's doorbell (see
    /// `doorbell::AggregateBell`); the caller fences after arming all.
    pub(super) fn arm(&mut self) {
        if self.done || self.armed {
            return;
        }
        match &self.probe {
            Probe::Recv(w) => Self::ctrl(w).data_bell.arm(),
            Probe::Send(w) => Self::ctrl(w).space_bell.arm(),
            Probe::Exit(_) | Probe::Fifo(_) => return,
        }
        self.armed = true;
    }

    /// Undoes [`Member::arm`].
    pub(super) fn disarm(&mut self) {
        if !std::mem::take(&mut self.armed) {
            return;
        }
        match &self.probe {
            Probe::Recv(w) => Self::ctrl(w).data_bell.disarm(),
            Probe::Send(w) => Self::ctrl(w).space_bell.disarm(),
            Probe::Exit(_) | Probe::Fifo(_) => {}
        }
    }
}

/// Whether `(tail, head)` differs from `last`, what was last reported;
/// records it if so.
fn fresh(last: &mut Option<(u64, u64)>, tail: u64, head: u64) -> bool {
    if *last == Some((tail, head)) {
        return false;
    }
    *last = Some((tail, head));
    true
}

impl Drop for Member {
    fn drop(&mut self) {
        self.disarm();
    }
}

// SAFETY: the control-block pointer is only dereferenced to reach atomics
// and stays valid while the `Arc<Attachment>` next to it lives, on any
// thread; the rest is `Send` already.
unsafe impl Send for Member {}

mod sealed {
    pub trait Sealed {}
}

/// What can join a [`WaitSet`](super::WaitSet): every channel end
/// ([`Receiver`], [`RawReceiver`]: a message to receive; [`Sender`],
/// [`RawSender`]: room to send) and a spawned [`Child`](crate::Child) (its
/// exit). Sealed: implemented by remora's types only.
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// let (tx, rx) = parent.raw_channel("c")?;
/// let mut set = remora::WaitSet::new();
/// set.add(&rx)?; // a RawReceiver is Watchable
/// set.add(&tx)?; // so is a RawSender
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Watchable: sealed::Sealed {
    /// The probe the set keeps.
    #[doc(hidden)]
    fn probe(&self) -> Result<ProbeOf, WatchError>;
}

/// A probe, opaque outside remora.
#[doc(hidden)]
#[derive(Debug)]
pub struct ProbeOf(pub(super) Probe);

impl sealed::Sealed for RawReceiver {}
impl Watchable for RawReceiver {
    fn probe(&self) -> Result<ProbeOf, WatchError> {
        match self.end() {
            RecvEnd::Shm(rx) => Ok(ProbeOf(Probe::Recv(rx.watch()))),
            RecvEnd::Fifo(rx) => match rx.watch().map_err(WatchError::Io)? {
                Some(watch) => Ok(ProbeOf(Probe::Fifo(watch))),
                // Closed after failing for good: nothing to watch.
                None => Err(WatchError::Unsupported),
            },
        }
    }
}

impl<T> sealed::Sealed for Receiver<T> {}
impl<T: crate::Decode> Watchable for Receiver<T> {
    fn probe(&self) -> Result<ProbeOf, WatchError> {
        self.raw().probe()
    }
}

impl sealed::Sealed for RawSender {}
impl Watchable for RawSender {
    fn probe(&self) -> Result<ProbeOf, WatchError> {
        match self.end() {
            SendEnd::Shm(tx) => Ok(ProbeOf(Probe::Send(tx.watch()))),
            SendEnd::Fifo(_) => Err(WatchError::Unsupported),
        }
    }
}

impl<T> sealed::Sealed for Sender<T> {}
impl<T: crate::Encode> Watchable for Sender<T> {
    fn probe(&self) -> Result<ProbeOf, WatchError> {
        self.raw().probe()
    }
}

impl sealed::Sealed for crate::Child {}
impl Watchable for crate::Child {
    fn probe(&self) -> Result<ProbeOf, WatchError> {
        let fd = self.pidfd().ok_or(WatchError::Unsupported)?;
        let fd = fd.try_clone_to_owned().map_err(WatchError::Io)?;
        Ok(ProbeOf(Probe::Exit(fd)))
    }
}
