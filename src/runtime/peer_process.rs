//! [`PeerProcess`]: how one side of a run-time link watches the other
//! process die.
//!
//! The control socket alone cannot tell: another process may hold a copy
//! of the peer's end (a child that started a grandchild before it called
//! `connect()`, which inherited the socket), so the socket never hangs up.
//! The rendezvous, the control socket's waiters and the new segments all
//! watch the process itself.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sys::process;

/// How the peer process is watched.
#[derive(Debug)]
pub(crate) enum PeerProcess {
    /// A pidfd on the peer (readable once it exits).
    Pidfd(OwnedFd),
    /// A spawned child on a kernel without pidfds (`waitid(WNOWAIT)`: it
    /// stays waitable for `Child::wait`; already reaped counts as gone).
    Child(u32),
    /// Nothing to watch (the socket's hang-up and the liveness words
    /// remain).
    Unknown,
}

impl PeerProcess {
    /// Whether the peer is known to have exited (never blocks).
    pub(crate) fn exited(&self) -> bool {
        match self {
            PeerProcess::Pidfd(fd) => process::pidfd_exited(fd),
            PeerProcess::Child(pid) => process::child_exited(*pid),
            PeerProcess::Unknown => false,
        }
    }

    /// A descriptor that becomes readable when the peer exits, to poll
    /// beside a socket (`None`: poll in short slices and ask
    /// [`PeerProcess::exited`]).
    pub(crate) fn poll_fd(&self) -> Option<RawFd> {
        match self {
            PeerProcess::Pidfd(fd) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }

    /// Another watch on the same process (`Unknown` if the pidfd cannot be
    /// duplicated: out of descriptors).
    pub(crate) fn try_clone(&self) -> PeerProcess {
        match self {
            PeerProcess::Pidfd(fd) => fd
                .try_clone()
                .map_or(PeerProcess::Unknown, PeerProcess::Pidfd),
            PeerProcess::Child(pid) => PeerProcess::Child(*pid),
            PeerProcess::Unknown => PeerProcess::Unknown,
        }
    }
}
