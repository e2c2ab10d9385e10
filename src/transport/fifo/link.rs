//! What the channel ends of one FIFO set share (the parent's hand-over
//! and the watch on the child), one pipe end as a channel end holds it,
//! and how a blocked call waits on it.
//!
//! The parent keeps a copy of each of the child's ends until the child has
//! claimed them, for a child whose wrapper closed the control socket that
//! carries them (it opens them as `/proc/<parent>/fd/<n>`). While kept,
//! they hide the child's hang-up: until then only the watch on the child
//! (its pidfd) reports its death. They go once the claim pipe is empty
//! (the child took every end, or gave up), once the child is seen dead or
//! reaped, or with the `Child` and the last end.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::peer::{Peer, PeerWatch};
use crate::sys::clock::MonoTime;
use crate::sys::{pipe, socket};
use crate::wait::{self, Liveness, PeerSleep, Sleep, WaitStrategy, Waited};

/// The parent's side of the hand-over, until settled.
#[derive(Debug)]
pub(super) struct Handover {
    /// Our copies of the child's ends, in hand-over order: the claim
    /// pipe's read end (empty once claimed), per channel the child's two.
    pub(super) kept: Vec<OwnedFd>,
    /// A copy of the child's end of the control socketpair, whose queue
    /// holds the hand-over message until the child reads it. A child that
    /// took its ends through `/proc` never does (a wrapper closed the
    /// socket for it alone, like Python's `subprocess` with `close_fds`,
    /// and keeps its own copy): the message's descriptors would stay in
    /// flight as long as that copy lives and keep the pipes open. Drained
    /// once settled.
    pub(super) queue: Option<OwnedFd>,
}

/// Shared state behind a FIFO set's channel ends (an `Arc` in each).
#[derive(Debug)]
pub(crate) struct FifoLink {
    handover: Mutex<Option<Handover>>,
    /// The hand-over is over (claimed, or can no longer be). It only
    /// saves taking the lock, which orders the hand-over itself; Release /
    /// Acquire so that a thread that sees it also sees `attached`.
    settled: AtomicBool,
    /// Written (Relaxed) before `settled` is released, never after.
    attached: AtomicBool,
    peer: Peer,
}

/// Reads and drops what waits on the child's socketpair end `queue`: the
/// hand-over message, if the child never read it (it claimed through
/// `/proc`, or can no longer claim). Nothing else is sent there before
/// the child's hello moves the control channel to a socket of its own.
fn drain(queue: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    // Bounded: one message is queued; a few reads are plenty.
    for _ in 0..4 {
        match socket::recv_fds(queue, &mut buf, socket::MAX_HANDED_FDS) {
            // Dropping `got` closes the descriptors it carried.
            Ok(got) if got.len > 0 || !got.fds.is_empty() => {}
            _ => return,
        }
    }
}

impl FifoLink {
    /// `None`: the child's side, attached by construction.
    pub(super) fn new(handover: Option<Handover>) -> FifoLink {
        let child = handover.is_none();
        FifoLink {
            handover: Mutex::new(handover),
            settled: AtomicBool::new(child),
            attached: AtomicBool::new(child),
            peer: Peer::default(),
        }
    }

    pub(super) fn watch(&self, watch: PeerWatch) {
        self.peer.watch(watch);
    }

    /// Drops the kept copies if the child has claimed. Free once settled.
    #[inline]
    pub(super) fn settle(&self) {
        // Acquire: pairs with the Release store in `settle_slow`.
        if !self.settled.load(Ordering::Acquire) {
            self.settle_slow(false);
        }
    }

    /// Drops the kept copies: the child has claimed, or (`give_up`) can no
    /// longer (it is dead), or whatever it does now does not matter.
    fn settle_slow(&self, give_up: bool) {
        let mut handover = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = handover.as_ref() else {
            return;
        };
        // Only a pipe seen empty is claimed (a failed `FIONREAD` is not).
        if pipe::queued_checked(h.kept[0].as_fd()) == Some(0) {
            // Relaxed: published by the Release store of `settled` below.
            self.attached.store(true, Ordering::Relaxed);
        } else if !give_up {
            return;
        }
        if let Some(queue) = &h.queue {
            drain(queue.as_fd());
        }
        *handover = None;
        // Release: publishes `attached` to `settle`'s Acquire.
        self.settled.store(true, Ordering::Release);
    }

    /// Parent side: `f` over our copies of the child's ends, while kept.
    pub(super) fn with_kept<R>(&self, f: impl FnOnce(&[OwnedFd]) -> R) -> Option<R> {
        let handover = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        handover.as_ref().map(|h| f(&h.kept))
    }

    /// Parent side: keeps `queue` (see `Handover::queue`) until settled.
    pub(super) fn keep_queue(&self, queue: OwnedFd) {
        let mut handover = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = handover.as_mut() {
            h.queue = Some(queue);
        }
    }

