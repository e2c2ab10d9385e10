//! Creator locks: how a stale-object sweep tells a live creator from a dead
//! one without trusting pids.
//!
//! The creator of a named segment holds an exclusive `flock` on
//! it for as long as it owns it; the kernel drops the lock when the last
//! descriptor closes, i.e. when the creator dies. A sweep that *gets* the lock
//! knows the creator is gone. Unlike `kill(pid, 0)`, this cannot be fooled by
//! a PID namespace (where another namespace's pid means nothing) or by pid
//! reuse.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::retry_eintr;

/// Takes an exclusive lock on `fd`, without waiting. `Ok(false)` when
/// another open file description holds it.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock on a valid descriptor; no pointers involved.
    match retry_eintr(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}
