//! What the channel ends of one FIFO set share (the parent's directory and
//! the watch on the child), and one FIFO end as a channel end holds it.
//!
//! The parent opens each FIFO `O_RDWR` before the child exists (a
//! *placeholder*, reader and writer at once, so no open blocks and its
//! writes are buffered). It must go once the child has opened its ends, or
//! EOF and `EPIPE` would never come: the child removes the directory only
//! after opening every FIFO, so "directory gone" is the signal. If the
//! parent removed it (child dead, `Child` dropped), no child can attach any
//! more and the placeholders go as well.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use crate::peer::{Peer, PeerWatch};
use crate::sys::clock::MonoTime;
use crate::sys::{fd, fifo};
use crate::wait::{ADAPTIVE_SPIN, SLICE, WaitStrategy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirState {
    Present,
    /// We removed it: no child can attach.
    Removed,
    /// The child removed it after opening its ends.
    Attached,
}

/// Shared state behind a FIFO set's channel ends (an `Arc` in each).
#[derive(Debug)]
pub(crate) struct FifoLink {
    /// Parent side: the directory's path and locked descriptor (the lock
    /// keeps the stale sweep away while we live).
    dir: Option<(CString, OwnedFd)>,
    state: Mutex<DirState>,
    peer: Peer,
}

impl FifoLink {
    pub(super) fn new(dir: Option<(CString, OwnedFd)>) -> FifoLink {
        let state = match dir {
            Some(_) => DirState::Present,
            None => DirState::Attached,
        };
        FifoLink {
            dir,
            state: Mutex::new(state),
            peer: Peer::default(),
        }
    }

    pub(super) fn watch(&self, watch: PeerWatch) {
        self.peer.watch(watch);
    }

    /// Updates and returns the state: one `access` call while the
    /// directory is there. Gone while `Present` means the child removed it
    /// (we mark our own removal first).
    fn state(&self, remove: bool) -> DirState {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let (DirState::Present, Some((path, _))) = (*state, &self.dir) {
            if !fifo::exists(path) {
                *state = DirState::Attached;
            } else if remove {
                *state = DirState::Removed;
                let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
                let _ = std::fs::remove_dir_all(path);
            }
        }
        *state
    }

    /// Whether the placeholders may go: attached, or no longer can attach.
    fn settled(&self) -> bool {
        self.state(false) != DirState::Present
    }

    pub(super) fn is_attached(&self) -> bool {
        self.state(false) == DirState::Attached
    }

    /// Parent side: removes the directory unless the child did; afterwards
    /// no child can attach. Idempotent.
    pub(super) fn remove_dir(&self) {
        self.state(true);
    }

    pub(super) fn dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir.as_ref().map(|(_, fd)| fd.as_fd())
    }

    #[inline]
    pub(super) fn peer_known_dead(&self) -> bool {
        self.peer.known_dead()
    }

    /// Rate-limited liveness check for calls about to report `Empty`,
    /// `Full` or `Timeout`. A dead child can no longer attach.
    pub(super) fn poll_peer_gone(&self) -> bool {
        self.peer.poll_gone(|| self.remove_dir())
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(super) fn check_peer_gone(&self) -> bool {
        self.peer.check_gone(|| self.remove_dir())
    }

    /// Readable when the peer dies (the child's pidfd, parent side).
    #[inline]
    pub(super) fn peer_fd(&self) -> Option<BorrowedFd<'_>> {
        self.peer.death_fd()
    }
}

impl Drop for FifoLink {
    fn drop(&mut self) {
        self.remove_dir();
    }
}

/// A FIFO end held by a channel end.
#[derive(Debug)]
pub(super) struct FifoEnd {
    /// `None` once closed early (a receiver that failed for good).
    fd: Option<OwnedFd>,
    /// Parent side, until settled: see the module docs.
    placeholder: Option<OwnedFd>,
    pub(super) link: Arc<FifoLink>,
}

impl FifoEnd {
    pub(super) fn new(fd: OwnedFd, placeholder: Option<OwnedFd>, link: Arc<FifoLink>) -> FifoEnd {
        FifoEnd {
            fd: Some(fd),
            placeholder,
            link,
        }
    }

    #[inline]
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Closes this end early, so the peer's writes fail with `EPIPE`
    /// instead of filling the pipe.
    pub(super) fn close(&mut self) {
        self.fd = None;
        self.placeholder = None;
    }

    /// Drops the placeholder once settled. Free once done.
    #[inline]
    pub(super) fn drop_placeholder_once_settled(&mut self) {
        if self.placeholder.is_some() && self.link.settled() {
            self.placeholder = None;
        }
    }
}

/// How a blocked call goes on after [`Waiter::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Try the I/O again.
    Retry,
    TimedOut,
    PeerGone,
}

/// One blocked call's wait on a non-blocking pipe end. `Spin` polls
/// readiness (a zero-timeout `poll`: unlike a `read`, it does not take the
/// pipe's lock); `Adaptive` does so for [`ADAPTIVE_SPIN`], yielding between
/// checks, then sleeps in `ppoll` like `Block`. A sleep ends on readiness,
/// the child's pidfd, the deadline, or after one [`SLICE`]; each slice
/// checks the peer and settles the placeholder.
#[derive(Debug)]
pub(super) struct Waiter {
    deadline: MonoTime,
    spin_until: MonoTime,
    yield_between: bool,
    next_check: MonoTime,
}

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, deadline: MonoTime) -> Waiter {
        let spin_until = match strategy {
            WaitStrategy::Spin => MonoTime::NEVER,
            WaitStrategy::Adaptive => MonoTime::after(ADAPTIVE_SPIN),
            WaitStrategy::Block => MonoTime::now(),
        };
        Waiter {
            deadline,
            spin_until,
            yield_between: strategy == WaitStrategy::Adaptive,
            next_check: MonoTime::after(SLICE),
        }
    }

    /// Waits for `events` (`POLLIN`/`POLLOUT`) on `pipe` as the strategy says.
    pub(super) fn wait(&mut self, pipe: &mut FifoEnd, events: i16) -> Outcome {
        loop {
            let now = MonoTime::now();
            if now >= self.deadline {
                return Outcome::TimedOut;
            }
            if now >= self.next_check {
                self.next_check = MonoTime::after(SLICE);
                pipe.drop_placeholder_once_settled();
                if pipe.link.check_peer_gone() {
                    return Outcome::PeerGone;
                }
            }
            // A closed end has nothing to wait for: the retry reports it.
            let Some(own) = pipe.fd() else {
                return Outcome::Retry;
            };
            if now >= self.spin_until {
                let until = self.deadline.min(self.next_check);
                let peer_fd_ready = fd::poll(own, events, pipe.link.peer_fd(), until);
                if peer_fd_ready && pipe.link.check_peer_gone() {
                    return Outcome::PeerGone;
                }
                return Outcome::Retry;
            }
            if fd::revents(own, events) != 0 {
                return Outcome::Retry;
            }
            if self.yield_between {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}