    /// Parent side, once the child is gone: no child can attach any more.
    pub(super) fn give_up(&self) {
        self.settle_slow(true);
    }

    pub(super) fn is_attached(&self) -> bool {
        self.settle();
        // Relaxed: `settle` acquired `settled`, stored after this.
        self.attached.load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn peer_known_dead(&self) -> bool {
        self.peer.known_dead()
    }

    /// Rate-limited liveness check for calls about to report `Empty`,
    /// `Full` or `Timeout`.
    pub(super) fn poll_peer_gone(&self) -> bool {
        self.peer.poll_gone(|| self.give_up())
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(super) fn check_peer_gone(&self) -> bool {
        self.peer.check_gone(|| self.give_up())
    }

    /// Readable when the peer dies (the child's pidfd, parent side).
    #[inline]
    pub(super) fn peer_fd(&self) -> Option<BorrowedFd<'_>> {
        self.peer.death_fd()
    }
}

/// A pipe end held by a channel end.
#[derive(Debug)]
pub(super) struct FifoEnd {
    /// `None` once closed early (a receiver that failed for good).
    fd: Option<OwnedFd>,
    pub(super) link: Arc<FifoLink>,
}

impl FifoEnd {
    pub(super) fn new(fd: OwnedFd, link: Arc<FifoLink>) -> FifoEnd {
        FifoEnd { fd: Some(fd), link }
    }

    #[inline]
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Closes this end early, so the peer's writes fail with `EPIPE`
    /// instead of filling the pipe.
    pub(super) fn close(&mut self) {
        self.fd = None;
    }

    /// Bytes in the pipe (`FIONREAD`; the reader may hold more in its own
    /// buffer).
    pub(super) fn queued(&self) -> usize {
        self.fd().map_or(0, pipe::queued)
    }

    /// Whether the pipe holds at least its buffer size. (`POLLOUT` would
    /// call a pipe with no free page full while its last page still takes
    /// small writes; partly used pages can refuse a write earlier.)
    pub(super) fn is_full(&self) -> bool {
        (self.fd()).is_some_and(|fd| pipe::queued(fd) >= pipe::pipe_size(fd))
    }

    /// Whether the other side is gone: this end closed, the peer's death
    /// seen, `events` reporting `hang_up` (`POLLHUP` for a reader: no
    /// writer left; `POLLERR` for a writer: no reader; the parent's kept
    /// copy counts as one until settled), or the child found dead.
    pub(super) fn hung_up(&self, events: i16, hang_up: i16) -> bool {
        let Some(fd) = self.fd() else {
            return true;
        };
        self.link.peer_known_dead()
            || pipe::revents(fd, events) & hang_up != 0
            || self.link.poll_peer_gone()
    }
}

impl Liveness for FifoLink {
    fn dead_now(&self) -> bool {
        self.peer_known_dead()
    }

    /// Settles the hand-over too: once the kept copies go, the pipes
    /// themselves report the child's hang-up.
    fn dead_checked(&self) -> bool {
        self.settle();
        self.check_peer_gone()
    }

    /// The child's pidfd is polled beside the pipe instead (`PipeSleep`).
    fn prepare_sleep(&self) -> PeerSleep<'_> {
        PeerSleep::Unwatched
    }
}

/// A blocked call's sleep on a pipe end: `ppoll` for `events`
/// (`POLLIN`/`POLLOUT`) and the child's pidfd (parent side).
pub(super) struct PipeSleep<'a>(pub(super) &'a FifoEnd, pub(super) i16);

impl Sleep for PipeSleep<'_> {
    /// A poll here is a `poll(2)`, about as long as a clock read.
    const POLLS_PER_CLOCK_READ: u32 = 1;

    fn sleep_once(
        &self,
        _deadline: MonoTime,
        until: MonoTime,
        _ready: &mut impl FnMut() -> bool,
        peer: &impl Liveness,
    ) -> bool {
        let PipeSleep(end, events) = *self;
        // A closed end has nothing to wait for: the retry reports it.
        let Some(fd) = end.fd() else {
            return true;
        };
        pipe::poll(fd, events, end.link.peer_fd(), until) && peer.dead_checked()
    }
}

impl FifoEnd {
    /// Waits per `strategy` until `events` or the peer's death (then
    /// `Ready`: the caller retries its I/O, which reports either), or the
    /// deadline.
    pub(super) fn wait(&self, events: i16, strategy: WaitStrategy, deadline: MonoTime) -> Waited {
        let ready = || self.fd().is_none_or(|fd| pipe::revents(fd, events) != 0);
        wait::wait_on(
            strategy,
            &PipeSleep(self, events),
            deadline,
            ready,
            &*self.link,
        )
    }
}
