//! Keeping SIGPIPE from killing the process while writing to a pipe.
//!
//! A `write` to a pipe without readers fails with `EPIPE` *and* raises
//! SIGPIPE, which kills by default; a library cannot count on it being
//! ignored. [`SigpipeBlock`] blocks it in the calling thread for a frame
//! write; after `EPIPE`, [`SigpipeBlock::discard`] consumes the (thread-
//! directed) pending signal with a zero-timeout `sigtimedwait` before the
//! mask is restored. A thread that already blocked SIGPIPE keeps its mask,
//! and a SIGPIPE pending before the write is not ours to consume. Other
//! threads and the disposition are never touched.

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

impl SigpipeBlock {
    #[inline]
    pub(crate) fn new() -> SigpipeBlock {
        let set = sigpipe_set();
        // SAFETY: an all-zero sigset_t is valid storage for the old mask.
        let (mut old, mut pending): (libc::sigset_t, libc::sigset_t) =
            unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid; SIG_BLOCK only adds SIGPIPE to this
        // thread's mask.
        let ok = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) } == 0;
        // SAFETY: `old` was filled by pthread_sigmask when `ok`.
        let was_blocked = ok && unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 1;
        // SAFETY: `pending` is writable; sigismember reads an initialised set.
        let pending_before = was_blocked
            && unsafe {
                libc::sigpending(&mut pending) == 0
                    && libc::sigismember(&pending, libc::SIGPIPE) == 1
            };
        SigpipeBlock {
            restore: (ok && !was_blocked).then_some(old),
            pending_before,
        }
    }

    /// Consumes the SIGPIPE a write that failed with `EPIPE` just raised.
    pub(crate) fn discard(&mut self) {
        if !self.pending_before {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid set and timeout; a null info pointer is allowed.
            // SIGPIPE is blocked, so a pending one is dequeued here, never
            // delivered; EAGAIN (none pending) is fine too.
            unsafe { libc::sigtimedwait(&sigpipe_set(), std::ptr::null_mut(), &zero) };
        }
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
