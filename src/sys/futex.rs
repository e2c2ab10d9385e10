//! Shared (non-private) futex wait and wake.
//!
//! The waker is in another process, so these calls must **not** use
//! `FUTEX_PRIVATE_FLAG` (std's own futex code does; do not copy that part).
//! Waits use `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline,
//! so a retry after `EINTR` keeps the original deadline instead of drifting.

// Under `--cfg loom` the doorbell uses a modelled futex instead.
#![cfg_attr(loom, allow(dead_code))]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::clock::MonoTime;

/// Sleeps while `*word == expected`, until woken or until `deadline`.
/// Callers re-check their condition and deadline whatever ended the sleep
/// (a wake-up, a changed word, the deadline, or a spurious return), so
/// nothing is reported.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: MonoTime) {
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
        // The absolute deadline makes retrying after a signal exact. Else
        // (woken, ETIMEDOUT, EAGAIN: the word already changed; anything
        // else, EFAULT cannot happen for a live mapping) the caller
        // re-checks.
        if ret != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return;
    }
}

/// `struct futex_waitv` of the kernel ABI: one word to sleep on and the
/// value it must hold.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

impl FutexWaitv {
    /// An entry for `word`, expecting `val`. Holding an entry does not keep
    /// the word alive: [`wait_many`]'s caller must.
    pub(crate) fn new(word: &AtomicU32, val: u32) -> FutexWaitv {
        FutexWaitv {
            val: u64::from(val),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        }
    }
}

/// `FUTEX2_SIZE_U32`: a 32-bit word, shared (no `FUTEX2_PRIVATE`).
const FUTEX2_SIZE_U32: u32 = 0x02;

/// Most words one `futex_waitv` call takes (`FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// Whether `futex_waitv` is missing (kernel < 5.16) or refused (seccomp):
/// learned on first use, then [`wait_many`] reports it at once.
static WAITV_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `futex_waitv` is missing (kernel < 5.16) or refused (seccomp).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WaitvUnsupported;

/// Sleeps while `*a == ea` and `*b == eb`, until either is woken or changes,
/// or until `deadline` (`futex_waitv(2)`, Linux 5.16+). As with [`wait`],
/// the caller re-checks whatever ended the sleep; `Err` means nothing was
/// slept: use [`wait`] in short slices instead.
pub(crate) fn wait_two(
    a: &AtomicU32,
    ea: u32,
    b: &AtomicU32,
    eb: u32,
    deadline: MonoTime,
) -> Result<(), WaitvUnsupported> {
    let waiters = [FutexWaitv::new(a, ea), FutexWaitv::new(b, eb)];
    // SAFETY: both words are borrowed for the duration of the call.
    unsafe { wait_many(&waiters, deadline) }
}

/// Sleeps while every entry's word holds its value, until one is woken or
/// changes, or until `deadline` (`futex_waitv(2)`); at most [`WAITV_MAX`]
/// entries (more is reported as a spurious return, not slept). The caller
/// re-checks whatever ended the sleep; `Err`: see [`wait_two`].
///
/// # Safety
///
/// Every entry's word must stay mapped (in this process) for the duration
/// of the call.
pub(crate) unsafe fn wait_many(
    waiters: &[FutexWaitv],
    deadline: MonoTime,
) -> Result<(), WaitvUnsupported> {
    if WAITV_UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(WaitvUnsupported);
    }
    if waiters.is_empty() || waiters.len() > WAITV_MAX {
        return Ok(());
    }
    let ts = deadline.to_timespec();
    loop {
        // SAFETY: `waiters` holds valid futex_waitv entries whose words are
        // live, aligned u32s for the duration of the call (the caller's
        // contract); `ts` outlives it; flags 0 and an absolute
        // CLOCK_MONOTONIC timeout.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waiters.as_ptr(),
                waiters.len() as libc::c_uint,
                0u32,
                &ts as *const libc::timespec,
                libc::CLOCK_MONOTONIC,
            )
        };
        if ret >= 0 {
            return Ok(());
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) | Some(libc::EPERM) => {
                // Relaxed: a cache of a fact about this kernel.
                WAITV_UNSUPPORTED.store(true, Ordering::Relaxed);
                return Err(WaitvUnsupported);
            }
            // ETIMEDOUT, EAGAIN (a word already changed), anything else:
            // the caller re-checks.
            _ => return Ok(()),
        }
    }
}

/// [`wait`] on one entry's word, expecting its value.
///
/// # Safety
///
/// The entry's word must stay mapped for the duration of the call.
pub(crate) unsafe fn wait_entry(entry: &FutexWaitv, deadline: MonoTime) {
    // SAFETY: the caller keeps the word mapped; `FutexWaitv::new` took the
    // address from an `&AtomicU32`, so it is aligned.
    let word = unsafe { &*(entry.uaddr as usize as *const AtomicU32) };
    wait(word, entry.val as u32, deadline);
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
