//! Shared (non-private) futex wait and wake.
//!
//! The waker is in another process, so these calls must **not** use
//! `FUTEX_PRIVATE_FLAG` (std's own futex code does; do not copy that part).
//! Waits use `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline,
//! so a retry after `EINTR` keeps the original deadline instead of drifting.

// Under `--cfg loom` the doorbell uses a modelled futex instead.
#![cfg_attr(loom, allow(dead_code))]

use std::sync::atomic::AtomicU32;

use super::clock::MonoTime;

/// Why [`wait`] returned. Callers re-check their condition in every case.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, the word no longer held `expected`, or a spurious wake-up.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or until `deadline`.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: MonoTime) -> Wake {
    let ts = deadline.to_timespec();
    loop {
        // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
        // `ts` outlives it; the other pointer arguments are unused by
        // FUTEX_WAIT_BITSET (uaddr2 is null, val3 is the match-any bitset).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if ret == 0 {
            return Wake::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ETIMEDOUT) => return Wake::TimedOut,
            // The absolute deadline makes retrying after a signal exact.
            Some(libc::EINTR) => continue,
            // EAGAIN: the word already changed. Anything else (EFAULT cannot
            // happen for a live mapping) is treated as a spurious wake-up:
            // the caller re-checks its condition and its deadline.
            _ => return Wake::Woken,
        }
    }
}

/// Wakes every waiter sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads the
    // address as a key and ignores the remaining arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
