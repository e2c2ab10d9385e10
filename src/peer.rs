//! The slow, descriptor-based half of peer liveness, and the dead latch.
//!
//! The fast half is the peer's robust liveness word in the segment (see
//! `sys::robust`, read by `attachment.rs`): the kernel marks it when the peer dies.
//! What is here covers what that word cannot: a spawned child that dies
//! before it attached (its word was never written), and the FIFO transport
//! (no shared memory; the pipes' own hang-up covers an attached peer). The
//! parent watches its child through a pidfd. Nothing here asks `getppid()`:
//! a parent is not "dead" because a wrapper (`sh -c`, `timeout`, `sudo`, a
//! PID namespace) stands between it and its child.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys::clock::MonoTime;
use crate::sys::process;

/// Shortest interval between two liveness checks made by polling calls.
const POLL_PERIOD: Duration = Duration::from_millis(10);

/// What to watch: the parent watches its child, a service connection its
/// peer, through a pidfd (readable on exit).
#[derive(Debug)]
pub(crate) enum PeerWatch {
    /// A spawned child.
    Child {
        /// `None` on kernels without `pidfd_open`: then `waitid(WNOWAIT)`.
        pidfd: Option<OwnedFd>,
        pid: u32,
    },
    /// An unrelated process (a service's peer), through a pidfd taken
    /// while its socket was connected. Only ever a fallback: an attached
    /// peer's liveness word is seen first, but a peer that claimed with a
    /// word the kernel never marks (a fake value, `NO_SENTINEL`) is seen
    /// dead only through this.
    Process { pidfd: OwnedFd },
}

impl PeerWatch {
    /// Watches child `pid`.
    pub(crate) fn child(pid: u32) -> PeerWatch {
        PeerWatch::Child {
            pidfd: process::pidfd_open(pid).ok(),
            pid,
        }
    }

    /// Whether the watched process is gone (may make a system call).
    fn is_gone(&self) -> bool {
        match self {
            PeerWatch::Child {
                pidfd: Some(fd), ..
            } => process::pidfd_exited(fd),
            PeerWatch::Child { pidfd: None, pid } => process::child_exited(*pid),
            PeerWatch::Process { pidfd } => process::pidfd_exited(pidfd),
        }
    }
}

/// The peer's liveness as one side's channel ends see it.
#[derive(Debug, Default)]
pub(crate) struct Peer {
    /// Set once the peer process is known (after spawn / at connect); until
    /// then only clean closes (dropped ends) are seen.
    watch: OnceLock<PeerWatch>,
    /// Latched once the peer is seen dead, so later calls skip the check.
    dead: AtomicBool,
    /// When [`Peer::poll_gone`] last asked the kernel (monotonic ns).
    last_poll: AtomicU64,
}

impl Peer {
    /// Starts watching the peer process (first call wins).
    pub(crate) fn watch(&self, watch: PeerWatch) {
        let _ = self.watch.set(watch);
    }

    /// Whether the peer is known dead, without a system call.
    #[inline]
    pub(crate) fn known_dead(&self) -> bool {
        // Acquire: pairs with the AcqRel swap in `latch`. A thread that sees
        // the latch another thread set (after that one saw the death with an
        // Acquire load of the peer's word) also sees what the dead peer
        // published before dying, so its final drain of the ring misses no
        // committed frame, on weakly ordered CPUs too.
        self.dead.load(Ordering::Acquire)
    }

    /// Checks whether the peer is gone (may make a system call). Runs
    /// `on_death` once, when the death is first seen.
    pub(crate) fn check_gone(&self, on_death: impl FnOnce()) -> bool {
        if self.known_dead() {
            return true;
        }
        let gone = self.watch.get().is_some_and(PeerWatch::is_gone);
        if gone {
            self.latch(on_death);
        }
        gone
    }

    /// Records that the peer is dead (seen by any means). Runs `on_death`
    /// once, for the first caller.
    pub(crate) fn latch(&self, on_death: impl FnOnce()) {
        // AcqRel: exactly one caller runs `on_death`; Release publishes what
        // this thread saw of the dead peer to `known_dead`'s Acquire.
        if !self.dead.swap(true, Ordering::AcqRel) {
            on_death();
        }
    }

    /// [`Peer::check_gone`] for calls about to report `Empty`, `Full` or
    /// `Timeout` (the `try_` forms and short timeouts never reach a wait's
    /// liveness check): asks the kernel at most once per [`POLL_PERIOD`], so
    /// busy polling stays cheap.
    pub(crate) fn poll_gone(&self, on_death: impl FnOnce()) -> bool {
        if self.known_dead() {
            return true;
        }
        let now = MonoTime::now().as_nanos();
        // Relaxed: a rate limiter; two threads checking at once is harmless.
        let last = self.last_poll.load(Ordering::Relaxed);
        if now.saturating_sub(last) < POLL_PERIOD.as_nanos() as u64 {
            return false;
        }
        self.last_poll.store(now, Ordering::Relaxed);
        self.check_gone(on_death)
    }

    /// A descriptor that becomes readable when the peer dies (the child's
    /// pidfd, parent side), for waits that can poll it.
    pub(crate) fn death_fd(&self) -> Option<BorrowedFd<'_>> {
        match self.watch.get() {
            Some(PeerWatch::Child {
                pidfd: Some(fd), ..
            })
            | Some(PeerWatch::Process { pidfd: fd }) => Some(fd.as_fd()),
            _ => None,
        }
    }
}
