//! What every channel end of one FIFO set shares: the directory (parent
//! side, until it is gone) and the watch on the peer process.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::dir;
use crate::link::PeerWatch;
use crate::sys::clock::MonoTime;
use crate::sys::fifo;

/// Shortest interval between two liveness checks made by polling calls
/// (the same rate as a segment's).
const POLL_PERIOD: Duration = Duration::from_millis(10);

/// The directory is still there.
const PRESENT: u8 = 0;
/// We removed it (the child can no longer attach).
const REMOVED: u8 = 1;
/// The child removed it after opening all its ends: attached.
const ATTACHED: u8 = 2;

/// The parent's handle on the FIFO directory.
#[derive(Debug)]
pub(super) struct DirHandle {
    pub(super) path: CString,
    pub(super) fd: OwnedFd,
    /// Channels declared, to know which names to remove.
    pub(super) channels: usize,
}

/// Shared state behind a FIFO set's channel ends (an `Arc` in each).
#[derive(Debug)]
pub(crate) struct FifoLink {
    /// Parent side only.
    dir: Option<DirHandle>,
    /// [`PRESENT`], [`REMOVED`] or [`ATTACHED`].
    dir_state: AtomicU8,
    /// Serialises our removal of the directory.
    removing: Mutex<()>,
    peer: OnceLock<PeerWatch>,
    /// Latched once the peer is seen dead.
    peer_dead: AtomicBool,
    /// When [`FifoLink::poll_peer_gone`] last asked the kernel (ns).
    last_poll: AtomicU64,
}

impl FifoLink {
    /// The parent's link, owning directory `dir`.
    pub(super) fn parent(dir: DirHandle) -> FifoLink {
        FifoLink {
            dir: Some(dir),
            dir_state: AtomicU8::new(PRESENT),
            removing: Mutex::new(()),
            peer: OnceLock::new(),
            peer_dead: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
        }
    }

    /// The child's link (the child removed the directory at connect).
    pub(super) fn child(watch: PeerWatch) -> FifoLink {
        let link = FifoLink {
            dir: None,
            dir_state: AtomicU8::new(ATTACHED),
            removing: Mutex::new(()),
            peer: OnceLock::new(),
            peer_dead: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
        };
        link.watch(watch);
        link
    }

    /// Starts watching the peer process (first call wins).
    pub(super) fn watch(&self, watch: PeerWatch) {
        let _ = self.peer.set(watch);
    }

    /// Whether the parent's placeholder descriptors may go: the child has
    /// attached (it removes the directory only after opening every FIFO), or
    /// can no longer attach (we removed it). Costs an `access` call while
    /// the directory is there; free afterwards.
    pub(super) fn settled(&self) -> bool {
        // Acquire: pairs with the Release stores below.
        if self.dir_state.load(Ordering::Acquire) != PRESENT {
            return true;
        }
        let Some(dir) = &self.dir else {
            return true;
        };
        if fifo::exists(&dir.path) {
            return false;
        }
        // Only the child removes the directory besides us, and we mark our
        // own removal before starting it: gone while PRESENT means attached.
        let _ =
            self.dir_state
                .compare_exchange(PRESENT, ATTACHED, Ordering::AcqRel, Ordering::Acquire);
        true
    }

    /// Whether the child has attached (finished `connect`).
    pub(super) fn is_attached(&self) -> bool {
        self.settled();
        self.dir_state.load(Ordering::Acquire) == ATTACHED
    }

    /// Parent side: removes the directory and everything in it, unless the
    /// child already did. Idempotent; afterwards no child can attach.
    pub(super) fn remove_dir(&self) {
        let Some(dir) = &self.dir else { return };
        let _guard = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        if self.dir_state.load(Ordering::Acquire) != PRESENT {
            return;
        }
        let state = if fifo::exists(&dir.path) {
            REMOVED
        } else {
            ATTACHED
        };
        // Release: mark before removing, so `settled` never mistakes our own
        // removal for an attach.
        self.dir_state.store(state, Ordering::Release);
        if state == REMOVED {
            dir::remove(&dir.path, dir.fd.as_fd(), dir.channels);
        }
    }

    /// The directory descriptor (parent side).
    pub(super) fn dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir.as_ref().map(|d| d.fd.as_fd())
    }

    /// The directory path while the parent still owns it.
    pub(super) fn dir_path(&self) -> Option<&CStr> {
        self.dir.as_ref().map(|d| d.path.as_c_str())
    }

    /// Whether the peer is known dead, without a system call.
    #[inline]
    pub(super) fn peer_known_dead(&self) -> bool {
        // Relaxed: a latch; the pipe's own syscalls order the data.
        self.peer_dead.load(Ordering::Relaxed)
    }

    /// For calls about to report `Empty`, `Full` or `Timeout` (the `try_`
    /// forms and short timeouts never reach a wait's liveness check): checks
    /// whether the peer is gone, asking the kernel at most once per
    /// [`POLL_PERIOD`] per FIFO set so busy polling stays cheap.
    pub(super) fn poll_peer_gone(&self) -> bool {
        if self.peer_known_dead() {
            return true;
        }
        let now = MonoTime::now().as_nanos();
        // Relaxed: a rate limiter; two threads checking at once is harmless.
        let last = self.last_poll.load(Ordering::Relaxed);
        if now.saturating_sub(last) < POLL_PERIOD.as_nanos() as u64 {
            return false;
        }
        self.last_poll.store(now, Ordering::Relaxed);
        self.check_peer_gone()
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(super) fn check_peer_gone(&self) -> bool {
        if self.peer_known_dead() {
            return true;
        }
        let gone = self.peer.get().is_some_and(PeerWatch::is_gone);
        if gone {
            self.peer_dead.store(true, Ordering::Relaxed);
            // A dead child can no longer attach: remove the directory now.
            self.remove_dir();
        }
        gone
    }

    /// A descriptor that becomes readable when the peer dies (the child's
    /// pidfd, parent side), to wake waits at once.
    #[inline]
    pub(super) fn peer_fd(&self) -> Option<BorrowedFd<'_>> {
        match self.peer.get() {
            Some(PeerWatch::Child {
                pidfd: Some(fd), ..
            }) => Some(fd.as_fd()),
            _ => None,
        }
    }
}

impl Drop for FifoLink {
    fn drop(&mut self) {
        // Normally done already (by the set's drop, a wait, or the child).
        self.remove_dir();
    }
}
