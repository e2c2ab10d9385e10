//! What every channel end of one FIFO set shares: the directory (parent
//! side, until it is gone) and the watch on the peer process.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::dir;
use crate::peer::{Peer, PeerWatch};
use crate::sys::fifo;

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
    peer: Peer,
}

impl FifoLink {
    /// The parent's link, owning directory `dir`.
    pub(super) fn parent(dir: DirHandle) -> FifoLink {
        FifoLink {
            dir: Some(dir),
            dir_state: AtomicU8::new(PRESENT),
            removing: Mutex::new(()),
            peer: Peer::default(),
        }
    }

    /// The child's link (the child removed the directory at connect).
    pub(super) fn child() -> FifoLink {
        FifoLink {
            dir: None,
            dir_state: AtomicU8::new(ATTACHED),
            removing: Mutex::new(()),
            peer: Peer::default(),
        }
    }

    /// Starts watching the peer process (first call wins).
    pub(super) fn watch(&self, watch: PeerWatch) {
        self.peer.watch(watch);
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
        // AcqRel/Acquire: pairs with the Release mark in `remove_dir`.
        let _ =
            self.dir_state
                .compare_exchange(PRESENT, ATTACHED, Ordering::AcqRel, Ordering::Acquire);
        true
    }

    /// Whether the child has attached (finished `connect`).
    pub(super) fn is_attached(&self) -> bool {
        self.settled();
        // Acquire: pairs with the Release stores of the state.
        self.dir_state.load(Ordering::Acquire) == ATTACHED
    }

    /// Parent side: removes the directory and everything in it, unless the
    /// child already did. Idempotent; afterwards no child can attach.
    pub(super) fn remove_dir(&self) {
        let Some(dir) = &self.dir else { return };
        let _guard = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        // Acquire: pairs with the Release stores of the state.
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
        self.peer.known_dead()
    }

    /// Rate-limited liveness check for calls about to report `Empty`,
    /// `Full` or `Timeout` (see [`Peer::poll_gone`]).
    pub(super) fn poll_peer_gone(&self) -> bool {
        self.peer.poll_gone(|| self.remove_dir())
    }

    /// Checks whether the peer process is gone (may make a system call). A
    /// dead child can no longer attach: the directory goes at once.
    pub(super) fn check_peer_gone(&self) -> bool {
        self.peer.check_gone(|| self.remove_dir())
    }

    /// A descriptor that becomes readable when the peer dies (the child's
    /// pidfd, parent side), to wake waits at once.
    #[inline]
    pub(super) fn peer_fd(&self) -> Option<BorrowedFd<'_>> {
        self.peer.death_fd()
    }
}

impl Drop for FifoLink {
    fn drop(&mut self) {
        // Normally done already (by the set's drop, a wait, or the child).
        self.remove_dir();
    }
}
