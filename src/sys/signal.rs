//! Keeping SIGPIPE from killing the process while writing to a pipe.
//!
//! `write(2)` to a pipe whose readers are all gone fails with `EPIPE` *and*
//! raises SIGPIPE, whose default action terminates the process. Rust
//! binaries ignore SIGPIPE by default, but a library cannot rely on that
//! (a C host, a `#[unix_sigpipe]` binary, or a user handler may change it).
//!
//! [`SigpipeBlock`] blocks SIGPIPE in the calling thread for the duration of
//! a frame write. A write that fails with `EPIPE` leaves the signal pending
//! on this thread (it is thread-directed); [`SigpipeBlock::discard`]
//! consumes it with a zero-timeout `sigtimedwait` before the old mask is
//! restored, so it is never delivered. If the thread already had SIGPIPE
//! blocked, the mask is left alone and a SIGPIPE that was pending before the
//! write is never consumed (it is not ours). Other threads, and the process
//! disposition, are never touched. Cost: two `rt_sigprocmask` calls per
//! frame.

/// SIGPIPE blocked in this thread until dropped.
pub(crate) struct SigpipeBlock {
    /// The mask to restore, if we changed it.
    restore: Option<libc::sigset_t>,
    /// A SIGPIPE was already pending (the thread had it blocked): leave it.
    pending_before: bool,
}

fn sigpipe_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset and
    // sigaddset initialise it (they cannot fail for a valid signal).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    }
}

fn sigpipe_pending() -> bool {
    // SAFETY: an all-zero sigset_t is valid storage for sigpending to fill.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `pending` is writable; sigismember reads an initialised set.
    unsafe {
        libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1
    }
}

impl SigpipeBlock {
    /// Blocks SIGPIPE in the calling thread.
    #[inline]
    pub(crate) fn new() -> SigpipeBlock {
        let set = sigpipe_set();
        // SAFETY: an all-zero sigset_t is valid storage for the old mask.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid; SIG_BLOCK only adds SIGPIPE to this
        // thread's mask.
        let ok = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) } == 0;
        // SAFETY: `old` was filled by pthread_sigmask when `ok`.
        let was_blocked = ok && unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 1;
        SigpipeBlock {
            restore: (ok && !was_blocked).then_some(old),
            pending_before: was_blocked && sigpipe_pending(),
        }
    }

    /// Consumes the SIGPIPE a write that failed with `EPIPE` just raised
    /// (unless one was pending before we started: that one is not ours).
    pub(crate) fn discard(&mut self) {
        if self.pending_before {
            return;
        }
        let set = sigpipe_set();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timeout; a null info pointer is allowed.
        // With SIGPIPE blocked, the pending one is dequeued here instead of
        // being delivered (a blocked signal stays pending even when its
        // disposition is SIG_IGN); EAGAIN, none pending, is fine too.
        unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
    }
}

impl Drop for SigpipeBlock {
    #[inline]
    fn drop(&mut self) {
        if let Some(old) = &self.restore {
            // SAFETY: `old` is the mask pthread_sigmask returned earlier.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
        }
    }
}
